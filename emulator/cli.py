"""The ``medscribe-emulator`` command.

``medscribe-emulator [serve] [options]`` runs the emulator. Every option can also
be set by an environment variable ``MEDSCRIBE_<OPTION>`` (``--h2c-port`` ->
``MEDSCRIBE_H2C_PORT``); an option given on the command line wins.

``medscribe-emulator stream AUDIO [options]`` streams an audio file through the
real SDK (:mod:`emulator.streamer`); ``medscribe-emulator check DIR`` validates
a fixtures directory (:mod:`emulator.checker`). A bad option is one line on
stderr and exit status 2, for every command.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import re
import sys
import urllib.parse
import uuid
from collections.abc import Callable, Sequence
from difflib import get_close_matches
from pathlib import Path
from typing import NoReturn

from . import __version__, checker, streamer
from .errors import ConfigError
from .server import Settings, run

__all__ = ["main", "build_parser", "parse_settings", "stream_options"]

ENV_PREFIX = "MEDSCRIBE_"
#: The MEDSCRIBE_* variables that are no serve option's: read by ``stream``
#: (and the example client), the pytest plugin, the C extension's loader and
#: ``.ci/run``.
OTHER_VARIABLES = frozenset(
    {
        "MEDSCRIBE_VENV",
        "MEDSCRIBE_ENDPOINT",
        "MEDSCRIBE_CA_FILE",
        "MEDSCRIBE_URL",
        "MEDSCRIBE_PURE_PYTHON",
        "MEDSCRIBE_NO_PCLMUL",
    }
)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is outside 0-65535")
    return value


def _token(text: str) -> str:
    """An admin token, without the whitespace around it (a secret file's last newline,
    which no client could send back); an empty one is refused, not read as none."""
    token = text.strip()
    if not token:
        raise argparse.ArgumentTypeError(
            "the admin token is empty; give one, or unset the option and "
            "MEDSCRIBE_ADMIN_TOKEN for an admin API open to every client"
        )
    return token


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def _above_zero(why: str) -> Callable[[str], float]:
    """An option type: a number over 0; ``why`` says what 0 would do."""

    def parse(text: str) -> float:
        value = _float(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0 ({why})")
        return value

    return parse


_rate = _above_zero("a rate of 0 would refuse every request")
_window = _above_zero("a window of 0 would refuse every resume")


def _hostname(text: str) -> str:
    """A name or IP address for the generated certificate."""
    from .tls import check_hostname

    try:
        check_hostname(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text.strip()


def _listen_host(text: str) -> str:
    """An address or host name to listen on (``[::1]`` taken as ``::1``)."""
    name = text.strip().removeprefix("[").removesuffix("]")
    if name in ("*", ""):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an address to listen on: give 0.0.0.0 (or :: for IPv6 too) "
            "for every interface, or one address or host name"
        )
    try:
        _hostname(name)  # the generated certificate names it too
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an address or host name to listen on: {error}"
        ) from None
    return name


def _signing_region(text: str) -> str:
    """A region name, as the SDK takes one (``us-east-1``)."""
    region = text.strip()
    if not _REGION.fullmatch(region):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a region: letters, digits and hyphens, like us-east-1"
        )
    return region


def _split_url(text: str) -> urllib.parse.SplitResult:
    """``text``'s parts; ValueError naming it when it is no URL (a port out of
    range or not a number included, which urlsplit alone lets through)."""
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018 - raises for a port out of range or not a number
    except ValueError as error:
        raise ValueError(f"{text!r} is not a URL: {error}") from None
    return parts


def _http_url(text: str) -> str:
    """An http:// or https:// URL with a host (an S3-compatible server's)."""
    try:
        parts = _split_url(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an http:// or https:// URL with a host, e.g. http://localhost:4566"
        )
    return text


