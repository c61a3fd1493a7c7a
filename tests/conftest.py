"""Shared helpers: the repo root and a way to run cli.py the way a user does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.yaml"))


def run_cli(*args: str, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python cli.py ARGS`` in a subprocess; returns the completed process (text output)."""
    return subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def cli():
    return run_cli


def tiny_checkpoint(path: Path, classes: list[str], **overrides) -> torch.nn.Module:
    """Save a width-0.25 Small at 32×32 as a training run would, with weights that give O(1)
    logits (BN statistics of random input, a larger classifier) so predictions are not ties."""
    from mnv3spec import build, load_spec
    from mnv3spec.weights.checkpoint import save_weights

    torch.manual_seed(0)
    model = build(
        load_spec(ROOT / "specs" / "small.yaml", width=0.25, num_classes=len(classes), **overrides)
    )
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # the running statistics become those of the one batch below
            m.reset_running_stats()
    with torch.no_grad():
        model.train()(torch.rand(16, 3, 32, 32) * 4 - 2)
        classifier = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        classifier.weight.normal_(0, 3)
    save_weights(path, model.eval(), classes=classes, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    return model
