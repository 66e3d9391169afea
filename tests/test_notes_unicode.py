"""The derived note and after-visit summary in other scripts than English's.

A question is filed nowhere whatever script's question mark ends it, and a word
is the same word with or without its accents, in any script. End to end through
the real SDK, reading the artifacts back from the admin API; the rules one by one
sans-IO.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aws_sdk_connecthealth import models as m

from emulator.notes import TranscriptLine, after_visit_summary_document, clinical_document
from emulator.sdk import make_client
from emulator.server import RunningServer, Settings

from .support import (
    S3_URI,
    admin,
    audio_event,
    end_of_session_event,
    new_session_id,
    pcm_tone,
    run_session,
    running_emulator,
)

#: What a clinician asks, by the question mark that ends it: each is no finding.
QUESTIONS = {
    "ascii": "Can you come back next week for labs?",
    "spanish": "¿Puede volver la próxima semana para los análisis?",
    # English typed with a CJK input method: it reached the summary as advice.
    "full-width": "Can you come back next week for labs？",
    "chinese": "你头疼几天了？",
    "arabic": "هل تأخذ الدواء؟",
    "arabic-rtl-mark": "هل تأخذ الدواء؟\u200f",
    "urdu": "کیا آپ دوا لیتے ہیں؟",
    "greek-semicolon": "Πονάει το κεφάλι σας;",
    "greek-question-mark": "Πονάει το κεφάλι σας\u037e",
    "armenian": "Ցավու՞մ է",
    "armenian-full-stop": "Ցավու՞մ է։",
    "amharic": "ራስዎ ያምዎታል፧",
    "double-question-mark": "Did you take the labs⁇",
    "question-exclamation": "Did you take the labs⁈",
    "exclamation-question": "Did you take the labs⁉",
    "interrobang": "Did you take the labs‽",
    "reversed": "Did you take the labs⸮",
    "small": "Did you take the labs﹖",
    "ascii-then-exclamation": "Did you take the labs?!",
    "trailing-spaces": "Can you come back next week for labs？\u3000 ",
}
#: Statements that look like questions at a glance: each is filed as before.
STATEMENTS = {
    "quoted-question": 'My mother keeps asking "are you sick?"',
    "quoted-full-width": "母亲问我「你病了吗？」",
    "exclamation": "Come back next week for labs!",
    "english-semicolon": "Come back next week; we will do labs;",
    "armenian-answer": "Ցավու՞մ է։ Ոչ։",
}


def _settings(state: Path) -> Settings:
    return Settings(host="127.0.0.1", port=0, h2c_port=0, state_dir=state, post_stream_delay=0.0)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_emulator(_settings(tmp_path_factory.mktemp("notes-unicode"))) as running:
        yield running


def _configuration(template: m.NoteTemplateSettings) -> Any:
    """Two channels (0 the clinician, 1 the patient) and the note ``template``."""
    return m.MedicalScribeInputStreamConfigurationEvent(
        value=m.MedicalScribeConfigurationEvent(
            post_stream_action_settings=m.MedicalScribePostStreamActionSettings(
                output_s3_uri=S3_URI,
                clinical_note_generation_settings=m.ClinicalNoteGenerationSettings(
                    note_template_settings=template
                ),
            ),
            channel_definitions=[
                m.MedicalScribeChannelDefinition(channel_id=0, participant_role="CLINICIAN"),
                m.MedicalScribeChannelDefinition(channel_id=1, participant_role="PATIENT"),
            ],
        )
    )


def _visit(
    running: RunningServer, said: list[tuple[int, str]], template: m.NoteTemplateSettings
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Stream a visit whose scenario says ``said`` ((channel, content), 2 s apart);
    return its clinicalDoc.json and afterVisitSummary.json as the admin API reads them."""
    session_id = new_session_id()
    segments = [
        {"channel": channel, "begin": 2.0 * n + 0.1, "end": 2.0 * n + 1.5, "content": content}
        for n, (channel, content) in enumerate(said)
    ]
    rule = {"match": {"sessionId": session_id}, "scenario": {"segments": segments}}
    status, answer = admin(running.h2c_url, "POST", "/_emulator/rules", rule)
    assert status == 201, answer

    async def body() -> None:
        client = await make_client(endpoint_url=running.endpoint_url, ca_file=running.ca_file)
        try:
            audio = pcm_tone(2.0 * len(said), channels=2)
            events = [_configuration(template)]
            events += [audio_event(audio[i : i + 32000]) for i in range(0, len(audio), 32000)]
            events.append(end_of_session_event())
            result = await run_session(client, session_id, events=events)
            assert result.error is None, result.error
            assert [f.content for f in result.finals] == [content for _, content in said]
        finally:
            await client._config.transport.close()

    asyncio.run(body())
    documents = []
    for name in ("noteResult", "afterVisitSummaryResult"):
        path = f"/_emulator/sessions/{session_id}/artifacts/{name}"
        deadline = time.monotonic() + 30
        while (answer := admin(running.h2c_url, "GET", path))[0] != 200:
            assert answer[0] == 409 and time.monotonic() < deadline, answer
            time.sleep(0.05)
        documents.append(answer[1])
    return documents[0], documents[1]


