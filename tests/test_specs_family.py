"""MobileNetV1, V2 and the TF-convention V3 0.75 models, built from data with no per-model Python.

Every count is at 224×224, 1000 classes, ``si=2``, next to the figure it must reproduce.
"""

from __future__ import annotations

import csv
import math

import pytest
import torch
import torchvision
import yaml

from cli import main
from mnv3spec import SpecError, build, load_spec, load_torchvision, summarize
from mnv3spec.model.summary import count_macs
from mnv3spec.weights.checkpoint import load_model

from .conftest import ROOT, run_cli

V1, V2 = ROOT / "specs" / "mobilenet_v1.yaml", ROOT / "specs" / "mobilenet_v2.yaml"
LARGE_TF, SMALL_TF = ROOT / "specs" / "large-tf.yaml", ROOT / "specs" / "small-tf.yaml"
NEW = [V1, V2, LARGE_TF, SMALL_TF]


def at_224(spec, **overrides):
    return build(load_spec(spec, si=2, num_classes=1000, resolution=224, **overrides))


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_v1_counts_are_the_keras_model_and_the_paper():
    s = summarize(at_224(V1))
    assert s.params == 4_231_976  # trainable parameters of keras.applications.MobileNet
    assert abs(s.macs - 569e6) / 569e6 < 0.01  # the paper: 569 M multiply-adds
    assert s.macs == 568_740_352


def test_v1_pairs_depthwise_and_pointwise_with_the_erratum_fixed():
    model = at_224(V1)
    dw = model.layers.dw1.conv
    assert (dw.in_channels, dw.out_channels, dw.groups, dw.weight.shape[1]) == (32, 32, 32, 1)
    assert model.layers.pw1.conv.kernel_size == (1, 1)
    assert model.layers.dw13.conv.stride == (1, 1)  # printed s2; 7×7 in and out
    assert model.plans[26].out_shape == (1024, 7, 7)
    assert build(load_spec(V1)).plans[26].out_shape == (1024, 8, 8)  # si=1: 32×32 CIFAR ends at 8×8


def test_v2_matches_torchvision_counts_macs_and_outputs():
    tv = torchvision.models.mobilenet_v2().eval()
    ours = at_224(V2).eval()
    assert n_params(ours) == n_params(tv) == 3_504_872
    tv_macs = count_macs(tv, 224)["Global"]
    assert round(tv_macs / 1e5) == 3008  # 300.8 M; the paper prints 300 M
    assert abs(summarize(ours).macs - tv_macs) / tv_macs < 0.01
    load_torchvision(ours, tv.state_dict())
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize(("width", "head"), [(0.35, 1280), (0.5, 1280), (1.4, 1792)])
def test_v2_widths_match_torchvision_and_the_head_rule(width, head):
    ours = at_224(V2, width=width)
    assert ours.plans[8].out_shape[0] == head  # 1280 · max(1, width), made divisible
    assert n_params(ours) == n_params(torchvision.models.mobilenet_v2(width_mult=width))


def test_v2_rows_are_table_2_rows():
    model = build(load_spec(V2, si=2))
    first = model.layers.bottleneck1
    assert not hasattr(first, "expand")  # t = 1: no expansion conv
    c24 = model.layers.bottleneck2  # t 6, c 24, n 2, s 2
    assert [b.dw.conv.stride for b in c24] == [(2, 2), (1, 1)]  # stride on the first repeat only
    assert [b.expand.conv.out_channels for b in c24] == [96, 144]  # 6 × each block's input
    assert [b.residual for b in c24] == [False, True]
    assert len(model.layers.bottleneck4) == 4
    assert build(load_spec(V2)).plans[8].out_shape == (1280, 8, 8)  # si=1: 32×32 CIFAR ends at 8×8


@pytest.mark.parametrize(
    ("spec", "params", "macs_m"),
    [(LARGE_TF, 3_993_528, 154.6), (SMALL_TF, 2_041_872, 43.4)],  # Table 3: 4.0 M/155 M, 2.0 M/44 M
    ids=["large", "small"],
)
def test_tf_convention_gives_the_papers_075_models(spec, params, macs_m):
    s = summarize(at_224(spec))
    assert s.params == params
    assert round(s.macs / 1e6, 1) == macs_m


