"""The session table, and how the backend batches its writes."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import sqlite3
import time

import pytest

from emulator import backend as backend_module
from emulator import persistence
from emulator.backend import Backend
from emulator.persistence import SAVE_DELAY
from emulator.record import ScenarioText
from emulator.rules import parse_rule
from emulator.scenario import parse_scenario
from emulator.store import DATABASE_NAME, SessionStore, StoredSession, script_digest
from emulator.validation import parse_configuration_event, validate_stream_headers

from .support import new_session_id
from .test_stream_wire import CONFIG, headers


def _row(session_id: str, status: str = "IN_PROGRESS") -> StoredSession:
    return StoredSession(
        domain_id="d",
        subscription_id="s",
        session_id=session_id,
        seq=1,
        status=status,
        created_at=1.5,
        data={"n": 1},
    )


def test_save_many_writes_every_row_and_replaces_existing_ones(tmp_path):
    store = SessionStore(tmp_path / DATABASE_NAME)
    store.save_many([_row("a"), _row("b")])
    store.save_many([_row("a", status="COMPLETED")])
    store.save_many([])
    rows = {row.session_id: row.status for row in store.load()}
    store.close()
    assert rows == {"a": "COMPLETED", "b": "IN_PROGRESS"}


def test_a_row_of_unreadable_json_is_dropped_saying_so(tmp_path, caplog):
    """A row whose data is not JSON, or not an object, was dropped without a word,
    where a row of JSON missing members is logged."""
    store = SessionStore(tmp_path / DATABASE_NAME)
    store.save_many([_row("a"), _row("b"), _row("c")])
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        db.execute("UPDATE scribe_sessions SET data = '{not json' WHERE session_id = 'a'")
        db.execute("UPDATE scribe_sessions SET data = '[1, 2]' WHERE session_id = 'b'")
    with caplog.at_level("WARNING", logger="medscribe.store"):
        rows = [row.session_id for row in store.load()]
    store.close()
    assert rows == ["c"]
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["session a", "session b"]
    assert "stored record unreadable (Expecting property name" in caplog.records[0].getMessage()
    assert "(not a JSON object): it is not served" in caplog.records[1].getMessage()
    assert store.unreadable == [("d", "s", "a"), ("d", "s", "b")]


SPEC_TEXT = '{"kind":"script","name":"big","script":{"segments":[]}}'
OTHER_TEXT = '{"kind":"script","name":"other","script":{"segments":[]}}'


def _naming(session_id: str, text: str = SPEC_TEXT) -> StoredSession:
    """A row naming the spec of JSON ``text`` (stored with it), as the emulator writes one."""
    digest = script_digest(text)
    name = json.loads(text)["name"]
    return StoredSession(
        domain_id="d",
        subscription_id="s",
        session_id=session_id,
        seq=1,
        status="PAUSED",
        created_at=1.5,
        data={"scenario": {"kind": "script", "name": name, "ref": digest}},
        script=(digest, text),
    )


def _scripts(tmp_path) -> dict[str, str]:
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        return dict(db.execute("SELECT digest, text FROM scribe_scripts").fetchall())


def test_a_spec_many_rows_name_is_stored_once_and_read_once_for_them_all(tmp_path):
    store = SessionStore(tmp_path / DATABASE_NAME)
    store.save_many([_naming("a"), _naming("b"), _row("c")])
    store.save_many([_naming("a")])  # saved again: the spec is not
    assert _scripts(tmp_path) == {script_digest(SPEC_TEXT): SPEC_TEXT}
    a, b, c = sorted(store.load(), key=lambda row: row.session_id)
    store.close()
    assert a.data["scenario"] == json.loads(SPEC_TEXT)
    assert a.data["scenario"] is b.data["scenario"]
    assert a.script == b.script == (script_digest(SPEC_TEXT), SPEC_TEXT)
    assert c.script is None and c.data == {"n": 1}


@pytest.mark.parametrize("harm", ["missing from", "damaged in"])
def test_a_row_naming_a_spec_missing_or_damaged_is_read_once_a_new_row_stores_it_again(
    tmp_path, caplog, harm
):
    """A damaged text (its SHA-256 no longer its digest) had been kept, and every
    later session of the script named it: each was unreadable at the next start."""
    digest = script_digest(SPEC_TEXT)
    store = SessionStore(tmp_path / DATABASE_NAME)
    store.save_many([_naming("a"), _naming("b", OTHER_TEXT)])
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        if harm == "missing from":
            db.execute("DELETE FROM scribe_scripts WHERE digest = ?", (digest,))
        else:
            db.execute(
                "UPDATE scribe_scripts SET text = ? WHERE digest = ?", (SPEC_TEXT[:20], digest)
            )
    with caplog.at_level("WARNING", logger="medscribe.store"):
        rows = [row.session_id for row in store.load()]
    assert rows == ["b"] and store.unreadable == [("d", "s", "a")]
    assert (
        f"(its scenario's script {digest} is {harm} scribe_scripts; the next session of that "
        "scenario stores it again, and this one is read at the next start)"
    ) in caplog.text
    store.save_many([_naming("c")])  # a new session of the script
    assert sorted(row.session_id for row in store.load()) == ["a", "b", "c"]
    store.close()


def test_specs_no_row_names_are_deleted_at_load_unless_a_row_is_unreadable(tmp_path):
    """The sessions that named a spec were dropped (retention, reset): the next
    start deletes it. A row whose JSON cannot be read may name one: then none is."""
    store = SessionStore(tmp_path / DATABASE_NAME)
    store.save_many([_naming("a"), _naming("b", OTHER_TEXT), _row("c")])
    store.save_many([], deleted=[("d", "s", "a")])
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        db.execute("UPDATE scribe_sessions SET data = '{not json' WHERE session_id = 'c'")
    store.load()
    assert set(_scripts(tmp_path)) == {script_digest(SPEC_TEXT), script_digest(OTHER_TEXT)}
    store.save_many([], deleted=[("d", "s", "c")])
    store.load()
    assert set(_scripts(tmp_path)) == {script_digest(OTHER_TEXT)}
    store.save_many([_naming("e")])  # a spec deleted is stored again when named
    assert set(_scripts(tmp_path)) == {script_digest(SPEC_TEXT), script_digest(OTHER_TEXT)}
    store.close()


def test_rows_of_earlier_releases_holding_their_spec_are_rewritten_to_name_it(tmp_path):
    """Else an upgraded state directory kept a copy of its script in every row, and
    in memory after each restart, however often the sessions were saved again."""
    spec = json.loads(SPEC_TEXT)
    store = SessionStore(tmp_path / DATABASE_NAME)
    store.save_many(
        [dataclasses.replace(_row(name), data={"scenario": spec, "n": 2}) for name in "ab"]
    )
    a, b = sorted(store.load(), key=lambda row: row.session_id)
    assert a.data == {"scenario": spec, "n": 2} and a.data["scenario"] is b.data["scenario"]
    assert a.script == b.script == (script_digest(SPEC_TEXT), SPEC_TEXT)
    assert _scripts(tmp_path) == {script_digest(SPEC_TEXT): SPEC_TEXT}
    named = {"kind": "script", "name": "big", "ref": script_digest(SPEC_TEXT)}
    assert _stored_data(tmp_path) == {
        "a": {"scenario": named, "n": 2},
        "b": {"scenario": named, "n": 2},
    }
    again = SessionStore(tmp_path / DATABASE_NAME)
    assert [row.data for row in again.load()] == [{"scenario": spec, "n": 2}] * 2
    again.close()
    store.close()


def test_the_database_is_compacted_once_earlier_rows_no_longer_hold_their_script(
    tmp_path, monkeypatch, caplog
):
    from emulator import store as store_module

    monkeypatch.setattr(store_module, "VACUUM_AFTER", 1_000_000)
    big = {"kind": "script", "name": "big", "script": {"content": "x" * 200_000}}
    store = SessionStore(tmp_path / DATABASE_NAME)
    store.save_many([dataclasses.replace(_row(str(n)), data={"scenario": big}) for n in range(20)])
    store.close()
    database = tmp_path / DATABASE_NAME
    before = database.stat().st_size
    with caplog.at_level("INFO", logger="medscribe.store"):
        store = SessionStore(database)
        assert len(store.load()) == 20
        store.close()
    assert database.stat().st_size < before / 5, (before, database.stat().st_size)
    assert "20 session row(s) of an earlier release rewritten to name their scenario's " in (
        caplog.text
    )


def test_save_many_deletes_first_then_writes_in_one_transaction(tmp_path):
    store = SessionStore(tmp_path / DATABASE_NAME)
    store.save_many([_row("a"), _row("b"), _row("c")])
    # "b" is deleted and written again: it keeps the new row; "c" goes.
    store.save_many([_row("b", status="COMPLETED")], deleted=[("d", "s", "b"), ("d", "s", "c")])
    store.save_many([], deleted=[("d", "s", "a"), ("d", "s", "never-stored")])
    rows = {row.session_id: row.status for row in store.load()}
    store.close()
    assert rows == {"b": "COMPLETED"}


def _stored(tmp_path) -> dict[str, str]:
    # What another reader of the file sees (WAL: readers never block the writer).
    db = sqlite3.connect(tmp_path / DATABASE_NAME)
    try:
        return dict(db.execute("SELECT session_id, status FROM scribe_sessions").fetchall())
    finally:
        db.close()


def _request(session_id: str):
    return validate_stream_headers(
        [(name.encode(), value.encode()) for name, value in headers(session_id).items()]
    )


async def test_changes_within_the_save_delay_are_written_together(tmp_path):
    backend = Backend(scenarios={}, state_dir=tmp_path)
    try:
        first, second = new_session_id(), new_session_id()
        backend.open_stream(_request(first), request_id="r1", rule=None)
        backend.open_stream(_request(second), request_id="r2", rule=None)
        assert _stored(tmp_path) == {}  # not yet: one transaction for both, shortly
        await asyncio.sleep(SAVE_DELAY * 4)
        assert _stored(tmp_path) == {first: "IN_PROGRESS", second: "IN_PROGRESS"}
    finally:
        backend.close()


async def test_the_delayed_writes_run_in_the_writer_thread_and_a_flush_waits_for_them(
    tmp_path, monkeypatch
):
    import threading

    backend = Backend(scenarios={}, state_dir=tmp_path)
    writes: list[tuple[str, list[str]]] = []
    save_many = backend.store.save_many

    def recording(rows, *, deleted=(), unnamed_scripts=()):
        rows = list(rows)
        writes.append((threading.current_thread().name, [row.session_id for row in rows]))
        save_many(rows, deleted=deleted, unnamed_scripts=unnamed_scripts)

    monkeypatch.setattr(backend.store, "save_many", recording)
    try:
        first, second = new_session_id(), new_session_id()
        backend.open_stream(_request(first), request_id="r1", rule=None)
        await asyncio.sleep(SAVE_DELAY * 4)
        assert writes == [("medscribe-journal", [first])]  # off the event loop
        backend.open_stream(_request(second), request_id="r2", rule=None)
        backend.flush_saves()  # at once, in this thread, and on disk when it returns
        assert writes[1] == (threading.current_thread().name, [second])
        assert _stored(tmp_path) == {first: "IN_PROGRESS", second: "IN_PROGRESS"}
    finally:
        backend.close()


async def test_a_failed_write_is_logged_once_and_its_rows_are_written_again(
    tmp_path, monkeypatch, caplog
):
    """Rows a failed write held (a full disk) were dropped: a session completed while
    the disk was full came back after a restart as it was before, or not at all, though
    the disk had room again by then. They are written again, as the records are then."""
    monkeypatch.setattr(persistence, "SAVE_RETRY_DELAY", 0.2)
    backend = Backend(scenarios={}, state_dir=tmp_path)
    save_many = backend.store.save_many
    failures = [sqlite3.OperationalError("database or disk is full")] * 2

    def flaky(rows, *, deleted=(), unnamed_scripts=()):
        if failures:
            raise failures.pop()
        save_many(rows, deleted=deleted, unnamed_scripts=unnamed_scripts)

    monkeypatch.setattr(backend.store, "save_many", flaky)
    try:
        first, second = new_session_id(), new_session_id()
        backend.open_stream(_request(first), request_id="r1", rule=None)
        await asyncio.sleep(SAVE_DELAY * 4)
        assert caplog.text.count("cannot save 1 session rows") == 1
        assert "database or disk is full; retried every 0.2 s" in caplog.text
        assert _stored(tmp_path) == {}
        backend.open_stream(_request(second), request_id="r2", rule=None)
        await asyncio.sleep(SAVE_DELAY * 4)  # fails again: not logged again
        assert caplog.text.count("cannot save") == 1 and _stored(tmp_path) == {}
        await asyncio.sleep(0.5)
        assert _stored(tmp_path) == {first: "IN_PROGRESS", second: "IN_PROGRESS"}
        assert "session rows saved again" in caplog.text
    finally:
        backend.close()


async def test_rows_that_cannot_be_written_at_shutdown_are_logged_not_raised(
    tmp_path, monkeypatch, caplog
):
    """SIGTERM with the disk full ended in a traceback and exit status 1."""
    backend = Backend(scenarios={}, state_dir=tmp_path)

    def full(rows, *, deleted=(), unnamed_scripts=()):
        raise sqlite3.OperationalError("database or disk is full")

    backend.open_stream(_request(new_session_id()), request_id="r1", rule=None)
    monkeypatch.setattr(backend.store, "save_many", full)
    backend.close()
    assert "cannot save 1 session rows" in caplog.text
    assert "their last changes are lost" in caplog.text


async def test_rows_whose_write_fails_while_closing_are_logged_as_lost(
    tmp_path, monkeypatch, caplog
):
    """A row handed to a busy writer just before SIGTERM, failing while close() waited
    for the writer: its retry came after close and returned, and nothing said it was
    lost (within a failing streak, nothing at all was logged)."""
    from emulator.journal import run_in_writer

    backend = Backend(scenarios={}, state_dir=tmp_path)

    def full(rows, *, deleted=(), unnamed_scripts=()):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(backend.store, "save_many", full)
    backend._saver._saves_failing = True  # within a failing streak
    run_in_writer(lambda: time.sleep(0.3))  # the writer is busy (bulk load)
    backend.open_stream(_request(new_session_id()), request_id="r1", rule=None)
    await asyncio.sleep(SAVE_DELAY * 3)  # the timer has handed the row to the writer
    backend.close()
    await asyncio.sleep(0.1)
    assert "cannot save 1 session rows" in caplog.text
    assert "at shutdown: database or disk is full; their last changes are lost" in caplog.text


async def test_closing_the_backend_writes_what_is_pending(tmp_path):
    backend = Backend(scenarios={}, state_dir=tmp_path)
    session_id = new_session_id()
    backend.open_stream(_request(session_id), request_id="r1", rule=None)
    backend.close()
    assert _stored(tmp_path) == {session_id: "IN_PROGRESS"}


async def test_a_session_dropped_before_its_write_is_not_written(tmp_path):
    backend = Backend(scenarios={}, state_dir=tmp_path, retention=1)
    try:
        old, new = new_session_id(), new_session_id()
        record = backend.open_stream(_request(old), request_id="r1", rule=None)
        backend.close_stream(record)
        backend.open_stream(_request(new), request_id="r2", rule=None)  # retention drops old
        backend.flush_saves()
        assert _stored(tmp_path) == {new: "IN_PROGRESS"}
    finally:
        backend.close()


async def test_a_dropped_sessions_row_goes_with_the_next_writes(tmp_path):
    """Retention drops rows in the transaction of the rows written next, not in
    one of their own; a session streamed again after its drop keeps its new row."""
    backend = Backend(scenarios={}, state_dir=tmp_path, retention=1)
    try:
        old, new = new_session_id(), new_session_id()
        backend.close_stream(backend.open_stream(_request(old), request_id="r1", rule=None))
        backend.flush_saves()
        assert set(_stored(tmp_path)) == {old}
        second = backend.open_stream(_request(new), request_id="r2", rule=None)  # drops old
        assert _ids(backend) == [new]
        assert set(_stored(tmp_path)) == {old}  # not yet: with the next writes
        await asyncio.sleep(SAVE_DELAY * 4)
        assert set(_stored(tmp_path)) == {new}
        backend.close_stream(second)
        again = backend.open_stream(_request(old), request_id="r3", rule=None)  # drops new
        backend.flush_saves()
        assert set(_stored(tmp_path)) == {old}
        assert _ids(backend) == [old] and backend.sessions[again.key] is again
    finally:
        backend.close()


async def test_sessions_the_retention_drops_are_said_at_most_once_a_minute(
    tmp_path, caplog, monkeypatch
):
    """On a shared emulator one client's volume drops another's sessions, whose Get
    then answers 404, and nothing said so. The first drop is said at once, later
    ones at the end of the minute (here a second), by a timer if
    nothing more is dropped, and what is left unsaid when the backend closes."""
    monkeypatch.setattr(backend_module, "RETENTION_SAID_EVERY", 1.0)
    backend = Backend(scenarios={}, state_dir=tmp_path, retention=1)

    def stream_one() -> None:
        request = _request(new_session_id())
        backend.close_stream(backend.open_stream(request, request_id="r", rule=None))

    def said() -> list[str]:
        return [
            r.getMessage().split(": ", 1)[1].split(" least")[0]
            for r in caplog.records
            if r.getMessage().startswith("--retention 1: ")
        ]

    try:
        with caplog.at_level(logging.INFO, logger="medscribe.sessions"):
            for _ in range(4):
                stream_one()
            assert said() == ["1"]  # the first drop; two more wait for the minute's end
            await asyncio.sleep(2.2)
            assert said() == ["1", "2"]  # said by the timer: nothing more was dropped
            stream_one()  # over a second after the last line: said at once
            stream_one()  # within it: left for the timer, or the close
    finally:
        with caplog.at_level(logging.INFO, logger="medscribe.sessions"):
            backend.close()
    assert said() == ["1", "2", "1", "1"]
    assert (
        caplog.records[-1]
        .getMessage()
        .endswith("(their Get, journal and audio are gone); said at most once a minute")
    )


def _ids(backend: Backend) -> list[str]:
    return [key.session_id for key in backend.sessions]


def _start(backend: Backend, session_id: str, request_id: str):
    """Open a stream and give it its live session, as the stream endpoint does."""
    request = _request(session_id)
    record = backend.open_stream(request, request_id=request_id, rule=None)
    backend.new_session(record, request, rule=None, send=lambda event: None)
    return record


def test_a_resumed_session_over_the_retention_is_not_dropped_by_its_own_stream(tmp_path):
    """Two sessions, both ended, over a retention of one: resuming the older one
    drops the other, never the session whose stream is opening."""
    backend = Backend(scenarios={}, state_dir=tmp_path, retention=1)
    try:
        older, newer = new_session_id(), new_session_id()
        first = _start(backend, older, "r1")
        second = _start(backend, newer, "r2")
        assert _ids(backend) == [older, newer]  # both streaming: nothing to drop
        backend.close_stream(first)
        backend.close_stream(second)
        resumed = _start(backend, older, "r3")
        assert _ids(backend) == [older]
        assert backend.sessions[resumed.key] is resumed
    finally:
        backend.close()


def test_sessions_streaming_over_the_retention_are_kept_until_their_streams_end(tmp_path):
    backend = Backend(scenarios={}, state_dir=tmp_path, retention=2)
    try:
        ids = [new_session_id() for _ in range(6)]
        records = [_start(backend, session_id, f"r{n}") for n, session_id in enumerate(ids[:5])]
        assert _ids(backend) == ids[:5]
        for record in records:
            backend.close_stream(record)
        _start(backend, ids[5], "r5")
        assert _ids(backend) == ids[4:]  # the oldest ended ones went
    finally:
        backend.close()


SCRIPT = {"segments": [{"begin": 0.1, "end": 0.9, "content": "Good morning.", "partials": 1}]}


def _stored_data(tmp_path) -> dict[str, dict]:
    db = sqlite3.connect(tmp_path / DATABASE_NAME)
    try:
        rows = db.execute("SELECT session_id, data FROM scribe_sessions").fetchall()
    finally:
        db.close()
    return {session_id: json.loads(data) for session_id, data in rows}


def test_sessions_of_one_scripted_scenario_store_its_script_once(tmp_path):
    """The script's spec is encoded once, stored once (a restart rebuilds it from
    there), and each row names it by its digest; the rows read back as the
    records' documents, the spec shared by their sessions."""
    scenario = parse_scenario(SCRIPT, name="greeting")
    backend = Backend(
        scenarios={"greeting": scenario}, state_dir=tmp_path, default_scenario="greeting"
    )
    try:
        records = []
        for n in range(2):
            record = _start(backend, new_session_id(), f"r{n}")
            configuration = parse_configuration_event(json.dumps(CONFIG).encode())
            assert backend.scenario_for(record, configuration, rule=None) is scenario
            records.append(record)
        first, second = (r.scenario_text for r in records)
        assert first is not None and second is not None
        assert first.text is second.text  # encoded once
        assert first.digest == hashlib.sha256(first.text.encode()).hexdigest()
        backend.flush_saves()
        stored = _stored_data(tmp_path)
        for record in records:
            assert stored[record.key.session_id] == {
                **record.to_data(),
                "scenario": {"kind": "script", "name": "greeting", "ref": first.digest},
            }
        db = sqlite3.connect(tmp_path / DATABASE_NAME)
        try:
            scripts = db.execute("SELECT digest, text FROM scribe_scripts").fetchall()
        finally:
            db.close()
        assert scripts == [(first.digest, first.text)]
        assert json.loads(first.text)["script"]["segments"][0]["content"] == "Good morning."
    finally:
        backend.close()
    again = Backend(scenarios={"greeting": scenario}, state_dir=tmp_path)
    try:
        loaded = [again.sessions[record.key] for record in records]
        assert loaded[0].scenario is loaded[1].scenario  # one object for both
        assert loaded[0].scenario == records[0].scenario
        assert again._rebuild(loaded[0].scenario) is again._rebuild(loaded[1].scenario)
    finally:
        again.close()


