"""Train any compiled spec: ``python cli.py train specs/small.yaml``.

One file to read top to bottom. The dataset sits in memory as uint8 tensors (on the GPU when it
fits; an image folder too large for memory is decoded batch by batch by DataLoader workers instead)
and each step augments the whole batch with tensor ops; the default recipe is the seed
repo's (SGD 0.1, momentum 0.9, ×0.1 at epochs 15/20/30, batch 128, 20 epochs). After every epoch
the run folder gets metrics.csv, last/best.safetensors, the resume file and curves.png, each
written atomically (:mod:`mnv3spec.run.run_folder`), so a killed run resumes exactly where its last
finished epoch left it. Under torchrun each process trains on its shard with
DistributedDataParallel (:mod:`mnv3spec.run.runtime`); rank 0 writes.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from ..data.batches import augment, loader, normalize, worker_count
from ..data.cifar import SOURCES
from ..data.datasets import DATASETS, Dataset, check_name, load_dataset
from ..errors import DataError, SpecError, TrainingError, UserError
from ..files import check_output_folder
from ..model.builder import SpecNet, build
from ..spec.load import Spec, load_spec, resolve_path
from ..weights.init import init_from
from .evaluate import EvalResult, evaluate
from .run_folder import (
    CONFIG_FILE,
    RESUME_FILE,
    SPEC_FILE,
    check_free,
    check_run_name,
    first_free,
    load_state,
    read_config,
    read_metrics,
    save_epoch,
    write_start,
)
from .runtime import World, amp_dtype, average_buffers, pick_device, reduce_sums, state_digest

CHECK_EVERY = 20  # steps between host syncs: loss shown, NaN looked for (on GPU a sync costs time)


# --- settings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """Optimiser and schedule. Epochs and batch size are separate flags, as in the seed."""

    lr: float
    momentum: float
    weight_decay: float  # never on BatchNorm parameters or biases
    nesterov: bool
    schedule: str  # "multistep" (×gamma at each milestone epoch) or "cosine" (to 0 at the end)
    milestones: tuple[int, ...]
    gamma: float
    warmup: float  # epochs of linear warm-up
    label_smoothing: float


RECIPES = {
    # The seed's train.py: SGD(lr=0.1, momentum=0.9), no weight decay,
    # MultiStepLR([15, 20, 30], 0.1) stepped once per epoch, plain cross-entropy.
    "seed": Recipe(0.1, 0.9, 0.0, False, "multistep", (15, 20, 30), 0.1, 0.0, 0.0),
}


@dataclass
class TrainConfig:
    """Everything a run depends on; saved as config.json so ``--resume`` repeats it exactly."""

    spec: str
    overrides: dict[str, Any] = field(default_factory=dict)
    data: str = "cifar100"
    data_dir: str = "./data"
    epochs: int = 20
    batch: int = 128  # global: split over the processes of a torchrun launch
    device: str = "auto"
    recipe: str = "seed"
    lr: float | None = None  # None: the recipe's value (same for the fields below)
    momentum: float | None = None
    weight_decay: float | None = None
    nesterov: bool | None = None
    schedule: str | None = None
    warmup: float | None = None
    label_smoothing: float | None = None
    compile: bool = False
    out: str = "runs"
    name: str | None = None
    seed: int | None = None  # given: deterministic algorithms on CPU
    init: str | None = None  # "torchvision", "timm:NAME[.TAG]" or a path to a state_dict
    deterministic: bool = False  # set from ``seed`` when the run starts

    def resolved_recipe(self) -> Recipe:
        if self.recipe not in RECIPES:
            raise UserError(f"unknown recipe '{self.recipe}'; known: {', '.join(RECIPES)}")
        names = [f.name for f in dataclasses.fields(Recipe)]
        changes = {k: getattr(self, k) for k in names if getattr(self, k, None) is not None}
        recipe = dataclasses.replace(RECIPES[self.recipe], **changes)
        if recipe.nesterov and recipe.momentum == 0:
            raise UserError("--nesterov needs a momentum above 0")
        if not 0 <= recipe.label_smoothing < 1:
            raise UserError(f"--label-smoothing must be in [0, 1), got {recipe.label_smoothing}")
        return recipe


# --- optimiser and schedule --------------------------------------------------------------------


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv/linear weights only: BatchNorm scales and shifts and all biases
    (the 1-D tensors) are left undecayed ("no bias decay", He et al. 2019, Bag of Tricks §3.1)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        param_groups(model, recipe.weight_decay),
        lr=recipe.lr,
        momentum=recipe.momentum,
        nesterov=recipe.nesterov,
    )


def lr_factor(recipe: Recipe, epochs: int, step: int, steps_per_epoch: int) -> float:
    """The learning rate at optimiser ``step`` as a fraction of ``recipe.lr``.

    ``multistep`` changes only at epoch boundaries, exactly like the seed's MultiStepLR stepped
    once per epoch; ``cosine`` decays per step to 0 at the end of the run. Warm-up ramps
    linearly from 1/(warmup·steps_per_epoch) over the first ``warmup`` epochs.
    """
    epoch = step / steps_per_epoch
    if recipe.schedule == "multistep":
        factor = recipe.gamma ** sum(epoch >= m for m in recipe.milestones)
    elif recipe.schedule == "cosine":
        factor = 0.5 * (1 + math.cos(math.pi * min(epoch / epochs, 1.0)))
    else:
        raise UserError(f"unknown schedule '{recipe.schedule}'; use multistep or cosine")
    if recipe.warmup > 0:
        factor *= min(1.0, (step + 1) / (recipe.warmup * steps_per_epoch))
    return factor


def make_scheduler(
    optimizer: torch.optim.Optimizer, recipe: Recipe, epochs: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped after every optimiser step (see :func:`lr_factor`)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(recipe, epochs, step, steps_per_epoch)
    )


# --- processes ---------------------------------------------------------------------------------


def steps_per_epoch(images: int, batch: int, world_size: int) -> tuple[int, bool]:
    """Batches per rank per epoch, and whether the last one is dropped: only when it would hold
    a single image, which BatchNorm cannot train on."""
    per_rank = -(-images // world_size)
    drop = per_rank % batch == 1
    if drop:
        per_rank = images // world_size
    steps = per_rank // batch if drop else -(-per_rank // batch)
    if steps == 0:
        raise DataError(f"{images} training images are too few to train on")
    return steps, drop


# --- data and model ----------------------------------------------------------------------------


def _load_data(cfg: TrainConfig, resolution: int, num_classes: int | None) -> Dataset:
    """CIFAR keeps its 32×32 unless ``resolution`` was set explicitly; folders and synthetic data
    come at the spec's resolution."""
    if cfg.data in SOURCES and "resolution" not in cfg.overrides:
        resolution = 32
    return load_dataset(cfg.data, cfg.data_dir, resolution, num_classes=num_classes or 10)


