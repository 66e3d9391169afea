"""The post-stream documents: transcript, clinical note and after-visit summary.

Sans-IO and deterministic: built from the session's final transcript segments,
its configuration (template type, custom sections, channel roles) and the
scenario's :class:`~emulator.notescript.PostStreamScript` when it scripts them.
Shapes follow HealthScribe's output files (``Conversation``,
``ClinicalDocumentation``), with every summary linked to the transcript
segments it rests on by ``EvidenceLinks``.

A derived note files each utterance under the template section whose cue words
it shares most; an utterance sharing none follows the one before it (an answer
stays with its question). Words are compared in any script, without case or
accents; a question, by whichever script's question mark, is filed nowhere.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .logs import get_logger
from .notescript import PostStreamScript, Summary
from .session import segment_id

log = get_logger("medscribe.sessions")

__all__ = [
    "TranscriptLine",
    "TEMPLATE_SECTIONS",
    "final_lines",
    "note_sections",
    "transcript_document",
    "clinical_document",
    "after_visit_summary_document",
]

#: Sections of each managed template, in document order.
TEMPLATE_SECTIONS: Mapping[str, tuple[str, ...]] = {
    "HISTORY_AND_PHYSICAL": (
        "CHIEF_COMPLAINT",
        "HISTORY_OF_PRESENT_ILLNESS",
        "REVIEW_OF_SYSTEMS",
        "PAST_MEDICAL_HISTORY",
        "PAST_FAMILY_HISTORY",
        "PAST_SOCIAL_HISTORY",
        "PHYSICAL_EXAMINATION",
        "DIAGNOSTIC_TESTING",
        "ASSESSMENT",
        "PLAN",
    ),
    "PHYSICAL_SOAP": ("SUBJECTIVE", "OBJECTIVE", "ASSESSMENT", "PLAN"),
    "BEHAVIORAL_SOAP": ("SUBJECTIVE", "OBJECTIVE", "ASSESSMENT", "PLAN"),
    "DAP": ("DATA", "ASSESSMENT", "PLAN"),
    "GIRPP": ("GOALS", "INTERVENTION", "RESPONSE", "PROGRESS", "PLAN"),
    "BIRP": ("BEHAVIOR", "INTERVENTION", "RESPONSE", "PLAN"),
    "SIRP": ("SITUATION", "INTERVENTION", "RESPONSE", "PLAN"),
}

_HISTORY = "days week weeks months started since began worse worsening getting pain hurts ache"
_SYMPTOMS = "fever chills nausea cough dizzy headache breath vomiting rash tired fatigue sleep"
_EXAM = "exam examine listen lungs heart blood pressure temperature pulse looks feel swelling"
_PLAN = (
    "prescribe prescription follow schedule order refer referral recommend come back take "
    "labs test tests start continue appointment rest fluids call plan next"
)
_CUES: Mapping[str, str] = {
    "CHIEF_COMPLAINT": "brings bring complaint problem issue came visit",
    "HISTORY_OF_PRESENT_ILLNESS": _HISTORY,
    "REVIEW_OF_SYSTEMS": _SYMPTOMS,
    "PAST_MEDICAL_HISTORY": "history medication medications allergies allergic surgery diabetes",
    "PAST_FAMILY_HISTORY": "family mother father sister brother parents genetic",
    "PAST_SOCIAL_HISTORY": "smoke smoking alcohol drink drinking exercise job work diet",
    "PHYSICAL_EXAMINATION": _EXAM,
    "DIAGNOSTIC_TESTING": "results xray scan labs bloodwork ekg imaging",
    "ASSESSMENT": "think likely diagnosis probably seems consistent viral infection",
    "PLAN": _PLAN,
    "SUBJECTIVE": f"brings {_HISTORY} {_SYMPTOMS} feel feeling",
    "OBJECTIVE": _EXAM,
    "DATA": f"brings {_HISTORY} {_SYMPTOMS} {_EXAM}",
    "GOALS": "goal goals want hope hoping trying like",
    "INTERVENTION": "try practice technique exercise discussed suggest work together",
    "RESPONSE": "helps helped helpful okay agree understand works",
    "PROGRESS": "better improved improving progress last since",
    "BEHAVIOR": "mood anxious anxiety stress sad angry behavior sleep feel feeling",
    "SITUATION": "situation happened home family work since started",
}
_STOPWORDS = frozenset(
    "a an and are as at be but by do does for from had has have i if in is it its me my "
    "no not of on or so that the this to was we were what when with you your".split()
)
#: Han ideographs and hiragana: a word each, as Lucene's StandardTokenizer (UAX #29)
#: makes them, since Chinese and Japanese put no space between words.
_IDEOGRAPHIC = re.compile("[\u3040-\u309f\u3400-\u4dbf\u4e00-\u9fff\U00020000-\U0003ffff]")
#: The combining accents NFKD splits off Latin, Greek and Cyrillic letters.
_ACCENTS = re.compile("[\u0300-\u036f]+")
_ROLE_TEXT = {"PATIENT": "Patient reported", "CLINICIAN": "Clinician stated"}
#: At most this many segments back a summary whose evidence is inferred.
_MAX_INFERRED_LINKS = 3


@dataclass(frozen=True, kw_only=True, slots=True)
class TranscriptLine:
    """One final transcript segment, with the role of the participant on its channel."""

    segment_id: str
    begin: float
    end: float
    content: str
    channel_id: str | None = None
    role: str | None = None


#: The journal directions of transcript results an artifact is built from.
_RESULTS = frozenset({"out", "unsent"})


def final_lines(
    entries: Iterable[Mapping[str, Any]], *, roles: Mapping[str, str] | None = None
) -> list[TranscriptLine]:
    """Return the final segments among journal ``entries``, in time order (by their
    begin; a turn said inside another's is sent after it, when it ends first).

    ``roles`` maps a channel label (``ch_0``) to its participant role.
    """
    lines = []
    for entry in entries:
        # ``unsent``: made but held by a chaos pause when the stream of a session
        # that is over closed; the service's artifacts are of the audio.
        if entry.get("direction") not in _RESULTS or entry.get("type") != "transcriptEvent":
            continue
        segment = entry.get("transcriptSegment") or {}
        if segment.get("isPartial", True):
            continue
        channel = segment.get("channelId")
        lines.append(
            TranscriptLine(
                segment_id=segment["segmentId"],
                begin=segment["audioBeginOffset"],
                end=segment["audioEndOffset"],
                content=segment["content"],
                channel_id=channel,
                role=(roles or {}).get(channel) if channel else None,
            )
        )
    # A segment sent twice (a stream replayed from its start after a crash) is one
    # line: its latest final.
    latest = {line.segment_id: line for line in lines}
    if len(latest) < len(lines):
        lines = list(latest.values())
    lines.sort(key=_begin)  # stable: sent order among equal begins
    return lines


def _begin(line: TranscriptLine) -> float:
    return line.begin


def note_sections(configuration: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Return ``(section header, cue words)`` of the configuration's note template."""
    templates = configuration["postStreamActionSettings"]["clinicalNoteGenerationSettings"][
        "noteTemplateSettings"
    ]
    custom = templates.get("customTemplate")
    if custom is not None:
        return [
            (
                item["sectionHeader"],
                f"{item['sectionHeader'].replace('_', ' ')} {item['sectionInstruction']}",
            )
            for item in custom["templateInstructions"]
        ]
    names = TEMPLATE_SECTIONS[templates["managedTemplate"]["templateType"]]
    return [(name, _CUES.get(name, name.replace("_", " "))) for name in names]


def transcript_document(
    *, ids: Mapping[str, str], language_code: str, lines: Sequence[TranscriptLine]
) -> dict[str, Any]:
    """Return transcript.json: the final segments with offsets, channel and role.

    ``ids`` holds ``SessionId``, ``DomainId`` and ``SubscriptionId``.
    """
    segments = []
    for line in lines:
        segment: dict[str, Any] = {
            "SegmentId": line.segment_id,
            "BeginAudioTime": line.begin,
            "EndAudioTime": line.end,
            "Content": line.content,
        }
        if line.channel_id is not None:
            segment["ChannelId"] = line.channel_id
        if line.role is not None:
            segment["ParticipantDetails"] = {"ParticipantRole": line.role}
        segments.append(segment)
    return {"Conversation": {**ids, "LanguageCode": language_code, "TranscriptSegments": segments}}


def clinical_document(
    *,
    configuration: Mapping[str, Any],
    lines: Sequence[TranscriptLine],
    script: PostStreamScript | None,
    session_id: str,
) -> dict[str, Any]:
    """Return clinicalDoc.json: the note's sections, each summary with its evidence."""
    templates = configuration["postStreamActionSettings"]["clinicalNoteGenerationSettings"][
        "noteTemplateSettings"
    ]
    kind = "customTemplate" if templates.get("customTemplate") is not None else "managedTemplate"
    template = note_sections(configuration)
    if script is not None and script.note is not None and lines:
        # The requested template's sections, in its order, as the service writes
        # them: a scripted section gives its summaries, the others are derived
        # from the transcript, and a scripted section the template lacks is left out.
        # A header the template repeats gets them once, in its first section.
        scripted = dict(script.note)
        first: dict[str, int] = {}
        for index, (name, _) in enumerate(template):
            first.setdefault(name, index)
        derived = iter(_derive([t for t in template if t[0] not in scripted], lines))
        sections = [
            (
                name,
                [_scripted(s, lines, session_id) for s in scripted[name]]
                if first[name] == index
                else [],
            )
            if name in scripted
            else next(derived)
            for index, (name, _) in enumerate(template)
        ]
        names = {name for name, _ in template}
        left_out = [header for header, _ in script.note if header not in names]
        if left_out:
            log.warning(
                "session %s: the scenario's note scripts %s, which the requested %s "
                "template has no section for; left out of clinicalDoc.json",
                session_id,
                ", ".join(left_out),
                templates[kind]["templateType"],
            )
    else:
        sections = _derive(template, lines)
    return {
        "ClinicalDocumentation": {
            "TemplateType": templates[kind]["templateType"],
            "Sections": [{"SectionName": name, "Summary": items} for name, items in sections],
        }
    }


def after_visit_summary_document(
    *, lines: Sequence[TranscriptLine], script: PostStreamScript | None, session_id: str
) -> dict[str, Any]:
    """Return afterVisitSummary.json: what the patient takes home, with its evidence.

    A session that transcribed nothing has nothing to summarise, scripted or not.
    """
    if script is not None and script.after_visit_summary is not None and lines:
        items = [_scripted(s, lines, session_id) for s in script.after_visit_summary]
    else:
        plan = _words(_PLAN)
        chosen = [
            line
            for line in lines
            if line.role != "PATIENT"
            # Without channel definitions no line has a role: one that reads as a
            # speaker's report of themself ("I take amlodipine...") is the patient's.
            and not (line.role is None and _speaks_of_self(line.content))
            and not _is_question(line.content)
            and _words(line.content) & plan
        ]
        items = [
            {
                "SummarizedSegment": (
                    f"Your clinician advised: {line.content}"
                    if line.role == "CLINICIAN"
                    else f"Discussed at the visit: {line.content}"
                ),
                "EvidenceLinks": [{"SegmentId": line.segment_id}],
            }
            for line in chosen
        ]
    return {"AfterVisitSummary": {"Summary": items}}


#: How a speaker's account of themself opens ("I take", "Yes, I have", "My mother").
_SELF = re.compile(r"^(?:(?:yes|no|well|okay|so|um)\b[,.]?\s+)?(?:i|my|me)\b", re.IGNORECASE)
#: What a clinician's first-person advice says early on ("I recommend", "My plan").
_ADVISING = re.compile(
    r"\b(?:recommend\w*|suggest\w*|prescrib\w*|advis\w*|want you|like you|plan|order\w*|"
    r"refer\w*|think|will|going to)\b|'ll\b|'d like",
    re.IGNORECASE,
)


def _speaks_of_self(text: str) -> bool:
    """Whether ``text`` opens as a first-person account of the speaker's own state or
    doings, not a clinician's first-person advice ("I recommend...", "My plan...")."""
    opening = text.lstrip().replace("\u2019", "'")
    if not _SELF.match(opening):
        return False
    first_words = " ".join(opening.split()[:6])
    return not _ADVISING.search(first_words)


#: Every mark Unicode names a question mark that ends a question: Latin '?', Greek
#: U+037E, Arabic and Urdu '؟', Ethiopic '፧', Limbu, Old Nubian, Vai, Bamum, Chakma,
#: '‽', '⁇', '⁈', '⁉', '⸮', the medieval one, and the vertical, small and full-width
#: forms ('？' as CJK input methods type it). Not the inverted '¿' that opens a
#: Spanish question (its end is a '?'), nor Armenian '՞' (below).
_QUESTION_MARKS = frozenset(
    "?\u037e\u061f\u1367\u1945\u203d\u2047\u2048\u2049\u2cfa\u2cfb\u2e2e\u2e54"
    "\ua60f\ua6f7\ufe16\ufe56\uff1f\U00011143"
)
#: Exclamation marks after a question mark still end a question ("Why?!", as '⁈').
_EXCLAMATION_MARKS = "!\u055c\u203c\ufe15\ufe57\uff01"
#: Greek keyboards type the question mark as ';', and NFC turns U+037E into one.
_GREEK_QUESTION = re.compile("[\u0370-\u03ff\u1f00-\u1fff][\u0300-\u036f]*;$")
#: Armenian marks a question on its stressed word ("Ցավու՞մ է"): one in the last
#: sentence (after the last '։', or ':' typed for it) makes the line a question.
_ARMENIAN_QUESTION = re.compile("\u055e[^.!?:\u0589\u055c]*[.:\u0589]?$")


def _is_question(text: str) -> bool:
    """Whether a final is a question: it ends with a question mark, in any script.

    Trailing spaces and invisible format characters (a right-to-left mark after
    Arabic) are looked past; a closing quote or bracket is not, as it was not after
    '?' (a line ending in a quoted question reports the question, it asks none).
    """
    end = len(text)
    while end and (text[end - 1].isspace() or unicodedata.category(text[end - 1]) == "Cf"):
        end -= 1
    text = text[:end]
    asked = text.rstrip(_EXCLAMATION_MARKS)
    return bool(
        (asked and asked[-1] in _QUESTION_MARKS)
        or _GREEK_QUESTION.search(text)
        or _ARMENIAN_QUESTION.search(text)
    )


@functools.lru_cache(maxsize=4096)
def _words(text: str) -> frozenset[str]:
    """The words of ``text`` a cue can share, in any script: without case, accents
    (a line that writes "revision" files as one that writes "revisión") or
    compatibility forms (full-width "ｌａｂｓ" is "labs"), English stopwords left out.

    Letters, digits, apostrophes and combining marks make a word, so plain English
    splits as before (on anything but ``[a-z0-9']``), and Devanagari or Arabic
    words keep their vowel signs.
    """
    # Cached: each final is matched against the note's sections and the
    # summary's plan words, and a scripted scenario's sessions all say the same.
    folded = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", text).casefold())
    folded = unicodedata.normalize("NFC", _ACCENTS.sub("", folded))
    words = "".join(map(_spaced, folded)).split()
    return frozenset(w for w in words if w not in _STOPWORDS)


def _spaced(char: str) -> str:
    """``char`` as part of a word, alone as a word, or a space between words."""
    if _IDEOGRAPHIC.match(char):
        return f" {char} "
    if char.isalnum() or char == "'" or unicodedata.category(char).startswith("M"):
        return char
    return " "


def _derive(
    sections: Sequence[tuple[str, str]], lines: Sequence[TranscriptLine]
) -> list[tuple[str, list[dict[str, Any]]]]:
    cues = [_words(words) for _, words in sections]
    # By the section's place: a custom template may repeat a header, and filed by
    # name each utterance went under every repeat of it.
    filed: list[list[dict[str, Any]]] = [[] for _ in sections]
    if not sections:
        return []
    # A line sharing no cue word goes where the one before it went; before any
    # did, under the first section (they were dropped: a transcript whose
    # words no cue names gave an empty note).
    previous = 0
    for line in lines:
        words = _words(line.content)
        # Most shared cue words wins; the earlier section breaks ties.
        score, negative = max((len(words & cue), -i) for i, cue in enumerate(cues))
        section = -negative if score > 0 else previous
        previous = section
        if _is_question(line.content):
            # A question says where its answer goes; it is no finding itself
            # ("What brings you in?" is not the chief complaint).
            continue
        lead = _ROLE_TEXT.get(line.role or "")
        text = f"{lead}: {line.content}" if lead else line.content
        filed[section].append(
            {"SummarizedSegment": text, "EvidenceLinks": [{"SegmentId": line.segment_id}]}
        )
    return [(name, filed[index]) for index, (name, _) in enumerate(sections)]


def _scripted(summary: Summary, lines: Sequence[TranscriptLine], session_id: str) -> dict[str, Any]:
    """Link a scripted summary to the transcribed segments it names, or shares words with."""
    if summary.segments is not None:
        transcribed = {line.segment_id for line in lines}
        wanted = [segment_id(session_id, index) for index in summary.segments]
        links = [sid for sid in wanted if sid in transcribed]
    else:
        words = _words(summary.text)
        scored = [(len(words & _words(line.content)), n) for n, line in enumerate(lines)]
        best = sorted((s for s in scored if s[0] > 0), key=lambda s: (-s[0], s[1]))
        links = [
            lines[n].segment_id for _, n in sorted(best[:_MAX_INFERRED_LINKS], key=lambda s: s[1])
        ]
    return {"SummarizedSegment": summary.text, "EvidenceLinks": [{"SegmentId": s} for s in links]}
