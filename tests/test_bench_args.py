"""The benches refuse values they cannot run with as argparse does (exit 2, naming the flag),
before anything is exported, trained or timed."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from .conftest import ROOT


def _bench(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "flag, value",
    [("--loads", "0"), ("--loads", "33"), ("--loads", "two"), ("--repeats", "0"),
     ("--threads", "0"), ("--threads", "1.5"), ("--runs", "-1"), ("--resolution", "8"),
     ("--resolution", "nan")],
)  # fmt: skip
def test_bench_loads_refuses_what_it_cannot_time(flag, value, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(sys, "argv", ["loads.py", flag, value])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        _bench("loads").main()
    assert e.value.code == 2 and f"argument {flag}: " in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("value", ["0", "-2"])
def test_bench_adapt_refuses_threads_below_one(value, monkeypatch, capsys, tmp_path):
    out = tmp_path / "bench"
    monkeypatch.setattr(sys, "argv", ["adapt.py", "--threads", value, "--out", str(out)])
    with pytest.raises(SystemExit) as e:
        _bench("adapt").main()
    assert e.value.code == 2 and "argument --threads: " in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("moves", [["width"], []])
def test_bench_adapt_refuses_moves_adapt_does_not_make(moves, monkeypatch, capsys, tmp_path):
    out = tmp_path / "bench"
    monkeypatch.setattr(sys, "argv", ["adapt.py", "--moves", *moves, "--out", str(out)])
    with pytest.raises(SystemExit) as e:
        _bench("adapt").main()
    assert e.value.code == 2 and "argument --moves: " in capsys.readouterr().err
    assert not out.exists()


def test_bench_adapt_hands_its_moves_to_the_search(monkeypatch, tmp_path):
    """The search's settings (adapt.json) hold the bench's --moves; without it, the paper's."""
    bench = _bench("adapt")
    seen = []
    monkeypatch.setattr(bench, "adapt", lambda s, say, cluster: seen.append(s) or 1 / 0)
    for more in (["--moves", "se", "kernel"], []):
        argv = ["adapt.py", *more, "--recheck-runs", "0", "--out", str(tmp_path / "b")]
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(ZeroDivisionError):
            bench.main()
    assert [s.moves for s in seen] == [("se", "kernel"), ()]
    assert not (tmp_path / "b").exists()  # nothing written before the search claims its folder
