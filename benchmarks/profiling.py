"""Optional py-spy sampling of a server under load (``--profile DIR``).

py-spy attaches to the server process by pid, samples it without pausing it
(``--nonblocking``) and writes collapsed stacks ("raw" format, one line per
distinct stack with its sample count) plus an SVG flame graph. :func:`summarize`
turns the collapsed stacks into the top functions by self and inclusive time.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

__all__ = ["Profiler", "summarize", "available"]

_LINE_NUMBER = re.compile(r":\d+\)$")


def available() -> bool:
    """Whether a ``py-spy`` executable is on PATH."""
    return shutil.which("py-spy") is not None


class Profiler:
    """Sample ``pid`` for ``seconds`` into ``<out>.txt`` (collapsed) and ``<out>.svg``."""

    def __init__(self, pid: int, out: Path, *, seconds: float, rate: int = 100) -> None:
        self.out = out
        out.parent.mkdir(parents=True, exist_ok=True)
        common = ["py-spy", "record", "--pid", str(pid), "--nonblocking"]
        common += ["--rate", str(rate), "--duration", str(max(1, int(seconds)))]
        self._processes = [
            subprocess.Popen(
                [*common, "--format", fmt, "-o", str(out.with_suffix(suffix))],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for fmt, suffix in (("raw", ".txt"), ("flamegraph", ".svg"))
        ]

    def wait(self, timeout: float = 30.0) -> dict[str, object] | None:
        """Wait for py-spy to finish; return :func:`summarize` of the samples (or None)."""
        for process in self._processes:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        raw = self.out.with_suffix(".txt")
        return summarize(raw) if raw.exists() else None


def _function(frame: str) -> str:
    # "name (path/to/file.py:123)" -> "name (file.py)", so a function's lines add up.
    frame = _LINE_NUMBER.sub(")", frame.strip())
    if "(" in frame:
        name, _, where = frame.partition(" (")
        return f"{name} ({where.rsplit('/', 1)[-1]}"
    return frame


def summarize(collapsed: Path, *, top: int = 25) -> dict[str, object]:
    """Top functions of a collapsed-stack file by self and inclusive share of samples."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [
            _function(f) for f in stack.split(";") if f and not f.startswith(("process", "thread"))
        ]
        if not frames:
            continue
        total += count
        self_time[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count

    def share(counter: Counter[str]) -> list[list[object]]:
        return [[name, round(100 * n / total, 1)] for name, n in counter.most_common(top)]

    return {"samples": total, "self_pct": share(self_time), "inclusive_pct": share(inclusive)}