def test_a_script_no_kept_session_names_goes_with_the_last_session_dropped(tmp_path):
    """--retention bounded the rows, not the scripts: a test suite posting a rule
    with an inline scenario per test grew the database with every test."""
    scenarios = {
        name: parse_scenario({"segments": [{**SCRIPT["segments"][0], "content": name}]}, name=name)
        for name in ("first", "second")
    }
    backend = Backend(scenarios=scenarios, state_dir=tmp_path, retention=1)
    configuration = parse_configuration_event(json.dumps(CONFIG).encode())

    def session_of(name: str) -> None:
        record = _start(backend, new_session_id(), name)
        rule = parse_rule({"scenario": name}, scenarios=scenarios)
        backend.scenario_for(record, configuration, rule=rule)
        backend.close_stream(record)
        backend.flush_saves()

    def stored() -> list[str]:
        with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
            rows = db.execute("SELECT text FROM scribe_scripts").fetchall()
        return sorted(json.loads(text)["name"] for (text,) in rows)

    try:
        session_of("first")
        assert stored() == ["first"]
        session_of("second")  # drops the first session, the last naming "first"
        assert stored() == ["second"]
        session_of("second")  # drops a session of "second": another names it
        assert stored() == ["second"]
        session_of("first")
        assert stored() == ["first"]
    finally:
        backend.close()


