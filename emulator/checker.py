"""The ``check`` command: validate a fixtures directory without starting the emulator.

A fixtures directory holds ``scenarios/*.yaml|yml|json``, ``rules.yaml`` and
``resources.yaml`` (each optional). Every problem in every file is reported as
``file:line: field: message``, with the same loaders the emulator uses at
start-up, so a clean check means the emulator will start with these files.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from .documents import SCENARIO_SUFFIXES, load_scenario_dir
from .errors import ConfigError
from .resources import load_resources_file
from .rules import load_rules_file
from .scenario import Problem, Scenario, ScenarioError

__all__ = [
    "RULES_FILE",
    "RESOURCES_FILE",
    "CheckReport",
    "check_fixtures",
    "run",
    "fixtures_directory_problem",
    "misnamed_fixture_files",
]

RULES_FILE = "rules.yaml"
RESOURCES_FILE = "resources.yaml"


@dataclass(kw_only=True, slots=True)
class CheckReport:
    """The outcome of :func:`check_fixtures`: counts, and every problem found.

    ``domains`` and ``subscriptions`` count what ``resources.yaml`` seeds, and are
    ``None`` without that file.
    """

    scenarios: int = 0
    rules: int = 0
    domains: int | None = None
    subscriptions: int | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _scenario_stems(directory: Path) -> set[str]:
    folder = directory / "scenarios"
    if not folder.is_dir():
        return set()
    return {
        p.stem
        for p in folder.iterdir()
        if p.suffix.lower() in SCENARIO_SUFFIXES and not p.name.startswith(".") and p.is_file()
    }


def _problems(error: ConfigError, path: Path) -> list[Problem]:
    """Return the problems an error lists, or one naming ``path`` for a plain ConfigError."""
    if isinstance(error, ScenarioError):
        return error.problems
    return [Problem(file=str(path), line=None, field="", message=str(error))]


def fixtures_directory_problem(directory: Path) -> str | None:
    """Why ``directory`` cannot be a fixtures directory (missing, a file, or with
    none of ``scenarios/``, ``rules.yaml`` and ``resources.yaml``), or None."""
    if not directory.is_dir():
        what = "a file, not a directory" if directory.exists() else "no such directory"
        return f"{directory}: {what}"
    if not (
        (directory / "scenarios").is_dir()
        or (directory / RULES_FILE).exists()
        or (directory / RESOURCES_FILE).exists()
    ):
        return (
            f"{directory}: not a fixtures directory (no scenarios/, {RULES_FILE} "
            f"or {RESOURCES_FILE})"
        )
    return None


def misnamed_fixture_files(directory: Path) -> list[Problem]:
    """What is wrong with the rules and resources files' names in ``directory``:
    one under another name (``rules.yml``, ``rules.json``), which is not read,
    or a link to nothing, which reads as no file at all. Either left a fixtures
    directory without its rules, silently."""
    problems = []
    for name in (RULES_FILE, RESOURCES_FILE):
        path = directory / name
        if path.is_symlink() and not path.exists():
            target = os.readlink(path)
            message = f"a link to {target}, which does not exist"
            problems.append(Problem(file=str(path), line=None, field="", message=message))
            continue
        if path.exists():
            continue
        stem = name.removesuffix(".yaml")
        for other in (f"{stem}.yml", f"{stem}.json", f"{stem}.YAML", f"{stem}.YML"):
            if (directory / other).exists():
                message = f"not read: the file must be named {name}"
                problems.append(
                    Problem(file=str(directory / other), line=None, field="", message=message)
                )
    return problems


def check_fixtures(directory: str | Path) -> CheckReport:
    """Validate every fixture file under ``directory``; return the report.

    Scenarios load first; rules are then checked against the scenario names
    (a scenario that exists but is itself broken does not also make every rule
    naming it a problem). Raises :class:`FileNotFoundError` when ``directory``
    is not a directory or holds none of ``scenarios/``, ``rules.yaml`` and
    ``resources.yaml``.
    """
    directory = Path(directory)
    problem = fixtures_directory_problem(directory)
    if problem is not None:
        raise FileNotFoundError(problem)
    rules_path, resources_path = directory / RULES_FILE, directory / RESOURCES_FILE
    report = CheckReport()

    scenarios: dict[str, Scenario] = {}
    try:
        scenarios = load_scenario_dir(directory)
    except ConfigError as error:
        report.problems.extend(_problems(error, directory / "scenarios"))
        # Stand-ins for the broken files, so rules naming them are judged on the rest.
        scenarios = {name: Scenario(name=name) for name in _scenario_stems(directory)}
    else:
        report.scenarios = len(scenarios)

    report.problems.extend(misnamed_fixture_files(directory))
    if rules_path.exists():
        try:
            report.rules = len(load_rules_file(rules_path, scenarios=scenarios))
        except ConfigError as error:
            report.problems.extend(_problems(error, rules_path))

    if resources_path.exists():
        try:
            domains = load_resources_file(resources_path)
        except ConfigError as error:
            report.problems.extend(_problems(error, resources_path))
        else:
            report.domains = len(domains)
            report.subscriptions = sum(len(d.subscriptions) for d in domains)
    return report


def run(directory: str | Path, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Check ``directory`` and print the outcome; return the exit code.

    Prints ``OK: N scenarios, M rules`` (then the seeded domains and
    subscriptions, when there is a ``resources.yaml``) and returns 0, or prints one
    ``file:line: field: message`` line per problem and returns 1; returns 2 with
    one ``error:`` line when ``directory`` is not a fixtures directory.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        report = check_fixtures(directory)
    except FileNotFoundError as error:
        print(f"error: {error}", file=err)
        return 2
    if report.ok:
        line = f"OK: {report.scenarios} scenarios, {report.rules} rules"
        if report.domains is not None:
            line += f", {report.domains} domains, {report.subscriptions} subscriptions"
        print(line, file=out)
        return 0
    # By file, then line: validation finds them in its own order (a whole rule's
    # fields before the next rule's duplicate keys, say), not the reader's.
    for problem in sorted(report.problems, key=lambda p: (p.file, p.line or 0)):
        print(problem, file=out)
    count = len(report.problems)
    print(f"{count} problem{'s' if count != 1 else ''} found", file=err)
    return 1
