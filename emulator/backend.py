"""The emulator's state: rules, scenarios and listening sessions (moto's backend).

Route handlers stay thin and call into :class:`Backend`. Sessions are
:class:`~emulator.record.SessionRecord` s kept in memory (at most ``retention``)
and in the state database (:mod:`emulator.store`), written on lifecycle
transitions and at stream end; each has a journal (:mod:`emulator.journal`).
After END_OF_SESSION the post-stream artifacts are written by a task, from a
worker thread, ``post_stream_delay`` seconds later.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import itertools
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .artifacts import (
    ARTIFACT_NAMES,
    Buckets,
    DiskBuckets,
    artifact_locations,
    describe_results,
    make_buckets,
    s3_uri,
)
from .checker import misnamed_fixture_files
from .errors import (
    ConfigError,
    InternalServerException,
    ServiceError,
    ThrottlingException,
    ValidationException,
)
from .events import OutputEvent
from .files import write_all
from .journal import (
    STREAM_LOST,
    Journal,
    compact_encoder,
    compact_json,
    iso_time,
    journal_damage,
    remove_tree,
    run_in_writer,
)
from .lifecycle import SessionLimits, StreamStatus, check_resume, stream_outcome, transition
from .logs import get_logger
from .notes import after_visit_summary_document, clinical_document, final_lines, transcript_document
from .record import SessionKey, SessionRecord
from .resources import state_database_problem
from .rules import GET, Rule, RuleBook, load_rules_file, parse_rule
from .scenario import Scenario, ScenarioError, parse_scenario, scenario_name
from .session import ScenarioSource, ScribeSession
from .store import DATABASE_NAME, SessionStore, StoredSession
from .synthetic import SYNTHETIC_NAME, SyntheticScenario, synthetic_scenario, warm_up
from .validation import Configuration, StreamRequest, header_text, id_constraints_broken

__all__ = ["Backend", "SessionRecord", "SessionKey", "SYNTHETIC", "DEFAULT_RETENTION"]

log = get_logger("medscribe.sessions")

#: The scenario name that means "generate a visit with Faker".
SYNTHETIC = SYNTHETIC_NAME

#: Sessions kept when no retention is given.
DEFAULT_RETENTION = 1000

#: Seconds a changed session's row waits to be written with the others changed meanwhile.
SAVE_DELAY = 0.05

#: Seconds before rows whose write failed (a full disk) are written again.
SAVE_RETRY_DELAY = 2.0

#: The ids a rejected request is listed with, by the header that gave each.
_REJECTION_IDS = {
    b"x-amzn-medscribe-session-id": "sessionId",
    b"x-amzn-medscribe-domain-id": "domainId",
    b"x-amzn-medscribe-subscription-id": "subscriptionId",
}

#: ArtifactDetails.failureReason is at most 2048 characters (ErrorMessage).
_MAX_REASON = 2048


#: The last rule id the admin API gave, in the state directory: ids go on from it
#: after a restart.
RULE_IDS = "rule-ids"
_REPLACE_NO_LINK = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_TRUNC
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


class Backend:
    """Rules, scenarios and listening sessions of one emulator process.

    ``state_dir`` holds the database, the journals and the on-disk S3 stand-in
    (unless ``s3_endpoint_url`` names a real S3-compatible endpoint).
    ``resources`` (a :class:`~emulator.resources.ResourceRegistry`) is consulted
    only with ``strict_resources``. ``clock`` gives epoch seconds. Raises
    :class:`ConfigError` for an unknown default scenario or unusable state.
    """

    def __init__(
        self,
        *,
        scenarios: Mapping[str, Scenario],
        state_dir: Path,
        default_scenario: str = SYNTHETIC,
        seed: int = 0,
        rules_file: Path | None = None,
        retention: int = DEFAULT_RETENTION,
        max_pending_artifacts: int = 10_000,
        post_stream_delay: float = 2.0,
        s3_endpoint_url: str | None = None,
        limits: SessionLimits | None = None,
        resources: Any = None,
        strict_resources: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # As the file names are keyed: in NFC (a name pasted from a Mac's ls is NFD).
        default_scenario = scenario_name(default_scenario)
        if default_scenario != SYNTHETIC and default_scenario not in scenarios:
            raise ConfigError(
                f"--scenario {default_scenario!r} is not a known scenario; known: "
                + ", ".join([SYNTHETIC, *sorted(scenarios)])
            )
        if retention < 1:
            raise ConfigError(f"--retention must keep at least 1 session, got {retention}")
        self.scenarios = dict(scenarios)
        self.default_scenario = default_scenario
        self.seed = seed
        self.rules = RuleBook(seed=seed)
        self.rules_file = rules_file
        self.retention = retention
        self.max_pending_artifacts = max_pending_artifacts
        self.post_stream_delay = post_stream_delay
        self.limits = limits or SessionLimits()
        self.resources = resources
        self.strict_resources = strict_resources
        self.clock = clock
        self.rejections: list[dict[str, Any]] = []
        #: How many older rejections were dropped to keep the newest MAX_REJECTIONS.
        self.rejections_dropped = 0
        # Requests a rule's error refused, by session (see asks_of).
        self._refused: dict[SessionKey, int] = {}
        # Look-ups a rule was asked about, by session (see match_get_rule).
        self._looked_up: dict[SessionKey, int] = {}
        # Scripted scenarios' specs and their JSON text, by scenario (see _spec_text).
        self._specs: dict[int, tuple[Scenario, dict[str, Any], str]] = {}
        # The same scenarios by the id of their spec (see _rebuild).
        self._built: dict[int, tuple[dict[str, Any], Scenario]] = {}
        self.active = 0
        self.total = 0
        self.state_dir = state_dir
        self.journal_root = state_dir / "sessions"
        self._journal_root = os.fspath(self.journal_root)
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            self.store = SessionStore(state_dir / DATABASE_NAME)
        except (OSError, sqlite3.Error) as error:
            raise ConfigError(f"cannot open the session database in {state_dir}: {error}") from None
        self.buckets: Buckets = make_buckets(state_dir=state_dir, s3_endpoint_url=s3_endpoint_url)
        # The artifact jobs' thread, for buckets on disk. Their work is Python
        # under the GIL (reading the journal, building the notes), so more
        # threads run no more of it at once; what they did was take the GIL
        # from the event loop more often (asyncio's default pool has six on two
        # cores): one thread made bulk ingest 3% cheaper. Jobs that wait on a
        # network (S3) keep asyncio's pool.
        self._artifact_thread: concurrent.futures.ThreadPoolExecutor | None = (
            concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="medscribe-artifacts")
            if isinstance(self.buckets, DiskBuckets)
            else None
        )
        self.sessions: dict[SessionKey, SessionRecord] = {}
        #: Sessions whose stored row this version cannot read (another release's):
        #: their journals are kept for a release that can (see _sweep_forgotten).
        self._unreadable: set[SessionKey] = set()
        self._post_tasks: dict[SessionKey, asyncio.Task[None]] = {}
        # Artifact jobs of sessions a reset forgot, by their record's seq, until they run.
        self._detached: dict[int, _ArtifactJob] = {}
        # The threads uploading those to S3 (and their session ids), by the same
        # seq, until they end.
        self._uploading: dict[int, tuple[threading.Thread, str]] = {}
        # Records whose rows wait for the next flush_saves (see _save).
        self._dirty: dict[SessionKey, SessionRecord] = {}
        # Rows of dropped sessions, deleted in the same transaction.
        self._deleted: dict[SessionKey, None] = {}
        self._save_handle: asyncio.TimerHandle | None = None
        self._saves_failing = False  # the last write of rows failed (see _write_rows)
        self._closing = False  # close() has begun
        self._closed = False
        try:
            self._seq = self.store.max_seq()
            self._load_sessions()
            # Before the rules file's rules take theirs: a rule (its own, or one
            # added later) taking the id of a stored session's starter acted on
            # that session's resumed streams as if it had started it.
            self.rules.skip_ids(
                [self._last_rule_id(), *(record.rule_id for record in self.sessions.values())]
            )
            self._load_rules_file()
            self._sweep_forgotten()
        except sqlite3.DatabaseError as error:
            self.store.close()
            raise ConfigError(state_database_problem(state_dir / DATABASE_NAME, error)) from None

    # -- rules ---------------------------------------------------------------

    def _load_rules_file(self) -> None:
        for rule in self._read_rules_file():
            self.rules.add(rule)

    def _read_rules_file(self) -> list[Rule]:
        """The rules file's rules, ``file-1``, ``file-2``... by their place in it:
        the same rule has the same id at every start and after every reset, so a
        session it started is its own on a resumed stream after either (numbered
        with the API's rules, a reset and a restart gave it two ids)."""
        if self.rules_file is None:
            return []
        directory = self.rules_file.parent
        if not directory.is_dir():  # at a reset: start-up checked it
            raise ConfigError(f"{directory}: no such fixtures directory (it was there at start-up)")
        if problems := misnamed_fixture_files(directory):
            raise ScenarioError(problems)
        if self.rules_file.exists():
            rules = load_rules_file(self.rules_file, scenarios=self.scenarios)
            return [dataclasses.replace(rule, id=f"file-{n}") for n, rule in enumerate(rules, 1)]
        return []

    def add_rule(self, data: object) -> Rule:
        """Validate ``data`` (the admin API's JSON) and add it; raises ConfigError.

        Its id is noted in the state directory (:data:`RULE_IDS`): the next start
        gives none of the ids given so far, which journals and clients' records
        of this run name."""
        rule = self.rules.add(parse_rule(data, scenarios=self.scenarios))
        try:
            # Not through a symlink planted there, which had its target overwritten.
            fd = os.open(self.state_dir / RULE_IDS, _REPLACE_NO_LINK, 0o644)
            try:
                write_all(fd, f"{rule.id}\n".encode("ascii"))
            finally:
                os.close(fd)
        except OSError:
            pass  # the stored sessions' starters' ids are still skipped
        return rule

    def _last_rule_id(self) -> str | None:
        """The last API rule id an earlier run gave (see :meth:`add_rule`)."""
        try:
            return (self.state_dir / RULE_IDS).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None

    def match_rule(self, request: StreamRequest) -> Rule | None:
        """Return the newest rule matching ``request``, or None.

        Its use is not counted here but where it takes effect: an error rule's
        by the caller, as it refuses the request (:meth:`RuleBook.use`, and
        :meth:`note_refused`), any other's by :meth:`open_stream` when the
        stream starts a new session, or when its chaos acts on a stream resuming
        a session another rule (or none) started. A request refused for another
        reason, or a stream resuming a session the rule started, uses none; the
        rule that started the session still acts on its resumed streams once its
        ``times`` are spent. Probabilities draw with :meth:`asks_of` the request.
        """
        key = SessionKey(request.domain_id, request.subscription_id, request.session_id)
        record = self.sessions.get(key)
        return self.rules.match(
            session_id=request.session_id,
            domain_id=request.domain_id,
            subscription_id=request.subscription_id,
            consume=False,
            asks=self._asks(key, record),
            started_by=None if record is None else record.rule_id,
        )

    def match_get_rule(self, key: SessionKey) -> Rule | None:
        """The newest GetMedicalScribeListeningSession rule matching a look-up of
        ``key``, its use counted (its error refuses the look-up), or None.

        A probability draws with how many look-ups of the session asked before
        (the newest :data:`MAX_REFUSED_SESSIONS` sessions' counts are kept): a
        poller's every Get draws anew, the same way in every run.
        """
        asked = _count_up(self._looked_up, key) - 1
        return self.rules.match(
            session_id=key.session_id,
            domain_id=key.domain_id,
            subscription_id=key.subscription_id,
            asks=asked,
            operation=GET,
        )

    def asks_of(self, request: StreamRequest) -> int:
        """How many of the request's session's requests took effect before it: its
        streams that opened (stored with the session, so a restart keeps them),
        less those a crash lost (the session is as it was before them, and the
        stream that replaces one draws as it did), and the requests a rule's
        error refused (since the start, or a reset).

        Part of each probability's draw: a session's next request draws anew,
        what others do (a quota's refusal included) changes nothing.
        """
        key = SessionKey(request.domain_id, request.subscription_id, request.session_id)
        return self._asks(key, self.sessions.get(key))

    def _asks(self, key: SessionKey, record: SessionRecord | None) -> int:
        taken = 0 if record is None else record.streams - record.streams_lost
        return taken + self._refused.get(key, 0)

    def note_refused(self, request: StreamRequest) -> None:
        """Count a request a rule's error refused, for :meth:`asks_of` (the newest
        :data:`MAX_REFUSED_SESSIONS` sessions' counts are kept)."""
        key = SessionKey(request.domain_id, request.subscription_id, request.session_id)
        _count_up(self._refused, key)

    def reset(self) -> None:
        """Forget sessions (but the live ones), rejections and API-added rules.

        Rules from the rules file come back; resources go back to their seed.
        Both files are read again, and both are read before anything changes:
        when either has become invalid, raises :class:`ConfigError` listing the
        problems of both, and the emulator is left as it was.
        """
        problems: list[str] = []
        rules: list[Rule] = []
        seeds = None
        try:
            rules = self._read_rules_file()
        except ConfigError as error:
            problems.append(str(error))
        if self.resources is not None:
            try:
                seeds = self.resources.read_seed()
            except ConfigError as error:
                problems.append(str(error))
        if problems:
            raise ConfigError("\n".join(problems))
        if self.resources is not None:
            # The sessions kept for their open stream keep their domain and
            # subscription: under --strict-resources their Get (and the rest of
            # their stream's life) would find them gone.
            live = [
                (r.key.domain_id, r.key.subscription_id)
                for r in self.sessions.values()
                if r.live is not None
            ]
            self.resources.reset(seeds, keep=live)
        self.rules.clear()
        for rule in rules:
            self.rules.add(rule)
        self._drop([r for r in self.sessions.values() if r.live is None])
        self.rejections.clear()
        self.rejections_dropped = 0
        self._refused.clear()
        self._looked_up.clear()

    def check_resources(
        self, *, domain_id: str, subscription_id: str, require_active: bool = True
    ) -> None:
        """With ``strict_resources``, check the domain and subscription exist and
        (with ``require_active``, for a stream) are active.

        Raises :class:`~emulator.errors.ResourceNotFoundException` or
        :class:`ValidationException` (see ``ResourceRegistry.check_stream``).
        """
        if self.strict_resources and self.resources is not None:
            self.resources.check_stream(
                domain_id=domain_id, subscription_id=subscription_id, require_active=require_active
            )

    # -- scenarios -------------------------------------------------------------

    def scenario_for(
        self, record: SessionRecord, configuration: Configuration, *, rule: Rule | None
    ) -> ScenarioSource:
        """Return what ``record``'s stream replays, remembering the choice for resumption.

        A session keeps the scenario of its first configured stream. Raises
        :class:`ValidationException` when a resumed stream's channel definitions
        differ from the session's, and :class:`InternalServerException` when a
        stored scenario cannot be rebuilt.
        """
        if record.scenario is not None:
            before = _channels(record.configuration)
            now = _channels(configuration.raw)
            # No configuration with a scenario: the stream that chose it was lost
            # in a crash, and the session rolled back over it (its choice is kept,
            # so that the resumed stream replays the same script).
            if record.configuration is not None and before != now:
                raise ValidationException(
                    f"configurationEvent.channelDefinitions is {_describe_channels(now)}: a "
                    f"resumed stream must use the session's, {_describe_channels(before)}"
                )
            scenario = self._rebuild(record.scenario)
        else:
            scenario = self._choose(record.key.session_id, configuration, rule=rule)
            record.scenario_text = self._spec_text(scenario)
            record.scenario = record.scenario_text[0]
        record.configuration = dict(configuration.raw)
        self._save(record)
        return scenario

    def _choose(
        self, session_id: str, configuration: Configuration, *, rule: Rule | None
    ) -> ScenarioSource:
        if rule is not None and rule.scenario is not None:
            return rule.scenario
        synthetic = rule is not None and rule.synthetic
        if not synthetic and self.default_scenario != SYNTHETIC:
            return self.scenarios[self.default_scenario]
        roles = None
        if configuration.channel_definitions:
            roles = {d.channel_id: d.participant_role for d in configuration.channel_definitions}
        return synthetic_scenario(seed=self.seed, session_id=session_id, channel_roles=roles)

    def _spec_text(self, scenario: ScenarioSource) -> tuple[dict[str, Any], str]:
        """``(spec, its JSON text)`` of ``scenario`` (see :func:`_scenario_spec`).

        A scripted scenario's spec holds its whole script, written with every
        save of every session replaying it: spec and text are made once per
        scenario and shared (read-only) by its sessions.
        """
        if not isinstance(scenario, Scenario):
            spec = _scenario_spec(scenario)
            return spec, compact_json(spec)
        cached = self._specs.get(id(scenario))
        if cached is None or cached[0] is not scenario:
            if len(self._specs) >= _SPEC_CACHE_LIMIT:
                self._specs.clear()
                self._built.clear()
            spec = _scenario_spec(scenario)
            cached = self._specs[id(scenario)] = (scenario, spec, compact_json(spec))
            self._built[id(spec)] = (spec, scenario)
        return cached[1], cached[2]

    def _rebuild(self, spec: Mapping[str, Any]) -> ScenarioSource:
        """The scenario ``spec`` (see :func:`_scenario_spec`) describes.

        A spec this backend made of a scripted scenario gives that scenario
        back (it is immutable): parsing and checking the script again for
        every resumed stream and post-stream job cost 0.5 ms a session for a
        script of 30 segments. A spec read back from the store is parsed.
        Called from the post-stream worker thread too; the look-up is one
        dict read.
        """
        known = self._built.get(id(spec))
        if known is not None and known[0] is spec:
            return known[1]
        try:
            if spec["kind"] == "synthetic":
                return synthetic_scenario(
                    seed=int(spec["seed"]),
                    session_id=spec["sessionId"],
                    channel_roles={int(ch): role for ch, role in spec["channelRoles"]},
                )
            return parse_scenario(spec["script"], name=spec["name"], stored=True)
        except (KeyError, TypeError, ValueError, ConfigError) as error:
            raise InternalServerException(
                f"the session's stored scenario cannot be rebuilt: {error}"
            ) from None

    # -- streams -----------------------------------------------------------------

    def open_stream(
        self, request: StreamRequest, *, request_id: str, rule: Rule | None
    ) -> SessionRecord:
        """Start a stream on the session ``request`` names: a new one, or a paused one.

        Returns the session's record, now IN_PROGRESS. Raises
        :class:`ValidationException` naming the rule when the session is live,
        COMPLETED or FAILED, past its resume window or audio limit, or when the
        stream's media headers differ from the session's.
        """
        key = SessionKey(request.domain_id, request.subscription_id, request.session_id)
        record = self.sessions.get(key)
        now = self.clock()
        if record is None:
            pending = len(self._post_tasks)
            if pending >= self.max_pending_artifacts:
                # Each waits with its record (about 20 KiB), and every client's
                # artifacts queue behind them: the client making them is told
                # to slow down (the SDK retries no event-stream call by itself).
                raise ThrottlingException(
                    f"the emulator has the post-stream artifacts of {pending} session(s) "
                    f"still to write (--max-pending-artifacts {self.max_pending_artifacts}): "
                    "retry once it catches up, or start sessions more slowly"
                )
            record = SessionRecord(
                key=key,
                seq=self._next_seq(),
                language_code=request.language_code,
                sample_rate=request.sample_rate,
                media_encoding=request.media_encoding,
                created_at=now,
                status=transition(None, "open", session_id=request.session_id),
            )
            record.journal = self._journal(record, new=True)
            self.sessions[key] = record
            if rule is not None:
                self.rules.use(rule)  # a new session: the rule took effect
                record.rule_id = rule.id  # the rule that chose its scenario
        else:
            try:
                status = transition(record.status, "open", session_id=request.session_id)
                check_resume(
                    session_id=request.session_id,
                    created_at=record.created_at,
                    audio_seconds=record.progress.audio_seconds,
                    now=now,
                    limits=self.limits,
                )
                _check_media(record, request)
            except ValidationException as error:
                assert record.journal is not None
                record.journal.record(
                    {
                        "direction": "stream",
                        "type": "streamRefused",
                        "requestId": request_id,
                        "message": error.message,
                    }
                )
                raise
            record.status = status
            if (
                rule is not None
                and rule.chaos is not None
                and rule.id != record.rule_id
                and rule.chaos.acts_after(record.progress.audio_seconds)
            ):
                # Its chaos acts on another rule's (or no rule's) session: a use,
                # or a times: 1 rule would act on every resumed stream until a
                # new session spent its one use. (Its scenario does nothing
                # here, the session keeps its own; nor does a disconnect the
                # session passed: no use.)
                self.rules.use(rule)
            # The session used last is the newest: --retention keeps the newest N,
            # and the session a client resumes is the one it is about to look up.
            # Its number, saved with its row, keeps that order across a restart.
            record.seq = self._next_seq()
            self.sessions[key] = self.sessions.pop(key)
        record.ended_at = None
        record.mark_stream_start()
        record.streams += 1
        record.request_id = request_id
        assert record.journal is not None
        record.journal.start_stream(record.streams)
        record.journal.record(
            {
                "direction": "stream",
                "type": "streamStarted",
                "stream": record.streams,
                "requestId": request_id,
                "resumed": record.streams > 1,
                # A resumed stream's rule adds its chaos only: the session's
                # ruleId stays the one that chose its scenario.
                "rule": None if rule is None else rule.id,
                "audioClock": record.progress.audio_seconds,
                "headers": {
                    "languageCode": request.language_code,
                    "mediaSampleRateHertz": request.sample_rate,
                    "mediaEncoding": request.media_encoding,
                },
            }
        )
        self.active += 1
        self.total += 1
        self._save(record)
        self._trim(opening=record)
        log.info(
            "session %s started (stream %d, domain %s, %s %d Hz, rule %s)",
            request.session_id,
            record.streams,
            request.domain_id,
            request.media_encoding,
            request.sample_rate,
            record.rule_id or "-",
        )
        return record

    def new_session(
        self,
        record: SessionRecord,
        request: StreamRequest,
        *,
        rule: Rule | None,
        send: Callable[[OutputEvent], None],
    ) -> ScribeSession:
        """Return the state machine of ``record``'s new stream, resuming its progress."""
        journal = record.journal
        assert journal is not None
        session = ScribeSession(
            request=request,
            scenario_for=lambda configuration: self.scenario_for(record, configuration, rule=rule),
            send=send,
            resume=record.progress if record.streams > 1 else None,
            on_audio=journal.audio,
            max_audio_seconds=self.limits.max_audio_seconds,
            stats=record.stats,
        )
        record.live = session
        return session

    def close_stream(self, record: SessionRecord) -> None:
        """End ``record``'s live stream: settle its status, save it, start post-stream actions."""
        session = record.live
        record.live = None
        record.at_stream_start = None
        self.active -= 1
        if session is None:
            return
        outcome = stream_outcome(session.state)
        if outcome == "fail" and session.resumed and not session.configured:
            # Refused before its configuration took effect (channel definitions
            # other than the session's, a malformed configurationEvent): the
            # stream changed nothing, so the session stays resumable, as when
            # its headers are refused.
            outcome = "pause"
        record.status = transition(
            StreamStatus.IN_PROGRESS, outcome, session_id=record.key.session_id
        )
        record.progress = session.progress()
        record.ended_at = self.clock()
        journal = record.journal
        assert journal is not None
        journal.record(
            {
                "direction": "stream",
                "type": "streamEnded",
                "stream": record.streams,
                "status": record.status.value,
                "audioClock": record.progress.audio_seconds,
            }
        )
        journal.flush()
        if record.status is StreamStatus.COMPLETED and record.configuration is not None:
            self._start_post_stream(record)
        self._save(record)
        log.info(
            "session %s ended: %s (stream %d) at %.2f s of audio, %d results sent%s",
            record.key.session_id,
            record.status.value,
            record.streams,
            record.progress.audio_seconds,
            record.stats.results_sent,
            f" ({record.errors[-1]['type']})"
            if record.status is StreamStatus.FAILED and record.errors
            else "",
        )

    def record_rejection(
        self,
        headers: Iterable[tuple[bytes, bytes]],
        error: ServiceError,
        *,
        request_id: str,
        rule_id: str | None = None,
    ) -> None:
        """Remember a request refused before its stream opened (shown by /sessions):
        when, why, the ids it gave (as sent, valid or not), and the rule whose
        ``error`` refused it, if one did."""
        ids: dict[str, str] = {}
        for name, value in headers:
            field = _REJECTION_IDS.get(name.lower())
            if field is not None and field not in ids:
                text = header_text(value)
                if len(text) > _REJECTION_ID_LIMIT:
                    # One client's 40,000-character header made a log line that long,
                    # kept a thousand times over in the list.
                    text = f"{text[:_REJECTION_ID_LIMIT]}... ({len(text)} characters)"
                ids[field] = text
        self.rejections.append(
            {
                "requestId": request_id,
                "time": iso_time(self.clock()),
                **ids,
                "error": error.code,
                "message": error.message,
                **({} if rule_id is None else {"ruleId": rule_id}),
            }
        )
        if len(self.rejections) > MAX_REJECTIONS:
            del self.rejections[0]
            self.rejections_dropped += 1
        # Why, and whose: what a CI job's log has to say about a refused client.
        log.info(
            "request %s rejected: %s%s%s: %s",
            request_id,
            error.code,
            f" (session {ids['sessionId']})" if "sessionId" in ids else "",
            f" by rule {rule_id}" if rule_id is not None else "",
            refusal_reason(error, more="GET /_emulator/sessions"),
        )

    # -- look-ups ----------------------------------------------------------------

    def get(self, key: SessionKey) -> SessionRecord | None:
        """Return the session with these ids, or None."""
        return self.sessions.get(key)

    def find(
        self,
        session_id: str,
        *,
        domain_id: str | None = None,
        subscription_id: str | None = None,
    ) -> SessionRecord | None:
        """Return the newest session with ``session_id`` (and the given ids), or None."""
        for record in reversed(self.sessions.values()):
            key = record.key
            if (
                key.session_id == session_id
                and domain_id in (None, key.domain_id)
                and subscription_id in (None, key.subscription_id)
            ):
                return record
        return None

    # -- life of the process -----------------------------------------------------

    def start(self) -> None:
        """Resume post-stream actions a previous run left IN_PROGRESS (call in the loop)."""
        # Faker's providers are modules to import, a file each: on the first
        # synthetic session, a process short of descriptors then (a burst of
        # connections) failed it for good with an internal error.
        warm_up()
        pending = [record for record in self.sessions.values() if _post_stream_pending(record)]
        for record in pending:
            self._schedule_post_stream(record)
        if pending:
            log.info(
                "resuming the post-stream actions of %d session(s) the last run left in progress",
                len(pending),
            )
        self._trim()

    def close(self, *, finish_within: float = 0.0) -> None:
        """Stop post-stream tasks, flush journals and close the database.

        Post-stream actions still waiting are run now for up to ``finish_within``
        seconds (at shutdown: a test's temporary state directory will not see a
        next start); those left are logged, and complete at the next start on
        this state directory.
        """
        if self._closed:
            return
        self._closing = True  # rows that fail to save from now on are lost (_write_rows)
        for task in list(self._post_tasks.values()):
            task.cancel()
        if self._artifact_thread is not None:
            # The job under way finishes (its results are dropped with its
            # task, and it runs again below or at the next start); none starts.
            self._artifact_thread.shutdown(wait=True, cancel_futures=True)
        for record in self.sessions.values():
            if record.journal is not None:
                record.journal.flush()
        started = time.monotonic()
        if self._artifact_thread is not None:  # on disk: each takes milliseconds
            for seq in list(self._detached):  # reset's, that the thread did not reach
                self._run_detached(seq)
        # Uploads of sessions a reset forgot: no row is left to resume them from,
        # so they get the budget, and what is left is said to be lost.
        for upload, _ in list(self._uploading.values()):
            upload.join(max(0.0, finish_within - (time.monotonic() - started)))
        for upload, session_id in list(self._uploading.values()):
            if upload.is_alive():
                log.warning(
                    "shutdown cut off the artifact uploads of session %s, which a reset had "
                    "forgotten: they are lost",
                    session_id,
                )
        self._finish_post_stream_now(max(0.0, finish_within - (time.monotonic() - started)))
        self.flush_saves()  # waits for the writer thread: the journals, then the rows
        self._closed = True
        self.store.close()

    # -- internals -----------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _journal(self, record: SessionRecord, *, new: bool = False) -> Journal:
        key = record.key
        # Joined as text: three Path joins were a fifth of opening a stream's record.
        directory = os.path.join(
            self._journal_root, key.domain_id, key.subscription_id, key.session_id
        )
        return Journal(directory, audio_suffix=record.media_encoding, new=new)

    def _save(self, record: SessionRecord) -> None:
        """Write ``record``'s row within :data:`SAVE_DELAY` (at once outside a loop).

        The rows changed meanwhile (a stream's start and end, every other
        session's) share one transaction: a commit per change was the costliest
        part of starting and ending a stream.
        """
        if self._closed or self.sessions.get(record.key) is not record:
            return
        self._dirty[record.key] = record
        self._schedule_saves()

    def _schedule_saves(self) -> None:
        if self._save_handle is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush_saves()
            return
        self._save_handle = loop.call_later(SAVE_DELAY, self._save_in_background)

    def _save_in_background(self) -> None:
        """The timer's write: the rows are encoded here, in the loop, from the
        records as they are now, and written by the journal's writer thread.

        SQLite releases the GIL while it works, and with the writer busy the
        loop then waited to take it back: when 1,000 sessions ended within a
        second, a fifth of the loop's time went to these writes.
        """
        self._save_handle = None
        rows, deleted = self._take_changes()
        if rows or deleted:
            size = sum(len(row.data) for row in rows if isinstance(row.data, str))
            loop = asyncio.get_running_loop()
            run_in_writer(lambda: self._write_rows(rows, deleted, loop), size)

    def flush_saves(self) -> None:
        """Write every row changed (or delete every row dropped) since the last
        write, in one transaction, before returning: after whatever the
        writer thread still has to write, in this thread.
        """
        if self._save_handle is not None:
            self._save_handle.cancel()
            self._save_handle = None
        rows, deleted = self._take_changes()
        Journal.wait_written(loop=True)
        if rows or deleted:
            try:
                self.store.save_many(rows, deleted=deleted)
            except sqlite3.Error as error:
                log.warning(
                    "cannot save %d session rows in %s: %s; their last changes are lost",
                    len(rows) + len(deleted),
                    self.store.path,
                    error,
                )

    def _take_changes(self) -> tuple[list[StoredSession], list[SessionKey]]:
        """The rows changed and the keys dropped since the last write, as of now."""
        dirty, self._dirty = self._dirty, {}
        deleted, self._deleted = self._deleted, {}
        if self._closed:
            return [], []
        rows = [
            StoredSession(
                domain_id=key.domain_id,
                subscription_id=key.subscription_id,
                session_id=key.session_id,
                seq=record.seq,
                status=record.status.value,
                created_at=record.created_at,
                data=record.to_data_json(),
            )
            for key, record in dirty.items()
            if self.sessions.get(key) is record
        ]
        return rows, list(deleted)

    def _write_rows(
        self,
        rows: list[StoredSession],
        deleted: list[SessionKey],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        # In the writer thread; close() waits for it before closing the store.
        try:
            self.store.save_many(rows, deleted=deleted)
        except sqlite3.Error as error:
            if self._closing:  # no retry will come: said, even within a failing streak
                log.warning(
                    "cannot save %d session rows in %s at shutdown: %s; their last changes "
                    "are lost",
                    len(rows) + len(deleted),
                    self.store.path,
                    error,
                )
                return
            if not self._saves_failing:
                log.warning(
                    "cannot save %d session rows in %s: %s; retried every %g s",
                    len(rows) + len(deleted),
                    self.store.path,
                    error,
                    SAVE_RETRY_DELAY,
                )
            self._saves_failing = True
            keys = [SessionKey(r.domain_id, r.subscription_id, r.session_id) for r in rows]
            with contextlib.suppress(RuntimeError):  # the loop has closed: shutdown
                loop.call_soon_threadsafe(self._retry_saves, keys, deleted)
            return
        if self._saves_failing:
            self._saves_failing = False
            log.warning("session rows saved again in %s", self.store.path)

    def _retry_saves(self, keys: list[SessionKey], deleted: list[SessionKey]) -> None:
        """Write again the rows a failed write held (a full disk), as the records
        are now, unless written or dropped since: otherwise a session completed
        while the disk was full came back after a restart as it was before, or
        not at all, though the disk had room again by then."""
        if self._closed:  # closed before this ran: no write will come
            log.warning(
                "cannot save %d session rows in %s at shutdown; their last changes are lost",
                len(keys) + len(deleted),
                self.store.path,
            )
            return
        for key in keys:
            record = self.sessions.get(key)
            if record is not None:
                self._dirty.setdefault(key, record)
        for key in deleted:
            if key not in self.sessions:
                self._deleted[key] = None
        if self._save_handle is None:
            self._save_handle = asyncio.get_running_loop().call_later(
                SAVE_RETRY_DELAY, self._save_in_background
            )

    def _load_sessions(self) -> None:
        rows = self.store.load()
        self._unreadable.update(SessionKey(*key) for key in self.store.unreadable)
        for row in rows:
            key = SessionKey(row.domain_id, row.subscription_id, row.session_id)
            try:
                record = SessionRecord.from_data(
                    key, seq=row.seq, status=row.status, created_at=row.created_at, data=row.data
                )
            except (KeyError, TypeError, ValueError) as error:
                log.warning(
                    "session %s: its stored row cannot be read by this version (%s): it is "
                    "not served, and its row and journal are kept for a release that reads "
                    "them (a new session with its ids replaces both)",
                    key[2],
                    error,
                )
                self._unreadable.add(key)
                continue
            journal = record.journal = self._journal(record)
            self.sessions[key] = record
            if record.status is StreamStatus.IN_PROGRESS:
                # The emulator stopped while a stream ran, without ending it (a
                # SIGKILL, a power loss: a SIGTERM ends streams and saves their
                # rows). The connection is gone, and the row is as that stream
                # started: the session is PAUSED there, and the stream lost.
                record.status = StreamStatus.PAUSED
                record.roll_back()  # its counts, errors and configuration as it started
                self._roll_back(record, first_lost=max(record.streams, 1), live=True)
                self._save(record)
            elif record.status is StreamStatus.PAUSED and journal.has_lost_traces(
                record.streams + 1
            ):
                # A stream started after this row was written, and the crash came
                # before its own row was (a fast client, within SAVE_DELAY); or the
                # crash cut the journal's last line.
                if self._roll_back(record, first_lost=record.streams + 1, live=False):
                    self._save(record)
        # Trimmed by start(), once the post-stream actions the last run left are
        # scheduled: trimmed here, nothing protected them, and a restart dropped
        # sessions with their artifacts still to write (and their journals).

    def _roll_back(self, record: SessionRecord, *, first_lost: int, live: bool) -> bool:
        """Make what ``record``'s journal serves match its row, restored as it was
        before its stream ``first_lost``: that stream (under way when the emulator
        stopped, with ``live``) and any the journal shows after it were lost.

        Their audio is deleted (``/audio.wav`` holds what ``audioSeconds`` says),
        ``audioBytes`` counts the audio kept, and each gets a ``streamLost`` entry,
        after which the next stream's clock starts again from the row's; the
        post-stream artifacts leave their transcript out. ``streamEndTime``
        becomes when the session was last heard of: its journal's last entry (the
        lost stream's last batch; or, when none of it reached the disk, what came
        before it), never before the row's own end or creation, and never the
        restart's time. Stream numbers go on after the lost ones. Returns whether
        a stream was lost (the record changed).
        """
        journal = record.journal
        assert journal is not None
        try:
            found = journal.roll_back(first_lost)
        except OSError as error:
            log.warning(
                "session %s: cannot roll back its journal in %s over the stream(s) the "
                "emulator lost when it stopped: %s",
                record.key.session_id,
                journal.directory,
                error,
            )
            found = None
        lost = set(found.streams if found is not None else ())
        if live:
            lost.add(first_lost)
        if not lost:
            return False  # a cut last line, removed: nothing else to undo
        ended = max(record.created_at, record.ended_at or record.created_at)
        heard = iso_time(ended)
        if found is not None:
            if found.last_heard is not None and found.last_heard[0] > ended:
                ended, heard = found.last_heard
            # The row's count may hold the lost stream's first audio (its live
            # counts are saved with its start's row); the journal's holds none.
            record.stats.audio_bytes = min(record.stats.audio_bytes, found.kept_audio_bytes)
        record.ended_at = ended
        marked = found.marked if found is not None else frozenset()
        for number in sorted(lost - marked):
            journal.record(
                {
                    "direction": "stream",
                    "type": STREAM_LOST,
                    "stream": number,
                    "reason": _LOST_REASON,
                    "lastHeard": heard,
                    "droppedAudioBytes": 0 if found is None else found.dropped.get(number, 0),
                    "audioClock": record.progress.audio_seconds,
                }
            )
        journal.flush()  # written before the row (the writer's order)
        record.streams = max(record.streams, *lost)
        # Counted from the journal's marks when it could be read: a restart cut off
        # after marking a stream and before saving the row left the row's count short.
        ever = found.ever_marked if found is not None else frozenset()
        record.streams_lost = max(record.streams_lost + len(lost - marked), len(ever | lost))
        log.info(
            "session %s: stream %s lost when the emulator stopped (last heard of at %s); "
            "the session is PAUSED at %.2f s of audio, as before it",
            record.key.session_id,
            ", ".join(map(str, sorted(lost))),
            heard,
            record.progress.audio_seconds,
        )
        return True

    def _trim(self, opening: SessionRecord | None = None) -> None:
        """Drop the sessions older than the newest :attr:`retention` (by their last
        stream's start) that have no live stream and no post-stream actions waiting.

        Neither a live session, nor one whose artifacts are still to be written
        (dropping it lost them: its client would poll its output location for
        ever), nor ``opening``, the one whose stream is starting, is dropped:
        they are kept over the retention, never in the place of a newer session
        (counted in it, they once had the newest, a paused session waiting to
        be resumed, dropped in their stead). Those bound what can go, so with
        every session busy this returns at once instead of walking them all on
        each new stream.
        """
        count = len(self.sessions)
        kept = self.active + len(self._post_tasks)
        excess = min(count - self.retention, count - kept)
        if excess <= 0:
            return
        victims = []
        pending = self._post_tasks
        # Oldest first, and only those older than the newest N.
        for record in itertools.islice(self.sessions.values(), count - self.retention):
            if len(victims) >= excess:
                break
            if record.live is None and record is not opening and record.key not in pending:
                victims.append(record)
        self._drop(victims)

    def _drop(self, records: list[SessionRecord]) -> None:
        for record in records:
            self.sessions.pop(record.key, None)
            self._dirty.pop(record.key, None)
            task = self._post_tasks.pop(record.key, None)
            if task is not None:
                task.cancel()
                if _post_stream_pending(record) and record.configuration is not None:
                    # Forgotten (a reset), but its artifacts were promised at their
                    # output location: written now, the journal removed after.
                    self._write_detached(record)
                    continue
            if record.journal is not None:
                record.journal.remove()
        if records and not self._closed:
            # With the next rows written: a commit per dropped session showed
            # when every new session drops an old one (bulk ingest).
            for record in records:
                self._deleted[record.key] = None
            self._schedule_saves()

    # -- post-stream actions --------------------------------------------------------

    def _start_post_stream(self, record: SessionRecord) -> None:
        assert record.configuration is not None
        settings = record.configuration["postStreamActionSettings"]
        locations = artifact_locations(settings["outputS3Uri"], **record.key._asdict())
        results: dict[str, Any] = {
            name: {"status": "IN_PROGRESS", "outputLocation": s3_uri(locations[name])}
            for name in ARTIFACT_NAMES
        }
        record.post_stream = {"startedAt": self.clock(), "results": results}
        coding = settings.get("medicalCodeGenerationSettings") or {}
        if coding.get("enabled"):
            record.post_stream["medicalCodes"] = {
                "status": "SKIPPED",
                "failureReason": "the emulator does not generate medical codes",
            }
        self._schedule_post_stream(record)

    def _schedule_post_stream(self, record: SessionRecord) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a direct caller): start() picks it up later
            return
        assert record.post_stream is not None
        elapsed = self.clock() - record.post_stream["startedAt"]
        delay = min(max(self.post_stream_delay - elapsed, 0.0), self.post_stream_delay)
        key = record.key
        task = loop.create_task(self._finish_post_stream(key, delay))
        self._post_tasks[key] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._post_tasks.get(key) is done:
                del self._post_tasks[key]
                if not self._closed:
                    self._trim()  # it was kept over the retention for its artifacts

        task.add_done_callback(forget)

    def _sweep_forgotten(self) -> None:
        """Remove the journals that a reset moved aside and a shutdown kept from being
        removed (their uploads were cut off, and said to be lost), and those of
        sessions whose row was never saved (a crash or a full disk: the session is
        lost). A new session with those ids would have added to the latter.

        Only folders the emulator made are removed (see :func:`_journal_folders`):
        the sweep deleted every folder three levels down, through symlinks, so a
        ``--state-dir`` holding a user's ``sessions/`` folder, or a link planted
        in it, lost the user's files. What else is there is left, and named."""
        found, foreign = _journal_folders(self._journal_root)
        left = [folder for folder in found if _FORGOTTEN in folder[2]]
        for folder in left:
            remove_tree(Path(self._journal_root, *folder))
        if left:
            log.info("removed %d journal(s) of sessions a reset forgot", len(left))
        orphans = [
            folder
            for folder in found
            if _FORGOTTEN not in folder[2]
            and folder not in self.sessions
            and folder not in self._unreadable
        ]
        for folder in orphans:
            remove_tree(Path(self._journal_root, *folder))
        if orphans:
            log.warning(
                "removed %d journal(s) of sessions with no row (never saved: the emulator "
                "stopped or its disk was full first): %s",
                len(orphans),
                ", ".join(session for _, _, session in orphans[:5])
                + (", ..." if len(orphans) > 5 else ""),
            )
        if foreign:
            log.warning(
                "left %d %s under %s that the emulator did not write (it removes only "
                "folders <domain id>/<subscription id>/<session id>, none of them a "
                "symlink): %s",
                len(foreign),
                "entry" if len(foreign) == 1 else "entries",
                self._journal_root,
                ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else ""),
            )

    def _write_detached(self, record: SessionRecord) -> None:
        """Write the artifacts of ``record``, a session no longer kept, in the
        artifacts' thread; then remove its journal. The record is not updated."""
        journal = record.journal
        assert journal is not None
        journal.flush()
        # Moved aside first (in the writer, after its pending writes): a new session
        # with the same ids journals in the same folder, and the job must neither
        # read that session's entries nor remove them with its own.
        aside = Journal(
            f"{journal.directory}{_FORGOTTEN}{record.seq}", audio_suffix=journal.audio_suffix
        )
        run_in_writer(functools.partial(_move_aside, journal.directory, aside.directory))
        job = _ArtifactJob(record, buckets=self.buckets, rebuild=self._rebuild)
        job.journal = aside
        # By the record's own number: the same ids may be forgotten twice before
        # the thread reaches the first (a suite that reuses an id and resets).
        seq = record.seq
        self._detached[seq] = job
        if self._artifact_thread is not None and not self._closed:
            self._artifact_thread.submit(self._run_detached, seq)
        else:
            upload = threading.Thread(
                target=self._run_detached, args=(seq,), name="medscribe-s3", daemon=True
            )
            self._uploading[seq] = (upload, record.key.session_id)
            upload.start()

    def _run_detached(self, seq: int) -> None:
        job = self._detached.pop(seq, None)
        if job is None:
            return  # run already (at shutdown)
        try:
            results = _run_artifact_job(job)
            log.info(
                "session %s post-stream actions (after a reset forgot it): %s",
                job.key.session_id,
                describe_results(results),
            )
        finally:
            job.journal.remove()
            self._uploading.pop(seq, None)

    def _finish_post_stream_now(self, budget: float) -> None:
        """Run waiting post-stream actions in this thread until ``budget`` seconds pass.

        Only to the disk stand-in: an upload can take any time, and a hung S3
        endpoint would hold shutdown for ever; those complete at the next start.
        """
        pending = [
            record
            for record in self.sessions.values()
            if _post_stream_pending(record) and record.configuration is not None
        ]
        if self._artifact_thread is None:  # artifacts go to S3
            budget = 0.0
        deadline = time.monotonic() + budget
        done = 0
        for record in pending:
            if time.monotonic() >= deadline:
                break
            assert record.post_stream is not None and record.journal is not None
            job = _ArtifactJob(record, buckets=self.buckets, rebuild=self._rebuild)
            self._post_stream_done(record, _run_artifact_job(job), job.scripted_failures)
            done += 1
        if len(pending) > done:
            log.info(
                "%d session(s) left their post-stream actions in progress; they complete at the "
                "next start on %s",
                len(pending) - done,
                self.state_dir,
            )

    async def _finish_post_stream(self, key: SessionKey, delay: float) -> None:
        await asyncio.sleep(delay)
        record = self.sessions.get(key)
        if (
            self._closed  # its thread is gone; the next start runs it
            or record is None
            or record.post_stream is None
            or record.configuration is None
        ):
            return
        assert record.journal is not None
        record.journal.flush()
        job = _ArtifactJob(record, buckets=self.buckets, rebuild=self._rebuild)
        if self._artifact_thread is None:
            # An S3 upload: in a thread of its own that shutdown does not wait for
            # (asyncio's pool is joined, and a hung endpoint held SIGTERM for
            # minutes); one cut off completes at the next start.
            results = await _in_daemon_thread(_run_artifact_job, job)
        else:
            loop = asyncio.get_running_loop()
            results = await loop.run_in_executor(self._artifact_thread, _run_artifact_job, job)
        if self.sessions.get(key) is not record:
            return  # dropped meanwhile
        self._post_stream_done(record, results, job.scripted_failures)

    def _post_stream_done(
        self,
        record: SessionRecord,
        results: dict[str, Any],
        scripted: frozenset[str],
    ) -> None:
        """Record, save and log the artifacts' results of ``record``'s actions.

        One line: info when all completed, a warning quoting each failed artifact's
        failureReason otherwise (else it is seen only through Get or the admin API).
        """
        assert record.post_stream is not None
        record.post_stream["results"] = results
        self._save(record)
        # A failure the scenario scripts is what the test asked for: info, as success.
        failed = any(r["status"] == "FAILED" and n not in scripted for n, r in results.items())
        log.log(
            logging.WARNING if failed else logging.INFO,
            "session %s post-stream actions: %s",
            record.key.session_id,
            describe_results(results),
        )


