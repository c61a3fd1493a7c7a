"""``cli.py diff``: two compiled specs row by row — what differs, and what it costs."""

from __future__ import annotations

import json

from cli import main
from mnv3spec import build, load_spec, summarize
from mnv3spec.model.diff import compare, compare_files, format_diff

from .conftest import ROOT, run_cli

SMALL, LARGE = ROOT / "specs" / "small.yaml", ROOT / "specs" / "large.yaml"
SE_ON_576 = "layers.12.se=true"
# SE on 576 channels, squeeze 144: (576·144 + 144) + (144·576 + 576) params, 2·576·144 MAdds.
SE_PARAMS, SE_MACS = 166_608, 165_888


def test_se_on_smalls_last_conv_changes_that_row_only():
    d = compare(build(load_spec(SMALL)), build(load_spec(SMALL, **{"layers.12.se": True})))
    assert [r.index for r in d.changed] == [12]
    assert d.rows[12].changes == {"se": (False, True)}
    assert d.rows[12].delta == (SE_PARAMS, SE_MACS)
    assert (d.b.params - d.a.params, d.b.macs - d.a.macs) == (SE_PARAMS, SE_MACS)
    assert "rows that differ (*): 12 (se)" in format_diff(d)


def test_rows_only_in_one_network_show_as_added_or_removed():
    d = compare(build(load_spec(LARGE, width=0.25)), build(load_spec(SMALL, width=0.25)))
    assert len(d.rows) == 21  # Large has 21 rows, Small 17
    assert all(r.b is None and r.changes == {"row": ("present", "absent")} for r in d.rows[17:])
    assert sum(r.delta[0] for r in d.rows) == d.b.params - d.a.params
    assert sum(r.delta[1] for r in d.rows) == d.b.macs - d.a.macs
    assert d.rows[4].changes == {"nl": ("RE", "HS"), "s": (1, 2)}
    assert "20 (only in A)" in format_diff(d)


def test_rows_compare_what_they_compile_to():
    """large-tf writes exp as ratios and fixes the head: the same network at width 1 only."""
    tf = ROOT / "specs" / "large-tf.yaml"
    assert compare(build(load_spec(LARGE)), build(load_spec(tf, width=1.0))).changed == []
    d = compare(build(load_spec(LARGE, width=0.75)), build(load_spec(tf)))
    assert {r.index for r in d.changed} == {*range(2, 14), 18, 20}  # dropout (19) has no channels
    assert d.rows[2].changes == {"exp": ([48], [64])}
    assert d.rows[18].changes == {"out": (960, 1280)}


def test_set_applies_to_both_and_set_b_to_b_only():
    d = compare_files(SMALL, SMALL, ["width=0.5"], only_b=[SE_ON_576])
    assert d.a.params == summarize(build(load_spec(SMALL, width=0.5))).params
    assert [r.index for r in d.changed] == [12]
    assert d.labels == (f"{SMALL} --set width=0.5", f"{SMALL} --set width=0.5 --set {SE_ON_576}")


def test_cli_diff_table(capsys):
    assert main(["diff", str(SMALL), str(SMALL), "--set-b", SE_ON_576]) == 0
    lines = capsys.readouterr().out.splitlines()
    row12 = next(line for line in lines if line.lstrip().startswith("*12"))
    assert "conv2d 1×1 96→576 SE HS s1" in row12 and f"+{SE_PARAMS:,}" in row12
    assert lines[-2] == "rows that differ (*): 12 (se)"


def test_cli_diff_json_end_to_end():
    r = run_cli("diff", SMALL, SMALL, "--set-b", SE_ON_576, "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["rows"][12]["changes"] == {"se": [False, True]}
    assert data["delta"] == {"params": SE_PARAMS, "macs": SE_MACS}
    assert data["b"]["label"] == f"{SMALL} --set {SE_ON_576}"


def test_cli_diff_bad_override_is_one_clean_error(capsys):
    assert main(["diff", str(SMALL), str(SMALL), "--set-b", "layers.99.se=true"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "layers[99]" in err and len(err.splitlines()) == 1


def test_cli_diff_says_which_side_failed_to_build():
    result = run_cli("diff", "small", "small", "--set-b", "layers.40.se=true")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: SPEC_B (small): ") and "layers[40]" in result.stderr
