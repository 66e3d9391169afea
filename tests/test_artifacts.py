"""Post-stream artifacts: IN_PROGRESS, then COMPLETED with the documents in S3.

End to end through the real SDK and boto3, with the on-disk S3 stand-in and with
a real S3-compatible server (moto) started by the test; the documents' shapes
are checked sans-IO for every note template.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aws_sdk_connecthealth import models as m

from emulator.artifacts import DiskBuckets, artifact_locations
from emulator.notes import (
    TEMPLATE_SECTIONS,
    TranscriptLine,
    after_visit_summary_document,
    clinical_document,
    final_lines,
    transcript_document,
)
from emulator.notescript import PostStreamScript, Summary
from emulator.sdk import boto3_client, make_client
from emulator.server import RunningServer, Settings
from emulator.session import segment_id

from .support import (
    DOMAIN_ID,
    S3_URI,
    SUBSCRIPTION_ID,
    admin,
    audio_event,
    configuration_event,
    end_of_session_event,
    new_session_id,
    pcm_tone,
    run_session,
    running_emulator,
)

SCRIPT = {
    "segments": [
        {"channel": 0, "begin": 0.2, "end": 1.0, "content": "What brings you in today?"},
        {"channel": 1, "begin": 1.2, "end": 2.4, "content": "A cough for two weeks, and a fever."},
        {"channel": 0, "begin": 2.6, "end": 3.6, "content": "I will prescribe rest and fluids."},
    ]
}
NOTE_SCRIPT = {
    **SCRIPT,
    "note": {
        "CHIEF_COMPLAINT": ["Cough for two weeks."],
        "PLAN": [{"text": "Rest and fluids.", "segments": [2]}],
    },
    "afterVisitSummary": ["Rest and drink fluids."],
    "artifacts": {
        "afterVisitSummaryResult": {"status": "FAILED", "failureReason": "Scripted failure"}
    },
}
PREFIX = "output/health-agent-listening-session/{d}/{s}/{sid}/post-stream-action/"


def _settings(state: Path, **overrides: Any) -> Settings:
    return Settings(host="127.0.0.1", port=0, h2c_port=0, state_dir=state, **overrides)


@pytest.fixture(scope="module")
def slow_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Post-stream actions take 3 s: long enough to see IN_PROGRESS first."""
    state = tmp_path_factory.mktemp("artifacts")
    with running_emulator(_settings(state, post_stream_delay=3.0)) as running:
        yield running


def script(running: RunningServer, session_id: str, scenario: dict) -> None:
    body = {"match": {"sessionId": session_id}, "scenario": scenario}
    status, answer = admin(running.h2c_url, "POST", "/_emulator/rules", body)
    assert status == 201, answer


def stream_two_channels(
    running: RunningServer, session_id: str, template: str = "PHYSICAL_SOAP", seconds: float = 4.0
):
    async def body():
        client = await make_client(endpoint_url=running.endpoint_url, ca_file=running.ca_file)
        try:
            audio = pcm_tone(seconds, channels=2) if seconds else b""
            events = [configuration_event(two_channels=True, template=template)]
            events += [audio_event(audio[i : i + 6400]) for i in range(0, len(audio), 6400)]
            events.append(end_of_session_event())
            result = await run_session(client, session_id, events=events)
            assert result.error is None, result.error
            return result
        finally:
            await client._config.transport.close()

    return asyncio.run(body())


def empty_session_to(running: RunningServer, session_id: str, output_s3_uri: str) -> None:
    """Stream a session with no audio whose artifacts go to ``output_s3_uri``."""

    async def body():
        client = await make_client(endpoint_url=running.endpoint_url, ca_file=running.ca_file)
        try:
            events = [configuration_event(output_s3_uri=output_s3_uri), end_of_session_event()]
            return await run_session(client, session_id, events=events)
        finally:
            await client._config.transport.close()

    assert asyncio.run(body()).error is None


def details(running: RunningServer, session_id: str) -> dict:
    boto = boto3_client(endpoint_url=running.endpoint_url, ca_file=running.ca_file)
    return boto.get_medical_scribe_listening_session(
        sessionId=session_id, domainId=DOMAIN_ID, subscriptionId=SUBSCRIPTION_ID
    )["medicalScribeListeningSessionDetails"]


def settled(running: RunningServer, session_id: str, *, within: float = 30.0) -> dict:
    """Poll Get until no artifact is IN_PROGRESS; return the artifacts' details."""
    deadline = time.monotonic() + within
    while True:
        result = details(running, session_id)["postStreamActionResult"]
        artifacts = result["clinicalNoteGenerationResult"]
        if all(a["status"] != "IN_PROGRESS" for a in artifacts.values()):
            return artifacts
        if time.monotonic() > deadline:
            raise TimeoutError(f"artifacts still IN_PROGRESS after {within} s: {artifacts}")
        time.sleep(0.1)


def on_disk(running: RunningServer, state: Path, session_id: str, name: str) -> Path:
    prefix = PREFIX.format(d=DOMAIN_ID, s=SUBSCRIPTION_ID, sid=session_id)
    return state / "s3" / "emulator-bucket" / prefix / name


def state_of(running: RunningServer) -> Path:
    assert running.ca_file is not None
    return running.ca_file.parent  # the emulator's CA lives in its state dir