def _build_for_data(cfg: TrainConfig, source: str) -> tuple[SpecNet, Dataset]:
    """The spec with ``num_classes`` and ``resolution`` following the data unless set by --set."""
    spec = load_spec(source, **cfg.overrides)
    data = _load_data(cfg, spec.resolution, cfg.overrides.get("num_classes"))
    classes = int(cfg.overrides.get("num_classes", data.num_classes))
    if classes < data.num_classes:
        raise SpecError(
            f"num_classes is {classes} but the data has {data.num_classes} classes",
            field=f"--set num_classes={classes}",
        )
    resolution = int(data.train_images.shape[-1])
    model = build(spec.derive(num_classes=classes, resolution=resolution))
    return model, data


def _place(data: Dataset, device: torch.device) -> Dataset:
    """Move the uint8 dataset to the GPU once when it takes under a quarter of free memory;
    otherwise (or when it is decoded batch by batch) batches are copied over step by step."""
    if device.type == "cpu" or data.streamed:
        return data
    size = data.train_images.nbytes + data.val_images.nbytes
    if device.type == "cuda" and size > torch.cuda.mem_get_info(device)[0] / 4:
        return data
    return dataclasses.replace(
        data,
        **{
            k: getattr(data, k).to(device)
            for k in ("train_images", "train_labels", "val_images", "val_labels")
        },
    )


