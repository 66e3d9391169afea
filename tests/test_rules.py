"""Rules: their validation, the rules file, and how the rule book matches sessions."""

from __future__ import annotations

import dataclasses
import re
import textwrap
from pathlib import Path

import pytest
import yaml

from emulator import rules as rules_module
from emulator.errors import SERVICE_ERRORS, ConfigError
from emulator.rules import INLINE_SCENARIO, Rule, RuleBook, RuleError, load_rules_file, parse_rule
from emulator.scenario import Fault, Scenario, Segment, parse_scenario

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

VISIT = Scenario(name="visit", segments=(Segment(begin=0, end=1, content="Hello."),))
QUIET = Scenario(name="quiet")
KNOWN = {"visit": VISIT, "quiet": QUIET}
#: A session id a stream's header could carry.
SESSION = "11111111-2222-3333-4444-555555555555"


def _rule(**match: str) -> Rule:
    return Rule(id="", match=match, scenario=VISIT)


def _match(book: RuleBook, session: str = "s1", domain: str = "d1", sub: str = "u1"):
    return book.match(session_id=session, domain_id=domain, subscription_id=sub)


# id -> (rule, expected field, fragment of the message)
INVALID = {
    "not-a-mapping": (["scenario"], "", "a rule must be a mapping, got a list"),
    "unknown-key": (
        {"scenario": "visit", "count": 2},
        "count",
        "unknown key 'count'; allowed: match, scenario, error, chaos, probability, times",
    ),
    "match-not-mapping": ({"match": "s1", "scenario": "visit"}, "match", "must be a mapping"),
    "match-session-id-no-header-could-carry": (
        {"match": {"sessionId": "s1"}, "scenario": "visit"},
        "match.sessionId",
        "'s1' can never match: requests are validated before rules apply, and "
        "x-amzn-medscribe-session-id must have length greater than or equal to 36; "
        "must satisfy regular expression pattern: .*[a-fA-F0-9]{8}-",
    ),
    "match-domain-id-pattern": (
        {"match": {"domainId": "domain-throttled00000"}, "scenario": "visit"},
        "match.domainId",
        "x-amzn-medscribe-domain-id must satisfy regular expression pattern: (hai-|dom-)[a-z0-9]+",
    ),
    "match-value-quoting-the-constraint-phrase": (
        {"match": {"domainId": "x failed to satisfy constraint: gotcha"}, "scenario": "visit"},
        "match.domainId",
        "x-amzn-medscribe-domain-id must have length less than or equal to 25; "
        "must satisfy regular expression pattern",
    ),
    "match-subscription-id-length": (
        {"match": {"subscriptionId": "sub-inline"}, "scenario": "visit"},
        "match.subscriptionId",
        "x-amzn-medscribe-subscription-id must have length greater than or equal to 25",
    ),
    "unknown-match-key": (
        {"match": {"session_id": "s1"}, "scenario": "visit"},
        "match.session_id",
        "unknown key 'session_id' (did you mean 'sessionId'?); "
        "allowed: sessionId, domainId, subscriptionId",
    ),
    "match-value-not-string": (
        {"match": {"sessionId": 5}, "scenario": "visit"},
        "match.sessionId",
        "must be a string, got a number (5)",
    ),
    "match-value-empty": (
        {"match": {"domainId": ""}, "scenario": "visit"},
        "match.domainId",
        "must not be empty",
    ),
    "both-scenario-and-error": (
        {"scenario": "visit", "error": {"type": "ThrottlingException"}},
        "",
        "exactly one of 'scenario' or 'error', got both",
    ),
    "neither-scenario-nor-error": (
        {"match": {}},
        "",
        "exactly one of 'scenario' or 'error' (or 'chaos'), got neither",
    ),
    "unknown-scenario-name": (
        {"scenario": "visits"},
        "scenario",
        "unknown scenario 'visits' (did you mean 'visit'?); "
        "known scenarios: synthetic, quiet, visit (scenario files are read when the "
        "emulator starts: one added since needs a restart, or give the rule its scenario "
        "inline)",
    ),
    "scenario-named-by-its-file": (
        {"scenario": "visit.yaml"},
        "scenario",
        "unknown scenario 'visit.yaml' (did you mean 'visit'?); "
        "known scenarios: synthetic, quiet, visit (scenario files are read when the "
        "emulator starts: one added since needs a restart, or give the rule its scenario "
        "inline)",
    ),
    "scenario-in-capitals": (
        {"scenario": "QUIET"},
        "scenario",
        "unknown scenario 'QUIET' (did you mean 'quiet'?); "
        "known scenarios: synthetic, quiet, visit (scenario files are read when the "
        "emulator starts: one added since needs a restart, or give the rule its scenario "
        "inline)",
    ),
    "scenario-wrong-type": (
        {"scenario": 3},
        "scenario",
        "must be a scenario name or an inline scenario, got a number (3)",
    ),
    "inline-scenario-invalid": (
        {"scenario": {"segments": [{"begin": 2, "end": 1, "content": "x"}]}},
        "scenario.segments[0].end",
        "must be greater than begin (2.0), got 1.0",
    ),
    "error-type-unknown": (
        {"error": {"type": "throttlingException"}},
        "error.type",
        "(did you mean 'ThrottlingException'?), got 'throttlingException'",
    ),
    "error-type-missing": (
        {"error": {"message": "slow down"}},
        "error",
        "missing required key 'type' (one of ValidationException, AccessDeniedException",
    ),
    "error-unknown-key": (
        {"error": {"type": "ThrottlingException", "status": 429}},
        "error.status",
        "unknown key 'status'; allowed: type, message",
    ),
    "error-message-not-string": (
        {"error": {"type": "ThrottlingException", "message": ["x"]}},
        "error.message",
        "must be a string, got a list",
    ),
    "error-with-chaos": (
        {"error": {"type": "ThrottlingException"}, "chaos": {"delay": 2.0}},
        "chaos",
        "cannot go with 'error': an error rule refuses the request before any stream opens",
    ),
    "operation-unknown": (
        {
            "match": {"operation": "GetMedicalScribeSession"},
            "error": {"type": "ThrottlingException"},
        },
        "match.operation",
        "(did you mean 'GetMedicalScribeListeningSession'?), got 'GetMedicalScribeSession'",
    ),
    "get-rule-with-a-scenario": (
        {"match": {"operation": "GetMedicalScribeListeningSession"}, "scenario": "visit"},
        "scenario",
        "a GetMedicalScribeListeningSession rule refuses look-ups with its 'error' and does "
        "nothing else: a scenario or chaos acts on a stream",
    ),
    "get-rule-with-chaos": (
        {"match": {"operation": "GetMedicalScribeListeningSession"}, "chaos": {"delay": 1.0}},
        "chaos",
        "a scenario or chaos acts on a stream (leave out match.operation for a stream rule)",
    ),
    "get-rule-without-an-error": (
        {"match": {"operation": "GetMedicalScribeListeningSession"}},
        "",
        "does nothing else: it needs one (one of InternalServerException, "
        "ResourceNotFoundException",
    ),
    "get-rule-with-a-validation-error": (
        {
            "match": {"operation": "GetMedicalScribeListeningSession"},
            "error": {"type": "ValidationException"},
        },
        "error.type",
        "(GetMedicalScribeListeningSession has no ValidationException in the model), got "
        "'ValidationException'",
    ),
    "times-zero": ({"scenario": "visit", "times": 0}, "times", "must be >= 1"),
    "times-bool": (
        {"scenario": "visit", "times": True},
        "times",
        "must be an integer, got a boolean (true)",
    ),
    "times-float": ({"scenario": "visit", "times": 1.5}, "times", "must be an integer"),
    "times-over-a-billion": (
        {"scenario": "visit", "times": rules_module.MAX_TIMES + 1},
        "times",
        "must be at most 1000000000 (omit it for no limit), got 1000000001",
    ),
}


