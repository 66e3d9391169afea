"""Request validation for StartMedicalScribeListeningSession, as the service model constrains it.

Pure: no I/O. The constraints (lengths, patterns, enums, ranges, required members,
unions, sensitive shapes) are copied from the service model
``connecthealth-2025-01-29``; the model JSON is not shipped or loaded.

Every check reports *all* violations of one request or event in one
:class:`~emulator.errors.ValidationException`, in the AWS style::

    2 validation errors detected: Value 'abc' at 'x-amzn-medscribe-session-id' (sessionId)
    failed to satisfy constraint: Member must have length greater than or equal to 36; Value ...

Wire locations: a header or path parameter is named by its wire name, followed by the
model member in parentheses when the two differ; a JSON member by its dotted path from
the input-stream member, list elements as ``N.member`` counted from 1 (as AWS reports
them), e.g. ``configurationEvent.channelDefinitions.2.member.participantRole``.
Values of shapes the model marks ``sensitive`` are never echoed (``Value '***'``), nor
are objects and lists, which may hold sensitive members.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Literal

from . import speedups
from .shapes import JAVA_DOT as _DOT
from .shapes import TextShape, describe_value, raise_if, validation_error, violation
from .shapes import pattern as _pattern
from .speedups import base64_size as _base64_size

__all__ = [
    "HEADER_NAMES",
    "PATH_PARAMETER_NAMES",
    "StreamRequest",
    "ChannelDefinition",
    "Configuration",
    "validate_stream_headers",
    "validate_ids",
    "id_constraints_broken",
    "integer_text",
    "lone_surrogate",
    "header_text",
    "SURROGATE_ESCAPE",
    "parse_configuration_event",
    "audio_event_base64",
    "parse_audio_event",
    "parse_session_control_event",
    "describe_value",
    "AUDIO_CHUNK_START",
    "AUDIO_CHUNK_STOP",
    "audio_event_size",
    "json_int",
]

#: Model member name -> request/response header (StartMedicalScribeListeningSessionInput).
HEADER_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "sessionId": "x-amzn-medscribe-session-id",
        "domainId": "x-amzn-medscribe-domain-id",
        "subscriptionId": "x-amzn-medscribe-subscription-id",
        "languageCode": "x-amzn-medscribe-language-code",
        "mediaSampleRateHertz": "x-amzn-medscribe-sample-rate",
        "mediaEncoding": "x-amzn-medscribe-media-encoding",
    }
)

#: Model member name -> URI label of GetMedicalScribeListeningSession, for :func:`validate_ids`.
PATH_PARAMETER_NAMES: Mapping[str, str] = MappingProxyType(
    {"sessionId": "sessionId", "domainId": "domainId", "subscriptionId": "subscriptionId"}
)


# --- Shapes -----------------------------------------------------------------------------
# Smithy patterns are unanchored text; the service applies them to the whole value
# (Java's Matcher.matches), so every regex below is used with re.fullmatch. Where Python
# reads a construct differently from java.util.regex the Python text is a translation:
#   "."  Java's dot excludes every line terminator, Python's only "\n" -> _DOT.
#   "\d" Java: ASCII digits; Python str patterns: any Unicode Nd -> [0-9].
# String shapes are emulator.shapes.TextShape, which the control plane uses too.


@dataclass(frozen=True, kw_only=True, slots=True)
class _Integer:
    min: int
    max: int


@dataclass(frozen=True, kw_only=True, slots=True)
class _Boolean:
    pass


@dataclass(frozen=True, kw_only=True, slots=True)
class _Blob:
    pass


@dataclass(frozen=True, kw_only=True, slots=True)
class _List:
    member: _Shape
    min_len: int
    max_len: int


@dataclass(frozen=True, kw_only=True, slots=True)
class _Structure:
    members: Mapping[str, _Shape]
    required: tuple[str, ...] = ()
    union: bool = False


_Shape = TextShape | _Integer | _Boolean | _Blob | _List | _Structure


_UUID = r"[a-fA-F0-9]{8}-[a-fA-F0-9]{4}-[a-fA-F0-9]{4}-[a-fA-F0-9]{4}-[a-fA-F0-9]{12}"
_SESSION_ID = _pattern(f".*{_UUID}.*", f"{_DOT}*{_UUID}{_DOT}*", min_len=36, max_len=36)
_DOMAIN_ID = _pattern("(hai-|dom-)[a-z0-9]+", min_len=20, max_len=25)
_SUBSCRIPTION_ID = _pattern("sub-[a-zA-Z0-9]{21}", min_len=25, max_len=25)
_LANGUAGE_CODE = TextShape(enum=("en-US", "multi"))
_MEDIA_ENCODING = TextShape(enum=("pcm", "flac"))
_SAMPLE_RATE = _Integer(min=8000, max=48000)

_S3_URI = _pattern(
    r"s3://[a-z0-9][\.\-a-z0-9]{1,61}[a-z0-9](/.*)?",
    rf"s3://[a-z0-9][\.\-a-z0-9]{{1,61}}[a-z0-9](/{_DOT}*)?",
    min_len=0,
    max_len=1024,
)
# SensitiveMarkdownString. Python's re has no \p{..}; the translation rests on this:
# in a str pattern Python's \w is exactly the code points of Unicode general categories
# L* and N* plus "_" (checked over all of Unicode in tests/test_validation.py), and the
# model's class lists "_" anyway, so "\p{L}\p{N}...\_..." is "\w...". \s is Java's
# (non-UNICODE_CHARACTER_CLASS) whitespace, [ \t\n\x0B\f\r], spelled out because Python's
# str \s also takes Unicode spaces such as U+00A0.
_MARKDOWN = _pattern(
    r"""[\p{L}\p{N}\s\*_\-#\[\]\(\)\.,:;!?'"`<>~/|+=&%@\\{}^]+""",
    r"""[\w \t\n\x0b\f\r*\-#\[\]().,:;!?'"`<>~/|+=&%@\\{}^]+""",
    sensitive=True,
)
_SECTION_HEADER = _pattern("[a-zA-Z0-9_]+", sensitive=True)
_ISO_DATE = _pattern(
    r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])",
    r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])",
    sensitive=True,
)
_ENCOUNTER_REASON = _pattern("[a-zA-Z0-9 .,-]+", min_len=0, max_len=256, sensitive=True)
_BOOLEAN = _Boolean()
_TEMPLATES = ("HISTORY_AND_PHYSICAL", "GIRPP", "DAP", "SIRP", "BIRP", "BEHAVIORAL_SOAP")
_ROLES = ("PATIENT", "CLINICIAN")

