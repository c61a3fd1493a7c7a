"""The training runner: recipe rules, evaluation numbers, starting weights, NaN stop (in-process),
and a folder too large for memory trained through ``cli.py`` on decoding workers."""

from __future__ import annotations

import builtins
import dataclasses
import importlib
import io
import itertools
import json
import math
import os
import re
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import load_file, save_file
from torch import nn

from mnv3spec import build, load_spec
from mnv3spec import files as outputs
from mnv3spec.cli import main
from mnv3spec.data import folders
from mnv3spec.data.batches import batches
from mnv3spec.errors import CheckpointError, TrainingError, UserError
from mnv3spec.services import evaluate as evaluating
from mnv3spec.services import run_folder
from mnv3spec.services.evaluate import evaluate
from mnv3spec.train import steps
from mnv3spec.train.config import TrainConfig
from mnv3spec.train.plan import steps_per_epoch
from mnv3spec.train.recipe import RECIPES, lr_factor, make_optimizer, make_scheduler, param_groups
from mnv3spec.train.train import train
from mnv3spec.weights.checkpoint import read_metadata
from mnv3spec.weights.init import init_from

from .conftest import ROOT, run_cli
from .test_cli_train import RUN_FILES, metrics
from .test_folders import noise_folder

SMALL = ROOT / "specs" / "small.yaml"
TINY = {"width": 0.25, "resolution": 16, "num_classes": 10}
CPU = torch.device("cpu")


def test_seed_recipe_is_the_seeds_optimiser_and_multistep_schedule():
    model = build(load_spec(SMALL, **TINY))
    opt = make_optimizer(model, RECIPES["seed"])
    assert isinstance(opt, torch.optim.SGD)
    for group in opt.param_groups:
        assert (group["lr"], group["momentum"], group["nesterov"]) == (0.1, 0.9, False)
        assert group["weight_decay"] == 0.0
    # The seed stepped MultiStepLR([15, 20, 30], 0.1) once per epoch; ours steps per batch.
    ref_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    ref = torch.optim.lr_scheduler.MultiStepLR(ref_opt, [15, 20, 30], 0.1)
    sched = make_scheduler(opt, RECIPES["seed"], epochs=35, steps_per_epoch=3)
    for _epoch in range(35):
        for _ in range(3):
            assert opt.param_groups[0]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        ref_opt.step()
        ref.step()


def test_cosine_with_warmup():
    recipe = TrainConfig("x", schedule="cosine", warmup=2).resolved_recipe()
    assert recipe.lr == 0.1 and recipe.warmup == 2  # the rest stays the seed's
    factors = [lr_factor(recipe, 10, step, 5) for step in range(50)]
    assert factors[0] == pytest.approx(1 / 10)  # 1 of 2 epochs × 5 steps of warm-up
    assert factors[9] == pytest.approx(0.5 * (1 + math.cos(math.pi * 9 / 50)))  # warm-up done
    assert all(a > b for a, b in itertools.pairwise(factors[9:]))
    assert factors[-1] < 0.002


def test_weight_decay_never_on_batchnorm_or_biases():
    model = build(load_spec(SMALL, **TINY))
    decayed, plain = param_groups(model, 5e-4)
    assert decayed["weight_decay"] == 5e-4 and plain["weight_decay"] == 0.0
    no_decay = {id(p) for p in plain["params"]}
    for name, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            assert {id(module.weight), id(module.bias)} <= no_decay, name
        if isinstance(module, nn.Conv2d):
            assert id(module.weight) not in no_decay, name
            assert module.bias is None or id(module.bias) in no_decay, name
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize(
    "images, batch, world, drop",
    [
        (512, 32, 1, False),
        (100, 32, 1, False),
        (129, 128, 1, True),
        (9, 4, 2, True),
        (10, 3, 2, False),
    ],
)
def test_steps_per_epoch_matches_batches_and_never_leaves_one_image(images, batch, world, drop):
    steps, dropped = steps_per_epoch(images, batch, world)
    assert dropped is drop
    x, y = torch.zeros(images, 1, 1, 1), torch.arange(images)
    for rank in range(world):
        sizes = [
            len(b)
            for _, b in batches(
                x, y, batch, shuffle=False, drop_last=drop, rank=rank, world_size=world
            )
        ]
        assert len(sizes) == steps and 1 not in sizes


