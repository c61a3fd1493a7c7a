"""Recipe presets: the short-budget preset's parts (random erasing as one batched op, cosine with
warm-up, label smoothing, Nesterov, weight decay on weights only), its bad values refused, a run
of it killed and resumed equal to one that was not, and a run's settings declared alike in
``Recipe``, ``TrainConfig``, train's flags and docs/commands.md."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from mnv3spec.cli import build_parser
from mnv3spec.cli.flags import flag_names
from mnv3spec.data.batches import random_erase
from mnv3spec.errors import UserError
from mnv3spec.train.config import TrainConfig
from mnv3spec.train.recipe import FIELDS, RECIPES, SCHEDULES, lr_factor, resolve_recipe

from .conftest import ROOT, kill_during_epoch_2, run_cli
from .test_cli_train import TINY, metrics
from .test_docs import sections

PRESET = "cosine-ls-erase"


def test_random_erase_puts_one_rectangle_of_noise_in_each_chosen_image():
    images = torch.full((64, 1, 28, 28), 7, dtype=torch.uint8)  # 7 so noise shows as a change
    out = random_erase(images, 1.0, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == images.shape
    changed = out[:, 0] != 7
    for mask in changed:
        rows, cols = mask.any(1).nonzero()[:, 0], mask.any(0).nonzero()[:, 0]
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert box <= 0.4 * 28 * 28 * 1.2  # one rectangle of at most 40 % (rounding aside)
        assert int(mask.sum()) >= 0.9 * int(box)  # filled: noise hits 7 only 1 time in 256
    assert changed.flatten(1).any(1).all()
    again = random_erase(images, 1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # the generator decides everything


def test_random_erase_probability_is_per_image():
    images = torch.zeros(400, 3, 8, 8, dtype=torch.uint8)
    none = random_erase(images, 0.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(none, images)
    half = random_erase(images, 0.5, generator=torch.Generator().manual_seed(1))
    erased = (half != 0).flatten(1).any(1).float().mean()
    assert 0.4 < erased < 0.6
    with pytest.raises(ValueError, match="must be in"):
        random_erase(images, 1.5)


def test_the_preset_is_nesterov_cosine_with_warmup_smoothing_decay_and_erasing():
    r = resolve_recipe(PRESET)
    assert (r.nesterov, r.schedule, r.warmup, r.label_smoothing) == (True, "cosine", 1.0, 0.1)
    assert (r.weight_decay, r.random_erasing, r.batch) == (5e-3, 0.5, 64)
    factors = [lr_factor(r, 4, step, 10) for step in range(40)]
    assert factors[0] == pytest.approx(0.1)  # warm-up from 1/10, then the cosine alone:
    assert factors[9] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.9 / 4)))
    assert factors[20] == pytest.approx(0.5) and factors[39] < 0.01  # cosine to 0
    assert RECIPES["seed"].random_erasing == 0  # the seed's recipe draws no erasing at all


@pytest.mark.parametrize(
    ("flags", "batch"),
    [([], 128), (["--recipe", PRESET], 64), (["--recipe", PRESET, "--batch", "32"], 32)],
)
def test_the_batch_is_the_recipes_unless_given_and_config_json_holds_it(tmp_path, flags, batch):
    i = TINY.index("--batch")
    r = run_cli("train", *TINY[:i], *TINY[i + 2 :], *flags, "--epochs", "1", "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"batch {batch}, {512 // batch} steps/epoch" in r.stdout  # 512 synthetic images
    (run,) = tmp_path.iterdir()
    assert json.loads((run / "config.json").read_text())["batch"] == batch


@pytest.mark.parametrize("bad", [0, -1, 2.5])
def test_a_batch_below_1_or_not_whole_is_refused_naming_it(bad):
    with pytest.raises(UserError, match="must be a whole number of at least 1") as e:
        resolve_recipe(PRESET, batch=bad)
    assert e.value.field == "batch"


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_random_erasing_outside_0_1_is_refused_naming_it(bad):
    with pytest.raises(UserError, match=r"must be in \[0, 1\]") as e:
        resolve_recipe(PRESET, random_erasing=bad)
    assert e.value.field == "random_erasing"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--recipe", "fast"], "unknown recipe 'fast'; known: seed, cosine-ls-erase"),
        (["--random-erasing", "1.5"], "must be in [0, 1], got 1.5"),
        (["--random-erasing", "nan"], "--random-erasing"),
        (["--batch", "0"], "--batch"),  # the last --batch wins over TINY's
        (["--batch", "2.5"], "--batch"),
    ],
)
def test_cli_bad_recipe_flags_exit_2_in_one_paragraph(tmp_path, flags, message):
    r = run_cli("train", *TINY, "--epochs", "1", "--out", tmp_path, *flags, cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert message in r.stderr and not any(tmp_path.iterdir())


def test_preset_killed_during_epoch_2_and_resumed_equals_an_uninterrupted_run(tmp_path):
    args = [*TINY, "--recipe", PRESET, "--epochs", "3", "--out", str(tmp_path)]
    straight = run_cli("train", *args, "--name", "straight")
    assert straight.returncode == 0, straight.stderr
    killed = kill_during_epoch_2(tmp_path, *TINY, "--recipe", PRESET, "--epochs", "3")
    assert len(metrics(killed)) == 1, "the run was not killed during epoch 2"
    resumed = run_cli("train", "--resume", killed)
    assert resumed.returncode == 0, resumed.stderr
    a = load_file(tmp_path / "straight" / "last.safetensors")
    b = load_file(killed / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert metrics(tmp_path / "straight")[-1]["val_loss"] == metrics(killed)[-1]["val_loss"]


def test_resume_epochs_extends_a_multistep_run_to_what_a_longer_run_gives(tmp_path):
    straight = run_cli("train", *TINY, "--epochs", "3", "--out", tmp_path, "--name", "straight")
    assert straight.returncode == 0, straight.stderr
    short = run_cli("train", *TINY, "--epochs", "2", "--out", tmp_path, "--name", "short")
    assert short.returncode == 0, short.stderr
    longer = run_cli("train", "--resume", tmp_path / "short", "--epochs", "3")
    assert longer.returncode == 0, longer.stderr
    assert "after epoch 2 of 3" in longer.stdout and "epoch 3/3" in longer.stdout
    a = load_file(tmp_path / "straight" / "last.safetensors")
    b = load_file(tmp_path / "short" / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "short" / "config.json").read_text())["epochs"] == 3


def snapshot(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_resume_epochs_refuses_cosine_with_the_reason_and_too_few_epochs(tmp_path):
    cosine = run_cli("train", *TINY, "--recipe", PRESET, "--epochs", "1", "--out", tmp_path)
    assert cosine.returncode == 0, cosine.stderr
    (run,) = tmp_path.iterdir()
    before = snapshot(run)
    r = run_cli("train", "--resume", run, "--epochs", "2")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "--epochs: a run with the cosine schedule cannot be extended" in r.stderr
    assert "depends on the total (1)" in r.stderr and "initialised from" in r.stderr
    assert snapshot(run) == before
    seed = run_cli("train", *TINY, "--epochs", "2", "--out", tmp_path, "--name", "seed")
    assert seed.returncode == 0, seed.stderr
    r = run_cli("train", "--resume", tmp_path / "seed", "--epochs", "2")
    assert r.returncode == 2 and "has done 2 epoch(s) already" in r.stderr


# --- a run's settings: declared in Recipe and TrainConfig, shown by the flags and the docs -------

SEED = RECIPES["seed"]
NOT_FLAGS = {"help", "spec", "set", "allow_base", "width", "resume"}  # set gives overrides
NOT_SET = {"milestones", "gamma"}  # a preset's own: no setting changes them
UNSTATED = ("none", "all", "—", "random (saved)", "SPEC-wWIDTH-DATA", "the whole training split")


def settings() -> dict[str, Any]:
    """Each setting a flag gives → its default as a run takes it: TrainConfig's, or where that
    is None for a recipe field (the preset's value), the seed recipe's."""
    fields = [f for f in dataclasses.fields(TrainConfig) if f.name not in ("spec", "overrides")]
    default = {f.name: f.default for f in fields if f.name != "deterministic"}  # set from seed
    return {k: getattr(SEED, k) if v is None and k in FIELDS else v for k, v in default.items()}


def stated(text: str) -> Any:
    """A default as help or docs spell it: a number, off/on, a word, or None (none, all...)."""
    text = text.strip().strip("`")
    if text.startswith("the recipe's"):
        return "the recipe's"
    words = {"off": False, "on": True, "graph on": True, **dict.fromkeys(UNSTATED)}
    if text in words:
        return words[text]
    try:
        return float(text)
    except ValueError:
        return text


def agrees(text: str, name: str, value: Any) -> bool:
    """``text`` states ``value``, the default of setting ``name``: "none" a value of None or 0 (no
    moving average), "the recipe's" a recipe field's (each preset's as listed, if any is)."""
    said = stated(text)
    if said == "the recipe's":
        listed = re.findall(r"(\d+) for `([\w-]+)`", text)
        return name in FIELDS and all(getattr(RECIPES[p], name) == int(n) for n, p in listed)
    if said is None:
        return value is None or (value == 0 and not isinstance(value, bool))
    return said == value and isinstance(said, bool) == isinstance(value, bool)


def test_every_setting_has_one_flag_and_every_settable_recipe_field_is_a_setting():
    flags = {a.dest for a in build_parser().commands["train"].options} - NOT_FLAGS
    assert flags == set(settings())
    for name in set(FIELDS) - NOT_SET:  # None in TrainConfig: the preset's unless given
        assert name in flags and TrainConfig.__dataclass_fields__[name].default is None, name
    assert set(FIELDS) - NOT_SET - set(settings()) == set()


def test_the_flags_help_states_each_default_as_a_run_takes_it():
    parser = build_parser().commands["train"]
    defaults = settings()
    for action in parser.options:
        if action.dest not in defaults:
            continue
        patterns = (r"\(seed: ([^)]+)\)", r"\(default:? ([^)]+)\)", r"(\S+) \(default\)")
        for said in (m for p in patterns for m in re.findall(p, action.help)):
            assert agrees(said, action.dest, defaults[action.dest]), (action.dest, said)
    milestones = "/".join(map(str, SEED.milestones))
    assert parser.description.startswith(
        f"Train a spec. Defaults are the seed repo's recipe: SGD lr {SEED.lr:g} momentum "
        f"{SEED.momentum:g}, x{SEED.gamma:g} at epochs {milestones}, batch {SEED.batch}, "
        f"{defaults['epochs']} epochs"
    )
    schedule = next(a for a in parser.options if a.dest == "schedule")
    assert schedule.help == f"seed: {SEED.schedule} {milestones} x{SEED.gamma:g}"
    assert tuple(schedule.choices) == SCHEDULES
    recipe = next(a for a in parser.options if a.dest == "recipe")
    assert all(f"{name} (default)" in recipe.help or name in recipe.help for name in RECIPES)


def table(text: str, header: str) -> list[list[str]]:
    """The rows, as lists of cells, of the Markdown table in ``text`` whose first line is
    ``header``."""
    lines = text.split(header + "\n", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]


def test_the_docs_table_has_a_row_for_every_setting_with_its_default():
    train = sections(ROOT / "docs" / "commands.md")["train"]
    flag_of = {flag: name for name, flag in flag_names(build_parser().commands["train"]).items()}
    defaults, documented = settings(), set()
    for row in table(train, "| flag | default | meaning |")[1:]:  # after SPEC, the flags
        flags = re.findall(r"`(--[\w-]+)", row[0])
        texts = row[1].split(" / " if " / " in row[0] else ", ") if len(flags) > 1 else row[1:2]
        for flag, text in zip(flags, texts, strict=True):
            documented.add(flag_of[flag])
            if flag_of[flag] in defaults:
                assert agrees(text, flag_of[flag], defaults[flag_of[flag]]), (flag, text)
    assert set(defaults) <= documented, set(defaults) - documented
    presets = [row[0].split("`")[1] for row in table(train, "| `--recipe` | what it is |")]
    assert presets == list(RECIPES)