_CHANNEL_DEFINITIONS = _List(
    member=_Structure(
        members={"channelId": _Integer(min=0, max=1), "participantRole": TextShape(enum=_ROLES)},
        required=("channelId", "participantRole"),
    ),
    min_len=2,
    max_len=2,
)
_ENCOUNTER_CONTEXT = _Structure(
    members={
        "unstructuredContext": _MARKDOWN,
        "medicalCodingContext": _Structure(
            members={
                "afterHours": _BOOLEAN,
                "dateOfBirth": _ISO_DATE,
                "encounterDate": _ISO_DATE,
                "encounterReason": _ENCOUNTER_REASON,
                "encounterType": TextShape(enum=("TELEHEALTH", "IN_PERSON")),
                "sex": TextShape(enum=("MALE", "FEMALE", "NON_BINARY", "UNKNOWN"), sensitive=True),
                "status": TextShape(enum=("NEW", "ESTABLISHED"), sensitive=True),
            }
        ),
    }
)
_NOTE_TEMPLATE_SETTINGS = _Structure(
    members={
        "managedTemplate": _Structure(
            members={"templateType": TextShape(enum=(*_TEMPLATES, "PHYSICAL_SOAP"))},
            required=("templateType",),
        ),
        "customTemplate": _Structure(
            members={
                "templateType": TextShape(enum=_TEMPLATES),
                "templateInstructions": _List(
                    member=_Structure(
                        members={"sectionHeader": _SECTION_HEADER, "sectionInstruction": _MARKDOWN},
                        required=("sectionHeader", "sectionInstruction"),
                    ),
                    min_len=1,
                    max_len=20,
                ),
            },
            required=("templateType", "templateInstructions"),
        ),
    },
    union=True,
)
_CONFIGURATION = _Structure(
    members={
        "channelDefinitions": _CHANNEL_DEFINITIONS,
        "encounterContext": _ENCOUNTER_CONTEXT,
        "postStreamActionSettings": _Structure(
            members={
                "outputS3Uri": _S3_URI,
                "clinicalNoteGenerationSettings": _Structure(
                    members={"noteTemplateSettings": _NOTE_TEMPLATE_SETTINGS},
                    required=("noteTemplateSettings",),
                ),
                "medicalCodeGenerationSettings": _Structure(
                    members={"enabled": _BOOLEAN}, required=("enabled",)
                ),
            },
            required=("outputS3Uri", "clinicalNoteGenerationSettings"),
        ),
    },
    required=("postStreamActionSettings",),
)
_AUDIO_EVENT = _Structure(members={"audioChunk": _Blob()}, required=("audioChunk",))
_END_OF_SESSION = TextShape(enum=("END_OF_SESSION",))
_SESSION_CONTROL_EVENT = _Structure(members={"type": _END_OF_SESSION})

