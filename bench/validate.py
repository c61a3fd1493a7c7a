"""How long ``validate specs/*.yaml`` takes, against importing what it needs (yaml, jsonschema).

    python bench/validate.py [--repeats 7]

Each command runs in a fresh Python process, interleaved, ``--repeats`` times; prints the median
wall time of each and the ratios to ``python -c "import yaml, jsonschema"`` (the issue's target:
validate at most 3× that). ``validate()`` alone is the library call without the command line;
the last line says whether the command line imported torch.
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
SPECS = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "specs").glob("*.yaml"))]
LIBRARY = (
    "import sys\nfrom mnv3spec.model.validate import validate\n"
    "sys.exit(any(validate(p)[1] for p in sys.argv[1:]))"
)
COMMANDS = {
    "python -c pass": ["-c", "pass"],
    'python -c "import yaml, jsonschema"': ["-c", "import yaml, jsonschema"],
    "python cli.py validate specs/*.yaml": ["cli.py", "validate", *SPECS],
    "validate() of each spec": ["-c", LIBRARY, *SPECS],
}
BASE = 'python -c "import yaml, jsonschema"'
TORCH = (
    "import runpy, sys\nsys.argv = sys.argv[1:]\ntry:\n    runpy.run_path('cli.py', "
    "run_name='__main__')\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules)"
)


def seconds(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, command in COMMANDS.items():
            times[name].append(seconds(command))
    medians = {name: statistics.median(t) for name, t in times.items()}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{len(SPECS)} specs, median of {args.repeats} runs each, load average {load:.1f}")
    print(f"{'command':40s} {'median s':>9s} {'× yaml+jsonschema':>18s}")
    for name, median in medians.items():
        print(f"{name:40s} {median:9.3f} {median / medians[BASE]:18.2f}")
    done = subprocess.run(
        [sys.executable, "-c", TORCH, "cli.py", "validate", *SPECS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    print(f"torch imported by cli.py validate: {done.stdout.split()[-1]}")


if __name__ == "__main__":
    main()
