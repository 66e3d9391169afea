"""What the emulator remembers of one listening session, over all its streams.

A :class:`SessionRecord` is keyed by (domainId, subscriptionId, sessionId). It
holds what the Get operation and the admin API report, and what a resumed
stream continues from; it serialises to the JSON document the store keeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .events import OutputEvent, StreamException, TranscriptResult
from .journal import Journal, iso_time
from .jsontext import compact_json
from .lifecycle import StreamStatus
from .session import ScribeSession, SessionProgress, SessionStats
from .store import SCRIPT_REF

__all__ = ["SessionKey", "SessionRecord", "ScenarioText"]


class ScenarioText(NamedTuple):
    """A scenario's spec (see :attr:`SessionRecord.scenario`) and its JSON text;
    ``digest`` names a spec stored once for all its sessions (a script's: see
    :mod:`emulator.store`), None for one written into each row."""

    spec: dict[str, Any]
    text: str
    digest: str | None = None


class SessionKey(NamedTuple):
    """The identity of a listening session."""

    domain_id: str
    subscription_id: str
    session_id: str


@dataclass(slots=True, kw_only=True)
class SessionRecord:
    """One listening session. ``live`` is the stream feeding it now, if any.

    ``configuration`` is the latest configurationEvent as received (the user's
    data: never logged). ``scenario`` says how to rebuild what is replayed
    (see :meth:`emulator.backend.Backend.scenario_for`). ``post_stream`` is
    ``{"startedAt": epoch, "results": {artifact: ArtifactDetails JSON}}``.
    """

    key: SessionKey
    seq: int
    language_code: str
    sample_rate: int
    media_encoding: str
    created_at: float
    status: StreamStatus = StreamStatus.IN_PROGRESS
    ended_at: float | None = None
    configuration: dict[str, Any] | None = None
    scenario: dict[str, Any] | None = None
    progress: SessionProgress = field(default_factory=SessionProgress)
    streams: int = 0
    #: Of those, the streams a crash lost (see emulator.persistence's
    #: SessionSaver._roll_back): the session is as it was before each, so a
    #: probability draws as if it never ran.
    streams_lost: int = 0
    request_id: str = ""
    rule_id: str | None = None
    #: The older rule whose scenario a chaos-only rule's session replays (see
    #: RuleBook.scenario_under), or None.
    scenario_rule_id: str | None = None
    stats: SessionStats = field(default_factory=SessionStats)
    events_sent: dict[str, int] = field(default_factory=dict)
    errors: list[dict[str, str]] = field(default_factory=list)
    post_stream: dict[str, Any] | None = None
    live: ScribeSession | None = None
    journal: Journal | None = None
    #: The scenario's text when known: a scripted scenario's is encoded once
    #: for all its sessions and stored once (see :meth:`to_data_json`).
    scenario_text: ScenarioText | None = None
    #: While a stream runs, what it may change, as it was when the stream
    #: started (see :meth:`mark_stream_start`): its row is written with the
    #: stream's first live counts, and a restart after a crash restores this.
    at_stream_start: dict[str, Any] | None = None

    # -- a stream's start, and its loss ----------------------------------------

    def mark_stream_start(self) -> None:
        """Remember what the stream now starting may change, for :meth:`roll_back`."""
        self.at_stream_start = {
            "configuration": self.configuration,
            "stats": _stats_json(self.stats),
            "eventsSent": dict(self.events_sent),
            "errors": list(self.errors),
        }

    def roll_back(self) -> None:
        """Restore what the stream that started last changed (a crash lost it: the
        session is as it was before it), as :meth:`mark_stream_start` kept it."""
        before = self.at_stream_start
        self.at_stream_start = None
        if before is None:  # a row of an earlier version: its counts stay
            return
        self.configuration = before["configuration"]
        self.stats = _stats_from(before["stats"])
        self.events_sent = dict(before["eventsSent"])
        self.errors = list(before["errors"])

    # -- running -------------------------------------------------------------

    @property
    def audio_seconds(self) -> float:
        """Seconds of audio received over all streams, the live one included."""
        return self.live.audio_seconds if self.live is not None else self.progress.audio_seconds

    def output_sent(self, event: OutputEvent, *, noted: bool = False) -> None:
        """Count one output event the live stream sent (an exception is also noted
        among the errors, unless :meth:`note_error` did so when it was made)."""
        if isinstance(event, TranscriptResult):
            key = "transcriptEvent"
            stats = self.stats
            stats.results_sent += 1
            if event.is_partial:
                stats.partials_sent += 1
            else:
                stats.finals_sent += 1
        else:
            assert isinstance(event, StreamException)
            key = event.member
            if not noted:
                self.note_error(event)
        self.events_sent[key] = self.events_sent.get(key, 0) + 1

    def note_error(self, event: StreamException) -> None:
        """Keep the in-stream exception the session ended with, sent or not."""
        self.errors.append({"type": event.member, "message": event.message})
        del self.errors[:-100]

    # -- admin views -----------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Return the admin API's one-line view of the session."""
        scenario = self.scenario or {}
        return {
            "sessionId": self.key.session_id,
            "domainId": self.key.domain_id,
            "subscriptionId": self.key.subscription_id,
            "requestId": self.request_id,
            "status": self.status.value,
            "scenario": scenario.get("name"),
            "ruleId": self.rule_id,
            "scenarioRuleId": self.scenario_rule_id,
            "streams": self.streams,
            "startedAt": iso_time(self.created_at),
            "endedAt": None if self.ended_at is None else iso_time(self.ended_at),
            "audioSeconds": round(self.audio_seconds, 6),
        }

    def details(self) -> dict[str, Any]:
        """Return the admin API's full view: headers, configuration, counts and errors."""
        stats = self.stats
        return {
            **self.summary(),
            "headers": {
                "languageCode": self.language_code,
                "mediaSampleRateHertz": self.sample_rate,
                "mediaEncoding": self.media_encoding,
            },
            "configuration": self.configuration,
            "eventsReceived": dict(stats.events_received),
            "audioBytes": stats.audio_bytes,
            "eventsSent": dict(self.events_sent),
            "partialsSent": stats.partials_sent,
            "finalsSent": stats.finals_sent,
            "errors": list(self.errors),
            "postStreamActionResult": self.post_stream_result(),
        }

    def post_stream_result(self) -> dict[str, Any] | None:
        """The post-stream actions' results as GetMedicalScribeListeningSession
        gives them (``postStreamActionResult``), or None before END_OF_SESSION."""
        if self.post_stream is None:
            return None
        result: dict[str, Any] = {
            "clinicalNoteGenerationResult": {
                name: dict(artifact) for name, artifact in self.post_stream["results"].items()
            }
        }
        if "medicalCodes" in self.post_stream:
            result["medicalCodeGenerationResult"] = {
                "medicalCodesResult": dict(self.post_stream["medicalCodes"])
            }
        return result

    # -- storage ---------------------------------------------------------------

    def to_data(self) -> dict[str, Any]:
        """Return everything but the key, seq, status and creation time, as JSON."""
        return {
            "languageCode": self.language_code,
            "mediaSampleRateHertz": self.sample_rate,
            "mediaEncoding": self.media_encoding,
            "endedAt": self.ended_at,
            "configuration": self.configuration,
            "scenario": self.scenario,
            "progress": self.progress.to_json(),
            "streams": self.streams,
            **({"streamsLost": self.streams_lost} if self.streams_lost else {}),
            "requestId": self.request_id,
            "ruleId": self.rule_id,
            **({"scenarioRuleId": self.scenario_rule_id} if self.scenario_rule_id else {}),
            "stats": _stats_json(self.stats),
            "eventsSent": self.events_sent,
            "errors": self.errors,
            "postStream": self.post_stream,
            **({} if self.at_stream_start is None else {"atStreamStart": self.at_stream_start}),
        }

    def to_data_json(self) -> str:
        """:meth:`to_data` as compact JSON text.

        When :attr:`scenario_text` holds this very scenario's text, it is spliced
        in rather than encoded again, or, for a spec stored once (its digest
        known), the row names it by ``{"kind": "script", "name": ..., "ref":
        digest}`` (see :meth:`stored_script`, and :mod:`emulator.store`).
        """
        data = self.to_data()
        known = self.scenario_text
        if known is None or known.spec is not self.scenario:
            return compact_json(data)
        del data["scenario"]
        if known.digest is None:
            text = known.text
        else:  # kind and name too: a release before 0.3.0 reads a script it cannot rebuild
            text = compact_json(
                {"kind": "script", "name": known.spec.get("name"), SCRIPT_REF: known.digest}
            )
        return f'{compact_json(data)[:-1]},"scenario":{text}}}'

    def stored_script(self) -> tuple[str, str] | None:
        """``(digest, text)`` of the spec :meth:`to_data_json` names by its digest."""
        known = self.scenario_text
        if known is None or known.digest is None or known.spec is not self.scenario:
            return None
        return known.digest, known.text

    @classmethod
    def from_data(
        cls,
        key: SessionKey,
        *,
        seq: int,
        status: str,
        created_at: float,
        data: dict[str, Any],
    ) -> SessionRecord:
        """Return the record :meth:`to_data` stored.

        Raises :class:`ValueError`, :class:`KeyError` or :class:`TypeError` for a
        document it did not write.
        """
        return cls(
            key=key,
            seq=seq,
            language_code=data["languageCode"],
            sample_rate=int(data["mediaSampleRateHertz"]),
            media_encoding=data["mediaEncoding"],
            created_at=float(created_at),
            status=StreamStatus(status),
            ended_at=data.get("endedAt"),
            configuration=data.get("configuration"),
            scenario=data.get("scenario"),
            progress=SessionProgress.from_json(data["progress"]),
            streams=int(data.get("streams", 0)),
            streams_lost=int(data.get("streamsLost", 0)),
            request_id=data.get("requestId", ""),
            rule_id=data.get("ruleId"),
            scenario_rule_id=data.get("scenarioRuleId"),
            stats=_stats_from(data.get("stats") or {}),
            events_sent=dict(data.get("eventsSent", {})),
            errors=list(data.get("errors", [])),
            post_stream=data.get("postStream"),
            at_stream_start=data.get("atStreamStart"),
        )


def _stats_json(stats: SessionStats) -> dict[str, Any]:
    return {
        "eventsReceived": dict(stats.events_received),
        "audioBytes": stats.audio_bytes,
        "resultsSent": stats.results_sent,
        "partialsSent": stats.partials_sent,
        "finalsSent": stats.finals_sent,
    }


def _stats_from(data: dict[str, Any]) -> SessionStats:
    return SessionStats(
        events_received=dict(data.get("eventsReceived", {})),
        audio_bytes=int(data.get("audioBytes", 0)),
        results_sent=int(data.get("resultsSent", 0)),
        partials_sent=int(data.get("partialsSent", 0)),
        finals_sent=int(data.get("finalsSent", 0)),
    )
