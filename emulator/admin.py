"""The admin API under ``/_emulator/``: health, rules, reset, sessions and their journals.

Thin Starlette handlers over :class:`emulator.backend.Backend`. Every error is
JSON ``{"message": ...}`` naming the problem, with a fitting status. A session
is named by its id; ``?domainId=`` and ``?subscriptionId=`` pick one when
several domains or subscriptions used the same id (else the newest wins).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from . import __version__
from .artifacts import ARTIFACT_NAMES, DiskBuckets
from .backend import SYNTHETIC, Backend
from .errors import ConfigError
from .journal import AudioPart, journal_damage, wav_header
from .logs import get_logger
from .problems import FieldPath, Problem, render_path, shown
from .quotas import Quotas
from .record import SessionRecord
from .requestbody import read_limited, unfinished_body
from .validation import id_constraints_broken, json_int, lone_surrogate

#: What changes for every client of a shared emulator (a reset, every rule
#: deleted) is said at info, with who asked; one rule's coming and going at debug.
log = get_logger("medscribe.admin")

__all__ = ["AdminAPI", "admin_routes"]

#: Largest admin request body accepted; an inline scenario fits well within it.
MAX_ADMIN_BODY = 4 * 1024 * 1024


#: The filters GET /_emulator/sessions takes, each a field of the entries listed.
_LIST_FILTERS = ("sessionId", "domainId", "subscriptionId", "status")
#: What picks one session of an id (the newest without them).
_PICK_FILTERS = ("domainId", "subscriptionId")

#: A session's statuses (GetMedicalScribeListeningSession's streamStatus).
_STATUSES = ("IN_PROGRESS", "PAUSED", "COMPLETED", "FAILED")


class _JSON(JSONResponse):
    """Starlette's JSON answer, with half a UTF-16 surrogate pair escaped (``\\ud800``)
    instead of failing to encode: a journal shows what a client sent, and JSON
    escapes let a client send one in an event the stream then refused."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return text.encode("utf-8", "backslashreplace")


def _error(status: int, message: str) -> JSONResponse:
    return _JSON({"message": message}, status_code=status)


class _Repeated(dict[str, Any]):
    """A JSON object with a member name given twice: its members (the last of each
    name) and ``pairs``, every member as written, kept to find the name's path."""

    pairs: list[tuple[str, Any]]


class _Members:
    """``json.loads``'s ``object_pairs_hook``: an object's members, a
    :class:`_Repeated` when a name is given twice (json keeps the last silently,
    so a rule could run with another scenario than the one read). Raising here
    could not say where the object is: the parser builds inner objects first.
    ``repeated`` tells whether any object had one, so that a body without is not
    walked again."""

    def __init__(self) -> None:
        self.repeated = False

    def __call__(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        document = dict(pairs)
        if len(document) == len(pairs):
            return document
        self.repeated = True
        repeated = _Repeated(document)
        repeated.pairs = pairs
        return repeated


def _first_repeated(document: object) -> FieldPath | None:
    """The path of the first member name given twice in an object of ``document``
    (parsed with :class:`_Members`), in the order written, or None when there is none.

    Walked without recursion (json.loads accepts nesting deeper than Python's
    recursion limit), through the members a repeated name replaced too.
    """
    pending: list[tuple[Iterator[tuple[str | int, Any]], FieldPath, set[str | int] | None]] = []

    def enter(value: object, path: FieldPath) -> None:
        if isinstance(value, _Repeated):
            pending.append((iter(value.pairs), path, set()))
        elif isinstance(value, dict):
            pending.append((iter(value.items()), path, None))
        elif isinstance(value, list):
            pending.append((enumerate(value), path, None))

    enter(document, ())
    while pending:
        members, path, seen = pending[-1]
        for name, value in members:
            if seen is not None:
                if name in seen:
                    return (*path, name)
                seen.add(name)
            if isinstance(value, dict | list):
                enter(value, (*path, name))
                break  # its members come next, then the rest of this one's
        else:
            pending.pop()
    return None


def _int(text: str) -> int:
    """``json.loads``'s ``parse_int``, naming an integer too long to read (Python's
    own message advised changing ``sys.set_int_max_str_digits()``)."""
    value = json_int(text)
    if not isinstance(value, int):
        raise ConfigError(
            f"request body: an integer of {len(text.lstrip('-'))} digits; no member takes "
            "one of more than 4300"
        )
    return value


async def _json_body(request: Request) -> Any:
    """The request's JSON document. The body is read only up to the limit: one
    past it is refused as soon as it is known (by its Content-Length, or once
    that much has arrived), not held in memory whole first. Raises ConfigError
    naming what is wrong: a member name given twice as ``<request>: path: duplicate
    key`` (the first repeated, in the order written), as a rule's fields are named."""
    declared = request.headers.get("content-length", "")
    try:
        body, received = await read_limited(request, MAX_ADMIN_BODY)
    except ClientDisconnect:
        raise ConfigError(unfinished_body(request.scope)) from None
    if received > MAX_ADMIN_BODY:
        if declared.isascii() and declared.isdigit():
            raise ConfigError(f"request body is {declared} bytes; the limit is {MAX_ADMIN_BODY}")
        raise ConfigError(
            f"request body is over {MAX_ADMIN_BODY} bytes, the limit (it was not read further)"
        )
    if not body.strip():
        raise ConfigError("request body is empty: expected a JSON object")
    members = _Members()
    try:
        document = json.loads(body, object_pairs_hook=members, parse_int=_int)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"request body is not valid JSON: {error}") from None
    except RecursionError:
        raise ConfigError("request body is not valid JSON: nested too deeply") from None
    except ValueError as error:
        raise ConfigError(f"request body is not valid JSON: {error}") from None
    if members.repeated and (repeated := _first_repeated(document)) is not None:
        # Named as a rule's other problems are (``<request>: field: message``); a
        # name a path cannot show (empty, long, or with '.' or '[') is quoted after it.
        *parent, key = repeated
        if isinstance(key, str) and (not key or len(key) > 64 or set(key) & set(".[]")):
            field, message = render_path(tuple(parent)), f"duplicate key {shown(key)}"
        else:
            field, message = render_path(repeated), "duplicate key"
        raise ConfigError(str(Problem(file="<request>", line=None, field=field, message=message)))
    if (where := lone_surrogate(document)) is not None:
        raise ConfigError(f"{where}: must be valid Unicode text (it holds an unpaired surrogate)")
    return document