_HEADER_SHAPES: Mapping[str, TextShape | _Integer] = {
    "sessionId": _SESSION_ID,
    "domainId": _DOMAIN_ID,
    "subscriptionId": _SUBSCRIPTION_ID,
    "languageCode": _LANGUAGE_CODE,
    "mediaSampleRateHertz": _SAMPLE_RATE,
    "mediaEncoding": _MEDIA_ENCODING,
}


# --- Violations -------------------------------------------------------------------------
_UNKNOWN = object()  # a value never echoed (unknown members, audio, whole payloads)


def json_int(text: str) -> int | Decimal:
    """``json.loads``'s ``parse_int``: an integer of more digits than ``int()``
    converts (4,300) is read as a :class:`~decimal.Decimal`, which no member takes
    for an integer, so that it is refused as the member's type or range, not the
    whole body as JSON that is not valid, with Python's advice to change
    ``sys.set_int_max_str_digits()``."""
    try:
        return int(text)
    except ValueError:
        return Decimal(text)


def _where(location: str, member: str | None = None) -> str:
    return f"'{location}'" if member in (None, location) else f"'{location}' ({member})"


def _check_integer(value: object, shape: _Integer, where: str, out: list[str]) -> None:
    # bool is an int in Python but a JSON boolean on the wire: not an integer. A
    # Decimal is an integer of more digits than int() reads (json_int): its range
    # is the rule it breaks.
    if not isinstance(value, int | Decimal) or isinstance(value, bool):
        out.append(violation(value, where, "Member must be an integer"))
    elif value < shape.min:
        out.append(
            violation(value, where, f"Member must have value greater than or equal to {shape.min}")
        )
    elif value > shape.max:
        out.append(
            violation(value, where, f"Member must have value less than or equal to {shape.max}")
        )


def _decode_blob(value: object) -> bytes | None:
    """Return the bytes of a JSON blob (standard, padded base64), or None if it is not one."""
    if not isinstance(value, str) or not _padded(value):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):  # ValueError: non-ASCII characters
        return None


def _padded(text: str | bytes) -> bool:
    """Whether ``text`` has the length and padding of standard padded base64: a
    multiple of four, at most two ``=``. Python's strict decoder also takes padding
    past a whole group (``AAAA=``, ``AAAA====``); padded base64 has none there, and
    Java's decoder refuses it."""
    if isinstance(text, str):
        return not len(text) % 4 and not text.endswith("===")
    return not len(text) % 4 and not text.endswith(b"===")


def _check(value: object, shape: _Shape, path: str, out: list[str]) -> None:
    """Append to ``out`` every violation of ``shape`` by the non-null JSON ``value`` at ``path``."""
    match shape:
        case TextShape():
            if not shape.ok(value):
                out.extend(shape.violations(value, _where(path)))
        case _Integer():
            _check_integer(value, shape, _where(path), out)
        case _Boolean():
            if not isinstance(value, bool):
                out.append(violation(value, _where(path), "Member must be a boolean"))
        case _Blob():
            if _decode_blob(value) is None:  # audio is not echoed back
                out.append(
                    violation(_UNKNOWN, _where(path), "Member must be a base64-encoded string")
                )
        case _List():
            _check_list(value, shape, path, out)
        case _Structure():
            _check_structure(value, shape, path, out)


def _check_list(value: object, shape: _List, path: str, out: list[str]) -> None:
    where = _where(path)
    if not isinstance(value, list):  # what came instead may hold sensitive text: not echoed
        out.append(violation(_UNKNOWN, where, "Member must be a list"))
        return
    if len(value) < shape.min_len:
        out.append(
            violation(
                value, where, f"Member must have length greater than or equal to {shape.min_len}"
            )
        )
    if len(value) > shape.max_len:
        out.append(
            violation(
                value, where, f"Member must have length less than or equal to {shape.max_len}"
            )
        )
    for index, item in enumerate(value, start=1):
        item_path = f"{path}.{index}.member"
        if item is None:  # Smithy lists are dense unless @sparse; none here is
            out.append(violation(None, _where(item_path), "Member must not be null"))
        else:
            _check(item, shape.member, item_path, out)


