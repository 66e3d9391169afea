"""Rules: which sessions get which scenario, or which error, and how many times.

A rule is data, from the rules file at start-up or from the admin API::

    {"match": {"sessionId"?, "domainId"?, "subscriptionId"?},
     "scenario": "NAME" | {inline scenario},      # exactly one of scenario / error
     "error": {"type": "ThrottlingException", "message": "..."},
     "times": N}                                  # optional, N >= 1

A missing match key matches anything. :meth:`RuleBook.match` tries the newest
rule first and consumes one use of the rule it returns; a rule with ``times``
stops matching after that many uses (it stays listed, with ``remaining: 0``).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path

from emulator.errors import SERVICE_ERRORS
from emulator.scenario import (
    Checker,
    FieldPath,
    Scenario,
    ScenarioError,
    describe,
    read_document,
    validate_scenario,
)

__all__ = [
    "MATCH_KEYS",
    "INLINE_SCENARIO",
    "Rule",
    "RuleError",
    "RuleBook",
    "parse_rule",
    "load_rules_file",
]

#: The request values a rule can match, by their JSON (and header-derived) names.
MATCH_KEYS = ("sessionId", "domainId", "subscriptionId")

#: The name given to a scenario written inline in a rule.
INLINE_SCENARIO = "inline"

_RULE_KEYS = ("match", "scenario", "error", "times")
_ERROR_KEYS = ("type", "message")
_FILE_KEYS = ("rules",)


class RuleError(ScenarioError):
    """One or more rule problems; ``problems`` lists them all (file, line, field, message)."""


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

    def __post_init__(self) -> None:
        if (self.scenario is None) == (self.error is None):
            raise ValueError("a rule needs exactly one of scenario or error")
        if self.error is not None and self.error[0] not in SERVICE_ERRORS:
            raise ValueError(f"unknown error type {self.error[0]!r}")
        if self.times is not None and self.times < 1:
            raise ValueError(f"times must be >= 1, got {self.times!r}")
        unknown = set(self.match) - set(MATCH_KEYS)
        if unknown:
            raise ValueError(f"unknown match keys {sorted(unknown)}")

    @property
    def remaining(self) -> int | None:
        """Uses left, or ``None`` for a rule without ``times``."""
        return None if self.times is None else max(self.times - self.uses, 0)

    def matches(
        self, *, session_id: str | None, domain_id: str | None, subscription_id: str | None
    ) -> bool:
        """Return whether every match key equals the request's value (ignores ``times``)."""
        actual = {"sessionId": session_id, "domainId": domain_id, "subscriptionId": subscription_id}
        return all(actual[key] == value for key, value in self.match.items())

    def to_json(self) -> dict[str, object]:
        """Return the admin API form: id, match, scenario, error, times, remaining."""
        scenario: object = None
        if self.scenario is not None:
            scenario = self.scenario.to_json() if self.inline else self.scenario.name
        error = None if self.error is None else {"type": self.error[0], "message": self.error[1]}
        return {
            "id": self.id,
            "match": dict(self.match),
            "scenario": scenario,
            "error": error,
            "times": self.times,
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

    match: dict[str, str] = {}
    raw_match = item.get("match", {})
    checked = checker.mapping(raw_match, (*path, "match"), allowed=MATCH_KEYS, what="match")
    for key, value in (checked or {}).items():
        if key in MATCH_KEYS:
            text = checker.string(value, (*path, "match", key), non_empty=True)
            if text is not None:
                match[key] = text

    scenario: Scenario | None = None
    inline = False
    error: tuple[str, str] | None = None
    if ("scenario" in item) == ("error" in item):
        got = "both" if "scenario" in item else "neither"
        checker.add(path, f"a rule needs exactly one of 'scenario' or 'error', got {got}")
    elif "scenario" in item:
        scenario, inline = _scenario(item["scenario"], (*path, "scenario"), scenarios, checker)
    else:
        error = _error(item["error"], (*path, "error"), checker)

    times = None
    if "times" in item:
        times = checker.integer(item["times"], (*path, "times"))
        if times is not None and times < 1:
            checker.add((*path, "times"), f"must be >= 1 (omit it for no limit), got {times}")

    if len(checker.problems) > before:
        return None
    return Rule(id=rule_id, match=match, scenario=scenario, error=error, times=times, inline=inline)


def _scenario(
    value: object, path: FieldPath, scenarios: Mapping[str, Scenario], checker: Checker
) -> tuple[Scenario | None, bool]:
    if isinstance(value, str):
        if value in scenarios:
            return scenarios[value], False
        known = sorted(scenarios)
        near = get_close_matches(value, known, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        listing = f"known scenarios: {', '.join(known)}" if known else "no scenarios are loaded"
        checker.add(path, f"unknown scenario {value!r}{hint}; {listing}")
        return None, False
    if isinstance(value, dict):
        return validate_scenario(value, name=INLINE_SCENARIO, checker=checker, path=path), True
    checker.add(path, f"must be a scenario name or an inline scenario, got {describe(value)}")
    return None, False


def _error(value: object, path: FieldPath, checker: Checker) -> tuple[str, str] | None:
    item = checker.mapping(value, path, allowed=_ERROR_KEYS, what="error")
    if item is None:
        return None
    if "type" not in item:
        checker.add(path, f"missing required key 'type' (one of {', '.join(SERVICE_ERRORS)})")
        return None
    kind = checker.string(item["type"], (*path, "type"))
    if kind is not None and kind not in SERVICE_ERRORS:
        near = [name for name in SERVICE_ERRORS if name.lower() == kind.lower()]
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        checker.add(
            (*path, "type"), f"must be one of {', '.join(SERVICE_ERRORS)}{hint}, got {kind!r}"
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


class RuleBook:
    """The live rules, newest last; safe to use from several threads."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self._rules: list[Rule] = []
        self._counter = 0
        self._lock = threading.Lock()
        for rule in rules:
            self.add(rule)

    def new_id(self) -> str:
        """Return a fresh id, ``rule-<n>`` from a counter that never repeats."""
        with self._lock:
            self._counter += 1
            return f"rule-{self._counter}"

    def add(self, rule: Rule) -> Rule:
        """Add ``rule`` as the newest and return it (a copy with a new id if its id was empty).

        Raises :class:`ValueError` when a rule with the same id is already present.
        """
        if not rule.id:
            rule = dataclasses.replace(rule, id=self.new_id())
        with self._lock:
            if any(existing.id == rule.id for existing in self._rules):
                raise ValueError(f"a rule with id {rule.id!r} already exists")
            self._rules.append(rule)
        return rule

    def list(self) -> list[Rule]:
        """Return the rules, oldest first (exhausted ones included)."""
        with self._lock:
            return list(self._rules)

    def get(self, rule_id: str) -> Rule | None:
        """Return the rule with ``rule_id``, or ``None``."""
        with self._lock:
            return next((rule for rule in self._rules if rule.id == rule_id), None)

    def delete(self, rule_id: str) -> bool:
        """Remove the rule with ``rule_id``; return whether there was one."""
        with self._lock:
            for index, rule in enumerate(self._rules):
                if rule.id == rule_id:
                    del self._rules[index]
                    return True
            return False

    def clear(self) -> None:
        """Remove every rule (ids are not reused afterwards)."""
        with self._lock:
            self._rules.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._rules)

    def match(
        self, *, session_id: str | None, domain_id: str | None, subscription_id: str | None
    ) -> Rule | None:
        """Return the newest matching rule with uses left, consuming one use; else ``None``."""
        with self._lock:
            for rule in reversed(self._rules):
                if rule.remaining == 0:
                    continue
                if rule.matches(
                    session_id=session_id, domain_id=domain_id, subscription_id=subscription_id
                ):
                    rule.uses += 1
                    return rule
            return None
