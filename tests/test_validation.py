"""Request validation exactly as the service model constrains StartMedicalScribeListeningSession.

Each bad case asserts the whole violation text: the echoed value (or its absence), the wire
location and the rule, in the AWS form
``Value '<v>' at '<location>' failed to satisfy constraint: <rule>``.
"""

from __future__ import annotations

import base64
import copy
import datetime
import json
import re
import sys
import unicodedata
from dataclasses import FrozenInstanceError
from typing import Any, NamedTuple

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from emulator import validation
from emulator.errors import ValidationException
from emulator.shapes import TextShape
from emulator.validation import (
    HEADER_NAMES,
    PATH_PARAMETER_NAMES,
    ChannelDefinition,
    Configuration,
    StreamRequest,
    audio_event_base64,
    parse_audio_event,
    parse_configuration_event,
    parse_session_control_event,
    validate_ids,
    validate_stream_headers,
)

SESSION_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"
DOMAIN_ID = "dom-0123456789abcdefghi"  # 23 characters
SUBSCRIPTION_ID = "sub-A1b2C3d4E5f6G7h8I9j0K"  # 25 characters
VALID_MEMBERS = {
    "sessionId": SESSION_ID,
    "domainId": DOMAIN_ID,
    "subscriptionId": SUBSCRIPTION_ID,
    "languageCode": "en-US",
    "mediaSampleRateHertz": "16000",
    "mediaEncoding": "pcm",
}
SESSION_ID_PATTERN = (
    ".*[a-fA-F0-9]{8}-[a-fA-F0-9]{4}-[a-fA-F0-9]{4}-[a-fA-F0-9]{4}-[a-fA-F0-9]{12}.*"
)
S3_PATTERN = r"s3://[a-z0-9][\.\-a-z0-9]{1,61}[a-z0-9](/.*)?"
MARKDOWN_PATTERN = r"""[\p{L}\p{N}\s\*_\-#\[\]\(\)\.,:;!?'"`<>~/|+=&%@\\{}^]+"""
ISO_DATE_PATTERN = r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
MANAGED_TEMPLATES = (
    "HISTORY_AND_PHYSICAL",
    "GIRPP",
    "DAP",
    "SIRP",
    "BIRP",
    "BEHAVIORAL_SOAP",
    "PHYSICAL_SOAP",
)


def raw_headers(**members: str | None) -> list[tuple[bytes, bytes]]:
    """ASGI raw headers of a valid request, with ``members`` replaced (None: left out)."""
    values = {**VALID_MEMBERS, **members}
    headers = [(b"content-type", b"application/vnd.amazon.eventstream")]
    for member, header in HEADER_NAMES.items():
        value = values[member]
        if value is not None:
            headers.append((header.encode(), value.encode("utf-8")))
    return headers


def violation(shown: str | None, location: str, rule: str, *, member: str | None = None) -> str:
    """One AWS-style violation; ``shown`` is the echoed value text, None for no value.

    ``member``: the model member, named after a header location.
    """
    value = "Value" if shown is None else f"Value {shown}"
    where = f"'{location}'" if member is None else f"'{location}' ({member})"
    return f"{value} at {where} failed to satisfy constraint: {rule}"


def header_violation(shown: str, member: str, rule: str) -> str:
    return violation(shown, HEADER_NAMES[member], rule, member=member)


def error_message(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(ValidationException) as caught:
        call(*args, **kwargs)
    assert caught.value.status == 400
    return caught.value.message


# --- Headers ----------------------------------------------------------------------------
class HeaderCase(NamedTuple):
    member: str
    value: str | None  # None: the header is not sent
    rule: str


NULL = "Member must not be null"
HEADER_CASES = {
    "session-id-missing": HeaderCase("sessionId", None, NULL),
    "session-id-too-short": HeaderCase(
        "sessionId", SESSION_ID[:-1], "Member must have length greater than or equal to 36"
    ),
    "session-id-too-long": HeaderCase(
        "sessionId", SESSION_ID + "0", "Member must have length less than or equal to 36"
    ),
    "session-id-pattern": HeaderCase(
        "sessionId",
        "z" * 36,
        f"Member must satisfy regular expression pattern: {SESSION_ID_PATTERN}",
    ),
    "domain-id-missing": HeaderCase("domainId", None, NULL),
    "domain-id-too-short": HeaderCase(
        "domainId", "dom-abc", "Member must have length greater than or equal to 20"
    ),
    "domain-id-too-long": HeaderCase(
        "domainId", "dom-" + "a" * 22, "Member must have length less than or equal to 25"
    ),
    "domain-id-pattern-prefix": HeaderCase(
        "domainId",
        "xyz-" + "a" * 17,
        "Member must satisfy regular expression pattern: (hai-|dom-)[a-z0-9]+",
    ),
    "domain-id-pattern-uppercase": HeaderCase(
        "domainId",
        "hai-ABCDEFGHIJKLMNOPQ",
        "Member must satisfy regular expression pattern: (hai-|dom-)[a-z0-9]+",
    ),
    "subscription-id-missing": HeaderCase("subscriptionId", None, NULL),
    "subscription-id-too-short": HeaderCase(
        "subscriptionId",
        SUBSCRIPTION_ID[:-1],
        "Member must have length greater than or equal to 25",
    ),
    "subscription-id-too-long": HeaderCase(
        "subscriptionId", SUBSCRIPTION_ID + "x", "Member must have length less than or equal to 25"
    ),
    "subscription-id-pattern": HeaderCase(
        "subscriptionId",
        "sub_" + SUBSCRIPTION_ID[4:],
        "Member must satisfy regular expression pattern: sub-[a-zA-Z0-9]{21}",
    ),
    "language-code-missing": HeaderCase("languageCode", None, NULL),
    "language-code-enum": HeaderCase(
        "languageCode", "en-GB", "Member must satisfy enum value set: [en-US, multi]"
    ),
    "language-code-enum-is-case-sensitive": HeaderCase(
        "languageCode", "EN-US", "Member must satisfy enum value set: [en-US, multi]"
    ),
    "sample-rate-missing": HeaderCase("mediaSampleRateHertz", None, NULL),
    "sample-rate-below-range": HeaderCase(
        "mediaSampleRateHertz", "7999", "Member must have value greater than or equal to 8000"
    ),
    "sample-rate-above-range": HeaderCase(
        "mediaSampleRateHertz", "48001", "Member must have value less than or equal to 48000"
    ),
    "sample-rate-non-integer": HeaderCase(
        "mediaSampleRateHertz", "16k", "Member must be an integer"
    ),
    "sample-rate-decimal": HeaderCase(
        "mediaSampleRateHertz", "16000.0", "Member must be an integer"
    ),
    "sample-rate-non-ascii-digits": HeaderCase(
        "mediaSampleRateHertz", "١٦٠٠٠", "Member must be an integer"
    ),
    "sample-rate-empty": HeaderCase("mediaSampleRateHertz", "", "Member must be an integer"),
    "media-encoding-missing": HeaderCase("mediaEncoding", None, NULL),
    "media-encoding-enum": HeaderCase(
        "mediaEncoding", "wav", "Member must satisfy enum value set: [pcm, flac]"
    ),
    "media-encoding-enum-is-case-sensitive": HeaderCase(
        "mediaEncoding", "PCM", "Member must satisfy enum value set: [pcm, flac]"
    ),
}


@pytest.mark.parametrize("case", HEADER_CASES.values(), ids=HEADER_CASES.keys())
def test_header_violation_names_header_member_and_rule(case: HeaderCase) -> None:
    headers = raw_headers(**{case.member: case.value})
    message = error_message(validate_stream_headers, headers)
    # Header values reach us as bytes; they are quoted as the UTF-8 the SDK sends.
    shown = "null" if case.value is None else f"'{case.value}'"
    assert header_violation(shown, case.member, case.rule) in message


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("9" * 5000, "Member must have value less than or equal to 48000"),
        ("-" + "9" * 5000, "Member must have value greater than or equal to 8000"),
        ("0" * 40 + "16000", None),
        ("0" * 5000 + "16000", None),
    ],
    ids=["huge", "huge-negative", "leading-zeros", "thousands-of-leading-zeros"],
)
def test_a_sample_rate_of_thousands_of_digits_is_out_of_range_not_a_crash(value, rule) -> None:
    """int() refuses text over 4,300 digits; the header is still judged and echoed cut short."""
    headers = raw_headers(mediaSampleRateHertz=value)
    if rule is None:
        assert validate_stream_headers(headers).sample_rate == 16000
        return
    message = error_message(validate_stream_headers, headers)
    assert "'x-amzn-medscribe-sample-rate' (mediaSampleRateHertz)" in message
    assert message.endswith(rule)
    assert len(message) < 2300


