"""timm as a second oracle: every timm MobileNetV3 with a twin among the shipped specs computes the
same function (parameters, multiply-adds, outputs), its weights load, and ``import`` writes the
spec of any timm MobileNetV3 the format can say.

timm's models get random weights and random BN statistics: its pretrained weights need the network.
"""

from __future__ import annotations

import pytest
import torch

from cli import main
from mnv3spec import CheckpointError, UserError, build, load_spec, load_timm, summarize
from mnv3spec.model.summary import count_macs
from mnv3spec.weights import from_timm
from mnv3spec.weights import init as starting_weights
from mnv3spec.weights import timm as timm_weights
from mnv3spec.weights.timm import max_logit_difference, randomize_bn, timm_model, timm_order
from mnv3spec.weights.torchvision import give_weights

from .conftest import ROOT, run_cli

timm = pytest.importorskip("timm")

SIZE = 32  # outputs are compared at 32×32 (even sizes, where SAME padding differs): cheap
SYM, SAME, EPS = {"padding": "symmetric"}, {"padding": "same"}, {"bn_eps": 1e-5}

# timm name → (shipped spec, overrides besides si=2 and num_classes=1000), and the counts at 224.
TWINS = {
    "mobilenetv3_large_075": ("large-tf", {**EPS, **SYM}, 3_993_528, 154_560_624),
    "mobilenetv3_large_100": ("large", EPS, 5_483_032, 216_589_760),
    "mobilenetv3_small_050": ("small-tf", {"width": 0.5, **EPS, **SYM}, 1_593_224, 24_188_688),
    "mobilenetv3_small_075": ("small-tf", {**EPS, **SYM}, 2_041_872, 43_399_344),
    "mobilenetv3_small_100": ("small", EPS, 2_542_856, 56_510_400),
    "tf_mobilenetv3_large_075": ("large-tf", {}, 3_993_528, 154_560_624),
    "tf_mobilenetv3_large_100": ("large-tf", {"width": 1.0}, 5_483_032, 216_589_760),
    "tf_mobilenetv3_large_minimal_100": ("large-minimal", SAME, 3_924_288, 209_136_704),
    "tf_mobilenetv3_small_075": ("small-tf", {}, 2_041_872, 43_399_344),
    "tf_mobilenetv3_small_100": ("small-tf", {"width": 1.0}, 2_542_856, 56_510_400),
    "tf_mobilenetv3_small_minimal_100": ("small-minimal", SAME, 2_044_736, 52_288_448),
}


def twin(name: str, **more) -> torch.nn.Module:
    spec, overrides, _, _ = TWINS[name]
    path = ROOT / "specs" / f"{spec}.yaml"
    return build(load_spec(path, **{"si": 2, "num_classes": 1000, **overrides, **more})).eval()


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", TWINS)
def test_twin_has_timms_parameters_multiply_adds_and_outputs(name):
    _, _, params, macs = TWINS[name]
    theirs = randomize_bn(timm_model(name))
    ours = twin(name, resolution=224)
    assert n_params(ours) == n_params(theirs) == params
    assert summarize(ours).macs == count_macs(theirs, 224)["Global"] == macs
    pairs = load_timm(ours, theirs.state_dict())
    assert len(pairs) == len(theirs.state_dict())
    # float64: the same function agrees to ~1e-14; float32 logits near 80 differ by rounding alone
    assert max_logit_difference(ours, theirs, SIZE) < 1e-9
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    assert (a - b).abs().max() <= 1e-5 * max(1.0, b.abs().max().item())


@pytest.mark.parametrize(
    ("spec", "overrides", "name"),
    [
        ("small", {}, "mobilenetv3_small_100"),  # si=1 and BN eps 1e-3: timm's given ours
        ("large", {"si": 2, "num_classes": 10}, "mobilenetv3_large_100"),
        ("small-tf", {"width": 1.0}, "tf_mobilenetv3_small_100"),
        ("small", {"width": 0.25}, None),  # timm has no Small at 0.25
    ],
)
def test_timm_twin_computes_our_function_with_our_weights(spec, overrides, name):
    ours = randomize_bn(build(load_spec(ROOT / "specs" / f"{spec}.yaml", **overrides)).eval())
    twin = timm_weights.timm_twin(ours)
    assert (None if twin is None else twin.pretrained_cfg["architecture"]) == name
    if twin is not None:
        give_weights(ours, twin, load_timm)
        x = torch.randn(2, 3, SIZE, SIZE)
        with torch.no_grad():
            scale = ours(x).abs().max().item()
        assert max_logit_difference(ours, twin, SIZE) < 1e-6 * scale and scale > 1e-3


