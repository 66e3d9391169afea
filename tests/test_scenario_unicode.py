"""Scenario text beyond ASCII: invisible characters, Indic conjuncts, YAML escapes,
and file names a Mac writes in NFD."""

from __future__ import annotations

import asyncio
import json
import unicodedata
from pathlib import Path

import pytest

from emulator.documents import load_scenario_dir
from emulator.graphemes import character_ends, character_start
from emulator.scenario import ScenarioError, Segment

from .support import admin, new_session_id, pcm_tone, run_check, run_session, running_emulator
from .test_stream_sdk import partials_of_each_final

REPO = Path(__file__).resolve().parent.parent

#: "visita-médica" as a user types it (NFC) and as macOS names the file (NFD).
NFC_NAME = "visita-m\u00e9dica"
NFD_NAME = "visita-me\u0301dica"


def write_scenario(directory: Path, name: str, segments: list[dict]) -> Path:
    path = directory / "scenarios" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"segments": segments}, ensure_ascii=False), encoding="utf-8")
    return path


def scripted(emulator, session_id: str, scenario: object) -> None:
    status, body = admin(
        emulator.h2c_url,
        "POST",
        "/_emulator/rules",
        {"match": {"sessionId": session_id}, "scenario": scenario},
    )
    assert status == 201, body


def visible(text: str) -> bool:
    return any(not (c.isspace() or unicodedata.category(c) == "Cf") for c in text)


# --------------------------------------------------------------------------- F8


async def test_partials_of_a_content_opening_with_zero_width_characters_show_words(
    client, emulator
):
    """Text pasted from a web page or a word processor opens with a ZWSP, a BOM or a
    word joiner: its partials were that character alone, results that showed
    nothing. Each partial now shows the first words, still a prefix of its final."""
    contents = ["\u200b Hola amigo m\u00edo", "\ufeff Bonjour tout le monde", "\u2060 x y"]
    each = await partials_of_each_final(client, emulator, contents)
    assert all(visible(partial) for partials in each for partial in partials), ascii(each)
    assert each[0][0] == "\u200b Hola"


def test_check_refuses_content_of_only_invisible_characters_as_it_does_empty_content(
    tmp_path: Path,
):
    """A content of only a zero-width space passed `check` and was sent as a final
    that showed nothing, while a content of spaces was refused as empty."""
    write_scenario(
        tmp_path,
        "blank.json",
        [
            {"begin": 0, "end": 1, "content": "\u200b", "partials": 1},
            {"begin": 1, "end": 2, "content": "\ufeff \u2060"},
            {"begin": 2, "end": 3, "content": "   "},
            {"begin": 3, "end": 4, "content": "\u200bvisible"},
        ],
    )
    result = run_check(tmp_path)
    assert result.returncode == 1
    where = tmp_path / "scenarios" / "blank.json"
    assert result.stdout.splitlines() == [
        f"{where}:1: segments[0].content: must not be empty: '\\u200b' holds only invisible "
        "characters (U+200B ZERO WIDTH SPACE) and spaces, so its result would show "
        "nothing: write the words, or remove the segment",
        f"{where}:1: segments[1].content: must not be empty: '\\ufeff \\u2060' holds only "
        "invisible characters (U+FEFF ZERO WIDTH NO-BREAK SPACE, U+2060 WORD JOINER) and "
        "spaces, so its result would show nothing: write the words, or remove the segment",
        f"{where}:1: segments[2].content: must not be empty",
    ]


def test_an_inline_scenario_of_only_invisible_content_is_refused_by_the_admin_api(emulator):
    """The rule is refused when it is added, not sent as an empty-looking final."""
    rule = {
        "match": {"sessionId": new_session_id()},
        "scenario": {"segments": [{"begin": 0, "end": 1, "content": "\u200b\u200b"}]},
    }
    status, body = admin(emulator.h2c_url, "POST", "/_emulator/rules", rule)
    assert status == 400
    assert "scenario.segments[0].content: must not be empty: '\\u200b\\u200b'" in body["message"]


def test_a_segment_built_in_code_refuses_invisible_content_like_empty_content():
    for content in ("", "  ", "\u200b", "\ufeff\n\u2060"):
        with pytest.raises(ValueError, match="content must not be empty or only invisible"):
            Segment(begin=0.0, end=1.0, content=content)
    assert Segment(begin=0.0, end=1.0, content="\u200bx").content == "\u200bx"


