"""Commands that train or score: ``train`` (and its ``--resume``), ``eval`` and ``sweep``."""

from __future__ import annotations

import argparse
import dataclasses
import shlex

from mnv3spec.cli.flags import add_device, add_set, command_line, number, overrides
from mnv3spec.cli.kinds import check_model_file
from mnv3spec.errors import UserError

_RESUME_MAY_CHANGE = ("device", "compile", "graph")  # how it runs, not what it computes


def _train_settings(args: argparse.Namespace) -> dict:
    """The TrainConfig fields the flags gave (train's flags default to absent, so the rest keep
    TrainConfig's defaults)."""

    from mnv3spec.train.config import TrainConfig

    names = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in ("spec", "overrides")]
    return {name: getattr(args, name) for name in names if hasattr(args, name)}


def _resume(args: argparse.Namespace) -> None:
    from mnv3spec.train.train import resume

    if args.spec or args.set or args.width is not None:
        raise UserError("--resume takes no SPEC, --set or --width: a run keeps its spec")
    given = _train_settings(args)
    fixed = [f for f in given if f not in (*_RESUME_MAY_CHANGE, "epochs")]
    if fixed:
        flags = args.flags
        raise UserError(
            f"--resume continues {args.resume} with the settings stored in its config.json; "
            f"drop {', '.join(flags[f] for f in fixed)} (only "
            f"{', '.join(flags[f] for f in _RESUME_MAY_CHANGE[:-1])} and "
            f"{flags[_RESUME_MAY_CHANGE[-1]]} may change; --epochs N extends a multistep run)"
        )
    kept = (*_RESUME_MAY_CHANGE, "epochs")
    resume(args.resume, command_line(), **{f: given[f] for f in given if f in kept})


def cmd_train(args: argparse.Namespace) -> int:
    """A new run of SPEC (loaded here, once), or with --resume the continuation of a run."""
    from mnv3spec.spec.load import load_spec
    from mnv3spec.train.config import TrainConfig
    from mnv3spec.train.train import train

    if args.resume:
        _resume(args)
        return 0
    if not args.spec:
        raise UserError("give the SPEC to train (e.g. specs/small.yaml), or --resume RUN_FOLDER")
    fixed = overrides(args)
    if args.width is not None and fixed.setdefault("width", args.width) != args.width:
        raise UserError(f"--width {args.width} and --set width={fixed['width']} disagree")
    cfg = TrainConfig(spec=args.spec, overrides=fixed, **_train_settings(args))
    train(cfg, command_line(), spec=load_spec(cfg.spec, **fixed))
    return 0


# --data's help: kept here, not beside the datasets, so that --help needs no torch
DATA_SOURCES = (
    "cifar100 (default), cifar10 (official archives, downloaded into the data root if absent), "
    "fashion-mnist, mnist (official IDX files: data root, then /usr/share/datasets, then "
    "downloaded), "
    "synthetic (random images, for smoke tests and benchmarks), or a folder with "
    "train/<class>/ and val/<class>/ image subfolders (./NAME for one named like a dataset)"
)


def add_train_options(p) -> list[argparse.Action]:
    """The options of a training that ``train`` takes and ``sweep`` passes to every variant, on
    ``p`` (a parser or a group whose options default to absent); the actions added."""
    positive, non_negative = number(float, 0, above=True), number(float, 0)
    add = p.add_argument
    actions = [
        add("--epochs", type=number(int, 1), help=EPOCHS),
        add("--batch", type=number(int, 1), help="global batch size (default: the recipe's)"),
        add("--data", help=DATA_SOURCES),
        add("--data-dir", help="where CIFAR archives are looked for / downloaded (default ./data)"),
        add("--train-subset", type=number(int, 1), metavar="N", help=SUBSET),
        add("--holdout", type=number(int, 1), metavar="N", help=HOLDOUT),
        add("--steps-per-epoch", type=number(int, 1), metavar="N", help=STEPS),
        add_device(p, default=argparse.SUPPRESS),
        add("--recipe", help=RECIPE),
        add("--lr", type=positive, help="base learning rate (seed: 0.1)"),
        add("--momentum", type=non_negative, help="SGD momentum (seed: 0.9)"),
        add(
            "--weight-decay", type=non_negative, help="on weights, never on BN or biases (seed: 0)"
        ),
        add("--nesterov", action="store_true", help="Nesterov momentum"),
        add("--schedule", choices=["multistep", "cosine"], help="seed: multistep 15/20/30 x0.1"),
        add("--warmup", type=non_negative, help="epochs of linear learning-rate warm-up (seed: 0)"),
        add("--label-smoothing", type=non_negative, help="cross-entropy label smoothing (seed: 0)"),
        add("--random-erasing", type=non_negative, metavar="P", help=ERASING),
        add("--ema", type=non_negative, metavar="DECAY", help=EMA),
        add("--compile", action="store_true", help="torch.compile the model"),
        add("--no-graph", dest="graph", action="store_false", help=NO_GRAPH),
        add("--seed", type=number(int, 0), help="seed; on CPU also deterministic algorithms"),
        add("--init", help=INIT),
    ]
    return actions


