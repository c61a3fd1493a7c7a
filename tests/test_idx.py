"""MNIST and Fashion-MNIST from IDX files in their real on-disk format (gzip'd, big-endian
header), written here: found in the data root, then in Debian's location, then downloaded with
md5 checks; damaged files refused in one paragraph, nothing written over a file the user placed."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cli import main
from mnv3spec.data import idx
from mnv3spec.data.datasets import load_dataset
from mnv3spec.errors import DataError
from mnv3spec.spec.load import load_spec
from mnv3spec.weights.checkpoint import read_metadata

from .conftest import ROOT, run_cli


def idx_bytes(values: np.ndarray, *, magic: bytes | None = None) -> bytes:
    """An IDX file of unsigned bytes: 00 00 08 <dims>, one big-endian uint32 per dim, data."""
    head = magic if magic is not None else bytes([0, 0, 0x08, values.ndim])
    dims = b"".join(int(d).to_bytes(4, "big") for d in values.shape)
    return head + dims + values.astype(np.uint8).tobytes()


def write_set(folder: Path, n_train: int = 12, n_test: int = 5, size: int = 28) -> dict:
    """The four gzip'd files in ``folder``; returns the arrays written, by file name."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        idx.TRAIN[0]: rng.integers(0, 256, (n_train, size, size), dtype=np.uint8),
        idx.TRAIN[1]: (np.arange(n_train) % 10).astype(np.uint8),
        idx.TEST[0]: rng.integers(0, 256, (n_test, size, size), dtype=np.uint8),
        idx.TEST[1]: (np.arange(n_test)[::-1] % 10).astype(np.uint8),
    }
    for name, values in arrays.items():
        (folder / name).write_bytes(gzip.compress(idx_bytes(values)))
    return arrays


def gz_md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def trust(monkeypatch, folder: Path, name: str = "fashion-mnist", debian: Path | None = None):
    """The md5s of the small files in ``folder`` stand in for the official ones; Debian's
    location is ``debian`` (never this machine's real one)."""
    md5 = {f: (gz_md5(folder / f), None) for f in (*idx.TRAIN, *idx.TEST)}
    src = dataclasses.replace(idx.SOURCES[name], md5=md5, debian=debian)
    monkeypatch.setitem(idx.SOURCES, name, src)


def test_fashion_mnist_from_the_data_root_grey_uint8_official_split(tmp_path, monkeypatch, offline):
    written = write_set(tmp_path / "fashion-mnist")
    trust(monkeypatch, tmp_path / "fashion-mnist")
    ds = load_dataset("fashion-mnist", tmp_path, 28)
    assert ds.train_images.shape == (12, 1, 28, 28) and ds.val_images.shape == (5, 1, 28, 28)
    assert ds.train_images.dtype == torch.uint8 and ds.train_labels.dtype == torch.int64
    assert torch.equal(ds.train_images[:, 0], torch.from_numpy(written[idx.TRAIN[0]]))
    assert ds.val_labels.tolist() == written[idx.TEST[1]].tolist()
    assert ds.classes[0] == "T-shirt/top" and ds.num_classes == 10 and ds.channels == 1
    assert (ds.mean, ds.std, ds.flip) == ((0.2860,), (0.3530,), True)
    assert offline == []


def test_mnist_is_not_mirrored_and_resizes_once(tmp_path, monkeypatch, offline):
    write_set(tmp_path / "mnist")
    trust(monkeypatch, tmp_path / "mnist", "mnist")
    ds = load_dataset("mnist", tmp_path, 32)
    assert ds.train_images.shape == (12, 1, 32, 32) and not ds.flip
    assert ds.classes == [str(d) for d in range(10)]


def test_debian_location_is_used_when_the_data_root_lacks_the_files(tmp_path, monkeypatch, offline):
    debian = tmp_path / "usr-share"
    write_set(debian)
    trust(monkeypatch, debian, debian=debian)
    ds = load_dataset("fashion-mnist", tmp_path / "data", 28)
    assert len(ds.train_labels) == 12 and offline == []
    assert not (tmp_path / "data").exists()  # nothing copied or downloaded


def test_recompressed_files_are_accepted_by_their_content_md5(tmp_path, monkeypatch, offline):
    write_set(tmp_path / "fashion-mnist")
    folder = tmp_path / "fashion-mnist"
    md5 = {}
    for f in (*idx.TRAIN, *idx.TEST):
        raw = gzip.decompress((folder / f).read_bytes())
        md5[f] = ("0" * 32, hashlib.md5(raw).hexdigest())  # the .gz md5 is another's
        (folder / f).write_bytes(gzip.compress(raw, compresslevel=1))
    src = dataclasses.replace(idx.SOURCES["fashion-mnist"], md5=md5, debian=None)
    monkeypatch.setitem(idx.SOURCES, "fashion-mnist", src)
    assert len(load_dataset("fashion-mnist", tmp_path, 28).val_labels) == 5