# --- End to end, on-disk S3 stand-in -------------------------------------------------------
def test_artifacts_are_in_progress_then_completed_with_their_documents(slow_emulator):
    session_id = new_session_id()
    script(slow_emulator, session_id, SCRIPT)
    result = stream_two_channels(slow_emulator, session_id)
    first = details(slow_emulator, session_id)["postStreamActionResult"]
    pending = first["clinicalNoteGenerationResult"]
    assert {a["status"] for a in pending.values()} == {"IN_PROGRESS"}
    artifacts = settled(slow_emulator, session_id)
    base = f"{S3_URI}/health-agent-listening-session/{DOMAIN_ID}/{SUBSCRIPTION_ID}/{session_id}"
    assert artifacts == {
        "transcriptResult": {
            "status": "COMPLETED",
            "outputLocation": f"{base}/post-stream-action/transcript.json",
        },
        "noteResult": {
            "status": "COMPLETED",
            "outputLocation": f"{base}/post-stream-action/clinical-notes/clinicalDoc.json",
        },
        "afterVisitSummaryResult": {
            "status": "COMPLETED",
            "outputLocation": f"{base}/post-stream-action/clinical-notes/afterVisitSummary.json",
        },
    }
    assert pending == artifacts | {k: {**v, "status": "IN_PROGRESS"} for k, v in artifacts.items()}
    state = state_of(slow_emulator)
    text = on_disk(slow_emulator, state, session_id, "transcript.json").read_text()
    transcript = json.loads(text)
    # Compact UTF-8 JSON, as the README says.
    assert text == json.dumps(transcript, ensure_ascii=False, separators=(",", ":"))
    segments = transcript["Conversation"]["TranscriptSegments"]
    assert [
        (s["SegmentId"], s["BeginAudioTime"], s["EndAudioTime"], s["Content"], s["ChannelId"])
        for s in segments
    ] == [
        (f.segment_id, f.audio_begin_offset, f.audio_end_offset, f.content, f.channel_id)
        for f in result.finals
    ]
    assert [s["ParticipantDetails"]["ParticipantRole"] for s in segments] == [
        "CLINICIAN",
        "PATIENT",
        "CLINICIAN",
    ]
    note = json.loads(
        on_disk(slow_emulator, state, session_id, "clinical-notes/clinicalDoc.json").read_text()
    )["ClinicalDocumentation"]
    assert [s["SectionName"] for s in note["Sections"]] == list(TEMPLATE_SECTIONS["PHYSICAL_SOAP"])
    linked = {
        link["SegmentId"]
        for section in note["Sections"]
        for summary in section["Summary"]
        for link in summary["EvidenceLinks"]
    }
    assert linked and linked <= {s["SegmentId"] for s in segments}
    summary = json.loads(
        on_disk(
            slow_emulator, state, session_id, "clinical-notes/afterVisitSummary.json"
        ).read_text()
    )["AfterVisitSummary"]["Summary"]
    assert [s["EvidenceLinks"] for s in summary] == [[{"SegmentId": segments[2]["SegmentId"]}]]


def test_the_admin_api_serves_each_artifact_once_written_and_says_why_before(slow_emulator):
    """A test reads what its session's note says without the state directory (an
    emulator at a URL, in compose): 409s saying why until then."""
    from emulator.testing import MedscribeAdminError, MedscribeEmulator

    handle = MedscribeEmulator.connect(slow_emulator.h2c_url, ca_dir=state_of(slow_emulator))
    session_id = new_session_id()
    script(slow_emulator, session_id, SCRIPT)
    stream_two_channels(slow_emulator, session_id)
    with pytest.raises(MedscribeAdminError) as pending:
        handle.artifact(session_id, "noteResult")
    assert pending.value.status == 409
    assert "noteResult is IN_PROGRESS: it is written 3 s after the session's end" in str(
        pending.value
    )
    settled(slow_emulator, session_id)
    state = state_of(slow_emulator)
    for name, file in (
        ("transcriptResult", "transcript.json"),
        ("noteResult", "clinical-notes/clinicalDoc.json"),
        ("afterVisitSummaryResult", "clinical-notes/afterVisitSummary.json"),
    ):
        written = json.loads(on_disk(slow_emulator, state, session_id, file).read_text())
        assert handle.artifact(session_id, name, domain_id=DOMAIN_ID) == written

    def refusal(session: str, name: str, status: int) -> str:
        with pytest.raises(MedscribeAdminError) as refused:
            handle.artifact(session, name)
        assert refused.value.status == status
        return str(refused.value)

    assert "the artifacts are transcriptResult, noteResult, afterVisitSummaryResult" in (
        refusal(session_id, "clinicalDoc.json", 404)
    )
    paused = new_session_id()
    asyncio.run(_paused_session(slow_emulator, paused))
    assert "they start when its END_OF_SESSION is taken (its stream status is PAUSED)" in (
        refusal(paused, "transcriptResult", 409)
    )
    failed = new_session_id()
    fail = {"match": {"sessionId": failed}, "scenario": {"segments": [], "faults": [FAULT]}}
    assert admin(slow_emulator.h2c_url, "POST", "/_emulator/rules", fail)[0] == 201
    asyncio.run(_paused_session(slow_emulator, failed, error=True))
    assert "a session that failed has none (its stream status is FAILED)" in (
        refusal(failed, "noteResult", 409)
    )


FAULT = {"at": 0.2, "exception": "internalFailureException", "message": "scripted"}


async def _paused_session(running: RunningServer, session_id: str, *, error: bool = False) -> None:
    """A session left PAUSED (or, with ``error``, failed by its scripted fault)."""
    client = await make_client(endpoint_url=running.endpoint_url, ca_file=running.ca_file)
    try:
        result = await run_session(client, session_id, audio=pcm_tone(0.5), end_of_session=False)
        assert (result.error is not None) == error, result.error
    finally:
        await client._config.transport.close()


def test_scripted_note_summary_and_failed_artifact_come_from_the_scenario(slow_emulator):
    session_id = new_session_id()
    script(slow_emulator, session_id, NOTE_SCRIPT)
    stream_two_channels(slow_emulator, session_id, template="HISTORY_AND_PHYSICAL")
    artifacts = settled(slow_emulator, session_id)
    assert artifacts["afterVisitSummaryResult"] == {
        "status": "FAILED",
        "failureReason": "Scripted failure",
    }
    assert artifacts["noteResult"]["status"] == "COMPLETED"
    state = state_of(slow_emulator)
    assert not on_disk(
        slow_emulator, state, session_id, "clinical-notes/afterVisitSummary.json"
    ).exists()
    sections = json.loads(
        on_disk(slow_emulator, state, session_id, "clinical-notes/clinicalDoc.json").read_text()
    )["ClinicalDocumentation"]["Sections"]
    ids = [segment_id(session_id, n) for n in range(3)]
    # The requested template's sections in its order; the scripted ones as scripted.
    assert [s["SectionName"] for s in sections] == list(TEMPLATE_SECTIONS["HISTORY_AND_PHYSICAL"])
    by_name = {s["SectionName"]: s["Summary"] for s in sections}
    assert by_name["CHIEF_COMPLAINT"] == [
        {
            "SummarizedSegment": "Cough for two weeks.",
            "EvidenceLinks": [{"SegmentId": ids[1]}],  # the words it shares
        }
    ]
    assert by_name["PLAN"] == [
        {"SummarizedSegment": "Rest and fluids.", "EvidenceLinks": [{"SegmentId": ids[2]}]}
    ]


