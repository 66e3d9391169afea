"""One engine for the model's string constraints and one "N validation errors" formatter,
shared by the stream's checks and the control plane's."""

from __future__ import annotations

import re
from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator import resources, validation
from emulator.errors import ValidationException
from emulator.shapes import (
    TextShape,
    describe_value,
    pattern,
    raise_if,
    validation_error,
    violation,
)

SHAPE = pattern("[a-z]+", min_len=2, max_len=4)
ENUM = TextShape(enum=("A", "B"))


def _string_shapes() -> list[TextShape]:
    found = []
    for module in (validation, resources):
        for value in vars(module).values():
            shapes = value.values() if isinstance(value, Mapping) else ()
            found += [v for v in (value, *shapes) if isinstance(v, TextShape)]
    return found


def test_every_string_shape_of_the_stream_and_the_control_plane_is_a_text_shape():
    """Both sides' constants are the one class."""
    shapes = _string_shapes()
    assert {s.pattern for s in shapes} >= {
        resources.DOMAIN_ID.pattern,
        resources.KMS_KEY_ARN.pattern,
        validation._SESSION_ID.pattern,
        validation._MARKDOWN.pattern,
    }


@pytest.mark.parametrize(
    ("shape", "value", "rules"),
    [
        (SHAPE, "abc", []),
        (SHAPE, "a", ["Member must have length greater than or equal to 2"]),
        (
            SHAPE,
            "ABCDE",
            [
                "Member must have length less than or equal to 4",
                "Member must satisfy regular expression pattern: [a-z]+"
                " (character 1, U+0041 LATIN CAPITAL LETTER A, is not in it)",
            ],
        ),
        (SHAPE, 5, ["Member must be a string"]),
        (ENUM, "C", ["Member must satisfy enum value set: [A, B]"]),
        (ENUM, 5, ["Member must satisfy enum value set: [A, B]"]),  # the values say more
    ],
    ids=["valid", "short", "long-and-unmatched", "not-a-string", "enum", "enum-not-a-string"],
)
def test_rules_word_each_broken_constraint_in_order(shape, value, rules):
    assert shape.rules(value) == rules
    assert shape.ok(value) is (rules == [])


def test_the_pattern_is_matched_against_the_whole_value():
    """Smithy patterns apply to the whole value (Java's Matcher.matches)."""
    assert SHAPE.rules("abc1") == [
        "Member must satisfy regular expression pattern: [a-z]+"
        " (character 4, U+0031 DIGIT ONE, is not in it)"
    ]


def test_a_class_pattern_names_the_first_character_it_refuses_and_no_other_does():
    """A hidden value (``'***'``) refused by ``[...]+`` left the user to guess which
    of its characters it was, and an invisible one (a no-break space, a zero-width
    space) could not be seen even in a shown value. A pattern that is not one class
    repeated gets no such note: a character alone says nothing of its place."""
    hidden = pattern("[a-z ]+", sensitive=True)
    assert hidden.violations("knee\u200bpain", "'x'") == [
        "Value '***' at 'x' failed to satisfy constraint: Member must satisfy regular "
        "expression pattern: [a-z ]+ (character 5, U+200B ZERO WIDTH SPACE, is not in it)"
    ]
    assert pattern("[a-z ]*").rules("\x07") == [
        "Member must satisfy regular expression pattern: [a-z ]*"
        " (character 1, U+0007, is not in it)"
    ]
    assert pattern("(ab|cd)+").rules("abx") == [
        "Member must satisfy regular expression pattern: (ab|cd)+"
    ]
    assert pattern("[a-z]+[0-9]").rules("ab") == [
        "Member must satisfy regular expression pattern: [a-z]+[0-9]"
    ]


def test_violations_hide_a_sensitive_value_and_quote_others():
    secret = TextShape(min_len=3, sensitive=True)
    assert secret.violations("ab", "'x'") == [
        "Value '***' at 'x' failed to satisfy constraint: "
        "Member must have length greater than or equal to 3"
    ]
    assert TextShape(min_len=3).violations("ab", "'x' (member)") == [
        "Value 'ab' at 'x' (member) failed to satisfy constraint: "
        "Member must have length greater than or equal to 3"
    ]


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "Value null"),
        (True, "Value 'true'"),
        (7, "Value '7'"),
        ("x" * 2049, f"Value '{'x' * 2048}...' (2049 characters)"),
        ({"a": 1}, "Value"),
        ([1], "Value"),
    ],
    ids=["null", "boolean", "integer", "long-text", "object", "list"],
)
def test_describe_value(value, shown):
    assert describe_value(value) == shown
    assert violation(value, "'w'", "R") == f"{shown} at 'w' failed to satisfy constraint: R"


def test_validation_error_counts_and_joins_the_violations():
    assert validation_error(["a"]).message == "1 validation error detected: a"
    assert validation_error(["a", "b"]).message == "2 validation errors detected: a; b"
    raise_if([])
    with pytest.raises(ValidationException, match=re.escape("2 validation errors detected: a; b")):
        raise_if(["a", "b"])


@pytest.mark.parametrize("member", ["domainId", "subscriptionId"])
@given(value=st.text(max_size=30) | st.from_regex(r"(dom-|sub-)[a-zA-Z0-9]{16,21}", fullmatch=True))
def test_the_stream_and_the_control_plane_word_an_id_alike(member, value):
    """The same model shape (DomainId, SubscriptionId) checked on either side
    breaks the same constraints, worded the same."""
    control = {"domainId": resources.DOMAIN_ID, "subscriptionId": resources.SUBSCRIPTION_ID}
    assert validation.id_constraints_broken(member, value) == control[member].rules(value)
