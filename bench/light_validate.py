"""The light path for validating specs in CI: a fresh virtual environment with this package
installed without its dependencies, plus PyYAML and jsonschema, as docs/examples/validate-specs.yml
installs it (here from this checkout instead of a git URL), with pip's cache off (a cold start).

    python bench/light_validate.py

Prints the install's wall time, the environment's size on disk, the time of one
``mnv3spec validate specs/*.yaml`` in it, and whether that run imported torch (it must not).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUIET = ["--quiet", "--no-cache-dir", "--disable-pip-version-check"]


def run(*args: str | Path, cwd: Path = ROOT) -> float:
    start = time.perf_counter()
    subprocess.run([str(a) for a in args], cwd=cwd, check=True)
    return time.perf_counter() - start


def size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(tmp) / "venv"
        created = run(sys.executable, "-m", "venv", venv)
        python = venv / "bin" / "python"
        installed = run(python, "-m", "pip", "install", *QUIET, "pyyaml", "jsonschema")
        installed += run(python, "-m", "pip", "install", *QUIET, "--no-deps", ROOT)
        specs = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "specs").glob("*.yaml"))
        check = "import runpy, sys; sys.argv = ['mnv3spec', *sys.argv[1:]]\ntry:\n"
        check += "    runpy.run_module('mnv3spec', run_name='__main__')\nexcept SystemExit:\n"
        check += "    pass\nprint('imported torch:', 'torch' in sys.modules)"
        validated = run(python, "-c", check, "validate", *(ROOT / s for s in specs), cwd=Path(tmp))
        print(f"venv created in {created:.1f} s")
        print(f"install (no cache): {installed:.1f} s")
        print(f"environment on disk: {size_mb(venv):.0f} MB")
        print(f"validate {len(specs)} specs: {validated:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