#: Requests rejected before their stream that GET /_emulator/sessions lists: the
#: newest, about 300 bytes each; older ones are counted as dropped.
MAX_REJECTIONS = 1000
#: Characters of each id a rejection keeps (valid ids have at most 36): a longer
#: one is cut, saying its length.
_REJECTION_ID_LIMIT = 100
#: Characters of a rejection's reason its log line keeps.
_REJECTION_LOG_LIMIT = 1000
#: Characters of a refused control-plane call's path its log line keeps.
_LOGGED_PATH_LIMIT = 300

#: Sessions whose requests refused by a rule's error are counted (see
#: Backend.note_refused): about 200 bytes each; past it the oldest is forgotten.
MAX_REFUSED_SESSIONS = 100_000

#: The ``reason`` of a ``streamLost`` journal entry (see Backend._roll_back).
_LOST_REASON = (
    "the emulator stopped without saving this stream's end (killed, or its machine went "
    "down): the session was restored as it was before this stream, whose audio was dropped"
)

#: What a forgotten session's journal folder has after its name (then its seq).
_FORGOTTEN = ".forgotten-"


def _journal_folders(root: str) -> tuple[list[tuple[str, str, str]], list[str]]:
    """The journal folders under ``root`` as ``(domain, subscription, session)``
    names, and the entries there the emulator did not write, as paths under
    ``root``, sorted.

    A journal folder is ``<domain id>/<subscription id>/<session id>`` (or a
    session id with :data:`_FORGOTTEN` and a number, a reset's), each a valid id
    of the API (which checks every request's before its journal is made) and a
    real directory, not a symlink (lstat: the emulator makes none, and a link
    took the sweep outside the state directory). Anything else is not looked
    into and is named once, at the level it was found.
    """
    found: list[tuple[str, str, str]] = []
    foreign: list[str] = []
    for domain in _folder_entries(root):
        if not _made_folder(domain, "domainId"):
            foreign.append(domain.name)
            continue
        for subscription in _folder_entries(domain.path):
            if not _made_folder(subscription, "subscriptionId"):
                foreign.append(f"{domain.name}/{subscription.name}")
                continue
            for session in _folder_entries(subscription.path):
                session_id, aside, seq = session.name.partition(_FORGOTTEN)
                if _made_folder(session, "sessionId", session_id) and (
                    not aside or (seq.isascii() and seq.isdigit())
                ):
                    found.append((domain.name, subscription.name, session.name))
                else:
                    foreign.append(f"{domain.name}/{subscription.name}/{session.name}")
    return found, foreign


