"""The post-stream actions: a completed session's three artifacts, written after
it ends.

:class:`PostStreamRunner` owns the jobs that build and write them: a task per
session waits ``post_stream_delay`` seconds (their ArtifactDetails say
IN_PROGRESS meanwhile), then runs its :class:`_ArtifactJob` on the artifacts'
own thread (buckets on disk) or a daemon thread (S3), and records the results.
It also writes the artifacts of sessions a reset forgot with their actions
still waiting, and finishes what it can at shutdown. The backend
(:class:`~emulator.backend.Backend`) holds one and shares its sessions with it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .artifacts import (
    ARTIFACT_NAMES,
    Buckets,
    DiskBuckets,
    artifact_locations,
    describe_results,
    s3_uri,
)
from .journal import Journal, compact_encoder, journal_damage, run_in_writer
from .logs import get_logger
from .notes import after_visit_summary_document, clinical_document, final_lines, transcript_document
from .persistence import FORGOTTEN
from .record import SessionKey, SessionRecord
from .session import ScenarioSource

__all__ = ["PostStreamRunner", "post_stream_pending"]

log = get_logger("medscribe.sessions")

#: ArtifactDetails.failureReason is at most 2048 characters (ErrorMessage).
_MAX_REASON = 2048


class PostStreamRunner:
    """The post-stream actions of the sessions in ``sessions`` (the backend's own
    dict), their artifacts written to ``buckets``.

    ``rebuild`` gives a session's scenario from its spec (any thread), ``save``
    saves a record's row, ``trim`` drops the sessions past the retention, and
    ``clock`` gives epoch seconds. ``delay`` is the seconds the actions stay
    IN_PROGRESS; ``state_dir`` is named when some are left at shutdown.
    :attr:`closed` is set by the backend's ``close``.
    """

    def __init__(
        self,
        *,
        sessions: dict[SessionKey, SessionRecord],
        buckets: Buckets,
        rebuild: Callable[[Mapping[str, Any]], ScenarioSource],
        save: Callable[[SessionRecord], None],
        trim: Callable[[], None],
        clock: Callable[[], float],
        delay: float,
        state_dir: Path,
    ) -> None:
        self.sessions = sessions
        self.buckets = buckets
        self._rebuild = rebuild
        self._save = save
        self._trim = trim
        self.clock = clock
        self.post_stream_delay = delay
        self.state_dir = state_dir
        # The artifact jobs' thread, for buckets on disk. Their work is Python
        # under the GIL (reading the journal, building the notes), so more
        # threads run no more of it at once; what they did was take the GIL
        # from the event loop more often (asyncio's default pool has six on two
        # cores): one thread made bulk ingest 3% cheaper. Jobs that wait on a
        # network (S3) keep asyncio's pool.
        self._artifact_thread: concurrent.futures.ThreadPoolExecutor | None = (
            concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="medscribe-artifacts")
            if isinstance(buckets, DiskBuckets)
            else None
        )
        #: The tasks waiting to run a session's actions, by session.
        self.tasks: dict[SessionKey, asyncio.Task[None]] = {}
        # Artifact jobs of sessions a reset forgot, by their record's seq, until they run.
        self._detached: dict[int, _ArtifactJob] = {}
        # The threads uploading those to S3 (and their session ids), by the same
        # seq, until they end.
        self._uploading: dict[int, tuple[threading.Thread, str]] = {}
        self.closed = False

    def start(self, record: SessionRecord) -> None:
        """Start ``record``'s actions (its session completed): its artifacts IN_PROGRESS,
        written :attr:`post_stream_delay` seconds later."""
        assert record.configuration is not None
        settings = record.configuration["postStreamActionSettings"]
        locations = artifact_locations(settings["outputS3Uri"], **record.key._asdict())
        results: dict[str, Any] = {
            name: {"status": "IN_PROGRESS", "outputLocation": s3_uri(locations[name])}
            for name in ARTIFACT_NAMES
        }
        record.post_stream = {"startedAt": self.clock(), "results": results}
        coding = settings.get("medicalCodeGenerationSettings") or {}
        if coding.get("enabled"):
            record.post_stream["medicalCodes"] = {
                "status": "SKIPPED",
                "failureReason": "the emulator does not generate medical codes",
            }
        self.schedule(record)

    def schedule(self, record: SessionRecord) -> None:
        """Run ``record``'s actions, started at ``startedAt``, when their delay is over."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a direct caller): Backend.start() picks it up later
            return
        assert record.post_stream is not None
        elapsed = self.clock() - record.post_stream["startedAt"]
        delay = min(max(self.post_stream_delay - elapsed, 0.0), self.post_stream_delay)
        key = record.key
        task = loop.create_task(self._finish_post_stream(key, delay))
        self.tasks[key] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self.tasks.get(key) is done:
                del self.tasks[key]
                if not self.closed:
                    self._trim()  # it was kept over the retention for its artifacts

        task.add_done_callback(forget)

    def resume(self) -> None:
        """Schedule the actions a previous run left IN_PROGRESS (in the loop)."""
        pending = [record for record in self.sessions.values() if post_stream_pending(record)]
        for record in pending:
            self.schedule(record)
        if pending:
            log.info(
                "resuming the post-stream actions of %d session(s) the last run left in progress",
                len(pending),
            )

    def write_detached(self, record: SessionRecord) -> None:
        """Write the artifacts of ``record``, a session no longer kept, in the
        artifacts' thread; then remove its journal. The record is not updated."""
        journal = record.journal
        assert journal is not None
        journal.flush()
        # Moved aside first (in the writer, after its pending writes): a new session
        # with the same ids journals in the same folder, and the job must neither
        # read that session's entries nor remove them with its own.
        aside = Journal(
            f"{journal.directory}{FORGOTTEN}{record.seq}", audio_suffix=journal.audio_suffix
        )
        run_in_writer(functools.partial(_move_aside, journal.directory, aside.directory))
        job = _ArtifactJob(record, buckets=self.buckets, rebuild=self._rebuild)
        job.journal = aside
        # By the record's own number: the same ids may be forgotten twice before
        # the thread reaches the first (a suite that reuses an id and resets).
        seq = record.seq
        self._detached[seq] = job
        if self._artifact_thread is not None and not self.closed:
            self._artifact_thread.submit(self._run_detached, seq)
        else:
            upload = threading.Thread(
                target=self._run_detached, args=(seq,), name="medscribe-s3", daemon=True
            )
            self._uploading[seq] = (upload, record.key.session_id)
            upload.start()

    def _run_detached(self, seq: int) -> None:
        job = self._detached.pop(seq, None)
        if job is None:
            return  # run already (at shutdown)
        try:
            results = _run_artifact_job(job)
            log.info(
                "session %s post-stream actions (after a reset forgot it): %s",
                job.key.session_id,
                describe_results(results),
            )
        finally:
            job.journal.remove()
            self._uploading.pop(seq, None)

    def _finish_now(self, budget: float) -> None:
        """Run waiting post-stream actions in this thread until ``budget`` seconds pass.

        Only to the disk stand-in: an upload can take any time, and a hung S3
        endpoint would hold shutdown for ever; those complete at the next start.
        """
        pending = [
            record
            for record in self.sessions.values()
            if post_stream_pending(record) and record.configuration is not None
        ]
        if self._artifact_thread is None:  # artifacts go to S3
            budget = 0.0
        deadline = time.monotonic() + budget
        done = 0
        for record in pending:
            if time.monotonic() >= deadline:
                break
            assert record.post_stream is not None and record.journal is not None
            job = _ArtifactJob(record, buckets=self.buckets, rebuild=self._rebuild)
            self._done(record, _run_artifact_job(job), job.scripted_failures)
            done += 1
        if len(pending) > done:
            log.info(
                "%d session(s) left their post-stream actions in progress; they complete at the "
                "next start on %s",
                len(pending) - done,
                self.state_dir,
            )

    async def _finish_post_stream(self, key: SessionKey, delay: float) -> None:
        # Named so: benchmarks/instructions.py waits for the tasks whose coroutine's
        # name says post_stream.
        await asyncio.sleep(delay)
        record = self.sessions.get(key)
        if (
            self.closed  # its thread is gone; the next start runs it
            or record is None
            or record.post_stream is None
            or record.configuration is None
        ):
            return
        assert record.journal is not None
        record.journal.flush()
        job = _ArtifactJob(record, buckets=self.buckets, rebuild=self._rebuild)
        if self._artifact_thread is None:
            # An S3 upload: in a thread of its own that shutdown does not wait for
            # (asyncio's pool is joined, and a hung endpoint held SIGTERM for
            # minutes); one cut off completes at the next start.
            results = await _in_daemon_thread(_run_artifact_job, job)
        else:
            loop = asyncio.get_running_loop()
            results = await loop.run_in_executor(self._artifact_thread, _run_artifact_job, job)
        if self.sessions.get(key) is not record:
            return  # dropped meanwhile
        self._done(record, results, job.scripted_failures)

    def _done(
        self,
        record: SessionRecord,
        results: dict[str, Any],
        scripted: frozenset[str],
    ) -> None:
        """Record, save and log the artifacts' results of ``record``'s actions.

        One line: info when all completed, a warning quoting each failed artifact's
        failureReason otherwise (else it is seen only through Get or the admin API).
        """
        assert record.post_stream is not None
        record.post_stream["results"] = results
        self._save(record)
        # A failure the scenario scripts is what the test asked for: info, as success.
        failed = any(r["status"] == "FAILED" and n not in scripted for n, r in results.items())
        log.log(
            logging.WARNING if failed else logging.INFO,
            "session %s post-stream actions: %s",
            record.key.session_id,
            describe_results(results),
        )

    def stop(self) -> None:
        """Cancel the waiting tasks and stop the artifacts' thread (at shutdown)."""
        for task in list(self.tasks.values()):
            task.cancel()
        if self._artifact_thread is not None:
            # The job under way finishes (its results are dropped with its
            # task, and it runs again in finish_waiting or at the next start);
            # none starts.
            self._artifact_thread.shutdown(wait=True, cancel_futures=True)

    def finish_waiting(self, finish_within: float) -> None:
        """Run the actions still waiting, in this thread, for up to
        ``finish_within`` seconds (after :meth:`stop`); log those left."""
        started = time.monotonic()
        if self._artifact_thread is not None:  # on disk: each takes milliseconds
            for seq in list(self._detached):  # reset's, that the thread did not reach
                self._run_detached(seq)
        # Uploads of sessions a reset forgot: no row is left to resume them from,
        # so they get the budget, and what is left is said to be lost.
        for upload, _ in list(self._uploading.values()):
            upload.join(max(0.0, finish_within - (time.monotonic() - started)))
        for upload, session_id in list(self._uploading.values()):
            if upload.is_alive():
                log.warning(
                    "shutdown cut off the artifact uploads of session %s, which a reset had "
                    "forgotten: they are lost",
                    session_id,
                )
        self._finish_now(max(0.0, finish_within - (time.monotonic() - started)))