def test_missing_header_message_is_exactly_the_aws_form() -> None:
    message = error_message(validate_stream_headers, raw_headers(sessionId="abc"))
    assert message == (
        "2 validation errors detected: "
        "Value 'abc' at 'x-amzn-medscribe-session-id' (sessionId) failed to satisfy "
        "constraint: Member must have length greater than or equal to 36; "
        "Value 'abc' at 'x-amzn-medscribe-session-id' (sessionId) failed to satisfy "
        f"constraint: Member must satisfy regular expression pattern: {SESSION_ID_PATTERN}"
    )


def test_all_header_violations_are_reported_together_in_member_order() -> None:
    headers = raw_headers(domainId=None, mediaSampleRateHertz="fast", mediaEncoding="mp3")
    message = error_message(validate_stream_headers, headers)
    assert message.startswith("3 validation errors detected: ")
    assert message.split(": ", 1)[1].split("; ") == [
        header_violation("null", "domainId", NULL),
        header_violation(
            "'fast'",
            "mediaSampleRateHertz",
            "Member must be an integer",
        ),
        header_violation(
            "'mp3'",
            "mediaEncoding",
            "Member must satisfy enum value set: [pcm, flac]",
        ),
    ]


def test_valid_headers_give_a_stream_request_with_an_integer_sample_rate() -> None:
    assert validate_stream_headers(raw_headers()) == StreamRequest(
        session_id=SESSION_ID,
        domain_id=DOMAIN_ID,
        subscription_id=SUBSCRIPTION_ID,
        language_code="en-US",
        sample_rate=16000,
        media_encoding="pcm",
    )


def test_header_names_match_in_any_case_and_a_repeated_header_is_joined() -> None:
    """HTTP/1.1 names may come capitalised; other headers, even x-amzn-medscribe-
    look-alikes, are passed over; a header sent twice reads as its values joined."""
    headers = [
        (name.title() if name.endswith(b"code") else name, value)
        for name, value in raw_headers()
        if name != b"x-amzn-medscribe-media-encoding"
    ]
    headers += [
        (b"X-Amzn-Medscribe", b"pcm"),
        (b"x-amzn-medscribe-media-encodings", b"flac"),
        (b"x-amzn-medscribe-media-encoding", b"pcm"),
    ]
    assert validate_stream_headers(headers).language_code == "en-US"
    assert validate_stream_headers(headers).media_encoding == "pcm"
    twice = headers + [(b"X-AMZN-MEDSCRIBE-MEDIA-ENCODING", b"flac")]
    message = error_message(validate_stream_headers, twice)
    assert message == "1 validation error detected: " + header_violation(
        "'pcm, flac'", "mediaEncoding", "Member must satisfy enum value set: [pcm, flac]"
    )


@pytest.mark.parametrize(
    "members",
    [
        {"sessionId": SESSION_ID.upper()},
        {"domainId": "hai-" + "0" * 16},  # 20: shortest
        {"domainId": "dom-" + "z9" * 10 + "a"},  # 25: longest
        {"languageCode": "multi"},
        {"mediaSampleRateHertz": "8000"},
        {"mediaSampleRateHertz": "48000"},
        {"mediaEncoding": "flac"},
    ],
    ids=["uppercase-uuid", "domain-20", "domain-25", "multi", "rate-8000", "rate-48000", "flac"],
)
def test_boundary_and_enum_values_are_accepted(members: dict[str, str]) -> None:
    request = validate_stream_headers(raw_headers(**members))
    assert isinstance(request, StreamRequest)


def test_session_id_pattern_allows_text_around_the_uuid_but_length_stays_36() -> None:
    """The pattern is .*UUID.*; text around the UUID breaks only the fixed length."""
    for session_id in ("x" + SESSION_ID, SESSION_ID + "-tail", "session:" + SESSION_ID):
        message = error_message(validate_stream_headers, raw_headers(sessionId=session_id))
        assert message == "1 validation error detected: " + header_violation(
            f"'{session_id}'",
            "sessionId",
            "Member must have length less than or equal to 36",
        )


def test_header_names_are_case_insensitive() -> None:
    mixed = [(name.upper(), value) for name, value in raw_headers()]
    assert validate_stream_headers(mixed) == validate_stream_headers(raw_headers())


def test_headers_may_be_a_mapping_or_str_pairs() -> None:
    text = {name.decode().title(): value.decode() for name, value in raw_headers()}
    assert validate_stream_headers(text) == validate_stream_headers(raw_headers())
    assert validate_stream_headers(list(text.items())) == validate_stream_headers(raw_headers())


def test_a_header_sent_twice_is_read_as_its_joined_values() -> None:
    headers = [*raw_headers(), (b"x-amzn-medscribe-media-encoding", b"flac")]
    message = error_message(validate_stream_headers, headers)
    assert (
        header_violation(
            "'pcm, flac'",
            "mediaEncoding",
            "Member must satisfy enum value set: [pcm, flac]",
        )
        in message
    )


def test_response_headers_echo_the_six_headers_with_canonical_values() -> None:
    request = validate_stream_headers(raw_headers(mediaSampleRateHertz=" +016000 "))
    assert request.response_headers() == [
        (b"x-amzn-medscribe-session-id", SESSION_ID.encode()),
        (b"x-amzn-medscribe-domain-id", DOMAIN_ID.encode()),
        (b"x-amzn-medscribe-subscription-id", SUBSCRIPTION_ID.encode()),
        (b"x-amzn-medscribe-language-code", b"en-US"),
        (b"x-amzn-medscribe-sample-rate", b"16000"),
        (b"x-amzn-medscribe-media-encoding", b"pcm"),
    ]


def test_header_names_map_model_members_to_lowercase_headers() -> None:
    assert dict(HEADER_NAMES) == {
        "sessionId": "x-amzn-medscribe-session-id",
        "domainId": "x-amzn-medscribe-domain-id",
        "subscriptionId": "x-amzn-medscribe-subscription-id",
        "languageCode": "x-amzn-medscribe-language-code",
        "mediaSampleRateHertz": "x-amzn-medscribe-sample-rate",
        "mediaEncoding": "x-amzn-medscribe-media-encoding",
    }