# --- the run -----------------------------------------------------------------------------------


class Trainer:
    """One run: the model, its optimiser state and the run folder, one epoch at a time."""

    def __init__(
        self, cfg: TrainConfig, spec: str, run_dir: Path, world: World, state: dict | None
    ) -> None:
        """``spec``: what to build, ``cfg.spec`` or on resume the run folder's own spec.yaml."""
        self.cfg, self.run_dir, self.world = cfg, run_dir, world
        self.device = pick_device(cfg.device, world.local_rank)
        self.recipe = cfg.resolved_recipe()
        torch.manual_seed(cfg.seed)
        torch.use_deterministic_algorithms(cfg.deterministic and self.device.type == "cpu")
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = not cfg.deterministic

        with world.main_first():
            if state is None:
                self.net, data = _build_for_data(cfg, spec)
                if cfg.init:
                    self.log(init_from(self.net, cfg.init))
            else:
                self.net = build(load_spec(spec))
                params = self.net.spec.params
                data = _load_data(cfg, int(params["resolution"]), int(params["num_classes"]))
        self.classes, self.mean, self.std = data.classes, data.mean, data.std
        self.data = _place(data, self.device)
        self.workers = worker_count(world.local_size) if data.streamed else 0
        self.net = self.net.to(self.device, memory_format=torch.channels_last)
        if cfg.batch % world.size:
            raise UserError(f"--batch {cfg.batch} does not split over {world.size} processes")
        self.batch = cfg.batch // world.size
        self.steps, self.drop_last = steps_per_epoch(len(data.train_labels), self.batch, world.size)

        self.model: nn.Module = self.net
        if world.size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.net, device_ids=ids)
        if cfg.compile:
            self.model = torch.compile(self.model)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=self.recipe.label_smoothing)
        self.optimizer = make_optimizer(self.net, self.recipe)
        self.scheduler = make_scheduler(self.optimizer, self.recipe, cfg.epochs, self.steps)
        self.amp = amp_dtype(self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)
        # Shuffling draws the same permutation on every rank; augmentation differs per rank.
        self.order = torch.Generator().manual_seed(cfg.seed)
        self.augment = torch.Generator().manual_seed(cfg.seed + 1 + world.rank)
        torch.manual_seed(cfg.seed + world.rank)  # dropout
        self.train_batches, self.val_batches = self._loaders()
        self.epoch, self.best = 0, -1.0
        self.rows: list[dict] = []
        if state is not None:
            self._restore(state)

    # -- the loop --

    def fit(self) -> None:
        cfg = self.cfg
        if self.epoch:
            self.log(f"resuming {self.run_dir} after epoch {self.epoch} of {cfg.epochs}")
        self.log(
            f"{self.net.spec.name}: width {self.net.spec.params['width']}, "
            f"{len(self.classes)} classes, {self.net.spec.params['resolution']}px | "
            f"{cfg.data}: {len(self.data.train_labels)} train / {len(self.data.val_labels)} val "
            f"| {self.device}{f' ×{self.world.size}' if self.world.size > 1 else ''}, "
            f"batch {cfg.batch}, {self.steps} steps/epoch | {self.run_dir}"
        )
        if self.data.streamed:
            d = self.data
            self.log(
                f"images: {len(d.train_labels) + len(d.val_labels):,} decoded per batch by "
                f"{self.workers} workers per process (would need "
                f"{(d.train_images.nbytes + d.val_images.nbytes) / 2**30:.1f} GiB in memory)"
            )
        while self.epoch < cfg.epochs:
            epoch = self.epoch + 1
            start = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            train_loss, train_top1, images_per_s = self._train_epoch(epoch)
            average_buffers(self.net, self.world)
            val = self._evaluate()
            row = {
                "epoch": epoch,
                "lr": lr,
                "train_loss": train_loss,
                "train_top1": train_top1,
                "val_loss": val.loss,
                "val_top1": val.top1,
                "val_top5": val.top5,
                "seconds": time.perf_counter() - start,
                "images_per_s": images_per_s,
            }
            self.epoch = epoch
            self._save(row, val)
            self.log(
                f"epoch {epoch}/{cfg.epochs}  lr {lr:.4g}  train loss {train_loss:.4f} "
                f"acc {train_top1:.2f}%  val loss {val.loss:.4f} acc {val.top1:.2f}% "
                f"top{val.k} {val.top5:.2f}%  {row['seconds']:.1f}s {images_per_s:.0f} img/s"
            )
        self._check_ranks_agree()
        self.log(f"done: best val top-1 {self.best:.2f}%, weights in {self.run_dir}")

    def _loaders(self) -> tuple[Iterable, Iterable]:
        """Train batches (this rank's shard of a fresh permutation each epoch) and this rank's
        validation images in order; decoding workers live for one pass, never both sets at once."""
        d, w = self.data, self.world
        decoding = {"workers": self.workers, "pin_memory": self.device.type == "cuda"}
        train = loader(
            d.train_images,
            d.train_labels,
            self.batch,
            shuffle=True,
            generator=self.order,
            drop_last=self.drop_last,
            rank=w.rank,
            world_size=w.size,
            **decoding,
        )
        shard = slice(w.rank, None, w.size)
        val = loader(
            d.val_images[shard], d.val_labels[shard], self.batch, shuffle=False, **decoding
        )
        return train, val

    def _train_epoch(self, epoch: int) -> tuple[float, float, float]:
        self.model.train()
        losses = torch.zeros(self.steps, device=self.device)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        seen, checked, start = 0, 0, time.perf_counter()
        bar = tqdm(
            total=self.steps,
            desc=f"epoch {epoch}/{self.cfg.epochs}",
            leave=False,
            disable=not (self.world.main and sys.stderr.isatty()),
        )
        for step, (images, labels) in enumerate(self.train_batches):
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            x = normalize(
                augment(images, generator=self.augment), self.mean, self.std, channels_last=True
            )
            with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
                logits = self.model(x)
                loss = self.criterion(logits.float(), labels)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            losses[step] = loss.detach()
            loss_sum += loss.detach() * len(labels)
            correct += (logits.argmax(1) == labels).sum()
            seen += len(labels)
            if (step + 1) % CHECK_EVERY == 0 or step + 1 == self.steps:
                self._check_finite(losses, checked, step + 1, epoch)
                rate = seen * self.world.size / (time.perf_counter() - start)
                recent = float(losses[checked : step + 1].mean())
                bar.set_postfix(loss=f"{recent:.3f}", img_s=f"{rate:.0f}")
                bar.update(step + 1 - checked)
                checked = step + 1
        bar.close()
        seconds = time.perf_counter() - start
        loss_sum, hits, n = reduce_sums([float(loss_sum), float(correct), float(seen)], self.device)
        return loss_sum / n, 100 * hits / n, n / seconds

    def _check_finite(self, losses: torch.Tensor, begin: int, end: int, epoch: int) -> None:
        """Stop at the first NaN/inf loss on any rank, naming its epoch and step."""
        bad = (~torch.isfinite(losses[begin:end])).nonzero()
        first = begin + int(bad[0]) if len(bad) else self.steps
        first = self.world.min(first, self.device)
        if first == self.steps:
            return
        value = float(losses[first])
        kept = (
            f"{self.run_dir} keeps epoch {self.epoch}, the last good one"
            if self.epoch
            else "no epoch finished, so no checkpoint was written"
        )
        raise TrainingError(
            f"the training loss became {value if not math.isfinite(value) else 'NaN/inf'} at "
            f"epoch {epoch}, step {first + 1} of {self.steps}; the run stopped and {kept}. "
            f"Lower the learning rate (--lr, now {self.recipe.lr:g}) or add --warmup"
        )

    def _evaluate(self) -> EvalResult:
        return evaluate(
            self.net, self.val_batches, mean=self.mean, std=self.std, device=self.device
        )

    # -- the run folder --

    def log(self, message: str) -> None:
        if self.world.main:
            print(message, flush=True)

    def _save(self, row: dict, val: EvalResult) -> None:
        self.rows.append(row)
        rng = self.world.gather(self._rng_state())
        if not self.world.main:
            return
        improved = val.top1 > self.best
        self.best = max(self.best, val.top1)
        state = {
            "epoch": self.epoch,
            "best": self.best,
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng,
        }
        extra = {"epoch": self.epoch, "val_top1": val.top1, "data": self.cfg.data}
        save_epoch(
            self.run_dir,
            self.net,
            self.rows,
            state,
            improved=improved,
            classes=self.classes,
            mean=self.mean,
            std=self.std,
            extra=extra,
        )

    def _rng_state(self) -> dict:
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "order": self.order.get_state(),
            "augment": self.augment.get_state(),
        }

    def _restore(self, state: dict) -> None:
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.best = int(state["epoch"]), float(state["best"])
        self.rows = read_metrics(self.run_dir / "metrics.csv")[: self.epoch]
        rng = state["rng"]
        self.order.set_state(rng[0]["order"])  # the same on every rank
        if self.world.rank < len(rng):  # ranks a former launch did not have keep their new seeds
            mine = rng[self.world.rank]
            torch.set_rng_state(mine["torch"])
            self.augment.set_state(mine["augment"])
            if mine["cuda"] is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state(mine["cuda"], self.device)

    def _check_ranks_agree(self) -> None:
        """Under torchrun, check every rank ends with the same weights (and say so)."""
        if self.world.size == 1:
            return
        digests = self.world.gather(state_digest(self.net.state_dict()))
        self.log(f"weights sha256 per rank: {' '.join(digests)}")
        if len(set(digests)) > 1:
            raise RuntimeError("DistributedDataParallel ranks ended with different weights")


