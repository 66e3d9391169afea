"""The service model's string constraints, and the AWS wording of their violations.

One home for what the stream (:mod:`emulator.validation`) and the control plane
(:mod:`emulator.control`, :mod:`emulator.resources`) both check and say::

    2 validation errors detected: Value 'abc' at 'domainId' failed to satisfy
    constraint: Member must have length greater than or equal to 20; Value ...

- :class:`TextShape`: one string shape of the model (``@length``, ``@pattern``,
  ``@enum``, ``@sensitive``); :meth:`TextShape.rules` words the constraints a
  value breaks, :meth:`TextShape.violations` the whole violation texts.
- :func:`violation`: one violation text, ``Value '...' at <where> failed to
  satisfy constraint: <rule>``; :func:`describe_value` its ``Value ...`` part.
- :func:`validation_error`: the one ValidationException of a request's
  violations, counted ("1 validation error detected: ...").

Pure: no I/O.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .errors import ValidationException

__all__ = [
    "JAVA_DOT",
    "TextShape",
    "pattern",
    "describe_value",
    "violation",
    "validation_error",
    "raise_if",
]

#: Java's ``.``, the model's regex dialect: it excludes every line terminator,
#: Python's only ``\n``. Smithy patterns quoting ``.`` are translated with it.
JAVA_DOT = r"[^\n\r\x85\u2028\u2029]"

# Longer strings are echoed cut short: a payload may be up to 24 MiB, a message should not.
_ECHO_LIMIT = 2048


@dataclass(frozen=True, kw_only=True, slots=True)
class TextShape:
    """The constraints of one string shape of the model.

    Smithy patterns are unanchored text; the service applies them to the whole
    value (Java's ``Matcher.matches``), so ``regex`` is used with ``fullmatch``.
    ``sensitive`` shapes (``@sensitive``) are never echoed: ``Value '***'``.
    """

    min_len: int | None = None  # in characters (code points), as Smithy's @length counts
    max_len: int | None = None
    pattern: str | None = None  # the model's text, quoted in messages
    regex: re.Pattern[str] | None = None  # its faithful Python translation
    enum: tuple[str, ...] | None = None
    sensitive: bool = False
    #: One character the pattern takes, when it is one character class repeated
    #: (``[...]+``): a refusal then names the first character outside it, which a
    #: hidden value (``'***'``) and an invisible one (a no-break space) leave unseen.
    characters: re.Pattern[str] | None = None

    def ok(self, value: object) -> bool:
        """Return whether ``value`` satisfies every constraint: the common case,
        tested before anything is spent on wording (:meth:`rules`)."""
        return (
            isinstance(value, str)
            and (self.min_len is None or len(value) >= self.min_len)
            and (self.max_len is None or len(value) <= self.max_len)
            and (self.regex is None or self.regex.fullmatch(value) is not None)
            and (self.enum is None or value in self.enum)
        )

    def rules(self, value: object) -> list[str]:
        """Return the constraints the non-null ``value`` breaks, in AWS wording
        ("Member must ..."); empty when it satisfies them all."""
        if not isinstance(value, str):
            # For an enum the allowed values say more than the type does.
            return (
                [f"Member must satisfy enum value set: [{', '.join(self.enum)}]"]
                if self.enum
                else ["Member must be a string"]
            )
        broken = []
        if self.min_len is not None and len(value) < self.min_len:
            broken.append(f"Member must have length greater than or equal to {self.min_len}")
        if self.max_len is not None and len(value) > self.max_len:
            broken.append(f"Member must have length less than or equal to {self.max_len}")
        if self.regex is not None and not self.regex.fullmatch(value):
            broken.append(
                f"Member must satisfy regular expression pattern: {self.pattern}"
                + self._first_refused(value)
            )
        if self.enum is not None and value not in self.enum:
            broken.append(f"Member must satisfy enum value set: [{', '.join(self.enum)}]")
        return broken

    def _first_refused(self, value: str) -> str:
        """`` (character N, U+XXXX NAME, is not in it)`` for the first character of
        ``value`` the pattern's class refuses; empty when there is no such class."""
        if self.characters is None:
            return ""
        for index, char in enumerate(value):
            if self.characters.fullmatch(char) is None:
                name = unicodedata.name(char, "")
                named = f"U+{ord(char):04X}" + (f" {name}" if name else "")
                return f" (character {index + 1}, {named}, is not in it)"
        return ""

    def violations(self, value: object, where: str) -> list[str]:
        """Return the :func:`violation` texts of the non-null ``value`` at ``where``
        (already quoted), the value hidden if the shape is sensitive; empty when valid."""
        return [
            violation(value, where, rule, sensitive=self.sensitive) for rule in self.rules(value)
        ]


def pattern(model: str, python: str | None = None, **constraints: Any) -> TextShape:
    """Return the :class:`TextShape` of the model's pattern ``model``, matched as the
    Python regex ``python`` where the dialects differ (see :data:`JAVA_DOT`)."""
    regex = python or model
    characters = None
    if _ONE_CLASS_REPEATED.fullmatch(regex):
        characters = re.compile(regex[:-1])
    return TextShape(pattern=model, regex=re.compile(regex), characters=characters, **constraints)


#: A pattern that is one character class, repeated: ``[a-zA-Z0-9 .,-]+``.
_ONE_CLASS_REPEATED = re.compile(r"\[\^?(?:\\.|[^\]\\])+\][+*]")


def describe_value(value: object, *, sensitive: bool = False) -> str:
    """Return how a violation shows ``value``: ``Value 'text'`` (a text or a number
    cut short past 2,048 characters), ``Value null``, ``Value '***'`` when sensitive,
    and a bare ``Value`` for objects and lists, which may hold sensitive members."""
    if value is None:
        return "Value null"
    if sensitive:
        return "Value '***'"
    if isinstance(value, bool):
        return f"Value '{str(value).lower()}'"
    if isinstance(value, str) and len(value) > _ECHO_LIMIT:
        return f"Value '{value[:_ECHO_LIMIT]}...' ({len(value)} characters)"
    # A Decimal is a JSON integer past int()'s 4,300 digits (validation.json_int).
    if isinstance(value, int | Decimal) and len(digits := str(value)) > _ECHO_LIMIT:
        return f"Value '{digits[:_ECHO_LIMIT]}...' ({len(digits.lstrip('-'))} digits)"
    if isinstance(value, str | int | float | Decimal):
        return f"Value '{value}'"
    return "Value"


def violation(value: object, where: str, rule: str, *, sensitive: bool = False) -> str:
    """Return one violation text: ``<describe_value> at <where> failed to satisfy
    constraint: <rule>``; ``where`` is quoted by the caller (``'domainId'``)."""
    shown = describe_value(value, sensitive=sensitive)
    return f"{shown} at {where} failed to satisfy constraint: {rule}"


def validation_error(violations: list[str]) -> ValidationException:
    """Return the ValidationException reporting ``violations`` (at least one) together:
    ``N validation error(s) detected: `` and the texts joined by ``; ``."""
    n = len(violations)
    noun = "error" if n == 1 else "errors"
    return ValidationException(f"{n} validation {noun} detected: " + "; ".join(violations))


def raise_if(violations: list[str]) -> None:
    """Return if ``violations`` is empty; raise their :func:`validation_error` otherwise."""
    if violations:
        raise validation_error(violations)