@pytest.mark.parametrize(("data", "field", "fragment"), INVALID.values(), ids=INVALID)
def test_invalid_rule_names_field_and_problem(data, field, fragment):
    """Each rule validation rule reports a ConfigError naming the source and field."""
    with pytest.raises(RuleError) as info:
        parse_rule(data, scenarios=KNOWN, rule_id="rule-1")
    assert isinstance(info.value, ConfigError)
    found = [p for p in info.value.problems if p.field == field and fragment in p.message]
    assert found, [str(p) for p in info.value.problems]
    assert found[0].file == "<request>"


_ALLOWED = "allowed: match, scenario, error, chaos, probability, times"


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (
            {"match": {}, "eror": {"type": "ThrottlingException"}},
            "eror: unknown key 'eror' (did you mean 'error'?); " + _ALLOWED,
        ),
        (
            {"scenarios": "visit"},
            "scenarios: unknown key 'scenarios' (did you mean 'scenario'?); " + _ALLOWED,
        ),
        (
            {"error": "ThrottlingException"},
            "error: an error ({type: ..., message: ...}) must be a mapping, "
            "got a string ('ThrottlingException')",
        ),
    ],
    ids=["misspelt-error", "misspelt-scenario", "error-as-a-string"],
)
def test_a_misspelt_rule_key_is_its_one_problem(data, problem):
    """A rule whose `error` was spelt `eror` also got "needs exactly one of
    'scenario' or 'error', got neither" first, which only followed from the typo;
    and a string error read "error must be a mapping"."""
    with pytest.raises(RuleError) as info:
        parse_rule(data, scenarios=KNOWN, rule_id="rule-1")
    assert [str(p).split(": ", 1)[1] for p in info.value.problems] == [problem]


def test_times_and_probability_exactly_at_their_limits_are_accepted():
    """`times: 1000000000` and `probability: 1` are in bounds: only past them is a
    problem (above, and in CHAOS_PROBLEMS)."""
    rule = parse_rule(
        {"chaos": {"slow": 0.1}, "times": rules_module.MAX_TIMES, "probability": 1},
        scenarios=KNOWN,
        rule_id="rule-1",
    )
    assert (rule.times, rule.probability) == (1_000_000_000, 1)


def test_with_no_scenario_files_the_generated_visit_is_still_known():
    """The generated visit is always there to name, as the default scenario names it."""
    with pytest.raises(RuleError, match=r"known scenarios: synthetic \(scenario files are read"):
        parse_rule({"scenario": "visit"}, scenarios={}, rule_id="r")
    rule = parse_rule({"scenario": "synthetic", "times": 1}, scenarios={}, rule_id="r")
    assert rule.synthetic and rule.scenario is None
    assert rule.to_json()["scenario"] == "synthetic"
    with pytest.raises(ValueError, match="at most one"):
        Rule(id="", scenario=VISIT, synthetic=True)


