"""Device choice, mixed precision and the torchrun helpers, on a machine without a GPU."""

from __future__ import annotations

import pytest
import torch

from mnv3spec import UserError
from mnv3spec.run.runtime import World, amp_dtype, pick_device, reduce_sums, state_digest


def test_pick_device_on_a_cpu_machine(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu")
    with pytest.raises(UserError, match="--device cuda is not available on this machine"):
        pick_device("cuda")
    with pytest.raises(UserError, match="unknown device 'tpu'"):
        pick_device("tpu")


def test_auto_prefers_cuda_and_takes_the_local_rank(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto", local_rank=3) == torch.device("cuda:3")


def test_mixed_precision_only_on_cuda():
    assert amp_dtype(torch.device("cpu")) is None


def test_without_torchrun_a_single_world_and_identity_collectives(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    world = World.from_env()
    assert (world.rank, world.size, world.main) == (0, 1, True)
    assert reduce_sums([1.0, 2.5], torch.device("cpu")) == [1.0, 2.5]
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert (World.from_env().rank, World.from_env().main) == (1, False)


def test_state_digest_sees_every_byte_and_name():
    state = {"a": torch.zeros(3), "b": torch.ones(2, dtype=torch.int64)}
    same = {"b": torch.ones(2, dtype=torch.int64), "a": torch.zeros(3)}
    assert state_digest(state) == state_digest(same)
    changed = {**state, "a": torch.tensor([0.0, 0.0, 1e-30])}
    assert state_digest(changed) != state_digest(state)
    assert state_digest({"c": state["a"], "b": state["b"]}) != state_digest(state)