def _folder_entries(path: str) -> list[os.DirEntry[str]]:
    """The entries of the directory ``path`` by name, but hidden ones (a name
    starting with a dot: Finder's ``.DS_Store``, NFS's ``.nfs...``, named as not
    the emulator's at every start otherwise; no id starts so); none when it
    cannot be listed (no journal written yet, or ``sessions`` is not a directory)."""
    try:
        with os.scandir(path) as entries:
            return sorted(
                (entry for entry in entries if not entry.name.startswith(".")),
                key=lambda entry: entry.name,
            )
    except OSError:
        return []


def _made_folder(entry: os.DirEntry[str], member: str, name: str | None = None) -> bool:
    """Whether ``entry`` is a directory, not a symlink to one, named by a valid
    ``member`` id (``name``, or the entry's name)."""
    try:
        if not entry.is_dir(follow_symlinks=False):
            return False
    except OSError:
        return False
    return not id_constraints_broken(member, entry.name if name is None else name)


def _count_up(counts: dict[SessionKey, int], key: SessionKey) -> int:
    """One more for ``key`` in ``counts``, which keeps the newest
    :data:`MAX_REFUSED_SESSIONS` sessions' (the oldest starts over); return it."""
    count = counts.get(key, 0)
    if count == 0 and len(counts) >= MAX_REFUSED_SESSIONS:
        del counts[next(iter(counts))]
    counts[key] = count + 1
    return count + 1