def test_a_scripted_note_follows_the_requested_template(slow_emulator, caplog):
    """A DAP note has DATA, ASSESSMENT and PLAN: the script's PLAN is used, the
    other two are derived from the transcript, and its CHIEF_COMPLAINT, which DAP
    has no section for, is left out with a warning (it came out alone before)."""
    session_id = new_session_id()
    script(slow_emulator, session_id, NOTE_SCRIPT)
    with caplog.at_level("WARNING", logger="medscribe.sessions"):
        stream_two_channels(slow_emulator, session_id, template="DAP")
        settled(slow_emulator, session_id)
    sections = json.loads(
        on_disk(
            slow_emulator, state_of(slow_emulator), session_id, "clinical-notes/clinicalDoc.json"
        ).read_text()
    )["ClinicalDocumentation"]
    assert sections["TemplateType"] == "DAP"
    assert [s["SectionName"] for s in sections["Sections"]] == ["DATA", "ASSESSMENT", "PLAN"]
    plan = sections["Sections"][2]["Summary"]
    assert [item["SummarizedSegment"] for item in plan] == ["Rest and fluids."]
    assert any(
        session_id in r.getMessage()
        and "CHIEF_COMPLAINT" in r.getMessage()
        and "DAP template has no section for" in r.getMessage()
        for r in caplog.records
    ), [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize("seconds", [0.0, 0.1], ids=["no-audio", "before-any-segment"])
def test_a_session_that_transcribed_nothing_has_an_empty_note_scripted_or_not(
    slow_emulator, seconds
):
    """The scripted note and summary described a visit nobody heard: with no segment
    transcribed they were written whole, without evidence."""
    session_id = new_session_id()
    scenario = {key: value for key, value in NOTE_SCRIPT.items() if key != "artifacts"}
    script(slow_emulator, session_id, scenario)
    stream_two_channels(slow_emulator, session_id, template="HISTORY_AND_PHYSICAL", seconds=seconds)
    artifacts = settled(slow_emulator, session_id)
    assert {a["status"] for a in artifacts.values()} == {"COMPLETED"}
    state = state_of(slow_emulator)

    def document(name: str) -> dict:
        return json.loads(on_disk(slow_emulator, state, session_id, name).read_text())

    assert document("transcript.json")["Conversation"]["TranscriptSegments"] == []
    sections = document("clinical-notes/clinicalDoc.json")["ClinicalDocumentation"]["Sections"]
    assert [s["SectionName"] for s in sections] == list(TEMPLATE_SECTIONS["HISTORY_AND_PHYSICAL"])
    assert all(s["Summary"] == [] for s in sections)
    visit = document("clinical-notes/afterVisitSummary.json")
    assert visit == {"AfterVisitSummary": {"Summary": []}}


def test_sdk_sees_the_artifacts_complete(slow_emulator):
    """The real SDK's Get reads the same artifact results."""
    session_id = new_session_id()
    script(slow_emulator, session_id, SCRIPT)
    stream_two_channels(slow_emulator, session_id)
    settled(slow_emulator, session_id)

    async def get():
        client = await make_client(
            endpoint_url=slow_emulator.endpoint_url, ca_file=slow_emulator.ca_file
        )
        try:
            return await client.get_medical_scribe_listening_session(
                input=m.GetMedicalScribeListeningSessionInput(
                    session_id=session_id, domain_id=DOMAIN_ID, subscription_id=SUBSCRIPTION_ID
                )
            )
        finally:
            await client._config.transport.close()

    result = asyncio.run(get()).medical_scribe_listening_session_details.post_stream_action_result
    notes = result.clinical_note_generation_result
    assert notes.note_result.status == "COMPLETED"
    assert notes.transcript_result.output_location.endswith("/post-stream-action/transcript.json")


def test_post_stream_actions_interrupted_by_a_restart_complete_after_it(
    tmp_path, monkeypatch, caplog
):
    """Actions that shutdown had no time for are said to be left, and the next start on
    the same state directory says it resumes them and completes them."""
    from emulator import server

    monkeypatch.setattr(server, "POST_STREAM_SHUTDOWN_BUDGET", 0.0)  # no time at all
    session_id = new_session_id()
    with caplog.at_level("INFO", logger="medscribe"):
        with running_emulator(_settings(tmp_path, post_stream_delay=600.0)) as first:
            script(first, session_id, SCRIPT)
            stream_two_channels(first, session_id)
            assert details(first, session_id)["streamStatus"] == "COMPLETED"
        assert "1 session(s) left their post-stream actions in progress" in caplog.text
        assert not on_disk(first, tmp_path, session_id, "transcript.json").exists()
        with running_emulator(_settings(tmp_path, post_stream_delay=0.5)) as second:
            assert "resuming the post-stream actions of 1 session(s)" in caplog.text
            artifacts = settled(second, session_id)
            assert {a["status"] for a in artifacts.values()} == {"COMPLETED"}
            assert on_disk(second, tmp_path, session_id, "transcript.json").is_file()


def test_a_restart_keeps_every_session_whose_artifacts_are_still_to_write(
    tmp_path, monkeypatch, caplog
):
    """More sessions left with their actions in progress than --retention keeps: the
    next start trimmed the sessions before it scheduled their actions, and dropped all
    but the newest (journals included), so their artifacts were never written."""
    from emulator import server

    monkeypatch.setattr(server, "POST_STREAM_SHUTDOWN_BUDGET", 0.0)
    session_ids = [new_session_id() for _ in range(4)]
    with caplog.at_level("INFO", logger="medscribe"):
        with running_emulator(_settings(tmp_path, post_stream_delay=600.0, retention=2)) as first:
            for session_id in session_ids:
                script(first, session_id, SCRIPT)
                stream_two_channels(first, session_id)
        assert "4 session(s) left their post-stream actions in progress" in caplog.text
        with running_emulator(_settings(tmp_path, post_stream_delay=0.2, retention=2)) as second:
            assert "resuming the post-stream actions of 4 session(s)" in caplog.text
            written = [on_disk(second, tmp_path, sid, "transcript.json") for sid in session_ids]
            deadline = time.monotonic() + 30
            while not all(path.is_file() for path in written):
                assert time.monotonic() < deadline, [path.is_file() for path in written]
                time.sleep(0.1)
            # Written, the sessions over the retention go as usual.
            deadline = time.monotonic() + 10
            while (
                len(listed := admin(second.h2c_url, "GET", "/_emulator/sessions")[1]["sessions"])
                > 2
            ):
                assert time.monotonic() < deadline, listed
                time.sleep(0.1)
            assert [s["sessionId"] for s in listed] == session_ids[2:]


def test_shutdown_finishes_post_stream_actions_still_waiting(tmp_path):
    """A test's emulator lives in a temporary directory that sees no next start: the
    actions still waiting when it stops are run then, and saved."""
    session_id = new_session_id()
    with running_emulator(_settings(tmp_path, post_stream_delay=600.0)) as first:
        script(first, session_id, SCRIPT)
        stream_two_channels(first, session_id)
        assert {
            a["status"]
            for a in details(first, session_id)["postStreamActionResult"][
                "clinicalNoteGenerationResult"
            ].values()
        } == {"IN_PROGRESS"}
    assert on_disk(first, tmp_path, session_id, "transcript.json").is_file()
    with running_emulator(_settings(tmp_path, post_stream_delay=600.0)) as second:
        result = details(second, session_id)["postStreamActionResult"]
        artifacts = result["clinicalNoteGenerationResult"]
        assert {a["status"] for a in artifacts.values()} == {"COMPLETED"}


def test_a_reset_writes_the_artifacts_it_forgets_and_spares_the_next_session(tmp_path):
    """Artifacts were promised at their output location: a reset (another job's, on a
    shared emulator) still writes them. A session started afterwards with the same ids
    journals in the same folder: the forgotten one's job neither reads nor removes it."""
    session_id = new_session_id()
    replay = {"segments": [{"channel": 0, "begin": 0.2, "end": 1.0, "content": "Second visit."}]}
    with running_emulator(_settings(tmp_path, post_stream_delay=600.0)) as running:
        script(running, session_id, SCRIPT)
        stream_two_channels(running, session_id)
        transcript = on_disk(running, tmp_path, session_id, "transcript.json")
        assert not transcript.exists()
        assert admin(running.h2c_url, "POST", "/_emulator/reset")[0] == 200
        script(running, session_id, replay)
        stream_two_channels(running, session_id)  # the same ids, a new session
        deadline = time.monotonic() + 30
        while not transcript.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        first = json.loads(transcript.read_text())
        assert "A cough for two weeks" in json.dumps(first)
        assert "Second visit." not in json.dumps(first)
        status, events = admin(running.h2c_url, "GET", f"/_emulator/sessions/{session_id}/events")
        assert status == 200
        finals = [
            e["transcriptSegment"]["content"]
            for e in events["events"]
            if e["direction"] == "out" and not e["transcriptSegment"]["isPartial"]
        ]
        assert finals == ["Second visit."]
        journals = tmp_path / "sessions" / DOMAIN_ID / SUBSCRIPTION_ID
        deadline = time.monotonic() + 10
        while len(list(journals.iterdir())) > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [p.name for p in journals.iterdir()] == [session_id]


def test_the_same_ids_forgotten_twice_before_their_artifacts_are_written_lose_nothing(tmp_path):
    """A suite reusing one session id, resetting between tests, while the artifacts'
    thread is behind: both forgotten sessions' artifacts are written, both moved-aside
    journals removed (the second once overwrote the first's job)."""
    session_id = new_session_id()
    with running_emulator(_settings(tmp_path, post_stream_delay=600.0)) as running:
        backend = running.app.backend
        gate = threading.Event()
        backend._post_stream._artifact_thread.submit(gate.wait, 30)  # the thread busy meanwhile
        written: list[str] = []
        put = backend.buckets.put

        def record(bucket: str, key: str, body: bytes) -> None:
            written.append(key)
            put(bucket, key, body)

        backend.buckets.put = record
        for _ in range(2):
            script(running, session_id, SCRIPT)
            stream_two_channels(running, session_id)
            assert admin(running.h2c_url, "POST", "/_emulator/reset")[0] == 200
        assert len(backend._post_stream._detached) == 2
        gate.set()
        journals = tmp_path / "sessions" / DOMAIN_ID / SUBSCRIPTION_ID
        deadline = time.monotonic() + 30
        while (len(written) < 6 or journals.exists()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sum(key.endswith("transcript.json") for key in written) == 2
        assert not journals.exists()  # both .forgotten-N folders, and their parents, gone


def test_new_sessions_past_the_artifact_backlog_limit_are_throttled(tmp_path):
    """The artifacts still to write are bounded: a new session past the limit gets a
    ThrottlingException saying why (the SDK retried it, and gave up). A session
    resumed is not refused: its visit is under way."""
    first, second, paused = new_session_id(), new_session_id(), new_session_id()
    settings = _settings(tmp_path, post_stream_delay=600.0, max_pending_artifacts=1)
    with running_emulator(settings) as running:

        async def body():
            from aws_sdk_connecthealth import models as m

            async with await make_client(
                endpoint_url=running.endpoint_url, ca_file=running.ca_file
            ) as client:
                half = await run_session(client, paused, audio=pcm_tone(0.2), end_of_session=False)
                assert half.error is None
                done = await run_session(client, first, audio=pcm_tone(0.2))
                assert done.error is None
                refused = await run_session(client, second, audio=pcm_tone(0.2))
                assert isinstance(refused.error, m.ThrottlingException), refused.error
                resumed = await run_session(client, paused, audio=pcm_tone(0.2))
                assert resumed.error is None
                return refused.error.message

        message = asyncio.run(body())
        assert message.startswith("the emulator has the post-stream artifacts of 1 session(s)")
        assert "--max-pending-artifacts 1" in message
        status, listing = admin(running.h2c_url, "GET", "/_emulator/sessions")
        assert {r["error"] for r in listing["rejected"]} == {"ThrottlingException"}
        assert second not in {s["sessionId"] for s in listing["sessions"]}


def test_artifact_jobs_on_disk_run_on_one_thread_of_their_own(tmp_path, monkeypatch):
    """The post-stream jobs, Python under the GIL, run one at a time on the
    emulator's artifacts thread, not asyncio's pool of six, whose threads took
    the GIL from the event loop more often; every session's still completes."""
    import threading

    from emulator import poststream

    threads: list[str] = []
    original = poststream._run_artifact_job

    def spy(job):
        threads.append(threading.current_thread().name)
        return original(job)

    monkeypatch.setattr(poststream, "_run_artifact_job", spy)
    sessions = [new_session_id() for _ in range(3)]
    with running_emulator(_settings(tmp_path, post_stream_delay=0.1)) as running:
        for session_id in sessions:
            script(running, session_id, SCRIPT)
            stream_two_channels(running, session_id)
        for session_id in sessions:
            assert {a["status"] for a in settled(running, session_id).values()} == {"COMPLETED"}
    assert threads == ["medscribe-artifacts_0"] * 3  # the pool's one thread


# --- A real S3-compatible server -------------------------------------------------------------
@pytest.fixture
def moto_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Any]]:
    """A moto server on 127.0.0.1 (a free port) and a boto3 S3 client for it."""
    import boto3
    from moto.server import ThreadedMotoServer

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    try:
        yield url, boto3.client("s3", endpoint_url=url, region_name="us-east-1")
    finally:
        server.stop()


