"""What a scenario may script about its post-stream artifacts.

Three optional scenario keys, pure data like the rest of a scenario::

    note:                      # clinicalDoc.json: section header -> summaries
      CHIEF_COMPLAINT:
        - "Cough for two weeks."                  # linked to the segments it shares words with
        - {text: "No fever.", segments: [2, 3]}   # linked to these segments (0-based, begin order)
    afterVisitSummary:
      - "Rest, fluids, and come back if the fever returns."
    artifacts:                 # an artifact that fails instead of being written
      noteResult: {status: FAILED, failureReason: "Insufficient clinical content"}

Without ``note``/``afterVisitSummary`` the documents are derived from the
transcript (:mod:`emulator.notes`). Validation reports into the scenario's
:class:`~emulator.scenario.Checker`, like every other scenario problem.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .problems import as_written

if TYPE_CHECKING:  # scenario.py imports this module; the checker is only passed in
    from .scenario import Checker, FieldPath

__all__ = [
    "ARTIFACT_NAMES",
    "POST_STREAM_KEYS",
    "Summary",
    "PostStreamScript",
    "validate_post_stream",
]

#: ClinicalNoteGenerationResult's members, one per artifact.
ARTIFACT_NAMES = ("transcriptResult", "noteResult", "afterVisitSummaryResult")

#: The scenario keys this module reads.
POST_STREAM_KEYS = ("note", "afterVisitSummary", "artifacts")

#: ErrorMessage in the model: 1 to 2048 characters.
MAX_FAILURE_REASON = 2048

_SECTION_HEADER = re.compile(r"[a-zA-Z0-9_]+")  # SensitiveSectionHeaderString
_SUMMARY_KEYS = ("text", "segments")
_ARTIFACT_KEYS = ("status", "failureReason")


@dataclass(frozen=True, kw_only=True, slots=True)
class Summary:
    """One summary sentence; ``segments`` are scenario segment indexes, or None to infer them."""

    text: str
    segments: tuple[int, ...] | None = None

    def to_json(self) -> object:
        if self.segments is None:
            return self.text
        return {"text": self.text, "segments": list(self.segments)}


@dataclass(frozen=True, kw_only=True, slots=True)
class PostStreamScript:
    """A scenario's scripted note, after-visit summary and artifact failures.

    ``note`` is ``((section header, summaries), ...)`` in the order written;
    ``failures`` is ``((artifact name, failureReason), ...)``.
    """

    note: tuple[tuple[str, tuple[Summary, ...]], ...] | None = None
    after_visit_summary: tuple[Summary, ...] | None = None
    failures: tuple[tuple[str, str], ...] = ()

    def failure_of(self, artifact: str) -> str | None:
        """Return the scripted failureReason of ``artifact``, or None if it succeeds."""
        return dict(self.failures).get(artifact)

    def to_json(self) -> dict[str, object]:
        """Return the scenario keys this script was read from."""
        out: dict[str, object] = {}
        if self.note is not None:
            out["note"] = {
                header: [s.to_json() for s in summaries] for header, summaries in self.note
            }
        if self.after_visit_summary is not None:
            out["afterVisitSummary"] = [s.to_json() for s in self.after_visit_summary]
        if self.failures:
            out["artifacts"] = {
                name: {"status": "FAILED", "failureReason": reason}
                for name, reason in self.failures
            }
        return out


def validate_post_stream(
    top: Mapping[str, object], path: FieldPath, checker: Checker, *, segment_count: int
) -> PostStreamScript | None:
    """Read the :data:`POST_STREAM_KEYS` of a scenario mapping ``top``.

    Problems go to ``checker``; summary segment indexes must be below
    ``segment_count``. Returns None when ``top`` scripts none of them or a
    problem was found.
    """
    if not any(key in top for key in POST_STREAM_KEYS):
        return None
    before = len(checker.problems)
    note = None
    if "note" in top:
        note = _note(top["note"], (*path, "note"), checker, segment_count)
    after = None
    if "afterVisitSummary" in top:
        after = _summaries(
            top["afterVisitSummary"], (*path, "afterVisitSummary"), checker, segment_count
        )
    failures: list[tuple[str, str]] = []
    if "artifacts" in top:
        failures = _artifacts(top["artifacts"], (*path, "artifacts"), checker)
    if len(checker.problems) > before:
        return None
    return PostStreamScript(note=note, after_visit_summary=after, failures=tuple(failures))


def _note(
    raw: object, path: FieldPath, checker: Checker, segment_count: int
) -> tuple[tuple[str, tuple[Summary, ...]], ...] | None:
    if not isinstance(raw, dict):
        checker.add(path, "must be a mapping of section header to a list of summaries")
        return None
    sections = []
    for raw_header, items in raw.items():
        header = as_written(raw_header)  # 0800: as written, the text YAML 1.1 read
        where = (*path, str(header))
        if not isinstance(header, str) or not _SECTION_HEADER.fullmatch(header):
            checker.add(where, "a section header is letters, digits and '_' only")
            continue
        summaries = _summaries(items, where, checker, segment_count)
        if summaries is not None:
            sections.append((header, summaries))
    return tuple(sections)


def _summaries(
    raw: object, path: FieldPath, checker: Checker, segment_count: int
) -> tuple[Summary, ...] | None:
    if not isinstance(raw, list):
        checker.add(path, "must be a list of summaries (strings or {text, segments})")
        return None
    out = []
    for index, item in enumerate(raw):
        summary = _summary(item, (*path, index), checker, segment_count)
        if summary is not None:
            out.append(summary)
    return tuple(out)


def _summary(raw: object, path: FieldPath, checker: Checker, segment_count: int) -> Summary | None:
    raw = as_written(raw)  # - 0800: the text as written
    if isinstance(raw, str):
        text = checker.string(raw, path, non_empty=True)
        return None if text is None else Summary(text=text)
    item = checker.mapping(raw, path, allowed=_SUMMARY_KEYS, what="a summary")
    if item is None:
        return None
    if "text" not in item:
        checker.add(path, "missing required key 'text'")
        return None
    text = checker.string(item["text"], (*path, "text"), non_empty=True)
    segments: list[int] | None = None
    if "segments" in item:
        raw_segments = item["segments"]
        if not isinstance(raw_segments, list):
            checker.add((*path, "segments"), "must be a list of segment indexes")
            return None
        segments = []
        for n, value in enumerate(raw_segments):
            index = checker.integer(value, (*path, "segments", n))
            if index is None:
                continue
            if not 0 <= index < segment_count:
                checker.add(
                    (*path, "segments", n),
                    f"must be the index of one of the scenario's {segment_count} segments "
                    f"(0 to {segment_count - 1}), got {index}"
                    if segment_count
                    else f"must be the index of one of the scenario's segments, but it has "
                    f"none, got {index}",
                )
                continue
            segments.append(index)
    if text is None:
        return None
    return Summary(text=text, segments=None if segments is None else tuple(segments))


def _artifacts(raw: object, path: FieldPath, checker: Checker) -> list[tuple[str, str]]:
    top = checker.mapping(raw, path, allowed=ARTIFACT_NAMES, what="artifacts")
    if top is None:
        return []
    out = []
    for name, value in top.items():
        if name not in ARTIFACT_NAMES:
            continue  # reported by mapping()
        where = (*path, name)
        item = checker.mapping(value, where, allowed=_ARTIFACT_KEYS, what="an artifact")
        if item is None:
            continue
        if item.get("status") != "FAILED":
            checker.add(
                (*where, "status"),
                "must be FAILED (an artifact not scripted is generated and COMPLETED)",
            )
        reason = None
        if "failureReason" not in item:
            checker.add(where, "missing required key 'failureReason'")
        else:
            reason = checker.string(
                item["failureReason"], (*where, "failureReason"), non_empty=True
            )
            if reason is not None and len(reason) > MAX_FAILURE_REASON:
                checker.add(
                    (*where, "failureReason"),
                    f"must be at most {MAX_FAILURE_REASON} characters, got {len(reason)}",
                )
        if reason is not None and item.get("status") == "FAILED":
            out.append((name, reason))
    return out
