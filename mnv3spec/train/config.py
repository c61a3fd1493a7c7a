"""The settings of a training run: :class:`TrainConfig`, saved as config.json at the start and
read back, checked field by field, by ``resume``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.datasets import DATASETS
from ..errors import UserError
from ..files import check_path
from ..spec.read import resolve_path
from .recipe import FIELDS as RECIPE_FIELDS
from .recipe import Recipe, resolve_recipe

MAX_SEED = 2**63 - 1  # torch.manual_seed takes 64 bits; the run adds its rank and 1 to it


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on; saved as config.json so a resume repeats it exactly. Frozen:
    a changed setting is a new config (``dataclasses.replace``)."""

    spec: str
    overrides: dict[str, Any] = field(default_factory=dict)
    data: str = "cifar100"
    data_dir: str = "./data"
    train_subset: int | None = None  # train on this many training images (a fixed draw)
    holdout: int | None = None  # this many training images validate instead of the val split
    steps_per_epoch: int | None = None  # at most this many steps an epoch (a short fine-tune)
    epochs: int = 20
    batch: int | None = None  # None: the recipe's (a run's config.json holds the number)
    device: str = "auto"
    recipe: str = "seed"
    lr: float | None = None  # None: the recipe's value (same for the fields below)
    momentum: float | None = None
    weight_decay: float | None = None
    nesterov: bool | None = None
    schedule: str | None = None
    warmup: float | None = None
    label_smoothing: float | None = None
    random_erasing: float | None = None
    ema: float | None = None
    compile: bool = False
    out: str = "runs"
    name: str | None = None
    seed: int | None = None  # given: deterministic algorithms on CPU
    init: str | None = None  # "torchvision", "timm:NAME[.TAG]" or a path to a state_dict
    deterministic: bool = False  # set from ``seed`` when the run starts
    graph: bool = True  # on CUDA, each step captured as a CUDA graph (:mod:`.graph`)

    def resolved_recipe(self) -> Recipe:
        changes = {k: getattr(self, k) for k in RECIPE_FIELDS if hasattr(self, k)}
        return resolve_recipe(self.recipe, **changes)

    def with_batch(self) -> TrainConfig:
        """This config with its batch a number (the recipe's when not given), as config.json
        holds it."""
        return dataclasses.replace(self, batch=self.resolved_recipe().batch)


def absolute(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with the spec, data folder, data root, init file and output folder absolute, so a
    resume works from any working directory; a dataset name wins over a folder of that name."""
    data = cfg.data
    if data not in DATASETS and Path(data).is_dir():
        data = str(Path(data).resolve())
    init = cfg.init
    if init not in (None, "torchvision") and not init.startswith("timm:"):
        init = str(Path(init).resolve())
    return dataclasses.replace(
        cfg,
        spec=str(resolve_path(cfg.spec).resolve()),
        data=data,
        data_dir=str(Path(cfg.data_dir).resolve()),
        out=str(Path(cfg.out).resolve()),
        init=init,
        deterministic=cfg.seed is not None,
    )


# The JSON types each annotation allows (bool is an int to Python, never to us).
_KINDS: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "bool": (bool,),
    "dict[str, Any]": (dict,),
}
_AT_LEAST_ONE = ("epochs", "batch")
_AT_LEAST_ONE_IF_GIVEN = ("holdout", "steps_per_epoch")
_ADDED_LATER = {
    "graph": True,
    "train_subset": None,
    "ema": None,
    "holdout": None,
    "steps_per_epoch": None,
}  # fields newer than the first release: absent in older runs


def _fits(value: Any, annotation: str) -> bool:
    for kind in annotation.split(" | "):
        if kind == "None":
            if value is None:
                return True
        elif isinstance(value, _KINDS[kind]) and (kind == "bool" or not isinstance(value, bool)):
            return True
    return False


def _below_one(name: str, value: Any) -> bool:
    if name in _AT_LEAST_ONE:
        return value is None or value < 1
    return name in _AT_LEAST_ONE_IF_GIVEN and value is not None and value < 1


def config_from_json(values: dict[str, Any], file: str) -> TrainConfig:
    """A :class:`TrainConfig` from config.json's mapping, every field present and of its type:
    a damaged file is refused naming the field, never filled in with a default."""
    fix = "restore the file, or start a new run"
    known = {f.name: f for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise UserError(f"unknown field '{unknown[0]}' (damaged or edited?); {fix}", file=file)
    values = {**_ADDED_LATER, **values}
    for name, f in known.items():
        if name not in values:
            raise UserError(f"the field '{name}' is missing (damaged or edited?); {fix}", file=file)
        value = values[name]
        if not _fits(value, str(f.type)) or _below_one(name, value):
            wanted = {"int": "a whole number", "float": "a number", "str": "text"}.get(
                str(f.type).split(" | ")[0], str(f.type)
            )
            if name in _AT_LEAST_ONE + _AT_LEAST_ONE_IF_GIVEN:
                wanted = "a whole number of at least 1"
            raise UserError(f"the field '{name}' is {value!r}, expected {wanted}; {fix}", file=file)
    for name in ("spec", "data", "data_dir", "out", "name", "init"):  # names the system takes
        if isinstance(values[name], str):
            try:
                check_path(values[name])
            except UserError as e:
                raise UserError(f"the field '{name}' {e.message}; {fix}", file=file) from None
    seed = values["seed"]
    if seed is not None and not 0 <= seed <= MAX_SEED:
        wanted = f"a whole number from 0 to {MAX_SEED} (2**63 - 1)"
        raise UserError(f"the field 'seed' is {seed}, expected {wanted}; {fix}", file=file)
    cfg = TrainConfig(**values)
    try:  # the recipe's own checks (lr above 0, momentum at least 0...), named as fields here
        cfg.resolved_recipe()
    except UserError as e:
        raise UserError(f"the field '{e.field}' {e.message}; {fix}", file=file) from None
    return cfg