def _check_structure(value: object, shape: _Structure, path: str, out: list[str]) -> None:
    if not isinstance(value, dict):  # what came instead may hold sensitive text: not echoed
        out.append(violation(_UNKNOWN, _where(path), "Member must be an object"))
        return
    # Unknown members are rejected. Whether the real service's JSON parser ignores or
    # rejects them is not documented; rejecting catches client typos, which is what an
    # emulator is for.
    for name in value:
        if name not in shape.members:
            rule = f"Member must be one of the modeled members [{', '.join(shape.members)}]"
            out.append(violation(_UNKNOWN, _where(f"{path}.{name}"), rule))
    # JSON null is an absent member, as in every AWS JSON protocol.
    for name in shape.required:
        if value.get(name) is None:
            out.append(violation(None, _where(f"{path}.{name}"), "Member must not be null"))
    present = [name for name in shape.members if value.get(name) is not None]
    if shape.union and len(present) != 1:
        found = f"{len(present)}" + (f" ({', '.join(present)})" if present else "")
        known = ", ".join(shape.members)
        rule = f"Member must have exactly one of [{known}] set, found {found}"
        out.append(violation(value, _where(path), rule))
    for name in present:
        _check(value[name], shape.members[name], f"{path}.{name}", out)


def _check_channel_pairing(value: object, out: list[str]) -> None:
    """Two-channel audio as the service's documentation describes it: ids 0 and 1,
    roles PATIENT and CLINICIAN, each once.

    The model states only two definitions, ids 0-1 and the role enum: this is the
    emulator's rule (a channel defined twice leaves the other's role unknown, and
    its segments' ``ch_`` ids with it), and its messages say so. Checked only once
    both definitions are otherwise valid, so one mistake is one message.
    """
    if not (
        isinstance(value, list) and len(value) == 2 and all(isinstance(d, dict) for d in value)
    ):
        return
    ids = [d.get("channelId") for d in value]
    roles = [d.get("participantRole") for d in value]
    where = _where("configurationEvent.channelDefinitions")
    if all(type(i) is int and 0 <= i <= 1 for i in ids) and ids[0] == ids[1]:
        rule = f"Member must define channelId 0 and channelId 1 once each{_EMULATOR_RULE}"
        out.append(violation(value, where, rule))
    if all(r in _ROLES for r in roles) and roles[0] == roles[1]:
        rule = f"Member must assign PATIENT and CLINICIAN once each{_EMULATOR_RULE}"
        out.append(violation(value, where, rule))


#: Said of a refusal the service model does not state (the emulator's reading of
#: the service's documentation): a user must not take it for a model constraint.
_EMULATOR_RULE = " (an emulator rule: the service model does not state it)"
#: Said of a refusal the service's API documentation states in its words, which the
#: model's constraints do not.
_DOCUMENTED_RULE = " (the service's documentation says so; the model's constraints do not)"


def _check_coding_context(document: Mapping[str, Any], out: list[str], *, today: date) -> None:
    """The medical coding context's rules that the service documents in words only:
    a date of birth after the current date in UTC, an encounter date more than one
    day after it, and an encounter reason of nothing but spaces are refused.

    Checked for values that passed the model's pattern only, so one mistake is one
    message. The dates are compared as the text the pattern took (a day the
    calendar lacks, such as 02-30, is compared as written): the pattern is the
    model's whole rule for their form.
    """
    context = document.get("encounterContext")
    coding = context.get("medicalCodingContext") if isinstance(context, dict) else None
    if not isinstance(coding, dict):
        return
    where = "configurationEvent.encounterContext.medicalCodingContext"
    limits = (
        ("dateOfBirth", today, "Member must not be after the current date in UTC"),
        (
            "encounterDate",
            today + timedelta(days=1),
            "Member must not be more than one day after the current date in UTC",
        ),
    )
    for name, latest, rule in limits:
        value = coding.get(name)
        if isinstance(value, str) and _ISO_DATE.ok(value) and value > latest.isoformat():
            rule = f"{rule}, {today.isoformat()}{_DOCUMENTED_RULE}"
            out.append(violation(value, _where(f"{where}.{name}"), rule, sensitive=True))
    reason = coding.get("encounterReason")
    if isinstance(reason, str) and _ENCOUNTER_REASON.ok(reason) and not reason.strip(" "):
        rule = f"Member must not contain only spaces{_DOCUMENTED_RULE}"
        out.append(violation(reason, _where(f"{where}.encounterReason"), rule, sensitive=True))


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