def test_rule_error_lists_every_problem():
    """All problems of one rule are reported together."""
    with pytest.raises(RuleError) as info:
        parse_rule(
            {"match": {"sessionID": "x"}, "scenario": "nope", "times": 0},
            scenarios=KNOWN,
            rule_id="r",
        )
    assert [p.field for p in info.value.problems] == ["match.sessionID", "scenario", "times"]
    assert len(str(info.value).splitlines()) == 3


@pytest.mark.parametrize("code", sorted(SERVICE_ERRORS))
def test_error_rule_accepts_each_modeled_error(code):
    """Every one of the six modeled errors is a valid error rule type."""
    rule = parse_rule({"error": {"type": code, "message": "m"}}, scenarios=KNOWN, rule_id="r")
    assert rule.error == (code, "m")


@pytest.mark.parametrize("given", [{}, {"message": ""}], ids=["left-out", "empty"])
def test_error_rule_without_message_gets_the_documented_default(given):
    """An error rule without a message, or with an empty one, gets the README's."""
    error = {"type": "ThrottlingException", **given}
    rule = parse_rule({"error": error}, scenarios=KNOWN, rule_id="r")
    assert rule.error == (
        "ThrottlingException",
        "Emulated ThrottlingException from an emulator rule",
    )
    fault = {"at": 2.5, "exception": "validationException", **given}
    scenario = parse_scenario({"segments": [], "faults": [fault]}, name="s")
    assert scenario.faults[0].message == "Emulated validationException at 2.5 s of audio"


def test_rule_json_form_names_or_inlines_the_scenario():
    """to_json gives id, match, scenario (name or inline), error, times, uses and remaining."""
    named = parse_rule(
        {"match": {"sessionId": SESSION}, "scenario": "visit", "times": 2},
        scenarios=KNOWN,
        rule_id="rule-7",
    )
    assert named.to_json() == {
        "id": "rule-7",
        "match": {"sessionId": SESSION},
        "scenario": "visit",
        "error": None,
        "chaos": None,
        "probability": None,
        "times": 2,
        "uses": 0,
        "remaining": 2,
    }
    inline = {"segments": [{"channel": 1, "begin": 0, "end": 1, "content": "Hi.", "partials": 2}]}
    rule = parse_rule({"scenario": inline}, scenarios=KNOWN, rule_id="rule-8")
    assert rule.scenario.name == INLINE_SCENARIO
    assert rule.to_json()["scenario"] == {
        "segments": [{"channel": 1, "begin": 0.0, "end": 1.0, "content": "Hi.", "partials": 2}],
        "faults": [],
    }
    error = parse_rule(
        {"error": {"type": "AccessDeniedException", "message": "no"}},
        scenarios=KNOWN,
        rule_id="rule-9",
    )
    assert error.to_json()["error"] == {"type": "AccessDeniedException", "message": "no"}
    assert error.to_json()["scenario"] is None and error.to_json()["remaining"] is None


# --------------------------------------------------------------------------- rules file


