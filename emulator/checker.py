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

from .documents import SCENARIO_SUFFIXES, load_scenario_dir, scenario_files
from .errors import ConfigError
from .problems import counted
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
    "fixture_file_hint",
    "misnamed_fixture_files",
    "unread_fixture_files",
]

RULES_FILE = "rules.yaml"
RESOURCES_FILE = "resources.yaml"

#: How to keep a file beside the fixtures that the emulator is not to read.
_HIDE = " (start its name with a dot to keep it there unread)"

#: The scenario names the OK line shows: a directory of dozens stays one readable line.
_LISTED_NAMES = 10


@dataclass(kw_only=True, slots=True)
class CheckReport:
    """The outcome of :func:`check_fixtures`: counts, and every problem found.

    ``names`` are the scenarios' (sorted). ``domains`` and ``subscriptions``
    count what ``resources.yaml`` seeds, and are ``None`` without that file.
    ``notices`` are files not read that may be there on purpose (see
    :func:`unread_fixture_files`): they do not make the report fail.
    """

    scenarios: int = 0
    names: tuple[str, ...] = ()
    rules: int = 0
    domains: int | None = None
    subscriptions: int | None = None
    problems: list[Problem] = field(default_factory=list)
    notices: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _scenario_stems(directory: Path) -> set[str]:
    return {p.stem for p in scenario_files(directory / "scenarios")}


def _problems(error: ConfigError, path: Path) -> list[Problem]:
    """Return the problems an error lists, or one naming ``path`` for a plain ConfigError."""
    if isinstance(error, ScenarioError):
        return error.problems
    return [Problem(file=str(path), line=None, field="", message=str(error))]


def fixtures_directory_problem(directory: Path) -> str | None:
    """Why ``directory`` cannot be a fixtures directory (missing, a file, or with
    none of ``scenarios/``, ``rules.yaml`` and ``resources.yaml``), or None.

    A file, or a directory that holds scenario files, was most likely given for
    the fixtures directory around it: the reason says which to give instead."""
    if not directory.is_dir():
        if not directory.exists():
            return f"{directory}: no such directory"
        return f"{directory}: a file, not a directory{fixture_file_hint(directory)}"
    if not (
        (directory / "scenarios").is_dir()
        or (directory / RULES_FILE).exists()
        or (directory / RESOURCES_FILE).exists()
    ):
        return (
            f"{directory}: not a fixtures directory (no scenarios/, {RULES_FILE} "
            f"or {RESOURCES_FILE}){_folder_hint(directory)}"
        )
    return None


def _is_fixtures_directory(directory: Path) -> bool:
    return directory.is_dir() and fixtures_directory_problem(directory) is None


def fixture_file_hint(path: Path) -> str:
    """What to give instead of ``path``, a file given for a fixtures directory:
    ``": give ..."`` naming the fixtures directory that holds it, or (a scenario
    file outside any) what one holds; ``""`` for any other file."""
    parent = _named(path.parent)
    if parent.name == "scenarios" and _is_fixtures_directory(parent.parent):
        return f": give the fixtures directory holding its scenarios/ folder, {parent.parent}"
    if path.name in (RULES_FILE, RESOURCES_FILE) and _is_fixtures_directory(parent):
        return f": give the fixtures directory holding it, {parent}"
    if path.suffix.lower() in SCENARIO_SUFFIXES:
        return (
            ": give a fixtures directory, a folder holding scenarios/ (one file per "
            f"scenario), {RULES_FILE} and {RESOURCES_FILE}, each optional"
        )
    return ""


def _folder_hint(directory: Path) -> str:
    """What to give instead of ``directory``, which is no fixtures directory: its
    parent when it is a scenarios/ folder, or where its scenario files go."""
    named = _named(directory)
    holds = scenario_files(directory)
    if named.name == "scenarios":
        what = "it holds scenario files" if holds else "it is a scenarios/ folder"
        return f": {what}: give its parent, {named.parent}"
    if (directory / "scenario").is_dir():
        return ": scenario files are read from scenarios/, not scenario/"
    if holds:
        return ": it holds scenario files: move them into a scenarios/ folder in it"
    return ""