def test_stream_request_cannot_be_built_from_invalid_values() -> None:
    fields = dict(
        session_id=SESSION_ID,
        domain_id=DOMAIN_ID,
        subscription_id=SUBSCRIPTION_ID,
        language_code="en-US",
        media_encoding="pcm",
    )
    message = error_message(StreamRequest, sample_rate=True, **fields)
    assert (
        header_violation(
            "'true'",
            "mediaSampleRateHertz",
            "Member must be an integer",
        )
        in message
    )
    request = StreamRequest(sample_rate=44100, **fields)
    with pytest.raises(FrozenInstanceError):
        request.sample_rate = 8000  # type: ignore[misc]


def test_validate_ids_names_path_parameters_without_a_member_suffix() -> None:
    message = error_message(
        validate_ids,
        session_id="abc",
        domain_id=None,
        subscription_id=SUBSCRIPTION_ID,
        locations=PATH_PARAMETER_NAMES,
    )
    assert message == (
        "3 validation errors detected: "
        + violation("'abc'", "sessionId", "Member must have length greater than or equal to 36")
        + "; "
        + violation(
            "'abc'",
            "sessionId",
            f"Member must satisfy regular expression pattern: {SESSION_ID_PATTERN}",
        )
        + "; "
        + violation("null", "domainId", NULL)
    )


def test_validate_ids_names_headers_by_default_and_accepts_valid_ids() -> None:
    message = error_message(
        validate_ids, session_id=SESSION_ID, domain_id=DOMAIN_ID, subscription_id="sub-"
    )
    assert (
        header_violation(
            "'sub-'",
            "subscriptionId",
            "Member must have length greater than or equal to 25",
        )
        in message
    )
    # Valid identifiers raise nothing.
    validate_ids(session_id=SESSION_ID, domain_id=DOMAIN_ID, subscription_id=SUBSCRIPTION_ID)


# --- Configuration event ----------------------------------------------------------------
WIRE_CONFIGURATION: dict[str, Any] = {
    "postStreamActionSettings": {
        "outputS3Uri": "s3://bucket/prefix",
        "clinicalNoteGenerationSettings": {
            "noteTemplateSettings": {"managedTemplate": {"templateType": "HISTORY_AND_PHYSICAL"}}
        },
    },
    "channelDefinitions": [
        {"channelId": 0, "participantRole": "CLINICIAN"},
        {"channelId": 1, "participantRole": "PATIENT"},
    ],
}
CUSTOM_TEMPLATE: dict[str, Any] = {
    "templateType": "SIRP",
    "templateInstructions": [
        {"sectionHeader": "Subjective_1", "sectionInstruction": "Summarise the *complaint*."}
    ],
}
FULL_CONFIGURATION: dict[str, Any] = {
    **copy.deepcopy(WIRE_CONFIGURATION),
    "encounterContext": {
        "unstructuredContext": "# Ärztin: Schmerz seit ٣ Tagen; 血圧 120/80 ~ ok!\n- [x] `done`",
        "medicalCodingContext": {
            "afterHours": False,
            "dateOfBirth": "1990-02-28",
            "encounterDate": "2025-12-31",
            "encounterReason": "Chest pain, follow-up.",
            "encounterType": "TELEHEALTH",
            "sex": "NON_BINARY",
            "status": "ESTABLISHED",
        },
    },
}
FULL_CONFIGURATION["postStreamActionSettings"]["medicalCodeGenerationSettings"] = {"enabled": True}

DELETE = object()
C = "configurationEvent."
NOTES = "postStreamActionSettings.clinicalNoteGenerationSettings.noteTemplateSettings"
CODING = "encounterContext.medicalCodingContext"


def configuration_with(changes: dict[str, Any]) -> dict[str, Any]:
    """FULL_CONFIGURATION with dotted ``path: value`` changes (list items by index)."""
    document = copy.deepcopy(FULL_CONFIGURATION)
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        node: Any = document
        for parent in parents:
            node = node[int(parent)] if isinstance(node, list) else node[parent]
        key: Any = int(leaf) if isinstance(node, list) else leaf
        if value is DELETE:
            del node[key]
        else:
            node[key] = copy.deepcopy(value)
    return document


def encode(document: object) -> bytes:
    return json.dumps(document, ensure_ascii=False).encode()


class ConfigCase(NamedTuple):
    changes: dict[str, Any]
    location: str  # after "configurationEvent."
    rule: str
    shown: str | None  # the echoed value text; None: no value shown


def custom(**instructions: Any) -> dict[str, Any]:
    return {"customTemplate": {**CUSTOM_TEMPLATE, **instructions}}


def instruction(header: str = "Plan", text: str = "List next steps.") -> dict[str, str]:
    return {"sectionHeader": header, "sectionInstruction": text}


