"""The moving average of the weights (``--ema``): its arithmetic, that a run evaluates and saves
the average while resume.pt carries both, that a resumed run continues the same average, and
that a decay outside (0, 1) or a resume file without the average is refused in one paragraph."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from mnv3spec import build, load_spec
from mnv3spec.errors import UserError
from mnv3spec.train.ema import WeightAverage, decay_after
from mnv3spec.train.graph import DeviceLR
from mnv3spec.train.recipe import resolve_recipe
from mnv3spec.train.steps import captured_step, train_step

from .conftest import ROOT, run_cli
from .test_cli_train import TINY, metrics


def test_the_decay_warms_up_then_holds():
    assert decay_after(0.999, 0) == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    assert decay_after(0.999, 90) == pytest.approx(0.91)
    assert decay_after(0.9, 1000) == 0.9


def test_an_update_moves_each_float_tensor_and_copies_integer_ones():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    average = WeightAverage(net, decay=0.5)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    net.train()(torch.randn(4, 2))  # BatchNorm's statistics and step count change
    average.prepare()  # decay min(0.5, 1/10) = 0.1: 90 % of the way to the new weights
    average.apply()
    now = net.state_dict()
    for name, value in average.module.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(value, 0.1 * start[name] + 0.9 * now[name]), name
        else:
            assert torch.equal(value, now[name]), name
    assert not any(p.requires_grad for p in average.module.parameters())


@pytest.mark.parametrize("path", ["eager", "captured"])
def test_each_step_moves_the_average_by_that_steps_decay(path):
    """The average is updated inside the step: by :func:`train_step` (the CPU, a short batch) and
    by the function a GPU records as one CUDA graph (:func:`captured_step`, run eagerly here).
    After five steps it is the moving average of the five weights the steps left."""
    torch.manual_seed(0)
    net = build(load_spec(ROOT / "specs" / "small.yaml", width=0.25, num_classes=4, dropout=0.0))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    average = WeightAverage(net, decay=0.8)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    lr = DeviceLR(optimizer, torch.device("cpu"))
    captured = captured_step(net, criterion, optimizer, lr, None, average).step

    def step(x, y):
        if path == "captured":
            return captured(x, y)
        return train_step(net, criterion, optimizer, scaler, x, y, None, average)

    expected = {k: v.clone() for k, v in net.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    for n in range(5):
        lr.refresh()
        average.prepare()
        step(torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 4, (8,), generator=g))
        keep = decay_after(0.8, n)
        for k, v in net.state_dict().items():
            expected[k] = keep * expected[k] + (1 - keep) * v if v.is_floating_point() else v
    assert average.updates == 5
    for k, v in average.module.state_dict().items():
        torch.testing.assert_close(v, expected[k], rtol=1e-5, atol=1e-6, msg=k)
    moved = [k for k, v in net.state_dict().items() if k.endswith("weight")]
    assert not any(torch.equal(average.module.state_dict()[k], net.state_dict()[k]) for k in moved)


def test_a_run_saves_the_average_and_resume_pt_carries_both(tmp_path):
    r = run_cli("train", *TINY, "--epochs", "1", "--ema", "0.9", "--out", tmp_path, "--name", "e")
    assert r.returncode == 0, r.stderr
    saved = torch.load(tmp_path / "e" / "resume.pt", weights_only=True)
    last = load_file(tmp_path / "e" / "last.safetensors")
    assert saved["average"]["updates"] == 16  # 512 synthetic images / batch 32
    assert all(torch.equal(last[k], saved["average"]["weights"][k]) for k in last)
    trained = [k for k, v in last.items() if v.is_floating_point()]
    assert not any(torch.equal(last[k], saved["model"][k]) for k in trained if "weight" in k)


def test_a_resumed_run_continues_the_average(tmp_path):
    args = [*TINY, "--ema", "0.9", "--out", tmp_path]
    straight = run_cli("train", *args, "--epochs", "2", "--name", "straight")
    assert straight.returncode == 0, straight.stderr
    short = run_cli("train", *args, "--epochs", "1", "--name", "short")
    assert short.returncode == 0, short.stderr
    longer = run_cli("train", "--resume", tmp_path / "short", "--epochs", "2")
    assert longer.returncode == 0, longer.stderr
    a = load_file(tmp_path / "straight" / "last.safetensors")
    b = load_file(tmp_path / "short" / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (
        metrics(tmp_path / "straight")[-1]["val_loss"]
        == metrics(tmp_path / "short")[-1]["val_loss"]
    )


@pytest.mark.parametrize("bad", [1.0, 1.5, -0.1, float("nan")])
def test_a_decay_outside_0_1_is_refused_naming_it(bad):
    with pytest.raises(UserError, match=r"must be in \(0, 1\), or 0 for none") as e:
        resolve_recipe("seed", ema=bad)
    assert e.value.field == "ema"


@pytest.mark.parametrize(
    ("value", "message"),
    [("1", "must be in (0, 1), or 0 for none; got 1.0"), ("nan", "--ema"), ("x", "--ema")],
)
def test_cli_bad_ema_exits_2_in_one_paragraph_writing_nothing(tmp_path, value, message):
    r = run_cli("train", *TINY, "--epochs", "1", "--out", tmp_path, "--ema", value, cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert message in r.stderr and not any(tmp_path.iterdir())


def test_a_resume_file_without_the_average_is_refused_and_left_alone(tmp_path):
    r = run_cli("train", *TINY, "--epochs", "1", "--ema", "0.9", "--out", tmp_path, "--name", "e")
    assert r.returncode == 0, r.stderr
    state_file = tmp_path / "e" / "resume.pt"
    saved = torch.load(state_file, weights_only=True)
    del saved["average"]
    torch.save(saved, state_file)
    before = {p.name: p.read_bytes() for p in (tmp_path / "e").iterdir()}
    resumed = run_cli("train", "--resume", tmp_path / "e", "--epochs", "2")
    assert resumed.returncode == 2 and "Traceback" not in resumed.stderr
    assert "damaged resume file" in resumed.stderr and "resume.pt" in resumed.stderr
    assert {p.name: p.read_bytes() for p in (tmp_path / "e").iterdir()} == before