@pytest.mark.parametrize(
    ("spec", "params"), [(LARGE_TF, 5_483_032), (SMALL_TF, 2_542_856)], ids=["large", "small"]
)
def test_tf_convention_at_width_1_is_the_paper_table(spec, params):
    assert n_params(at_224(spec, width=1.0)) == params  # torchvision's counts


def test_ratio_expansion_is_of_the_rounded_input_and_the_head_stays_fixed():
    tf = at_224(LARGE_TF)  # width 0.75
    plain = at_224(ROOT / "specs" / "large.yaml", width=0.75)
    assert (tf.plans[2].blocks[0].in_ch, tf.plans[2].blocks[0].exp) == (16, 64)  # 16 · 4
    assert plain.plans[2].blocks[0].exp == 48  # 64 · 0.75
    assert tf.plans[16].out_shape[0] == plain.plans[16].out_shape[0] == 720  # 960 scales
    assert (tf.plans[18].out_shape[0], plain.plans[18].out_shape[0]) == (1280, 960)


def _v2_doc() -> dict:
    return yaml.safe_load(V2.read_text())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["layers"][1].pop("n"), "missing the required key 'n'"),
        (lambda d: d["layers"][1].update(t=0), "found 0"),
        (lambda d: d["layers"][8].update(min_width=-1), "found -1"),
        (
            lambda d: d["layers"].insert(1, {"op": "dwconv", "k": 3, "s": 1, "nl": "RE", "out": 8}),
            "unknown key 'out'",
        ),
    ],
    ids=["bottleneck-without-n", "zero-t", "negative-min-width", "dwconv-with-out"],
)
def test_bad_rows_of_the_new_operators_are_spec_errors(edit, message):
    doc = _v2_doc()
    edit(doc)
    with pytest.raises(SpecError, match=message) as err:
        build(load_spec(doc))
    assert err.value.field.startswith("layers[")


def test_new_specs_validate_from_the_command_line():
    r = run_cli("validate", *NEW)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("ok: ") == len(NEW)


@pytest.mark.parametrize("spec", NEW, ids=lambda p: p.stem)
def test_new_specs_show(spec, capsys):
    assert main(["show", str(spec), "--set", "width=0.25"]) == 0
    out = capsys.readouterr().out
    rows = len(yaml.safe_load(spec.read_text())["layers"])
    assert (
        f"{n_params(build(load_spec(spec, width=0.25))):,}" in out.splitlines()[-2]
    )  # the totals line
    assert len(out.splitlines()) == rows + 6  # title, header, rule, rows, rule, total, footer


# Tiny and fast: a quarter width, 16×16 synthetic images, every stride 2 (si=2).
TINY = ["--width", "0.25", "--set", "si=2", "--set", "resolution=16"]


@pytest.mark.parametrize("spec", NEW, ids=lambda p: p.stem)
def test_new_specs_train_one_epoch(spec, tmp_path, capsys):
    args = ["train", str(spec), *TINY, "--data", "synthetic", "--epochs", "1", "--batch", "256"]
    assert main([*args, "--device", "cpu", "--out", str(tmp_path), "--name", "run"]) == 0
    run = tmp_path / "run"
    epochs = list(csv.DictReader((run / "metrics.csv").open()))
    assert [e["epoch"] for e in epochs] == ["1"] and math.isfinite(float(epochs[0]["train_loss"]))
    model, _ = load_model(run / "best.safetensors")
    assert model.spec.name == build(load_spec(spec)).spec.name
    assert n_params(model) == n_params(build(load_spec(spec, width=0.25, si=2, num_classes=10)))


def test_new_specs_time_with_latency(tmp_path, capsys):
    table = tmp_path / "latency.csv"
    args = ["latency", *map(str, NEW), "--widths", "0.25", "--devices", "cpu", "--runs", "2"]
    assert main([*args, "--warmup", "1", "--resolution", "16", "--csv", str(table)]) == 0
    rows = list(csv.DictReader(table.open()))
    assert [r["spec"] for r in rows] == [build(load_spec(s)).spec.name for s in NEW]
    assert [int(r["params"]) for r in rows] == [
        n_params(build(load_spec(s, width=0.25))) for s in NEW
    ]
    assert all(float(r["median_ms"]) > 0 for r in rows)
