"""Rules: which sessions get which scenario, or which error, and how many times.

A rule is data, from the rules file at start-up or from the admin API::

    {"match": {"sessionId"?, "domainId"?, "subscriptionId"?, "operation"?},
     "scenario": "NAME" | {inline scenario},      # exactly one of scenario / error
     "error": {"type": "ThrottlingException", "message": "..."},
     "chaos": {...},                              # optional, see Chaos
     "probability": P,                            # optional, 0 < P <= 1
     "times": N}                                  # optional, N >= 1

A rule with ``chaos`` may leave out both scenario and error: a session it starts
then replays the scenario of the newest older rule matching it that names one
(:meth:`RuleBook.scenario_under`), or the default scenario, with the chaos. A
rule acts on stream requests (StartMedicalScribeListeningSession) unless its
``match`` names the operation ``GetMedicalScribeListeningSession``: such a rule
only refuses look-ups, with an ``error`` the model lists for Get.
``probability`` is drawn per request from the seed, the rule and the request's
ids (see
:meth:`RuleBook._draw`), so a run with the same seed repeats exactly, in any
order of arrival.

A missing match key matches anything. :meth:`RuleBook.match` tries the newest
rule first and consumes one use of the rule it returns; a rule with ``times``
stops matching after that many uses (it stays listed, with ``remaining: 0``).
The server counts a use when the rule takes effect: a request its error
refuses, a new session it starts, or a stream resuming another rule's (or no
rule's) session that its chaos can act on (:meth:`Chaos.acts_after`); not a
request refused for another reason, nor a stream resuming a session the rule
started.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path

from .documents import read_document
from .errors import SERVICE_ERRORS
from .problems import as_written, number_text
from .scenario import (
    MAX_AUDIO_SECONDS,
    Checker,
    FieldPath,
    Scenario,
    ScenarioError,
    describe,
    meant_scenario,
    past_the_limit,
    scenario_name,
    shown,
    validate_scenario,
)
from .synthetic import SYNTHETIC_NAME
from .validation import HEADER_NAMES, id_constraints_broken

__all__ = [
    "MATCH_KEYS",
    "OPERATIONS",
    "START",
    "GET",
    "GET_ERRORS",
    "INLINE_SCENARIO",
    "Rule",
    "Chaos",
    "RuleError",
    "RuleBook",
    "parse_rule",
    "load_rules_file",
]

#: The request values a rule can match, by their JSON (and header-derived) names.
MATCH_KEYS = ("sessionId", "domainId", "subscriptionId")

#: The operations a rule can act on: a stream's start (the default) or a look-up.
START = "StartMedicalScribeListeningSession"
GET = "GetMedicalScribeListeningSession"
OPERATIONS = (START, GET)

#: The errors the model lists for GetMedicalScribeListeningSession (its
#: ValidationException is Start's alone).
GET_ERRORS = (
    "InternalServerException",
    "ResourceNotFoundException",
    "AccessDeniedException",
    "ThrottlingException",
    "ServiceQuotaExceededException",
)

_MATCH_ALLOWED = (*MATCH_KEYS, "operation")

#: The name given to a scenario written inline in a rule.
INLINE_SCENARIO = "inline"

_RULE_KEYS = ("match", "scenario", "error", "chaos", "probability", "times")
#: What a rule does: one of these it must have.
_EFFECTS = ("scenario", "error", "chaos")

#: The most uses a rule may be given (a billion: more than any test run makes).
MAX_TIMES = 1_000_000_000
_CHAOS_KEYS = ("delay", "slow", "disconnect", "goaway", "malformed")
_DISCONNECT_MODES = ("reset", "close")
_ERROR_KEYS = ("type", "message")
_FILE_KEYS = ("rules",)


class RuleError(ScenarioError):
    """One or more rule problems; ``problems`` lists them all (file, line, field, message)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Chaos:
    """Network trouble a rule adds to a session.

    ``delay`` (+ up to ``jitter``) seconds before the response and between output
    writes; ``slow``: seconds between output events, sent one at a time; at audio
    time ``disconnect_at`` the stream is reset (``reset``) or the whole connection
    closed (``close``); at ``goaway_at`` the connection gets a GOAWAY (streams under
    way finish, no new ones); at ``malformed_at`` a corrupt frame is sent and the
    response ends.
    """

    delay: float = 0.0
    jitter: float = 0.0
    slow: float = 0.0
    disconnect_at: float | None = None
    disconnect_mode: str = "reset"
    goaway_at: float | None = None
    malformed_at: float | None = None

    def ahead(self, audio_seconds: float | None = None) -> list[tuple[float, str]]:
        """``(time, kind)`` of its disconnect (``disconnect-reset``/``-close``),
        GOAWAY and corrupt frame, in time order; for a stream resuming a session
        at ``audio_seconds``, only those still ahead: one the session passed is
        not replayed (a disconnect at 1.2 s fired again at once on every resume
        from 1.2 s)."""
        return sorted(
            (at, kind)
            for at, kind in (
                (self.disconnect_at, f"disconnect-{self.disconnect_mode}"),
                (self.goaway_at, "goaway"),
                (self.malformed_at, "malformed"),
            )
            if at is not None and (audio_seconds is None or at > audio_seconds)
        )

    def acts_after(self, audio_seconds: float) -> bool:
        """Whether it can act on a stream resuming a session at ``audio_seconds``:
        its pacing does, a timed event only if still :meth:`ahead`."""
        return bool(self.delay or self.jitter or self.slow or self.ahead(audio_seconds))

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.delay or self.jitter:
            out["delay"] = {"seconds": self.delay, "jitter": self.jitter}
        if self.slow:
            out["slow"] = self.slow
        if self.disconnect_at is not None:
            out["disconnect"] = {"at": self.disconnect_at, "mode": self.disconnect_mode}
        if self.goaway_at is not None:
            out["goaway"] = {"at": self.goaway_at}
        if self.malformed_at is not None:
            out["malformed"] = {"at": self.malformed_at}
        return out


