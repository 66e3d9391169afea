"""A journal write that meets a shortage of file descriptors is tried again, briefly.

Every batch opens its files (a live session holds no descriptor), so a burst of
connections under a low ``ulimit -n`` made the writes fail with EMFILE: the
batch was dropped, and every artifact of sessions served correctly FAILED on
the journal's missing results, though descriptors were free again a second
later. Such a shortage (EMFILE, ENFILE, ENOMEM) is now waited out for up to
:data:`~emulator.journal.SHORTAGE_RETRY` seconds from its start, logged once; a
lasting one, and a full or read-only disk, drop the batch as before.
"""

from __future__ import annotations

import errno
import logging
import os

import pytest

from emulator import journal as journal_module
from emulator.journal import Journal


@pytest.fixture(autouse=True)
def fresh_shortage(monkeypatch):
    """No shortage an earlier test left (they are waited out across batches)."""
    monkeypatch.setattr(journal_module, "_SHORTAGE_STATE", journal_module._Shortage())


@pytest.fixture
def pauses(monkeypatch) -> list[float]:
    """The writer's pauses in a shortage, in order, as asked for (counted, not timed:
    a loaded machine stretches them); one cut short by a waiting loop is negative."""
    asked: list[float] = []
    pause = journal_module._Shortage.pause

    def counted(seconds: float) -> bool:
        cut_short = pause(seconds)
        asked.append(-seconds if cut_short else seconds)
        return cut_short

    monkeypatch.setattr(journal_module._Shortage, "pause", staticmethod(counted))
    return asked


class Failing:
    """The journal's appends to a file whose name ends with ``on`` fail with
    ``code`` for the next ``left`` of them (as ``os.open`` fails: naming the file);
    ``written`` lists the files of the appends that went through."""

    def __init__(self, monkeypatch, code: int, left: float, *, on: str = "") -> None:
        self.code, self.left, self.on = code, left, on
        self.written: list[str] = []
        self._append = journal_module._append
        monkeypatch.setattr(journal_module, "_append", self.append)

    def append(self, path: str, buffers: list[bytes]) -> None:
        if path.endswith(self.on) and self.left > 0:
            self.left -= 1
            raise OSError(self.code, os.strerror(self.code), path)
        self._append(path, buffers)
        self.written.append(os.path.basename(path))


def _one_batch(journal: Journal, n: int = 0) -> None:
    journal.record({"direction": "in", "type": "binaryAudioEvent", "n": n})
    journal.audio(b"\x01\x02" * 10)
    journal.flush()


def _written(journal: Journal) -> None:
    """Wait for the journal's writes as the artifacts' thread does (not as the event
    loop does, see the last test)."""
    journal.flush()
    Journal.wait_written()


def _two_batches(tmp_path, caplog) -> Journal:
    """A journal of one stream that wrote two batches, its warnings in ``caplog``."""
    journal = Journal(tmp_path / "j", audio_suffix="pcm")
    journal.start_stream(1)
    with caplog.at_level(logging.WARNING, logger="medscribe.journal"):
        _one_batch(journal, 0)
        _one_batch(journal, 1)
        _written(journal)
    return journal


def _audio(journal: Journal) -> bytes:
    return (journal.directory / "audio-1-1.pcm").read_bytes()


@pytest.mark.parametrize("on", ["events.jsonl", ".pcm"])
def test_a_write_short_of_descriptors_a_few_times_ends_with_everything_written_once(
    tmp_path, monkeypatch, caplog, on
):
    """The events' or the audio's file fails to open three times: both end whole,
    neither written twice (the steps done before the failed one are not redone),
    and the shortage is logged once, not the journal as failed."""
    failing = Failing(monkeypatch, errno.EMFILE, 3, on=on)
    journal = _two_batches(tmp_path, caplog)
    assert [e["n"] for e in journal.entries()] == [0, 1]
    assert _audio(journal) == b"\x01\x02" * 20
    assert failing.written == ["events.jsonl", "audio-1-1.pcm"] * 2
    assert journal.error is None
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1, messages
    assert messages[0].startswith("journal writes failed with EMFILE ([Errno 24] ")
    assert "they are tried again for up to 5 s" in messages[0]


def test_a_lasting_shortage_drops_the_batch_as_before_within_the_budget(
    tmp_path, monkeypatch, caplog, pauses
):
    """Past its budget (counted from its start, across batches) the batch is dropped
    and the journal's error set, logged once; later batches are not waited for,
    and are written once descriptors are back."""
    monkeypatch.setattr(journal_module, "SHORTAGE_RETRY", 0.3)
    failing = Failing(monkeypatch, errno.EMFILE, float("inf"))
    journal = Journal(tmp_path / "j", audio_suffix="pcm")
    journal.start_stream(1)
    with caplog.at_level(logging.WARNING, logger="medscribe.journal"):
        _one_batch(journal, 0)
        _written(journal)
        first = list(pauses)
        _one_batch(journal, 1)  # the shortage goes on: dropped at once
        _written(journal)
        failing.left = 0  # descriptors are back
        _one_batch(journal, 2)
        _written(journal)
    # Doubling pauses from 10 ms, the last cut to what was left of the budget.
    assert first[:4] == [0.01, 0.02, 0.04, 0.08], first
    assert 0 < sum(first) <= 0.3 + 1e-9, first
    assert pauses == first  # none for the later batches
    events = tmp_path / "j" / "events.jsonl"
    assert journal.error == f"[Errno 24] {os.strerror(errno.EMFILE)}: '{events}'"
    assert [e["n"] for e in journal.entries()] == [2]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert messages[0].startswith("journal writes failed with EMFILE ([Errno 24] ")
    assert messages[1] == f"cannot write the journal in {tmp_path / 'j'}: {journal.error}"


def test_a_full_disk_is_not_waited_for(tmp_path, monkeypatch, caplog, pauses):
    """ENOSPC is a disk's, not a moment's: logged once, the batch dropped at once."""
    Failing(monkeypatch, errno.ENOSPC, 1)
    journal = _two_batches(tmp_path, caplog)
    assert pauses == []
    assert journal.error is not None and "No space left on device" in journal.error
    assert [e["n"] for e in journal.entries()] == [1]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and messages[0].startswith("cannot write the journal in ")


def test_a_shortage_is_not_waited_out_while_the_event_loop_waits_for_the_writer(
    tmp_path, monkeypatch, caplog, pauses
):
    """An admin read of a session's events syncs its journal in the event loop:
    the writer's pauses held the whole server for the budget (5 s), and a loop
    that waits closes no connection, so the shortage could not end. The batch
    is now dropped, as for a failing disk, once the loop waits."""
    monkeypatch.setattr(journal_module, "SHORTAGE_RETRY", 60.0)
    Failing(monkeypatch, errno.EMFILE, float("inf"))
    journal = Journal(tmp_path / "j", audio_suffix="pcm")
    journal.start_stream(1)
    with caplog.at_level(logging.WARNING, logger="medscribe.journal"):
        _one_batch(journal, 0)
        journal.sync()  # as the event loop does
    assert pauses and pauses[-1] < 0, pauses  # the last pause was cut short
    assert sum(abs(p) for p in pauses) < 1.0, pauses  # not the minute's budget
    assert journal.error is not None and "Too many open files" in journal.error
    assert not journal_module._WRITER.loop_blocked.is_set()