EPOCHS = "epochs (default 20); with --resume, extends a run to this many (multistep only)"
SUBSET = "train on N training images (a fixed random draw; validation stays whole)"
HOLDOUT = "validate on N training images (a fixed draw, not trained on) instead of the val split"
STEPS = "at most N steps an epoch (default: the whole training split)"
RECIPE = (
    "optimiser, schedule, batch and augmentation preset: seed (default) or cosine-ls-erase; the "
    "flags below change it"
)
ERASING = "erase a random rectangle of each image with probability P (seed: 0)"
EMA = (
    "evaluate and save a moving average of the weights with this decay, e.g. 0.999 "
    "(seed: none); it warms up as min(DECAY, (1+n)/(10+n)) after n steps"
)
NO_GRAPH = "on CUDA, run each step eagerly instead of replaying it as a captured CUDA graph"
INIT = "start from weights: 'torchvision' or 'timm:NAME[.TAG]' (ImageNet), or a state_dict"


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a spec (CIFAR-100 by default) into runs/NAME",
        description="Train a spec. Defaults are the seed repo's recipe: SGD lr 0.1 momentum 0.9, "
        "x0.1 at epochs 15/20/30, batch 128, 20 epochs, crop+flip augmentation.",
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("spec", nargs="?", default=None, metavar="SPEC", help="e.g. specs/small.yaml")
    add_set(p)
    width = number(float, 0, above=True)
    p.add_argument("--width", type=width, default=None, help="width multiplier (= --set width=W)")
    add_train_options(p)
    p.add_argument("--out", help="parent folder of run folders (default runs)")
    p.add_argument("--name", help="run folder name (default SPEC-wWIDTH-DATA)")
    p.add_argument(
        "--resume", default=None, metavar="RUN_FOLDER", help="continue a run after its last epoch"
    )
    p.set_defaults(func=cmd_train, set=None)


def cmd_eval(args: argparse.Namespace) -> int:
    check_model_file(args.checkpoint, "eval")
    from mnv3spec.deploy.evaluate_file import evaluate_checkpoint

    r = evaluate_checkpoint(
        args.checkpoint,
        data=args.data,
        data_dir=args.data_dir,
        batch_size=args.batch,
        device=args.device,
    )
    print(
        f"{args.checkpoint}: top-1 {r.top1:.2f}%  top-{r.k} {r.topk:.2f}%  loss {r.loss:.4f}  "
        f"({r.images} validation images)"
    )
    return 0


def add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="top-1, top-k (k = min(5, classes)) and loss on val data")
    p.add_argument(
        "checkpoint",
        metavar="CHECKPOINT",
        help="a .safetensors file written by train, or an .onnx or .pte from export or quantize",
    )
    p.add_argument("--data", help="as for train (default: the data it was trained on)")
    p.add_argument("--data-dir", default="./data", help="as for train (default ./data)")
    p.add_argument("--batch", type=number(int, 1), default=256, help="default 256")
    add_device(p)
    p.set_defaults(func=cmd_eval)


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
    default = dataclasses.replace(TrainConfig(cfg.spec), batch=cfg.with_batch().batch)
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
    passed = p.add_argument_group(
        "train flags",
        "every variant is trained with them (--batch and --warmup are training's; latency's "
        "are --latency-batch and --latency-warmup)",
        argument_default=argparse.SUPPRESS,
    )
    p.set_defaults(func=cmd_sweep, train_options=add_train_options(passed))
