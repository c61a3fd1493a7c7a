"""Weight inheritance into a narrower network (issue 29): what is kept, that it computes what the
parent computed where only zero channels go, and the children refused."""

from __future__ import annotations

import pytest
import torch
import yaml
from safetensors.torch import save_file

from mnv3spec import CheckpointError, build, load_spec
from mnv3spec.weights.inherit import Kept, filter_norms, inherit

from .conftest import ROOT, TINY_PHONE, run_cli, tiny_checkpoint

# bneck2 → bneck3 is a residual group (bneck3 adds into bneck2's 24 channels); bneck3 has SE.
NARROW = {"layers.bneck2.exp": 40, "layers.bneck2.out": 16, "layers.bneck3.out": 16}


def tiny(**overrides) -> torch.nn.Module:
    return build(load_spec(TINY_PHONE, **overrides)).eval()


@pytest.fixture
def parent() -> torch.nn.Module:
    """tiny_phone with every weight and BatchNorm statistic random (no ties, nothing at 0 or 1)."""
    torch.manual_seed(0)
    model = tiny()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2)
                m.num_batches_tracked.fill_(7)
            elif isinstance(m, torch.nn.Conv2d) and m.bias is not None:
                m.bias.normal_(0, 0.1)
    return model


def norms(weight: torch.Tensor) -> torch.Tensor:
    return weight.flatten(1).double().norm(dim=1)


def largest(score: torch.Tensor, k: int) -> torch.Tensor:
    return score.argsort(descending=True, stable=True)[:k].sort().values


def test_a_child_equal_to_its_parent_is_bit_identical(parent):
    child = tiny()
    assert inherit(parent, child) == []
    mine, theirs = child.state_dict(), parent.state_dict()
    assert list(mine) == list(theirs)
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(child(x), parent(x))


def _zero(state: dict, keys: list[str], channels: list[int], dim: int = 0) -> None:
    for key in keys:
        state[key].index_fill_(dim, torch.tensor(channels), 0.0)


def test_dropping_only_zero_channels_gives_the_parents_outputs(parent):
    """Channels whose filters, BN scale and shift are zero add nothing, so a child without them
    (an expansion, and the out width of a residual group) computes what the parent does."""
    exp_gone, out_gone = [0, 5, 11, 17, 23, 30, 41, 47], [1, 4, 9, 12, 15, 18, 20, 23]
    state = parent.state_dict()
    with torch.no_grad():
        b2, b3 = "layers.bneck2", "layers.bneck3"
        _zero(state, [f"{b2}.expand.conv.weight", f"{b2}.expand.bn.weight"], exp_gone)
        _zero(state, [f"{b2}.expand.bn.bias", f"{b2}.dw.bn.weight", f"{b2}.dw.bn.bias"], exp_gone)
        for block in (b2, b3):
            keys = [f"{block}.project.{k}" for k in ("conv.weight", "bn.weight", "bn.bias")]
            _zero(state, keys, out_gone)
    child = tiny(**NARROW)
    kept = inherit(parent, child)
    assert kept == [
        Kept("bneck2", "exp", 40, 48),
        Kept("bneck2", "out", 16, 24),
        Kept("bneck3", "out", 16, 24),
    ]
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(child(x), parent(x), rtol=1e-5, atol=1e-5)
    assert str(kept[0]) == "bneck2: exp 48 → 40 kept by filter norm"