def refusal_reason(error: ServiceError, *, more: str) -> str:
    """``error``'s message as one log line: its first line, cut at
    :data:`_REJECTION_LOG_LIMIT` characters (a message echoes each bad value up to
    2,048), saying where the rest is (``more``). One line: a signature
    mismatch's canonical request made it 26."""
    why, _, rest = error.message.strip().partition("\n")
    if len(why) > _REJECTION_LOG_LIMIT:
        return f"{why[:_REJECTION_LOG_LIMIT]}... ({len(why)} characters: {more})"
    if rest.strip():
        return f"{why} (and {rest.count(chr(10)) + 1} more lines: {more})"
    return why


def log_refused_call(
    scope: Mapping[str, Any], error: ServiceError, *, request_id: str, rule_id: str | None = None
) -> None:
    """Log a control-plane request refused by the emulator's checks (a signature,
    a quota) or a rule's error: one line, as :meth:`Backend.record_rejection`
    logs a stream's."""
    raw = scope.get("raw_path") or str(scope.get("path", "?")).encode("utf-8", "replace")
    # As sent, still percent-encoded: the decoded path's %0A was a newline that
    # wrote a line of the caller's into the log (raw controls the logger escapes).
    path = header_text(raw)
    if len(path) > _LOGGED_PATH_LIMIT:
        path = f"{path[:_LOGGED_PATH_LIMIT]}... ({len(path)} characters)"
    log.info(
        "request %s rejected: %s (%s %s)%s: %s",
        request_id,
        error.code,
        scope.get("method", "?"),
        path,
        f" by rule {rule_id}" if rule_id is not None else "",
        refusal_reason(error, more="the response"),
    )


