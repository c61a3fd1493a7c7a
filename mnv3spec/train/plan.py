"""The run plan: settings + a resolved :class:`Spec` + the data → what will run.

The spec is fitted to its data here, in one place (``num_classes`` and ``resolution`` follow the
data unless the run set them), and the network is built once from the fitted spec, its memory
checked before anything is written.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..data.batches import worker_count
from ..data.datasets import Dataset, load_dataset, native_resolution
from ..errors import DataError, SpecError, UserError
from ..model.builder import SpecNet, build
from ..model.memory import check_fits
from ..services.device import World
from ..spec.resolve import Spec
from ..weights.init import init_from
from .config import TrainConfig
from .recipe import Recipe

SYNTHETIC_CLASSES = 10  # classes of synthetic data unless num_classes is set


@dataclass(frozen=True)
class RunPlan:
    """What one process of a run will do: the settings, the spec fitted to the data, the data
    (on the device when it fits there), and how the batch splits into steps."""

    cfg: TrainConfig
    recipe: Recipe  # cfg's, resolved once
    spec: Spec
    data: Dataset
    world: World
    device: torch.device
    amp: torch.dtype | None  # autocast's dtype on the device; None: float32
    batch: int  # this process's share of the global batch
    steps: int  # per epoch and process
    drop_last: bool
    workers: int  # decoding processes per process, for data too large for memory


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


def load_data(cfg: TrainConfig, spec: Spec) -> Dataset:
    """CIFAR and (Fashion-)MNIST keep their 32×32 and 28×28 unless the run set ``resolution``;
    folders and synthetic data come at the spec's resolution. Grey images come as three equal
    channels when the spec names ``in_channels`` 3 (e.g. to start from ImageNet weights)."""
    resolution = spec.resolution
    if native_resolution(cfg.data) and "resolution" not in cfg.overrides:
        resolution = native_resolution(cfg.data)
    classes = spec.num_classes if "num_classes" in cfg.overrides else SYNTHETIC_CLASSES
    data = load_dataset(cfg.data, cfg.data_dir, resolution, num_classes=classes)
    if cfg.train_subset is not None:
        data = data.train_subset(cfg.train_subset)
    if cfg.holdout is not None:
        data = data.held_out(cfg.holdout)
    return data.as_rgb() if channels_set(spec) == 3 else data


def channels_set(spec: Spec) -> int | None:
    """``in_channels`` where the spec names it (in its file, or by an override); None where it
    leaves it to the data."""
    return spec.params.get("in_channels")


def fit_to_data(spec: Spec, data: Dataset, cfg: TrainConfig) -> Spec:
    """The spec with ``num_classes`` and ``resolution`` those of the data unless the run set them
    (more classes than the data has are allowed, fewer are not), and ``in_channels`` the data's
    unless the spec names it, which must then match the data (:func:`load_data` made grey
    images RGB where the spec names 3)."""
    classes = spec.num_classes if "num_classes" in cfg.overrides else data.num_classes
    if classes < data.num_classes:
        raise SpecError(
            f"num_classes is {classes} but the data has {data.num_classes} classes",
            field="overrides",
        )
    channels = spec.in_channels if channels_set(spec) is not None else data.channels
    if channels != data.channels:
        allowed = "1 or 3" if data.channels == 1 else str(data.channels)
        raise SpecError(
            f"in_channels is {channels} but {data.name} has {data.channels}-channel images; "
            f"allowed: {allowed} (3 repeats grey images into RGB), or leave it to follow the data",
            file=spec.source,
            field="params.in_channels",
        )
    resolution = int(data.train_images.shape[-1])
    if (classes, resolution, channels) == (spec.num_classes, spec.resolution, spec.in_channels):
        return spec
    grey = {} if channels == spec.in_channels else {"params.in_channels": channels}
    return spec.derive(num_classes=classes, resolution=resolution, **grey)


def place(data: Dataset, device: torch.device) -> Dataset:
    """Move the uint8 dataset to the GPU once when it takes under a quarter of free memory;
    otherwise (or when it is decoded batch by batch) batches are copied over step by step."""
    if device.type == "cpu" or data.streamed:
        return data
    size = data.train_images.nbytes + data.val_images.nbytes
    if device.type == "cuda" and size > torch.cuda.mem_get_info(device)[0] / 4:
        return data
    moved = ("train_images", "train_labels", "val_images", "val_labels")
    return dataclasses.replace(data, **{k: getattr(data, k).to(device) for k in moved})


def make_plan(
    cfg: TrainConfig,
    spec: Spec,
    world: World,
    device: torch.device,
    amp: torch.dtype | None,
    *,
    resumed: bool,
) -> RunPlan:
    """Load the data (rank 0 first: it downloads what the others then find) and fit the spec to
    it; on resume the run's own spec must already fit."""
    if cfg.batch % world.size:
        raise UserError(f"{cfg.batch} does not split over {world.size} processes", field="batch")
    with world.main_first():
        data = load_data(cfg, spec)
    fitted = fit_to_data(spec, data, cfg)
    if resumed and fitted is not spec:
        raise DataError(
            f"{cfg.data} now has {data.num_classes} classes at {fitted.resolution}px with "
            f"{data.channels} channel(s), but the run was trained with {spec.num_classes} at "
            f"{spec.resolution}px with {spec.in_channels}; restore the data, or "
            "start a new run",
            file=spec.source,
        )
    batch = cfg.batch // world.size
    steps, drop_last = steps_per_epoch(len(data.train_labels), batch, world.size)
    steps = min(steps, cfg.steps_per_epoch or steps)
    workers = worker_count(world.local_size) if data.streamed else 0
    data = place(data, device)
    recipe = cfg.resolved_recipe()
    return RunPlan(cfg, recipe, fitted, data, world, device, amp, batch, steps, drop_last, workers)


def build_network(plan: RunPlan, *, start_from: str | None) -> tuple[SpecNet, str | None]:
    """The network, built once from the plan's spec, checked to fit in memory for training, with
    ``start_from`` weights (``init``) when given; and what loading them said."""
    shapes = build(plan.spec, device="meta")  # refused before its weights are made, if too large
    check_fits(
        shapes, plan.batch, plan.spec.resolution, training=True, device=plan.device, what="training"
    )
    net = build(plan.spec)
    note = None
    if start_from:
        with plan.world.main_first():  # rank 0 downloads torchvision's weights first
            note = init_from(net, start_from)
    return net.to(plan.device, memory_format=torch.channels_last), note