# --- entry points ------------------------------------------------------------------------------


def start(
    spec: str | None,
    overrides: dict[str, Any],
    width: float | None,
    resume_from: str | None,
    command: str = "",
    **given: Any,
) -> Path:
    """``cli.py train``: a new run of ``spec`` (``width`` is ``--set width``), or with
    ``resume_from`` the continuation of that run folder. ``given``: the TrainConfig flags set."""
    if resume_from:
        if spec or overrides or width is not None:
            raise UserError("--resume takes no SPEC, --set or --width: a run keeps its spec")
        return resume(resume_from, command, **given)
    if not spec:
        raise UserError("give the SPEC to train (e.g. specs/small.yaml), or --resume RUN_FOLDER")
    if width is not None and overrides.setdefault("width", width) != width:
        raise UserError(f"--width {width} and --set width={overrides['width']} disagree")
    return train(TrainConfig(spec, overrides, **given), command)


def _check_rgb(spec: Spec) -> None:
    """Every dataset training reads (CIFAR, image folders, synthetic) is RGB."""
    channels = spec.params.get("in_channels", 3)
    if channels != 3:
        raise SpecError(
            f"in_channels is {channels}, but training data is RGB (3 channels); "
            "train with in_channels 3",
            file=spec.source,
            field="params.in_channels",
        )