#: ``json.loads(text, parse_constant=...)`` builds a decoder, C scanner included,
#: on every call: 2.6 us for a session-control event, against 0.8 us with this.
_JSON_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_int=json_int)
_BOM = "\ufeff"
#: A JSON escape of half a UTF-16 surrogate pair: the only way a surrogate gets
#: into parsed JSON (the text itself is strict UTF-8, which holds none). Texts
#: without one skip the walk of :func:`lone_surrogate`, a twentieth of the app's
#: cost of opening a stream. An escaped backslash before "ud800" also matches;
#: the walk then finds nothing. (YAML 1.1 reads no such escape: see
#: :mod:`emulator.scenario`.)
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _load_json_object(payload: bytes, event: str) -> dict[str, Any]:
    """Return the JSON object in ``payload``; raise ValidationException if it is not one."""
    try:
        text = payload.decode("utf-8")
        if text.startswith(_BOM):  # what json.loads says of one
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        document = _JSON_DECODER.decode(text)
    except UnicodeDecodeError as error:
        rule = f"Payload must be UTF-8 JSON (invalid byte at offset {error.start})"
    except json.JSONDecodeError as error:
        rule = f"Payload must be valid JSON ({error.msg}: line {error.lineno} column {error.colno})"
    except RecursionError:
        rule = (
            "Payload must nest its arrays and objects less deeply: the emulator's JSON "
            "reader stops at about 1,500 levels"
        )
    except ValueError as error:  # NaN/Infinity
        rule = f"Payload must be valid JSON ({error})"
    else:
        if not isinstance(document, dict):
            rule = "Payload must be a JSON object"
        elif (
            SURROGATE_ESCAPE.search(text) is not None
            and (member := lone_surrogate(document)) is not None
        ):
            # JSON may escape half a UTF-16 pair (\ud800), and a pattern such as
            # outputS3Uri's (/.*)? lets it through: nothing downstream (the
            # session's row, the artifacts, the admin API's JSON) could store it.
            where = _where(f"{event}.{member}")
            rule = "Member must be valid Unicode text (it holds an unpaired surrogate)"
            raise validation_error([violation(_UNKNOWN, where, rule)])
        else:
            return document
    raise validation_error([violation(_UNKNOWN, _where(event), rule)])


# --- The request headers ----------------------------------------------------------------
@dataclass(frozen=True, kw_only=True, slots=True)
class StreamRequest:
    """The six headers of a StartMedicalScribeListeningSession request, validated.

    Raises :class:`ValidationException` when built from values the model forbids.
    """

    session_id: str
    domain_id: str
    subscription_id: str
    language_code: str
    sample_rate: int
    media_encoding: str

    def __post_init__(self) -> None:
        out: list[str] = []
        _check_members(self._members(), HEADER_NAMES, out)
        raise_if(out)

    @classmethod
    def _checked(
        cls,
        *,
        session_id: str,
        domain_id: str,
        subscription_id: str,
        language_code: str,
        sample_rate: int,
        media_encoding: str,
    ) -> StreamRequest:
        """The request of values :func:`validate_stream_headers` has just checked,
        built without checking them a second time (a third of its cost)."""
        request = object.__new__(cls)
        setattr_ = object.__setattr__  # the dataclass is frozen
        setattr_(request, "session_id", session_id)
        setattr_(request, "domain_id", domain_id)
        setattr_(request, "subscription_id", subscription_id)
        setattr_(request, "language_code", language_code)
        setattr_(request, "sample_rate", sample_rate)
        setattr_(request, "media_encoding", media_encoding)
        return request

    def _members(self) -> dict[str, object]:
        return {
            "sessionId": self.session_id,
            "domainId": self.domain_id,
            "subscriptionId": self.subscription_id,
            "languageCode": self.language_code,
            "mediaSampleRateHertz": self.sample_rate,
            "mediaEncoding": self.media_encoding,
        }

    def response_headers(self) -> list[tuple[bytes, bytes]]:
        """Return the six headers the response echoes: lowercase names, canonical values."""
        return [
            (HEADER_NAMES[member].encode("ascii"), str(value).encode("latin-1"))
            for member, value in self._members().items()
        ]


# An integer header, as Java's Integer.parseInt reads one (ASCII digits only here).
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")


def lone_surrogate(document: object) -> str | None:
    """The member path (``a.b[2]``) of the first string or key in parsed JSON that
    holds an unpaired UTF-16 surrogate, or None when it has none.

    JSON may escape half a surrogate pair (``\\ud800``); no string of the service
    can hold one, and neither UTF-8 nor SQLite can store it. Walked without
    recursion: json.loads accepts nesting deeper than Python's recursion limit.
    """
    pending: list[tuple[object, str]] = [(document, "")]
    while pending:
        value, where = pending.pop()
        if isinstance(value, str):
            if not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    return (where or "body").encode("utf-8", "backslashreplace").decode("ascii")
        elif isinstance(value, dict):
            members = list(value.items())
            for key, member in reversed(members):
                path = f"{where}.{key}" if where else str(key)
                pending.append((member, path))
                pending.append((key, path))
        elif isinstance(value, list):
            pending.extend(
                (member, f"{where}[{i}]") for i, member in reversed(list(enumerate(value)))
            )
    return None