INSTRUCTIONS = f"{NOTES}.customTemplate.templateInstructions"
S3 = "postStreamActionSettings.outputS3Uri"
CHANNELS = "channelDefinitions"
LONG_S3_URI = "s3://bucket/" + "k" * 1013  # 1025 characters, matches the pattern
CONFIG_CASES = {
    "post-stream-action-settings-missing": ConfigCase(
        {"postStreamActionSettings": DELETE}, "postStreamActionSettings", NULL, "null"
    ),
    "post-stream-action-settings-null": ConfigCase(
        {"postStreamActionSettings": None}, "postStreamActionSettings", NULL, "null"
    ),
    "post-stream-action-settings-wrong-type": ConfigCase(
        {"postStreamActionSettings": "s3://bucket"},
        "postStreamActionSettings",
        "Member must be an object",
        None,
    ),
    "output-s3-uri-missing": ConfigCase({S3: DELETE}, S3, NULL, "null"),
    "output-s3-uri-pattern-scheme": ConfigCase(
        {S3: "https://bucket/prefix"},
        S3,
        f"Member must satisfy regular expression pattern: {S3_PATTERN}",
        "'https://bucket/prefix'",
    ),
    "output-s3-uri-pattern-uppercase-bucket": ConfigCase(
        {S3: "s3://Bucket/prefix"},
        S3,
        f"Member must satisfy regular expression pattern: {S3_PATTERN}",
        "'s3://Bucket/prefix'",
    ),
    "output-s3-uri-pattern-two-letter-bucket": ConfigCase(
        {S3: "s3://ab"},
        S3,
        f"Member must satisfy regular expression pattern: {S3_PATTERN}",
        "'s3://ab'",
    ),
    "output-s3-uri-pattern-line-break-in-key": ConfigCase(
        {S3: "s3://bucket/a\nb"},
        S3,
        f"Member must satisfy regular expression pattern: {S3_PATTERN}",
        "'s3://bucket/a\nb'",
    ),
    "output-s3-uri-too-long": ConfigCase(
        {S3: LONG_S3_URI},
        S3,
        "Member must have length less than or equal to 1024",
        f"'{LONG_S3_URI}'",
    ),
    "output-s3-uri-wrong-type": ConfigCase({S3: 42}, S3, "Member must be a string", "'42'"),
    "clinical-note-generation-settings-missing": ConfigCase(
        {"postStreamActionSettings.clinicalNoteGenerationSettings": DELETE},
        "postStreamActionSettings.clinicalNoteGenerationSettings",
        NULL,
        "null",
    ),
    "note-template-settings-missing": ConfigCase({NOTES: DELETE}, NOTES, NULL, "null"),
    "note-template-settings-union-with-zero-members": ConfigCase(
        {NOTES: {}},
        NOTES,
        "Member must have exactly one of [managedTemplate, customTemplate] set, found 0",
        None,
    ),
    "note-template-settings-union-with-null-members": ConfigCase(
        {NOTES: {"managedTemplate": None, "customTemplate": None}},
        NOTES,
        "Member must have exactly one of [managedTemplate, customTemplate] set, found 0",
        None,
    ),
    "note-template-settings-union-with-two-members": ConfigCase(
        {NOTES: {"managedTemplate": {"templateType": "DAP"}, **custom()}},
        NOTES,
        "Member must have exactly one of [managedTemplate, customTemplate] set, "
        "found 2 (managedTemplate, customTemplate)",
        None,
    ),
    "managed-template-type-missing": ConfigCase(
        {f"{NOTES}.managedTemplate.templateType": DELETE},
        f"{NOTES}.managedTemplate.templateType",
        NULL,
        "null",
    ),
    "managed-template-type-enum": ConfigCase(
        {f"{NOTES}.managedTemplate.templateType": "SOAP"},
        f"{NOTES}.managedTemplate.templateType",
        f"Member must satisfy enum value set: [{', '.join(MANAGED_TEMPLATES)}]",
        "'SOAP'",
    ),
    "custom-template-type-enum-lacks-physical-soap": ConfigCase(
        {NOTES: custom(templateType="PHYSICAL_SOAP")},
        f"{NOTES}.customTemplate.templateType",
        f"Member must satisfy enum value set: [{', '.join(MANAGED_TEMPLATES[:-1])}]",
        "'PHYSICAL_SOAP'",
    ),
    "custom-template-instructions-missing": ConfigCase(
        {NOTES: {"customTemplate": {"templateType": "DAP"}}}, INSTRUCTIONS, NULL, "null"
    ),
    "custom-template-instructions-0-items": ConfigCase(
        {NOTES: custom(templateInstructions=[])},
        INSTRUCTIONS,
        "Member must have length greater than or equal to 1",
        None,
    ),
    "custom-template-instructions-21-items": ConfigCase(
        {NOTES: custom(templateInstructions=[instruction()] * 21)},
        INSTRUCTIONS,
        "Member must have length less than or equal to 20",
        None,
    ),
    "custom-template-instruction-null-item": ConfigCase(
        {NOTES: custom(templateInstructions=[None])}, f"{INSTRUCTIONS}.1.member", NULL, "null"
    ),
    "section-header-missing": ConfigCase(
        {NOTES: custom(templateInstructions=[{"sectionInstruction": "x"}])},
        f"{INSTRUCTIONS}.1.member.sectionHeader",
        NULL,
        "null",
    ),
    "section-header-pattern": ConfigCase(
        {NOTES: custom(templateInstructions=[instruction(), instruction(header="Plan B")])},
        f"{INSTRUCTIONS}.2.member.sectionHeader",
        "Member must satisfy regular expression pattern: [a-zA-Z0-9_]+"
        " (character 5, U+0020 SPACE, is not in it)",
        "'***'",
    ),
    "section-instruction-pattern": ConfigCase(
        {NOTES: custom(templateInstructions=[instruction(text="Bill in $")])},
        f"{INSTRUCTIONS}.1.member.sectionInstruction",
        f"Member must satisfy regular expression pattern: {MARKDOWN_PATTERN}"
        " (character 9, U+0024 DOLLAR SIGN, is not in it)",
        "'***'",
    ),
    "medical-code-generation-enabled-missing": ConfigCase(
        {"postStreamActionSettings.medicalCodeGenerationSettings": {}},
        "postStreamActionSettings.medicalCodeGenerationSettings.enabled",
        NULL,
        "null",
    ),
    "medical-code-generation-enabled-wrong-type": ConfigCase(
        {"postStreamActionSettings.medicalCodeGenerationSettings.enabled": "yes"},
        "postStreamActionSettings.medicalCodeGenerationSettings.enabled",
        "Member must be a boolean",
        "'yes'",
    ),
    "channel-definitions-1-item": ConfigCase(
        {f"{CHANNELS}.1": DELETE},
        CHANNELS,
        "Member must have length greater than or equal to 2",
        None,
    ),
    "channel-definitions-3-items": ConfigCase(
        {CHANNELS: [*WIRE_CONFIGURATION[CHANNELS], {"channelId": 1, "participantRole": "PATIENT"}]},
        CHANNELS,
        "Member must have length less than or equal to 2",
        None,
    ),
    "channel-definitions-duplicate-ids": ConfigCase(
        {f"{CHANNELS}.1.channelId": 0},
        CHANNELS,
        "Member must define channelId 0 and channelId 1 once each"
        " (an emulator rule: the service model does not state it)",
        None,
    ),
    "channel-definitions-same-role-twice": ConfigCase(
        {f"{CHANNELS}.0.participantRole": "PATIENT"},
        CHANNELS,
        "Member must assign PATIENT and CLINICIAN once each"
        " (an emulator rule: the service model does not state it)",
        None,
    ),
    "channel-definitions-wrong-type": ConfigCase(
        {CHANNELS: {"channelId": 0}}, CHANNELS, "Member must be a list", None
    ),
    "channel-id-missing": ConfigCase(
        {f"{CHANNELS}.0.channelId": DELETE}, f"{CHANNELS}.1.member.channelId", NULL, "null"
    ),
    "channel-id-above-range": ConfigCase(
        {f"{CHANNELS}.1.channelId": 2},
        f"{CHANNELS}.2.member.channelId",
        "Member must have value less than or equal to 1",
        "'2'",
    ),
    "channel-id-below-range": ConfigCase(
        {f"{CHANNELS}.0.channelId": -1},
        f"{CHANNELS}.1.member.channelId",
        "Member must have value greater than or equal to 0",
        "'-1'",
    ),
    "channel-id-bool-is-not-an-integer": ConfigCase(
        {f"{CHANNELS}.1.channelId": True},
        f"{CHANNELS}.2.member.channelId",
        "Member must be an integer",
        "'true'",
    ),
    "channel-id-string-is-not-an-integer": ConfigCase(
        {f"{CHANNELS}.0.channelId": "0"},
        f"{CHANNELS}.1.member.channelId",
        "Member must be an integer",
        "'0'",
    ),
    "channel-id-float-is-not-an-integer": ConfigCase(
        {f"{CHANNELS}.1.channelId": 1.0},
        f"{CHANNELS}.2.member.channelId",
        "Member must be an integer",
        "'1.0'",
    ),
    "participant-role-missing": ConfigCase(
        {f"{CHANNELS}.1.participantRole": DELETE},
        f"{CHANNELS}.2.member.participantRole",
        NULL,
        "null",
    ),
    "participant-role-enum": ConfigCase(
        {f"{CHANNELS}.1.participantRole": "DOCTOR"},
        f"{CHANNELS}.2.member.participantRole",
        "Member must satisfy enum value set: [PATIENT, CLINICIAN]",
        "'DOCTOR'",
    ),
    "encounter-context-wrong-type": ConfigCase(
        {"encounterContext": "notes"}, "encounterContext", "Member must be an object", None
    ),
    "unstructured-context-pattern": ConfigCase(
        {"encounterContext.unstructuredContext": "owes $500"},
        "encounterContext.unstructuredContext",
        f"Member must satisfy regular expression pattern: {MARKDOWN_PATTERN}"
        " (character 6, U+0024 DOLLAR SIGN, is not in it)",
        "'***'",
    ),
    # Java's \s is ASCII whitespace: a no-break space pasted from an EHR is refused,
    # and with the value hidden, only the hint shows which character it was.
    "unstructured-context-no-break-space": ConfigCase(
        {"encounterContext.unstructuredContext": "knee\u00a0pain"},
        "encounterContext.unstructuredContext",
        f"Member must satisfy regular expression pattern: {MARKDOWN_PATTERN}"
        " (character 5, U+00A0 NO-BREAK SPACE, is not in it)",
        "'***'",
    ),
    "unstructured-context-empty": ConfigCase(
        {"encounterContext.unstructuredContext": ""},
        "encounterContext.unstructuredContext",
        f"Member must satisfy regular expression pattern: {MARKDOWN_PATTERN}",
        "'***'",
    ),
    "unstructured-context-wrong-type": ConfigCase(
        {"encounterContext.unstructuredContext": ["a"]},
        "encounterContext.unstructuredContext",
        "Member must be a string",
        "'***'",
    ),
    "date-of-birth-pattern": ConfigCase(
        {f"{CODING}.dateOfBirth": "1990-13-01"},
        f"{CODING}.dateOfBirth",
        f"Member must satisfy regular expression pattern: {ISO_DATE_PATTERN}",
        "'***'",
    ),
    "date-of-birth-non-ascii-digits": ConfigCase(
        {f"{CODING}.dateOfBirth": "١٩٩٠-01-01"},
        f"{CODING}.dateOfBirth",
        f"Member must satisfy regular expression pattern: {ISO_DATE_PATTERN}",
        "'***'",
    ),
    "encounter-date-pattern": ConfigCase(
        {f"{CODING}.encounterDate": "2025/01/01"},
        f"{CODING}.encounterDate",
        f"Member must satisfy regular expression pattern: {ISO_DATE_PATTERN}",
        "'***'",
    ),
    # The month and day alternatives at their lower and upper edges.
    "date-of-birth-month-00": ConfigCase(
        {f"{CODING}.dateOfBirth": "1980-00-15"},
        f"{CODING}.dateOfBirth",
        f"Member must satisfy regular expression pattern: {ISO_DATE_PATTERN}",
        "'***'",
    ),
    "date-of-birth-day-00": ConfigCase(
        {f"{CODING}.dateOfBirth": "1980-01-00"},
        f"{CODING}.dateOfBirth",
        f"Member must satisfy regular expression pattern: {ISO_DATE_PATTERN}",
        "'***'",
    ),
    "encounter-date-month-00": ConfigCase(
        {f"{CODING}.encounterDate": "2026-00-01"},
        f"{CODING}.encounterDate",
        f"Member must satisfy regular expression pattern: {ISO_DATE_PATTERN}",
        "'***'",
    ),
    "encounter-date-day-32": ConfigCase(
        {f"{CODING}.encounterDate": "2026-01-32"},
        f"{CODING}.encounterDate",
        f"Member must satisfy regular expression pattern: {ISO_DATE_PATTERN}",
        "'***'",
    ),
    "encounter-reason-too-long": ConfigCase(
        {f"{CODING}.encounterReason": "a" * 257},
        f"{CODING}.encounterReason",
        "Member must have length less than or equal to 256",
        "'***'",
    ),
    "encounter-reason-pattern": ConfigCase(
        {f"{CODING}.encounterReason": "pain; fever"},
        f"{CODING}.encounterReason",
        "Member must satisfy regular expression pattern: [a-zA-Z0-9 .,-]+"
        " (character 5, U+003B SEMICOLON, is not in it)",
        "'***'",
    ),
    "encounter-type-enum": ConfigCase(
        {f"{CODING}.encounterType": "PHONE"},
        f"{CODING}.encounterType",
        "Member must satisfy enum value set: [TELEHEALTH, IN_PERSON]",
        "'PHONE'",
    ),
    "sex-enum": ConfigCase(
        {f"{CODING}.sex": "M"},
        f"{CODING}.sex",
        "Member must satisfy enum value set: [MALE, FEMALE, NON_BINARY, UNKNOWN]",
        "'***'",
    ),
    "status-enum": ConfigCase(
        {f"{CODING}.status": "OLD"},
        f"{CODING}.status",
        "Member must satisfy enum value set: [NEW, ESTABLISHED]",
        "'***'",
    ),
    "after-hours-wrong-type": ConfigCase(
        {f"{CODING}.afterHours": 0}, f"{CODING}.afterHours", "Member must be a boolean", "'0'"
    ),
    "unknown-top-level-member": ConfigCase(
        {"languageCode": "en-US"},
        "languageCode",
        "Member must be one of the modeled members "
        "[channelDefinitions, encounterContext, postStreamActionSettings]",
        None,
    ),
    "unknown-union-member": ConfigCase(
        {f"{NOTES}.freeformTemplate": {"text": "x"}},
        f"{NOTES}.freeformTemplate",
        "Member must be one of the modeled members [managedTemplate, customTemplate]",
        None,
    ),
    "unknown-member-in-channel-definition": ConfigCase(
        {f"{CHANNELS}.0.label": "ch_0"},
        f"{CHANNELS}.1.member.label",
        "Member must be one of the modeled members [channelId, participantRole]",
        None,
    ),
}