def train(cfg: TrainConfig, command: str = "") -> Path:
    """Start a new run in ``cfg.out/cfg.name`` (a fresh name by default); returns its folder.

    The spec, data folder, data root, ``--init`` file and ``--out`` are stored absolute, so
    ``--resume`` works from any working directory. A dataset name wins over a folder of that name.
    """
    _check_rgb(load_spec(cfg.spec, **cfg.overrides))  # on every process; names the file as given
    check_output_folder(cfg.out, field="--out")
    data = cfg.data
    if data not in DATASETS and Path(data).is_dir():
        data = str(Path(data).resolve())
    init = cfg.init
    if init not in (None, "torchvision") and not init.startswith("timm:"):
        init = str(Path(init).resolve())
    cfg = dataclasses.replace(
        cfg,
        spec=str(resolve_path(cfg.spec).resolve()),
        data=data,
        data_dir=str(Path(cfg.data_dir).resolve()),
        out=str(Path(cfg.out).resolve()),
        init=init,
        deterministic=cfg.seed is not None,
    )
    return _launch(cfg, None, command)


def resume(run_dir: str | Path, command: str = "", **changes: Any) -> Path:
    """Continue a run after its last finished epoch, with the settings stored in the folder.

    Only ``device`` and ``compile`` may change: they do not change what is computed.
    """
    run_dir = Path(run_dir)
    extra = sorted(set(changes) - {"device", "compile"})
    if extra:
        flags = ", ".join("--" + k.replace("_", "-") for k in extra)
        raise UserError(
            f"--resume continues {run_dir} with the settings stored in its {CONFIG_FILE}; "
            f"drop {flags} (only --device and --compile may change)"
        )
    try:
        cfg = TrainConfig(**read_config(run_dir))
    except TypeError as e:
        raise UserError(f"damaged {CONFIG_FILE} ({e})", file=str(run_dir / CONFIG_FILE)) from None
    return _launch(dataclasses.replace(cfg, **changes), run_dir, command)


