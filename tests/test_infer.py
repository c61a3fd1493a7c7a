"""`infer`: every checkpoint classifies every readable image; bad files are named and skipped."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import cli
from mnv3spec import build, load_spec
from mnv3spec.data.batches import normalize
from mnv3spec.data.folders import decode_image
from mnv3spec.deploy.infer import classify, find_checkpoints, format_tables
from mnv3spec.errors import CheckpointError, DataError
from mnv3spec.weights.checkpoint import save_weights

from .conftest import ROOT, tiny_checkpoint

CLASSES = ["cat", "dog", "bird"]
GOOD = ["anim.gif", "grey.jpg", "palette.png", "photo.webp", "rgba.png", "wide.bmp"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """runs/a: a good checkpoint; runs/b: garbage; images/: every format and mode, plus two bad."""
    root = tmp_path_factory.mktemp("infer")
    tiny_checkpoint(root / "runs" / "a" / "best.safetensors", CLASSES)
    (root / "runs" / "b").mkdir()
    (root / "runs" / "b" / "best.safetensors").write_bytes(b"garbage")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)

    def noise(*shape):
        return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))

    noise(40, 60).save(images / "grey.jpg")
    noise(20, 30, 4).save(images / "rgba.png")
    noise(50, 80, 3).save(images / "wide.bmp")
    noise(64, 64, 3).save(images / "photo.webp")
    noise(33, 33, 3).convert("P").save(images / "palette.png", transparency=0)
    frames = [noise(30, 30, 3).convert("P") for _ in range(2)]
    frames[0].save(images / "anim.gif", save_all=True, append_images=frames[1:])
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    (images / "notes.txt").write_text("not an image")
    (images / ".hidden").write_text("ignored")
    (images / "sub").mkdir()  # not searched
    return root


def test_predictions_are_the_models_own_on_the_prepared_images(setup):
    ckpt = setup / "runs" / "a" / "best.safetensors"
    report = classify([ckpt], setup / "images", topk=2, device="cpu")
    [result] = report.models
    assert (result.checkpoint, result.resolution) == (str(ckpt), 32)
    assert result.spec == "mobilenet_v3_small"
    assert [p.image for p in result.predictions] == GOOD
    model = tiny_checkpoint(setup / "again.safetensors", CLASSES).eval()  # the same weights
    x = torch.stack([decode_image(setup / "images" / name, 32) for name in GOOD])
    with torch.no_grad():
        probs = model(normalize(x, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))).softmax(1)
    for p, row in zip(result.predictions, probs, strict=True):
        best = row.argsort(descending=True)[:2].tolist()
        assert [c for c, _ in p.top] == [CLASSES[i] for i in best]
        assert [q for _, q in p.top] == pytest.approx(row[best].tolist(), abs=1e-5)
    assert len({p.top[0][0] for p in result.predictions}) > 1  # not one answer for everything
    assert [f for f, _ in report.skipped] == ["broken.jpg", "notes.txt", "sub/"]
    assert all(reason.startswith("cannot read this image") for _, reason in report.skipped[:2])


def test_decode_scales_the_shorter_side_and_crops_the_centre(tmp_path):
    img = np.zeros((32, 64, 3), dtype=np.uint8)
    img[:, 12:52] = 255  # the centre square (and a margin for the filter) white, the sides black
    Image.fromarray(img).save(tmp_path / "wide.png")
    x = decode_image(tmp_path / "wide.png", 16)
    assert x.shape == (3, 16, 16) and x.dtype == torch.uint8
    assert x.min() == 255


def test_a_bad_checkpoint_is_named_and_the_rest_still_run(setup):
    report = classify([setup / "runs"], setup / "images", topk=1, device="cpu")
    assert [m.checkpoint for m in report.models] == [str(setup / "runs/a/best.safetensors")]
    bad = [r for f, r in report.skipped if f.endswith("b/best.safetensors")]
    assert bad and "not a safetensors weights file" in bad[0]
    assert report.classified == len(GOOD)


def test_a_safetensors_file_that_is_not_ours_is_named_with_the_reason(setup, tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "best.safetensors"))
    with pytest.raises(DataError, match="no checkpoint could be used") as info:
        classify([tmp_path], setup / "images", device="cpu")
    assert "not an mnv3spec checkpoint" in info.value.message


def test_topk_is_capped_at_the_number_of_classes_and_tables_list_it(setup):
    report = classify([setup / "runs" / "a"], setup / "images", topk=10, device="cpu")
    assert all(len(p.top) == 3 for p in report.models[0].predictions)
    table = format_tables(report)
    assert "image" in table and "top-3" in table and "top-4" not in table
    assert "anim.gif" in table and "%" in table


def test_missing_paths_and_no_checkpoints_are_user_errors(setup, tmp_path):
    with pytest.raises(CheckpointError, match="no such file or folder"):
        find_checkpoints([tmp_path / "nope"])
    with pytest.raises(CheckpointError, match=r"no best\.safetensors under"):
        find_checkpoints([tmp_path])
    with pytest.raises(DataError, match="no such folder of images"):
        classify([setup / "runs"], tmp_path / "nope", device="cpu")


def test_cli_infer_table_with_skip_lines(setup, cli):
    result = cli("infer", "--images", "images", "--topk", "2", cwd=setup)  # default --models runs
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert any(x.startswith("skipped runs/b/best.safetensors: not a safetensors") for x in lines)
    assert "skipped broken.jpg: cannot read this image (" in result.stderr
    assert "skipped notes.txt: cannot read this image (" in result.stderr
    assert "skipped sub/: a subfolder (images are not searched recursively)" in lines
    head = "runs/a/best.safetensors: mobilenet_v3_small, 3 classes, 32×32\nimage"
    assert result.stdout.startswith(head) and "top-2" in result.stdout
    assert all(name in result.stdout for name in GOOD)


def test_cli_infer_json(setup, cli):
    ckpt = setup / "runs" / "a" / "best.safetensors"
    result = cli("infer", "--models", ckpt, "--images", setup / "images", "--json", "--topk", "1")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    [model] = data["models"]
    assert [p["image"] for p in model["predictions"]] == GOOD
    assert model["predictions"][0]["top"][0]["class"] in CLASSES
    assert 0 < model["predictions"][0]["top"][0]["p"] <= 1
    assert {s["file"] for s in data["skipped"]} == {"broken.jpg", "notes.txt", "sub/"}


def test_cli_infer_exits_2_when_no_file_is_a_readable_image(setup, tmp_path, cli):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "notes.txt").write_text("not an image")
    result = cli("infer", "--models", setup / "runs" / "a", "--images", tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(
        f"error: nothing was classified: no file in {tmp_path} is a readable image (2 files "
        "tried; bad.png: cannot read this image"
    )
    assert "notes.txt: cannot read this image" in result.stderr
    assert len(result.stderr.splitlines()) == 1 and result.stdout == ""


def test_cli_infer_exits_2_when_every_checkpoint_is_skipped(setup, tmp_path, cli):
    (tmp_path / "best.safetensors").write_bytes(b"garbage")
    result = cli("infer", "--models", tmp_path, "--images", setup / "images")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == (
        "error: nothing was classified: no checkpoint could be used (1 checkpoint found; "
        f"{tmp_path / 'best.safetensors'}: not a safetensors weights file (7 bytes))\n"
    )


def test_cli_infer_missing_folders_exit_2(setup, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # neither runs/ nor test_images/ here
    assert cli.main(["infer", "--images", str(setup / "images")]) == 2
    assert capsys.readouterr().err == "error: runs: no such file or folder\n"
    assert cli.main(["infer", "--models", str(setup / "runs" / "a")]) == 2
    assert capsys.readouterr().err == "error: test_images: no such folder of images\n"


def test_checkpoints_from_a_spec_with_another_resolution(tmp_path, setup):
    model = build(load_spec(ROOT / "specs" / "small.yaml", width=0.25, resolution=24))
    save_weights(tmp_path / "best.safetensors", model, classes=[f"c{i}" for i in range(100)])
    report = classify([tmp_path, setup / "runs" / "a"], setup / "images", device="cpu")
    assert [m.resolution for m in report.models] == [24, 32]
    assert [len(m.predictions) for m in report.models] == [len(GOOD)] * 2


def test_a_checkpoint_whose_class_names_do_not_fit_is_skipped(setup, tmp_path):
    model = build(load_spec(ROOT / "specs" / "small.yaml", width=0.25, num_classes=3))
    save_weights(tmp_path / "best.safetensors", model, classes=["a", "b"])
    report = classify([tmp_path, setup / "runs" / "a"], setup / "images", device="cpu")
    assert len(report.models) == 1
    assert report.skipped[0] == (
        str(tmp_path / "best.safetensors"),
        "damaged metadata: 2 class names for a spec with num_classes 3",
    )


def test_a_checkpoint_with_nan_weights_is_skipped_not_shown_as_nan_percent(setup, tmp_path):
    model = tiny_checkpoint(tmp_path / "x.safetensors", CLASSES)
    with torch.no_grad():
        next(model.parameters())[0] = float("nan")
    save_weights(tmp_path / "best.safetensors", model, classes=CLASSES)
    report = classify([tmp_path, setup / "runs" / "a"], setup / "images", device="cpu")
    assert [m.checkpoint for m in report.models] == [str(setup / "runs/a/best.safetensors")]
    file, reason = report.skipped[0]
    assert file == str(tmp_path / "best.safetensors")
    assert reason.startswith("weight ") and "NaN or infinite" in reason


def test_a_folder_named_best_safetensors_found_by_the_search_is_reported(setup, tmp_path, cli):
    (tmp_path / "run" / "best.safetensors").mkdir(parents=True)
    tiny_checkpoint(tmp_path / "ok" / "best.safetensors", CLASSES)
    result = cli("infer", "--models", tmp_path, "--images", setup / "images")
    assert result.returncode == 0 and "Traceback" not in result.stderr
    folder = tmp_path / "run" / "best.safetensors"
    assert f"skipped {folder}: is a folder, not a checkpoint file\n" in result.stderr


def test_a_fifo_given_as_a_checkpoint_is_refused_without_waiting(setup, tmp_path):
    os.mkfifo(tmp_path / "pipe.safetensors")
    with pytest.raises(DataError) as info:  # would block forever if opened
        classify([tmp_path / "pipe.safetensors"], setup / "images", device="cpu")
    assert "is not a regular file" in info.value.message


def test_a_checkpoint_whose_batch_cannot_fit_in_memory_is_skipped(setup, monkeypatch):
    monkeypatch.setattr("mnv3spec.model.memory.available", lambda device: 1 << 20)
    with pytest.raises(DataError, match="no checkpoint could be used") as info:
        classify([setup / "runs" / "a"], setup / "images", device="cpu")
    assert "would need about" in info.value.message


def test_a_checkpoint_named_twice_is_classified_once(setup):
    a = setup / "runs" / "a"
    assert find_checkpoints([a, a / "best.safetensors", a / ".." / "a"]) == [a / "best.safetensors"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d.mkdir(), "error: no images in {d}\n"),
        (
            lambda d: (d / "sub").mkdir(parents=True),
            "no images in {d}; subfolders are not searched",
        ),
        (lambda d: d.write_text(""), "error: {d}: is a file; give a folder of images\n"),
    ],
)
def test_cli_infer_images_that_are_not_a_folder_of_images_exit_2(
    setup, tmp_path, cli, make, message
):
    folder = tmp_path / "images"
    make(folder)
    result = cli("infer", "--models", setup / "runs" / "a", "--images", folder)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message.format(d=folder) in result.stderr


def test_a_folder_named_like_a_checkpoint_given_to_models_is_named(setup, tmp_path, cli):
    (tmp_path / "best.safetensors").mkdir()
    result = cli("infer", "--models", tmp_path / "best.safetensors", "--images", setup / "images")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == (
        "error: nothing was classified: no checkpoint could be used (1 checkpoint found; "
        f"{tmp_path / 'best.safetensors'}: is a folder, not a checkpoint file)\n"
    )


def test_cli_infer_batch_changes_nothing_but_speed(setup, cli):
    ckpt = setup / "runs" / "a" / "best.safetensors"
    common = ("infer", "--models", ckpt, "--images", setup / "images", "--json", "--topk", "2")
    outputs = []
    for batch in ("1", "3", "64"):
        result = cli(*common, "--batch", batch)
        assert result.returncode == 0, result.stderr
        outputs.append(json.loads(result.stdout)["models"][0]["predictions"])
    for other in outputs[1:]:
        for a, b in zip(outputs[0], other, strict=True):
            assert a["image"] == b["image"]
            assert [t["class"] for t in a["top"]] == [t["class"] for t in b["top"]]
            for x, y in zip(a["top"], b["top"], strict=True):
                assert abs(x["p"] - y["p"]) < 1e-5
    result = cli(*common, "--batch", "0")
    assert result.returncode == 2 and "--batch" in result.stderr
    result = cli(*common, "--batch", "100000000")
    assert result.returncode == 2 and "batch 100000000" in result.stderr