def integer_text(text: str) -> int:
    """``int(text)`` for ``[+-]?[0-9]+`` text of any number of leading zeros (int()
    refuses text over 4,300 characters); the significant digits must be few."""
    sign, digits = ("-", text[1:]) if text[:1] == "-" else ("", text.lstrip("+"))
    return int(sign + (digits.lstrip("0") or "0"))


#: Digits beyond which header text is read as out of range without int().
_INTEGER_DIGITS = 18


def _check_members(
    values: Mapping[str, object],
    locations: Mapping[str, str],
    out: list[str],
    *,
    header_text: bool = False,
) -> None:
    """Append the violations of header/path members; ``header_text``: integers still text."""
    for member, value in values.items():
        shape = _HEADER_SHAPES[member]
        if isinstance(shape, TextShape) and shape.ok(value):
            continue  # the common case: nothing to word
        where = _where(locations.get(member, member), member)
        if value is None:
            out.append(violation(None, where, "Member must not be null"))
        elif isinstance(shape, TextShape):
            out.extend(shape.violations(value, where))
        elif header_text and isinstance(value, str) and _INTEGER_TEXT.fullmatch(value):
            if len(value.lstrip("+-").lstrip("0")) > _INTEGER_DIGITS:
                # Far out of any range here, and int() refuses text over 4,300
                # digits: worded from the text, which is echoed cut short.
                rule = (
                    f"Member must have value greater than or equal to {shape.min}"
                    if value.startswith("-")
                    else f"Member must have value less than or equal to {shape.max}"
                )
                out.append(violation(value, where, rule))
            else:
                _check_integer(integer_text(value), shape, where, out)
        else:
            _check_integer(value, shape, where, out)


def validate_ids(
    *,
    session_id: str | None,
    domain_id: str | None,
    subscription_id: str | None,
    locations: Mapping[str, str] = HEADER_NAMES,
) -> None:
    """Check the three identifiers against SessionId, DomainId and SubscriptionId.

    ``locations`` maps model member names to the wire names used in messages (headers by
    default; :data:`PATH_PARAMETER_NAMES` for GetMedicalScribeListeningSession). ``None``
    means the value is missing. Returns nothing; raises :class:`ValidationException`
    listing every violation.
    """
    out: list[str] = []
    values = {"sessionId": session_id, "domainId": domain_id, "subscriptionId": subscription_id}
    _check_members(values, locations, out)
    raise_if(out)


def id_constraints_broken(member: str, value: str) -> list[str]:
    """The constraints of the ``member`` identifier (``sessionId``, ``domainId`` or
    ``subscriptionId``) that ``value`` breaks, as the service words them ("Member must
    ..."); empty when a request could carry it."""
    shape = _HEADER_SHAPES[member]
    assert isinstance(shape, TextShape)  # the three ids are strings
    return shape.rules(value)


def header_text(value: bytes) -> str:
    """A header value's bytes as text to check and to quote: UTF-8, which the SDK
    sends (read as Latin-1, its 'ën-US' was quoted back as 'Ã«n-US', and the
    rejected list held an id the client never sent), any other byte escaped
    (``\\xff``). No value of the six headers may hold either: this is what an
    error, the log and the admin API show of one."""
    return value.decode("utf-8", "backslashreplace")


def validate_stream_headers(
    headers: Iterable[tuple[bytes, bytes]] | Iterable[tuple[str, str]] | Mapping[str, str],
) -> StreamRequest:
    """Return the :class:`StreamRequest` the six ``x-amzn-medscribe-*`` headers describe.

    ``headers`` is an ASGI raw header list (bytes pairs), any iterable of str pairs, or a
    mapping; names are matched case-insensitively, other headers are ignored, and a header
    sent twice is read as its values joined by ", " (RFC 9110 section 5.3). Raises
    :class:`ValidationException` listing every missing or invalid header.
    """
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    received: dict[str, str] = {}
    for raw_name, raw_value in pairs:
        if isinstance(raw_name, bytes):
            # Only these six are read: the request's other headers (half of them
            # under HTTP/2) are passed over undecoded.
            if raw_name[:_PREFIX_LENGTH].lower() != _HEADER_PREFIX:
                continue
            # ASGI carries header bytes undecoded; latin-1 maps each byte to one character.
            name = raw_name.decode("latin-1").lower()
        else:
            name = raw_name.lower()
        value = header_text(raw_value) if isinstance(raw_value, bytes) else raw_value
        value = value.strip(" \t")  # optional whitespace is not part of a field value
        received[name] = f"{received[name]}, {value}" if name in received else value

    out: list[str] = []
    values = {member: received.get(header) for member, header in HEADER_NAMES.items()}
    _check_members(values, HEADER_NAMES, out, header_text=True)
    raise_if(out)
    return StreamRequest._checked(
        session_id=received[HEADER_NAMES["sessionId"]],
        domain_id=received[HEADER_NAMES["domainId"]],
        subscription_id=received[HEADER_NAMES["subscriptionId"]],
        language_code=received[HEADER_NAMES["languageCode"]],
        sample_rate=integer_text(received[HEADER_NAMES["mediaSampleRateHertz"]]),
        media_encoding=received[HEADER_NAMES["mediaEncoding"]],
    )


