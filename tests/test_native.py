"""deploy/runtimes/native.py: a native library's lines on file descriptor 2 kept out, any
other line it printed written back in order."""

from __future__ import annotations

import os
import re

from mnv3spec.deploy.runtimes.native import stderr_without


def test_only_the_noise_is_kept_out_of_stderr(capfd):
    noise = re.compile(rb"\[cpuinfo_utils\.cpp:\d+\] ")
    with stderr_without(noise):
        os.write(2, b"[cpuinfo_utils.cpp:71] Reading file /sys/devices/soc0/image_version\n")
        os.write(2, b"a real error\n[cpuinfo_utils.cpp:87] Failed to open midr file\nand more\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "a real error\nand more\nafter\n"


def test_what_the_block_raises_still_leaves_stderr_as_it_was(capfd):
    try:
        with stderr_without(re.compile(rb"x")):
            os.write(2, b"kept\nx dropped\n")
            raise ValueError("raised")
    except ValueError:
        pass
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "kept\nafter\n"