class AdminAPI:
    """The admin API's handlers over ``backend``, as moto's Responses classes are:
    each reads its request, acts on the backend and answers JSON (errors as
    ``{"message": ...}``). :func:`admin_routes` binds them to their paths."""

    def __init__(
        self,
        backend: Backend,
        *,
        ca_file: Path | None,
        endpoints: dict[str, str],
        quotas: Quotas | None = None,
    ) -> None:
        self.backend = backend
        #: Reset with the backend: their rate windows are of the sessions forgotten.
        self.quotas = quotas
        self.ca_file = ca_file
        self.endpoints = endpoints
        #: Read once: the CA that signed the certificate this server runs with,
        #: even once the file is removed (a clean-up of the state directory) or replaced.
        self.ca_pem_bytes = (
            ca_file.read_bytes() if ca_file is not None and ca_file.exists() else None
        )

    async def health(self, request: Request) -> Response:
        return _JSON(
            {
                "status": "ready",
                "version": __version__,
                "endpoints": self.endpoints,
                "sessions": {"active": self.backend.active, "total": self.backend.total},
                "rules": len(self.backend.rules.list()),
                "defaultScenario": self.backend.default_scenario,
                "scenarios": [SYNTHETIC, *sorted(self.backend.scenarios)],
            }
        )

    async def ca_pem(self, request: Request) -> Response:
        if self.ca_file is None:
            return _error(404, "this emulator was started with a user-supplied certificate: no CA")
        if self.ca_pem_bytes is None:
            return _error(404, f"the CA file {self.ca_file} was missing when this emulator started")
        return Response(self.ca_pem_bytes, media_type="application/x-pem-file")

    async def list_rules(self, request: Request) -> Response:
        return _JSON({"rules": [rule.to_json() for rule in self.backend.rules.list()]})

    async def add_rule(self, request: Request) -> Response:
        try:
            rule = self.backend.add_rule(await _json_body(request))
        except ConfigError as error:
            return _error(400, f"invalid rule: {error}")
        log.debug("rule %s added by %s", rule.id, _who(request))
        return _JSON(rule.to_json(), status_code=201)

    async def delete_rules(self, request: Request) -> Response:
        count = len(self.backend.rules.list())
        self.backend.rules.clear()
        log.info("every rule deleted by %s: %d", _who(request), count)
        return _JSON({"deleted": count})

    async def delete_rule(self, request: Request) -> Response:
        rule_id = request.path_params["rule_id"]
        if not self.backend.rules.delete(rule_id):
            return _error(404, f"no rule with id {rule_id!r}")
        log.debug("rule %s deleted by %s", rule_id, _who(request))
        return _JSON({"deleted": 1})

    async def reset(self, request: Request) -> Response:
        before = len(self.backend.sessions)
        try:
            self.backend.reset()
        except ConfigError as error:
            return _error(400, f"cannot reset: {error}")
        if self.quotas is not None:
            self.quotas.reset()
        # Sessions with a stream still open are kept (their stream goes on): named,
        # so that a test harness can say why its "clean" emulator has a session.
        live = [record.key.session_id for record in self.backend.sessions.values()]
        # On a shared emulator, another job's sessions going is traced to this.
        log.info(
            "reset by %s: %d session(s) forgotten, %d kept for their open stream",
            _who(request),
            before - len(live),
            len(live),
        )
        return _JSON({"status": "reset", "liveSessions": live})

    async def list_sessions(self, request: Request) -> Response:
        if (refused := _repeated(request)) is not None:
            return refused
        filters = dict(request.query_params)
        unknown = sorted(set(filters) - set(_LIST_FILTERS))
        if unknown:
            return _error(
                400,
                f"unknown filter {', '.join('?' + name for name in unknown)}; the sessions "
                f"can be filtered by {', '.join('?' + name for name in _LIST_FILTERS)}",
            )
        status = filters.get("status")
        if status is not None and status not in _STATUSES:
            return _error(400, f"?status={status!r} is not one of {', '.join(_STATUSES)}")

        def wanted(entry: dict[str, Any]) -> bool:
            return all(entry.get(name) == value for name, value in filters.items())

        # Oldest first by creation: the registry's own order is by last use.
        records = sorted(self.backend.sessions.values(), key=lambda record: record.created_at)
        sessions = [record.summary() for record in records]
        return _JSON(
            {
                "sessions": [entry for entry in sessions if wanted(entry)],
                # A rejected request has no status: a status filter leaves none.
                "rejected": [
                    entry for entry in self.backend.rejections if status is None and wanted(entry)
                ],
                # The list keeps the newest rejections: a test looking for an older one
                # is told it was dropped, not that it never came.
                "rejectedDropped": self.backend.rejections_dropped,
            }
        )

    def _find(self, request: Request) -> SessionRecord | Response:
        session_id = request.path_params["session_id"]
        if (refused := _repeated(request)) is not None:
            return refused
        unknown = sorted(set(request.query_params) - set(_PICK_FILTERS))
        if unknown:
            # Ignored, a misspelt ?domainid= gave the newest session of that id,
            # perhaps another job's, as if it were the one asked for.
            return _error(
                400,
                f"unknown parameter {', '.join('?' + name for name in unknown)}; a session "
                f"is picked by {', '.join('?' + name for name in _PICK_FILTERS)}",
            )
        filters = {
            name: value
            for name in ("domainId", "subscriptionId")
            if (value := request.query_params.get(name)) is not None
        }
        for name, value in filters.items():
            if broken := id_constraints_broken(name, value):
                shown = value if len(value) <= 64 else value[:64] + "..."
                rules = "; ".join(rule.removeprefix("Member ") for rule in broken)
                return _error(400, f"?{name}={shown!r}: a {name} {rules}")
        record = self.backend.find(
            session_id,
            domain_id=filters.get("domainId"),
            subscription_id=filters.get("subscriptionId"),
        )
        if record is None:
            elsewhere = self.backend.find(session_id) if filters else None
            if elsewhere is not None:
                wanted = ", ".join(f"{name} {value}" for name, value in filters.items())
                key = elsewhere.key
                return _error(
                    404,
                    f"no session with id {session_id!r} and {wanted}; the newest with that id "
                    f"has domainId {key.domain_id}, subscriptionId {key.subscription_id}",
                )
            return _error(404, f"no session with id {session_id!r}")
        return record

    async def get_session(self, request: Request) -> Response:
        record = self._find(request)
        if isinstance(record, Response):
            return record
        return _JSON(record.details())

    async def session_events(self, request: Request) -> Response:
        record = self._find(request)
        if isinstance(record, Response):
            return record
        assert record.journal is not None
        key = record.key
        return _JSON(
            {
                "sessionId": key.session_id,
                "domainId": key.domain_id,
                "subscriptionId": key.subscription_id,
                "events": record.journal.entries(),
            }
        )

    async def session_audio(self, request: Request) -> Response:
        record = self._find(request)
        if isinstance(record, Response):
            return record
        return _audio_response(record)

    async def session_artifact(self, request: Request) -> Response:
        record = self._find(request)
        if isinstance(record, Response):
            return record
        return _artifact_response(record, request.path_params["name"], self.backend)

    async def list_scenarios(self, request: Request) -> Response:
        return _JSON({"scenarios": [SYNTHETIC, *sorted(self.backend.scenarios)]})