@contextlib.contextmanager
def hung_s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, list]]:
    """An endpoint that accepts connections and never answers; yields its URL and the
    connections it holds."""
    import socket

    for name, value in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"}.items():
        monkeypatch.setenv(name, value)
    hole = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    done = threading.Event()
    hole.settimeout(0.1)

    def accept() -> None:
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                held.append(hole.accept()[0])

    accepting = threading.Thread(target=accept, daemon=True)
    accepting.start()
    try:
        yield f"http://127.0.0.1:{hole.getsockname()[1]}", held
    finally:
        done.set()
        accepting.join(5)
        hole.close()
        for connection in held:
            connection.close()


def _until_connected(held: list) -> None:
    deadline = time.monotonic() + 10
    while not held and time.monotonic() < deadline:  # the upload is under way
        time.sleep(0.05)
    assert held, "the upload never connected"


@contextlib.contextmanager
def uploading_to_nowhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, session_id: str, *, delay: float
) -> Iterator[tuple[RunningServer, dict[str, float]]]:
    """An emulator writing artifacts to a hung S3 endpoint, with ``session_id`` streamed
    (scripted) to its end; yields it, and stops it on the way out, once an upload is
    under way (the seconds its shutdown took then go in the yielded dict)."""
    timing: dict[str, float] = {}
    with hung_s3_endpoint(monkeypatch) as (url, held):
        settings = _settings(tmp_path, post_stream_delay=delay, s3_endpoint_url=url)
        with running_emulator(settings) as run:
            script(run, session_id, SCRIPT)
            stream_two_channels(run, session_id)
            yield run, timing
            _until_connected(held)
            stopping = time.monotonic()
        timing["stopped_in"] = time.monotonic() - stopping