@pytest.mark.parametrize("case", CONFIG_CASES.values(), ids=CONFIG_CASES.keys())
def test_configuration_violation_names_json_path_and_rule(case: ConfigCase) -> None:
    message = error_message(parse_configuration_event, encode(configuration_with(case.changes)))
    assert message == "1 validation error detected: " + violation(
        case.shown, C + case.location, case.rule
    )


def test_dates_take_months_01_to_12_and_days_01_to_31_and_nothing_next_to_them() -> None:
    """The model's date pattern checks the form, not the calendar: each of months
    01-12 with each of days 01-31 passes (02-30 too), and month 00 or 13, or day 00
    or 32, is refused, for dateOfBirth and encounterDate alike."""
    for month in range(14):
        for day in range(33):
            date = f"2024-{month:02d}-{day:02d}"
            document = configuration_with(
                {f"{CODING}.dateOfBirth": date, f"{CODING}.encounterDate": date}
            )
            if 1 <= month <= 12 and 1 <= day <= 31:
                parse_configuration_event(encode(document))
                continue
            message = error_message(parse_configuration_event, encode(document))
            assert message.startswith("2 validation errors detected: "), date
            for member in ("dateOfBirth", "encounterDate"):
                assert f"at '{C}{CODING}.{member}'" in message, date


DOCUMENTED = " (the service's documentation says so; the model's constraints do not)"


@pytest.mark.parametrize(
    ("member", "value", "rule"),
    [
        ("dateOfBirth", "2026-12-07", None),  # today
        ("dateOfBirth", "2026-12-08", "Member must not be after the current date in UTC"),
        ("encounterDate", "2026-12-08", None),  # one day after today
        (
            "encounterDate",
            "2026-12-09",
            "Member must not be more than one day after the current date in UTC",
        ),
        ("encounterDate", "2026-02-30", None),  # compared as written, as the pattern took it
        ("dateOfBirth", "2027-02-30", "Member must not be after the current date in UTC"),
        ("encounterReason", " ", "Member must not contain only spaces"),
        ("encounterReason", "   .", None),
    ],
)
def test_the_coding_contexts_documented_rules_hold_at_their_bounds(
    member: str, value: str, rule: str | None
) -> None:
    """Today is 2026-12-07 in UTC here: what the documentation says of each member."""
    document = configuration_with({f"{CODING}.{member}": value})
    out: list[str] = []
    validation._check_coding_context(document, out, today=datetime.date(2026, 12, 7))
    if rule is None:
        assert out == []
        return
    if member != "encounterReason":
        rule += ", 2026-12-07"
    assert out == [violation("'***'", f"{C}{CODING}.{member}", rule + DOCUMENTED)]