def test_a_script_a_row_unread_names_is_kept_while_the_emulator_runs(tmp_path):
    store = SessionStore(tmp_path / DATABASE_NAME)
    store.save_many([_naming("a"), _naming("b", OTHER_TEXT)])
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        db.execute("DELETE FROM scribe_scripts WHERE digest = ?", (script_digest(OTHER_TEXT),))
    assert [row.session_id for row in store.load()] == ["a"]  # b names a missing script
    store.save_many([_naming("c", OTHER_TEXT)])  # stores it again
    store.save_many([], deleted=[("d", "s", "c")], unnamed_scripts=[script_digest(OTHER_TEXT)])
    store.save_many([], deleted=[("d", "s", "a")], unnamed_scripts=[script_digest(SPEC_TEXT)])
    assert list(_scripts(tmp_path)) == [script_digest(OTHER_TEXT)]  # b's, for the next start
    assert [row.session_id for row in store.load()] == ["b"]
    store.close()


def test_a_script_a_row_kept_for_another_release_names_outlives_the_others(tmp_path):
    """A row of a status this version does not know is kept for the release that
    wrote it: the script it names was deleted with the last session this version
    read, so that the row was lost at that release's next start."""
    scenarios = {"first": parse_scenario(SCRIPT, name="first")}
    backend = Backend(scenarios=scenarios, state_dir=tmp_path, retention=2)
    configuration = parse_configuration_event(json.dumps(CONFIG).encode())
    rule = parse_rule({"scenario": "first"}, scenarios=scenarios)
    kept = new_session_id()
    try:
        for session_id in (kept, new_session_id()):
            record = _start(backend, session_id, "r")
            backend.scenario_for(record, configuration, rule=rule)
            backend.close_stream(record)
        backend.flush_saves()
    finally:
        backend.close()
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        db.execute("UPDATE scribe_sessions SET status = 'ARCHIVED' WHERE session_id = ?", (kept,))
    again = Backend(scenarios=scenarios, state_dir=tmp_path, retention=1)
    try:
        record = _start(again, new_session_id(), "r")  # drops the one read, of "first"
        again.close_stream(record)
        again.flush_saves()
    finally:
        again.close()
    assert len(_scripts(tmp_path)) == 1