def test_a_hung_s3_endpoint_does_not_hold_shutdown(tmp_path, monkeypatch, caplog):
    """The upload's thread is not waited for (SIGTERM was held for minutes), the actions
    are said to be left, and the next start on the state directory completes them."""
    caplog.set_level("INFO", logger="medscribe")
    session_id = new_session_id()
    with uploading_to_nowhere(tmp_path, monkeypatch, session_id, delay=0.0) as (_, timing):
        pass
    assert timing["stopped_in"] < 5, timing  # the bound only catches a hang (it was minutes)
    assert "1 session(s) left their post-stream actions in progress" in caplog.text
    with running_emulator(_settings(tmp_path, post_stream_delay=0.0)) as second:
        artifacts = settled(second, session_id)
    assert {a["status"] for a in artifacts.values()} == {"COMPLETED"}


def test_uploads_of_forgotten_sessions_cut_off_by_shutdown_are_said_lost(
    tmp_path, monkeypatch, caplog
):
    """A reset forgot the session (no row is left to resume its upload from): shutdown
    gives the upload its budget, says it is lost, and the next start removes the
    journal it had moved aside."""
    caplog.set_level("INFO", logger="medscribe")
    session_id = new_session_id()
    with uploading_to_nowhere(tmp_path, monkeypatch, session_id, delay=600.0) as (run, _):
        assert admin(run.h2c_url, "POST", "/_emulator/reset")[0] == 200
    journals = tmp_path / "sessions" / DOMAIN_ID / SUBSCRIPTION_ID
    assert [p.name.split(".")[1] for p in journals.iterdir()] == ["forgotten-1"]
    assert (
        f"shutdown cut off the artifact uploads of session {session_id}, which a "
        "reset had forgotten: they are lost"
    ) in caplog.text
    with running_emulator(_settings(tmp_path)):
        pass
    assert "removed 1 journal(s) of sessions a reset forgot" in caplog.text
    assert not journals.exists()


def test_artifacts_go_to_a_real_s3_compatible_server(tmp_path, moto_s3):
    """With --s3-endpoint-url the documents are PUT with a real S3 client; a bucket that
    does not exist fails each artifact with the server's reason."""
    from emulator.testing import MedscribeAdminError, MedscribeEmulator

    url, s3 = moto_s3
    s3.create_bucket(Bucket="emulator-bucket")
    present, missing = new_session_id(), new_session_id()
    with running_emulator(_settings(tmp_path, post_stream_delay=0.2, s3_endpoint_url=url)) as run:
        script(run, present, SCRIPT)
        stream_two_channels(run, present)
        assert {a["status"] for a in settled(run, present).values()} == {"COMPLETED"}
        stream_to_missing_bucket(run, missing)
        failed = settled(run, missing)
        handle = MedscribeEmulator.connect(run.h2c_url, ca_dir=tmp_path / "ca")
        with pytest.raises(MedscribeAdminError) as elsewhere:
            handle.artifact(present, "transcriptResult")
        assert elsewhere.value.status == 409
        assert "on the S3 endpoint the emulator was given (--s3-endpoint-url): read it" in str(
            elsewhere.value
        )
        with pytest.raises(MedscribeAdminError) as failing:
            handle.artifact(missing, "noteResult")
        assert failing.value.status == 409 and "noteResult is FAILED: " in str(failing.value)
    prefix = PREFIX.format(d=DOMAIN_ID, s=SUBSCRIPTION_ID, sid=present)
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="emulator-bucket")["Contents"])
    assert keys == [
        prefix + "clinical-notes/afterVisitSummary.json",
        prefix + "clinical-notes/clinicalDoc.json",
        prefix + "transcript.json",
    ]
    body = s3.get_object(Bucket="emulator-bucket", Key=prefix + "transcript.json")["Body"]
    segments = json.loads(body.read())["Conversation"]["TranscriptSegments"]
    assert [s["Content"] for s in segments] == [seg["content"] for seg in SCRIPT["segments"]]
    assert not (tmp_path / "s3").exists()  # nothing went to the disk stand-in
    for artifact in failed.values():
        assert artifact["status"] == "FAILED"
        assert "NoSuchBucket" in artifact["failureReason"]
        assert "s3://no-such-bucket/out/" in artifact["failureReason"]


