"""Recipe presets: the short-budget preset's parts (random erasing as one batched op, cosine with
warm-up, label smoothing, Nesterov, weight decay on weights only), its bad values refused, and a
run of it killed and resumed equal to one that was not."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from mnv3spec.data.batches import random_erase
from mnv3spec.errors import UserError
from mnv3spec.train.recipe import RECIPES, lr_factor, resolve_recipe

from .conftest import ROOT, kill_during_epoch_2, run_cli
from .test_cli_train import TINY, metrics

PRESET = "cosine-ls-erase"


def test_random_erase_puts_one_rectangle_of_noise_in_each_chosen_image():
    images = torch.full((64, 1, 28, 28), 7, dtype=torch.uint8)  # 7 so noise shows as a change
    out = random_erase(images, 1.0, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == images.shape
    changed = out[:, 0] != 7
    for mask in changed:
        rows, cols = mask.any(1).nonzero()[:, 0], mask.any(0).nonzero()[:, 0]
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert box <= 0.4 * 28 * 28 * 1.2  # one rectangle of at most 40 % (rounding aside)
        assert int(mask.sum()) >= 0.9 * int(box)  # filled: noise hits 7 only 1 time in 256
    assert changed.flatten(1).any(1).all()
    again = random_erase(images, 1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # the generator decides everything


def test_random_erase_probability_is_per_image():
    images = torch.zeros(400, 3, 8, 8, dtype=torch.uint8)
    none = random_erase(images, 0.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(none, images)
    half = random_erase(images, 0.5, generator=torch.Generator().manual_seed(1))
    erased = (half != 0).flatten(1).any(1).float().mean()
    assert 0.4 < erased < 0.6
    with pytest.raises(ValueError, match="must be in"):
        random_erase(images, 1.5)


def test_the_preset_is_nesterov_cosine_with_warmup_smoothing_decay_and_erasing():
    r = resolve_recipe(PRESET)
    assert (r.nesterov, r.schedule, r.warmup, r.label_smoothing) == (True, "cosine", 1.0, 0.1)
    assert (r.weight_decay, r.random_erasing, r.batch) == (5e-3, 0.5, 64)
    factors = [lr_factor(r, 4, step, 10) for step in range(40)]
    assert factors[0] == pytest.approx(0.1)  # warm-up from 1/10, then the cosine alone:
    assert factors[9] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.9 / 4)))
    assert factors[20] == pytest.approx(0.5) and factors[39] < 0.01  # cosine to 0
    assert RECIPES["seed"].random_erasing == 0  # the seed's recipe draws no erasing at all


@pytest.mark.parametrize(
    ("flags", "batch"),
    [([], 128), (["--recipe", PRESET], 64), (["--recipe", PRESET, "--batch", "32"], 32)],
)
def test_the_batch_is_the_recipes_unless_given_and_config_json_holds_it(tmp_path, flags, batch):
    i = TINY.index("--batch")
    r = run_cli("train", *TINY[:i], *TINY[i + 2 :], *flags, "--epochs", "1", "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"batch {batch}, {512 // batch} steps/epoch" in r.stdout  # 512 synthetic images
    (run,) = tmp_path.iterdir()
    assert json.loads((run / "config.json").read_text())["batch"] == batch


@pytest.mark.parametrize("bad", [0, -1, 2.5])
def test_a_batch_below_1_or_not_whole_is_refused_naming_it(bad):
    with pytest.raises(UserError, match="must be a whole number of at least 1") as e:
        resolve_recipe(PRESET, batch=bad)
    assert e.value.field == "batch"


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_random_erasing_outside_0_1_is_refused_naming_it(bad):
    with pytest.raises(UserError, match=r"must be in \[0, 1\]") as e:
        resolve_recipe(PRESET, random_erasing=bad)
    assert e.value.field == "random_erasing"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--recipe", "fast"], "unknown recipe 'fast'; known: seed, cosine-ls-erase"),
        (["--random-erasing", "1.5"], "must be in [0, 1], got 1.5"),
        (["--random-erasing", "nan"], "--random-erasing"),
        (["--batch", "0"], "--batch"),  # the last --batch wins over TINY's
        (["--batch", "2.5"], "--batch"),
    ],
)
def test_cli_bad_recipe_flags_exit_2_in_one_paragraph(tmp_path, flags, message):
    r = run_cli("train", *TINY, "--epochs", "1", "--out", tmp_path, *flags, cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert message in r.stderr and not any(tmp_path.iterdir())


def test_preset_killed_during_epoch_2_and_resumed_equals_an_uninterrupted_run(tmp_path):
    args = [*TINY, "--recipe", PRESET, "--epochs", "3", "--out", str(tmp_path)]
    straight = run_cli("train", *args, "--name", "straight")
    assert straight.returncode == 0, straight.stderr
    killed = kill_during_epoch_2(tmp_path, *TINY, "--recipe", PRESET, "--epochs", "3")
    assert len(metrics(killed)) == 1, "the run was not killed during epoch 2"
    resumed = run_cli("train", "--resume", killed)
    assert resumed.returncode == 0, resumed.stderr
    a = load_file(tmp_path / "straight" / "last.safetensors")
    b = load_file(killed / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert metrics(tmp_path / "straight")[-1]["val_loss"] == metrics(killed)[-1]["val_loss"]


def test_resume_epochs_extends_a_multistep_run_to_what_a_longer_run_gives(tmp_path):
    straight = run_cli("train", *TINY, "--epochs", "3", "--out", tmp_path, "--name", "straight")
    assert straight.returncode == 0, straight.stderr
    short = run_cli("train", *TINY, "--epochs", "2", "--out", tmp_path, "--name", "short")
    assert short.returncode == 0, short.stderr
    longer = run_cli("train", "--resume", tmp_path / "short", "--epochs", "3")
    assert longer.returncode == 0, longer.stderr
    assert "after epoch 2 of 3" in longer.stdout and "epoch 3/3" in longer.stdout
    a = load_file(tmp_path / "straight" / "last.safetensors")
    b = load_file(tmp_path / "short" / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "short" / "config.json").read_text())["epochs"] == 3


def snapshot(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_resume_epochs_refuses_cosine_with_the_reason_and_too_few_epochs(tmp_path):
    cosine = run_cli("train", *TINY, "--recipe", PRESET, "--epochs", "1", "--out", tmp_path)
    assert cosine.returncode == 0, cosine.stderr
    (run,) = tmp_path.iterdir()
    before = snapshot(run)
    r = run_cli("train", "--resume", run, "--epochs", "2")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "--epochs: a run with the cosine schedule cannot be extended" in r.stderr
    assert "depends on the total (1)" in r.stderr and "initialised from" in r.stderr
    assert snapshot(run) == before
    seed = run_cli("train", *TINY, "--epochs", "2", "--out", tmp_path, "--name", "seed")
    assert seed.returncode == 0, seed.stderr
    r = run_cli("train", "--resume", tmp_path / "seed", "--epochs", "2")
    assert r.returncode == 2 and "has done 2 epoch(s) already" in r.stderr