def test_kept_channels_are_the_largest_norm_ones_and_a_residual_group_keeps_one_set(parent):
    child = tiny(**NARROW, **{"layers.bneck3.exp": 56})  # and SE's squeeze: 24 → 16
    kept = inherit(parent, child)
    assert Kept("bneck3", "exp", 56, 72) in kept and Kept("bneck3", "se", 16, 24) in kept
    p, c = parent.state_dict(), child.state_dict()
    b2, b3 = "layers.bneck2", "layers.bneck3"
    exp2 = largest(norms(p[f"{b2}.expand.conv.weight"]), 40)
    # one index set for the group, from the summed norms of both blocks' projections
    group = largest(
        norms(p[f"{b2}.project.conv.weight"]) + norms(p[f"{b3}.project.conv.weight"]), 16
    )
    assert not torch.equal(group, largest(norms(p[f"{b2}.project.conv.weight"]), 16))
    exp3 = largest(norms(p[f"{b3}.expand.conv.weight"]), 56)
    squeeze = largest(norms(p[f"{b3}.se.fc1.weight"]), 16)
    expected = {
        f"{b2}.expand.conv.weight": p[f"{b2}.expand.conv.weight"][exp2],
        f"{b2}.dw.bn.running_var": p[f"{b2}.dw.bn.running_var"][exp2],
        f"{b2}.project.conv.weight": p[f"{b2}.project.conv.weight"][group][:, exp2],
        f"{b2}.project.bn.bias": p[f"{b2}.project.bn.bias"][group],
        f"{b3}.expand.conv.weight": p[f"{b3}.expand.conv.weight"][exp3][:, group],
        f"{b3}.dw.conv.weight": p[f"{b3}.dw.conv.weight"][exp3],
        f"{b3}.se.fc1.weight": p[f"{b3}.se.fc1.weight"][squeeze][:, exp3],
        f"{b3}.se.fc1.bias": p[f"{b3}.se.fc1.bias"][squeeze],
        f"{b3}.se.fc2.weight": p[f"{b3}.se.fc2.weight"][exp3][:, squeeze],
        f"{b3}.se.fc2.bias": p[f"{b3}.se.fc2.bias"][exp3],
        f"{b3}.project.conv.weight": p[f"{b3}.project.conv.weight"][group][:, exp3],
        f"{b3}.project.bn.running_mean": p[f"{b3}.project.bn.running_mean"][group],
        "layers.last_conv.conv.weight": p["layers.last_conv.conv.weight"][:, group],
        "layers.stem.conv.weight": p["layers.stem.conv.weight"],
        "layers.classifier.conv.bias": p["layers.classifier.conv.bias"],
    }
    for key, tensor in expected.items():
        assert torch.equal(c[key], tensor), key
    assert int(c[f"{b3}.project.bn.num_batches_tracked"]) == 7


def test_a_repeated_row_reports_each_blocks_expansion():
    spec = load_spec("mobilenet_v2", width=0.25, num_classes=10, resolution=32)
    parent = build(spec).eval()
    index = next(r.index for r in spec.rows if r.op == "bottleneck" and r.fields["n"] == 3)
    child = build(spec.derive(**{f"layers.{index}.t": 4})).eval()
    kept = inherit(parent, child)
    name = next(p.name for p in parent.plans if p.row.index == index)
    assert [k.field for k in kept if k.row == name] == ["exp[0]", "exp[1]", "exp[2]"]


def test_a_block_that_adds_its_input_only_in_the_child_keeps_each_sides_filters():
    """Small's 48-wide group (bneck7, bneck8) narrowed to 40, the width bneck7 reads: bneck7 adds
    its input in the child, not in the parent. Its input keeps the 40 channels it had, its output
    the 40 of largest summed norm over the group's projections."""
    spec = load_spec("small", num_classes=10)
    parent = build(spec).eval()
    child = build(spec.derive(**{"layers.bneck7.out": 40, "layers.bneck8.out": 40})).eval()
    assert child.layers.bneck7.residual and not parent.layers.bneck7.residual
    kept = inherit(parent, child)
    assert kept == [Kept("bneck7", "out", 40, 48), Kept("bneck8", "out", 40, 48)]
    p, c = parent.state_dict(), child.state_dict()
    weights = [p[f"layers.{r}.project.conv.weight"] for r in ("bneck7", "bneck8")]
    group = largest(norms(weights[0]) + norms(weights[1]), 40)
    assert torch.equal(c["layers.bneck7.project.conv.weight"], weights[0][group])
    assert torch.equal(c["layers.bneck7.expand.conv.weight"], p["layers.bneck7.expand.conv.weight"])
    assert torch.equal(
        c["layers.bneck9.expand.conv.weight"], p["layers.bneck9.expand.conv.weight"][:, group]
    )


