"""``adapt``: shrink a spec to a latency target measured on the runtime that ships it
(NetAdapt over spec edits, :mod:`mnv3spec.adapt`)."""

from __future__ import annotations

import argparse

from mnv3spec.cli.flags import add_cluster_options, add_set, cluster_settings, number, overrides
from mnv3spec.cli.kinds import check_kind
from mnv3spec.cli.latency import MAX_THREADS


def cmd_adapt(args: argparse.Namespace) -> int:
    check_kind(args.spec, "adapt", {"spec"}, "a spec (a YAML file or a shipped name)")
    cluster = cluster_settings(args)  # refused before any work
    from mnv3spec.adapt.folder import AdaptSettings
    from mnv3spec.adapt.run import adapt, spec_path

    training = {a.dest: getattr(args, a.dest) for a in args.train_options if a.dest in args}
    holdout = training.pop("holdout", 1000)
    settings = AdaptSettings(
        spec_path(args.spec),
        target_ms=args.target_ms,
        target_ratio=args.target_ratio,
        backend=args.backend,
        int8=args.int8,
        resolution=args.resolution,
        overrides=overrides(args),
        step=args.step,
        finetune_steps=args.finetune_steps,
        finetune_lr=args.finetune_lr,
        finetune_at_most=args.finetune_at_most,
        retrain_epochs=args.retrain_epochs,
        retrain_seeds=args.retrain_seeds,
        moves=tuple(dict.fromkeys(args.moves)),
        holdout=holdout,
        score=args.score,
        baselines=not args.no_baselines,
        runs=args.latency_runs,
        warmup=args.latency_warmup,
        threads=args.threads,
        training=training,
        out=args.out,
    )
    outcome = adapt(settings, lambda line: print(line, flush=True), cluster)
    print(outcome.table)
    print(f"wrote {outcome.result}; trace, table and plot in {outcome.folder}")
    return 0


def add_adapt(sub: argparse._SubParsersAction) -> None:
    from mnv3spec.cli.training import add_train_options

    p = sub.add_parser(
        "adapt",
        help="shrink a spec to a latency target on a runtime (NetAdapt over spec edits)",
        description="Each step proposes the smallest shrink of every row's exp and every residual "
        "group's out that its rows, timed on --backend, say lowers the latency by --step; "
        "fine-tunes each from its parent's weights, scores it on held-out training images, and "
        "keeps the best -Δloss/|Δlatency| (--score) whose whole network, measured on --backend, "
        "saves more than the timing's noise, until the target is met; then retrains the result "
        "from scratch beside the width and resolution baselines and the start. Repeat the "
        "command to continue. "
        "Exit status 3: the target was not reached (the best reached is kept).",
    )
    add = p.add_argument
    add("spec", metavar="SPEC")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--target-ms", type=number(float, 0, above=True), metavar="T", help="latency target in ms"
    )
    target.add_argument(
        "--target-ratio", type=number(float, 0, above=True), metavar="R", help="T = R × start"
    )
    add("--backend", choices=["executorch", "tflite", "onnxruntime", "eager"], default="executorch")
    add("--int8", action="store_true", help="time the runtime's int8 program")
    add("--resolution", type=number(int, 1), help="deployed input size (default: the spec's)")
    add_set(p)
    add("--out", required=True, metavar="FOLDER", help="the search's folder")
    add("--step", type=number(float, 0, above=True), default=0.01, metavar="F", help=STEP)
    add("--finetune-steps", type=number(int, 1), default=50, help="per proposal (default 50)")
    add("--finetune-lr", type=number(float, 0, above=True), metavar="LR", help=FINETUNE_LR)
    add("--finetune-at-most", type=number(int, 1), metavar="K", help=AT_MOST)
    add("--retrain-epochs", type=number(int, 1), default=20, help="from scratch (default 20)")
    add("--retrain-seeds", type=number(int, 1), default=1, help="seeds 0..N-1 (default 1)")
    add("--score", choices=["loss", "top1"], default="loss", help=SCORE)
    add("--moves", nargs="+", choices=["kernel", "se"], default=[], help=MOVES)
    add("--no-baselines", action="store_true", help="retrain the result alone")
    add("--latency-runs", type=number(int, 1), default=200, help="timed calls a network (200)")
    add("--latency-warmup", type=number(int, 1), default=5, help="untimed calls first (5)")
    add("--threads", type=number(int, 1, high=MAX_THREADS), default=1, help=THREADS)
    add_cluster_options(p)
    passed = p.add_argument_group(
        "train flags",
        "the start is trained with them; fine-tunes and retrains use the same recipe "
        "(--holdout: the held-out training images proposals are scored on, default 1000)",
        argument_default=argparse.SUPPRESS,
    )
    p.set_defaults(func=cmd_adapt, train_options=add_train_options(passed))


STEP = (
    "δ, the least latency a proposal saves, as a fraction of the start's (default 0.01); a step "
    "where no move saves it halves it, down to a quarter, and proposes a cut of a row to one "
    "divisor only there"
)
FINETUNE_LR = (
    "a fine-tune's learning rate, from the parent's weights (default: a tenth of the training's)"
)
SCORE = (
    "what ranks the proposals, per ms saved: the held-out loss (default; less noisy on a small "
    "held-out set) or top-1 (the paper's)"
)
AT_MOST = (
    "fine-tune only the K proposals of a step whose inherited weights, before any fine-tune, "
    "score best per ms saved (beyond the paper; default: every proposal)"
)
THREADS = (
    "CPU threads the runtime times with (default 1: the paper timed one core of the phone; "
    "time the result again with OMP_NUM_THREADS=N latency ...)"
)
MOVES = "also propose kernel 5→3 and SE off per row (beyond the paper)"
