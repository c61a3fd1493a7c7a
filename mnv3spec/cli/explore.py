"""The command that explores: ``sweep`` (a grid of variants counted, timed and trained)."""

from __future__ import annotations

import argparse
import dataclasses
import shlex

from mnv3spec.cli.flags import add_cluster_options, add_set, cluster_settings, number, overrides
from mnv3spec.cli.training import add_train_options


def cmd_sweep(args: argparse.Namespace) -> int:
    import time

    from mnv3spec.explore import sweep, sweep_report
    from mnv3spec.explore.results import SweepSettings

    started = time.perf_counter()
    training = {a.dest: getattr(args, a.dest) for a in args.train_options if a.dest in args}
    settings = SweepSettings(
        tuple(args.specs),
        tuple(args.grid or []),
        overrides(args),
        out=args.out,
        name=args.name,
        training=None if args.no_train else training,
        devices=tuple(args.devices) if args.devices else None,
        backends=tuple(args.backends),
        latency_batch=args.latency_batch,
        latency_runs=args.latency_runs,
        latency_warmup=args.latency_warmup,
        predict=args.predict,
        max_variants=args.max_variants,
        cluster=cluster_settings(args),
    )
    result = sweep.sweep(settings, _say, dry_run=args.print_commands)
    if args.print_commands:
        _print_commands(result, args.train_options)
        return 0
    print(sweep_report.summary(result, started))
    return result.exit_code()


def _say(line: str) -> None:
    print(line, flush=True)


def _print_commands(result, options: list[argparse.Action]) -> None:
    """The ``train`` command of each training the sweep would start, or why there is none."""
    jobs = {job.variant.id: job for job in result.trainings}
    for r in result.results:
        job = jobs.get(r.variant.id)
        if r.error or job is None:
            print(f"# {r.variant.id}: {r.error or 'finished'}")
        else:
            print(shlex.join(["python", "-m", "mnv3spec.cli", *_train_arguments(job, options)]))


def _train_arguments(job, options: list[argparse.Action]) -> list[str]:
    """``train``'s arguments for a training of a sweep: its spec, overrides and the flags of
    its settings that are not the defaults."""
    from mnv3spec.explore.grid import text
    from mnv3spec.train.config import TrainConfig

    if job.config is None:
        return ["train", "--resume", str(job.folder)]
    cfg = job.config  # its batch filled in from its recipe: the default is the recipe's
    default = dataclasses.replace(TrainConfig(cfg.spec), batch=cfg.batch)
    words = ["train", cfg.spec]
    words += [w for k, v in cfg.overrides.items() for w in ("--set", f"{k}={text(v)}")]
    for a in options:
        value, flag = getattr(cfg, a.dest), a.option_strings[-1]
        if value != getattr(default, a.dest):
            words += [flag] if a.nargs == 0 else [flag, str(value)]
    return [*words, "--out", cfg.out, "--name", cfg.name]


def add_sweep(sub: argparse._SubParsersAction) -> None:
    from mnv3spec.explore import MAX_VARIANTS

    p = sub.add_parser(
        "sweep",
        help="every combination of --grid values: params, MAdds, latency, training, Pareto plot",
        description="Each variant is compiled and counted, timed as `latency` times it, and "
        "(unless --no-train) trained as `train` trains, into OUT/NAME/runs/VARIANT, with the "
        "train flags below. Repeat the command to continue a sweep.",
    )
    p.add_argument("specs", nargs="+", metavar="SPEC")
    add = p.add_argument
    add("--grid", action="append", metavar="KEY=V1,V2,...", help="a --set key and its values")
    add_set(p)
    add("--out", default="sweeps", help="parent folder of the sweep folder (default sweeps)")
    add("--name", help="sweep folder name (default: the spec names)")
    add("--no-train", action="store_true", help="parameters, MAdds and latency only")
    add("--print-commands", action="store_true", help="print the train commands, run nothing")
    add("--devices", nargs="+", metavar="DEVICE", help="latency devices, as for latency")
    add("--backends", nargs="+", default=["eager"], metavar="BACKEND", help="as for latency")
    add("--latency-batch", type=number(int, 1), default=1, help="latency --batch (default 1)")
    add("--latency-runs", type=number(int, 1), default=50, help="latency --runs (default 50)")
    add("--latency-warmup", type=number(int, 1), default=10, help="latency --warmup (10)")
    add(
        "--predict",
        metavar="TABLE.csv",
        help="latency from a look-up table (latency --table), which is only read",
    )
    add(
        "--max-variants",
        type=number(int, 1),
        default=MAX_VARIANTS,
        help=f"refuse a grid of more variants (default {MAX_VARIANTS})",
    )
    add_cluster_options(p)
    passed = p.add_argument_group(
        "train flags",
        "every variant is trained with them (--batch and --warmup are training's; latency's "
        "are --latency-batch and --latency-warmup)",
        argument_default=argparse.SUPPRESS,
    )
    p.set_defaults(func=cmd_sweep, train_options=add_train_options(passed))