def test_unknown_recipe_is_a_user_error():
    with pytest.raises(UserError, match="unknown recipe 'fast'; known: seed"):
        TrainConfig("x", recipe="fast").resolved_recipe()


class ConstantLogits(nn.Module):
    """Scores 0, 1, …, 6 for every image: class 6 first, then 5, 4, 3, 2."""

    def forward(self, x):
        return torch.arange(7.0).expand(len(x), 7)


def test_evaluate_counts_top1_top5_and_loss_exactly():
    labels = torch.tensor([6, 6, 5, 2, 1, 0, 3])
    images = torch.zeros(7, 3, 4, 4, dtype=torch.uint8)
    val = batches(images, labels, 3, shuffle=False)
    r = evaluate(ConstantLogits(), val, mean=(0,) * 3, std=(1,) * 3, device=CPU)
    expected_loss = nn.functional.cross_entropy(torch.arange(7.0).expand(7, 7), labels)
    assert r.images == 7
    assert r.top1 == pytest.approx(100 * 2 / 7)
    assert r.topk == pytest.approx(100 * 5 / 7)  # 6, 6, 5, 2, 3
    assert r.loss == pytest.approx(float(expected_loss))


# --- starting weights --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torchvision_small():
    torch.manual_seed(1)
    return torchvision.models.mobilenet_v3_small().state_dict()


def _check_loaded(model, tv, *, classifier):
    ours = list(model.state_dict().values())
    theirs = list(tv.values())
    for mine, ref in zip(ours[:-2], theirs[:-2], strict=True):
        assert torch.equal(mine, ref.reshape(mine.shape))
    assert torch.equal(ours[-1], theirs[-1]) is classifier


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_init_from_a_torchvision_state_dict_file(tmp_path, torchvision_small, suffix):
    path = tmp_path / f"tv{suffix}"
    if suffix == ".pth":
        torch.save(torchvision_small, path)
    else:  # safetensors sorts the names: the order must come back from the architecture
        save_file(dict(sorted(torchvision_small.items())), str(path))
    model = build(load_spec(SMALL, num_classes=10))
    message = init_from(model, str(path))
    assert "classifier re-initialised for 10 classes" in message
    _check_loaded(model, torchvision_small, classifier=False)

    same_classes = build(load_spec(SMALL, num_classes=1000))
    assert "re-initialised" not in init_from(same_classes, str(path))
    _check_loaded(same_classes, torchvision_small, classifier=True)


def test_init_from_a_file_saved_before_rows_had_names(tmp_path):
    """Module names were r03_bneck before rows had names; such a file still starts a named spec."""
    import yaml

    doc = yaml.safe_load(SMALL.read_text())
    for row in doc["layers"]:
        del row["name"]
    old = build(load_spec(doc, width=0.25)).eval()
    save_file(old.state_dict(), tmp_path / "old.safetensors")  # stored sorted by name
    new = build(load_spec(SMALL, width=0.25)).eval()
    assert init_from(new, str(tmp_path / "old.safetensors")).startswith("initialised from")
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(new(x), old(x))