def test_offline_and_absent_names_the_package_and_the_files(tmp_path, monkeypatch, offline):
    src = dataclasses.replace(idx.SOURCES["fashion-mnist"], debian=tmp_path / "nowhere")
    monkeypatch.setitem(idx.SOURCES, "fashion-mnist", src)
    with pytest.raises(DataError) as e:
        load_dataset("fashion-mnist", tmp_path / "data", 28)
    text = str(e.value)
    assert "apt-get install dataset-fashion-mnist" in text and "t10k-labels-idx1-ubyte.gz" in text
    assert str(tmp_path / "data" / "fashion-mnist") in text and "\n" not in text
    assert "synthetic" in text
    assert offline == [src.url + idx.TRAIN[0]]
    assert list(tmp_path.iterdir()) == []  # no partial file, nor data/fashion-mnist/, left


@pytest.mark.parametrize("root, blocker", [("file", "file"), ("D", "D/mnist")])
def test_a_file_where_the_data_folder_goes_is_refused_naming_it(tmp_path, offline, root, blocker):
    (tmp_path / "D").mkdir()
    (tmp_path / blocker).write_text("mine")
    with pytest.raises(DataError, match=f"{blocker}: data_dir: is a file, not a folder"):
        load_dataset("mnist", tmp_path / root, 28)
    assert (tmp_path / blocker).read_text() == "mine" and offline == []


def test_download_false_never_connects(tmp_path, offline):
    with pytest.raises(DataError, match=r"downloading is off.*ossci-datasets"):
        load_dataset("mnist", tmp_path, 28, download=False)
    assert offline == []


def test_download_checks_md5_before_keeping(tmp_path, monkeypatch):
    source = tmp_path / "served"
    write_set(source)
    trust(monkeypatch, source, debian=None)
    served = {idx.SOURCES["fashion-mnist"].url + f: (source / f).read_bytes() for f in idx.TRAIN}
    served |= {idx.SOURCES["fashion-mnist"].url + f: b"tampered" for f in idx.TEST}
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(served[url]))
    with pytest.raises(DataError, match=r"has md5 .*, expected .* so it was not kept"):
        load_dataset("fashion-mnist", tmp_path / "data", 28)
    kept = sorted(p.name for p in (tmp_path / "data" / "fashion-mnist").iterdir())
    assert kept == sorted(idx.TRAIN)  # the good ones kept, the tampered one never written


def test_md5_mismatch_of_a_placed_file_is_refused_and_left_alone(tmp_path, monkeypatch, offline):
    folder = tmp_path / "fashion-mnist"
    write_set(folder)
    trust(monkeypatch, folder)
    (folder / idx.TEST[0]).write_bytes(b"my own file")
    with pytest.raises(DataError) as e:
        load_dataset("fashion-mnist", tmp_path, 28)
    assert str(folder / idx.TEST[0]) in str(e.value) and "md5 is" in str(e.value)
    assert (folder / idx.TEST[0]).read_bytes() == b"my own file" and offline == []


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda raw: raw[:-7], "the header says 5×28×28 = 3920 values, but the file holds 3913"),
        (lambda raw: b"\x00\x00\x08\x01" + raw[4:], "not an IDX file of images .* starts 00000801"),
        (lambda raw: b"\x1f\x8b\x08\x00", "not an IDX file of images .* starts 1f8b0800"),
        (lambda raw: b"", "starts empty"),
        (lambda raw: raw[:10], "truncated: 10 bytes, shorter than the IDX header"),
    ],
    ids=["truncated", "wrong-dims", "wrong-magic", "empty", "short-header"],
)
def test_damaged_idx_is_refused_naming_the_file(tmp_path, monkeypatch, offline, damage, message):
    folder = tmp_path / "fashion-mnist"
    write_set(folder)
    path = folder / idx.TEST[0]
    path.write_bytes(gzip.compress(damage(gzip.decompress(path.read_bytes()))))
    trust(monkeypatch, folder)  # the md5 matches: the parser itself must refuse it
    with pytest.raises(DataError, match=message) as e:
        load_dataset("fashion-mnist", tmp_path, 28)
    assert str(path) in str(e.value)