# --------------------------------------------------------------------------- F9

#: Devanagari conjuncts: KA + VIRAMA + SSA ("क्ष"), TA + VIRAMA + RA ("त्र").
DEVANAGARI = "\u0915\u094d\u0937\u0924\u094d\u0930\u093f\u092f\u0915\u094d\u0937\u092e\u093e"


async def test_one_word_indic_partials_never_end_on_a_virama(client, emulator):
    """A partial of "क्षत्रिय..." was "क्", half a conjunct: a dead consonant the
    speaker never said. A consonant after a virama stays with it (UAX #29 GB9c)."""
    session_id = new_session_id()
    segment = {"begin": 0.2, "end": 1.0, "content": DEVANAGARI, "partials": 12}
    scripted(emulator, session_id, {"segments": [segment]})
    result = await run_session(client, session_id, audio=pcm_tone(1.5))
    assert result.error is None, result.error
    partials = [p.content for p in result.partials]
    assert len(partials) == 12
    for partial in partials:
        assert unicodedata.combining(partial[-1]) != 9, ascii(partial)
        assert DEVANAGARI.startswith(partial) and partial != DEVANAGARI
    assert partials[0] == "\u0915\u094d\u0937"  # क्ष, the first character whole


@pytest.mark.parametrize(
    ("text", "characters"),
    [
        (DEVANAGARI, ["क्ष", "त्रि", "य", "क्ष", "मा"]),
        ("\u09a8\u09ae\u09b8\u09cd\u0995\u09be\u09b0", ["ন", "ম", "স্কা", "র"]),  # Bengali
        ("\u0915\u094d\u200d\u0937\u0915", ["क्\u200dष", "क"]),  # a joiner in the conjunct
        ("\u0915\u094dx", ["क्", "x"]),  # a Latin letter is not a Devanagari consonant
        ("\u179f\u17d2\u178f\u17d2\u179a\u17b8", ["ស្ត្រី"]),  # Khmer: coeng stacks
        ("e\u0301\U0001f1fa\U0001f1f8\u0915\u094d\u0937", ["e\u0301", "🇺🇸", "क्ष"]),
    ],
    ids=["devanagari", "bengali", "zwj", "latin-after-virama", "khmer", "mixed"],
)
def test_character_ends_and_character_start_agree_on_conjuncts(text, characters):
    """The partial cut (character_start, looking back) and the one-character test
    (character_ends, walking on) must see the same characters: from any index,
    the start found is the last character boundary at or before it."""
    ends = character_ends(text)
    assert [text[a:b] for a, b in zip([0, *ends], ends, strict=False)] == characters
    boundaries = [0, *ends]
    for index in range(len(text)):
        assert character_start(text, index) == max(b for b in boundaries if b <= index)


# --------------------------------------------------------------------------- F10


def test_a_yaml_surrogate_pair_escape_is_named_with_what_to_write_instead(tmp_path: Path):
    """`json.dumps` writes 😀 as "\\ud83d\\ude00", which JSON fixtures accept and
    YAML does not: the parser said only "found invalid Unicode character escape
    code". The problem names the escape and the YAML way to write it."""
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    (scenarios / "pair.yaml").write_text(
        'segments:\n  - {begin: 0.5, end: 2.0, content: "smile \\ud83d\\ude00 here"}\n'
    )
    (scenarios / "half.yaml").write_text(
        'description: x\nsegments:\n  - {begin: 0.5, end: 2.0, content: "\\udc00 lone"}\n'
    )
    result = run_check(tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{scenarios / 'half.yaml'}:3: invalid YAML: holds half of a UTF-16 surrogate pair "
        "(\\udc00), which YAML does not read: write the character itself, or its escape as "
        "\\U and eight hex digits",
        f"{scenarios / 'pair.yaml'}:2: invalid YAML: holds JSON's escape of U+1F600 as a "
        "UTF-16 surrogate pair (\\ud83d\\ude00), which YAML does not read: write the "
        "character itself, or \\U0001F600",
    ]
    fixed = 'segments:\n  - {begin: 0.5, end: 2.0, content: "smile \\U0001F600 here"}\n'
    (scenarios / "pair.yaml").write_text(fixed)
    (scenarios / "half.yaml").unlink()
    assert run_check(tmp_path).returncode == 0
    assert load_scenario_dir(tmp_path)["pair"].segments[0].content == "smile \U0001f600 here"


