"""The command that trains: ``train`` (and its ``--resume``), and the training flags ``sweep``
passes on (:func:`add_train_options`)."""

from __future__ import annotations

import argparse
import dataclasses

from mnv3spec.cli.flags import add_device, add_set, command_line, number, overrides
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
    """A new run of SPEC, or with --resume the continuation of a run."""
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
    train(cfg, command_line())
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
        add(
            "--seed",
            type=number(int, 0, high=SEED_MAX),
            help="seed; on CPU also deterministic algorithms",
        ),
        add("--init", help=INIT),
    ]
    return actions


SEED_MAX = 2**63 - 1  # config.MAX_SEED, restated: importing it would import torch for --help
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
