"""How long the command line takes to answer ``--help``, against Python's own start-up.

    python bench/cli_start.py [--repeats 10]

Runs, interleaved in one session so that a busy machine slows all alike: ``python -c pass``,
``python cli.py --help``, ``python -m mnv3spec --help`` and ``python cli.py train --help``, and
``python -c "import torch"`` for scale. Prints each median and its difference from ``-c pass``.
The target (issue 21): ``--help`` at most 0.5 s over Python's start-up, without importing torch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "python cli.py --help": [str(ROOT / "cli.py"), "--help"],
    "python -m mnv3spec --help": ["-m", "mnv3spec", "--help"],
    "python cli.py train --help": [str(ROOT / "cli.py"), "train", "--help"],
    'python -c "import torch"': ["-c", "import torch"],
}


def seconds(args: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout, whatever is installed
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="runs of each (default 10)")
    repeats = parser.parse_args().repeats
    for args in COMMANDS.values():
        seconds(args)  # warm the file cache
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(repeats):
        for name, args in COMMANDS.items():
            times[name].append(seconds(args))
    base = statistics.median(times["python -c pass"])
    print(f"median of {repeats} runs each, load average {os.getloadavg()[0]:.1f}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:30} {median:6.3f} s  (+{median - base:.3f} s over python -c pass)")


if __name__ == "__main__":
    main()