_HEADER_PREFIX = b"x-amzn-medscribe-"
_PREFIX_LENGTH = len(_HEADER_PREFIX)
assert all(name.encode().startswith(_HEADER_PREFIX) for name in HEADER_NAMES.values())


# --- Input events -----------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True, slots=True)
class ChannelDefinition:
    """Which participant speaks on one audio channel (0 or 1)."""

    channel_id: int
    participant_role: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Configuration:
    """A validated MedicalScribeConfigurationEvent.

    ``raw`` is the event's JSON object; the other fields are views of it. Mappings are
    read-only by contract (plain dicts, so they serialise back to JSON unchanged).
    """

    channel_definitions: tuple[ChannelDefinition, ...] | None
    encounter_context: Mapping[str, Any] | None
    post_stream_action_settings: Mapping[str, Any]
    template_type: str
    template_kind: Literal["managedTemplate", "customTemplate"]
    medical_code_generation: bool | None
    raw: Mapping[str, Any]

    @property
    def channels(self) -> int:
        """Return the audio channel count: 2 with channel definitions, else 1."""
        return 2 if self.channel_definitions else 1

    def role_of(self, channel_id: int) -> str | None:
        """Return the participant role of ``channel_id``, or None if it has none."""
        for definition in self.channel_definitions or ():
            if definition.channel_id == channel_id:
                return definition.participant_role
        return None


#: Configuration payloads that passed the checks lately. The checks depend on
#: the bytes alone, and an application's sessions mostly send the same
#: configuration: its checks were two thirds of reading one (22 of 32 us), in
#: every stream's open. The JSON is still parsed for each stream, so no two
#: sessions share a document.
_PASSED_CONFIGURATIONS: set[bytes] = set()
#: Bounded so clients sending ever new configurations cannot grow it; an
#: application's sessions mostly send the same one, and a full set is cleared,
#: which costs only checking them again.
_PASSED_LIMIT = 256
#: The SDK's configurations are a few hundred bytes (192 and 305 in the tests);
#: larger ones are not kept, so the set holds at most 4 MiB instead of 256
#: payloads of up to the codec's MAX_PAYLOAD_LENGTH (24 MiB each).
_PASSED_PAYLOAD_LIMIT = 16 * 1024


def parse_configuration_event(payload: bytes) -> Configuration:
    """Return the :class:`Configuration` in a ``configurationEvent`` JSON payload.

    Raises :class:`ValidationException` if the payload is not a UTF-8 JSON object, or
    listing every violation of the model and of the two-channel rule.
    """
    document = _load_json_object(payload, "configurationEvent")
    if type(payload) is not bytes or payload not in _PASSED_CONFIGURATIONS:
        out: list[str] = []
        _check_structure(document, _CONFIGURATION, "configurationEvent", out)
        _check_channel_pairing(document.get("channelDefinitions"), out)
        _check_coding_context(document, out, today=datetime.now(UTC).date())
        raise_if(out)
        if type(payload) is bytes and len(payload) <= _PASSED_PAYLOAD_LIMIT:
            if len(_PASSED_CONFIGURATIONS) >= _PASSED_LIMIT:
                _PASSED_CONFIGURATIONS.clear()
            _PASSED_CONFIGURATIONS.add(payload)

    settings = document["postStreamActionSettings"]
    templates = settings["clinicalNoteGenerationSettings"]["noteTemplateSettings"]
    kind: Literal["managedTemplate", "customTemplate"] = (
        "managedTemplate" if templates.get("managedTemplate") is not None else "customTemplate"
    )
    definitions = document.get("channelDefinitions")
    coding = settings.get("medicalCodeGenerationSettings")
    return Configuration(
        channel_definitions=None
        if definitions is None
        else tuple(
            ChannelDefinition(channel_id=d["channelId"], participant_role=d["participantRole"])
            for d in definitions
        ),
        encounter_context=document.get("encounterContext"),
        post_stream_action_settings=settings,
        template_type=templates[kind]["templateType"],
        template_kind=kind,
        medical_code_generation=None if coding is None else coding["enabled"],
        raw=document,
    )


