"""The server log says why a post-stream artifact failed, not only that it did.

Before, the reason (a missing bucket, no credentials) was seen only through Get or
the admin API; the log said ``transcriptResult FAILED``.
"""

from __future__ import annotations

import logging

import pytest

from emulator.artifacts import ARTIFACT_NAMES, LOG_REASON_CHARS, describe_results

from .support import new_session_id, running_emulator
from .test_artifacts import (
    NOTE_SCRIPT,
    SCRIPT,
    _settings,
    script,
    settled,
    stream_to_missing_bucket,
    stream_two_channels,
)
from .test_artifacts import moto_s3 as moto_s3  # a fixture: pytest finds it by its name here


def post_stream_lines(caplog: pytest.LogCaptureFixture, session_id: str) -> list[tuple[int, str]]:
    prefix = f"session {session_id} post-stream actions: "
    return [
        (r.levelno, r.getMessage())
        for r in caplog.records
        if r.name == "medscribe.sessions" and r.getMessage().startswith(prefix)
    ]


def test_a_failed_upload_logs_each_artifacts_reason_once_as_a_warning(tmp_path, moto_s3, caplog):
    """NoSuchBucket from a real S3-compatible server: one warning naming each failed
    artifact with its failureReason. (Nothing is written: moto's state outlives its
    server, and tests/test_artifacts.py lists what its bucket holds.)"""
    url, _ = moto_s3
    session_id = new_session_id()
    settings = _settings(tmp_path, post_stream_delay=0.2, s3_endpoint_url=url)
    with caplog.at_level(logging.INFO, logger="medscribe"):
        with running_emulator(settings) as run:
            stream_to_missing_bucket(run, session_id)
            failed = settled(run, session_id)
    # Read once the server stopped: the line is logged just after the results are saved.
    reasons = [failed[name]["failureReason"] for name in ARTIFACT_NAMES]
    assert all("NoSuchBucket" in reason and len(reason) < LOG_REASON_CHARS for reason in reasons)
    [(level, message)] = post_stream_lines(caplog, session_id)
    assert level == logging.WARNING
    assert message == f"session {session_id} post-stream actions: " + ", ".join(
        f"{name} FAILED ({reason})" for name, reason in zip(ARTIFACT_NAMES, reasons, strict=True)
    )
    assert message.count("NoSuchBucket") == len(ARTIFACT_NAMES)


@pytest.mark.parametrize(
    ("scenario", "results"),
    [
        (SCRIPT, "noteResult COMPLETED, afterVisitSummaryResult COMPLETED"),
        # What a test asked for is no warning (one per session of a suite scripting it).
        (NOTE_SCRIPT, "noteResult COMPLETED, afterVisitSummaryResult FAILED (Scripted failure)"),
    ],
    ids=["completed", "failure-scripted"],
)
def test_completed_or_scripted_results_are_an_info_line(tmp_path, caplog, scenario, results):
    session_id = new_session_id()
    with caplog.at_level(logging.INFO, logger="medscribe"):
        with running_emulator(_settings(tmp_path, post_stream_delay=0.0)) as run:
            script(run, session_id, scenario)
            stream_two_channels(run, session_id)
            settled(run, session_id)
    assert post_stream_lines(caplog, session_id) == [
        (
            logging.INFO,
            f"session {session_id} post-stream actions: transcriptResult COMPLETED, {results}",
        )
    ]


def test_missing_s3_credentials_are_logged_as_the_reason(tmp_path, monkeypatch, caplog):
    """No credentials anywhere: boto3 fails before any request, and the log says so."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)
    session_id = new_session_id()
    settings = _settings(
        tmp_path / "state", post_stream_delay=0.0, s3_endpoint_url="http://127.0.0.1:9"
    )
    with caplog.at_level(logging.INFO, logger="medscribe"):
        with running_emulator(settings) as run:
            script(run, session_id, SCRIPT)
            stream_two_channels(run, session_id)
            settled(run, session_id)
    [(level, message)] = post_stream_lines(caplog, session_id)
    assert level == logging.WARNING
    assert message.count("Unable to locate credentials") == len(ARTIFACT_NAMES)
    assert "COMPLETED" not in message


def test_a_logged_reason_is_one_line_cut_to_its_limit():
    """A reason of up to 2,048 characters, possibly multi-line, is quoted on one line."""
    results = {
        "transcriptResult": {"status": "COMPLETED", "outputLocation": "s3://b/t.json"},
        "noteResult": {"status": "FAILED", "failureReason": "line one\nline two"},
        "afterVisitSummaryResult": {"status": "FAILED", "failureReason": "x" * 2048},
    }
    text = describe_results(results)
    cut = "x" * (LOG_REASON_CHARS - 3) + "..."
    assert text == (
        "transcriptResult COMPLETED, noteResult FAILED (line one line two), "
        f"afterVisitSummaryResult FAILED ({cut})"
    )
    pending = {"noteResult": {"status": "IN_PROGRESS"}}
    assert describe_results(pending) == "noteResult IN_PROGRESS"