def _named(directory: Path) -> Path:
    """``directory``, or its absolute path when the path does not name it
    (``.``, ``..``): what its name and parent are read from."""
    return directory.resolve() if directory.name in ("", "..") else directory


def misnamed_fixture_files(directory: Path) -> list[Problem]:
    """What is wrong with the names of the files in the fixtures ``directory``,
    each a problem that stops start-up and fails ``check``.

    A rules or resources file under another name (``rules.yml``,
    ``rules.json``, ``RULES.yaml``) is not read, and a link to nothing reads
    as no file at all: either left a fixtures directory without its rules,
    silently. So did scenario files in a folder under ``scenarios/`` or in a
    ``scenario/`` folder: the scenario was unknown only when a rule or
    ``--scenario`` named it. A scenario file whose name (the scenario's) has
    spaces at either end is one too. Files that are not read but may be there
    on purpose are :func:`unread_fixture_files`. Hidden files and editors'
    backups are left out (see :func:`_visible`).
    """
    return _fixture_files(directory)[0]


def unread_fixture_files(directory: Path) -> list[Problem]:
    """The files in the fixtures ``directory`` that are not read though they could
    be meant as fixtures, each with why: notices, which neither stop start-up nor
    fail ``check``, since such a file may be there on purpose (a golden transcript
    beside the fixtures, notes in ``scenarios/``).

    A YAML or JSON file in the directory itself other than the rules and
    resources files (scenario files go in ``scenarios/``), and a file in
    ``scenarios/`` whose name does not end in a scenario suffix.
    """
    return _fixture_files(directory)[1]


def _fixture_files(directory: Path) -> tuple[list[Problem], list[Problem]]:
    """(problems, notices) of the names in ``directory``: see
    :func:`misnamed_fixture_files` and :func:`unread_fixture_files`."""
    problems: list[Problem] = []
    notices: list[Problem] = []
    for name in (RULES_FILE, RESOURCES_FILE):
        path = directory / name
        if path.is_symlink() and not path.exists():
            target = os.readlink(path)
            problems.append(_unread(path, f"a link to {target}, which does not exist"))
            continue
        if path.exists():
            continue
        stem = name.removesuffix(".yaml")
        for other in (f"{stem}.yml", f"{stem}.json", f"{stem}.YAML", f"{stem}.YML"):
            if (directory / other).exists():
                problems.append(
                    _unread(directory / other, f"not read: the file must be named {name}")
                )
    reported = {Path(problem.file) for problem in problems}
    for path in _visible(directory):
        if path not in reported and path.name not in (RULES_FILE, RESOURCES_FILE):
            found = _unread_at_the_top(path, directory)
            if found is not None:
                why, notice = found
                (notices if notice else problems).append(_unread(path, why))
    for path in _visible(directory / "scenarios"):
        found = _unread_scenario(path)
        if found is not None:
            why, notice = found
            (notices if notice else problems).append(_unread(path, why))
    return problems, notices


def _unread_at_the_top(path: Path, directory: Path) -> tuple[str, bool] | None:
    """Why ``path``, in the fixtures ``directory``, is not read, and whether that is
    only a notice (None: it is read, or it is nothing a fixture file could be
    meant as)."""
    folder_name = path.name.casefold() in ("scenario", "scenarios")
    if folder_name and not path.is_dir():
        return "not read: scenarios/ must be a folder, holding one file per scenario", False
    if path.is_dir():
        # One without scenario files (audio, or nothing yet) is no fixture.
        if folder_name and not _same(path, directory / "scenarios") and scenario_files(path):
            return "not read: scenario files are read from scenarios/ only", False
        return None
    if path.suffix.lower() not in SCENARIO_SUFFIXES:
        return None
    stem = path.stem.casefold()
    if stem not in ("rules", "resources"):
        return (
            f"not read: scenario files go in scenarios/; here, only {RULES_FILE} and "
            f"{RESOURCES_FILE} are read{_HIDE}"
        ), True
    right = directory / f"{stem}.yaml"
    if not right.exists():  # another case than the listed ones: RULES.yaml
        return f"not read: the file must be named {right.name}", False
    if not _same(path, right):
        return f"not read: {right.name}, beside it, is read instead", False
    return None


