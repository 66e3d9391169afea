"""GetMedicalScribeListeningSession: a session's details, shaped as the model says.

``GET /medical-scribe-stream/domain/{domainId}/subscription/{subscriptionId}/session/{sessionId}``
answers ``{"medicalScribeListeningSessionDetails": ...}`` (rest-json: timestamps
as epoch seconds, absent members omitted). Raw ASGI like the stream route, so
both send a service error with :func:`emulator.stream.error_response`, as
:func:`emulator.errors.http_error` shapes it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from .backend import log_refused_call
from .errors import ResourceNotFoundException, ServiceError, service_error
from .extensions import Receive, Scope, Send
from .ids import new_request_id, request_id_headers
from .quotas import Quotas, access_key_of
from .record import SessionKey, SessionRecord
from .stream import error_response
from .validation import PATH_PARAMETER_NAMES, validate_ids

__all__ = ["GET_SESSION_PATH", "SessionDetailsEndpoint", "match_session_path", "session_details"]

#: The model's URI of GetMedicalScribeListeningSession. With a trailing slash it is
#: no route, as every other operation's path is (the 404 names the path meant).
GET_SESSION_PATH = re.compile(
    r"/medical-scribe-stream/domain/([^/]*)/subscription/([^/]*)/session/([^/]*)"
)


def match_session_path(scope: Scope) -> tuple[str, str, str] | None:
    """Return ``(domainId, subscriptionId, sessionId)`` from the request's path, or None.

    Matched on the raw path, so an escaped ``/`` stays inside its id.
    """
    raw = scope.get("raw_path") or scope["path"].encode("utf-8")
    match = GET_SESSION_PATH.fullmatch(raw.split(b"?", 1)[0].decode("latin-1"))
    if match is None:
        return None
    domain_id, subscription_id, session_id = (unquote(part) for part in match.groups())
    return domain_id, subscription_id, session_id


def session_details(record: SessionRecord) -> dict[str, Any]:
    """Return ``record`` as a MedicalScribeListeningSessionDetails JSON object."""
    key = record.key
    details: dict[str, Any] = {
        "sessionId": key.session_id,
        "domainId": key.domain_id,
        "subscriptionId": key.subscription_id,
        "languageCode": record.language_code,
        "mediaSampleRateHertz": record.sample_rate,
        "mediaEncoding": record.media_encoding,
    }
    configuration = record.configuration or {}
    definitions = configuration.get("channelDefinitions")
    if definitions:
        details["channelDefinitions"] = [
            {"channelId": d["channelId"], "participantRole": d["participantRole"]}
            for d in definitions
        ]
    if "postStreamActionSettings" in configuration:
        details["postStreamActionSettings"] = _settings_response(
            configuration["postStreamActionSettings"]
        )
    context = configuration.get("encounterContext")
    details["encounterContextProvided"] = context is not None
    details["medicalCodingContextProvided"] = bool(
        context and context.get("medicalCodingContext") is not None
    )
    details["streamStatus"] = record.status.value
    # Epoch seconds with milliseconds, as AWS sends them (and as the domains'
    # and subscriptions' times are): the record keeps its clock's full float.
    details["streamCreationTime"] = round(record.created_at, 3)
    if record.ended_at is not None:
        details["streamEndTime"] = round(record.ended_at, 3)
    result = record.post_stream_result()
    if result is not None:
        details["postStreamActionResult"] = result
    return details


def _settings_response(settings: Mapping[str, Any]) -> dict[str, Any]:
    """MedicalScribePostStreamActionSettingsResponse: the template's type only, no
    custom instructions."""
    templates = settings["clinicalNoteGenerationSettings"]["noteTemplateSettings"]
    kind = "customTemplate" if templates.get("customTemplate") is not None else "managedTemplate"
    response: dict[str, Any] = {
        "outputS3Uri": settings["outputS3Uri"],
        "clinicalNoteGenerationSettings": {
            "noteTemplateSettings": {kind: {"templateType": templates[kind]["templateType"]}}
        },
    }
    coding = settings.get("medicalCodeGenerationSettings")
    if coding is not None:
        response["medicalCodeGenerationSettings"] = {"enabled": coding["enabled"]}
    return response


class SessionDetailsEndpoint:
    """ASGI app for GET on :data:`GET_SESSION_PATH`, over ``backend`` (an
    :class:`emulator.backend.Backend`)."""

    def __init__(self, backend: Any, *, quotas: Quotas | None = None) -> None:
        self.backend = backend
        self.quotas = quotas

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, *, ids: tuple[str, str, str]
    ) -> None:
        """Answer one Get; ``ids`` are :func:`match_session_path`'s."""
        request_id = new_request_id()
        domain_id, subscription_id, session_id = ids
        try:
            if self.quotas is not None:
                try:
                    self.quotas.check_get(access_key_of(scope["headers"]))
                except ServiceError as throttled:
                    log_refused_call(scope, throttled, request_id=request_id)
                    raise
            # An empty label is a value too short, as the other operations' paths say.
            validate_ids(
                session_id=session_id,
                domain_id=domain_id,
                subscription_id=subscription_id,
                locations=PATH_PARAMETER_NAMES,
            )
            # A look-up, not a start: a deactivated subscription's sessions can still be
            # read (the model gives Get no ValidationException to refuse it with).
            self.backend.check_resources(
                domain_id=domain_id, subscription_id=subscription_id, require_active=False
            )
            key = SessionKey(domain_id, subscription_id, session_id)
            rule = self.backend.match_get_rule(key)
            if rule is not None and rule.error is not None:
                refused = service_error(*rule.error)
                log_refused_call(scope, refused, request_id=request_id, rule_id=rule.id)
                raise refused
            record = self.backend.get(key)
            if record is None:
                raise ResourceNotFoundException(
                    f"MedicalScribeListeningSession {session_id} was not found in domain "
                    f"{domain_id}, subscription {subscription_id}"
                )
        except ServiceError as error:
            await error_response(send, error, request_id=request_id)
            return
        body = json.dumps(
            {"medicalScribeListeningSessionDetails": session_details(record)},
            separators=(",", ":"),
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *request_id_headers(request_id),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})
