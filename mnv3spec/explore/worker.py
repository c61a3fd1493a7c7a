"""``python -m mnv3spec.explore.worker REQUEST.json``: one training of a sweep, in a process of
its own. The request (:meth:`.training.Training.request`) holds a training's configuration — a new
run — or the run folder of an interrupted one to resume. Exit status as ``train``'s: 0 done,
2 refused (the error on one line starting ``error:``), 3 diverged, 130 interrupted."""

from __future__ import annotations

import shlex
import sys

from ..errors import UserError
from ..files import check_path, read_json
from ..spec.variant import trusted_bases
from ..text import printable
from ..train.config import config_from_json
from ..train.train import resume, train


def run(request_file: str) -> None:
    command = shlex.join(["python", "-m", "mnv3spec.explore.worker", request_file])
    check_path(request_file)
    fix = "the sweep writes it; run the sweep again"
    request = read_json(request_file, what="a training request (JSON)", fix=fix)
    if not isinstance(request, dict):
        raise UserError("not a training request (config or resume)", file=request_file)
    folders = request.get("trusted_bases", [])
    if not isinstance(folders, list) or not all(isinstance(f, str) for f in folders):
        raise UserError(
            "damaged: trusted_bases is not a list of folders; " + fix, file=request_file
        )
    with trusted_bases(folders):
        if isinstance(request.get("resume"), str):
            resume(check_path(request["resume"], field="resume"), command)
        elif isinstance(request.get("config"), dict):
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
        print(f"error: {printable(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