_AUDIO_PREFIX = b'{"audioChunk":"'
_AUDIO_SUFFIX = b'"}'
_AUDIO_START = len(_AUDIO_PREFIX)
_AUDIO_STOP = len(_AUDIO_SUFFIX)


def _sdk_audio_chunk(payload: bytes) -> bytes | None:
    """The text between the quotes of ``{"audioChunk":"..."}``, the SDK's exact
    layout, or None for any other payload. The text is not checked yet."""
    if (
        len(payload) >= _AUDIO_START + _AUDIO_STOP
        and payload.startswith(_AUDIO_PREFIX)
        and payload.endswith(_AUDIO_SUFFIX)
    ):
        return payload[_AUDIO_START:-_AUDIO_STOP]
    return None


def audio_event_base64(payload: bytes) -> tuple[bytes, int] | None:
    """Return ``(base64 text, decoded size)`` of an ``audioEvent`` in the SDK's layout.

    The per-frame path, for callers that need only the audio's size now: it
    checks the chunk without decoding it, accepting a subset of what
    :func:`parse_audio_event` accepts: base64 whose length is a multiple of four
    with at most two trailing ``=``, which is what every encoder writes
    (:func:`emulator.speedups.base64_size`). Returns ``None`` for any other
    payload, valid or not (JSON with spaces, an escaped character): call
    :func:`parse_audio_event` for its audio or its error.
    """
    text = _sdk_audio_chunk(payload)
    if text is None:
        return None
    size = _base64_size(text)
    return None if size < 0 else (text, size)


def _python_audio_event_size(payload: bytes) -> int:
    found = audio_event_base64(payload)
    return -1 if found is None else found[1]


#: ``audio_event_size(payload) -> int``: the decoded size that
#: :func:`audio_event_base64` gives, or -1 where it gives ``None``, without the
#: text (the C one where :mod:`emulator.speedups` has it). The text is
#: ``payload[AUDIO_CHUNK_START:-AUDIO_CHUNK_STOP]``.
audio_event_size = speedups.audio_event_size or _python_audio_event_size
AUDIO_CHUNK_START = _AUDIO_START
AUDIO_CHUNK_STOP = _AUDIO_STOP


def parse_audio_event(payload: bytes) -> bytes:
    """Return the audio bytes of an ``audioEvent`` JSON payload (``{"audioChunk": base64}``).

    Raises :class:`ValidationException` if the payload is not a JSON object, lacks
    ``audioChunk``, has other members, or the chunk is not standard padded base64.
    """
    # The per-frame path of FLAC audio (PCM takes audio_event_base64 first) and of
    # base64 that path declines: the exact bytes the SDK's JSON codec writes,
    # ``{"audioChunk":"<base64>"}``, are decoded without a JSON parse. A strict
    # decode accepts only base64 characters, so a chunk that decodes holds no
    # quote or backslash and the JSON parse would have given the same string;
    # strict mode accepts exactly what ``b64decode(validate=True)`` does.
    text = _sdk_audio_chunk(payload)
    if text is not None and _padded(text):
        try:
            return binascii.a2b_base64(text, strict_mode=True)
        except binascii.Error:
            pass  # the generic path below explains what is wrong
    document = _load_json_object(payload, "audioEvent")
    # A well-formed event in another layout is decoded once here; the generic
    # structure check (which decodes the blob too) only explains failures.
    if len(document) == 1:
        value = document.get("audioChunk")
        if isinstance(value, str):
            decoded = _decode_blob(value)
            if decoded is not None:
                return decoded
    out: list[str] = []
    _check_structure(document, _AUDIO_EVENT, "audioEvent", out)
    raise_if(out)
    chunk = _decode_blob(document["audioChunk"])
    assert chunk is not None  # checked above
    return chunk


def parse_session_control_event(payload: bytes) -> str:
    """Return the ``type`` of a ``sessionControlEvent`` JSON payload: ``"END_OF_SESSION"``.

    Raises :class:`ValidationException`, listing the allowed values, for any other type.
    """
    document = _load_json_object(payload, "sessionControlEvent")
    out: list[str] = []
    _check_structure(document, _SESSION_CONTROL_EVENT, "sessionControlEvent", out)
    # The model leaves `type` optional, but an event without one asks for nothing the
    # emulator could do: refused, saying it is missing and what it must be.
    if document.get("type") is None:
        rule = (
            "Member must not be null: a session control event's type must be one of "
            f"[{', '.join(_END_OF_SESSION.enum or ())}]{_EMULATOR_RULE}"
        )
        out.append(violation(None, _where("sessionControlEvent.type"), rule))
    raise_if(out)
    event_type: str = document["type"]
    return event_type
