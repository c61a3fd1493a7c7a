"""Device choice, mixed precision and the torchrun helpers, on a machine without a GPU."""

from __future__ import annotations

import pytest
import torch

from mnv3spec import UserError
from mnv3spec.services.device import (
    World,
    amp_dtype,
    no_autotune,
    pick_device,
    reduce_sums,
    state_digest,
    thread_count,
    torch_settings,
)


def test_pick_device_on_a_cpu_machine(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu")
    with pytest.raises(UserError, match="cuda is not available on this machine") as e:
        pick_device("cuda")
    assert e.value.field == "device"  # the parameter; the CLI names its flag
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


def test_thread_count_respects_omp_num_threads_and_splits_cores_over_local_processes(
    monkeypatch,
):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    assert thread_count(1, {"OMP_NUM_THREADS": "3"}) == 3  # the user's choice wins
    assert thread_count(4, {"OMP_NUM_THREADS": "3"}) == 3
    assert thread_count(1, {}) == 8  # alone: what torch would take
    assert thread_count(2, {}) == 4  # two processes of a torchrun launch: half each
    assert thread_count(16, {}) == 1  # never none
    for junk in ("", "0", "-2", "two"):  # not a positive count: as if unset
        assert thread_count(2, {"OMP_NUM_THREADS": junk}) == 4


def test_torch_settings_are_set_for_the_block_and_restored_after():
    before = (
        torch.get_num_threads(),
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.benchmark,
    )
    threads = 2 if before[0] != 2 else 1
    flipped = torch_settings(threads=threads, deterministic=not before[1], benchmark=not before[2])
    with pytest.raises(RuntimeError, match="inside"), flipped:
        assert torch.get_num_threads() == threads
        assert torch.are_deterministic_algorithms_enabled() is not before[1]
        assert torch.backends.cudnn.benchmark is not before[2]
        raise RuntimeError("inside")
    after = (
        torch.get_num_threads(),
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.benchmark,
    )
    assert after == before


def test_no_autotune_turns_cudnns_autotuner_off_for_the_block_only():
    before = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = True
        with pytest.raises(RuntimeError, match="inside"), no_autotune():
            assert torch.backends.cudnn.benchmark is False
            raise RuntimeError("inside")
        assert torch.backends.cudnn.benchmark is True
    finally:
        torch.backends.cudnn.benchmark = before
