"""``cli.py diff``: two compiled specs row by row — what differs, and what it costs."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from cli import main
from mnv3spec import build, load_spec, summarize
from mnv3spec.model.diff import _how, compare, compare_files, format_diff

from .conftest import ROOT, run_cli

SMALL, LARGE = ROOT / "specs" / "small.yaml", ROOT / "specs" / "large.yaml"
SE_ON_576 = "layers.last_conv.se=true"
# SE on 576 channels, squeeze 144: (576·144 + 144) + (144·576 + 576) params, 2·576·144 MAdds.
SE_PARAMS, SE_MACS = 166_608, 165_888


def test_se_on_smalls_last_conv_changes_that_row_only():
    d = compare(build(load_spec(SMALL)), build(load_spec(SMALL, **{"layers.12.se": True})))
    assert [(r.index_a, r.index_b, r.name) for r in d.changed] == [(12, 12, "last_conv")]
    assert d.rows[12].changes == {"se": (False, True)}
    assert d.rows[12].delta == (SE_PARAMS, SE_MACS)
    assert (d.b.params - d.a.params, d.b.macs - d.a.macs) == (SE_PARAMS, SE_MACS)
    assert "rows that differ (*): last_conv (se)" in format_diff(d)


def test_rows_only_in_one_network_show_as_added_or_removed():
    d = compare(build(load_spec(LARGE, width=0.25)), build(load_spec(SMALL, width=0.25)))
    assert len(d.rows) == 21  # Large has 21 rows, Small 17: aligned by name
    gone = [r for r in d.rows if r.b is None]
    assert [r.name for r in gone] == ["bneck12", "bneck13", "bneck14", "bneck15"]
    assert all(r.changes == {"row": ("present", "absent")} for r in gone)
    assert [(r.index_a, r.index_b) for r in d.rows if r.name == "classifier"] == [(20, 16)]
    assert sum(r.delta[0] for r in d.rows) == d.b.params - d.a.params
    assert sum(r.delta[1] for r in d.rows) == d.b.macs - d.a.macs
    assert "bneck15 (only in A)" in format_diff(d)


def test_rows_compare_what_they_compile_to():
    """large-tf writes exp as ratios and fixes the head: the same network at width 1 only."""
    tf = ROOT / "specs" / "large-tf.yaml"
    assert compare(build(load_spec(LARGE)), build(load_spec(tf, width=1.0))).changed == []
    d = compare(build(load_spec(LARGE, width=0.75)), build(load_spec(tf)))
    assert {r.index_a for r in d.changed} == {*range(2, 14), 18, 20}  # dropout has no channels
    assert d.rows[2].changes == {"exp": ([48], [64])}
    assert d.rows[18].changes == {"out": (960, 1280)}


def test_set_applies_to_both_and_set_b_to_b_only():
    d = compare_files(SMALL, SMALL, ["width=0.5"], only_b=[SE_ON_576])
    assert d.a.params == summarize(build(load_spec(SMALL, width=0.5))).params
    assert [r.name for r in d.changed] == ["last_conv"]
    assert d.labels == (f"{SMALL} --set width=0.5", f"{SMALL} --set width=0.5 --set {SE_ON_576}")


def test_cli_diff_table(capsys):
    assert main(["diff", str(SMALL), str(SMALL), "--set-b", SE_ON_576]) == 0
    lines = capsys.readouterr().out.splitlines()
    row12 = next(line for line in lines if line.lstrip().startswith("*12"))
    assert "conv2d 1×1 96→576 SE HS s1" in row12 and f"+{SE_PARAMS:,}" in row12
    assert lines[-2] == "rows that differ (*): last_conv (se)"


def test_cli_diff_json_end_to_end():
    r = run_cli("diff", SMALL, SMALL, "--set-b", SE_ON_576, "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["rows"][12]["changes"] == {"se": [False, True]}
    assert (data["rows"][12]["name"], data["rows"][12]["index_b"]) == ("last_conv", 12)
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


def unnamed(path) -> dict:
    doc = yaml.safe_load(path.read_text())
    for row in doc["layers"]:
        del row["name"]
    return doc


def edited(doc: dict, insert_at: int | None = None, remove: int | None = None) -> dict:
    doc = copy.deepcopy(doc)
    rows = doc["layers"]
    if remove is not None:
        del rows[remove]
    if insert_at is not None:  # a copy of the row above: channels unchanged after it
        rows.insert(insert_at, {**rows[insert_at - 1], "exp": 40})
        if "name" in rows[insert_at]:
            rows[insert_at]["name"] = "extra"
    return doc


@pytest.mark.parametrize("named", [True, False], ids=["by-name", "by-sequence"])
def test_one_inserted_and_one_removed_row_are_one_row_each(named):
    doc = yaml.safe_load(SMALL.read_text()) if named else unnamed(SMALL)
    b = edited(doc, insert_at=4, remove=8)  # a row after bneck3, bneck8 gone
    b["layers"][1]["se"] = False  # and one changed row
    d = compare(build(load_spec(doc), device="meta"), build(load_spec(b), device="meta"))
    assert [(r.index_a, r.index_b, _how(r)) for r in d.changed] == [
        (1, 1, "se"),
        (None, 4, "only in B"),
        (8, None, "only in A"),
    ]
    assert len(d.rows) == 18
    assert sum(r.delta[0] for r in d.rows) == d.b.params - d.a.params
    labels = (
        "bneck1 (se), extra (only in B), bneck8 (only in A)"
        if named
        else ("1 (se), -→4 (only in B), 8→- (only in A)")
    )
    assert f"rows that differ (*): {labels}" in format_diff(d)


def test_a_width_change_pairs_every_row_in_order():
    d = compare(build(load_spec(unnamed(SMALL)), device="meta"),
                build(load_spec(unnamed(SMALL), width=0.5), device="meta"))  # fmt: skip
    assert [(r.index_a, r.index_b) for r in d.rows] == [(i, i) for i in range(17)]


def test_cli_diff_of_a_shipped_spec_and_its_variant(capsys):
    assert main(["diff", "small", "small-no-se"]) == 0
    out = capsys.readouterr().out
    changed = "bneck1, bneck4, bneck5, bneck6, bneck7, bneck8, bneck9, bneck10, bneck11"
    assert f"rows that differ (*): {changed.replace(',', ' (se),')} (se)" in out