# --------------------------------------------------------------------------- F4


def test_a_scenario_file_named_in_nfd_is_named_in_nfc_by_rules_and_scenario(tmp_path: Path):
    """A fixtures folder copied from a Mac names "visita-médica.json" in NFD; the
    name a user types is NFC. The admin API refused it, suggesting "did you mean
    'visita-médica'?", a name that looks the same; --scenario refused it too."""
    from emulator.server import Settings

    fixtures = tmp_path / "fixtures"
    write_scenario(
        fixtures, f"{NFD_NAME}.json", [{"begin": 0.2, "end": 0.8, "content": "Buenos d\u00edas."}]
    )
    assert [p.stem for p in (fixtures / "scenarios").iterdir()] == [NFD_NAME]
    settings = Settings(
        host="127.0.0.1",
        port=0,
        h2c_port=0,
        state_dir=tmp_path / "state",
        fixtures=fixtures,
        scenario=NFC_NAME,
    )
    with running_emulator(settings) as run:
        status, listed = admin(run.h2c_url, "GET", "/_emulator/scenarios")
        assert (status, listed) == (200, {"scenarios": ["synthetic", NFC_NAME]})
        for typed in (NFC_NAME, NFD_NAME):
            rule = {"match": {"sessionId": new_session_id()}, "scenario": typed}
            status, body = admin(run.h2c_url, "POST", "/_emulator/rules", rule)
            assert status == 201, body

        async def stream() -> list[str]:
            from emulator.sdk import make_client

            client = await make_client(endpoint_url=run.endpoint_url, ca_file=run.ca_file)
            try:
                result = await run_session(client, new_session_id(), audio=pcm_tone(1.0))
            finally:
                await client._config.transport.close()  # type: ignore[attr-defined]
            assert result.error is None, result.error
            return [s.content for s in result.finals]

        # No rule matches this session: --scenario, typed in NFC, is what it replays.
        assert asyncio.run(stream()) == ["Buenos d\u00edas."]


def test_check_accepts_a_rule_naming_an_nfd_scenario_file_in_nfc(tmp_path: Path):
    write_scenario(tmp_path, f"{NFD_NAME}.yaml", [{"begin": 0, "end": 1, "content": "Hola."}])
    (tmp_path / "rules.yaml").write_text(f"- scenario: {NFC_NAME}\n", encoding="utf-8")
    result = run_check(tmp_path)
    # The name as it is keyed: in NFC.
    assert (result.returncode, result.stdout) == (0, f"OK: 1 scenario ({NFC_NAME}), 1 rule\n")


def test_two_scenario_files_whose_names_differ_only_in_normalisation_are_a_problem(
    tmp_path: Path,
):
    """Matched in NFC, both would be the same scenario: neither may silently win.
    The message shows the two names escaped, as on screen they look the same."""
    nfc = write_scenario(tmp_path, f"{NFC_NAME}.json", [{"begin": 0, "end": 1, "content": "a"}])
    nfd = write_scenario(tmp_path, f"{NFD_NAME}.yaml", [{"begin": 0, "end": 1, "content": "b"}])
    with pytest.raises(ScenarioError) as info:
        load_scenario_dir(tmp_path)
    (problem,) = info.value.problems
    first, second = sorted([nfc, nfd])  # the directory is read in sorted order
    assert problem.file == str(second)
    assert problem.message == (
        f"duplicate scenario name {NFC_NAME!r}: also defined by {first} (the file names "
        f"{ascii(second.name)} and {ascii(first.name)} differ only in Unicode "
        "normalisation, and a scenario name is matched in NFC: remove or rename one)"
    )
    result = run_check(tmp_path)
    assert result.returncode == 1 and "differ only in Unicode normalisation" in result.stdout


def test_a_default_scenario_typed_in_nfd_names_the_file_too(tmp_path: Path):
    """--scenario pasted from a Mac's ls (NFD) names the same file as typed in NFC."""
    from emulator.backend import Backend

    fixtures = tmp_path / "fixtures"
    write_scenario(fixtures, f"{NFD_NAME}.json", [{"begin": 0.2, "end": 0.8, "content": "Hola."}])
    backend = Backend(
        scenarios=load_scenario_dir(fixtures),
        state_dir=tmp_path / "state",
        default_scenario=NFD_NAME,
    )
    try:
        assert backend.default_scenario == NFC_NAME
    finally:
        backend.close()