@dataclass(kw_only=True, slots=True)
class Rule:
    """One rule. ``uses`` counts matches so far; the rest is fixed once added.

    Exactly one of ``scenario`` and ``error`` (``(shape name, message)``) is set;
    ``inline`` says the scenario was written in the rule rather than named.
    Raises :class:`ValueError` when built with impossible values.
    """

    id: str
    match: dict[str, str] = field(default_factory=dict)
    scenario: Scenario | None = None
    error: tuple[str, str] | None = None
    times: int | None = None
    uses: int = 0
    inline: bool = False
    chaos: Chaos | None = None
    probability: float | None = None
    #: The rule names the generated visit (``scenario: synthetic``), whatever
    #: the emulator's default scenario is.
    synthetic: bool = False
    #: The operation whose requests it acts on (:data:`START` or :data:`GET`).
    operation: str = START

    def __post_init__(self) -> None:
        if self.operation not in OPERATIONS:
            raise ValueError(f"unknown operation {self.operation!r}")
        if self.operation == GET and (
            self.error is None or self.error[0] not in GET_ERRORS or self.chaos is not None
        ):
            raise ValueError(f"a {GET} rule has an error of {GET_ERRORS} and nothing else")
        chosen = (self.scenario is not None) + (self.error is not None) + self.synthetic
        if chosen > 1:
            raise ValueError("a rule has at most one of scenario (or synthetic) or error")
        if not chosen and self.chaos is None:
            raise ValueError("a rule needs a scenario, an error or chaos")
        if self.error is not None and self.error[0] not in SERVICE_ERRORS:
            raise ValueError(f"unknown error type {self.error[0]!r}")
        if self.times is not None and self.times < 1:
            raise ValueError(f"times must be >= 1, got {self.times!r}")
        unknown = set(self.match) - set(MATCH_KEYS)
        if unknown:
            raise ValueError(f"unknown match keys {sorted(unknown)}")

    @property
    def chaos_only(self) -> bool:
        """Whether the rule adds chaos and chooses no scenario or error of its own."""
        return self.chaos is not None and (
            self.scenario is None and self.error is None and not self.synthetic
        )

    @property
    def remaining(self) -> int | None:
        """Uses left, or ``None`` for a rule without ``times``."""
        return None if self.times is None else max(self.times - self.uses, 0)

    def matches(
        self,
        *,
        session_id: str | None,
        domain_id: str | None,
        subscription_id: str | None,
        operation: str = START,
    ) -> bool:
        """Return whether the rule acts on ``operation`` and every match key
        equals the request's value (ignores ``times``)."""
        if operation != self.operation:
            return False
        actual = {"sessionId": session_id, "domainId": domain_id, "subscriptionId": subscription_id}
        return all(actual[key] == value for key, value in self.match.items())

    def to_json(self) -> dict[str, object]:
        """Return the admin API form: id, match, scenario, error, times, uses, remaining."""
        scenario: object = SYNTHETIC_NAME if self.synthetic else None
        if self.scenario is not None:
            scenario = self.scenario.to_json() if self.inline else self.scenario.name
        error = None if self.error is None else {"type": self.error[0], "message": self.error[1]}
        match: dict[str, str] = dict(self.match)
        if self.operation != START:
            match["operation"] = self.operation
        return {
            "id": self.id,
            "match": match,
            "scenario": scenario,
            "error": error,
            "chaos": None if self.chaos is None else self.chaos.to_json(),
            "probability": self.probability,
            "times": self.times,
            "uses": self.uses,
            "remaining": self.remaining,
        }