def test_with_a_row_unreadable_a_script_stored_again_is_kept_for_the_row_naming_it(tmp_path):
    store = SessionStore(tmp_path / DATABASE_NAME)
    store.save_many([_naming("r"), _row("bad")])
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        db.execute("DELETE FROM scribe_scripts")
        db.execute("UPDATE scribe_sessions SET data = '{not json' WHERE session_id = 'bad'")
    assert store.load() == []
    store.save_many([_naming("s")])  # stores the script again
    store.save_many([], deleted=[("d", "s", "s")], unnamed_scripts=[script_digest(SPEC_TEXT)])
    assert [row.session_id for row in store.load()] == ["r"]
    store.close()


def test_a_scripted_scenario_comes_back_from_its_own_spec_without_a_parse(tmp_path, monkeypatch):
    """A resumed stream and the post-stream job rebuild the session's scenario from
    its spec: the one this backend made gives the scenario itself back, while a
    spec read back from the store (another object, after a restart) is parsed."""
    scenario = parse_scenario(SCRIPT, name="greeting")
    backend = Backend(
        scenarios={"greeting": scenario}, state_dir=tmp_path, default_scenario="greeting"
    )
    parsed = []

    def counting_parse(*args, **kwargs):
        parsed.append(kwargs.get("name"))
        return parse_scenario(*args, **kwargs)

    try:
        record = _start(backend, new_session_id(), "r1")
        configuration = parse_configuration_event(json.dumps(CONFIG).encode())
        backend.scenario_for(record, configuration, rule=None)
        monkeypatch.setattr(backend_module, "parse_scenario", counting_parse)
        assert backend._rebuild(record.scenario) is scenario
        assert parsed == []
        stored = json.loads(json.dumps(record.scenario))
        rebuilt = backend._rebuild(stored)
        assert rebuilt == scenario and rebuilt is not scenario
        assert parsed == ["greeting"]
    finally:
        backend.close()