def test_tf_twins_need_same_padding_and_symmetric_ones_do_not_fit_them():
    theirs = randomize_bn(timm_model("tf_mobilenetv3_small_075"))
    ours = twin("tf_mobilenetv3_small_075", padding="symmetric")
    load_timm(ours, theirs.state_dict())  # the same tensors...
    assert max_logit_difference(ours, theirs, SIZE) > 1e-3  # ...another function


def test_stem_stays_at_16_below_width_1_and_grows_above_as_timms():
    small_050 = twin("mobilenetv3_small_050")
    assert small_050.plans[0].out_shape[0] == timm_model("mobilenetv3_small_050").bn1.num_features
    large = ROOT / "specs" / "large-tf.yaml"
    stems = {w: build(load_spec(large, width=w)).plans[0].out_shape[0] for w in (0.35, 1.0, 1.5)}
    assert stems == {0.35: 16, 1.0: 16, 1.5: 24}  # 24: timm's mobilenetv3_large_150d stem


def test_a_state_dict_sorted_by_name_loads_the_same():
    theirs = randomize_bn(timm_model("tf_mobilenetv3_small_minimal_100"))
    state = theirs.state_dict()
    shuffled = dict(sorted(state.items()))  # as a safetensors file gives it back
    assert list(shuffled) != list(state)
    assert timm_order(shuffled) == list(state)
    ours = twin("tf_mobilenetv3_small_minimal_100")
    load_timm(ours, shuffled)
    assert max_logit_difference(ours, theirs, SIZE) < 1e-9


def test_other_networks_and_class_counts_are_refused_or_kept():
    state = timm_model("mobilenetv3_small_100").state_dict()
    with pytest.raises(CheckpointError, match="not the same network"):
        load_timm(twin("mobilenetv3_small_050"), state)
    ours = twin("mobilenetv3_small_100", num_classes=10)
    head = ours.layers.classifier.conv.weight.clone()
    with pytest.raises(CheckpointError, match=r"classifier.weight has shape \(1000, 1024\)"):
        load_timm(ours, state)
    load_timm(ours, state, classifier=False)
    assert torch.equal(ours.layers.classifier.conv.weight, head)
    assert torch.equal(ours.layers.stem.conv.weight, state["conv_stem.weight"])


def test_init_timm_loads_timms_weights_and_reinitialises_other_heads(monkeypatch, tmp_path):
    theirs = randomize_bn(timm_model("mobilenetv3_small_050"))
    monkeypatch.setattr(timm_weights, "timm_weights", lambda source: theirs.state_dict())
    ours = twin("mobilenetv3_small_050")
    line = starting_weights.init_from(ours, "timm:mobilenetv3_small_050.lamb_in1k")
    assert line == "initialised from timm's mobilenetv3_small_050.lamb_in1k"
    assert max_logit_difference(ours, theirs, SIZE) < 1e-9
    line = starting_weights.init_from(twin("mobilenetv3_small_050", num_classes=10), "timm:x")
    assert line.endswith("classifier re-initialised for 10 classes")
    from safetensors.torch import save_file  # a timm file on disk: sorted by name

    save_file(dict(theirs.state_dict()), tmp_path / "model.safetensors")
    ours = twin("mobilenetv3_small_050")
    starting_weights.init_from(ours, str(tmp_path / "model.safetensors"))
    assert max_logit_difference(ours, theirs, SIZE) < 1e-9


def test_offline_init_names_the_file_and_where_it_goes(monkeypatch):
    monkeypatch.setattr(timm_weights, "_cached", lambda repo: None)
    monkeypatch.setattr(timm_weights, "_reachable", lambda host: False)
    with pytest.raises(CheckpointError) as e:
        timm_weights.timm_weights("timm:mobilenetv3_large_100")  # timm's default tag
    message = str(e.value)
    repo = "timm/mobilenetv3_large_100.ra_in1k"
    assert f"https://huggingface.co/{repo}/resolve/main/model.safetensors" in message
    assert "models--timm--mobilenetv3_large_100.ra_in1k" in message
    assert "PATH/model.safetensors as the init weights" in message
    with pytest.raises(UserError, match=r"it has: .*mobilenetv3_large_100\.ra_in1k"):
        timm_weights.timm_weights("timm:mobilenetv3_large_100.nosuch")
    with pytest.raises(UserError, match="no pretrained weights for mobilenetv3_large_075"):
        timm_weights.timm_weights("timm:mobilenetv3_large_075")