def test_init_torchvision_picks_the_architecture_by_shapes(
    tmp_path, monkeypatch, torchvision_small
):
    """A copy of the spec under another name still gets Small's weights (from the hub cache)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.MobileNet_V3_Small_Weights.DEFAULT
    cached = tmp_path / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[1]
    cached.parent.mkdir(parents=True)
    torch.save(torchvision_small, cached)
    renamed = tmp_path / "large.yaml"  # a misleading name: data, not names, decides
    renamed.write_text(SMALL.read_text().replace("name: mobilenet_v3_small", "name: large"))
    model = build(load_spec(renamed, num_classes=10))
    assert "torchvision's mobilenet_v3_small" in init_from(model, "torchvision")
    _check_loaded(model, torchvision_small, classifier=False)


def test_init_torchvision_offline_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(CheckpointError) as e:
        init_from(build(load_spec(SMALL)), "torchvision")
    message = str(e.value)
    assert "no network" in message and "start from a saved state_dict file" in message
    assert str(tmp_path / "hub" / "checkpoints" / "mobilenet_v3_small-047dcff4.pth") in message


def test_init_torchvision_refuses_a_spec_matching_neither():
    with pytest.raises(CheckpointError, match="matches neither"):
        init_from(build(load_spec(SMALL, width=0.5)), "torchvision")


# --- a NaN loss stops the run and keeps the last good epoch --------------------------------------


@pytest.fixture
def one_thread():
    """One thread: the tests share two cores with other test runs, and two contended OpenMP
    threads are many times slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_nan_loss_stops_naming_epoch_and_step_and_keeps_last_good_epoch(
    tmp_path, monkeypatch, one_thread
):
    calls = {"n": 0}

    class PoisonedLoss(nn.CrossEntropyLoss):
        def forward(self, logits, labels):
            calls["n"] += 1
            loss = super().forward(logits, labels)
            return loss * float("nan") if calls["n"] == 16 + 3 else loss  # epoch 2, step 3

    monkeypatch.setattr(nn, "CrossEntropyLoss", PoisonedLoss)
    overrides = {"width": 0.25, "resolution": 16}
    cfg = TrainConfig(str(SMALL), overrides, data="synthetic", epochs=3, batch=32, seed=0)
    cfg = dataclasses.replace(
        cfg, out=str(tmp_path), name="run"
    )  # 512 synthetic images: 16 steps per epoch
    with pytest.raises(TrainingError, match="at epoch 2, step 3 of 16") as e:
        train(cfg)
    assert "keeps epoch 1" in str(e.value) and e.value.exit_code == 3
    run = tmp_path / "run"
    assert read_metadata(run / "last.safetensors")["extra"]["epoch"] == 1
    assert torch.load(run / "resume.pt", weights_only=True)["epoch"] == 1
    assert (run / "metrics.csv").read_text().count("\n") == 2  # header + epoch 1
    assert json.loads((run / "config.json").read_text())["epochs"] == 3


def test_shapes_met_once_an_epoch_are_never_autotuned(tmp_path, monkeypatch, one_thread):
    """cuDNN's autotuner (on for an unseeded CUDA run) times every algorithm at each new shape:
    full training batches keep it, the short last batch and validation run without it. Checked
    on the CPU with the run's switch forced on, recording it at each step and validation batch."""
    training = importlib.import_module("mnv3spec.train.train")
    real_settings, real_step, real_norm = (
        training.torch_settings,
        steps.train_step,
        evaluating.normalize,
    )
    seen = []

    def step(*args):
        seen.append(("train", len(args[5]), torch.backends.cudnn.benchmark))
        return real_step(*args)

    def norm(x, *args, **kw):
        seen.append(("val", len(x), torch.backends.cudnn.benchmark))
        return real_norm(x, *args, **kw)

    monkeypatch.setattr(
        training, "torch_settings", lambda **kw: real_settings(**kw | {"benchmark": True})
    )
    monkeypatch.setattr(steps, "train_step", step)
    monkeypatch.setattr(evaluating, "normalize", norm)
    overrides = {"width": 0.25, "resolution": 16}
    cfg = TrainConfig(str(SMALL), overrides, data="synthetic", epochs=1, batch=48, seed=0)
    cfg = dataclasses.replace(
        cfg, out=str(tmp_path), name="run"
    )  # 512 images: 10 batches of 48 and one of 32
    before = torch.backends.cudnn.benchmark
    train(cfg)
    assert torch.backends.cudnn.benchmark is before
    assert seen[:11] == [("train", 48, True)] * 10 + [("train", 32, False)]
    assert seen[11:] == [("val", 48, False)] * 2 + [("val", 32, False)]  # 128 images


