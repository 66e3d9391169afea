"""Run a fuzz target: ``python -m fuzz TARGET [--seconds N] [--corpus DIR]``.

Targets: decoder (event-stream frames and signed envelopes), configuration (the
JSON input events), headers (the six x-amzn-medscribe-* headers), speedups (the C
loops of emulator._speedups against their Python twins). Exits 0 when the
time is up with no finding; a finding prints the input and exits non-zero.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

TARGET_NAMES = ("configuration", "decoder", "headers", "speedups")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=TARGET_NAMES)
    parser.add_argument("--seconds", type=int, default=60, help="how long to fuzz (default 60)")
    parser.add_argument("--corpus", type=Path, help="corpus directory (kept between runs)")
    args = parser.parse_args(argv)
    try:
        import atheris
    except ImportError:
        parser.error("atheris is not installed: pip install atheris")
    # Instrument the emulator's modules as they are first imported, so the
    # fuzzer is guided by their coverage.
    with atheris.instrument_imports(include=["emulator"]):
        from fuzz.targets import TARGETS, seeds
    target = TARGETS[args.target]
    corpus = args.corpus or Path(tempfile.mkdtemp(prefix=f"fuzz-{args.target}-"))
    corpus.mkdir(parents=True, exist_ok=True)
    for index, seed in enumerate(seeds(args.target)):
        (corpus / f"seed-{index}").write_bytes(seed)
    libfuzzer_args = [
        sys.argv[0],
        f"-max_total_time={args.seconds}",
        "-rss_limit_mb=2048",
        "-timeout=10",
        str(corpus),
    ]
    atheris.Setup(libfuzzer_args, target)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
