"""The ``medscribe-emulator`` command.

``medscribe-emulator [serve] [options]`` runs the emulator. Every option can also
be set by an environment variable ``MEDSCRIBE_<OPTION>`` (``--h2c-port`` ->
``MEDSCRIBE_H2C_PORT``); an option given on the command line wins.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .errors import ConfigError
from .server import Settings, run

__all__ = ["main", "build_parser", "parse_settings"]

ENV_PREFIX = "MEDSCRIBE_"


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is outside 0-65535")
    return value


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
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def _positive(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (use true/false, 1/0, yes/no)")


def _env(name: str) -> str:
    return ENV_PREFIX + name.upper().replace("-", "_")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medscribe-emulator",
        description=(
            "Local emulator of Amazon Connect Health's medical scribe streaming API "
            "(StartMedicalScribeListeningSession). Every option can also be set by the "
            "environment variable shown in brackets; the command line wins."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the emulator (the default command)")
    _add_serve_options(serve)
    return parser


def _option(parser: argparse.ArgumentParser, flag: str, help: str, **kwargs: object) -> None:
    name = flag.lstrip("-")
    parser.add_argument(flag, help=f"{help} [{_env(name)}]", **kwargs)  # type: ignore[arg-type]


def _add_serve_options(parser: argparse.ArgumentParser) -> None:
    d = Settings()
    _option(parser, "--host", f"address to listen on (default {d.host})", metavar="H")
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
        f"where the CA and certificates live (default {d.state_dir})",
        type=Path,
        metavar="D",
    )
    _option(
        parser,
        "--fixtures",
        "fixtures directory with scenarios/ and rules.yaml (default: the packaged fixtures)",
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
        metavar="NAME",
    )
    _option(
        parser,
        "--log-level",
        f"logging level (default {d.log_level})",
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
        "refuse streams and look-ups on unknown or deactivated domains/subscriptions "
        "(default off)",
        action="store_const",
        const=True,
        default=None,
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
        "--s3-endpoint-url",
        "write post-stream artifacts to this S3-compatible server instead of <state-dir>/s3",
        metavar="URL",
    )


def parse_settings(
    argv: Sequence[str], environ: dict[str, str] | None = None
) -> tuple[str, argparse.Namespace, Settings]:
    """Parse ``argv`` with environment fallbacks; return (command, namespace, settings).

    Exits with status 2 and one clear line on a bad option or variable.
    """
    environ = dict(os.environ if environ is None else environ)
    parser = build_parser()
    argv = list(argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv.insert(0, "serve")
    args = parser.parse_args(argv)
    command = args.command or "serve"
    serve_parser = parser._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    settings = Settings()
    for action in serve_parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        value = getattr(args, action.dest, None)
        if value is None:
            raw = environ.get(_env(action.option_strings[0].lstrip("-")))
            if raw is None or raw == "":
                continue
            try:
                if action.dest == "tls_hostname":
                    value = [part.strip() for part in raw.split(",") if part.strip()]
                elif action.const is True:
                    value = _bool(raw)
                else:
                    value = action.type(raw) if action.type else raw  # type: ignore[operator]
            except (argparse.ArgumentTypeError, ValueError) as error:
                parser.error(f"{_env(action.option_strings[0].lstrip('-'))}: {error}")
            if action.choices is not None and value not in action.choices:
                parser.error(
                    f"{_env(action.dest)}: {raw!r} is not one of {', '.join(action.choices)}"
                )
        field = "tls_hostnames" if action.dest == "tls_hostname" else action.dest
        setattr(settings, field, value)
    if (settings.certfile is None) != (settings.keyfile is None):
        parser.error("--certfile and --keyfile go together")
    return command, args, settings


def main(argv: Sequence[str] | None = None) -> int:
    command, _args, settings = parse_settings(sys.argv[1:] if argv is None else argv)
    try:
        return run(settings)
    except ConfigError as error:
        print(f"medscribe-emulator: invalid fixtures:\n{error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"medscribe-emulator: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
