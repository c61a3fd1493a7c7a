"""Reading spec files: regular files only, bounded in size, UTF-8 (issue 12)."""

from __future__ import annotations

import os

import pytest

from mnv3spec import SpecError, load_spec
from mnv3spec.spec.limits import MAX_SPEC_BYTES

from .conftest import ROOT

SMALL = ROOT / "specs" / "small.yaml"


def _refused(path, message: str, cli) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value).startswith(f"{path}: {message}"), str(info.value)
    done = cli("validate", path, timeout=60)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and message in done.stderr, done.stderr


def test_a_link_to_dev_zero_is_refused_without_reading(tmp_path, cli):
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    _refused(tmp_path / "zero.yaml", "is a device, not a regular file", cli)


def test_a_fifo_is_refused_without_blocking(tmp_path, cli):
    os.mkfifo(tmp_path / "pipe.yaml")
    _refused(tmp_path / "pipe.yaml", "is a pipe, not a regular file", cli)


def test_a_big_file_is_refused_before_parsing(tmp_path, cli):
    path = tmp_path / "big.yaml"
    path.write_text(SMALL.read_text() + "#" * MAX_SPEC_BYTES)
    size = path.stat().st_size
    _refused(path, f"the file is {size:,} bytes or more; a spec is at most 1,048,576 bytes", cli)


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le"])
def test_utf16_and_utf32_say_so(tmp_path, codec):
    path = tmp_path / "wide.yaml"
    path.write_bytes(SMALL.read_text().encode(codec))
    wide = codec[:6].upper()
    with pytest.raises(SpecError, match=f"this is {wide} text; save it as UTF-8"):
        load_spec(path)


def test_utf16_on_the_command_line(tmp_path, cli):
    path = tmp_path / "wide.yaml"
    path.write_bytes(SMALL.read_text().encode("utf-16"))
    _refused(path, "this is UTF-16 text; save it as UTF-8", cli)


def test_utf8_with_a_byte_order_mark_still_loads(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(SMALL.read_text().encode("utf-8-sig"))
    assert load_spec(path).name == "mobilenet_v3_small"


def test_unreadable_numbers_and_dates_are_one_error(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(SMALL.read_text().replace("divisor: 8", "divisor: " + "9" * 5000))
    with pytest.raises(SpecError, match="a number thousands of digits long"):
        load_spec(path)
    path.write_text(SMALL.read_text().replace("name: mobilenet_v3_small", "name: 2024-02-30"))
    with pytest.raises(SpecError, match="a date that does not exist"):
        load_spec(path)
    path.write_text(SMALL.read_text().replace("name: mobilenet_v3_small", "name: 2024-02-03"))
    with pytest.raises(SpecError, match=r"name: found a date value; allowed: a name"):
        load_spec(path)


def test_a_path_too_long_for_the_system_is_one_error(tmp_path):
    """Issue 31: the library (not only the CLI, which checks arguments) answers OSErrors."""
    with pytest.raises(SpecError, match="cannot read the file: File name too long"):
        load_spec(tmp_path / ("s" * 300 + ".yaml"))