def _filed(note: dict[str, Any]) -> dict[str, list[str]]:
    """Each section's summaries, as a reader of the note sees them."""
    return {
        section["SectionName"]: [item["SummarizedSegment"] for item in section["Summary"]]
        for section in note["ClinicalDocumentation"]["Sections"]
    }


MANAGED = m.NoteTemplateSettingsManagedTemplate(
    value=m.ManagedTemplate(template_type="HISTORY_AND_PHYSICAL")
)


def test_a_question_in_any_script_is_neither_a_finding_nor_advice(emulator):
    """ "هل تأخذ الدواء؟" was filed as the chief complaint, and "Can you come back
    next week for labs？" reached the after-visit summary as the clinician's advice;
    the patient's answer is filed, and the advice, where the question pointed."""
    said = [(0, question) for question in QUESTIONS.values()]
    said += [(1, "A headache for three days."), (0, "Rest, and come back next week for labs.")]
    note, summary = _visit(emulator, said, MANAGED)
    assert _filed(note) == {
        "CHIEF_COMPLAINT": [],
        "HISTORY_OF_PRESENT_ILLNESS": ["Patient reported: A headache for three days."],
        "REVIEW_OF_SYSTEMS": [],
        "PAST_MEDICAL_HISTORY": [],
        "PAST_FAMILY_HISTORY": [],
        "PAST_SOCIAL_HISTORY": [],
        "PHYSICAL_EXAMINATION": [],
        "DIAGNOSTIC_TESTING": [],
        "ASSESSMENT": [],
        "PLAN": ["Clinician stated: Rest, and come back next week for labs."],
    }
    assert [item["SummarizedSegment"] for item in summary["AfterVisitSummary"]["Summary"]] == [
        "Your clinician advised: Rest, and come back next week for labs."
    ]


def test_a_sentence_is_filed_in_the_same_section_with_or_without_its_accents(emulator):
    """Split at each accent ("revisión" into "revisi" and "n"), a sentence was filed
    by the fragment "n" it shared with "Evaluación", and "sintomas" missed the
    template's "síntomas": the same words went to three sections by their accents."""
    custom = m.NoteTemplateSettingsCustomTemplate(
        value=m.CustomTemplate(
            template_type="HISTORY_AND_PHYSICAL",
            template_instructions=[
                m.TemplateSectionInstruction(
                    section_header="MOTIVO", section_instruction="Motivo de consulta y síntomas"
                ),
                m.TemplateSectionInstruction(
                    section_header="EVALUACION", section_instruction="Evaluación clínica"
                ),
                m.TemplateSectionInstruction(
                    section_header="PLAN", section_instruction="Plan de tratamiento"
                ),
            ],
        )
    )
    said = [
        (0, "Plan de tratamiento: reposo."),
        (1, "Tengo síntomas desde ayer."),
        (0, "Plan de tratamiento: líquidos."),
        (1, "Tengo sintomas desde ayer."),
        (1, "Necesita una revisión mañana."),
        (1, "Necesita una revision manana."),
    ]
    note, _ = _visit(emulator, said, custom)
    assert _filed(note) == {
        "MOTIVO": [
            "Patient reported: Tengo síntomas desde ayer.",
            "Patient reported: Tengo sintomas desde ayer.",
            "Patient reported: Necesita una revisión mañana.",
            "Patient reported: Necesita una revision manana.",
        ],
        "EVALUACION": [],
        "PLAN": [
            "Clinician stated: Plan de tratamiento: reposo.",
            "Clinician stated: Plan de tratamiento: líquidos.",
        ],
    }


