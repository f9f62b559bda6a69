"""Start-up cost of `vocseg --help` against `python -c "import typer, rich"` (the floor of any Typer+rich CLI).

Target: ratio at most 2. Both are timed alternately in this script, best of N, so machine noise
hits both the same way. Run: python benchmarks/startup.py [N]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time


def best_of(cmd: list[str], n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    vocseg = shutil.which("vocseg") or ""
    ours = [vocseg, "--help"] if vocseg else [sys.executable, "-m", "vocseg.cli", "--help"]
    floor = [sys.executable, "-c", "import typer, rich"]
    best_ours, best_floor = float("inf"), float("inf")
    for _ in range(3):  # interleave rounds
        best_floor = min(best_floor, best_of(floor, n // 3 or 1))
        best_ours = min(best_ours, best_of(ours, n // 3 or 1))
    ratio = best_ours / best_floor
    print(f"vocseg --help: {best_ours * 1000:.0f} ms   import typer, rich: {best_floor * 1000:.0f} ms   ratio {ratio:.2f} (target <= 2)")
    sys.exit(0 if ratio <= 2.0 else 1)


if __name__ == "__main__":
    main()
