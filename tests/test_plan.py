"""The run plan: the spec fitted to its data in one place, without reading the file again."""

from __future__ import annotations

import pytest
import torch

from mnv3spec.data.datasets import Dataset
from mnv3spec.errors import SpecError
from mnv3spec.spec import variant
from mnv3spec.spec.load import load_spec
from mnv3spec.train.config import TrainConfig
from mnv3spec.train.plan import fit_to_data

from .conftest import ROOT

SMALL = ROOT / "specs" / "small.yaml"


def data(classes: int, resolution: int, channels: int = 3) -> Dataset:
    images = torch.zeros(4, channels, resolution, resolution, dtype=torch.uint8)
    labels = torch.zeros(4, dtype=torch.int64)
    names = [f"c{i}" for i in range(classes)]
    return Dataset(
        images, labels, images, labels, names, (0.5,) * channels, (0.25,) * channels, "d"
    )


def test_classes_and_resolution_follow_the_data_without_reading_the_file(monkeypatch):
    spec = load_spec(SMALL, width=0.25)
    monkeypatch.setattr(variant, "read_yaml", lambda *_: pytest.fail("the spec was read again"))
    fitted = fit_to_data(spec, data(7, 24), TrainConfig(str(SMALL), {"width": 0.25}))
    assert (fitted.num_classes, fitted.resolution, fitted.width) == (7, 24, 0.25)
    assert fit_to_data(fitted, data(7, 24), TrainConfig(str(SMALL))) is fitted  # already fits


def test_num_classes_set_by_the_run_wins_unless_it_is_too_few():
    spec = load_spec(SMALL, num_classes=12)
    cfg = TrainConfig(str(SMALL), {"num_classes": 12})
    assert fit_to_data(spec, data(7, 32), cfg).num_classes == 12
    few = load_spec(SMALL, num_classes=2)
    with pytest.raises(SpecError, match="num_classes is 2 but the data has 7 classes") as e:
        fit_to_data(few, data(7, 32), TrainConfig(str(SMALL), {"num_classes": 2}))
    assert e.value.field == "overrides"


def test_in_channels_follow_grey_data_unless_the_run_set_them(tmp_path):
    spec = load_spec(SMALL, width=0.25)
    grey = fit_to_data(spec, data(10, 28, channels=1), TrainConfig(str(SMALL), {"width": 0.25}))
    assert (grey.in_channels, grey.resolution) == (1, 28)
    assert grey.derive().in_channels == 1  # kept in the document, so spec.yaml builds it
    rgb = data(10, 28, channels=1).as_rgb()
    assert rgb.train_images.shape == (4, 3, 28, 28) and rgb.mean == (0.5,) * 3
    cfg = TrainConfig(str(SMALL), {"params.in_channels": 3})
    assert fit_to_data(load_spec(SMALL, **cfg.overrides), rgb, cfg).in_channels == 3


def test_in_channels_the_data_does_not_have_are_refused():
    cfg = TrainConfig(str(SMALL), {"params.in_channels": 2})
    with pytest.raises(
        SpecError, match="in_channels is 2 but d has 1-channel images; allowed: 1 or 3"
    ) as e:
        fit_to_data(load_spec(SMALL, **cfg.overrides), data(10, 28, channels=1), cfg)
    assert e.value.field == "params.in_channels"
