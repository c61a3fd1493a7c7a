"""An adapt folder's own files, named and written here: ``adapt.json`` (what the search is; also
the marker that makes the folder an adapt folder), the proposals' variant files under
``specs/``, the run folders under ``runs/`` and their logs under ``logs/``, and the result."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError
from ..files import read_regular, writing
from ..spec.read import shipped_specs
from .moves import Edits

SETTINGS = "adapt.json"
PLOT = "adapt.png"
SUMMARY = "summary.csv"


@dataclass(frozen=True)
class AdaptSettings:
    """Everything a search depends on. ``overrides`` and ``resolution`` make the deployed network
    (as for ``latency``); ``training`` holds the train flags given (a TrainConfig's fields)."""

    spec: str  # absolute path
    target_ms: float | None = None
    target_ratio: float | None = None
    backend: str = "executorch"
    int8: bool = False
    resolution: int | None = None
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    step: float = 0.01  # δ, the least latency a proposal saves, as a fraction of the start's
    finetune_steps: int = 50
    finetune_lr: float | None = None  # None: a tenth of the training's (steps.finetune_lr)
    finetune_at_most: int | None = None  # proposals fine-tuned a step (None: all, the paper's)
    retrain_epochs: int = 20
    retrain_seeds: int = 1
    moves: tuple[str, ...] = ()
    holdout: int = 1000
    score: str = "loss"  # what ranks the proposals: held-out loss, or top-1 (the paper's)
    baselines: bool = True
    runs: int = 200  # rounds are cheap beside an export: Small at 224 px, about 1 s for 200
    warmup: int = 5
    threads: int = 1  # the runtime's CPU threads as it times (the paper's one core)
    training: dict[str, Any] = dataclasses.field(default_factory=dict)
    out: str = "adapt"

    def stored(self) -> dict[str, Any]:
        """What adapt.json holds: every setting but the folder itself (JSON's types), and
        ``finetune_at_most`` only where set (a search without it is one an earlier version made
        alike, and continues)."""
        values = dataclasses.asdict(self)
        del values["out"]
        if values["finetune_at_most"] is None:
            del values["finetune_at_most"]
        return json.loads(json.dumps(values))


FIX = "repeat the search's own command to continue it, or choose another folder"
# What may differ when a folder is searched again: the path serves every target along it (the
# target only says where to stop), and the retraining comes after the path.
AFTER_THE_PATH = ("target_ms", "target_ratio", "retrain_epochs", "retrain_seeds", "baselines")


def _path_settings(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k not in AFTER_THE_PATH}


def check_same(folder: Path, s: AdaptSettings) -> None:
    """Refuse a folder that holds another search (or a damaged adapt.json): one whose path
    was taken with other settings. Another target, or other retraining settings, continue the
    path (a lower target) or read the result from it (a higher one), and retrain."""
    path = folder / SETTINGS
    if not path.exists():
        return
    raw = read_regular(path, 1 << 20, what="adapt's settings (adapt.json)")
    try:
        found = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise UserError(f"damaged: not JSON ({e}); {FIX}", file=str(path)) from None
    mine = _path_settings(s.stored())
    theirs = _path_settings(found) if isinstance(found, dict) else {}
    if theirs != mine:
        _check_not_older(folder, mine, theirs)
        changed = ", ".join(sorted(k for k in mine if theirs.get(k) != mine[k])) or "its fields"
        raise UserError(
            f"{folder} holds another search (adapt.json differs in {changed}; only the target "
            f"and the retraining may change in a search's folder); {FIX}",
            field="out",
        )


def _check_not_older(folder: Path, mine: dict[str, Any], theirs: dict[str, Any]) -> None:
    """Refuse, saying so, a folder of this very search made by an earlier version of adapt:
    the same settings, less those added since (its steps were taken by that version's rules,
    which this one cannot continue; "repeat the command" would not help)."""
    added = sorted(k for k in mine if k not in theirs)
    if added and set(theirs) < set(mine) and all(theirs[k] == mine[k] for k in theirs):
        raise UserError(
            f"{folder} holds a search made by an earlier version of adapt, which did not "
            f"record {', '.join(added)}: this version cannot continue its steps; its trace and "
            "runs stay as they are; start the search again in another folder",
            field="out",
        )


def write_settings(folder: Path, s: AdaptSettings) -> None:
    with writing(folder / SETTINGS) as tmp:
        tmp.write_text(json.dumps(s.stored(), indent=2))


def variant_text(base: str, name: str, edits: Edits, description: str) -> str:
    """A variant file of ``base`` with ``edits``: a shipped spec by its name, any other by its
    absolute path (the folder can move; the spec it was searched from is where it was)."""
    shipped = {path.resolve(): stem for stem, path in shipped_specs().items()}
    written = shipped.get(Path(base).resolve(), str(Path(base).resolve()))
    doc = {"base": written, "name": name, "description": description, "rows": edits}
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=None)


def write_variant(path: Path, base: str, name: str, edits: Edits, description: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with writing(path) as tmp:
        tmp.write_text(variant_text(base, name, edits, description))
    return path
