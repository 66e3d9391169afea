"""Characters as a reader sees them: where a partial transcript may be cut.

A partial result is a prefix of its final one. Cut between two code points of
one character as a reader sees it (a letter and its accent, a flag's two
regional indicators, an emoji and its skin tone, a conjunct), it shows a
character the speaker did not say. These helpers find the cuts that do not:
:func:`character_ends` and :func:`character_start` (a simplified Unicode UAX #29
grapheme cluster), :func:`visible_start` and :func:`can_have_partials`. Used by
the scenario data model (:mod:`emulator.scenario`) and the session
(:mod:`emulator.session`); pure functions of text, no I/O.
"""

from __future__ import annotations

import unicodedata

__all__ = [
    "can_have_partials",
    "visible_start",
    "character_ends",
    "character_start",
]


def can_have_partials(content: str) -> bool:
    """Whether ``content`` has a partial text: a visible proper prefix, which a
    content of one character as a reader sees it (a letter with its accents, an
    emoji with its skin tone, a flag; spaces and invisible characters aside)
    does not."""
    start = visible_start(content)
    return len(character_ends(content.rstrip(), start, limit=2)) > 1


def visible_start(text: str) -> int:
    """Where ``text``'s first visible character starts: after any spaces and
    invisible format characters (a zero-width space, a BOM, a word joiner);
    ``len(text)`` when it has none."""
    index = 0
    while index < len(text) and (
        text[index].isspace() or unicodedata.category(text[index]) == "Cf"
    ):
        index += 1
    return index


def character_ends(text: str, start: int = 0, *, limit: int | None = None) -> list[int]:
    """The index after each character of ``text[start:]`` as a reader sees it: a
    simplified grapheme cluster (Unicode UAX #29), which keeps combining marks,
    variation selectors, emoji modifiers and tags with the character before
    them, a zero-width joiner with what it joins, a consonant after a virama
    with the consonant before it (a conjunct), and regional indicators in pairs
    (a flag). A partial cut between two of these showed a character the speaker
    did not say ("🇺" of "🇺🇸", "👍" of "👍🏽", "e" of a decomposed "é", "क्" of
    "क्ष"). With ``limit``, the first ``limit`` only.
    """
    ends: list[int] = []
    index = start
    while index < len(text) and (limit is None or len(ends) < limit):
        code = ord(text[index])
        index += 1
        if (
            _regional_indicator(code)
            and index < len(text)
            and _regional_indicator(ord(text[index]))
        ):
            index += 1  # the pair is one flag
        while index < len(text):
            following = text[index]
            if following == "\u200d" and index + 1 < len(text):
                index += 2  # the joiner and what it joins
            elif _extends(following) or _conjoins(text[index - 1], following):
                index += 1
            else:
                break
        ends.append(index)
    return ends


def _regional_indicator(code: int) -> bool:
    return 0x1F1E6 <= code <= 0x1F1FF


def _conjoins(before: str, character: str) -> bool:
    """Whether ``character`` continues a conjunct: a letter of the script of the
    virama ``before`` it (canonical combining class 9), as in "क्ष" (UAX #29
    GB9c, Unicode 15.1). GB9c names six Indic viramas; any virama is taken
    here, Khmer's coeng and Myanmar's stacker among them (CLDR joins those
    too): a cut this misses shows a dead consonant, while one it removes only
    leaves a partial a character shorter or longer. The virama's 128-code-point
    block stands for its script (each shares one with its consonants), so a
    Latin letter after a Devanagari virama stays a character of its own.
    """
    return (
        unicodedata.combining(before) == 9
        and ord(before) >> 7 == ord(character) >> 7
        and character.isalpha()
    )


def _extends(character: str) -> bool:
    """Whether ``character`` belongs to the character before it."""
    code = ord(character)
    return (
        unicodedata.category(character) in ("Mn", "Me", "Mc")
        or 0xFE00 <= code <= 0xFE0F  # variation selectors
        or 0x1F3FB <= code <= 0x1F3FF  # emoji skin tones
        or 0xE0020 <= code <= 0xE007F  # tags (subdivision flags)
        or 0xE0100 <= code <= 0xE01EF
        or code == 0x200D  # a joiner at the end
        or code in (0x0E33, 0x0EB3)  # Thai and Lao SARA AM (spacing marks)
        or 0x1160 <= code <= 0x11FF  # Hangul vowel and final jamo: one syllable
        or 0xD7B0 <= code <= 0xD7FB
    )


def character_start(text: str, index: int, start: int = 0) -> int:
    """The start of the character (see :func:`character_ends`) holding
    ``text[index]``, not before ``start``: where a cut near ``index`` may go,
    found by looking back a few code points, not by walking the text (a
    partial of a long text without spaces, at each partial)."""
    while index > start:
        if (
            _extends(text[index])
            or text[index - 1] == "\u200d"
            or _conjoins(text[index - 1], text[index])
        ):
            index -= 1
            continue
        if _regional_indicator(ord(text[index])):
            # In a run of indicators, pairs from its start make the flags.
            first = index
            while first > start and _regional_indicator(ord(text[first - 1])):
                first -= 1
            if (index - first) % 2:
                index -= 1
        break
    return index