def test_a_smaller_kernel_keeps_the_centre_of_each_filter(parent):
    """adapt's --moves kernel: a row's 5×5 depthwise filters become their centre 3×3; every other
    tensor is the parent's."""
    child = tiny(**{"layers.bneck3.k": 3, "layers.bneck3.exp": 48})
    kept = inherit(parent, child)
    assert kept[0] == Kept("bneck3", "exp", 48, 72)  # and its SE's squeeze with it
    mine, theirs = child.state_dict(), parent.state_dict()
    dw = "layers.bneck3.dw.conv.weight"
    channels = largest(norms(theirs["layers.bneck3.expand.conv.weight"]), 48)
    assert mine[dw].shape == (48, 1, 3, 3)
    assert torch.equal(mine[dw], theirs[dw][channels][:, :, 1:4, 1:4])
    same = [k for k in theirs if "bneck3" not in k]
    assert all(torch.equal(mine[k], theirs[k]) for k in same)


def test_a_row_without_its_se_keeps_every_other_tensor(parent):
    """adapt's --moves se: the child goes without bneck3's SE; its other tensors are the
    parent's, and with the SE's scale at 1 the two networks agree."""
    child = tiny(**{"layers.bneck3.se": False})
    assert inherit(parent, child) == []
    mine, theirs = child.state_dict(), parent.state_dict()
    assert set(mine) == {k for k in theirs if ".bneck3.se." not in k}
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    with torch.no_grad():  # an SE whose gate is saturated open scales by one: the same outputs
        parent.layers.bneck3.se.fc2.weight.zero_()
        parent.layers.bneck3.se.fc2.bias.fill_(100.0)
        x = torch.randn(2, 3, 32, 32)
        torch.testing.assert_close(child(x), parent(x))


def _edited(tmp_path, edit) -> torch.nn.Module:
    doc = yaml.safe_load(TINY_PHONE.read_text())
    edit(doc["layers"])
    path = tmp_path / "child.yaml"
    path.write_text(yaml.safe_dump(doc))
    return build(load_spec(path)).eval()


def _as_conv(layers):
    layers[1] = {"name": "bneck1", "op": "conv2d", "k": 3, "out": 16, "nl": "HS"}


def _renamed(layers):
    layers[2]["name"] = "b2"


def _dropped(layers):
    del layers[3]


@pytest.mark.parametrize(
    "overrides, edit, message",
    [
        ({"width": 1.5}, None, "row stem's out has 24 channels in the child and 16 in the parent"),
        ({"layers.bneck3.exp": 80}, None, "row bneck3's exp has 80 channels in the child and 72"),
        ({"layers.bneck1.k": 5}, None, "row bneck1 has k 3 in the parent and 5 in the child"),
        ({"layers.bneck2.s": 1}, None, "row bneck2 has s 2 in the parent and 1 in the child"),
        ({"layers.bneck2.se": True}, None, "row bneck2 has se False in the parent and True"),
        ({"layers.bneck3.nl": "RE"}, None, "row bneck3 has nl HS in the parent and RE"),
        ({"num_classes": 3}, None, "it has 3 classes and the parent 4"),
        ({"params.in_channels": 1}, None, "the input image has 1 channels in the child and 3"),
        (
            {"layers.bneck3.out": 16},
            None,
            "row bneck3 adds its input to its output in the parent but not in the child",
        ),
        ({"layers.bneck1.exp": 16}, None, "row bneck1 has other layers in the child"),
        ({}, _as_conv, "row bneck1 is a bneck in the parent and a conv2d in the child"),
        ({}, _renamed, "row 2 is 'bneck2' in the parent and 'b2' in the child"),
        ({}, _dropped, "row 3 is 'bneck3' in the parent and 'last_conv' in the child"),
    ],
)
def test_a_child_that_is_not_a_narrowing_is_refused_and_left_alone(
    parent, tmp_path, overrides, edit, message
):
    child = _edited(tmp_path, edit) if edit else tiny(**overrides)
    before = {k: v.clone() for k, v in child.state_dict().items()}
    with pytest.raises(CheckpointError) as e:
        inherit(parent, child)
    text = str(e.value)
    assert text.startswith("the child is not a narrowing of the parent: ") and message in text
    assert "\n" not in text
    assert all(torch.equal(v, before[k]) for k, v in child.state_dict().items())


# --- train --init PARENT.safetensors, as a user runs it ------------------------------------------

