#!/bin/sh
# Install the project and its dev tools into the venv whose interpreter is $1.
# uv (a PyPI package, bootstrapped with pip into the venv) resolves and installs in parallel: about 20 s against
# about 4 min for pip on a loaded 2-core machine. Where uv cannot be installed, pip does the work and shows progress.
# Both leave the packages byte-compiled (uv is told to; pip does it by default): where PYTHONDONTWRITEBYTECODE is set,
# nothing else would write the bytecode, and every command would compile its ~900 imported modules from source again.
set -eu
py="$1"
bin="$(dirname "$py")"
if "$py" -m pip install --quiet --disable-pip-version-check uv; then
    echo "installing with uv (resolving, downloading, linking, then byte-compiling; counts follow)" >&2
    "$bin/uv" pip install --python "$py" --compile-bytecode -e '.[dev]'
else
    echo "uv unavailable: installing with pip (slower; progress below)" >&2
    "$py" -m pip install --disable-pip-version-check --upgrade pip
    "$py" -m pip install --disable-pip-version-check --progress-bar on -e '.[dev]'
fi