def _launch(cfg: TrainConfig, run_dir: Path | None, command: str) -> Path:
    """Train a new run (``run_dir`` None) or resume one, in the torchrun group if there is one.

    Every process checks the user's input before joining the group, so bad input fails them all
    alike instead of leaving the others waiting for one that stopped.
    """
    world = World.from_env()
    device = pick_device(cfg.device, world.local_rank)
    check_name(cfg.data)
    if run_dir is None:  # train() has loaded the spec
        spec = cfg.spec
        if cfg.name:
            check_free(Path(cfg.out) / check_run_name(cfg.name))
    else:  # the spec as trained, written at the start: the original may have changed or gone
        saved = run_dir / SPEC_FILE
        spec = str(saved) if saved.is_file() else cfg.spec
        _check_rgb(load_spec(spec, **cfg.overrides))
    world.start(device)
    deterministic = torch.are_deterministic_algorithms_enabled()  # a global switch: restored
    try:
        state = None
        if run_dir is None:
            cfg.seed = world.share(cfg.seed if cfg.seed is not None else secrets.randbelow(2**31))
            run_dir = world.share(_new_run_dir(cfg) if world.main else None)
            cfg.name = run_dir.name
        elif (run_dir / RESUME_FILE).is_file():
            state = load_state(run_dir / RESUME_FILE)
        trainer = Trainer(cfg, spec, run_dir, world, state)
        if world.main:
            write_start(run_dir, trainer.net, dataclasses.asdict(cfg), command)
        trainer.fit()
        return run_dir
    finally:
        torch.use_deterministic_algorithms(deterministic)
        world.stop()


def _new_run_dir(cfg: TrainConfig) -> Path:
    out = Path(cfg.out)
    if cfg.name:  # checked free by every process in _launch
        return out / cfg.name
    width = cfg.overrides.get("width", load_spec(cfg.spec).params["width"])
    return first_free(out, f"{Path(cfg.spec).stem}-w{width}-{Path(cfg.data).name}")