# --- The rules one by one, sans-IO -----------------------------------------------------------
def _lines(*said: tuple[str, str]) -> list[TranscriptLine]:
    channels = {"CLINICIAN": "ch_0", "PATIENT": "ch_1"}
    return [
        TranscriptLine(
            segment_id=f"s{n}",
            begin=float(n),
            end=n + 1.0,
            content=content,
            channel_id=channels[role],
            role=role,
        )
        for n, (role, content) in enumerate(said)
    ]


def _note(template: dict[str, Any], lines: list[TranscriptLine]) -> dict[str, list[str]]:
    """The derived note's sections, each with the segment ids filed under it."""
    configuration = {
        "postStreamActionSettings": {
            "outputS3Uri": S3_URI,
            "clinicalNoteGenerationSettings": {"noteTemplateSettings": template},
        }
    }
    document = clinical_document(
        configuration=configuration, lines=lines, script=None, session_id="s"
    )
    return {
        section["SectionName"]: [
            link["SegmentId"] for item in section["Summary"] for link in item["EvidenceLinks"]
        ]
        for section in document["ClinicalDocumentation"]["Sections"]
    }


DAP = {"managedTemplate": {"templateType": "DAP"}}


@pytest.mark.parametrize("question", list(QUESTIONS.values()), ids=list(QUESTIONS))
def test_a_question_places_its_answer_but_is_no_finding_in_any_script(question):
    """The question (sharing PLAN's "labs", or no cue word) is filed nowhere, nor
    given to the patient as advice; the answer after it is filed."""
    lines = _lines(
        ("CLINICIAN", "When the pain started, what did you take?"),
        ("PATIENT", "Paracetamol."),
        ("CLINICIAN", question),
        ("PATIENT", "Zebra quartz."),
    )
    filed = {segment for ids in _note(DAP, lines).values() for segment in ids}
    assert filed == {"s1", "s3"}
    summary = after_visit_summary_document(lines=lines, script=None, session_id="s")
    assert summary["AfterVisitSummary"]["Summary"] == []


@pytest.mark.parametrize("statement", list(STATEMENTS.values()), ids=list(STATEMENTS))
def test_a_statement_ending_in_a_quoted_question_or_no_question_mark_is_filed(statement):
    """A line that reports a question ('"... sick?"', '「...？」') asks none, as a
    line ending in '?"' was filed before; nor does an English ';' or a '!' ask."""
    filed = _note(DAP, _lines(("PATIENT", "A cough for a week."), ("PATIENT", statement)))
    assert "s1" in {segment for ids in filed.values() for segment in ids}


def _custom(*sections: tuple[str, str]) -> dict[str, Any]:
    return {
        "customTemplate": {
            "templateType": "HISTORY_AND_PHYSICAL",
            "templateInstructions": [
                {"sectionHeader": header, "sectionInstruction": instruction}
                for header, instruction in sections
            ],
        }
    }


@pytest.mark.parametrize(
    ("sections", "said"),
    [
        pytest.param(
            (("JIHUA", "复查 药物 休息"), ("ZHENGZHUANG", "头痛 发烧 咳嗽")),
            ("我头痛三天了。", "请多休息，下周复查。"),
            id="chinese",
        ),
        pytest.param(
            (("KHUTTA", "العلاج الدواء المتابعة"), ("AARAD", "الصداع الحمى السعال")),
            ("عندي الصداع منذ ثلاثة أيام.", "خذ الدواء مرتين يوميا."),
            id="arabic",
        ),
        pytest.param(
            (("PLAN", "дальнейшее лечение"), ("ZHALOBY", "ЖАЛОБЫ головная боль")),
            ("Жалобы на головную боль.", "Дальнейшее лечение дома."),
            id="cyrillic-case",
        ),
        pytest.param(
            (("PLAN", "follow up"), ("SYMPTOMS", "ｃｏｕｇｈ fever")),
            ("A cough since Monday.", "Follow up next week."),
            id="full-width-instruction",
        ),
    ],
)
def test_words_in_any_script_file_an_utterance_under_the_section_naming_them(sections, said):
    """Only [a-z0-9'] made a word: a Chinese, Arabic or Russian instruction named
    none, and every utterance went under the first section."""
    filed = _note(_custom(*sections), _lines(*(("PATIENT", text) for text in said)))
    assert filed == {sections[0][0]: ["s1"], sections[1][0]: ["s0"]}
