"""The compiled networks are the paper's: parameter counts of torchvision and the TF checkpoints."""

from __future__ import annotations

import pytest
import torch
import yaml

import mnv3spec
from mnv3spec import SpecError, build, load_spec
from mnv3spec.ops.layers import init_weights

from .conftest import ROOT, SPECS

LARGE, SMALL = ROOT / "specs" / "large.yaml", ROOT / "specs" / "small.yaml"


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("spec", "width", "expected"),
    [
        # torchvision's mobilenet_v3_* with _mobilenet_v3_conf(arch, width_mult=…)
        (LARGE, 1.0, 5_483_032),
        (LARGE, 0.75, 3_377_576),
        (LARGE, 0.5, 1_734_576),
        (SMALL, 1.0, 2_542_856),
        (SMALL, 0.75, 1_653_920),
        (SMALL, 0.5, 917_264),
        # the official TF minimalistic checkpoints (timm's ports have the same counts)
        (ROOT / "specs" / "large-minimal.yaml", 1.0, 3_924_288),
        (ROOT / "specs" / "small-minimal.yaml", 1.0, 2_044_736),
    ],
    ids=lambda v: getattr(v, "stem", v),
)
def test_parameter_counts(spec, width, expected):
    assert n_params(build(load_spec(spec, width=width, si=2, num_classes=1000))) == expected


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_every_shipped_spec_runs_at_its_resolution_and_at_224(path):
    model = build(load_spec(path)).eval()
    res, classes = model.spec.params["resolution"], model.spec.params["num_classes"]
    with torch.no_grad():
        assert model(torch.randn(2, 3, res, res)).shape == (2, classes)
        big = build(load_spec(path, si=2, num_classes=1000, resolution=224)).eval()
        assert big(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


def test_module_names_follow_the_spec_rows():
    keys = list(build(load_spec(SMALL)).state_dict())
    assert keys[0] == "layers.stem.conv.weight"
    assert "layers.bneck1.se.fc1.weight" in keys  # Table 2, bneck 1 has SE
    assert not any(k.startswith("layers.bneck2.se") for k in keys)  # bneck 2 has none
    assert "layers.bneck1.expand.conv.weight" not in keys  # exp == in: no expansion conv
    assert keys[-1] == "layers.classifier.conv.bias"


def test_unnamed_rows_get_their_index_and_op_as_module_name():
    doc = yaml.safe_load(SMALL.read_text())
    for row in doc["layers"][:3]:
        del row["name"]
    keys = list(build(load_spec(doc)).state_dict())
    assert keys[0] == "layers.r00_conv2d.conv.weight"  # an old checkpoint's keys
    assert "layers.r01_bneck.se.fc1.weight" in keys and "layers.bneck3.dw.conv.weight" in keys


@pytest.mark.parametrize("name", ["forward", "training", "cuda"])
def test_a_row_name_that_pytorch_takes_is_refused_with_its_place(name):
    doc = yaml.safe_load(SMALL.read_text())
    doc["layers"][4]["name"] = name
    with pytest.raises(SpecError, match=rf"layers\[4\]\.name: the row name '{name}' is taken"):
        build(load_spec(doc), device="meta")


def test_si_sets_the_initial_strides():
    small = build(load_spec(SMALL))  # si = 1 for 32×32 CIFAR
    assert [p.out_shape[1] for p in small.plans[:5]] == [32, 32, 32, 32, 16]
    paper = build(load_spec(SMALL, si=2, resolution=224))
    assert [p.out_shape[1] for p in paper.plans[:5]] == [112, 56, 28, 28, 14]


def test_residuals_only_where_stride_one_and_same_channels():
    large = build(load_spec(LARGE))
    residual = [
        p.row.index
        for p in large.plans
        if getattr(large.layers.get_submodule(p.name), "residual", False)
    ]
    assert residual == [1, 3, 5, 6, 8, 9, 10, 12, 14, 15]


def test_bn_settings_come_from_the_spec():
    model = build(load_spec(SMALL, bn_momentum=0.01))
    bn = model.layers.stem.bn
    assert (bn.eps, bn.momentum) == (0.001, 0.01)


def test_se_on_the_last_conv_is_one_edit():
    printed = build(load_spec(SMALL, si=2, num_classes=1000, **{"layers.12.se": True}))
    # SE(576): 576→144→576 with biases
    assert n_params(printed) - 2_542_856 == 576 * 144 + 144 + 144 * 576 + 576


def test_repeats_and_ratio_expansion():
    doc = {
        "name": "tiny",
        "params": {
            "width": 1.0,
            "divisor": 8,
            "resolution": 16,
            "num_classes": 5,
            "bn_momentum": 0.1,
            "bn_eps": 1e-3,
        },
        "layers": [
            {"op": "conv2d", "k": 3, "out": 16, "s": 2, "nl": "RE"},
            {
                "op": "bneck",
                "k": 3,
                "exp": "x4.5",
                "out": 24,
                "se": False,
                "nl": "RE",
                "s": 2,
                "n": 3,
            },
            {"op": "pool"},
            {"op": "conv2d", "k": 1, "out": 5, "bn": False, "fixed": True},
        ],
    }
    model = build(load_spec(doc))
    blocks = model.plans[1].blocks
    assert [(b.in_ch, b.exp, b.out_ch, b.stride) for b in blocks] == [
        (16, 72, 24, 2),
        (24, 112, 24, 1),
        (24, 112, 24, 1),
    ]
    assert model(torch.randn(1, 3, 16, 16)).shape == (1, 5)
    assert "layers.r1_bneck.2.dw.conv.weight" in model.state_dict()


def test_width_scales_the_head_unless_fixed():
    half = build(load_spec(LARGE, width=0.5))
    assert half.plans[18].out_shape[0] == 640
    fixed = build(load_spec(LARGE, width=0.5, **{"layers.18.fixed": True}))
    assert fixed.plans[18].out_shape[0] == 1280


def test_network_must_end_in_class_scores():
    with pytest.raises(SpecError, match="last row gives 100 outputs but num_classes is 10"):
        build(load_spec(SMALL, num_classes=10, **{"layers.16.out": 100}))


def test_build_takes_a_resolved_spec_and_derive_changes_it_without_reading_the_file(tmp_path):
    copy = tmp_path / "small.yaml"
    copy.write_text(SMALL.read_text())
    spec = mnv3spec.load_spec(copy, width=0.5)
    copy.unlink()  # derive works from the resolved document
    assert n_params(build(spec)) == n_params(build(load_spec(SMALL, width=0.5)))
    wider = spec.derive(width=1.0)
    assert build(wider).spec.params["width"] == 1.0
    assert spec.params["width"] == 0.5  # the original is untouched
    with pytest.raises(SpecError) as e:
        spec.derive(si=7)
    assert str(copy) in str(e.value) and "overridden with si=7" in str(e.value)
    with pytest.raises(TypeError, match="takes a Spec"):
        build(SMALL)


def test_init_weights_initialises_layers_it_does_not_know():
    # The builder allocates on the meta device then initialises once: a new operator's layers
    # (here a Linear and a LayerNorm) must not keep the uninitialised memory.
    with torch.device("meta"):
        model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    model.to_empty(device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    init_weights(model)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert torch.equal(model[1].weight, torch.ones(3))


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_compiled_weights_are_initialised(path):
    model = build(load_spec(path))
    for name, t in model.state_dict().items():
        assert torch.isfinite(t.float()).all(), name
        if name.endswith("running_var"):
            assert torch.equal(t, torch.ones_like(t)), name


def test_absurd_sizes_are_refused_before_any_memory_is_taken():
    # Each value within its schema bound; together past the builder's parameter cap.
    with pytest.raises(SpecError, match=r"would have 3,926,553,844 parameters .*width 10\)"):
        build(load_spec(SMALL, width=10, **{"layers.14.out": 65_536}))
    # Counting multiply-adds runs on the meta device: any resolution costs no memory.
    assert mnv3spec.summarize(build(load_spec(SMALL, resolution=8192))).macs > 3.9e12


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_a_meta_build_has_the_shapes_and_counts_without_the_weights(path):
    spec = load_spec(path)
    shapes, model = build(spec, device="meta"), build(spec)
    assert {t.device.type for t in shapes.state_dict().values()} == {"meta"}
    assert {k: v.shape for k, v in shapes.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    assert mnv3spec.summarize(shapes) == mnv3spec.summarize(model)
    with pytest.raises(ValueError, match="on cpu or meta, not 'cuda'"):
        build(spec, device="cuda")