def admin_routes(
    backend: Backend,
    *,
    ca_file: Path | None,
    endpoints: dict[str, str],
    quotas: Quotas | None = None,
) -> list[Route]:
    """Return the admin routes bound to ``backend`` (and ``quotas``, which a reset resets)."""
    api = AdminAPI(backend, ca_file=ca_file, endpoints=endpoints, quotas=quotas)
    return [
        Route("/_emulator/health", _no_parameters(api.health), methods=["GET"]),
        Route("/_emulator/ca.pem", _no_parameters(api.ca_pem), methods=["GET"]),
        Route("/_emulator/rules", _no_parameters(api.list_rules), methods=["GET"]),
        Route("/_emulator/rules", _no_parameters(api.add_rule), methods=["POST"]),
        Route(
            "/_emulator/rules",
            _no_parameters(_no_body(api.delete_rules, _DELETE_RULES_HINT)),
            methods=["DELETE"],
        ),
        Route(
            "/_emulator/rules/{rule_id}",
            _no_parameters(_no_body(api.delete_rule, "the rule is named by the path")),
            methods=["DELETE"],
        ),
        Route(
            "/_emulator/reset", _no_parameters(_no_body(api.reset, _RESET_HINT)), methods=["POST"]
        ),
        Route("/_emulator/sessions", api.list_sessions, methods=["GET"]),
        Route("/_emulator/sessions/{session_id}", api.get_session, methods=["GET"]),
        Route("/_emulator/sessions/{session_id}/events", api.session_events, methods=["GET"]),
        Route("/_emulator/sessions/{session_id}/audio.wav", api.session_audio, methods=["GET"]),
        Route(
            "/_emulator/sessions/{session_id}/artifacts/{name}",
            api.session_artifact,
            methods=["GET"],
        ),
        Route("/_emulator/scenarios", _no_parameters(api.list_scenarios), methods=["GET"]),
    ]