def _write(tmp_path: Path, text: str, name: str = "rules.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def test_rules_file_may_be_a_list_or_a_rules_mapping(tmp_path):
    """A rules file is a top-level list, or a mapping with a `rules` list."""
    body = f"""
        - {{match: {{sessionId: {SESSION}}}, scenario: visit}}
        - {{error: {{type: ThrottlingException}}, times: 1}}
        """
    as_list = load_rules_file(_write(tmp_path, body, "a.yaml"), scenarios=KNOWN)
    as_map = load_rules_file(
        _write(tmp_path, "rules:\n" + textwrap.indent(textwrap.dedent(body), "  "), "b.yaml"),
        scenarios=KNOWN,
    )
    assert [r.to_json() for r in as_list] == [r.to_json() for r in as_map]
    assert [r.scenario for r in as_list] == [VISIT, None]


def test_rules_file_problems_carry_file_line_and_field(tmp_path):
    """Every problem in a rules file is reported with its file, line and field."""
    path = _write(
        tmp_path,
        """
        rules:
          - match: {sessionId: s1}
            scenario: visit
          - match:
              domainID: d1
            scenario: missing
          - scenario:
              segments:
                - {begin: 0, end: 1, content: ok}
                - {begin: 1, end: 2, content: ok, partials: 99}
        """,
    )
    with pytest.raises(RuleError) as info:
        load_rules_file(path, scenarios=KNOWN)
    got = [(p.file, p.line, p.field) for p in info.value.problems]
    assert got == [
        (str(path), 2, "rules[0].match.sessionId"),
        (str(path), 5, "rules[1].match.domainID"),
        (str(path), 6, "rules[1].scenario"),
        (str(path), 10, "rules[2].scenario.segments[1].partials"),
    ]


def test_rules_file_top_level_must_be_rules(tmp_path):
    """A rules file that is neither a list nor `{rules: [...]}` is a problem."""
    with pytest.raises(RuleError, match="must be a list of rules, got a string"):
        load_rules_file(_write(tmp_path, "just text\n"), scenarios=KNOWN)
    with pytest.raises(RuleError, match="unknown key 'rule'"):
        load_rules_file(_write(tmp_path, "rule: []\n"), scenarios=KNOWN)


def test_a_rules_file_holding_one_rule_without_its_dash_says_how_to_write_it(tmp_path):
    """It was reported as "match: unknown key 'match'; allowed: rules"."""
    body = "match: {sessionId: abc}\nscenario: visit\n"
    with pytest.raises(RuleError) as info:
        load_rules_file(_write(tmp_path, body), scenarios=KNOWN)
    (problem,) = info.value.problems
    assert "holds one rule as a mapping" in problem.message
    assert "start the rule with '- ' ('- match: ...')" in problem.message
    assert problem.line == 1


def test_rules_file_with_everything_commented_out_is_empty(tmp_path):
    """An empty or fully commented-out rules file gives no rules."""
    assert load_rules_file(_write(tmp_path, "# - match: {}\n"), scenarios=KNOWN) == []


def test_shipped_rules_file_changes_nothing_by_default():
    """fixtures/rules.yaml, loaded at start-up by default, holds no active rule."""
    assert load_rules_file(FIXTURES / "rules.yaml", scenarios=KNOWN) == []


def test_shipped_rules_file_examples_are_valid_once_uncommented(tmp_path):
    """The commented examples in fixtures/rules.yaml are valid rules."""
    text = (FIXTURES / "rules.yaml").read_text()
    examples = text.split("# Examples (uncomment to use):", 1)[1]
    lines = [re.sub(r"^# ?", "", line) for line in examples.splitlines() if line.startswith("#")]
    rules = load_rules_file(
        _write(tmp_path, "\n".join(lines)),
        scenarios=KNOWN
        | {
            "primary-care-visit": VISIT,
        },
    )
    assert len(rules) == 5
    assert yaml.safe_load("\n".join(lines))[0]["scenario"] == "primary-care-visit"
    assert rules[3].probability == 0.5 and rules[3].chaos is not None
    assert rules[4].operation == rules_module.GET and rules[4].error is not None


# --------------------------------------------------------------------------- rule book


def test_a_get_rule_matches_look_ups_only_and_a_stream_rule_streams_only():
    get = parse_rule(
        {
            "match": {"sessionId": SESSION, "operation": "GetMedicalScribeListeningSession"},
            "error": {"type": "InternalServerException", "message": "later"},
            "times": 1,
        },
        scenarios=KNOWN,
    )
    book = RuleBook([dataclasses.replace(get, id="get-1")])
    book.add(parse_rule({"match": {"sessionId": SESSION}, "scenario": "visit"}, scenarios=KNOWN))
    ids = {"session_id": SESSION, "domain_id": "d", "subscription_id": "s"}
    assert book.match(**ids).scenario is not None  # the stream's
    found = book.match(**ids, operation=rules_module.GET)
    assert found is not None and found.error == ("InternalServerException", "later")
    assert book.match(**ids, operation=rules_module.GET) is None  # its one use spent
    listed = book.get("get-1").to_json()
    assert listed["match"] == {
        "sessionId": SESSION,
        "operation": "GetMedicalScribeListeningSession",
    }
    # The listed form posts back as the same rule.
    again = parse_rule(
        {k: v for k, v in listed.items() if k not in ("id", "uses", "remaining")}, scenarios=KNOWN
    )
    assert again.operation == rules_module.GET and again.error == get.error


def test_missing_match_key_matches_anything():
    """A rule without a key matches any value of it; an empty match matches every session."""
    book = RuleBook()
    everything = book.add(_rule())
    assert _match(book, "any", "thing", "at-all") is everything
    assert _match(book, None, None, None) is everything


def test_every_present_match_key_must_equal():
    """All keys a rule names must equal the request's values."""
    book = RuleBook()
    rule = book.add(_rule(sessionId="s1", domainId="d1"))
    assert _match(book, "s1", "d1", "anything") is rule
    assert _match(book, "s1", "d2") is None
    assert _match(book, "s2", "d1") is None


def test_newest_matching_rule_wins():
    """When several rules match, the most recently added one is used."""
    book = RuleBook()
    book.add(_rule())
    newer = book.add(_rule(domainId="d1"))
    assert _match(book, domain="d1") is newer
    newest = book.add(_rule())
    assert _match(book, domain="d1") is newest


def test_a_chaos_only_rule_takes_the_scenario_of_the_newest_older_rule_naming_one():
    """What the session would have had without the chaos rule: older rules only,
    matching the request, with uses left and their probability drawn; error rules
    and rules for other sessions are passed over; none gives the default (None)."""
    book = RuleBook(seed=1)
    ids = ("d1", "u1", "s1")  # domain, subscription, session
    oldest = book.add(_rule())
    book.add(_rule(sessionId="s2"))  # another session's
    spent = book.add(Rule(id="", scenario=VISIT, times=1, uses=1))
    book.add(Rule(id="", error=("ThrottlingException", "slow")))
    never = book.add(Rule(id="", scenario=VISIT, probability=1e-9))
    chaos = book.add(parse_rule({"chaos": {"slow": 0.01}}, scenarios=KNOWN))
    newer = book.add(_rule())
    assert chaos.chaos_only and not oldest.chaos_only
    assert spent.remaining == 0 and never.probability
    assert book.scenario_under(chaos, ids=ids, asks=0) is oldest
    assert oldest.uses == 0  # counted by the caller, once the session starts
    assert book.scenario_under(newer, ids=ids, asks=0) is oldest  # any rule below
    alone = RuleBook()
    only = alone.add(parse_rule({"chaos": {"slow": 0.01}}, scenarios=KNOWN))
    assert alone.scenario_under(only, ids=ids, asks=0) is None


def test_rule_with_times_stops_matching_after_n_uses():
    """A rule with `times: N` matches N sessions, then older rules match again."""
    book = RuleBook()
    fallback = book.add(_rule())
    limited = book.add(Rule(id="", error=("ThrottlingException", "slow"), times=2))
    assert _match(book) is limited
    assert limited.remaining == 1
    assert _match(book) is limited
    assert limited.remaining == 0
    assert _match(book) is fallback
    assert limited in book.list() and limited.to_json()["remaining"] == 0


def test_no_match_consumes_nothing():
    """A session that matches no rule gets None and uses nothing up."""
    book = RuleBook()
    rule = book.add(Rule(id="", match={"sessionId": "s9"}, scenario=VISIT, times=1))
    assert _match(book, "s1") is None
    assert rule.uses == 0


def test_rule_ids_are_assigned_from_a_counter_and_never_reused():
    """Rules without ids get rule-1, rule-2, ...; deleted ids are not handed out again."""
    book = RuleBook()
    first, second = book.add(_rule()), book.add(_rule())
    assert (first.id, second.id) == ("rule-1", "rule-2")
    book.delete("rule-2")
    book.clear()
    assert book.add(_rule()).id == "rule-3"


def test_duplicate_rule_id_is_refused():
    """Adding a rule whose id is already present raises ValueError."""
    book = RuleBook()
    book.add(Rule(id="mine", scenario=VISIT))
    with pytest.raises(ValueError):
        book.add(Rule(id="mine", scenario=QUIET))


def test_delete_removes_one_rule_and_reports_whether_it_existed():
    """delete(id) removes that rule only and returns True; an unknown id returns False."""
    book = RuleBook()
    keep, drop = book.add(_rule()), book.add(_rule(sessionId="s1"))
    assert book.delete(drop.id) is True
    assert book.delete(drop.id) is False
    assert book.list() == [keep]
    assert _match(book, "s1") is keep


def test_clear_removes_every_rule():
    """clear() leaves no rule to match."""
    book = RuleBook([_rule(), _rule(sessionId="s1")])
    assert len(book) == 2
    book.clear()
    assert book.list() == [] and _match(book) is None


def test_rules_from_a_file_later_ones_win(tmp_path):
    """Rules loaded from a file keep file order, so a later rule wins over an earlier one."""
    path = _write(
        tmp_path,
        """
        - {scenario: visit}
        - {scenario: quiet}
        """,
    )
    book = RuleBook(load_rules_file(path, scenarios=KNOWN))
    assert [r.id for r in book.list()] == ["rule-1", "rule-2"]
    assert _match(book).scenario is QUIET


def test_rule_built_in_code_needs_exactly_one_outcome():
    """Rule refuses both or neither of scenario and error, and times below 1."""
    with pytest.raises(ValueError):
        Rule(id="r")
    with pytest.raises(ValueError):
        Rule(id="r", scenario=VISIT, error=("ThrottlingException", "m"))
    with pytest.raises(ValueError):
        Rule(id="r", scenario=VISIT, times=0)


CHAOS_PROBLEMS = {
    "negative-delay": ({"chaos": {"delay": -1}}, "chaos.delay", "must be >= 0 seconds"),
    "delay-past-an-hour": (
        {"chaos": {"delay": {"seconds": 1e10}}},
        "chaos.delay.seconds",
        "must be at most 3600 seconds (an hour), got 1e+10",
    ),
    "slow-past-an-hour": ({"chaos": {"slow": 7200}}, "chaos.slow", "must be at most 3600"),
    # Just past the caps, which are inclusive (see the test after this table).
    "delay-just-past-an-hour": (
        {"chaos": {"delay": {"seconds": 3600.5}}},
        "chaos.delay.seconds",
        "must be at most 3600 seconds (an hour), got 3600.5",
    ),
    "bare-delay-just-past-an-hour": (
        {"chaos": {"delay": 3600.5}},
        "chaos.delay",
        "must be at most 3600 seconds (an hour), got 3600.5",
    ),
    "jitter-just-past-an-hour": (
        {"chaos": {"delay": {"seconds": 1, "jitter": 3600.5}}},
        "chaos.delay.jitter",
        "must be at most 3600 seconds (an hour), got 3600.5",
    ),
    "slow-just-past-an-hour": (
        {"chaos": {"slow": 3600.5}},
        "chaos.slow",
        "must be at most 3600 seconds (an hour), got 3600.5",
    ),
    "disconnect-just-past-two-hours": (
        {"chaos": {"disconnect": {"at": 7200.5}}},
        "chaos.disconnect.at",
        "is 7200.5 s, past the 7200 s (2 hours) of audio a session can carry: the disconnect "
        "never happens",
    ),
    "goaway-just-past-two-hours": (
        {"chaos": {"goaway": {"at": 7200.5}}},
        "chaos.goaway.at",
        "is 7200.5 s, past the 7200 s (2 hours) of audio a session can carry: the goaway "
        "never happens",
    ),
    "malformed-just-past-two-hours": (
        {"chaos": {"malformed": {"at": 7200.5}}},
        "chaos.malformed.at",
        "is 7200.5 s, past the 7200 s (2 hours) of audio a session can carry: the malformed "
        "never happens",
    ),
    "empty": ({"chaos": {}}, "chaos", "chaos needs at least one of delay, slow, disconnect"),
    "no-effect": ({"chaos": {"delay": 0, "slow": 0}}, "chaos", "chaos has no effect"),
    "bad-mode": (
        {"chaos": {"disconnect": {"at": 1, "mode": "explode"}}},
        "chaos.disconnect.mode",
        "must be one of reset, close",
    ),
    "missing-at": ({"chaos": {"goaway": {}}}, "chaos.goaway", "missing required key 'at'"),
    "unknown-kind": ({"chaos": {"flood": 1}}, "chaos.flood", "unknown key"),
    "probability-range": (
        {"chaos": {"slow": 0.1}, "probability": 1.5},
        "probability",
        "must be in (0, 1]",
    ),
    "probability-zero": (  # a rule that can never fire is a mistake
        {"chaos": {"slow": 0.1}, "probability": 0},
        "probability",
        "must be in (0, 1], got 0",
    ),
    "past-two-hours": (
        {"chaos": {"disconnect": {"at": 8000}}},
        "chaos.disconnect.at",
        "is 8000 s, past the 7200 s (2 hours) of audio a session can carry: the disconnect "
        "never happens",
    ),
    "after-the-inline-scenario-fails": (
        {
            "scenario": {"faults": [{"at": 1, "exception": "validationException"}]},
            "chaos": {"malformed": {"at": 2}},
        },
        "chaos.malformed.at",
        "is 2 s: the malformed never happens, as the rule's scenario fails the session first "
        "(its validationException at 1 s)",
    ),
    "at-the-exception": (  # the fault fires as the clock reaches it, chaos after
        {
            "scenario": {"faults": [{"at": 1, "exception": "validationException"}]},
            "chaos": {"disconnect": {"at": 1}},
        },
        "chaos.disconnect.at",
        "is 1 s: the disconnect never happens, as the rule's scenario fails the session first",
    ),
    "after-the-named-scenario-fails": (
        {"scenario": "failing", "chaos": {"goaway": {"at": 20}}},
        "chaos.goaway.at",
        "as scenario 'failing' fails the session first (its internalFailureException at 10 s)",
    ),
}


FAILING = Scenario(name="failing", faults=(Fault(at=10, exception="internalFailureException"),))


@pytest.mark.parametrize("case", CHAOS_PROBLEMS.values(), ids=CHAOS_PROBLEMS.keys())
def test_invalid_chaos_names_field_and_problem(case):
    data, field, message = case
    with pytest.raises(RuleError) as info:
        parse_rule(data, scenarios={**KNOWN, "failing": FAILING}, rule_id="rule-1")
    (problem,) = info.value.problems
    assert problem.field == field and message in problem.message


def test_chaos_waits_and_times_exactly_at_their_caps_are_accepted():
    """The caps are inclusive: an hour of delay, jitter or slowness, and a
    disconnect, GOAWAY or malformed frame at exactly 2 hours of audio, the most a
    session carries."""
    waits = parse_rule(
        {"chaos": {"delay": {"seconds": 3600, "jitter": 3600}, "slow": 3600}},
        scenarios=KNOWN,
        rule_id="rule-1",
    ).chaos
    assert waits is not None
    assert (waits.delay, waits.jitter, waits.slow) == (3600, 3600, 3600)
    assert rules_module.MAX_CHAOS_SECONDS == 3600
    for what in ("disconnect", "goaway", "malformed"):
        chaos = parse_rule({"chaos": {what: {"at": 7200}}}, scenarios=KNOWN, rule_id="rule-1").chaos
        assert chaos is not None and getattr(chaos, f"{what}_at") == 7200


@pytest.mark.parametrize(
    "faults",
    [
        [{"at": 1, "disconnect": True}],  # the resumed stream reaches the later times
        [{"at": 5, "exception": "validationException"}],  # the chaos comes first
    ],
    ids=["after-a-scripted-disconnect", "before-the-exception"],
)
def test_chaos_the_scenario_lets_happen_is_accepted(faults):
    rule = parse_rule(
        {"scenario": {"faults": faults}, "chaos": {"disconnect": {"at": 2}}},
        scenarios=KNOWN,
        rule_id="rule-1",
    )
    assert rule.chaos is not None and rule.chaos.disconnect_at == 2


def test_chaos_rule_round_trips_to_json_without_scenario_or_error():
    rule = parse_rule(
        {
            "chaos": {
                "delay": {"seconds": 0.2, "jitter": 0.1},
                "slow": 0.05,
                "disconnect": {"at": 3, "mode": "close"},
                "goaway": {"at": 2},
                "malformed": {"at": 1},
            },
            "probability": 0.5,
        },
        scenarios=KNOWN,
        rule_id="rule-1",
    )
    assert rule.scenario is None and rule.error is None
    assert rule.to_json()["chaos"] == {
        "delay": {"seconds": 0.2, "jitter": 0.1},
        "slow": 0.05,
        "disconnect": {"at": 3.0, "mode": "close"},
        "goaway": {"at": 2.0},
        "malformed": {"at": 1.0},
    }
    assert rule.to_json()["probability"] == 0.5


def test_a_cleared_book_draws_from_the_seed_again():
    """The pytest fixture resets the emulator before each test: a test with a
    probability rule drew what the tests before it had left of the sequence."""
    book = RuleBook(seed=42)

    def draws() -> list[bool]:
        book.add(parse_rule({"chaos": {"slow": 0.1}, "probability": 0.5}, scenarios=KNOWN))
        return [
            book.match(session_id="s", domain_id="d", subscription_id="x", asks=k) is not None
            for k in range(20)
        ]

    first = draws()
    book.clear()
    assert draws() == first


SESSIONS = [f"0000000{i}-0000-4000-8000-000000000000" for i in range(10)]


def _hits(book: RuleBook, order: list[int], *, asks: int = 1) -> dict[int, list[bool]]:
    """Each session's ``asks`` requests (the k-th after k that took effect)."""
    hits: dict[int, list[bool]] = {i: [] for i in order}
    for i in order:
        for k in range(asks):
            rule = book.match(session_id=SESSIONS[i], domain_id="d", subscription_id="x", asks=k)
            hits[i].append(rule is not None)
    return hits


def _probability_book(seed: int = 3) -> RuleBook:
    book = RuleBook(seed=seed)
    book.add(Rule(id="", match={"domainId": "d"}, synthetic=True, probability=0.5))
    return book


def test_which_sessions_a_probability_picks_does_not_depend_on_their_arrival_order():
    """Concurrent sessions reach the rule in another order each run: one generator
    drawn in arrival order gave them other outcomes each time."""
    in_order = _hits(_probability_book(), list(range(10)))
    assert _hits(_probability_book(), list(range(9, -1, -1))) == in_order
    assert _hits(_probability_book(), [3, 7, 0, 9, 1, 8, 2, 6, 4, 5]) == in_order
    assert 0 < sum(hit for (hit,) in in_order.values()) < 10
    assert _hits(_probability_book(seed=4), list(range(10))) != in_order


def test_a_sessions_later_requests_draw_again_and_change_no_other_sessions_draws():
    """A resumed stream or a retry after a refusal (its count of requests that took
    effect one more) draws anew: a session refused once is not refused for ever.
    The other sessions' draws stay as they were."""
    alone = _hits(_probability_book(), list(range(10)))
    book = _probability_book()
    repeated = _hits(book, [0], asks=40)[0]
    assert 5 < sum(repeated) < 35  # each ask a draw of its own
    assert _hits(book, list(range(1, 10))) == {i: alone[i] for i in range(1, 10)}


def test_two_rules_with_one_match_and_probability_draw_independently():
    """They drew the same number: the older fired only when the newer's draw
    missed, so never (30% throttled plus 30% disconnects on one domain lost one)."""
    book = RuleBook(seed=3)
    throttled = book.add(
        Rule(id="", match={"domainId": "d"}, error=("ThrottlingException", "m"), probability=0.5)
    )
    dropped = book.add(Rule(id="", match={"domainId": "d"}, synthetic=True, probability=0.5))
    same = book.add(Rule(id="", match={"domainId": "d"}, synthetic=True, probability=0.5))
    picked = [
        book.match(
            session_id=f"{i:08d}-0000-4000-8000-000000000000", domain_id="d", subscription_id="x"
        )
        for i in range(400)
    ]
    counts = {rule.id: sum(p is rule for p in picked) for rule in (throttled, dropped, same)}
    # Newest first: about 200, 100 and 50 of 400.
    assert 150 < counts[same.id] < 250 and 60 < counts[dropped.id] < 140
    assert 20 < counts[throttled.id] < 80


def test_a_rule_added_after_one_of_two_like_it_was_deleted_draws_apart_from_the_other():
    """Identical rules were numbered by how many were present: of two, delete the
    first and add a third, and the third drew every number the second did, which
    then never fired (its draws hit only when the newer's missed)."""
    book = RuleBook(seed=3)

    def like() -> Rule:
        return book.add(
            Rule(
                id="", match={"domainId": "d"}, error=("ThrottlingException", "m"), probability=0.5
            )
        )

    first, second = like(), like()
    assert book.delete(first.id)
    third = like()
    picked = [
        book.match(
            session_id=f"{i:08d}-0000-4000-8000-000000000000", domain_id="d", subscription_id="x"
        )
        for i in range(400)
    ]
    # Newest first: about 200 for the third, 100 for the second.
    assert 150 < sum(p is third for p in picked) < 250
    assert 60 < sum(p is second for p in picked) < 140


def test_a_peeked_match_is_counted_only_when_used():
    book = RuleBook()
    rule = book.add(Rule(id="", scenario=VISIT, times=1))
    for _ in range(3):  # requests refused for other reasons
        assert book.match(session_id="s", domain_id="d", subscription_id="x", consume=False)
    assert rule.remaining == 1
    book.use(rule)
    assert rule.remaining == 0
    assert book.match(session_id="s", domain_id="d", subscription_id="x", consume=False) is None


def test_probability_draws_repeat_for_the_same_seed_and_skip_without_consuming():
    def draws(seed: int) -> list[bool]:
        book = RuleBook(seed=seed)
        book.add(
            parse_rule({"chaos": {"slow": 0.1}, "probability": 0.5, "times": 100}, scenarios=KNOWN)
        )
        return [
            book.match(session_id="s", domain_id="d", subscription_id="x", asks=k) is not None
            for k in range(40)
        ]

    first = draws(3)
    assert first == draws(3)
    assert 5 < sum(first) < 35  # some hit, some miss
    assert first != draws(4)


def test_rules_file_problems_are_listed_by_line_as_check_lists_them(tmp_path):
    """serve (which prints the error) listed a rule's `probability` (line 3) before its
    `times` (line 2), the order the fields are checked in; check sorted them."""
    path = _write(
        tmp_path,
        """
        - scenario: synthetic
          times: 0
          probability: 2
        """,
    )
    with pytest.raises(RuleError) as info:
        load_rules_file(path, scenarios={})
    lines = str(info.value).splitlines()
    assert [line.split(": ")[1] for line in lines] == ["[0].times", "[0].probability"]
    assert [p.line for p in info.value.problems] == [2, 3]


def test_a_request_is_matched_against_live_rules_of_its_session_and_the_general_ones(
    monkeypatch,
):
    """A client adding a `times: 1` rule per session and never deleting them made every
    stream's start walk all of them (20,000 rules: 24 times slower). Only rules with
    uses left, of the request's session id or naming none, are looked at, newest first
    across both; exhausted rules stay listed."""
    book = RuleBook()
    ids = [f"00000000-0000-4000-8000-{n:012d}" for n in range(1000)]
    for session_id in ids:
        book.add(Rule(id="", match={"sessionId": session_id}, synthetic=True, times=1))
    general = book.add(Rule(id="", match={"domainId": "dom-abcdefghij0123456789"}, synthetic=True))
    newest = book.add(Rule(id="", match={"sessionId": ids[5]}, synthetic=True, times=1))
    looked_at: list[str] = []
    matches = Rule.matches

    def counting(self, **request):
        looked_at.append(self.id)
        return matches(self, **request)

    monkeypatch.setattr(Rule, "matches", counting)
    request = {"domain_id": "dom-abcdefghij0123456789", "subscription_id": "s"}
    assert book.match(session_id=ids[5], **request) is newest
    assert book.match(session_id=ids[5], **request) is general  # newer than ids[5]'s first
    assert book.match(session_id=ids[7], **request) is general
    other = {"domain_id": "dom-other0000000000000", "subscription_id": "s"}
    assert book.match(session_id=ids[7], **other).match == {"sessionId": ids[7]}
    # The general rule and the two session rules it was asked for, never the others.
    assert looked_at == [newest.id, general.id, general.id, general.id, "rule-8"]
    assert len(book.list()) == 1002  # the exhausted one is still listed
    assert (
        book.match(session_id=ids[7], domain_id="dom-other0000000000000", subscription_id="s")
        is None
    )
    assert book.delete(general.id)
    assert book.match(session_id=ids[9], **request).match == {"sessionId": ids[9]}
    book.clear()
    assert book.match(session_id=ids[9], **request) is None and len(book) == 0


def test_each_rules_draws_repeat_whatever_other_rules_draw():
    """One generator for every rule made one job's traffic on a shared emulator change
    which of another job's sessions a probability rule hit."""

    def book_with_two_rules() -> RuleBook:
        book = RuleBook(seed=7)
        for domain in ("dom-aaaaaaaaaaaaaaaaaaaa", "dom-bbbbbbbbbbbbbbbbbbbb"):
            book.add(Rule(id="", match={"domainId": domain}, synthetic=True, probability=0.5))
        return book

    def b_draws(book: RuleBook, *, with_a: bool) -> list[bool]:
        hits = []
        for k in range(32):
            if with_a:
                book.match(
                    session_id=None, domain_id="dom-aaaaaaaaaaaaaaaaaaaa", subscription_id=None
                )
            hit = book.match(
                session_id=None, domain_id="dom-bbbbbbbbbbbbbbbbbbbb", subscription_id=None, asks=k
            )
            hits.append(hit is not None)
        return hits

    alone = b_draws(book_with_two_rules(), with_a=False)
    assert alone == b_draws(book_with_two_rules(), with_a=True)
    assert 4 < sum(alone) < 28  # a 0.5 probability, drawn
    book = book_with_two_rules()
    b_draws(book, with_a=True)
    book.clear()  # a reset: the rules come back and draw from the start again
    for domain in ("dom-aaaaaaaaaaaaaaaaaaaa", "dom-bbbbbbbbbbbbbbbbbbbb"):
        book.add(Rule(id="", match={"domainId": domain}, synthetic=True, probability=0.5))
    assert b_draws(book, with_a=False) == alone


def test_a_long_value_is_quoted_cut_short_with_its_length():
    from emulator.scenario import shown

    assert shown("a" * 64) == repr("a" * 64)
    assert shown("a" * 65) == repr("a" * 64) + "... (65 characters)"
    assert shown(7) == "7"


@pytest.mark.parametrize(
    ("rule", "field", "quoted"),
    [
        ({"k" * 100_000: 1, "scenario": "synthetic"}, "k" * 64 + "...", "unknown key 'kkk"),
        ({"scenario": "s" * 100_000}, "scenario", "unknown scenario 'sss"),
        (
            {"match": {"sessionId": "i" * 100_000}, "scenario": "synthetic"},
            "match.sessionId",
            "'iii",
        ),
        ({"error": {"type": "E" * 100_000}}, "error.type", "got 'EEE"),
        (
            {"chaos": {"disconnect": {"at": 1, "mode": "m" * 100_000}}},
            "chaos.disconnect.mode",
            "got 'mmm",
        ),
    ],
    ids=["key", "scenario", "match", "error-type", "disconnect-mode"],
)
def test_a_rule_error_quotes_a_long_value_cut_short(rule, field, quoted):
    """A 100,000-character value was echoed whole (twice, for a key): a 200 KB message."""
    with pytest.raises(RuleError) as refused:
        parse_rule(rule, scenarios={})
    (problem,) = refused.value.problems
    assert problem.field == field
    assert quoted in problem.message
    assert "... (100000 characters)" in problem.message
    assert len(str(refused.value)) < 500
