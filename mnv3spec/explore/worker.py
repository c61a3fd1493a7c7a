"""``python -m mnv3spec.explore.worker REQUEST.json``: one training of a sweep, in a process of
its own. The request (:meth:`.launch.Training.request`) holds a training's configuration — a new
run — or the run folder of an interrupted one to resume. Exit status as ``train``'s: 0 done,
2 refused (the error on one line starting ``error:``), 3 diverged, 130 interrupted."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from ..errors import UserError
from ..train.config import config_from_json
from ..train.train import resume, train


def run(request_file: str) -> None:
    command = shlex.join(["python", "-m", "mnv3spec.explore.worker", request_file])
    try:
        request = json.loads(Path(request_file).read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read the request ({e})", file=request_file) from None
    if isinstance(request, dict) and isinstance(request.get("resume"), str):
        resume(request["resume"], command)
    elif isinstance(request, dict) and isinstance(request.get("config"), dict):
        train(config_from_json(request["config"], request_file), command)
    else:
        raise UserError("not a training request (config or resume)", file=request_file)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m mnv3spec.explore.worker REQUEST.json", file=sys.stderr)
        return 2
    try:
        run(args[0])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