def _positive(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more seconds")
    return value


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (use true/false, 1/0, yes/no)")


def _sample_rate(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a sample rate in Hz")
    return value


def _channels(text: str) -> int | tuple[str, str]:
    """``1``, ``2`` or two roles such as ``CLINICIAN,PATIENT`` (one per channel)."""
    if text.strip() in ("1", "2"):
        return int(text)
    roles = tuple(part.strip().upper() for part in text.split(","))
    if len(roles) != 2 or any(role not in streamer.ROLES for role in roles):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not 1, 2 or two roles out of {', '.join(streamer.ROLES)} "
            "(e.g. CLINICIAN,PATIENT)"
        )
    if roles[0] == roles[1]:
        raise argparse.ArgumentTypeError(
            f"{text!r} gives both channels the role {roles[0]}: the service takes one "
            "channel a role (e.g. CLINICIAN,PATIENT)"
        )
    return roles[0], roles[1]


def _env(name: str) -> str:
    return ENV_PREFIX + name.upper().replace("-", "_")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: ``prog: error: message``."""

    def error(self, message: str) -> NoReturn:
        switch = _SWITCH_GIVEN_A_VALUE.fullmatch(message)
        if switch is not None:
            # argparse says "ignored explicit argument", of a value it refuses.
            on, off, value = switch.groups()
            variable = _env(on.removeprefix("--"))
            message = (
                f"{on} and {off} take no value, got {value!r}: give {on} or {off} "
                f"(the variable {variable} takes true or false)"
            )
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


#: argparse's error for an on/off option given a value (``--quotas=true``).
_SWITCH_GIVEN_A_VALUE = re.compile(
    r"argument (--[\w-]+)/(--no-[\w-]+): ignored explicit argument '(.*)'", re.DOTALL
)


_STREAM_EPILOG = """\
The file (- for standard input) is WAV (16-bit PCM) or FLAC, told apart by
its content; any other file is raw 16-bit little-endian PCM and needs
--sample-rate (and --channels 2 for two channels). MP3 and Ogg are refused:
convert them first. The service takes 8000-48000 Hz. A 2-channel file declares
its channels as CLINICIAN,PATIENT unless --channels names them.

On a terminal, partial results update one line in place under the final lines
and a progress indicator shows the seconds of audio sent; otherwise only final
lines are printed, as [mm:ss.t-mm:ss.t] ch_N ROLE: text. A summary naming the
session goes to stderr at the end ("done: ..."). After a failure it follows the
error line ("stopped: ...") and says the session's status as the service gives
it: a PAUSED session (a reset stream) is resumed by the same command with
--session-id and its id. With --json the summary is the last JSON line
instead (its sessionStatus: PAUSED, FAILED... after a failure), or, when
whatever read the output closed it, the stopped: line on stderr.

Credentials: against an AWS endpoint (*.amazonaws.com, *.api.aws) the SDK's
usual credential chain is used and the system trust store unless --ca is given;
against anything else (the emulator) dummy credentials.

exit status: 0 the session completed; 1 the service returned an error
(printed as "error: <Type>: <message>"), the stream was reset or broke, the
endpoint could not be reached, or the output could not be written; 2 a bad
option or audio file; 130 interrupted
(Ctrl-C); 143 stopped by SIGTERM (a CI timeout, docker stop), its summary
printed as after Ctrl-C; 141 whatever read the output closed it (| head -1),
as for a process SIGPIPE ends: the stream stops at its next line of output, leaving the session
PAUSED unless it had completed.

examples:
  medscribe-emulator stream visit.wav
  medscribe-emulator stream call.wav --channels PATIENT,CLINICIAN --realtime
  medscribe-emulator stream audio.raw --sample-rate 16000 --json > events.jsonl
"""

_CHECK_EPILOG = """\
A fixtures directory holds scenarios/*.yaml (or .yml, .json), rules.yaml and
resources.yaml, each optional. Prints "OK: N scenarios (their names), M rules" (and the
domains and subscriptions resources.yaml seeds), or one line per problem as
file:line: field: message.

exit status: 0 all files are valid; 1 problems were found; 2 DIR is not a
fixtures directory or a bad option.
"""


def build_parser() -> argparse.ArgumentParser:
    """Return the command line's parser: ``serve`` (the default), ``stream`` and ``check``."""
    parser = _Parser(
        prog="medscribe-emulator",
        description=(
            "Local emulator of Amazon Connect Health's medical scribe streaming API "
            "(StartMedicalScribeListeningSession). Every option can also be set by the "
            "environment variable shown in brackets; the command line wins."
        ),
        epilog="Run 'medscribe-emulator COMMAND --help' for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser(
        "serve",
        help="run the emulator (the default command)",
        description=(
            "Run the emulator: TLS (h2 and http/1.1) and cleartext ports, the admin API "
            "under /_emulator/. Every option can also be set by the environment variable "
            "shown in brackets; the command line wins."
        ),
    )
    _add_serve_options(serve)
    stream = sub.add_parser(
        "stream",
        help="stream an audio file through the real SDK and print the transcript",
        description=(
            "Stream a WAV, FLAC or raw PCM file as one StartMedicalScribeListeningSession\n"
            "through the real AWS SDK (aws-sdk-connecthealth), to the emulator or the\n"
            "real service, printing results as they arrive."
        ),
        epilog=_STREAM_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_stream_options(stream)
    check = sub.add_parser(
        "check",
        help="validate scenario, rule and resource files",
        description=(
            "Validate a fixtures directory with the loaders the emulator uses at start-up,\n"
            "reporting every problem with file, line and field."
        ),
        epilog=_CHECK_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument(
        "fixtures_dir",
        type=Path,
        metavar="FIXTURES_DIR",
        help="directory holding scenarios/, rules.yaml and resources.yaml",
    )
    return parser


def _add_stream_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "audio", type=Path, metavar="AUDIO", help="WAV, FLAC or raw 16-bit PCM file to stream"
    )
    parser.add_argument(
        "--endpoint",
        metavar="URL",
        help=f"service endpoint, https:// (default {streamer.DEFAULT_ENDPOINT}) "
        "[MEDSCRIBE_ENDPOINT]",
    )
    parser.add_argument(
        "--ca",
        type=Path,
        metavar="FILE",
        help="CA certificate to trust instead of the system store (default: "
        "<state-dir>/ca.pem, i.e. .medscribe/ca.pem or $MEDSCRIBE_STATE_DIR/ca.pem, when it "
        "exists and the endpoint is not AWS) [MEDSCRIBE_CA_FILE]",
    )
    parser.add_argument(
        "--session-id", metavar="UUID", help="session id (default: a new random UUID)"
    )
    parser.add_argument(
        "--domain-id",
        metavar="ID",
        default=streamer.DEFAULT_DOMAIN_ID,
        help=f"domain id (default {streamer.DEFAULT_DOMAIN_ID})",
    )
    parser.add_argument(
        "--subscription-id",
        metavar="ID",
        default=streamer.DEFAULT_SUBSCRIPTION_ID,
        help=f"subscription id (default {streamer.DEFAULT_SUBSCRIPTION_ID})",
    )
    parser.add_argument(
        "--region",
        metavar="REGION",
        help="AWS region used for signing (default $AWS_REGION, $AWS_DEFAULT_REGION or us-east-1)",
    )
    parser.add_argument(
        "--access-key-id",
        metavar="KEY",
        help="access key id to sign with, for an emulator run with --verify-signatures "
        "(default: a dummy pair, or your AWS credentials against AWS) "
        "[MEDSCRIBE_ACCESS_KEY_ID, read for emulator endpoints only]",
    )
    parser.add_argument(
        "--secret-access-key",
        metavar="SECRET",
        help="the secret of --access-key-id "
        "[MEDSCRIBE_SECRET_ACCESS_KEY, read for emulator endpoints only]",
    )
    parser.add_argument(
        "--session-token",
        metavar="TOKEN",
        help="the session token of --access-key-id, for temporary credentials "
        "[MEDSCRIBE_SESSION_TOKEN, read for emulator endpoints only]",
    )
    parser.add_argument(
        "--language-code",
        choices=["en-US", "multi"],
        default="en-US",
        metavar="CODE",
        help="language of the audio: en-US or multi (default en-US)",
    )
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument(
        "--realtime",
        dest="realtime",
        action="store_true",
        default=False,
        help="send audio at real-time speed, as a live microphone would",
    )
    pace.add_argument(
        "--fast",
        dest="realtime",
        action="store_false",
        help="send audio as fast as the service takes it (the default)",
    )
    parser.add_argument(
        "--chunk-ms",
        type=_positive,
        default=100,
        metavar="MS",
        help="milliseconds of audio per audio event, at most 32,000 bytes (default 100)",
    )
    parser.add_argument(
        "--start-at",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="skip the file's first SECONDS of audio (WAV or raw PCM): a paused "
        "session resumed with --session-id from its last final's end, which a "
        "stopped stream's summary gives",
    )
    parser.add_argument(
        "--binary",
        action="store_true",
        help="send binaryAudioEvent (raw bytes) instead of audioEvent (base64 JSON)",
    )
    parser.add_argument(
        "--sample-rate",
        type=_sample_rate,
        metavar="HZ",
        help="sample rate of a raw PCM file (WAV and FLAC carry their own)",
    )
    parser.add_argument(
        "--channels",
        type=_channels,
        metavar="ROLES",
        help="channel roles of a 2-channel file as ROLE,ROLE (CLINICIAN or PATIENT; sets "
        "channelDefinitions; default CLINICIAN,PATIENT), or the channel count 1 or 2 "
        "of a raw PCM file (default 1)",
    )
    parser.add_argument(
        "--template",
        choices=streamer.TEMPLATES,
        default=streamer.DEFAULT_TEMPLATE,
        metavar="NAME",
        help=f"managed clinical note template: {', '.join(streamer.TEMPLATES)} "
        f"(default {streamer.DEFAULT_TEMPLATE})",
    )
    parser.add_argument(
        "--output-s3-uri",
        metavar="URI",
        default=streamer.DEFAULT_OUTPUT_S3_URI,
        help=f"where post-stream artifacts go (default {streamer.DEFAULT_OUTPUT_S3_URI})",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print each event as a JSON line on stdout (session, events, error, summary), "
        "for scripts",
    )


def _option(parser: argparse.ArgumentParser, flag: str, help: str, **kwargs: object) -> None:
    name = flag.lstrip("-")
    parser.add_argument(flag, help=f"{help} [{_env(name)}]", **kwargs)  # type: ignore[arg-type]


def _add_serve_options(parser: argparse.ArgumentParser) -> None:
    d = Settings()
    _option(
        parser,
        "--host",
        f"address to listen on (default {d.host}; 0.0.0.0 or :: for every interface)",
        type=_listen_host,
        metavar="H",
    )
    _option(
        parser,
        "--port",
        f"TLS port, h2 and http/1.1 by ALPN (default {d.port})",
        type=_port,
        metavar="P",
    )
    _option(
        parser,
        "--h2c-port",
        f"cleartext port, HTTP/1.1 and HTTP/2 with prior knowledge (default {d.h2c_port})",
        type=_port,
        metavar="Q",
    )
    _option(
        parser,
        "--state-dir",
        f"state directory: the CA and certificates, the session database, the journals "
        f"and the on-disk S3 stand-in (default {d.state_dir})",
        type=Path,
        metavar="D",
    )
    _option(
        parser,
        "--fixtures",
        "fixtures directory with scenarios/, rules.yaml and resources.yaml (default: the "
        "packaged fixtures)",
        type=Path,
        metavar="DIR",
    )
    _option(
        parser,
        "--scenario",
        f"scenario used when no rule matches (default {d.scenario})",
        metavar="NAME",
    )
    _option(
        parser, "--seed", f"seed of every random choice (default {d.seed})", type=_int, metavar="N"
    )
    _option(
        parser,
        "--certfile",
        "serve this certificate instead of a local CA's",
        type=Path,
        metavar="FILE",
    )
    _option(parser, "--keyfile", "private key of --certfile", type=Path, metavar="FILE")
    _option(
        parser,
        "--tls-hostname",
        "extra name or IP for the generated certificate "
        "(repeatable; comma-separated in the variable)",
        action="append",
        type=_hostname,
        metavar="NAME",
    )
    _option(
        parser,
        "--log-level",
        f"logging level, any case (default {d.log_level})",
        type=str.lower,
        choices=["debug", "info", "warning", "error"],
        metavar="LEVEL",
    )
    _option(
        parser,
        "--retention",
        f"session records kept, oldest dropped first (default {d.retention})",
        type=_positive,
        metavar="N",
    )
    _option(
        parser,
        "--strict-resources",
        "refuse streams on unknown or deactivated domains/subscriptions, and look-ups on "
        "unknown ones (default off)",
        action=argparse.BooleanOptionalAction,
    )
    _option(
        parser,
        "--post-stream-delay",
        f"seconds post-stream actions stay IN_PROGRESS (default {d.post_stream_delay})",
        type=_float,
        metavar="SECONDS",
    )
    _option(
        parser,
        "--resume-window",
        "seconds after its creation a paused session can still be resumed "
        f"(default {d.resume_window:g}, the service's 5 hours)",
        type=_window,
        metavar="SECONDS",
    )
    _option(
        parser,
        "--s3-endpoint-url",
        "write post-stream artifacts to this S3-compatible server instead of <state-dir>/s3",
        type=_http_url,
        metavar="URL",
    )
    _option(
        parser,
        "--verify-signatures",
        "verify the SigV4 signature of each stream request and the chunk signature of "
        "every event (default off: any credentials are accepted)",
        action=argparse.BooleanOptionalAction,
    )
    _option(
        parser, "--access-key-id", "access key id accepted with --verify-signatures", metavar="KEY"
    )
    _option(parser, "--secret-access-key", "its secret access key", metavar="SECRET")
    _option(
        parser,
        "--session-token",
        "its session token, when the pair is temporary credentials: requests must "
        "then carry it (default none: requests must carry no token)",
        metavar="TOKEN",
    )
    _option(
        parser,
        "--credentials-file",
        "AWS-style credentials file with more key pairs to accept (a profile's "
        "aws_session_token is checked as --session-token)",
        type=Path,
        metavar="FILE",
    )
    _option(
        parser,
        "--region",
        "the one region a request's signature may be scoped to, as the service "
        "checks its own (default: any; ARNs name us-east-1 whatever it is)",
        type=_signing_region,
        metavar="REGION",
    )
    _option(
        parser,
        "--idle-timeout",
        f"seconds without input before a stream ends with a validationException, or "
        f"without output taken before it is reset; 0 for never (default {d.idle_timeout:g})",
        type=_float,
        metavar="SECONDS",
    )
    _option(
        parser,
        "--admin-token",
        "require 'Authorization: Bearer TOKEN' on the admin API (health and ca.pem stay "
        "open), for emulators on shared networks; whitespace around it is dropped",
        type=_token,
        metavar="TOKEN",
    )
    _option(
        parser,
        "--quotas",
        "apply the service's per-access-key quotas: concurrent sessions (402) and "
        "request rates (429) (default off)",
        action=argparse.BooleanOptionalAction,
    )
    _option(
        parser,
        "--quota-concurrent-sessions",
        f"concurrent streaming sessions per access key with --quotas "
        f"(default {d.quota_concurrent_sessions})",
        type=_positive,
        metavar="N",
    )
    _option(
        parser,
        "--quota-start-tps",
        f"StartMedicalScribeListeningSession requests per second per key with --quotas "
        f"(default {d.quota_start_tps:g})",
        type=_rate,
        metavar="TPS",
    )
    _option(
        parser,
        "--quota-get-tps",
        f"GetMedicalScribeListeningSession requests per second per key with --quotas "
        f"(default {d.quota_get_tps:g})",
        type=_rate,
        metavar="TPS",
    )
    _option(
        parser,
        "--max-streams",
        f"streams the whole server runs at once; more get ServiceQuotaExceededException "
        f"(default {d.max_streams})",
        type=_positive,
        metavar="N",
    )
    _option(
        parser,
        "--max-pending-artifacts",
        "sessions whose post-stream artifacts may wait to be written at once; a new "
        f"session beyond it gets ThrottlingException (default {d.max_pending_artifacts})",
        type=_positive,
        metavar="N",
    )


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    # argparse keeps the subcommands' parsers in its private record only, which
    # typeshed types as optional, and an action's choices as any iterable.
    return parser._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr, index]


def parse_settings(
    argv: Sequence[str], environ: dict[str, str] | None = None
) -> tuple[str, argparse.Namespace, Settings]:
    """Parse ``argv`` with environment fallbacks; return (command, namespace, settings).

    Raises :class:`SystemExit` with status 2, after one clear line on stderr, on
    a bad option or variable.
    """
    environ = dict(os.environ if environ is None else environ)
    parser = build_parser()
    argv = list(argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv.insert(0, "serve")
    args, extras = parser.parse_known_args(argv)
    command = args.command or "serve"
    if extras:
        # Reported by the command's own parser, so the hint names its --help.
        _subparser(parser, command).error(f"unrecognized arguments: {' '.join(extras)}")
    if command != "serve":
        # The MEDSCRIBE_* serve variables configure the server, not the other commands.
        return command, args, Settings()
    serve_parser = _subparser(parser, "serve")
    settings = Settings()
    for action in serve_parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        value = getattr(args, action.dest, None)
        if value is None:
            raw = environ.get(_env(action.dest))
            if raw is None or raw == "":
                continue
            try:
                if action.dest == "tls_hostname":
                    value = [_hostname(part) for part in raw.split(",") if part.strip()]
                    if not value:
                        raise ValueError(f"no host name in {raw!r}")
                elif isinstance(action, argparse.BooleanOptionalAction):
                    value = _bool(raw)
                else:
                    value = action.type(raw) if action.type else raw  # type: ignore[operator]
            except (argparse.ArgumentTypeError, ValueError) as error:
                serve_parser.error(f"{_env(action.dest)}: {error}")
            if action.choices is not None and value not in action.choices:
                serve_parser.error(
                    f"{_env(action.dest)}: {raw!r} is not one of {', '.join(action.choices)}"
                )
            settings.from_environment[action.option_strings[0]] = _env(action.dest)
        field = "tls_hostnames" if action.dest == "tls_hostname" else action.dest
        setattr(settings, field, value)
    settings.unknown_variables = _unknown_variables(environ, serve_parser)
    if (settings.certfile is None) != (settings.keyfile is None):
        serve_parser.error(as_given("--certfile and --keyfile go together", settings))
    if settings.port == settings.h2c_port != 0:
        # Else the second listener fails as "address already in use", which sends the
        # user looking for another process.
        serve_parser.error(
            as_given(
                f"--port and --h2c-port are both {settings.port}: the TLS and the cleartext "
                "port must differ (0 lets the system pick a free one for each)",
                settings,
            )
        )
    return command, args, settings


def _unknown_variables(environ: dict[str, str], parser: argparse.ArgumentParser) -> list[str]:
    """A warning for each ``MEDSCRIBE_*`` variable set that nothing reads, with the
    name probably meant: a misspelt one (``MEDSCRIBE_TLS_HOSTNAMES``) was ignored
    without a word, and its container's clients failed their TLS handshakes."""
    known = {_env(a.dest) for a in parser._actions if a.option_strings and a.dest != "help"}
    known |= OTHER_VARIABLES
    warnings = []
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and name not in known:
            near = get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            warnings.append(f"{name} is set, but the emulator reads no such variable{hint}")
    return warnings


def as_given(message: str, settings: Settings) -> str:
    """``message`` with each option a ``MEDSCRIBE_*`` variable set named as that
    variable (``MEDSCRIBE_SCENARIO (--scenario)``): a user who set it in a
    compose file was told of an option they never gave."""
    named, said = [], False
    for option, variable in settings.from_environment.items():
        message, count = re.subn(
            rf"(?<![\w-]){re.escape(option)}(?![\w-])", f"{variable} ({option})", message
        )
        said = said or bool(count)
        # Said of the value alone ("credentials file F: cannot be read"): named after it.
        value = getattr(
            settings,
            "tls_hostnames" if option == "--tls-hostname" else option[2:].replace("-", "_"),
            None,
        )
        if count == 0 and isinstance(value, (str, Path)) and str(value) and str(value) in message:
            named.append(variable)
    # A message naming its option names all it is about: another option's value in
    # it (a certificate file that is the key file too) is not what it blames.
    if named and not said:
        message += f" (set by {', '.join(named)})"
    return message


def _check_endpoint(url: str, given_as: str) -> None:
    """Refuse an endpoint the SDK cannot stream to (it waited for ever on some)."""
    try:
        parts = _split_url(url)
    except ValueError as error:
        raise streamer.UsageError(f"{given_as} {error}") from None
    if parts.scheme == "http":
        raise streamer.UsageError(
            f"{given_as} {url!r}: the AWS SDK sends no audio over http://; use the "
            "emulator's https:// endpoint (its CA with --ca)"
        )
    if parts.scheme != "https" or not parts.hostname:
        raise streamer.UsageError(
            f"{given_as} must be an https:// URL with a host, e.g. {streamer.DEFAULT_ENDPOINT}; "
            f"got {url!r}"
        )


#: What the SDK takes as a region (smithy_aws_core's check), refused here in one
#: line rather than as its traceback.
_REGION = re.compile(r"(?![0-9]+$)(?!-)[a-zA-Z0-9-]{1,63}(?<!-)")


def _region_sources(args: argparse.Namespace, env: dict[str, str]) -> list[tuple[str, str | None]]:
    return [
        ("--region", args.region),
        ("AWS_REGION", env.get("AWS_REGION")),
        ("AWS_DEFAULT_REGION", env.get("AWS_DEFAULT_REGION")),
    ]


def stream_options(
    args: argparse.Namespace, environ: dict[str, str] | None = None
) -> streamer.StreamOptions:
    """Return the :class:`~emulator.streamer.StreamOptions` of parsed ``stream`` arguments.

    Unset options fall back to ``MEDSCRIBE_ENDPOINT``, ``MEDSCRIBE_CA_FILE`` (then
    the state directory's ``ca.pem``), ``AWS_REGION``/``AWS_DEFAULT_REGION`` and the
    defaults in :mod:`emulator.streamer`.

    Raises :class:`~emulator.streamer.UsageError`, naming the option or variable,
    for an endpoint that is not an ``https://`` URL with a host, a region that is
    not an AWS region name, half a key pair, or a session token without one.
    """
    env = dict(os.environ if environ is None else environ)
    endpoint = args.endpoint or env.get("MEDSCRIBE_ENDPOINT") or streamer.DEFAULT_ENDPOINT
    _check_endpoint(endpoint, "--endpoint" if args.endpoint else "MEDSCRIBE_ENDPOINT")
    ca_file = args.ca if args.ca is not None else streamer.default_ca_file(endpoint, env)
    if args.ca is not None:
        ca_given_as = "--ca"
    elif env.get("MEDSCRIBE_CA_FILE"):
        ca_given_as = "MEDSCRIBE_CA_FILE"
    else:
        ca_given_as = "the state directory's CA"
    region_given_as, region = next(
        ((name, value) for name, value in _region_sources(args, env) if value),
        ("default", "us-east-1"),
    )
    if not _REGION.fullmatch(region):
        raise streamer.UsageError(
            f"{region_given_as} {region!r} is not an AWS region name (letters, digits "
            "and inner hyphens, up to 63, e.g. us-east-1)"
        )
    roles = args.channels if isinstance(args.channels, tuple) else None
    # The emulator's own variables sign for an emulator only: against AWS the
    # caller's credential chain applies unless a pair is given on the command line.
    pair_env = {} if streamer.is_aws_endpoint(endpoint) else env
    key_id = args.access_key_id or pair_env.get("MEDSCRIBE_ACCESS_KEY_ID") or None
    secret = args.secret_access_key or pair_env.get("MEDSCRIBE_SECRET_ACCESS_KEY") or None
    token = args.session_token or pair_env.get("MEDSCRIBE_SESSION_TOKEN") or None
    if (key_id is None) != (secret is None):
        given, missing = (
            ("--access-key-id", "--secret-access-key")
            if secret is None
            else ("--secret-access-key", "--access-key-id")
        )
        raise streamer.UsageError(
            f"{given} needs {missing} too (or MEDSCRIBE_ACCESS_KEY_ID and "
            "MEDSCRIBE_SECRET_ACCESS_KEY): a key pair signs together"
        )
    if token is not None and key_id is None:
        given = "--session-token" if args.session_token else "MEDSCRIBE_SESSION_TOKEN"
        raise streamer.UsageError(
            f"{given} needs the --access-key-id and --secret-access-key it belongs to "
            "(or MEDSCRIBE_ACCESS_KEY_ID and MEDSCRIBE_SECRET_ACCESS_KEY)"
        )
    return streamer.StreamOptions(
        endpoint_url=endpoint,
        ca_file=ca_file,
        ca_given_as=ca_given_as,
        state_ca_file=streamer.state_ca_file(env),
        session_id=args.session_id or str(uuid.uuid4()),
        domain_id=args.domain_id,
        subscription_id=args.subscription_id,
        region=region,
        language_code=args.language_code,
        realtime=args.realtime,
        chunk_ms=args.chunk_ms,
        start_at=args.start_at,
        new_session=args.session_id is None,
        binary=args.binary,
        roles=roles,
        template=args.template,
        output_s3_uri=args.output_s3_uri,
        access_key_id=key_id,
        secret_access_key=secret,
        session_token=token,
    )


def _stream(args: argparse.Namespace) -> int:
    channels = args.channels
    count = len(channels) if isinstance(channels, tuple) else channels
    try:
        options = stream_options(args)
    except streamer.UsageError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return streamer.EXIT_USAGE
    return streamer.run(
        args.audio,
        options,
        sample_rate=args.sample_rate,
        channels=count,
        json_lines=args.json,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command ``argv`` names (``sys.argv[1:]`` by default); return its exit status."""
    command, args, settings = parse_settings(sys.argv[1:] if argv is None else argv)
    if command == "stream":
        return _stream(args)
    if command == "check":
        return checker.run(args.fixtures_dir)
    try:
        return run(settings)
    except ConfigError as error:
        message = as_given(str(error), settings)
        print(f"medscribe-emulator: invalid configuration:\n{message}", file=sys.stderr)
        return 2
    except OSError as error:
        message = as_given(str(error), settings)
        if error.errno == errno.EMFILE:  # before serving: a few dozen open files at most
            message += " (the open-file limit, ulimit -n, is too low: raise it)"
        print(f"medscribe-emulator: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