def test_a_scenario_text_for_another_scenario_is_not_spliced_in(tmp_path):
    backend = Backend(scenarios={}, state_dir=tmp_path)
    try:
        record = _start(backend, new_session_id(), "r1")
        record.scenario = {"kind": "script", "name": "now"}
        record.scenario_text = ScenarioText({"kind": "script", "name": "before"}, "{}", "d")
        assert json.loads(record.to_data_json()) == record.to_data()
        assert record.stored_script() is None
    finally:
        backend.close()


async def test_rows_whose_retry_comes_after_the_close_are_logged_as_lost(
    tmp_path, monkeypatch, caplog
):
    """A write that failed in the writer while the loop was busy, with close() run
    before the loop took the retry: the retry returned without a word."""
    backend = Backend(scenarios={}, state_dir=tmp_path)
    session_id = new_session_id()
    backend.open_stream(_request(session_id), request_id="r1", rule=None)
    backend.close()
    backend._saver._retry_saves([backend_module.SessionKey("d", "s", session_id)], [], [])
    assert "cannot save 1 session rows" in caplog.text
    assert "at shutdown; their last changes are lost" in caplog.text


async def test_a_running_emulator_says_its_retention_drops_through_its_stop(tmp_path, caplog):
    """Through the SDK: three sessions on an emulator keeping one. The first drop is
    said at once; the second, within the minute, when the emulator stops."""
    from emulator.sdk import make_client
    from emulator.server import Settings

    from .support import pcm_tone, run_session, running_emulator

    settings = Settings(
        host="127.0.0.1",
        port=0,
        h2c_port=0,
        state_dir=tmp_path,
        retention=1,
        post_stream_delay=0.0,  # a session with artifacts still to write is kept
    )
    with caplog.at_level(logging.INFO, logger="medscribe.sessions"):
        with running_emulator(settings) as run:
            async with await make_client(endpoint_url=run.endpoint_url, ca_file=run.ca_file) as c:
                for _ in range(3):
                    assert (
                        await run_session(c, new_session_id(), audio=pcm_tone(0.2))
                    ).error is None
                    await asyncio.sleep(0.5)  # its artifacts written: it may be dropped
            said = [r.getMessage() for r in caplog.records if "--retention 1:" in r.getMessage()]
            assert len(said) == 1 and said[0].startswith("--retention 1: 1 least recently used")
    said = [r.getMessage() for r in caplog.records if "--retention 1:" in r.getMessage()]
    assert [line.split(" least")[0] for line in said] == ["--retention 1: 1", "--retention 1: 1"]
