"""Plain text for the user (text.py): tables, and messages that stay one printable line."""

from __future__ import annotations

import pytest

from mnv3spec.text import kind_of, printable, quoted, text_table


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a\n::warning::x", "a\\n::warning::x"),
        ("\r\t\x1b[2J", "\\r\\t\\x1b[2J"),
        ("\x7f\x85", "\\x7f\\x85"),
        ("a\u2028b\u202ec", "a\\u2028b\\u202ec"),
        ("plain ünïcode → ok", "plain ünïcode → ok"),
    ],
)
def test_printable_escapes_every_control_character(text, expected):
    assert printable(text) == expected
    assert printable(text).isprintable()


def test_quoted_cuts_and_escapes():
    assert quoted("bneck3") == "'bneck3'"
    assert quoted("x" * 10_000) == "'" + "x" * 57 + "...'"
    assert quoted("a\nb") == "'a\\nb'"


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (True, "true or false"),
        (3, "an integer"),
        (2.5, "a number"),
        ("s3cret", "a string"),
        ({}, "a mapping"),
        ([], "a list"),
        (None, "null"),
    ],
)
def test_kind_of_never_shows_the_value(value, kind):
    assert kind_of(value) == kind


def test_text_table_aligns_numbers_right():
    lines = text_table(("name", "n"), [("a", "1"), ("bb", "10")], None, {0})
    assert lines == ["name   n", "--------", "a      1", "bb    10"]
