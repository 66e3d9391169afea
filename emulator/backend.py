"""The emulator's state: rules, scenarios and listening sessions (moto's backend).

Route handlers stay thin and call into :class:`Backend`. Sessions are
:class:`~emulator.record.SessionRecord` s kept in memory (at most ``retention``)
and in the state database (:mod:`emulator.store`), written on lifecycle
transitions and at stream end (by a :class:`~emulator.persistence.SessionSaver`);
each has a journal (:mod:`emulator.journal`). After END_OF_SESSION the
post-stream artifacts are written by a task, from a worker thread,
``post_stream_delay`` seconds later (by a
:class:`~emulator.poststream.PostStreamRunner`).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from .artifacts import Buckets, make_buckets
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
from .journal import Journal, compact_json, iso_time
from .lifecycle import SessionLimits, StreamStatus, check_resume, stream_outcome, transition
from .logs import Throttle, get_logger
from .persistence import SessionSaver
from .poststream import PostStreamRunner, post_stream_pending
from .problems import counted
from .record import ScenarioText, SessionKey, SessionRecord
from .resources import state_database_problem
from .rules import GET, Rule, RuleBook, load_rules_file, parse_rule
from .scenario import Scenario, ScenarioError, meant_scenario, parse_scenario, scenario_name
from .session import CUT_OFF, ScenarioSource, ScribeSession, SessionState
from .store import DATABASE_NAME, SessionStore, script_digest
from .synthetic import SYNTHETIC_NAME, SyntheticScenario, synthetic_scenario, warm_up
from .validation import Configuration, StreamRequest, header_text

__all__ = [
    "Backend",
    "SessionRecord",
    "SessionKey",
    "SYNTHETIC",
    "DEFAULT_RETENTION",
    "log_refused_call",
]

log = get_logger("medscribe.sessions")

#: The scenario name that means "generate a visit with Faker".
SYNTHETIC = SYNTHETIC_NAME

#: Sessions kept when no retention is given.
DEFAULT_RETENTION = 1000

#: The ids a rejected request is listed with, by the header that gave each.
_REJECTION_IDS = {
    b"x-amzn-medscribe-session-id": "sessionId",
    b"x-amzn-medscribe-domain-id": "domainId",
    b"x-amzn-medscribe-subscription-id": "subscriptionId",
}


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
            known = [SYNTHETIC, *sorted(scenarios)]
            # As a rule naming an unknown scenario is told (rules.yaml, the admin API).
            near = meant_scenario(default_scenario, known)
            hint = f" (did you mean {near!r}?)" if near else ""
            raise ConfigError(
                f"--scenario {default_scenario!r} is not a known scenario{hint}; known: "
                + ", ".join(known)
            )
        if retention < 1:
            raise ConfigError(f"--retention must keep at least 1 session, got {retention}")
        self.scenarios = dict(scenarios)
        self.default_scenario = default_scenario
        self.seed = seed
        self.rules = RuleBook(seed=seed)
        self.rules_file = rules_file
        self.retention = retention
        #: Sessions --retention dropped since it last said so, and when it did (see _trim).
        # Said at most once a minute: on a shared emulator one client's volume
        # drops another's sessions (its Get then a 404), which nothing showed.
        # Drops within the minute are said at its end, by a timer.
        self._retired = Throttle(RETENTION_SAID_EVERY, flush=self._say_retired)
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
        self._specs: dict[int, tuple[Scenario, ScenarioText]] = {}
        # The same scenarios by the id of their spec, and those parsed from a
        # spec read back from the store, shared by its sessions (see _rebuild).
        self._built: dict[int, tuple[Mapping[str, Any], ScenarioSource]] = {}
        self.active = 0
        self.total = 0
        #: Set when the server begins to stop: a stream it ends is logged so.
        self.stopping = False
        self.state_dir = state_dir
        self.journal_root = state_dir / "sessions"
        self._journal_root = os.fspath(self.journal_root)
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            self.store = SessionStore(state_dir / DATABASE_NAME)
        except (OSError, sqlite3.Error) as error:
            raise ConfigError(f"cannot open the session database in {state_dir}: {error}") from None
        self.buckets: Buckets = make_buckets(state_dir=state_dir, s3_endpoint_url=s3_endpoint_url)
        self.sessions: dict[SessionKey, SessionRecord] = {}
        self._saver = SessionSaver(
            store=self.store, sessions=self.sessions, journal_root=self._journal_root
        )
        # Bound once: called at every stream's start and end.
        self._save = self._saver.save
        self._post_stream = PostStreamRunner(
            sessions=self.sessions,
            buckets=self.buckets,
            rebuild=self._rebuild,
            save=self._save,
            trim=self._trim,
            # Looked up at each call: a test moves the backend's clock.
            clock=lambda: self.clock(),
            delay=post_stream_delay,
            state_dir=state_dir,
        )
        # The same dict: open_stream and _trim count the sessions it holds.
        self._post_tasks = self._post_stream.tasks
        try:
            self._seq = self.store.max_seq()
            self._saver.load(journal=self._journal)
            # Before the rules file's rules take theirs: a rule (its own, or one
            # added later) taking the id of a stored session's starter acted on
            # that session's resumed streams as if it had started it.
            self.rules.skip_ids(
                [self._last_rule_id(), *(record.rule_id for record in self.sessions.values())]
            )
            self._load_rules_file()
            self._saver.sweep()
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
                    f"configurationEvent.channelDefinitions is {_describe_channels(now)} but "
                    f"session {record.key.session_id} was started with "
                    f"{_describe_channels(before)}: a resumed stream must use the session's "
                    "channel definitions"
                )
            scenario = self._rebuild(record.scenario)
        else:
            scenario = self._choose(record, configuration, rule=rule)
            record.scenario_text = self._spec_text(scenario)
            record.scenario = record.scenario_text.spec
            if self.sessions.get(record.key) is record:
                self._saver.name_script(record)
        record.configuration = dict(configuration.raw)
        self._save(record)
        return scenario

    def _choose(
        self, record: SessionRecord, configuration: Configuration, *, rule: Rule | None
    ) -> ScenarioSource:
        session_id = record.key.session_id
        if rule is not None and rule.chaos_only:
            # Chaos adds trouble to the visit the session would have had: the
            # scenario of the newest older rule matching it (a test's
            # use_scenario), its use counted as the session starts, drawn with
            # the requests before this stream's as the chaos rule's own draw
            # was; else, for a session whose first stream ended before its
            # configuration, that of the rule that started it, however many
            # uses it has left (counted when it started the session).
            key = record.key
            starter = None
            if record.rule_id is not None and record.rule_id != rule.id:
                starter = self.rules.get(record.rule_id)
            ids = (key.domain_id, key.subscription_id, key.session_id)
            asks = self._asks(key, record) - 1
            under = self.rules.scenario_under(rule, ids=ids, asks=asks)
            if under is None and starter is not None:
                if starter.scenario is not None or starter.synthetic:
                    rule = starter
            elif under is not None:
                if under is not starter:
                    self.rules.use(under)
                    record.scenario_rule_id = under.id
                rule = under
        if rule is not None and rule.scenario is not None:
            return rule.scenario
        synthetic = rule is not None and rule.synthetic
        if not synthetic and self.default_scenario != SYNTHETIC:
            return self.scenarios[self.default_scenario]
        roles = None
        if configuration.channel_definitions:
            roles = {d.channel_id: d.participant_role for d in configuration.channel_definitions}
        return synthetic_scenario(seed=self.seed, session_id=session_id, channel_roles=roles)

    def _spec_text(self, scenario: ScenarioSource) -> ScenarioText:
        """The spec of ``scenario`` (see :func:`_scenario_spec`) and its JSON text.

        A scripted scenario's spec holds its whole script: spec, text and the
        text's digest are made once per scenario and shared (read-only) by its
        sessions, whose rows name it by the digest (it is stored once).
        """
        if not isinstance(scenario, Scenario):
            spec = _scenario_spec(scenario)
            return ScenarioText(spec, compact_json(spec))
        cached = self._specs.get(id(scenario))
        if cached is None or cached[0] is not scenario:
            if len(self._specs) >= _SPEC_CACHE_LIMIT:
                self._specs.clear()
                self._built.clear()
            spec = _scenario_spec(scenario)
            text = compact_json(spec)
            cached = self._specs[id(scenario)] = (
                scenario,
                ScenarioText(spec, text, script_digest(text)),
            )
            self._built[id(spec)] = (spec, scenario)
        return cached[1]

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
            scenario = parse_scenario(spec["script"], name=spec["name"], stored=True)
        except (KeyError, TypeError, ValueError, ConfigError) as error:
            raise InternalServerException(
                f"the session's stored scenario cannot be rebuilt: {error}"
            ) from None
        # A spec read back from the store is one object for all its sessions:
        # parsed once for them all.
        if len(self._built) >= _SPEC_CACHE_LIMIT:
            self._built.clear()
        self._built[id(spec)] = (spec, scenario)
        return scenario

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
            self._post_stream.start(record)
        self._save(record)
        why = ""
        if session.state is SessionState.FAILED and record.errors:
            error = record.errors[-1]
            said = f"{error['type']}: {_shortened(error.get('message', ''))}"
            # A resume refused (its configuration, say) leaves the session PAUSED.
            why = f" ({said})" if outcome == "fail" else f" (its resume was refused: {said})"
        elif record.status is StreamStatus.PAUSED:
            # A client that went quiet, or was killed, or an emulator stopping
            # under it: told apart where a flaky CI run is looked into.
            reason = session.pause_reason
            if self.stopping and reason in (None, CUT_OFF):
                reason = "the emulator stopped"
            why = f" ({reason})" if reason else ""
        # The scenario too: a failed test's report shows which visit ran.
        scenario = (record.scenario or {}).get("name") or "-"  # none chosen yet
        log.info(
            "session %s ended: %s (stream %d, scenario %s) at %.2f s of audio, %s sent%s",
            record.key.session_id,
            record.status.value,
            record.streams,
            scenario,
            record.progress.audio_seconds,
            counted(record.stats.results_sent, "result"),
            why,
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
        self._post_stream.resume()
        self._trim()

    def close(self, *, finish_within: float = 0.0) -> None:
        """Stop post-stream tasks, flush journals and close the database.

        Post-stream actions still waiting are run now for up to ``finish_within``
        seconds (at shutdown: a test's temporary state directory will not see a
        next start); those left are logged, and complete at the next start on
        this state directory.
        """
        if self._saver.closed:
            return
        self._saver.closing = True  # rows that fail to save from now on are lost
        self._retired.close()
        self._post_stream.stop()
        for record in self.sessions.values():
            if record.journal is not None:
                record.journal.flush()
        self._post_stream.finish_waiting(finish_within)
        self.flush_saves()  # waits for the writer thread: the journals, then the rows
        self._saver.closed = self._post_stream.closed = True
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

    def flush_saves(self) -> None:
        """Write every row changed (or delete every row dropped) since the last
        write, in one transaction, before returning: after whatever the
        writer thread still has to write, in this thread.
        """
        self._saver.flush()

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
        victims: list[SessionRecord] = []
        pending = self._post_tasks
        # Oldest first, and only those older than the newest N.
        for record in itertools.islice(self.sessions.values(), count - self.retention):
            if len(victims) >= excess:
                break
            if record.live is None and record is not opening and record.key not in pending:
                victims.append(record)
        self._drop(victims)
        if victims and (left_out := self._retired.take(len(victims))) is not None:
            self._say_retired(left_out + len(victims))

    def _say_retired(self, count: int) -> None:
        """Log that --retention dropped ``count`` sessions."""
        log.info(
            "--retention %d: %d least recently used session(s) dropped (their Get, "
            "journal and audio are gone); said at most once a minute",
            self.retention,
            count,
        )

    def _drop(self, records: list[SessionRecord]) -> None:
        for record in records:
            self.sessions.pop(record.key, None)
            task = self._post_tasks.pop(record.key, None)
            if task is not None:
                task.cancel()
                if post_stream_pending(record) and record.configuration is not None:
                    # Forgotten (a reset), but its artifacts were promised at their
                    # output location: written now, the journal removed after.
                    self._post_stream.write_detached(record)
                    continue
            if record.journal is not None:
                record.journal.remove()
        self._saver.drop(records)


#: At most one line this often (seconds) says how many sessions --retention dropped.
RETENTION_SAID_EVERY = 60.0

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


def _count_up(counts: dict[SessionKey, int], key: SessionKey) -> int:
    """One more for ``key`` in ``counts``, which keeps the newest
    :data:`MAX_REFUSED_SESSIONS` sessions' (the oldest starts over); return it."""
    count = counts.get(key, 0)
    if count == 0 and len(counts) >= MAX_REFUSED_SESSIONS:
        del counts[next(iter(counts))]
    counts[key] = count + 1
    return count + 1


def _shortened(message: str) -> str:
    """A session's exception message for its end line: its first line, cut at
    :data:`_REJECTION_LOG_LIMIT` characters (the whole is in its journal)."""
    line = message.strip().partition("\n")[0]
    if len(line) > _REJECTION_LOG_LIMIT:
        return f"{line[:_REJECTION_LOG_LIMIT]}... (the rest in its journal)"
    return line


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


def _channels(configuration: Mapping[str, Any] | None) -> list[tuple[int, str]] | None:
    definitions = (configuration or {}).get("channelDefinitions")
    if not definitions:
        return None
    return sorted((d["channelId"], d["participantRole"]) for d in definitions)


def _describe_channels(channels: list[tuple[int, str]] | None) -> str:
    if channels is None:
        return "none (one channel)"
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