def test_import_says_large_150d_a_variant_with_no_shipped_twin(tmp_path):
    name = "mobilenetv3_large_150d"
    out = tmp_path / f"{name}.yaml"
    r = from_timm.import_timm(f"timm:{name}", out, size=SIZE)
    assert r.max_diff < 1e-9
    theirs = randomize_bn(timm_model(name), seed=1)
    spec = load_spec(out)  # the written file, read back
    ours = build(spec).eval()
    assert n_params(ours) == n_params(theirs) == r.params
    load_timm(ours, theirs.state_dict())
    assert max_logit_difference(ours, theirs, SIZE, seed=1) < 1e-9
    # large-tf at width 1.5 with each stage's repeats × 1.2, rounded up: 23 blocks, not 15
    assert len(spec.rows) == 28 and ours.plans[0].out_shape[0] == 24
    assert ours.plans[-3].out_shape[0] == 1280


def test_import_cli_round_trip(tmp_path):
    out = tmp_path / "s.yaml"
    done = run_cli("import", "timm:tf_mobilenetv3_small_minimal_100", "--out", out)
    assert done.returncode == 0, done.stderr
    assert "2,044,736 parameters" in done.stdout and "outputs equal" in done.stdout
    assert out.read_text().startswith(from_timm.MARK)
    spec = load_spec(out)
    assert spec.params["bn_eps"] == 1e-3 and spec.params["padding"] == "same"
    theirs = randomize_bn(timm_model("tf_mobilenetv3_small_minimal_100"))
    ours = build(spec)
    load_timm(ours, theirs.state_dict())
    assert max_logit_difference(ours, theirs, SIZE) < 1e-9


def test_import_rewrites_its_own_files_and_others_only_with_force(tmp_path):
    ours = tmp_path / "ours.yaml"
    ours.write_text(from_timm.spec_text(timm_model("mobilenetv3_small_050"), "x"))
    assert from_timm.check_out_path(ours, force=False) == ours
    edited = tmp_path / "edited.yaml"  # issue 23 case 2: the marker line kept, a value changed
    edited.write_text(ours.read_text().replace("resolution: 224", "resolution: 192"))
    assert edited.read_text() != ours.read_text()
    with pytest.raises(UserError, match="or was edited since; it is not replaced"):
        from_timm.check_out_path(edited, force=False)
    assert from_timm.check_out_path(edited, force=True) == edited
    crlf = tmp_path / "crlf.yaml"  # issue 31 case 5: only the line ends changed, to CRLF
    crlf.write_bytes(ours.read_bytes().replace(b"\n", b"\r\n"))
    with pytest.raises(UserError, match="or was edited since; it is not replaced"):
        from_timm.check_out_path(crlf, force=False)
    other = tmp_path / "mine.yaml"
    other.write_text("name: mine\n")
    assert main(["import", "timm:mobilenetv3_small_050", "--out", str(other)]) == 2
    assert other.read_text() == "name: mine\n"
    assert from_timm.check_out_path(other, force=True) == other
    with pytest.raises(UserError, match=r"must end in \.yaml"):
        from_timm.check_out_path(tmp_path / "x.txt", force=True)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("timm:nosuch", "timm has no model 'nosuch'; import takes: mobilenetv3_large_075"),
        ("timm:resnet18", "timm's resnet18 is not a MobileNetV3 (it comes from timm.models.resnet"),
        ("mobilenetv3_large_100", "does not start with timm:"),
        ("timm:mobilenetv3_rw", "cannot say timm's mobilenetv3_rw: blocks.0.0: no shortcut"),
        # issue 31: a path is not a model name, said as such (not "timm has no model ''")
        ("timm:../../etc/passwd", "'timm:../../etc/passwd' is not timm:NAME[.TAG]"),
        ("timm:mobilenetv3_large_100/../x", "is not timm:NAME[.TAG]"),
    ],
)
def test_bad_names_fail_with_one_line_and_status_2(source, message, tmp_path, capsys):
    out = tmp_path / "x.yaml"
    assert main(["import", source, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and len(err) < 1000
    assert not out.exists()
    # issue 21 item 7: the names listed are the ones import takes
    assert "import takes: mobilenetv3_large_075" in err and "mobilenetv3_rw," not in err


def test_what_the_format_cannot_say_of_mobilenetv3_rw():
    """rw has four things the format lacks; the first one named stops the import."""
    rw = timm_model("mobilenetv3_rw")
    assert not rw.blocks[0][0].has_skip  # noskip on a 16 → 16 block
    se = rw.blocks[2][0].se
    assert se.conv_reduce.out_channels == 18  # round(72 / 4), not made divisible by 8
    assert type(rw.blocks[4][0].se.act1) is torch.nn.Hardswish  # the block's activation, not ReLU
    assert rw.conv_head.bias is None  # a head conv with neither bias nor BN
    rw.blocks[0][0].has_skip = True
    with pytest.raises(UserError, match=r"blocks\.2\.0: its squeeze-and-excite is 18 channels"):
        from_timm.rows_of(rw)
