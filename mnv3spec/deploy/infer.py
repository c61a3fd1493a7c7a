"""Classify a folder of images with every checkpoint found (the seed's test.py, for any spec).

Each model rebuilds itself from its file's metadata (spec, class names, resolution,
normalisation). Images are prepared as for training on folders
(:func:`mnv3spec.data.folders.decode_image`): any mode to RGB, the first frame of a GIF, the shorter
side scaled to the model's resolution and the centre cropped. A file that is not a readable
image, or a checkpoint that does not load (or, an int8 file, does not run), is reported and skipped;
the rest are still classified.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..data.batches import normalize
from ..data.folders import decode_image
from ..errors import CheckpointError, DataError, UserError
from ..model.memory import check_fits
from ..services.device import pick_device
from ..services.run_folder import RunFolder
from ..text import text_table
from .runtimes import load_any, runtime_of

SUBFOLDER = "a subfolder (images are not searched recursively)"


@dataclass(frozen=True)
class Prediction:
    image: str
    top: list[tuple[str, float]]  # (class name, probability), most likely first


@dataclass
class ModelResult:
    checkpoint: str
    spec: str
    resolution: int
    classes: int
    predictions: list[Prediction] = field(default_factory=list)


@dataclass
class Report:
    models: list[ModelResult]
    skipped: list[tuple[str, str]]  # (file, reason): checkpoints and images that were passed over

    @property
    def classified(self) -> int:
        return sum(len(m.predictions) for m in self.models)

    def to_dict(self) -> dict:
        return {
            "models": [
                {
                    **asdict(m),
                    "predictions": [
                        {"image": p.image, "top": [{"class": c, "p": q} for c, q in p.top]}
                        for p in m.predictions
                    ],
                }
                for m in self.models
            ],
            "skipped": [{"file": f, "reason": r} for f, r in self.skipped],
        }


def find_checkpoints(paths: list[str | Path]) -> list[Path]:
    """Every ``best.safetensors`` under the given folders; a file is taken as it is, and so is a
    folder named like one (to be reported by :func:`load_model`). A file met twice (a folder and
    a file in it) is listed once."""
    found: list[Path] = []
    for path in map(Path, paths):
        inside = sorted(path.rglob(RunFolder.BEST)) if path.is_dir() else []
        if inside:
            found += inside
        elif path.is_dir() and path.suffix != ".safetensors":
            continue  # no checkpoint here: named below if none is found anywhere
        elif path.exists():  # a file, or a folder or pipe named like one, which load_model refuses
            found.append(path)
        else:
            raise CheckpointError("no such file or folder", file=str(path))
    if not found:
        where = ", ".join(map(str, paths))
        raise CheckpointError(
            f"no {RunFolder.BEST} under {where}; train one, or name checkpoint files or folders",
            field="models",
        )
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def list_images(folder: str | Path) -> tuple[list[Path], list[Path]]:
    """The files of ``folder`` (not hidden ones), each to be tried as an image so a stray file is
    reported rather than silently ignored; and its subfolders, which are not searched."""
    folder = Path(folder)
    if folder.is_file():
        raise DataError("is a file; give a folder of images", file=str(folder))
    if not folder.is_dir():
        raise DataError("no such folder of images", file=str(folder))
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    files, subfolders = [p for p in entries if p.is_file()], [p for p in entries if p.is_dir()]
    if not files:
        searched = "; subfolders are not searched" if subfolders else ""
        raise DataError(f"no images in {folder}{searched}")
    return files, subfolders


def classify(
    model_paths: list[str | Path],
    image_folder: str | Path,
    *,
    topk: int = 5,
    device: str = "auto",
    batch_size: int = 32,
) -> Report:
    """Top-``topk`` classes of every image by every checkpoint, batched, in inference mode.
    A checkpoint that does not load (or whose batch would not fit in memory) and a file that is
    not a readable image are reported in :attr:`Report.skipped`; a :class:`DataError` says why
    when nothing at all was classified."""
    for name, value in (("topk", topk), ("batch_size", batch_size)):
        if value < 1:
            raise UserError("must be at least 1", field=name)
    dev = pick_device(device)
    images, subfolders = list_images(image_folder)
    checkpoints = find_checkpoints(model_paths)
    models, skipped = _load_models(checkpoints, dev, batch_size)
    if not models:
        raise DataError(
            f"nothing was classified: no checkpoint could be used "
            f"({_count(checkpoints, 'checkpoint')} found; {_reasons(skipped)})"
        )
    unreadable: list[tuple[str, str]] = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        _classify_batch(batch, models, dev, topk, skipped, unreadable)
    if not models:
        raise DataError(f"nothing was classified: no model could run ({_reasons(skipped)})")
    if len(unreadable) == len(images):
        searched = "; subfolders are not searched" if subfolders else ""
        raise DataError(
            f"nothing was classified: no file in {image_folder} is a readable image "
            f"({_count(images, 'file')} tried; {_reasons(unreadable)}){searched}"
        )
    skipped += unreadable + [(f"{d.name}/", SUBFOLDER) for d in subfolders]
    return Report([result for _, _, result in models], skipped)


def _load_models(checkpoints: list[Path], dev: torch.device, batch_size: int) -> tuple[list, list]:
    """(model, metadata, result) of each checkpoint that loads and fits in memory; and the
    others as (file, reason)."""
    models, skipped = [], []
    for path in checkpoints:
        try:
            model, meta = load_any(path, dev)
            if runtime_of(path) is None:  # a runtime's model runs on the CPU
                check_fits(model, batch_size, meta["resolution"], training=False, device=dev)
        except UserError as e:  # CheckpointError, or the memory check's
            skipped.append((str(path), e.message))
            continue
        result = ModelResult(str(path), model.spec.name, meta["resolution"], len(meta["classes"]))
        models.append((model.eval(), meta, result))
    return models, skipped


def _classify_batch(
    batch: list[Path], models: list, dev: torch.device, topk: int, skipped: list, unreadable: list
) -> None:
    """Every model's predictions for one batch of image files, added to its result; a model that
    cannot run is dropped from ``models`` into ``skipped``, an unreadable file into
    ``unreadable``."""
    resolutions = sorted({meta["resolution"] for _, meta, _ in models})
    names, decoded = _decode_batch(batch, resolutions, unreadable)
    if not names:
        return
    for entry in list(models):
        model, meta, result = entry
        x = normalize(decoded[meta["resolution"]].to(dev), meta["mean"], meta["std"])
        try:
            result.predictions += _predict(model, x, names, meta["classes"], topk)
        except UserError as e:  # an int8 file ONNX Runtime cannot run: skipped, not fatal
            skipped.append((result.checkpoint, e.message))
            models.remove(entry)


def _count(items: list, noun: str) -> str:
    """``1 file``, ``2 files``."""
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _reasons(skipped: list[tuple[str, str]], n: int = 2) -> str:
    """The first ``n`` skipped files and why, for a one-paragraph error."""
    shown = "; ".join(f"{file}: {reason}" for file, reason in skipped[:n])
    more = len(skipped) - n
    return f"{shown}; and {more} more" if more > 0 else shown


def _decode_batch(
    paths: list[Path], resolutions: list[int], skipped: list[tuple[str, str]]
) -> tuple[list[str], dict[int, torch.Tensor]]:
    """The readable images of ``paths`` at every resolution needed; the others go to ``skipped``."""
    names, tensors = [], {r: [] for r in resolutions}
    for path in paths:
        try:
            decoded = {r: decode_image(path, r) for r in resolutions}
        except DataError as e:
            skipped.append((path.name, e.message))
            continue
        names.append(path.name)
        for r, t in decoded.items():
            tensors[r].append(t)
    return names, {r: torch.stack(t) for r, t in tensors.items() if t}


def _predict(
    model: torch.nn.Module, x: torch.Tensor, names: list[str], classes: list[str], topk: int
) -> list[Prediction]:
    with torch.inference_mode():
        probs = model(x).float().softmax(dim=1)
    if probs.shape[1] != len(classes) or not bool(probs.isfinite().all()):
        raise CheckpointError(
            f"its outputs are not {len(classes)} finite logits, one per class ({probs.shape[1]} "
            "columns, or NaN or infinite values)"
        )
    values, indices = probs.topk(min(topk, probs.shape[1]), dim=1)
    return [
        Prediction(name, [(classes[i], p) for i, p in zip(idx.tolist(), val.tolist(), strict=True)])
        for name, idx, val in zip(names, indices, values, strict=True)
    ]


def format_tables(report: Report) -> str:
    """One table per model: the image, then its top-k classes with probabilities."""
    blocks = []
    for m in report.models:
        title = f"{m.checkpoint}: {m.spec}, {m.classes} classes, {m.resolution}×{m.resolution}"
        rows = [(p.image, *(f"{c} {q:.1%}" for c, q in p.top)) for p in m.predictions]
        k = max((len(r) - 1 for r in rows), default=0)
        head = ("image", *(f"top-{i + 1}" for i in range(k)))
        blocks.append("\n".join([title, *text_table(head, rows, None, set(range(k + 1)))]))
    return "\n\n".join(blocks)
