"""A sweep's worker (``python -m mnv3spec.explore.worker REQUEST.json``): a training handed its
configuration, and a bad request refused in one line with exit status 2, nothing written."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from mnv3spec.explore import worker
from mnv3spec.explore.grid import variants
from mnv3spec.explore.training import Training
from mnv3spec.services.run_folder import RunFolder
from mnv3spec.spec.variant import trusted_bases
from mnv3spec.train.config import TrainConfig, config_from_json

from .conftest import ROOT


def _request(tmp_path, value) -> str:
    path = tmp_path / "v.json"
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    return str(path)


@pytest.mark.parametrize(
    "value, message",
    [
        ("{not json", "v.json: damaged: not JSON"),
        ("[" * 100_000, "v.json: damaged: JSON nested thousands of levels deep"),
        ({"config": {"spec": "small"}, "trusted_bases": "/"}, "trusted_bases is not a list"),
        ({"resume": "r" * 300}, "has a name of 300 bytes"),
        (
            {"config": {**dataclasses.asdict(TrainConfig("small", batch=8)), "spec": "s" * 300}},
            "v.json: the field 'spec' has a name of 300 bytes",
        ),
        ([1, 2], "v.json: not a training request (config or resume)"),
        ({"config": {"spec": "small"}}, "v.json: the field 'overrides' is missing"),
        ({"config": "small"}, "not a training request"),
        ({"resume": "nosuch"}, "nosuch: resume: no such folder; give a run folder"),
    ],
)
def test_a_bad_request_is_refused_in_one_line(tmp_path, capsys, value, message):
    request = _request(tmp_path, value)
    assert worker.main([request]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.json"]


def test_a_missing_request_or_none_is_refused(tmp_path, capsys):
    assert worker.main([str(tmp_path / "absent.json")]) == 2
    assert "absent.json: cannot read a training request (JSON)" in capsys.readouterr().err
    assert worker.main([]) == 2 and "usage:" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["fifo", "folder", "/dev/zero"])
def test_a_request_that_is_no_regular_file_is_refused_without_blocking(tmp_path, capsys, kind):
    path = tmp_path / "v.json"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    else:
        path = "/dev/zero"
    assert worker.main([str(path)]) == 2
    assert "is not a regular file; give a training request" in capsys.readouterr().err


def test_a_request_carries_the_folders_trusted_for_bases(tmp_path):
    (v,) = variants([str(ROOT / "specs" / "small.yaml")], {}, [])
    job = Training(v, RunFolder(tmp_path / "r"), None)
    assert job.request()["trusted_bases"] == []
    with trusted_bases([tmp_path]):
        assert job.request()["trusted_bases"] == [os.path.realpath(tmp_path)]


def test_the_worker_trains_the_configuration_it_is_handed(tmp_path):
    """In its own process, as a sweep starts it: the run folder holds that very configuration."""
    (v,) = variants([str(ROOT / "specs" / "small.yaml")], {"width": 0.25, "resolution": 16}, [])
    cfg = TrainConfig(v.spec, v.overrides, data="synthetic", epochs=1, batch=256, seed=0)
    cfg = dataclasses.replace(cfg, device="cpu", out=str(tmp_path / "runs"), name=v.id)
    job = Training(v, RunFolder(tmp_path / "runs" / v.id), cfg)
    request = _request(tmp_path, job.request())
    env = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "mnv3spec.explore.worker", request],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    folder = RunFolder(tmp_path / "runs" / v.id)
    stored = config_from_json(folder.read_config(), str(folder / folder.CONFIG))
    assert (stored.spec, stored.overrides, stored.epochs, stored.seed) == (
        v.spec,
        v.overrides,
        1,
        0,
    )
    assert (stored.out, stored.name) == (str(tmp_path / "runs"), v.id)
    assert [r.epoch for r in folder.read_metrics()] == [1] and folder.finished()
    assert "mnv3spec.explore.worker" in (folder / folder.COMMAND).read_text()