def _unread_scenario(path: Path) -> tuple[str, bool] | None:
    """Why ``path``, in ``scenarios/``, is not read or makes a poor scenario name,
    and whether that is only a notice (None: neither)."""
    named_as_one = path.suffix.lower() in SCENARIO_SUFFIXES
    if path.is_dir():
        # One named like a scenario file is load_scenario_dir's problem ("is not a
        # file"); one without scenario files in it (audio, say) is no fixture.
        if named_as_one or not scenario_files(path):
            return None
        return (
            f"not read: scenario files go directly in scenarios/, not in a folder in it{_HIDE}",
            False,
        )
    if not named_as_one:
        suffixes = f"{', '.join(SCENARIO_SUFFIXES[:-1])} or {SCENARIO_SUFFIXES[-1]}"
        return f"not read: a scenario file's name ends in {suffixes}{_HIDE}", True
    if path.stem != path.stem.strip():
        return (
            f"the scenario name {path.stem!r} (the file's name) has spaces at its start or "
            "end, which every rule or --scenario naming it would have to repeat: rename the file"
        ), False
    return None


def _unread(path: Path, message: str) -> Problem:
    """The problem of a whole file or folder (no line, no field)."""
    return Problem(file=str(path), line=None, field="", message=message)


def _same(path: Path, other: Path) -> bool:
    """Whether ``other`` names the file ``path`` does: on a case-insensitive
    file system (macOS's, Windows'), ``Scenarios`` is ``scenarios``, and read."""
    try:
        return path.samefile(other)
    except OSError:
        return False


def _visible(folder: Path) -> list[Path]:
    """The entries of ``folder``, sorted, but hidden ones (``.gitkeep``, a file
    hidden to keep it unread) and editors' backups (``visit.yaml~``,
    ``#visit.yaml#``), which come and go as a file is edited; none when
    ``folder`` is no directory."""
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    return [p for p in entries if not _hidden(p.name)]


def _hidden(name: str) -> bool:
    return name.startswith(".") or name.endswith("~") or name[:1] == name[-1:] == "#"


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
        report.names = tuple(sorted(scenarios))

    problems, notices = _fixture_files(directory)
    report.problems.extend(problems)
    report.notices.extend(notices)
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

    Prints a ``note: file: message`` line for each file not read that may be
    there on purpose, then ``OK: N scenarios (their names), M rules`` (then the
    seeded domains and subscriptions, when there is a ``resources.yaml``) and
    returns 0, or prints one ``file:line: field: message`` line per problem and
    returns 1; returns 2 with one ``error:`` line when ``directory`` is not a
    fixtures directory.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        report = check_fixtures(directory)
    except FileNotFoundError as error:
        print(f"error: {error}", file=err)
        return 2
    for notice in report.notices:
        print(f"note: {notice}", file=out)
    if report.ok:
        line = f"OK: {counted(report.scenarios, 'scenario')}{_listed(report.names)}, " + counted(
            report.rules, "rule"
        )
        if report.domains is not None:
            line += f", {counted(report.domains, 'domain')}, "
            line += counted(report.subscriptions or 0, "subscription")
        print(line, file=out)
        return 0
    # By file, then line: validation finds them in its own order (a whole rule's
    # fields before the next rule's duplicate keys, say), not the reader's.
    for problem in sorted(report.problems, key=lambda p: (p.file, p.line or 0)):
        print(problem, file=out)
    count = len(report.problems)
    print(f"{counted(count, 'problem')} found", file=err)
    return 1


def _listed(names: tuple[str, ...]) -> str:
    """`` (a, b and 3 more)``: the first :data:`_LISTED_NAMES` of ``names``, or
    nothing for none. A name a reader could misread in the list (a comma,
    parentheses, an unprintable character) is shown quoted."""
    if not names:
        return ""
    shown = [
        name if name.isprintable() and not set(name) & set(",()'\"") else repr(name)
        for name in names[:_LISTED_NAMES]
    ]
    more = len(names) - len(shown)
    if more:
        return f" ({', '.join(shown)} and {more} more)"
    return f" ({', '.join(shown)})"