def _repeated(request: Request) -> Response | None:
    """A 400 for a query parameter given twice, or None: only one of its values would
    count (``?status=COMPLETED&status=FAILED`` listed the failed sessions alone)."""
    names = [name for name, _ in request.query_params.multi_items()]
    twice = sorted({name for name in names if names.count(name) > 1})
    if not twice:
        return None
    return _error(
        400,
        f"{', '.join('?' + name for name in twice)} given more than once; each filter "
        "takes one value",
    )


def _no_parameters(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """``handler``, refusing a query parameter: none of these routes takes one, and
    one ignored misleads (``DELETE /_emulator/rules?domainId=...`` deleted every
    job's rules, ``GET`` listed them all)."""

    async def checked(request: Request) -> Response:
        if request.url.query:
            names = sorted({name for name, _ in request.query_params.multi_items()})
            shown = ", ".join(f"?{name}" for name in names) or f"?{request.url.query}"
            return _error(
                400,
                f"{request.method} {request.url.path} takes no parameters, got {shown}; "
                "only /_emulator/sessions and a session's look-ups take some",
            )
        return await handler(request)

    return checked


_DELETE_RULES_HINT = "it deletes every rule; DELETE /_emulator/rules/{id} deletes one"
_RESET_HINT = "it resets the whole emulator; nothing narrows it"


def _no_body(
    handler: Callable[[Request], Awaitable[Response]], hint: str
) -> Callable[[Request], Awaitable[Response]]:
    """``handler``, refusing a request body (bar an empty JSON object): ignored, a body
    naming what to act on (``{"id": "rule-6"}``) deleted or reset everything."""

    async def checked(request: Request) -> Response:
        received = bytearray()
        try:
            async for chunk in request.stream():
                received += chunk
                if len(received) > 64:
                    break  # enough to know it is not empty; the rest is not read
        except ClientDisconnect:
            return _error(400, unfinished_body(request.scope))
        if received.strip() not in (b"", b"{}"):
            shown = bytes(received[:64]).decode("utf-8", "replace")
            more = "..." if len(received) > 64 else ""
            return _error(
                400,
                f"{request.method} {request.url.path} takes no body ({hint}), got {shown!r}{more}",
            )
        return await handler(request)

    return checked


def _audio_response(record: SessionRecord) -> Response:
    """The session's audio: PCM as one WAV (every stream, in order); FLAC as received.

    A resumed FLAC session's streams are each a FLAC stream; they follow one another.
    """
    assert record.journal is not None
    streams = record.journal.audio_streams()
    try:
        sizes = [sum(part.size() for part in parts) for parts in streams]
    except OSError as error:  # a file of the journal's made unreadable
        return _error(500, f"session {record.key.session_id}: cannot read its audio: {error}")
    # A journal that lost audio would give a shorter file, looking whole.
    damage = journal_damage(
        record.journal, what="bytes of audio", held=sum(sizes), expected=record.stats.audio_bytes
    )
    if damage is not None:
        return _error(500, f"session {record.key.session_id}: no audio: {damage}")
    if record.media_encoding == "flac":
        parts = [part for parts in streams for part in parts]
        size = sum(sizes)
        if not parts:
            return _error(404, f"session {record.key.session_id} has received no audio")
        return StreamingResponse(
            _read(parts, limit=size),
            media_type="audio/flac",
            headers={"content-length": str(size)},
        )
    channels = 2 if (record.configuration or {}).get("channelDefinitions") else 1
    # Whole sample frames of each stream, as its clock counts them: a stream
    # ending inside a frame would shift every later stream's samples by its
    # stray bytes (noise, or the channels swapped).
    wholes = [
        (parts, size - size % (2 * channels)) for parts, size in zip(streams, sizes, strict=True)
    ]
    total = sum(whole for _, whole in wholes)
    header = wav_header(sample_rate=record.sample_rate, channels=channels, data_bytes=total)

    def body() -> Iterator[bytes]:
        yield header
        for parts, whole in wholes:
            yield from _read(parts, limit=whole)

    return StreamingResponse(
        body(), media_type="audio/wav", headers={"content-length": str(len(header) + total)}
    )


def _artifact_response(record: SessionRecord, name: str, backend: Backend) -> Response:
    """One post-stream artifact of ``record`` as written (JSON), from the S3
    stand-in on disk: 404 for a name that is none, 409 (saying why) while
    there is none to read."""
    key = record.key
    if name not in ARTIFACT_NAMES:
        known = ", ".join(ARTIFACT_NAMES)
        return _error(404, f"no artifact {name[:64]!r}; the artifacts are {known}")
    results = (record.post_stream or {}).get("results") or {}
    result = results.get(name)
    if result is None:
        if record.status.value == "FAILED":
            why = "a session that failed has none (its stream status is FAILED)"
        else:
            why = (
                "they start when its END_OF_SESSION is taken (its stream status is "
                f"{record.status.value})"
            )
        return _error(409, f"session {key.session_id} has no post-stream actions: {why}")
    if result["status"] == "IN_PROGRESS":
        return _error(
            409,
            f"session {key.session_id}'s {name} is IN_PROGRESS: it is written "
            f"{backend.post_stream_delay:g} s after the session's end (--post-stream-delay); "
            "ask again",
        )
    if result["status"] != "COMPLETED":
        reason = result.get("failureReason", "")
        return _error(409, f"session {key.session_id}'s {name} is {result['status']}: {reason}")
    location = result["outputLocation"]
    if not isinstance(backend.buckets, DiskBuckets):
        return _error(
            409,
            f"session {key.session_id}'s {name} was written to {location} on the S3 endpoint "
            "the emulator was given (--s3-endpoint-url): read it there",
        )
    bucket, _, object_key = location.removeprefix("s3://").partition("/")
    try:
        body = backend.buckets.path_of(bucket, object_key).read_bytes()
    except (OSError, ValueError) as error:
        return _error(
            404,
            f"session {key.session_id}'s {name} was written to {location}, but the file "
            f"cannot be read from the state directory: {error}",
        )
    return Response(body, media_type="application/json")


def _read(parts: list[AudioPart], *, limit: int) -> Iterator[bytes]:
    """Yield the parts' audio in turn (base64 parts decoded), ``limit`` bytes in all."""
    left = limit
    for part in parts:
        for chunk in part.read():
            if left <= 0:
                return
            piece = chunk[:left]
            left -= len(piece)
            yield piece


def _who(request: Request) -> str:
    """The client of an admin request, as its log line names it."""
    client = request.client
    return "?" if client is None else f"{client.host}:{client.port}"