def stream_to_missing_bucket(running: RunningServer, session_id: str) -> None:
    """Stream a session whose outputS3Uri names a bucket nobody created."""
    from aws_sdk_connecthealth import models as sdk

    async def body():
        client = await make_client(endpoint_url=running.endpoint_url, ca_file=running.ca_file)
        try:
            config = sdk.MedicalScribeInputStreamConfigurationEvent(
                value=sdk.MedicalScribeConfigurationEvent(
                    post_stream_action_settings=sdk.MedicalScribePostStreamActionSettings(
                        output_s3_uri="s3://no-such-bucket/out",
                        clinical_note_generation_settings=sdk.ClinicalNoteGenerationSettings(
                            note_template_settings=sdk.NoteTemplateSettingsManagedTemplate(
                                value=sdk.ManagedTemplate(template_type="DAP")
                            )
                        ),
                    )
                )
            )
            events = [config, audio_event(pcm_tone(1.0)), end_of_session_event()]
            result = await run_session(client, session_id, events=events)
            assert result.error is None, result.error
        finally:
            await client._config.transport.close()

    asyncio.run(body())


# --- Sans-IO: locations and documents --------------------------------------------------------
def test_artifact_locations_follow_the_documented_layout():
    ids = {"domain_id": DOMAIN_ID, "subscription_id": SUBSCRIPTION_ID, "session_id": "s-1"}
    base = f"health-agent-listening-session/{DOMAIN_ID}/{SUBSCRIPTION_ID}/s-1/post-stream-action"
    for uri, prefix in (
        ("s3://b", ""),
        ("s3://b/", ""),
        ("s3://b/x/y/", "x/y/"),
        ("s3://b/x//y", "x//y/"),  # another S3 key than x/y: kept as written
        ("s3://b//x/", "/x/"),
        ("s3://b/x//", "x//"),  # only one trailing slash is the separator's
    ):
        assert artifact_locations(uri, **ids) == {
            "transcriptResult": ("b", f"{prefix}{base}/transcript.json"),
            "noteResult": ("b", f"{prefix}{base}/clinical-notes/clinicalDoc.json"),
            "afterVisitSummaryResult": (
                "b",
                f"{prefix}{base}/clinical-notes/afterVisitSummary.json",
            ),
        }


def test_disk_stand_in_refuses_keys_that_climb_out_of_the_bucket(tmp_path):
    buckets = DiskBuckets(tmp_path)
    buckets.put("b", "a/b.json", b"{}")
    assert (tmp_path / "b" / "a" / "b.json").read_bytes() == b"{}"
    with pytest.raises(ValueError, match=r"'\.' or '\.\.'"):
        buckets.put("b", "../../escape.json", b"{}")


def test_disk_stand_in_says_which_keys_a_file_system_cannot_hold_naming_the_key(tmp_path):
    """S3 takes these keys; the disk stand-in cannot. The failure reason a client
    reads named the stand-in's own temporary file; it now names the key and why."""
    buckets = DiskBuckets(tmp_path)
    longest = "k" * 255
    buckets.put("b", f"p/{longest}", b"{}")  # a name of 255 bytes fits
    assert (tmp_path / "b" / "p" / longest).read_bytes() == b"{}"
    with pytest.raises(ValueError) as info:
        buckets.put("b", "p/" + "k" * 256, b"{}")
    assert str(info.value) == (
        "the disk stand-in cannot store a key part longer than the 255 bytes a file name "
        f"holds (S3 takes it: use --s3-endpoint-url): '{'k' * 32}'... (256 characters) is 256 bytes"
    )
    buckets.put("b", "out/transcript.json", b"{}")
    with pytest.raises(OSError) as info:
        buckets.put("b", "out/transcript.json/session/transcript.json", b"{}")
    assert str(info.value) == (
        "the disk stand-in cannot store an object under another object's key, which it "
        "keeps as a file (S3 takes it: use --s3-endpoint-url): the key lies under "
        "'out/transcript.json'"
    )
    with pytest.raises(OSError) as info:
        buckets.put("b", "p", b"{}")  # the folder of p/kkk...
    assert str(info.value) == (
        "the disk stand-in cannot store an object at a key that other objects lie under, "
        "which it keeps as a folder (S3 takes it: use --s3-endpoint-url)"
    )
    assert sorted(p.name for p in (tmp_path / "b" / "p").iterdir()) == [longest]  # no .part
    with pytest.raises(ValueError) as info:
        buckets.put("b", "p/a\0b/transcript.json", b"{}")  # was "embedded null byte"
    assert str(info.value) == (
        "the disk stand-in cannot store a key holding a NUL character "
        "(S3 takes it: use --s3-endpoint-url)"
    )


def test_an_artifact_the_disk_stand_in_cannot_store_fails_naming_its_key(slow_emulator):
    """Through Get: the output location under an earlier session's transcript.json."""
    first, second = new_session_id(), new_session_id()
    stream_two_channels(slow_emulator, first)
    artifacts = settled(slow_emulator, first)
    taken = artifacts["transcriptResult"]["outputLocation"]
    assert taken.endswith("/transcript.json")
    empty_session_to(slow_emulator, second, taken)
    failed = settled(slow_emulator, second)["transcriptResult"]
    assert failed["status"] == "FAILED"
    reason = failed["failureReason"]
    key = taken.removeprefix("s3://emulator-bucket/")
    assert reason.startswith(f"could not write {taken}/")
    assert f"(S3 takes it: use --s3-endpoint-url): the key lies under {key!r}" in reason
    assert ".part" not in reason and str(state_of(slow_emulator)) not in reason