def test_the_documented_rules_go_with_the_models_in_one_answer() -> None:
    """Refused with what else is wrong, each value once: a reason of spaces breaks
    no pattern, a date past the pattern is not also said to be in the future."""
    document = configuration_with(
        {
            f"{CODING}.encounterReason": "   ",
            f"{CODING}.dateOfBirth": "3000-13-01",
            f"{CODING}.encounterDate": "3000-01-01",
            S3: "s3://B",
        }
    )
    message = error_message(parse_configuration_event, encode(document))
    assert message.startswith("4 validation errors detected: ")
    assert message.count(f"at '{C}{CODING}.dateOfBirth'") == 1
    assert "regular expression pattern" in message.split(f"at '{C}{CODING}.dateOfBirth'")[1]
    assert "3000" not in message


SECRET = "SECRET-PHI"
SENSITIVE_CASES = {
    "unstructured-context": {"encounterContext.unstructuredContext": f"{SECRET} owes $5"},
    "section-header": {NOTES: custom(templateInstructions=[instruction(header=f"{SECRET} x")])},
    "section-instruction": {NOTES: custom(templateInstructions=[instruction(text=f"{SECRET} $")])},
    "date-of-birth": {f"{CODING}.dateOfBirth": SECRET},
    "encounter-date": {f"{CODING}.encounterDate": SECRET},
    "encounter-reason": {f"{CODING}.encounterReason": f"{SECRET};"},
    "sex": {f"{CODING}.sex": SECRET},
    "status": {f"{CODING}.status": SECRET},
    "sensitive-member-of-wrong-type": {f"{CODING}.sex": {"value": SECRET}},
    "object-of-wrong-type": {"encounterContext": SECRET},
    "unknown-member-value": {f"{CODING}.notes": SECRET},
}


@pytest.mark.parametrize("changes", SENSITIVE_CASES.values(), ids=SENSITIVE_CASES.keys())
def test_sensitive_values_are_never_echoed(changes: dict[str, Any]) -> None:
    message = error_message(parse_configuration_event, encode(configuration_with(changes)))
    assert message.startswith("1 validation error detected: ")
    assert SECRET not in message


def test_all_configuration_violations_are_reported_together() -> None:
    document = configuration_with(
        {S3: "s3://B", "encounterContext.extra": 1, f"{CHANNELS}.1.channelId": 5, NOTES: {}}
    )
    message = error_message(parse_configuration_event, encode(document))
    assert message.startswith("4 validation errors detected: ")
    for location in (
        "channelDefinitions.2.member.channelId",
        "encounterContext.extra",
        "postStreamActionSettings.outputS3Uri",
        NOTES,
    ):
        assert f"at '{C}{location}'" in message


@pytest.mark.parametrize(
    ("payload", "rule"),
    [
        (b"{", "Payload must be valid JSON (Expecting property name enclosed in double quotes"),
        (b"", "Payload must be valid JSON (Expecting value: line 1 column 1)"),
        (b'{"channelId": NaN}', "Payload must be valid JSON (NaN is not a JSON number)"),
        (b"\xff{}", "Payload must be UTF-8 JSON (invalid byte at offset 0)"),
        (b"[]", "Payload must be a JSON object"),
        (b'"postStreamActionSettings"', "Payload must be a JSON object"),
        (b"null", "Payload must be a JSON object"),
        (
            b"\xef\xbb\xbf{}",
            "Payload must be valid JSON (Unexpected UTF-8 BOM (decode using utf-8-sig)",
        ),
    ],
    ids=["truncated", "empty", "nan", "not-utf-8", "array", "string", "null", "bom"],
)
def test_configuration_payload_must_be_a_json_object(payload: bytes, rule: str) -> None:
    message = error_message(parse_configuration_event, payload)
    assert message.startswith(
        "1 validation error detected: Value at 'configurationEvent' failed to satisfy "
        f"constraint: {rule}"
    )


@pytest.mark.parametrize(
    ("parse", "payload", "member"),
    [
        (
            parse_configuration_event,
            json.dumps(WIRE_CONFIGURATION).replace("s3://", "s3://\\udc80").encode(),
            "configurationEvent.postStreamActionSettings.outputS3Uri",
        ),
        (parse_session_control_event, b'{"type": "END\\ud800"}', "sessionControlEvent.type"),
        (parse_audio_event, b'{"audioChunk": "AAAA", "\\ud800": 1}', "audioEvent.\\ud800"),
    ],
    ids=["configuration", "control", "audio-member-name"],
)
def test_half_a_surrogate_pair_is_refused_by_member_before_other_checks(
    parse: Any, payload: bytes, member: str
) -> None:
    """No string of the service holds one; the message names where, quoting no value."""
    assert error_message(parse, payload) == (
        f"1 validation error detected: Value at '{member}' failed to satisfy constraint: "
        "Member must be valid Unicode text (it holds an unpaired surrogate)"
    )


@pytest.mark.parametrize(
    ("escape", "refused"),
    [
        ("\\uDC80", True),  # an upper-case escape of half a pair
        ("\\udbff", True),
        ("\\ud83d\\ude00", False),  # a whole pair: one character
        ("\\\\ud800", False),  # an escaped backslash, then the letters "ud800"
        ("\\ud7ff", False),  # the code point just below the surrogates
    ],
    ids=["upper-case-half", "high-half", "whole-pair", "escaped-backslash", "below-range"],
)
def test_only_an_escape_of_half_a_pair_is_refused(escape: str, refused: bool) -> None:
    """The walk for surrogates runs only for a text with such an escape: one
    that looks like one but is not (or is a whole pair) passes, as before."""
    payload = json.dumps(WIRE_CONFIGURATION).replace("/prefix", "/" + escape).encode()
    if refused:
        assert "it holds an unpaired surrogate" in error_message(parse_configuration_event, payload)
    else:
        uri = parse_configuration_event(payload).post_stream_action_settings["outputS3Uri"]
        assert uri.endswith("/" + json.loads(f'"{escape}"'))


def test_wire_example_configuration_is_valid() -> None:
    configuration = parse_configuration_event(encode(WIRE_CONFIGURATION))
    assert configuration == Configuration(
        channel_definitions=(
            ChannelDefinition(channel_id=0, participant_role="CLINICIAN"),
            ChannelDefinition(channel_id=1, participant_role="PATIENT"),
        ),
        encounter_context=None,
        post_stream_action_settings=WIRE_CONFIGURATION["postStreamActionSettings"],
        template_type="HISTORY_AND_PHYSICAL",
        template_kind="managedTemplate",
        medical_code_generation=None,
        raw=WIRE_CONFIGURATION,
    )
    assert configuration.channels == 2
    assert configuration.role_of(0) == "CLINICIAN"
    assert configuration.role_of(1) == "PATIENT"
    assert configuration.role_of(2) is None