def post_stream_pending(record: SessionRecord) -> bool:
    """Whether ``record``'s post-stream actions have artifacts still to write."""
    results = (record.post_stream or {}).get("results") or {}
    return any(r.get("status") == "IN_PROGRESS" for r in results.values())


def _in_daemon_thread(function: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
    """Run ``function(*args)`` in a daemon thread; return a future of its result in
    the running loop. Unlike ``asyncio.to_thread``, the process does not wait for
    it to exit."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        try:
            result, error = function(*args), None
        except BaseException as exc:  # handed to the awaiting task
            result, error = None, exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop closed meanwhile (shutdown)
            pass

    threading.Thread(target=run, name="medscribe-s3", daemon=True).start()
    return future


def _move_aside(directory: Path, aside: Path) -> None:
    try:
        os.replace(directory, aside)
    except FileNotFoundError:  # never written: the job finds an empty journal
        pass


def _run_artifact_job(job: _ArtifactJob) -> dict[str, dict[str, str]]:
    """Run ``job`` (any thread); a bug of ours fails every artifact, saying so."""
    try:
        return job.run()
    except Exception:
        log.exception("session %s: post-stream actions failed", job.key.session_id)
        reason = "the emulator hit an internal error generating this artifact; see its log"
        return {name: {"status": "FAILED", "failureReason": reason} for name in ARTIFACT_NAMES}


#: An artifact's bytes: compact UTF-8 JSON, as the service writes machine output.
#: Indented JSON took Python 3.12's pure-Python encoder (the C one has no
#: indent): 40% of a post-stream job, which holds the GIL in a worker thread
#: while the event loop serves the other sessions.
_artifact_json = compact_encoder(ensure_ascii=False)


class _ArtifactJob:
    """Everything the worker thread needs, copied so the record may change meanwhile."""

    def __init__(
        self,
        record: SessionRecord,
        *,
        buckets: Buckets,
        rebuild: Callable[[Mapping[str, Any]], ScenarioSource],
    ) -> None:
        assert record.configuration is not None and record.journal is not None
        self.key = record.key
        self.language_code = record.language_code
        self.configuration = record.configuration
        self.scenario = record.scenario
        self.journal = record.journal
        #: Final results the session sent: its journal must hold as many.
        self.finals_sent = record.stats.finals_sent
        self.buckets = buckets
        self.rebuild = rebuild
        #: The artifacts the scenario scripts as FAILED (set by :meth:`run`).
        self.scripted_failures: frozenset[str] = frozenset()

    def run(self) -> dict[str, dict[str, str]]:
        """Build and write the three artifacts; return their ArtifactDetails."""
        key = self.key
        script = None
        if self.scenario is not None and self.scenario.get("kind") == "script":
            built = self.rebuild(self.scenario)
            script = getattr(built, "post_stream", None)
        roles = {
            f"ch_{d['channelId']}": d["participantRole"]
            for d in self.configuration.get("channelDefinitions") or ()
        }
        self.journal.wait_written()  # the loop flushed it before handing it over
        # Not the transcript of a stream lost in a crash: the session rolled back over it.
        held = 0

        def counted(entries: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
            nonlocal held
            for entry in entries:
                held += _is_final(entry)
                yield entry

        entries = self.journal.iter_kept_entries(entry_type="transcriptEvent")
        lines = final_lines(counted(entries), roles=roles)
        # Built from a journal that lost results, an artifact would look whole
        # and leave out what the client was sent.
        damage = journal_damage(
            self.journal, what="final results", held=held, expected=self.finals_sent
        )
        builders: dict[str, Callable[[], dict[str, Any]]] = {
            "transcriptResult": lambda: transcript_document(
                ids={
                    "SessionId": key.session_id,
                    "DomainId": key.domain_id,
                    "SubscriptionId": key.subscription_id,
                },
                language_code=self.language_code,
                lines=lines,
            ),
            "noteResult": lambda: clinical_document(
                configuration=self.configuration,
                lines=lines,
                script=script,
                session_id=key.session_id,
            ),
            "afterVisitSummaryResult": lambda: after_visit_summary_document(
                lines=lines, script=script, session_id=key.session_id
            ),
        }
        locations = artifact_locations(
            self.configuration["postStreamActionSettings"]["outputS3Uri"], **key._asdict()
        )
        results: dict[str, dict[str, str]] = {}
        for name in ARTIFACT_NAMES:
            reason = script.failure_of(name) if script is not None else None
            if reason is not None:
                results[name] = {"status": "FAILED", "failureReason": reason}
                self.scripted_failures |= {name}
                continue
            if damage is not None:
                results[name] = {"status": "FAILED", "failureReason": damage[:_MAX_REASON]}
                continue
            location = locations[name]
            try:
                body = _artifact_json(builders[name]()).encode()
                self.buckets.put(location[0], location[1], body)
            except Exception as error:  # the bucket's failure is the artifact's
                message = f"could not write {s3_uri(location)}: {error}"
                results[name] = {"status": "FAILED", "failureReason": message[:_MAX_REASON]}
                continue
            results[name] = {"status": "COMPLETED", "outputLocation": s3_uri(location)}
        return results


def _is_final(entry: Mapping[str, Any]) -> bool:
    """Whether a journal entry is a final result the session sent."""
    segment = entry.get("transcriptSegment") or {}
    return entry.get("direction") == "out" and segment.get("isPartial", True) is False