CHILD = [TINY_PHONE, "--data", "synthetic", "--set", "resolution=16", "--batch", "32"]
CHILD += ["--epochs", "1", "--seed", "0", "--device", "cpu"]
SYNTHETIC = [str(i) for i in range(10)]  # synthetic data's classes


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def _trained_from_parent(tmp_path, *sets: str) -> str:
    """``train`` of the child (tiny_phone with ``sets``) from a trained tiny_phone: its log."""
    tiny_checkpoint(tmp_path / "parent.safetensors", SYNTHETIC, spec=TINY_PHONE, width=1.0)
    args = [*CHILD, *sets, "--init", tmp_path / "parent.safetensors"]
    result = run_cli("train", *args, "--out", tmp_path / "runs", "--name", "r")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "runs" / "r" / "best.safetensors").is_file()
    return result.stdout


def test_train_from_a_wider_checkpoint_says_what_each_row_kept(tmp_path):
    assert (
        f"initialised from {tmp_path / 'parent.safetensors'}, a wider network:\n"
        "  bneck3: exp 72 → 56 kept by filter norm\n"
        "  bneck3: se 24 → 16 kept by filter norm\n"
    ) in _trained_from_parent(tmp_path, "--set", "layers.bneck3.exp=56")


def test_train_from_a_parent_with_a_larger_kernel_and_an_se_says_so(tmp_path):
    """What adapt's --moves kernel se fine-tune: a row's kernel cut to 3×3, another's SE gone."""
    sets = ["--set", "layers.bneck2.k=3", "--set", "layers.bneck3.se=false"]
    assert (
        f"initialised from {tmp_path / 'parent.safetensors'}, a wider network:\n"
        "  bneck2: k 5 → 3, the centre of each filter kept\n"
        "  bneck3: se dropped, the rest kept\n"
    ) in _trained_from_parent(tmp_path, *sets)


def _wider(path):
    tiny_checkpoint(path, SYNTHETIC, spec=TINY_PHONE, width=0.5)


def _junk(path):
    path.write_bytes(b"not weights at all, but long enough to have a header length")


def _plain(path):
    torch.manual_seed(0)
    save_file(tiny(width=2.0).state_dict(), str(path))  # wider, but no spec in its metadata


def _truncated(path):
    tiny_checkpoint(path, SYNTHETIC, spec=TINY_PHONE, width=2.0)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def _pickled(path):
    path.write_bytes(b"not a pickle")


@pytest.mark.parametrize(
    "name, make, message",
    [
        ("p.safetensors", _wider, "p.safetensors: the child is not a narrowing of the parent: row"),
        ("p.safetensors", _junk, "p.safetensors: not a safetensors weights file"),
        ("p.safetensors", _plain, "only an mnv3spec checkpoint (its spec in the metadata)"),
        ("p.safetensors", _truncated, "p.safetensors: "),
        ("p.pth", _pickled, "p.pth: not a readable state_dict"),
    ],
)
def test_train_refuses_a_parent_it_cannot_narrow(tmp_path, name, make, message):
    make(tmp_path / name)
    args = [*CHILD, "--init", tmp_path / name, "--out", tmp_path / "runs"]
    result = run_cli("train", *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert message in result.stderr
    assert not (tmp_path / "runs").exists()


def test_the_python_example_of_the_doc_runs(monkeypatch, capsys):
    text = (ROOT / "docs" / "inherit.md").read_text()
    code = text.split("```python\n")[1].split("```")[0]
    monkeypatch.chdir(ROOT)
    exec(compile(code, "docs/inherit.md", "exec"), {})
    assert capsys.readouterr().out == "bneck3: exp 88 → 72 kept by filter norm\n"


def test_filter_norms_sum_each_channels_l2_norm_over_its_producers():
    a = torch.tensor([[3.0, 4.0], [0.0, 1.0]])[:, :, None, None]
    b = torch.tensor([[0.0, 0.0], [6.0, 8.0]])[:, :, None, None]
    assert filter_norms([a]).tolist() == [5.0, 1.0]
    assert filter_norms([a, b]).tolist() == [5.0, 11.0]


def test_another_score_chooses_other_channels(parent):
    child = tiny(**{"layers.bneck2.exp": 40})
    inherit(parent, child, score=lambda filters: -filter_norms(filters))
    weight = parent.state_dict()["layers.bneck2.expand.conv.weight"]
    smallest = norms(weight).argsort(stable=True)[:40].sort().values
    assert torch.equal(child.state_dict()["layers.bneck2.expand.conv.weight"], weight[smallest])
