"""The demo and its deploy step against the code of before the fast paths, as paired ratios (``make bench``).

The baseline is the commit the fast-path work started from (:data:`BASELINE`), taken out of this clone's git history
with ``git archive`` into a temporary folder and run with the same interpreter and packages (``PYTHONPATH`` puts its
modules first, for the demo's second process too). Each pair runs ``orchestrator demo`` once on the baseline and
once on this tree, one after the other, each in a fresh data dir:

- the demo's wall time (both processes, the deploy, the health check and the undeploy);
- the deploy step: the ``deployment`` row's ``finished_at - started_at`` of the good deploy (same definition in both
  trees: the playbook, the switch, the proof of health).

Not a test: it prints figures and ratios next to the goals of the fast-path work (each at most half of the baseline).
"""

from __future__ import annotations

import compileall
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "7b2429f"
"""The last commit before the fast-path work (deploy playbook, litellm, listings, start-ups)."""
GOAL = 0.5
PAIRS = 3


def checkout(commit: str, into: Path) -> bool:
    """Write ``commit``'s tree into ``into`` with ``git archive``, byte-compiled; False if this clone lacks it.

    Compiled as ``make bytecode`` compiles this tree, so that the pair compares code, not what was installed.
    """
    archive = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True, check=False)
    if archive.returncode != 0:
        return False
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    compileall.compile_dir(into, quiet=1, workers=0)
    return True


def demo(tree: Path, data: Path) -> tuple[float, float]:
    """Run ``orchestrator demo`` of ``tree`` in ``data``; return its wall time and its deploy step (s).

    Raises:
        RuntimeError: the demo failed (its output's tail is in the message).
    """
    env = {**os.environ, "PYTHONPATH": str(tree), "ORCH_DATA_DIR": str(data)}
    env.pop("ORCH_MODEL", None)
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "demo", "--data-dir", str(data)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"demo of {tree} failed ({out.returncode}): {(out.stdout + out.stderr)[-1500:]}")
    with sqlite3.connect(data / "orchestrator.db") as db:
        rows = db.execute(
            "SELECT started_at, finished_at FROM deployment WHERE finished_at IS NOT NULL ORDER BY id"
        ).fetchall()
    if not rows:
        raise RuntimeError(f"demo of {tree} recorded no finished deployment")
    started, finished = (datetime.fromisoformat(str(v)) for v in rows[-1])
    return wall, (finished - started).total_seconds()


def verdict(ratio: float, goal: float) -> str:
    """``goal <= 0.5x: met`` or ``... NOT met``."""
    return f"goal <= {goal}x: {'met' if ratio <= goal else 'NOT met'}"


def main() -> None:
    """Print the demo's and the deploy step's medians on both trees and their ratios."""
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        base.mkdir()
        if not checkout(BASELINE, base):
            print(f"demo vs baseline  skipped: commit {BASELINE} is not in this clone's history")
            return
        walls: dict[str, list[float]] = {"baseline": [], "now": []}
        steps: dict[str, list[float]] = {"baseline": [], "now": []}
        for i in range(PAIRS):
            for name, tree in (("baseline", base), ("now", ROOT)):
                wall, step = demo(tree, Path(tmp) / f"{name}-{i}")
                walls[name].append(wall)
                steps[name].append(step)
    for what, figures in (("demo", walls), ("deploy step", steps)):
        before, now = statistics.median(figures["baseline"]), statistics.median(figures["now"])
        print(
            f"{what:17s} median {now:6.2f} s; at {BASELINE} (before the fast paths) {before:.2f} s "
            f"({now / before:.2f}x; {verdict(now / before, GOAL)}; {PAIRS} pairs)"
        )


if __name__ == "__main__":
    main()
