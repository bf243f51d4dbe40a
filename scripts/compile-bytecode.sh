#!/bin/sh
# Byte-compile the project's own packages (pyproject.toml's [tool.setuptools.packages.find] include) with the
# interpreter $1: an editable install leaves them as sources. Cheap when nothing changed: compileall rewrites only
# the .pyc of a source newer than it. Prints nothing unless a file does not compile.
set -eu
cd "$(dirname "$0")/.."
"$1" - <<'PY'
import compileall, sys, tomllib
with open("pyproject.toml", "rb") as f:
    packages = tomllib.load(f)["tool"]["setuptools"]["packages"]["find"]["include"]
ok = all([compileall.compile_dir(p.rstrip("*"), quiet=1, workers=0) for p in packages])  # every one, then the verdict
sys.exit(0 if ok else 1)
PY
