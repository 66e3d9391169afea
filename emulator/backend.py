"""The emulator's state: rules, scenarios and the record of every session (moto's backend).

Route handlers stay thin and call into :class:`Backend`; the backend holds no
I/O of its own beyond the optional rules file it reloads on reset.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, ServiceError
from .events import OutputEvent, StreamException, TranscriptResult
from .rules import Rule, RuleBook, load_rules_file, parse_rule
from .scenario import Scenario
from .session import ScenarioSource, ScribeSession
from .synthetic import synthetic_scenario
from .validation import Configuration, StreamRequest

__all__ = ["Backend", "SessionRecord", "SYNTHETIC"]

log = logging.getLogger("medscribe.sessions")

#: The scenario name that means "generate a visit with Faker".
SYNTHETIC = "synthetic"

#: How many session records are kept before the oldest finished ones go.
MAX_SESSION_RECORDS = 10_000


def _now() -> float:
    return time.time()


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


@dataclass(slots=True)
class SessionRecord:
    """What the admin API reports about one stream of a session."""

    request: StreamRequest
    request_id: str
    rule_id: str | None
    started_at: float = field(default_factory=_now)
    ended_at: float | None = None
    session: ScribeSession | None = None
    events_sent: dict[str, int] = field(default_factory=dict)
    errors: list[dict[str, str]] = field(default_factory=list)

    def attach(self, session: ScribeSession) -> None:
        self.session = session

    def output_sent(self, event: OutputEvent) -> None:
        if isinstance(event, TranscriptResult):
            key = "transcriptEvent"
        else:
            assert isinstance(event, StreamException)
            key = event.member
            self.errors.append({"type": event.member, "message": event.message})
        self.events_sent[key] = self.events_sent.get(key, 0) + 1

    @property
    def status(self) -> str:
        if self.session is None:
            return "IN_PROGRESS"
        state = self.session.state.value
        if state in ("AWAITING_CONFIGURATION", "STREAMING"):
            return "IN_PROGRESS"
        return state

    def summary(self) -> dict[str, Any]:
        session = self.session
        return {
            "sessionId": self.request.session_id,
            "domainId": self.request.domain_id,
            "subscriptionId": self.request.subscription_id,
            "requestId": self.request_id,
            "status": self.status,
            "scenario": session.scenario.name if session and session.scenario else None,
            "ruleId": self.rule_id,
            "startedAt": _iso(self.started_at),
            "endedAt": _iso(self.ended_at),
            "audioSeconds": round(session.audio_seconds, 6) if session else 0.0,
        }

    def details(self) -> dict[str, Any]:
        session = self.session
        configuration = session.configuration if session else None
        stats = session.stats if session else None
        return {
            **self.summary(),
            "headers": {
                "languageCode": self.request.language_code,
                "mediaSampleRateHertz": self.request.sample_rate,
                "mediaEncoding": self.request.media_encoding,
            },
            "configuration": dict(configuration.raw) if configuration else None,
            "eventsReceived": dict(stats.events_received) if stats else {},
            "audioBytes": stats.audio_bytes if stats else 0,
            "eventsSent": dict(self.events_sent),
            "partialsSent": stats.partials_sent if stats else 0,
            "finalsSent": stats.finals_sent if stats else 0,
            "errors": list(self.errors),
        }


class Backend:
    """Rules, scenarios and session records of one emulator process."""

    def __init__(
        self,
        *,
        scenarios: Mapping[str, Scenario],
        default_scenario: str = SYNTHETIC,
        seed: int = 0,
        rules_file: Path | None = None,
    ) -> None:
        if default_scenario != SYNTHETIC and default_scenario not in scenarios:
            raise ConfigError(
                f"--scenario {default_scenario!r} is not a known scenario; known: "
                + ", ".join([SYNTHETIC, *sorted(scenarios)])
            )
        self.scenarios = dict(scenarios)
        self.default_scenario = default_scenario
        self.seed = seed
        self.rules = RuleBook()
        self.rules_file = rules_file
        self.sessions: dict[str, SessionRecord] = {}
        self.rejections: list[dict[str, Any]] = []
        self.active = 0
        self.total = 0
        self._load_rules_file()

    # -- rules ---------------------------------------------------------------

    def _load_rules_file(self) -> None:
        if self.rules_file is not None and self.rules_file.exists():
            for rule in load_rules_file(self.rules_file, scenarios=self.scenarios):
                self.rules.add(rule)

    def add_rule(self, data: object) -> Rule:
        """Validate ``data`` (the admin API's JSON) and add it; raises ConfigError."""
        return self.rules.add(parse_rule(data, scenarios=self.scenarios))

    def match_rule(self, request: StreamRequest) -> Rule | None:
        return self.rules.match(
            session_id=request.session_id,
            domain_id=request.domain_id,
            subscription_id=request.subscription_id,
        )

    def reset(self) -> None:
        """Forget sessions and API-added rules; rules from the rules file come back."""
        self.rules.clear()
        self.sessions.clear()
        self.rejections.clear()
        self._load_rules_file()

    # -- scenarios -------------------------------------------------------------

    def scenario_for(
        self, request: StreamRequest, configuration: Configuration, *, rule: Rule | None
    ) -> ScenarioSource:
        if rule is not None and rule.scenario is not None:
            return rule.scenario
        if self.default_scenario != SYNTHETIC:
            return self.scenarios[self.default_scenario]
        roles = None
        if configuration.channel_definitions:
            roles = {d.channel_id: d.participant_role for d in configuration.channel_definitions}
        return synthetic_scenario(
            seed=self.seed, session_id=request.session_id, channel_roles=roles
        )

    # -- sessions ----------------------------------------------------------------

    def open_session(
        self, request: StreamRequest, *, request_id: str, rule: Rule | None
    ) -> SessionRecord:
        record = SessionRecord(
            request=request, request_id=request_id, rule_id=rule.id if rule else None
        )
        self.sessions.pop(request.session_id, None)
        self.sessions[request.session_id] = record
        self._trim()
        self.active += 1
        self.total += 1
        log.info(
            "session %s started (domain %s, %s %d Hz, scenario rule %s)",
            request.session_id,
            request.domain_id,
            request.media_encoding,
            request.sample_rate,
            record.rule_id or "-",
        )
        return record

    def close_session(self, record: SessionRecord) -> None:
        record.ended_at = _now()
        self.active -= 1
        session = record.session
        log.info(
            "session %s ended: %s after %.2f s of audio, %d results sent%s",
            record.request.session_id,
            record.status,
            session.audio_seconds if session else 0.0,
            sum(record.events_sent.values()),
            f" ({record.errors[-1]['type']}: {record.errors[-1]['message']})"
            if record.errors
            else "",
        )

    def record_rejection(
        self, headers: Iterable[tuple[bytes, bytes]], error: ServiceError, *, request_id: str
    ) -> None:
        """Remember a request refused before its stream opened (shown by /sessions)."""
        wanted = {b"x-amzn-medscribe-session-id", b"x-amzn-medscribe-domain-id"}
        ids = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers if k.lower() in wanted}
        self.rejections.append(
            {"requestId": request_id, "error": error.code, "message": error.message, **ids}
        )
        del self.rejections[:-1000]
        log.info("request %s rejected: %s: %s", request_id, error.code, error.message)

    def _trim(self) -> None:
        if len(self.sessions) <= MAX_SESSION_RECORDS:
            return
        for key in list(self.sessions):
            if len(self.sessions) <= MAX_SESSION_RECORDS:
                break
            if self.sessions[key].ended_at is not None:
                del self.sessions[key]