def test_truncated_gzip_is_refused(tmp_path, monkeypatch, offline):
    folder = tmp_path / "fashion-mnist"
    write_set(folder)
    path = folder / idx.TRAIN[0]
    path.write_bytes(path.read_bytes()[:100])
    trust(monkeypatch, folder)
    with pytest.raises(DataError, match="cannot decompress"):
        load_dataset("fashion-mnist", tmp_path, 28)


def test_a_file_that_expands_beyond_any_official_one_is_refused(tmp_path, monkeypatch, offline):
    folder = tmp_path / "fashion-mnist"
    write_set(folder)
    monkeypatch.setattr(idx, "MAX_BYTES", 1000)  # the test's image files hold 12×28×28 bytes
    trust(monkeypatch, folder)
    with pytest.raises(DataError, match="decompresses to more than 0 MiB") as e:
        load_dataset("fashion-mnist", tmp_path, 28)
    assert str(folder / idx.TRAIN[0]) in str(e.value)


def test_label_count_other_than_image_count_is_refused(tmp_path, monkeypatch, offline):
    folder = tmp_path / "fashion-mnist"
    write_set(folder)
    labels = np.zeros(11, dtype=np.uint8)  # 12 images
    (folder / idx.TRAIN[1]).write_bytes(gzip.compress(idx_bytes(labels)))
    trust(monkeypatch, folder)
    with pytest.raises(DataError, match=r"holds 11 labels but train-images-idx3-ubyte.gz holds 12"):
        load_dataset("fashion-mnist", tmp_path, 28)


def test_labels_outside_the_classes_are_refused(tmp_path, monkeypatch, offline):
    folder = tmp_path / "fashion-mnist"
    write_set(folder)
    (folder / idx.TEST[1]).write_bytes(gzip.compress(idx_bytes(np.full(5, 10, np.uint8))))
    trust(monkeypatch, folder)
    with pytest.raises(DataError, match=r"labels outside 0..9 \(10\)"):
        load_dataset("fashion-mnist", tmp_path, 28)


def test_training_subset_is_a_fixed_draw_and_checked(tmp_path, monkeypatch, offline):
    write_set(tmp_path / "fashion-mnist")
    trust(monkeypatch, tmp_path / "fashion-mnist")
    ds = load_dataset("fashion-mnist", tmp_path, 28)
    a, b = ds.train_subset(7), ds.train_subset(7)
    assert torch.equal(a.train_labels, b.train_labels) and len(a.train_labels) == 7
    assert len(set(a.train_images.flatten(1).sum(1).tolist())) == 7  # 7 distinct images
    assert torch.equal(a.val_images, ds.val_images)
    with pytest.raises(DataError, match=r"a training subset must be 1..12 images, got 13"):
        ds.train_subset(13)


def test_cli_offline_md5_mismatch_exits_2_in_one_paragraph(tmp_path):
    folder = tmp_path / "fashion-mnist"
    write_set(folder)  # not the official files: their md5 is refused, nothing downloaded
    placed = (folder / idx.TRAIN[0]).read_bytes()
    r = run_cli(
        "train", str(ROOT / "specs" / "small.yaml"), "--data", "fashion-mnist",
        "--data-dir", str(tmp_path), "--out", str(tmp_path / "runs"), "--epochs", "1",
        "--device", "cpu", "--width", "0.25",
    )  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "md5 is" in r.stderr and str(folder / idx.TRAIN[0]) in r.stderr
    assert (folder / idx.TRAIN[0]).read_bytes() == placed and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("extra", "channels"), [([], 1), (["--set", "params.in_channels=3"], 3)])
def test_train_on_fashion_mnist_files_grey_or_as_rgb(
    tmp_path, monkeypatch, offline, extra, channels
):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    write_set(tmp_path / "fashion-mnist", n_train=33, n_test=8)
    trust(monkeypatch, tmp_path / "fashion-mnist")
    args = ["train", str(ROOT / "specs" / "small.yaml"), "--data", "fashion-mnist", *extra]
    args += ["--data-dir", str(tmp_path), "--width", "0.25", "--epochs", "1", "--batch", "16"]
    args += ["--device", "cpu", "--seed", "0", "--out", str(tmp_path / "runs"), "--name", "r"]
    assert main(args) == 0
    run = tmp_path / "runs" / "r"
    spec = load_spec(run / "spec.yaml")
    assert (spec.in_channels, spec.resolution, spec.num_classes) == (channels, 28, 10)
    meta = read_metadata(run / "last.safetensors")
    assert tuple(meta["mean"]) == (0.2860,) * channels and meta["classes"][9] == "Ankle boot"
    stem = load_file(run / "last.safetensors")
    assert stem["layers.stem.conv.weight"].shape[1] == channels  # the stem row takes the input