def _in_daemon_thread(function: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
    """Run ``function(*args)`` in a daemon thread; return a future of its result in
    the running loop. Unlike ``asyncio.to_thread``, the process does not wait for
    it to exit."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        try:
            result, error = function(*args), None
        except BaseException as exc:  # handed to the awaiting task
            result, error = None, exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop closed meanwhile (shutdown)
            pass

    threading.Thread(target=run, name="medscribe-s3", daemon=True).start()
    return future


def _move_aside(directory: Path, aside: Path) -> None:
    try:
        os.replace(directory, aside)
    except FileNotFoundError:  # never written: the job finds an empty journal
        pass


def _run_artifact_job(job: _ArtifactJob) -> dict[str, dict[str, str]]:
    """Run ``job`` (any thread); a bug of ours fails every artifact, saying so."""
    try:
        return job.run()
    except Exception:
        log.exception("session %s: post-stream actions failed", job.key.session_id)
        reason = "the emulator hit an internal error generating this artifact; see its log"
        return {name: {"status": "FAILED", "failureReason": reason} for name in ARTIFACT_NAMES}


#: An artifact's bytes: compact UTF-8 JSON, as the service writes machine output.
#: Indented JSON took Python 3.12's pure-Python encoder (the C one has no
#: indent): 40% of a post-stream job, which holds the GIL in a worker thread
#: while the event loop serves the other sessions.
_artifact_json = compact_encoder(ensure_ascii=False)


class _ArtifactJob:
    """Everything the worker thread needs, copied so the record may change meanwhile."""

    def __init__(
        self,
        record: SessionRecord,
        *,
        buckets: Buckets,
        rebuild: Callable[[Mapping[str, Any]], ScenarioSource],
    ) -> None:
        assert record.configuration is not None and record.journal is not None
        self.key = record.key
        self.language_code = record.language_code
        self.configuration = record.configuration
        self.scenario = record.scenario
        self.journal = record.journal
        #: Final results the session sent: its journal must hold as many.
        self.finals_sent = record.stats.finals_sent
        self.buckets = buckets
        self.rebuild = rebuild
        #: The artifacts the scenario scripts as FAILED (set by :meth:`run`).
        self.scripted_failures: frozenset[str] = frozenset()

    def run(self) -> dict[str, dict[str, str]]:
        """Build and write the three artifacts; return their ArtifactDetails."""
        key = self.key
        script = None
        if self.scenario is not None and self.scenario.get("kind") == "script":
            built = self.rebuild(self.scenario)
            script = getattr(built, "post_stream", None)
        roles = {
            f"ch_{d['channelId']}": d["participantRole"]
            for d in self.configuration.get("channelDefinitions") or ()
        }
        self.journal.wait_written()  # the loop flushed it before handing it over
        # Not the transcript of a stream lost in a crash: the session rolled back over it.
        held = 0

        def counted(entries: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
            nonlocal held
            for entry in entries:
                held += _is_final(entry)
                yield entry

        entries = self.journal.iter_kept_entries(entry_type="transcriptEvent")
        lines = final_lines(counted(entries), roles=roles)
        # Built from a journal that lost results, an artifact would look whole
        # and leave out what the client was sent.
        damage = journal_damage(
            self.journal, what="final results", held=held, expected=self.finals_sent
        )
        builders: dict[str, Callable[[], dict[str, Any]]] = {
            "transcriptResult": lambda: transcript_document(
                ids={
                    "SessionId": key.session_id,
                    "DomainId": key.domain_id,
                    "SubscriptionId": key.subscription_id,
                },
                language_code=self.language_code,
                lines=lines,
            ),
            "noteResult": lambda: clinical_document(
                configuration=self.configuration,
                lines=lines,
                script=script,
                session_id=key.session_id,
            ),
            "afterVisitSummaryResult": lambda: after_visit_summary_document(
                lines=lines, script=script, session_id=key.session_id
            ),
        }
        locations = artifact_locations(
            self.configuration["postStreamActionSettings"]["outputS3Uri"], **key._asdict()
        )
        results: dict[str, dict[str, str]] = {}
        for name in ARTIFACT_NAMES:
            reason = script.failure_of(name) if script is not None else None
            if reason is not None:
                results[name] = {"status": "FAILED", "failureReason": reason}
                self.scripted_failures |= {name}
                continue
            if damage is not None:
                results[name] = {"status": "FAILED", "failureReason": damage[:_MAX_REASON]}
                continue
            location = locations[name]
            try:
                body = _artifact_json(builders[name]()).encode()
                self.buckets.put(location[0], location[1], body)
            except Exception as error:  # the bucket's failure is the artifact's
                message = f"could not write {s3_uri(location)}: {error}"
                results[name] = {"status": "FAILED", "failureReason": message[:_MAX_REASON]}
                continue
            results[name] = {"status": "COMPLETED", "outputLocation": s3_uri(location)}
        return results


def _is_final(entry: Mapping[str, Any]) -> bool:
    """Whether a journal entry is a final result the session sent."""
    segment = entry.get("transcriptSegment") or {}
    return entry.get("direction") == "out" and segment.get("isPartial", True) is False


#: Bounded because each rule posted with an inline scenario is a new scripted
#: scenario, without end, and each entry keeps a whole script alive; 256 holds the
#: 4 shipped scenarios and 252 others, and a full cache is cleared, which costs
#: only encoding a spec, or parsing its script, again.
_SPEC_CACHE_LIMIT = 256


def _scenario_spec(scenario: ScenarioSource) -> dict[str, Any]:
    """How to rebuild ``scenario`` after a restart (see :meth:`Backend._rebuild`)."""
    if isinstance(scenario, SyntheticScenario):
        return {
            "kind": "synthetic",
            "name": scenario.name,
            "seed": scenario.seed,
            "sessionId": scenario.session_id,
            "channelRoles": [list(pair) for pair in scenario.channel_roles],
        }
    assert isinstance(scenario, Scenario)
    return {"kind": "script", "name": scenario.name, "script": scenario.to_json()}


def _post_stream_pending(record: SessionRecord) -> bool:
    results = (record.post_stream or {}).get("results") or {}
    return any(r.get("status") == "IN_PROGRESS" for r in results.values())


def _channels(configuration: Mapping[str, Any] | None) -> list[tuple[int, str]] | None:
    definitions = (configuration or {}).get("channelDefinitions")
    if not definitions:
        return None
    return sorted((d["channelId"], d["participantRole"]) for d in definitions)


def _describe_channels(channels: list[tuple[int, str]] | None) -> str:
    if channels is None:
        return "absent (one channel)"
    return ", ".join(f"channel {ch} {role}" for ch, role in channels)


def _check_media(record: SessionRecord, request: StreamRequest) -> None:
    """A resumed stream keeps the session's language and audio format."""
    pairs = (
        ("x-amzn-medscribe-language-code", request.language_code, record.language_code),
        ("x-amzn-medscribe-sample-rate", request.sample_rate, record.sample_rate),
        ("x-amzn-medscribe-media-encoding", request.media_encoding, record.media_encoding),
    )
    for header, given, kept in pairs:
        if given != kept:
            raise ValidationException(
                f"{header} is {given} but session {record.key.session_id} was started with "
                f"{kept}: a resumed stream must use the session's language and audio format"
            )