def test_a_key_too_long_for_a_file_name_fails_saying_why_within_the_reasons_length(
    slow_emulator,
):
    """The reason quoted the key twice and was cut at 2048 characters before it said
    why, for a valid output location near the model's 1,024 characters."""
    session_id = new_session_id()
    uri = "s3://emulator-bucket/" + "/".join(["q" * 240] * 2) + "/" + "p" * 256
    assert len(uri) < 1024  # the model's limit for S3Uri
    # Within S3's 1,024-byte key with the ~180 bytes the service adds: S3 takes it.
    assert len(uri.encode()) - len("s3://emulator-bucket/") + 180 <= 1024
    empty_session_to(slow_emulator, session_id, uri)
    for result in settled(slow_emulator, session_id).values():
        assert result["status"] == "FAILED"
        assert len(result["failureReason"]) < 2048
        assert result["failureReason"].endswith(
            "longer than the 255 bytes a file name holds (S3 takes it: use "
            f"--s3-endpoint-url): '{'p' * 32}'... (256 characters) is 256 bytes"
        )


LINES = [
    TranscriptLine(
        segment_id="s0",
        begin=0.0,
        end=1.0,
        content="What brings you in today?",
        channel_id="ch_0",
        role="CLINICIAN",
    ),
    TranscriptLine(
        segment_id="s1",
        begin=1.0,
        end=2.0,
        content="A cough and fever for a week.",
        channel_id="ch_1",
        role="PATIENT",
    ),
    TranscriptLine(
        segment_id="s2",
        begin=2.0,
        end=3.0,
        content="Let's try a breathing exercise and follow up next week.",
        channel_id="ch_0",
        role="CLINICIAN",
    ),
]


def _configuration(template: dict) -> dict:
    return {
        "postStreamActionSettings": {
            "outputS3Uri": S3_URI,
            "clinicalNoteGenerationSettings": {"noteTemplateSettings": template},
        }
    }


@pytest.mark.parametrize("template", sorted(TEMPLATE_SECTIONS))
def test_derived_note_has_the_template_sections_with_evidence(template):
    document = clinical_document(
        configuration=_configuration({"managedTemplate": {"templateType": template}}),
        lines=LINES,
        script=None,
        session_id="s",
    )["ClinicalDocumentation"]
    assert document["TemplateType"] == template
    assert [s["SectionName"] for s in document["Sections"]] == list(TEMPLATE_SECTIONS[template])
    summaries = [summary for s in document["Sections"] for summary in s["Summary"]]
    assert summaries, "the conversation lands in some section"
    for summary in summaries:
        assert [link["SegmentId"] for link in summary["EvidenceLinks"]] != []
        assert {link["SegmentId"] for link in summary["EvidenceLinks"]} <= {"s0", "s1", "s2"}


def test_derived_note_files_lines_sharing_no_cue_word_and_drops_none():
    """Lines before the first that shared a cue word were dropped: a session whose
    words no cue names gave a note with every section empty."""
    lines = [
        TranscriptLine(segment_id=f"x{i}", begin=i, end=i + 0.5, content=text)
        for i, text in enumerate(["Zebra quartz.", "Plinth vortex.", "Quasar jib."])
    ]
    document = clinical_document(
        configuration=_configuration({"managedTemplate": {"templateType": "DAP"}}),
        lines=lines,
        script=None,
        session_id="s",
    )["ClinicalDocumentation"]
    filed = {
        s["SectionName"]: [link["SegmentId"] for x in s["Summary"] for link in x["EvidenceLinks"]]
        for s in document["Sections"]
    }
    assert filed == {"DATA": ["x0", "x1", "x2"], "ASSESSMENT": [], "PLAN": []}


def test_custom_template_note_uses_its_own_section_headers():
    custom = {
        "customTemplate": {
            "templateType": "BIRP",
            "templateInstructions": [
                {"sectionHeader": "PRESENTING_SYMPTOMS", "sectionInstruction": "cough fever"},
                {"sectionHeader": "NEXT_STEPS", "sectionInstruction": "follow up exercise"},
            ],
        }
    }
    document = clinical_document(
        configuration=_configuration(custom), lines=LINES, script=None, session_id="s"
    )["ClinicalDocumentation"]
    assert document["TemplateType"] == "BIRP"
    sections = {s["SectionName"]: s["Summary"] for s in document["Sections"]}
    assert list(sections) == ["PRESENTING_SYMPTOMS", "NEXT_STEPS"]
    assert [
        link["SegmentId"] for s in sections["PRESENTING_SYMPTOMS"] for link in s["EvidenceLinks"]
    ] == ["s1"]
    assert [link["SegmentId"] for s in sections["NEXT_STEPS"] for link in s["EvidenceLinks"]] == [
        "s2"
    ]


@pytest.mark.parametrize("scripted", [False, True], ids=["derived", "scripted"])
def test_a_header_the_custom_template_repeats_gets_each_utterance_once(scripted):
    """Filed by name, every utterance went under each repeat of a header (twice as
    many note items as transcript lines); the first of the repeats takes them."""
    custom = {
        "customTemplate": {
            "templateType": "DAP",
            "templateInstructions": [
                {"sectionHeader": "A", "sectionInstruction": "cough fever"},
                {"sectionHeader": "A", "sectionInstruction": "cough fever"},
                {"sectionHeader": "a", "sectionInstruction": "follow up exercise"},
            ],
        }
    }
    script = None
    if scripted:
        script = PostStreamScript(note=(("A", (Summary(text="Cough."),)),))
    document = clinical_document(
        configuration=_configuration(custom), lines=LINES, script=script, session_id="s"
    )["ClinicalDocumentation"]
    sections = [(s["SectionName"], s["Summary"]) for s in document["Sections"]]
    assert [name for name, _ in sections] == ["A", "A", "a"]
    assert sections[1][1] == []
    texts = [item["SummarizedSegment"] for _, items in sections for item in items]
    assert len(texts) == len(set(texts))
    if scripted:
        assert [item["SummarizedSegment"] for item in sections[0][1]] == ["Cough."]
    else:
        assert [link["SegmentId"] for s in sections[0][1] for link in s["EvidenceLinks"]] == ["s1"]


def test_scripted_summaries_link_only_to_segments_that_were_transcribed():
    script = PostStreamScript(
        note=(("PLAN", (Summary(text="Follow up.", segments=(0, 7)),)),),
        after_visit_summary=(Summary(text="Breathing exercise daily."),),
    )
    ids = [segment_id("s", n) for n in range(2)]
    lines = [TranscriptLine(segment_id=ids[0], begin=0, end=1, content="Follow up soon.")]
    note = clinical_document(
        configuration=_configuration({"managedTemplate": {"templateType": "DAP"}}),
        lines=lines,
        script=script,
        session_id="s",
    )
    plan = {s["SectionName"]: s["Summary"] for s in note["ClinicalDocumentation"]["Sections"]}
    assert plan["PLAN"][0]["EvidenceLinks"] == [{"SegmentId": ids[0]}]
    visit = after_visit_summary_document(lines=LINES, script=script, session_id="s")
    assert visit["AfterVisitSummary"]["Summary"] == [
        {"SummarizedSegment": "Breathing exercise daily.", "EvidenceLinks": [{"SegmentId": "s2"}]}
    ]