def test_a_configuration_that_passed_is_read_again_without_its_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same bytes give an equal Configuration with a document of its own, and
    skip the checks that passed; a payload that failed is checked (and refused)
    every time; the remembered payloads stay bounded."""
    from emulator import validation

    monkeypatch.setattr(validation, "_PASSED_CONFIGURATIONS", set())
    checks = []
    check = validation._check_structure

    def counting_check(*args: Any) -> None:
        if args[2] == "configurationEvent":  # the whole event, not its members
            checks.append(args[2])
        check(*args)

    monkeypatch.setattr(validation, "_check_structure", counting_check)
    payload = encode(WIRE_CONFIGURATION)
    first = parse_configuration_event(payload)
    second = parse_configuration_event(bytes(payload))  # equal bytes, another object
    assert first == second and first.raw is not second.raw
    assert checks == ["configurationEvent"]
    assert parse_configuration_event(bytearray(payload)) == first  # not remembered: checked
    assert len(checks) == 2

    bad = encode(configuration_with({CHANNELS: DELETE, "postStreamActionSettings": DELETE}))
    for _ in range(2):
        with pytest.raises(ValidationException, match="postStreamActionSettings"):
            parse_configuration_event(bad)
    assert len(checks) == 4

    monkeypatch.setattr(validation, "_PASSED_LIMIT", 3)
    for n in range(10):
        document = configuration_with({"encounterContext": {"unstructuredContext": f"v{n}"}})
        parse_configuration_event(encode(document))
        assert len(validation._PASSED_CONFIGURATIONS) <= 3


def test_configuration_without_channel_definitions_has_one_channel_and_no_roles() -> None:
    document = configuration_with({CHANNELS: DELETE, "encounterContext": DELETE})
    configuration = parse_configuration_event(encode(document))
    assert configuration.channel_definitions is None
    assert configuration.channels == 1
    assert configuration.role_of(0) is None


def test_full_configuration_with_a_20_section_custom_template_is_valid() -> None:
    sections = [instruction(header=f"Section_{n}") for n in range(20)]
    document = configuration_with(
        {
            NOTES: custom(templateInstructions=sections),
            f"{CHANNELS}.0.participantRole": "PATIENT",
            f"{CHANNELS}.1.participantRole": "CLINICIAN",
            "postStreamActionSettings.medicalCodeGenerationSettings.enabled": False,
        }
    )
    configuration = parse_configuration_event(encode(document))
    assert configuration.template_kind == "customTemplate"
    assert configuration.template_type == "SIRP"
    assert configuration.medical_code_generation is False
    assert configuration.encounter_context == FULL_CONFIGURATION["encounterContext"]
    assert configuration.role_of(0) == "PATIENT"
    assert configuration.raw == document


@pytest.mark.parametrize("template", MANAGED_TEMPLATES)
def test_every_managed_template_type_is_accepted(template: str) -> None:
    document = configuration_with({f"{NOTES}.managedTemplate.templateType": template})
    assert parse_configuration_event(encode(document)).template_type == template


@pytest.mark.parametrize(
    "uri",
    [
        "s3://bucket",
        "s3://abc",
        "s3://" + "a" * 63,
        "s3://my.bucket-1/a/b c/ü?x=1",
        "s3://bucket/" + "k" * 1012,  # 1024 characters: the longest
    ],
    ids=["no-key", "3-letter-bucket", "63-letter-bucket", "any-key", "1024-characters"],
)
def test_s3_uris_matching_the_pattern_are_accepted(uri: str) -> None:
    document = configuration_with({S3: uri})
    assert (
        parse_configuration_event(encode(document)).post_stream_action_settings["outputS3Uri"]
        == uri
    )


def test_null_optional_members_count_as_absent() -> None:
    document = configuration_with(
        {CHANNELS: None, "encounterContext.unstructuredContext": None, f"{CODING}.sex": None}
    )
    configuration = parse_configuration_event(encode(document))
    assert configuration.channels == 1
    assert configuration.channel_definitions is None


# The model's SensitiveMarkdownString uses \p{L}\p{N}; these check its translation.
MARKDOWN_ACCEPTED = {
    "latin-uppercase-Lu": "Ä",
    "greek-lowercase-Ll": "ω",
    "titlecase-Lt": "ǅ",
    "modifier-letter-Lm": "ʰ",
    "cjk-Lo": "血",
    "arabic-indic-digit-Nd": "٣",
    "roman-numeral-Nl": "Ⅻ",
    "superscript-two-No": "²",
    "listed-punctuation": "*_-#[]().,:;!?'\"`<>~/|+=&%@\\{}^",
    "java-whitespace": " \t\n\x0b\f\r",
}
MARKDOWN_REJECTED = {
    "dollar-Sc": "$",
    "degree-So": "°",
    "emoji-So": "🙂",
    "em-dash-Pd": "—",
    "no-break-space-Zs": "\u00a0",
    "combining-accent-Mn": "e\u0301",
    "nul-Cc": "\x00",
}


@pytest.mark.parametrize("text", MARKDOWN_ACCEPTED.values(), ids=MARKDOWN_ACCEPTED.keys())
def test_markdown_pattern_accepts_unicode_letters_numbers_and_listed_characters(
    text: str,
) -> None:
    document = configuration_with({"encounterContext.unstructuredContext": text})
    assert parse_configuration_event(encode(document)).encounter_context == {
        **FULL_CONFIGURATION["encounterContext"],
        "unstructuredContext": text,
    }


@pytest.mark.parametrize("text", MARKDOWN_REJECTED.values(), ids=MARKDOWN_REJECTED.keys())
def test_markdown_pattern_rejects_characters_outside_its_class(text: str) -> None:
    document = configuration_with({"encounterContext.unstructuredContext": f"ok {text} ok"})
    message = error_message(parse_configuration_event, encode(document))
    assert "at 'configurationEvent.encounterContext.unstructuredContext'" in message


def test_python_word_class_is_exactly_unicode_letters_numbers_and_underscore() -> None:
    """The \\p{L}\\p{N} translation rests on this property of Python's str \\w."""
    word = re.compile(r"\w")
    mismatches = [
        hex(code)
        for code in range(sys.maxunicode + 1)
        if bool(word.match(chr(code)))
        != (unicodedata.category(chr(code))[0] in "LN" or chr(code) == "_")
    ]
    assert mismatches == []


# --- Audio and session-control events ---------------------------------------------------
def test_audio_event_returns_the_decoded_chunk() -> None:
    audio = bytes(range(256)) * 4
    payload = encode({"audioChunk": base64.b64encode(audio).decode()})
    assert parse_audio_event(payload) == audio


def test_empty_audio_chunk_is_a_valid_blob() -> None:
    assert parse_audio_event(b'{"audioChunk": ""}') == b""


def _outcome(payload: bytes) -> object:
    """What parse_audio_event makes of ``payload``: the chunk, or the error message."""
    try:
        return parse_audio_event(payload)
    except ValidationException as error:
        return error.message


@pytest.mark.parametrize(
    "chunk",
    [
        "",
        "AAE=",
        "AAEC",
        "AQ==",
        "not base64!",
        "AAE",
        "A===",
        "AA=A",
        "=AAA",
        "AA==AA==",
        "AAEC\\n",
        'AA\\"E',
        "ÄÄÄÄ",
        "AAE=\\u0041",
    ],
)
def test_compact_audio_event_is_read_like_any_other_layout(chunk: str) -> None:
    # The SDK writes {"audioChunk":"..."} without spaces, which takes the fast
    # path; the answer must be the generic JSON path's, value or error.
    compact = ('{"audioChunk":"' + chunk + '"}').encode()
    spaced = ('{ "audioChunk" : "' + chunk + '" }').encode()
    assert _outcome(compact) == _outcome(spaced)


