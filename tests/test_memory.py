"""The memory estimate: close to what PyTorch really allocates, and a refusal past the machine."""

from __future__ import annotations

import pytest
import torch

from mnv3spec import UserError, build, load_spec
from mnv3spec.model import memory

from .conftest import ROOT

SMALL = ROOT / "specs" / "small.yaml"


def test_activations_count_every_layer_output_for_one_image():
    model = build(load_spec(SMALL, width=0.25, num_classes=10))
    act = memory.activations(model, 32)
    # The stem alone outputs 16×32×32 floats (si=1 keeps 32×32 after the first conv).
    assert act.largest >= 16 * 32 * 32 * 4
    assert act.total > act.largest
    # Four times the pixels, four times the activations: the counting follows the resolution.
    assert memory.activations(model, 64).total == pytest.approx(4 * act.total, rel=0.05)


def test_training_estimate_is_within_a_factor_of_two_of_the_real_peak():
    """Measured with the CPU allocator's own peak would need a profiler; instead compare with the
    bytes autograd saves, which torch reports exactly through saved-tensor hooks."""
    model = build(load_spec(SMALL, width=0.25, num_classes=10)).train()
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    x = torch.randn(8, 3, 32, 32)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum().backward()
    estimate = memory.estimate(model, 8, 32, training=True)
    weights = 4 * sum(p.numel() for p in model.parameters()) * 4
    assert 0.5 < (estimate - weights) / (2 * sum(saved)) < 2


def test_a_size_past_the_machine_is_refused_before_allocating(monkeypatch):
    model = build(load_spec(SMALL, width=0.25, num_classes=10))
    assert memory.check_fits(model, 8, 32, training=True) > 0
    with pytest.raises(UserError) as e:
        memory.check_fits(model, 1, 100_000, training=False, what="the export")
    message = str(e.value)
    assert "the export would need about" in message and "100000×100000" in message
    assert "GiB available" in message and "lower the batch size" in message
    monkeypatch.setattr(memory, "available", lambda device="cpu": 10 * 2**20)  # 10 MiB left
    with pytest.raises(UserError, match="training at batch 128"):
        memory.check_fits(model, 128, 32, training=True)