def test_transcript_document_omits_channel_and_role_without_channel_definitions():
    line = TranscriptLine(segment_id="x", begin=0.5, end=1.5, content="Hello.")
    segment = transcript_document(ids={"SessionId": "s"}, language_code="en-US", lines=[line])[
        "Conversation"
    ]["TranscriptSegments"][0]
    assert segment == {
        "SegmentId": "x",
        "BeginAudioTime": 0.5,
        "EndAudioTime": 1.5,
        "Content": "Hello.",
    }


def test_disk_stand_in_writes_whole_objects_and_leaves_no_partial_files(tmp_path):
    buckets = DiskBuckets(tmp_path)
    buckets.put("b", "deep/er/x.json", b"one")
    buckets.put("b", "deep/er/x.json", b"two")  # overwritten, the directory reused
    buckets.put("b", "deep/er/y.json", b"three")
    folder = tmp_path / "b" / "deep" / "er"
    assert sorted(p.name for p in folder.iterdir()) == ["x.json", "y.json"]
    assert (folder / "x.json").read_bytes() == b"two"
    # A key naming a directory cannot be written: the error says so, nothing is left.
    (folder / "taken.json").mkdir()
    with pytest.raises(OSError):
        buckets.put("b", "deep/er/taken.json", b"{}")
    assert sorted(p.name for p in folder.iterdir()) == ["taken.json", "x.json", "y.json"]


def test_a_question_places_its_answer_but_is_no_finding_itself():
    """ "What brings you in?" filed itself under CHIEF_COMPLAINT, and "Did it start
    suddenly, or gradually?" under PLAN and in the after-visit summary as advice."""

    def line(n: int, role: str, content: str) -> TranscriptLine:
        return TranscriptLine(
            segment_id=f"s{n}", begin=n, end=n + 1, content=content, channel_id="ch_0", role=role
        )

    lines = [
        line(0, "CLINICIAN", "What brings you in today?"),
        line(1, "PATIENT", "My throat, mostly."),
        line(2, "CLINICIAN", "Did it start suddenly, or should we schedule a test?"),
        line(3, "CLINICIAN", "Please rest and come back next week."),
    ]
    document = clinical_document(
        configuration=_configuration({"managedTemplate": {"templateType": "HISTORY_AND_PHYSICAL"}}),
        lines=lines,
        script=None,
        session_id="s",
    )["ClinicalDocumentation"]
    filed = {
        link["SegmentId"]: section["SectionName"]
        for section in document["Sections"]
        for item in section["Summary"]
        for link in item["EvidenceLinks"]
    }
    assert "s0" not in filed and "s2" not in filed  # the questions
    assert filed["s1"] == "CHIEF_COMPLAINT"  # the answer, where its question pointed
    assert filed["s3"] == "PLAN"
    summary = after_visit_summary_document(lines=lines, script=None, session_id="s")
    assert [item["EvidenceLinks"] for item in summary["AfterVisitSummary"]["Summary"]] == [
        [{"SegmentId": "s3"}]
    ]


def _line(segment_id: str, begin: float, content: str, role: str | None = None) -> TranscriptLine:
    channel = {"CLINICIAN": "ch_0", "PATIENT": "ch_1"}.get(role or "")
    return TranscriptLine(
        segment_id=segment_id,
        begin=begin,
        end=begin + 1.0,
        content=content,
        channel_id=channel,
        role=role,
    )


def test_without_roles_a_patients_own_account_is_no_advice_and_none_is_the_clinicians():
    """One channel, no channel definitions: no line has a role. The summary once
    quoted the patient's "I take amlodipine..." as "Your clinician advised"."""
    patient = [
        "I take amlodipine five milligrams daily.",
        "Yes, I take lisinopril every morning.",
        "My mother takes insulin daily.",
    ]
    clinician = [
        "I'd like you to take the medication with food.",
        "Take ibuprofen twice daily and rest.",
        "I recommend rest and fluids for the next week.",
        "I'm prescribing amoxicillin, take it twice a day.",
        "My plan is to order labs and follow up next week.",
    ]
    lines = [_line(f"s{i}", float(i), text) for i, text in enumerate(patient + clinician)]
    document = after_visit_summary_document(lines=lines, script=None, session_id="s")
    items = document["AfterVisitSummary"]["Summary"]
    kept = [i["EvidenceLinks"][0]["SegmentId"] for i in items]
    assert kept == [f"s{i}" for i in range(len(patient), len(lines))]
    assert all(i["SummarizedSegment"].startswith("Discussed at the visit: ") for i in items)
    with_roles = [_line("d", 0.0, "Take ibuprofen twice daily and rest.", "CLINICIAN")]
    (item,) = after_visit_summary_document(lines=with_roles, script=None, session_id="s")[
        "AfterVisitSummary"
    ]["Summary"]
    assert item["SummarizedSegment"].startswith("Your clinician advised: ")


def test_transcript_lines_are_in_time_order_when_a_turn_ends_inside_another():
    """A short reply said during a longer turn is sent first (it ends first); the
    transcript, and the notes made from it, read in the order the words were said."""

    def final(segment_id: str, begin: float, end: float) -> dict:
        segment = {
            "segmentId": segment_id,
            "audioBeginOffset": begin,
            "audioEndOffset": end,
            "content": segment_id,
            "isPartial": False,
        }
        return {"direction": "out", "type": "transcriptEvent", "transcriptSegment": segment}

    sent = [final("okay", 2.0, 2.5), final("so-the-plan", 0.5, 6.0), final("thanks", 9.5, 10.0)]
    assert [line.segment_id for line in final_lines(sent)] == ["so-the-plan", "okay", "thanks"]
    # A stream replayed after a crash sends its segments again: each is one line.
    replayed = [*sent, final("so-the-plan", 0.5, 6.0), final("okay", 2.0, 2.5)]
    assert [line.segment_id for line in final_lines(replayed)] == [
        "so-the-plan",
        "okay",
        "thanks",
    ]