@given(st.text(alphabet='AQw+/="\\ Ä\n', max_size=12))
@example("AAAAAA==")  # the padding the check allows: two "=", one, none
@example("AAAAAAA=")
@example("AA=A")  # a "=" inside
@example("A===")  # three "=" at the end
@example("====")
@example("AAAA=")  # padding past a whole group
@example("AAAA====")
@example("AA\\/=")  # a JSON-escaped slash
def test_undecoded_audio_check_agrees_with_decoding(chunk: str) -> None:
    # audio_event_base64 (the per-frame path, no decode) accepts exactly what
    # parse_audio_event (decodes) accepts in the SDK's layout, with the size and
    # bytes the decoder gives. (Padding past a whole group, "AAAA=", once
    # decoded on the slow path: it is not padded base64.)
    payload = ('{"audioChunk":"' + chunk + '"}').encode()
    lazy = audio_event_base64(payload)
    try:
        audio = parse_audio_event(payload)
    except ValidationException:
        assert lazy is None
        return
    if lazy is None:
        # A JSON escape ("\/", a slash) is not the SDK's layout: left to the
        # parser, which took it (hypothesis found "AA\/=").
        assert "\\" in chunk
        return
    text, size = lazy
    assert size == len(audio)
    assert base64.b64decode(text, validate=True) == audio


def test_undecoded_audio_check_leaves_other_layouts_to_the_parser() -> None:
    assert audio_event_base64(b'{"audioChunk": "AAE="}') is None
    assert audio_event_base64(b'{"audioChunk":"}') is None
    assert audio_event_base64(b'{"audioChunk":"AAE="}') == (b"AAE=", 2)


def test_compact_audio_event_from_the_sdk_codec_decodes() -> None:
    audio = bytes(range(256)) * 12
    payload = b'{"audioChunk":"' + base64.b64encode(audio) + b'"}'
    assert parse_audio_event(payload) == audio


def test_truncated_compact_audio_event_is_not_json() -> None:
    # Prefix and suffix overlap: the string never closes.
    message = error_message(parse_audio_event, b'{"audioChunk":"}')
    assert "Payload must be valid JSON" in message


BLOB = "Member must be a base64-encoded string"
AUDIO_CASES = {
    "missing": ({}, "audioEvent.audioChunk", NULL, "null"),
    "null": ({"audioChunk": None}, "audioEvent.audioChunk", NULL, "null"),
    "not-base64": ({"audioChunk": "not base64!"}, "audioEvent.audioChunk", BLOB, None),
    "unpadded": ({"audioChunk": "AAE"}, "audioEvent.audioChunk", BLOB, None),
    # Padding past a whole group: Python's strict decoder takes it, Java's does not.
    "padding-past-a-group": ({"audioChunk": "AAAA="}, "audioEvent.audioChunk", BLOB, None),
    "two-paddings-past-a-group": ({"audioChunk": "AAAA=="}, "audioEvent.audioChunk", BLOB, None),
    "a-group-of-padding": ({"audioChunk": "AAAA===="}, "audioEvent.audioChunk", BLOB, None),
    # Base64 once the characters outside the alphabet are skipped, as a lenient
    # decoder does: the chunk is still not what an encoder writes.
    "outside-the-alphabet": ({"audioChunk": "AA!A A"}, "audioEvent.audioChunk", BLOB, None),
    "line-break": ({"audioChunk": "AAAA\nAAAA"}, "audioEvent.audioChunk", BLOB, None),
    "non-ascii": ({"audioChunk": "ÄÄÄÄ"}, "audioEvent.audioChunk", BLOB, None),
    "wrong-type": ({"audioChunk": [0, 1]}, "audioEvent.audioChunk", BLOB, None),
    "unknown-member": (
        {"audioChunk": "AAE=", "sampleRate": 16000},
        "audioEvent.sampleRate",
        "Member must be one of the modeled members [audioChunk]",
        None,
    ),
}


@pytest.mark.parametrize(
    ("document", "location", "rule", "shown"), AUDIO_CASES.values(), ids=AUDIO_CASES.keys()
)
def test_audio_event_violation_names_location_and_rule(
    document: dict[str, Any], location: str, rule: str, shown: str | None
) -> None:
    message = error_message(parse_audio_event, encode(document))
    assert message == "1 validation error detected: " + violation(shown, location, rule)


def test_audio_event_payload_must_be_a_json_object() -> None:
    message = error_message(parse_audio_event, b"\x00\x01")
    assert message.startswith(
        "1 validation error detected: Value at 'audioEvent' failed to satisfy constraint: "
        "Payload must be valid JSON"
    )


def test_session_control_event_returns_end_of_session() -> None:
    assert parse_session_control_event(b'{"type": "END_OF_SESSION"}') == "END_OF_SESSION"


ENUM = "Member must satisfy enum value set: [END_OF_SESSION]"
CONTROL_CASES = {
    "other-type": ({"type": "PAUSE"}, "sessionControlEvent.type", ENUM, "'PAUSE'"),
    "lowercase": ({"type": "end_of_session"}, "sessionControlEvent.type", ENUM, "'end_of_session'"),
    "missing-type": (
        {},
        "sessionControlEvent.type",
        "Member must not be null: a session control event's type must be one of [END_OF_SESSION]"
        " (an emulator rule: the service model does not state it)",
        "null",
    ),
    "wrong-type": ({"type": 1}, "sessionControlEvent.type", ENUM, "'1'"),
    "unknown-member": (
        {"type": "END_OF_SESSION", "reason": "done"},
        "sessionControlEvent.reason",
        "Member must be one of the modeled members [type]",
        None,
    ),
}


@pytest.mark.parametrize(
    ("document", "location", "rule", "shown"), CONTROL_CASES.values(), ids=CONTROL_CASES.keys()
)
def test_session_control_violation_lists_allowed_values(
    document: dict[str, Any], location: str, rule: str, shown: str | None
) -> None:
    message = error_message(parse_session_control_event, encode(document))
    assert message == "1 validation error detected: " + violation(shown, location, rule)


def test_session_control_payload_must_be_a_json_object() -> None:
    message = error_message(parse_session_control_event, b'"END_OF_SESSION"')
    assert message == (
        "1 validation error detected: Value at 'sessionControlEvent' failed to satisfy "
        "constraint: Payload must be a JSON object"
    )


# --- The quick test for valid strings ----------------------------------------------------
def _string_shapes() -> list[Any]:
    from emulator import validation

    return [
        value for name, value in sorted(vars(validation).items()) if isinstance(value, TextShape)
    ]


@pytest.mark.parametrize("shape", _string_shapes(), ids=lambda shape: shape.pattern or "enum")
@given(
    value=st.one_of(
        st.text(max_size=40),
        st.from_regex(r"(hai-|dom-)[a-z0-9]{1,30}", fullmatch=True),
        st.from_regex(r"sub-[a-zA-Z0-9]{21}", fullmatch=True),
        st.uuids().map(str),
        st.sampled_from(["en-US", "pcm", "flac", "PATIENT", "CLINICIAN", "END_OF_SESSION"]),
        st.integers(),
        st.none(),
    )
)
@example(value=SESSION_ID)
@example(value=f"x\n{SESSION_ID}")
def test_a_string_passes_the_quick_test_exactly_when_it_has_no_violation(
    shape: Any, value: object
) -> None:
    # Valid strings skip the wording of violations: the quick test must accept
    # exactly what the full check finds nothing wrong with.
    assert shape.ok(value) is (not shape.violations(value, "'where'"))