def _validate_rule(
    data: object,
    *,
    scenarios: Mapping[str, Scenario],
    checker: Checker,
    path: FieldPath,
    rule_id: str,
) -> Rule | None:
    """Check one rule, adding every problem to ``checker``; return it, or ``None``."""
    before = len(checker.problems)
    item = checker.mapping(data, path, allowed=_RULE_KEYS, what="a rule")
    if item is None:
        return None
    # null is an absent member, as the rules are listed (``"error": null``) and as a
    # YAML key left empty reads: a listed rule can be posted back.
    item = {key: value for key, value in item.items() if value is not None}

    match: dict[str, str] = {}
    operation = START
    raw_match = item.get("match", {})
    checked = checker.mapping(raw_match, (*path, "match"), allowed=_MATCH_ALLOWED, what="match")
    for key, value in (checked or {}).items():
        if key == "operation":
            named = checker.string(value, (*path, "match", key), non_empty=True)
            if named is not None and named not in OPERATIONS:
                near = get_close_matches(named[:100], OPERATIONS, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                checker.add(
                    (*path, "match", key),
                    f"must be one of {', '.join(OPERATIONS)}{hint}, got {shown(named)}",
                )
            elif named is not None:
                operation = named
        elif key in MATCH_KEYS:
            text = checker.string(value, (*path, "match", key), non_empty=True)
            if text is None:
                continue
            # Rules see only requests whose headers passed validation: a value the
            # header could not carry would never match, silently.
            broken = id_constraints_broken(key, text)
            if broken:
                rules = "; ".join(rule.removeprefix("Member ") for rule in broken)
                checker.add(
                    (*path, "match", key),
                    f"{shown(text)} can never match: requests are validated before rules apply, "
                    f"and {HEADER_NAMES[key]} {rules}",
                )
                continue
            match[key] = text

    scenario: Scenario | None = None
    inline = synthetic = False
    error: tuple[str, str] | None = None
    if operation == GET:
        _get_rule(item, path, checker)
        if "error" in item:
            error = _error(item["error"], (*path, "error"), checker, allowed=GET_ERRORS)
    elif "scenario" in item and "error" in item:
        checker.add(path, "a rule needs exactly one of 'scenario' or 'error', got both")
    elif "error" in item and "chaos" in item:
        checker.add(
            (*path, "chaos"),
            "cannot go with 'error': an error rule refuses the request before any stream "
            "opens, so there is nothing for chaos to act on (use a scripted fault, or "
            "two rules)",
        )
    elif "scenario" not in item and "error" not in item and "chaos" not in item:
        # An unknown key close to one of them (``eror``) is reported as such,
        # with the name it probably meant: "got neither" would only follow from it.
        if not any(
            key not in _RULE_KEYS and get_close_matches(str(key)[:100], _EFFECTS, n=1)
            for key in item
        ):
            checker.add(
                path, "a rule needs exactly one of 'scenario' or 'error' (or 'chaos'), got neither"
            )
    elif "scenario" in item:
        if item["scenario"] == SYNTHETIC_NAME:  # the generated visit, as the default names it
            synthetic = True
        else:
            scenario, inline = _scenario(item["scenario"], (*path, "scenario"), scenarios, checker)
    elif "error" in item:
        error = _error(item["error"], (*path, "error"), checker)

    chaos = None
    if "chaos" in item and operation != GET:
        chaos = _chaos(item["chaos"], (*path, "chaos"), checker)
    if chaos is not None and scenario is not None:
        _after_the_scenario_fails(chaos, scenario, inline, (*path, "chaos"), checker)
    probability = None
    if "probability" in item:
        probability = checker.number(item["probability"], (*path, "probability"))
        if probability is not None and not 0 < probability <= 1:
            checker.add((*path, "probability"), f"must be in (0, 1], got {probability}")

    times = None
    if "times" in item:
        times = checker.integer(item["times"], (*path, "times"))
        if times is not None and times < 1:
            checker.add((*path, "times"), f"must be >= 1 (omit it for no limit), got {times}")
        elif times is not None and times > MAX_TIMES:
            checker.add(
                (*path, "times"),
                f"must be at most {MAX_TIMES} (omit it for no limit), got " + number_text(times),
            )
            times = None

    if len(checker.problems) > before:
        return None
    return Rule(
        id=rule_id,
        match=match,
        scenario=scenario,
        synthetic=synthetic,
        error=error,
        times=times,
        inline=inline,
        chaos=chaos,
        probability=probability,
        operation=operation,
    )


def _get_rule(item: Mapping[str, object], path: FieldPath, checker: Checker) -> None:
    """Check what a :data:`GET` rule may say: only an error (its type is checked
    against the operation's by :func:`_error`)."""
    doing = f"a {GET} rule refuses look-ups with its 'error' and does nothing else"
    for key in ("scenario", "chaos"):
        if key in item:
            checker.add(
                (*path, key),
                f"{doing}: a scenario or chaos acts on a stream (leave out "
                "match.operation for a stream rule)",
            )
    if "error" not in item:
        checker.add(path, f"{doing}: it needs one (one of {', '.join(GET_ERRORS)})")


#: The longest a chaos rule may hold a stream: past any client's timeout, so a
#: larger number is a typo (or a unit mistake), not a test.
MAX_CHAOS_SECONDS = 3600.0


def _seconds(value: object, path: FieldPath, checker: Checker) -> float | None:
    seconds = checker.number(value, path)
    if seconds is not None and seconds < 0:
        checker.add(path, f"must be >= 0 seconds, got {seconds}")
        return None
    return seconds


def _wait(value: object, path: FieldPath, checker: Checker) -> float:
    """Seconds a chaos rule holds a stream (0 when refused): at most an hour."""
    seconds = _seconds(value, path, checker)
    if seconds is not None and seconds > MAX_CHAOS_SECONDS:
        checker.add(
            path, f"must be at most {MAX_CHAOS_SECONDS:g} seconds (an hour), got {seconds:g}"
        )
        return 0.0
    return seconds or 0.0


def _at(value: object, path: FieldPath, checker: Checker, what: str) -> float | None:
    item = checker.mapping(
        value, path, allowed=("at", "mode") if what == "disconnect" else ("at",), what=what
    )
    if item is None:
        return None
    if "at" not in item:
        checker.add(path, "missing required key 'at' (seconds of audio)")
        return None
    at = _seconds(item["at"], (*path, "at"), checker)
    if at is not None and at > MAX_AUDIO_SECONDS:
        checker.add((*path, "at"), past_the_limit(at, f"the {what} never happens"))
        return None
    return at


def _after_the_scenario_fails(
    chaos: Chaos, scenario: Scenario, inline: bool, path: FieldPath, checker: Checker
) -> None:
    """Report the chaos times at or past the scenario's first scripted exception:
    the session has failed by then, so they never happen (a test relying on one
    would pass for the wrong reason). At the exception's very time too: the
    fault fires as the clock reaches it, chaos only after the audio event that
    took it there. A scripted disconnect stops nothing: the stream resuming the
    session reaches the later times.

    A rule with only chaos is not checked: it acts on whatever scenario its
    session runs, for a new session an older matching rule's or the default
    (see :meth:`RuleBook.scenario_under`), the session's own for a resumed one
    (refused against the default, a chaos rule meant for resumed sessions could
    not be added)."""
    failing = [fault for fault in scenario.faults if fault.exception is not None]
    if not failing:
        return
    first = min(failing, key=lambda fault: fault.at)
    named = "the rule's scenario" if inline else f"scenario {scenario.name!r}"
    for what, at in (
        ("disconnect", chaos.disconnect_at),
        ("goaway", chaos.goaway_at),
        ("malformed", chaos.malformed_at),
    ):
        if at is not None and at >= first.at:
            checker.add(
                (*path, what, "at"),
                f"is {at:g} s: the {what} never happens, as {named} fails the session "
                f"first (its {first.exception} at {first.at:g} s)",
            )


def _chaos(value: object, path: FieldPath, checker: Checker) -> Chaos | None:
    start = len(checker.problems)
    item = checker.mapping(value, path, allowed=_CHAOS_KEYS, what="chaos")
    if item is None:
        return None
    if not item:
        checker.add(path, f"chaos needs at least one of {', '.join(_CHAOS_KEYS)}")
        return None
    delay = jitter = slow = 0.0
    if "delay" in item:
        raw = item["delay"]
        if isinstance(raw, dict):
            spec = checker.mapping(
                raw, (*path, "delay"), allowed=("seconds", "jitter"), what="delay"
            )
            if spec is not None:
                delay = _wait(spec.get("seconds", 0), (*path, "delay", "seconds"), checker)
                jitter = _wait(spec.get("jitter", 0), (*path, "delay", "jitter"), checker)
        else:
            delay = _wait(raw, (*path, "delay"), checker)
    if "slow" in item:
        slow = _wait(item["slow"], (*path, "slow"), checker)
    disconnect_at = goaway_at = malformed_at = None
    mode = "reset"
    if "disconnect" in item:
        disconnect_at = _at(item["disconnect"], (*path, "disconnect"), checker, "disconnect")
        raw_mode = (
            item["disconnect"].get("mode", "reset")
            if isinstance(item["disconnect"], dict)
            else "reset"
        )
        if raw_mode not in _DISCONNECT_MODES:
            checker.add(
                (*path, "disconnect", "mode"),
                f"must be one of {', '.join(_DISCONNECT_MODES)}, got {shown(raw_mode)}",
            )
        else:
            mode = raw_mode
    if "goaway" in item:
        goaway_at = _at(item["goaway"], (*path, "goaway"), checker, "goaway")
    if "malformed" in item:
        malformed_at = _at(item["malformed"], (*path, "malformed"), checker, "malformed")
    if len(checker.problems) > start:  # this part's, or an unknown key's
        return None
    events = (disconnect_at, goaway_at, malformed_at)
    if not (delay or jitter or slow) and all(at is None for at in events):
        checker.add(path, "chaos has no effect: every delay is 0 and nothing is set to happen")
        return None
    return Chaos(
        delay=delay,
        jitter=jitter,
        slow=slow,
        disconnect_at=disconnect_at,
        disconnect_mode=mode,
        goaway_at=goaway_at,
        malformed_at=malformed_at,
    )


def _scenario(
    value: object, path: FieldPath, scenarios: Mapping[str, Scenario], checker: Checker
) -> tuple[Scenario | None, bool]:
    value = as_written(value)  # scenario: 0800 names the file 0800.yaml
    if isinstance(value, str):
        named = _named(value, scenarios)
        if named is not None:
            return named, False
        known = [SYNTHETIC_NAME, *sorted(set(scenarios) - {SYNTHETIC_NAME})]
        near = meant_scenario(value, known)
        hint = f" (did you mean {near!r}?)" if near else ""
        checker.add(
            path,
            f"unknown scenario {shown(value)}{hint}; known scenarios: {', '.join(known)} "
            "(scenario files are read when the emulator starts: one added since needs a "
            "restart, or give the rule its scenario inline)",
        )
        return None, False
    if isinstance(value, dict):
        return validate_scenario(value, name=INLINE_SCENARIO, checker=checker, path=path), True
    checker.add(path, f"must be a scenario name or an inline scenario, got {describe(value)}")
    return None, False


def _named(value: str, scenarios: Mapping[str, Scenario]) -> Scenario | None:
    """The scenario named ``value``, names compared in NFC (see
    :func:`~emulator.scenario.scenario_name`), or None. Loaded scenarios are
    keyed in NFC already; a mapping keyed otherwise (built in code, or
    ``check``'s stand-ins for broken files, by their stems as the file system
    gives them) is searched, a pass made only for a name not found at once."""
    name = scenario_name(value)
    found = scenarios.get(name)
    if found is None:
        found = next((s for key, s in scenarios.items() if scenario_name(key) == name), None)
    return found


def _error(
    value: object,
    path: FieldPath,
    checker: Checker,
    *,
    allowed: Iterable[str] = tuple(SERVICE_ERRORS),
) -> tuple[str, str] | None:
    """An error rule's ``(type, message)``; ``allowed`` are the types its
    operation's model lists (all six for a stream's start)."""
    allowed = tuple(allowed)
    item = checker.mapping(
        value, path, allowed=_ERROR_KEYS, what="an error ({type: ..., message: ...})"
    )
    if item is None:
        return None
    if "type" not in item:
        checker.add(path, f"missing required key 'type' (one of {', '.join(allowed)})")
        return None
    kind = checker.string(item["type"], (*path, "type"))
    if kind is not None and kind not in allowed:
        near = [name for name in allowed if name.lower() == kind.lower()]
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        if kind in SERVICE_ERRORS:  # a Start error Get does not have
            hint = f" ({GET} has no {kind} in the model)"
        checker.add(
            (*path, "type"), f"must be one of {', '.join(allowed)}{hint}, got {shown(kind)}"
        )
        kind = None
    message = None
    if "message" in item:
        message = checker.string(item["message"], (*path, "message"))
    if kind is None:
        return None
    # The SDK shows the message to the user; an empty one says nothing about the cause.
    return kind, message or f"Emulated {kind} from an emulator rule"


def parse_rule(
    data: object, *, scenarios: Mapping[str, Scenario], source: str = "<request>", rule_id: str = ""
) -> Rule:
    """Validate one rule (parsed JSON) and return it with id ``rule_id``.

    A named scenario must be a key of ``scenarios``. An empty ``rule_id`` lets
    :meth:`RuleBook.add` assign one. Raises :class:`RuleError` (a
    :class:`~emulator.errors.ConfigError`) listing every problem.
    """
    checker = Checker(source)
    rule = _validate_rule(data, scenarios=scenarios, checker=checker, path=(), rule_id=rule_id)
    if rule is None:
        raise RuleError(checker.problems)
    return rule


def load_rules_file(path: str | Path, *, scenarios: Mapping[str, Scenario]) -> list[Rule]:
    """Load a rules file: a top-level list of rules, or ``{"rules": [...]}``.

    Returns the rules in file order with empty ids (:meth:`RuleBook.add` assigns
    them, so later rules in the file win over earlier ones). An empty file, or
    one whose rules are all commented out, gives ``[]``. Raises
    :class:`RuleError` listing every problem with file, line and field.
    """
    path = Path(path)
    checker = Checker(str(path))
    ok, data = read_document(path, checker)
    if not ok:
        raise RuleError(checker.problems)
    prefix: FieldPath = ()
    if isinstance(data, dict) and "rules" not in data and set(data) & set(_RULE_KEYS):
        # One rule written without its list item: say so, not "unknown key".
        checker.add(
            (),
            "holds one rule as a mapping; a rules file is a list of rules: start the rule "
            f"with '- ' ('- {next(k for k in data if k in _RULE_KEYS)}: ...'), "
            "or put the list under 'rules:'",
        )
        raise RuleError(checker.problems)
    if isinstance(data, dict):
        checker.mapping(data, (), allowed=_FILE_KEYS, what="a rules file")
        data, prefix = data.get("rules") or [], ("rules",)
    elif data is None:
        data = []
    if not isinstance(data, list):
        checker.add(prefix, f"must be a list of rules, got {describe(data)}")
        raise RuleError(checker.problems)
    rules = []
    for index, raw in enumerate(data):
        rule = _validate_rule(
            raw, scenarios=scenarios, checker=checker, path=(*prefix, index), rule_id=""
        )
        if rule is not None:
            rules.append(rule)
    if checker.problems:
        raise RuleError(checker.problems)
    return rules


#: The ids :meth:`RuleBook.new_id` gives.
_GENERATED_ID = re.compile(r"rule-([0-9]{1,18})")

#: A request's session id, domain id and subscription id.
RequestIds = tuple[str | None, str | None, str | None]


class RuleBook:
    """The live rules, newest last; safe to use from several threads.

    A request is matched against the rules with uses left only, those naming
    its session id looked up by it: a client that adds a rule per session and
    never deletes them (``times: 1`` each) no longer makes every stream walk
    them all (20,000 such rules made a stream's start 24 times slower).
    Exhausted rules stay listed.
    """

    def __init__(self, rules: Iterable[Rule] = (), *, seed: int = 0) -> None:
        self._rules: list[Rule] = []
        self._ids: dict[str, int] = {}  # rule id -> its serial, newer rules higher
        # The rules with uses left, by serial: those matching a session id under it.
        self._by_session: dict[str, dict[int, Rule]] = {}
        self._others: dict[int, Rule] = {}
        self._serial = 0
        self._seed = seed
        # Each rule with a probability's part of its draws: a digest of all it
        # says (and how many rules said the same before it), by serial.
        self._definitions: dict[int, str] = {}
        self._counter = 0
        self._lock = threading.Lock()
        for rule in rules:
            self.add(rule)

    def new_id(self) -> str:
        """Return a fresh id, ``rule-<n>`` from a counter that never repeats."""
        with self._lock:
            self._counter += 1
            return f"rule-{self._counter}"

    def skip_ids(self, used: Iterable[str | None]) -> None:
        """Give no new rule any of the ``rule-<n>`` ids in ``used``, or one below
        them: an earlier run's (the last it gave, and those its stored sessions
        name as their starters). A rule added after a restart took the id of the
        one that started a paused session, and acted on its resumed streams as
        their starter, for free."""
        numbers = [int(m.group(1)) for i in used if i and (m := _GENERATED_ID.fullmatch(i))]
        with self._lock:
            self._counter = max(self._counter, *numbers, 0)

    def add(self, rule: Rule) -> Rule:
        """Add ``rule`` as the newest and return it (a copy with a new id if its id was empty).

        Raises :class:`ValueError` when a rule with the same id is already present.
        """
        if not rule.id:
            rule = dataclasses.replace(rule, id=self.new_id())
        with self._lock:
            if rule.id in self._ids:
                raise ValueError(f"a rule with id {rule.id!r} already exists")
            self._serial += 1
            self._ids[rule.id] = self._serial
            self._rules.append(rule)
            if rule.remaining != 0:
                self._index(rule)[self._serial] = rule
            if rule.probability is not None:
                self._definitions[self._serial] = self._definition(rule)
        return rule

    def _definition(self, rule: Rule) -> str:
        """What ``rule`` says, as a digest, for its draws (under the lock): two rules
        with one match and probability but other effects draw independently (with
        the same draws, the older one fired only when the newer's draw missed,
        so never); a rule saying just what others present say is numbered one
        past the highest of them. (Counting them gave a rule added after one of
        two was deleted the number of the one left, and so its every draw.)"""
        said = {k: v for k, v in rule.to_json().items() if k not in ("id", "uses", "remaining")}
        text = json.dumps(said, sort_keys=True, default=str)
        digest = hashlib.blake2b(text.encode(), digest_size=16).hexdigest() + "#"
        numbers = [
            int(known[len(digest) :])
            for known in self._definitions.values()
            if known.startswith(digest)
        ]
        return f"{digest}{max(numbers) + 1 if numbers else 0}"

    def _draw(self, serial: int, ids: RequestIds, asks: int) -> float:
        """The draw in [0, 1) of a rule's probability for one request (under the lock).

        A hash of the seed, what the rule says, the request's three ids and
        ``asks``, how many of that session's requests took effect before (see
        :meth:`emulator.backend.Backend.asks_of`): the same sessions draw the
        same whatever order concurrent ones arrive in, and whatever other
        clients of a shared emulator, other sessions of the same test, or
        requests refused for other reasons do (one generator per rule, drawn in
        arrival order, made all of these change which sessions failed); a
        session retried after a rule refused it, or resumed, draws again.
        """
        text = f"{self._seed}|{self._definitions[serial]}|{ids}|{asks}"
        digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    def _index(self, rule: Rule) -> dict[int, Rule]:
        """The index a live ``rule`` belongs in (under the lock)."""
        session_id = rule.match.get("sessionId")
        if session_id is None:
            return self._others
        return self._by_session.setdefault(session_id, {})

    def _retire(self, rule: Rule) -> None:
        """Take ``rule`` out of the match indexes (under the lock)."""
        serial = self._ids.get(rule.id)
        index = self._index(rule)
        if serial is not None and index.get(serial) is rule:
            del index[serial]
        session_id = rule.match.get("sessionId")
        if session_id is not None and not self._by_session.get(session_id, True):
            del self._by_session[session_id]

    def list(self) -> list[Rule]:
        """Return the rules, oldest first (exhausted ones included)."""
        with self._lock:
            return list(self._rules)

    def get(self, rule_id: str) -> Rule | None:
        """Return the rule with ``rule_id``, or ``None``."""
        with self._lock:
            if rule_id not in self._ids:
                return None
            return next((rule for rule in self._rules if rule.id == rule_id), None)

    def delete(self, rule_id: str) -> bool:
        """Remove the rule with ``rule_id``; return whether there was one."""
        with self._lock:
            if rule_id not in self._ids:
                return False
            for index, rule in enumerate(self._rules):
                if rule.id == rule_id:
                    self._retire(rule)
                    del self._rules[index]
                    self._definitions.pop(self._ids.pop(rule_id), None)
                    return True
            return False

    def clear(self) -> None:
        """Remove every rule (ids are not reused afterwards) and start the draws
        for probabilities again from the seed: after a reset (the pytest
        fixture's, before each test) a test draws what it would alone."""
        with self._lock:
            self._rules.clear()
            self._ids.clear()
            self._by_session.clear()
            self._others.clear()
            self._definitions.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._rules)

    def match(
        self,
        *,
        session_id: str | None,
        domain_id: str | None,
        subscription_id: str | None,
        consume: bool = True,
        asks: int = 0,
        started_by: str | None = None,
        operation: str = START,
    ) -> Rule | None:
        """Return the newest matching rule with uses left, consuming one use
        (unless ``consume`` is false: then :meth:`use` counts it once it took
        effect); else ``None``. ``asks``: how many of the session's requests
        took effect before this one, part of each probability's draw.

        ``started_by``, for a stream resuming a session, is the id of the rule
        that started it: that rule still matches with its uses spent (a resumed
        stream uses none, so a ``times: 1`` rule acts on its one session whole).
        ``operation`` is the request's (:data:`START` or :data:`GET`): only the
        rules acting on it match.
        """
        with self._lock:
            others = self._others
            specific = self._by_session.get(session_id) if session_id is not None else None
            spent = None
            if started_by is not None and (serial := self._ids.get(started_by)) is not None:
                rule = next((r for r in self._rules if r.id == started_by), None)
                if rule is not None and rule.remaining == 0:
                    spent = (serial, rule)
            if not others and not specific and spent is None:
                return None
            candidates: Iterable[tuple[int, Rule]]
            if specific or spent is not None:
                # All by serial: merged, newest first.
                extra = [spent] if spent is not None else []
                candidates = sorted(
                    (*(specific or {}).items(), *others.items(), *extra), reverse=True
                )
            else:
                candidates = reversed(others.items())
            for serial, rule in candidates:
                if rule.matches(
                    session_id=session_id,
                    domain_id=domain_id,
                    subscription_id=subscription_id,
                    operation=operation,
                ):
                    if (
                        rule.probability is not None
                        and self._draw(serial, (domain_id, subscription_id, session_id), asks)
                        >= rule.probability
                    ):
                        continue
                    if consume:
                        self._count(rule)
                    return rule
            return None

    def scenario_under(self, rule: Rule, *, ids: RequestIds, asks: int) -> Rule | None:
        """The rule whose scenario a session started by the chaos-only ``rule`` replays:
        the newest older one matching the same request (``ids``: its domain,
        subscription and session ids) that names a scenario, with uses left and
        its probability drawn as :meth:`match` draws it; else None (the default
        scenario). Its use is not counted here (:meth:`use`, once it took effect).

        Chaos is trouble on the way, not a visit: a test's ``use_scenario`` with a
        chaos rule added for one of its sessions gave that session the default
        scenario, and the test passed on the wrong visit.
        """
        domain_id, subscription_id, session_id = ids
        with self._lock:
            below = self._ids.get(rule.id)
            if below is None:
                return None
            pool = {**self._others, **(self._by_session.get(session_id or "", {}))}
            for serial in sorted((s for s in pool if s < below), reverse=True):
                older = pool[serial]
                if older.scenario is None and not older.synthetic:
                    continue
                if not older.matches(
                    session_id=session_id, domain_id=domain_id, subscription_id=subscription_id
                ):
                    continue
                if older.probability is not None and (
                    self._draw(serial, (domain_id, subscription_id, session_id), asks)
                    >= older.probability
                ):
                    continue
                return older
            return None

    def use(self, rule: Rule) -> None:
        """Count one use of ``rule``, returned by :meth:`match` without consuming."""
        with self._lock:
            self._count(rule)

    def _count(self, rule: Rule) -> None:
        """One more use of ``rule``; an exhausted rule leaves the indexes (under the lock)."""
        rule.uses += 1
        if rule.remaining == 0:
            self._retire(rule)
