"""The capturable training step: its SGD update equals torch's, and where it is not captured it
says why. The capture itself needs CUDA (tests/test_graph.py::test_captured_step_matches_eager
runs only there)."""

from __future__ import annotations

import copy
import dataclasses
import shutil
import warnings

import pytest
import torch

from mnv3spec import build, load_spec
from mnv3spec.data.batches import augment, normalize
from mnv3spec.train import graph

from .conftest import ROOT

SMALL = ROOT / "specs" / "small.yaml"


def _net(**overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return build(load_spec(SMALL, width=0.25, num_classes=4, **overrides))


def _groups(model: torch.nn.Module, wd: float) -> list[dict]:
    params = list(model.parameters())
    return [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": wd},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]


def _sgd_step(net, opt, lr):
    """A capturable training step: cross-entropy, backward, SGD on the device learning rate."""

    def step(x, y):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        graph.sgd_update(opt, lr.values)
        return loss.detach(), loss.detach()

    return step


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_update_is_torchs_sgd_with_a_device_learning_rate(nesterov):
    """Three steps with a changing learning rate: the same weights and momentum buffers."""
    ours_net = _net()
    theirs_net = copy.deepcopy(ours_net)
    kw = {"lr": 0.1, "momentum": 0.9, "nesterov": nesterov}
    ours = torch.optim.SGD(_groups(ours_net, 5e-4), **kw)
    theirs = torch.optim.SGD(_groups(theirs_net, 5e-4), **kw)
    lr = graph.DeviceLR(ours, torch.device("cpu"))
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 4, (8,))
    for step, rate in enumerate((0.1, 0.05, 0.01)):
        for opt in (ours, theirs):
            for g in opt.param_groups:
                g["lr"] = rate
        for net in (ours_net, theirs_net):
            torch.manual_seed(step)  # the same dropout masks
            net.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(net(x), y).backward()
        lr.refresh()
        graph.sgd_update(ours, lr.values)
        theirs.step()
        for a, b in zip(ours_net.parameters(), theirs_net.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=f"step {step}")
    # The state is the optimiser's own: a checkpoint of either loads into the other.
    for p, q in zip(ours_net.parameters(), theirs_net.parameters(), strict=True):
        torch.testing.assert_close(
            ours.state[p]["momentum_buffer"], theirs.state[q]["momentum_buffer"]
        )


def test_uncaptured_steps_say_why_in_one_line():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    kw = {"enabled": True, "scaler_enabled": False, "processes": 1, "compiled": False}
    assert "need a GPU" in graph.why_not_captured(cpu, **kw)
    assert graph.why_not_captured(cuda, **kw) is None
    assert "off" in graph.why_not_captured(cuda, **{**kw, "enabled": False})
    assert "loss scaler" in graph.why_not_captured(cuda, **{**kw, "scaler_enabled": True})
    assert "several processes" in graph.why_not_captured(cuda, **{**kw, "processes": 2})
    assert "compile" in graph.why_not_captured(cuda, **{**kw, "compiled": True})
    for reason in (
        graph.why_not_captured(cpu, **kw),
        graph.why_not_captured(cuda, **{**kw, "processes": 2}),
    ):
        assert "\n" not in reason


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_captured_step_matches_eager():
    """Ten steps captured and replayed against ten eager ones from the same start (fp32, so
    the comparison is not blurred by bf16)."""
    device = torch.device("cuda")
    nets = [_net(dropout=0.0).to(device) for _ in range(2)]  # no random masks to tell apart
    nets[1].load_state_dict(nets[0].state_dict())
    opts = [torch.optim.SGD(_groups(n, 5e-4), lr=0.1, momentum=0.9) for n in nets]
    lrs = [graph.DeviceLR(o, device) for o in opts]
    captured = graph.GraphStep(_sgd_step(nets[1], opts[1], lrs[1]))
    eager = _sgd_step(nets[0], opts[0], lrs[0])
    g = torch.Generator(device="cpu").manual_seed(0)
    for _ in range(10):
        x = torch.randn(16, 3, 32, 32, generator=g).to(device)
        y = torch.randint(0, 4, (16,), generator=g).to(device)
        for lr in lrs:
            lr.refresh()
        a, b = eager(x, y)[0], captured(x, y)[0]
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert captured.graph is not None


def test_the_warm_up_line_says_what_the_first_step_and_the_capture_cost():
    step = graph.GraphStep(lambda x, y: (x, y))
    step.warmup = {"first step": 10.12, "eager steps": 0.14, "capture": 0.71}
    assert step.warmup_line() == (
        "warm-up: 11.0 s (first step 10.1 s, 2 more eager steps 0.1 s, "
        "CUDA graph capture 0.7 s), part of this epoch's time"
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_the_weights_average_is_captured_with_the_step():
    """``--ema`` on a GPU: the average's update is recorded in the step's CUDA graph, the decay
    read from the device, so a replayed step leaves the same average as an eager one and the
    host never waits for the GPU once the graph is captured."""
    from mnv3spec.train.ema import WeightAverage
    from mnv3spec.train.steps import captured_step

    device = torch.device("cuda")
    nets = [_net(dropout=0.0).to(device) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    opts = [torch.optim.SGD(_groups(n, 5e-4), lr=0.1, momentum=0.9) for n in nets]
    lrs = [graph.DeviceLR(o, device) for o in opts]
    averages = [WeightAverage(n, decay=0.9) for n in nets]
    criterion = torch.nn.CrossEntropyLoss()
    steps = [
        captured_step(n, criterion, o, lr, None, a)
        for n, o, lr, a in zip(nets, opts, lrs, averages, strict=True)
    ]
    eager, captured = steps[0].step, steps[1]
    g = torch.Generator(device="cpu").manual_seed(0)
    for i in range(10):
        x = torch.randn(16, 3, 32, 32, generator=g).to(device)
        y = torch.randint(0, 4, (16,), generator=g).to(device)
        if i > graph.WARMUP_STEPS:  # captured by now: from here on any wait raises
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
        try:
            for lr, average in zip(lrs, averages, strict=True):
                lr.refresh()
                average.prepare()
            eager(x, y)
            captured(x, y)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert captured.graph is not None and averages[1].updates == 10
    a, b = (avg.module.state_dict() for avg in averages)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


def _without_cuda(monkeypatch, capture_error: str | None = None, waited: str | None = None):
    """GraphStep on the CPU: eager steps run in place of the side stream, the last eager step
    reports ``waited`` as its first host synchronisation, and the capture fails with
    ``capture_error`` as CUDA fails it. Returns the list of captures tried."""
    captures = []

    def capture(self, x, labels):
        captures.append(len(x))
        raise RuntimeError(capture_error)

    monkeypatch.setattr(torch.cuda, "synchronize", lambda *args: None)
    monkeypatch.setattr(
        graph.GraphStep, "_eager_on_side_stream", lambda self, x, y: self.step(x, y)
    )
    monkeypatch.setattr(
        graph.GraphStep, "_eager_watching_syncs", lambda self, x, y: (self.step(x, y), waited)
    )
    monkeypatch.setattr(graph.GraphStep, "_capture", capture)
    return captures


@pytest.mark.parametrize(
    "capture_error, waited, said",
    [
        (
            "CUDA error: operation not permitted when stream is capturing\n…",
            None,
            "not captured: CUDA error: operation not permitted when stream is capturing",
        ),
        (
            None,
            "called a synchronizing CUDA operation",
            "not captured: the step waits for the GPU (called a synchronizing CUDA operation)",
        ),
    ],
)
def test_a_step_that_cannot_be_captured_runs_eagerly_and_says_why(
    monkeypatch, capture_error, waited, said
):
    captures = _without_cuda(monkeypatch, capture_error, waited)
    calls = []
    step = graph.GraphStep(lambda x, y: calls.append(len(x)) or (x.sum(), y.sum()))
    x, y = torch.ones(4, 3), torch.ones(4)
    for _ in range(graph.WARMUP_STEPS + 1):
        assert step.fits(x, y)
        assert step(x, y)[0] == 12  # the capture's batch too is trained, eagerly
        if step.failed:
            break  # a wait is known after the last eager step, a refusal at the capture
    assert step.graph is None and step.failed == said
    steps = graph.WARMUP_STEPS if waited else graph.WARMUP_STEPS + 1
    assert calls == [4] * steps and len(captures) == (0 if waited else 1)
    assert not step.fits(x, y)  # the caller runs every later step eagerly


@pytest.mark.parametrize("step_waits", [False, True])
def test_torchs_notice_that_the_sync_debug_mode_is_a_prototype_is_no_wait(monkeypatch, step_waits):
    """torch 2.11 warns, once a process, as the debug mode is set: "Synchronization debug mode
    is a prototype feature and does not yet detect all synchronizing operations". Read as the
    step's wait, it held every run eager (found on an H200); only the step's own waits count."""
    notice = (
        "Synchronization debug mode is a prototype feature and does not yet detect all "
        "synchronizing operations (Triggered internally at Module.cpp:1003.)"
    )
    modes = []

    def set_mode(mode):
        modes.append(mode)
        if mode == "warn":
            warnings.warn(notice, stacklevel=1)

    def eager(self, x, y):
        if step_waits:
            warnings.warn("called a synchronizing CUDA operation", stacklevel=1)
        return self.step(x, y)

    monkeypatch.setattr(torch.cuda, "get_sync_debug_mode", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", set_mode)
    monkeypatch.setattr(graph.GraphStep, "_eager_on_side_stream", eager)
    step = graph.GraphStep(lambda x, y: (x.sum(), y.sum()))
    out, waited = step._eager_watching_syncs(torch.ones(2, 3), torch.ones(2))
    assert out[0] == 6 and modes == ["warn", 0]  # the mode is put back
    assert waited == ("called a synchronizing CUDA operation" if step_waits else None)


def test_training_goes_on_eagerly_when_the_capture_fails(monkeypatch, tmp_path, capsys, recwarn):
    """The trainer asks for a captured step (as on a GPU), the capture fails: one line says so
    after the first epoch, the steps run eagerly, and the run trains as an eager one does."""
    from mnv3spec.train import steps
    from mnv3spec.train.config import TrainConfig
    from mnv3spec.train.train import train

    overrides = {"width": 0.25, "resolution": 16}
    losses = {}
    for name in ("eager", "fallback"):
        if name == "fallback":
            _without_cuda(
                monkeypatch, "CUDA error: operation not permitted when stream is capturing"
            )
            monkeypatch.setattr(steps, "why_not_captured", lambda *args, **kw: None)
        cfg = TrainConfig(str(SMALL), overrides, data="synthetic", epochs=2, batch=64, seed=0)
        cfg = dataclasses.replace(cfg, out=str(tmp_path), name=name)
        train(cfg)
        rows = (tmp_path / name / "metrics.csv").read_text().splitlines()[1:]
        losses[name] = [float(r.split(",")[2]) for r in rows]
    out = capsys.readouterr().out
    said = "steps: eager from here on, not captured: CUDA error: operation not permitted"
    assert out.count(said) == 1 and "warm-up:" not in out
    assert not [w for w in recwarn if "lr_scheduler.step()" in str(w.message)]
    for a, b in zip(losses["fallback"], losses["eager"], strict=True):
        assert abs(a - b) < 1e-4 * abs(b)  # the same steps: SGD as tensor arithmetic or torch's


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_a_step_that_waits_for_the_gpu_falls_back_to_eager_on_a_gpu():
    """A step reading a value on the host mid-step cannot be captured: the last warm-up step
    sees it wait for the GPU, no capture is tried, and every step trains eagerly."""
    device = torch.device("cuda")
    w = torch.ones(3, device=device, requires_grad=True)

    def step(x, y):
        loss = (x @ w - y).square().sum()
        if float(loss) < 0:  # a host sync in the middle of the step
            raise AssertionError
        w.grad = None
        loss.backward()
        with torch.no_grad():
            w.sub_(0.01 * w.grad)
        return loss.detach(), loss.detach()

    captured = graph.GraphStep(step)
    x, y = torch.ones(4, 3, device=device), torch.zeros(4, device=device)
    losses = [float(captured(x, y)[0]) for _ in range(graph.WARMUP_STEPS + 1)]
    assert captured.graph is None
    assert captured.failed.startswith("not captured: the step waits for the GPU (")
    assert not captured.fits(x, y)
    assert losses == sorted(losses, reverse=True) and len(set(losses)) == len(losses)  # all trained


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_a_steady_step_never_waits_for_the_gpu():
    """What the loop does each step once the graph is captured — augment and normalise a batch
    (random numbers drawn on the CPU), refresh the learning rate, replay, keep the loss — with
    CUDA's sync debug mode raising at any host synchronisation: the host queues step after step
    while the GPU runs."""
    device = torch.device("cuda")
    net = _net().to(device, memory_format=torch.channels_last)
    opt = torch.optim.SGD(_groups(net, 5e-4), lr=0.1, momentum=0.9)
    lr = graph.DeviceLR(opt, device)
    captured = graph.GraphStep(_sgd_step(net, opt, lr))
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 4, (16,), device=device)
    order = torch.Generator().manual_seed(0)
    losses = torch.zeros(8, device=device)

    def one(i):
        x = normalize(augment(images, generator=order), (0.5,) * 3, (0.25,) * 3, channels_last=True)
        lr.refresh()
        losses[i] = captured(x, labels)[0]

    for i in range(graph.WARMUP_STEPS + 1):  # eager warm-up and capture may wait
        one(i)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i in range(graph.WARMUP_STEPS + 1, 8):
            one(i)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert captured.graph is not None and torch.isfinite(losses).all()


def test_cpu_training_is_eager_and_says_nothing_about_graphs(cli, tmp_path, tiny_run):
    assert "steps:" not in tiny_run.stdout and "warm-up:" not in tiny_run.stdout
    shutil.copytree(tiny_run.folder, tmp_path / "r")
    # --no-graph is a way of running, not of computing: a resume may change it
    result = cli("train", "--resume", tmp_path / "r", "--no-graph")
    assert result.returncode == 0, result.stderr
    result = cli("train", "--resume", tmp_path / "r", "--no-graph", "--lr", "0.2")
    assert result.returncode == 2 and "drop --lr" in result.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_a_captured_run_follows_the_eager_runs_loss_curve(cli, tmp_path):
    """Three epochs each way from the same seed: losses within bf16 noise, and the log says how
    the steps ran and what the warm-up cost."""
    common = ("--data", "synthetic", "--epochs", "3", "--width", "0.5", "--seed", "0")
    runs = {}
    for name, extra in (("graph", ()), ("eager", ("--no-graph",))):
        result = cli("train", SMALL, *common, "--out", tmp_path, "--name", name, *extra)
        assert result.returncode == 0, result.stderr
        runs[name] = result.stdout
        losses = [
            float(line.split(",")[2])
            for line in (tmp_path / name / "metrics.csv").read_text().splitlines()[1:]
        ]
        runs[name + "_losses"] = losses
    assert "steps: CUDA graph replay" in runs["graph"] and "warm-up:" in runs["graph"]
    assert "steps: eager, off" in runs["eager"]
    for a, b in zip(runs["graph_losses"], runs["eager_losses"], strict=True):
        assert abs(a - b) < 0.05 * max(abs(b), 1e-3)


def test_a_compiled_run_says_what_its_first_step_cost(monkeypatch, tmp_path, capsys):
    """torch.compile compiles in the first step; that time is printed as the warm-up, once
    (compile itself replaced by the identity here: on this CPU it takes minutes)."""
    from mnv3spec.train.config import TrainConfig
    from mnv3spec.train.train import train

    monkeypatch.setattr(torch, "compile", lambda model, **kw: model)
    overrides = {"width": 0.25, "resolution": 16}
    cfg = TrainConfig(str(SMALL), overrides, data="synthetic", epochs=2, batch=64, seed=0)
    cfg = dataclasses.replace(cfg, out=str(tmp_path), name="run", compile=True)
    train(cfg)
    lines = capsys.readouterr().out.splitlines()
    warm = [i for i, line in enumerate(lines) if line.startswith("warm-up: ")]
    assert len(warm) == 1 and "(the first step, compiled by torch.compile)" in lines[warm[0]]
    assert lines[warm[0] + 1].startswith("epoch 1/2")