def test_every_file_of_the_run_folder_is_written_atomically(tmp_path, monkeypatch, one_thread):
    """A crash mid-write must never leave a half file: spec.yaml and config.json are rewritten on
    every resume, and a damaged one would make the run unresumable."""
    written = []
    real = outputs.atomic_path

    def recording(path):
        written.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(run_folder, "atomic_path", recording)
    monkeypatch.setattr(outputs, "atomic_path", recording)  # what run_folder's writing() uses
    cfg = TrainConfig(str(SMALL), {"width": 0.25, "resolution": 16}, data="synthetic", epochs=1)
    cfg = dataclasses.replace(cfg, out=str(tmp_path), name="run", seed=0)
    train(cfg)
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert files - set(written) == {"best.safetensors", "last.safetensors", "command.txt"}


def test_one_train_command_reads_its_spec_file_once(tmp_path, monkeypatch, one_thread):
    """``train`` loads and resolves its spec once and hands the Spec down: the command (in
    process, as the CLI runs it) opens the spec file exactly once, however it opens files."""
    spec = tmp_path / "s.yaml"
    spec.write_text(SMALL.read_text())
    opened = []

    def counting(real):
        def opener(path, *args, **kwargs):
            if isinstance(path, (str, bytes, Path)) and os.path.realpath(path) == str(spec):
                opened.append(real.__name__)
            return real(path, *args, **kwargs)

        return opener

    monkeypatch.setattr(os, "open", counting(os.open))
    monkeypatch.setattr(io, "open", counting(io.open))
    monkeypatch.setattr(builtins, "open", counting(builtins.open))
    args = ["train", str(spec), "--data", "synthetic", "--set", "resolution=16", "--width", "0.25"]
    args += ["--epochs", "1", "--steps-per-epoch", "2", "--seed", "0", "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path), "--name", "r"]) == 0
    assert len(opened) == 1, opened
    assert (tmp_path / "r" / "spec.yaml").is_file()  # the run's own copy is written, not read


# --- a folder too large for memory: decoded per batch by workers, same training ----------------


def test_cli_trains_on_a_streamed_folder_as_on_one_held_in_memory(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")

    def cli_without_memory(*args):  # no memory to hold any dataset in: decoded batch by batch
        with monkeypatch.context() as m:
            m.setattr(folders, "MEMORY_FRACTION", 0)
            return run_cli(*args)

    folder = noise_folder(tmp_path / "images")  # 12 train, 4 val images: 3 steps of 4
    args = ["train", SMALL, "--data", folder, "--width", "0.25", "--set", "resolution=16"]
    args += ["--epochs", "1", "--batch", "4", "--seed", "0", "--device", "cpu", "--out", tmp_path]
    streamed = cli_without_memory(*args, "--name", "streamed")
    assert streamed.returncode == 0, streamed.stderr
    assert re.search(r"^images: 16 decoded per batch by \d+ workers", streamed.stdout, re.M)
    assert {p.name for p in (tmp_path / "streamed").iterdir()} == RUN_FILES
    evaluated = cli_without_memory("eval", tmp_path / "streamed" / "best.safetensors")
    top1 = float(metrics(tmp_path / "streamed")[0]["val_top1"])
    assert f"top-1 {top1:.2f}%" in evaluated.stdout and "(4 validation images)" in evaluated.stdout

    held = run_cli(*args, "--name", "held")
    assert held.returncode == 0, held.stderr
    assert "decoded per batch" not in held.stdout
    a, b = (load_file(tmp_path / run / "last.safetensors") for run in ("streamed", "held"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    same = ["train_loss", "train_top1", "val_loss", "val_top1", "val_top5"]
    rows = [metrics(tmp_path / run) for run in ("streamed", "held")]
    assert [[r[k] for k in same] for r in rows[0]] == [[r[k] for k in same] for r in rows[1]]
