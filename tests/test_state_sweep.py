"""The state directory's journal folders: what the emulator removes there, and what it leaves.

At a start the backend removes the journals of sessions with no row and those a
reset moved aside. It removed every folder three levels under ``sessions/``,
following symlinks: a ``--state-dir`` holding a user's ``sessions/`` folder, or
a link planted in it, lost the user's files. It now removes only folders it
made (valid ids, no symlink at any level), and names what it left. A new
session's journal, which clears a folder left with its ids, refuses a folder
reached through a link, or another session's on a file system that folds case.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from emulator import journal as journal_module
from emulator.backend import Backend
from emulator.journal import Journal, remove_tree

from .support import DOMAIN_ID, SUBSCRIPTION_ID, new_session_id

# Links planted under ``sessions/``, named as valid ids: only an lstat tells them apart.
DOMAIN_LINK = "dom-planted00000000000"
SUBSCRIPTION_LINK = "sub-planted00000000000000"


def _journal(folder, text: str = "x") -> None:
    folder.mkdir(parents=True)
    (folder / "events.jsonl").write_text(text)


def test_the_sweep_removes_only_journal_folders_of_valid_ids_none_through_a_symlink(
    tmp_path, caplog
):
    """A user's three-level tree and trees behind symlinks at each level (their
    targets too) are left and named once; a real orphan journal, and a reset's
    moved-aside one, are removed with the folders they leave empty."""
    state = tmp_path / "state"
    sessions = state / "sessions"
    orphan = sessions / DOMAIN_ID / SUBSCRIPTION_ID / new_session_id()
    _journal(orphan)
    aside = (
        sessions / "dom-other0000000000000" / SUBSCRIPTION_ID / f"{new_session_id()}.forgotten-3"
    )
    _journal(aside)
    notes = sessions / "2026" / "december" / "notes"
    _journal(notes, "my notes")
    victim = tmp_path / "victim"
    for level in ("domain", "subscription", "session"):
        _journal(victim / level / SUBSCRIPTION_ID / new_session_id(), "precious")
    (sessions / DOMAIN_LINK).symlink_to(victim / "domain")
    (sessions / DOMAIN_ID / SUBSCRIPTION_LINK).symlink_to(victim / "subscription")
    linked_session = sessions / DOMAIN_ID / SUBSCRIPTION_ID / new_session_id()
    linked_session.symlink_to(victim / "session" / SUBSCRIPTION_ID)
    bad_name = sessions / DOMAIN_ID / SUBSCRIPTION_ID / "not-a-session-id"
    _journal(bad_name)
    victim_files = sorted(p for p in victim.rglob("*"))

    with caplog.at_level(logging.INFO, logger="medscribe"):
        backend = Backend(scenarios={}, state_dir=state)
        backend.close()

    assert not orphan.exists() and not aside.exists()
    assert not (sessions / "dom-other0000000000000").exists()  # emptied: removed
    assert (notes / "events.jsonl").read_text() == "my notes"
    assert sorted(p for p in victim.rglob("*")) == victim_files
    assert all(p.read_text() == "precious" for p in victim.rglob("events.jsonl"))
    assert linked_session.is_symlink() and bad_name.is_dir()
    messages = [r.getMessage() for r in caplog.records]
    assert "removed 1 journal(s) of sessions a reset forgot" in messages
    assert any("with no row" in m and m.endswith(orphan.name) for m in messages)
    left = [m for m in messages if m.startswith("left ")]
    assert left == [
        f"left 5 entries under {sessions} that the emulator did not write (it removes only "
        "folders <domain id>/<subscription id>/<session id>, none of them a symlink): "
        + ", ".join(
            [
                "2026",
                f"{DOMAIN_ID}/{SUBSCRIPTION_ID}/{linked_session.name}",
                f"{DOMAIN_ID}/{SUBSCRIPTION_ID}/not-a-session-id",
                f"{DOMAIN_ID}/{SUBSCRIPTION_LINK}",
                DOMAIN_LINK,
            ]
        )
    ]


def test_a_state_dir_with_nothing_foreign_logs_nothing_about_it(tmp_path, caplog):
    """Hidden files (Finder's .DS_Store at every level of a folder it showed) are
    not named at every start, nor removed."""
    state = tmp_path / "state"
    kept = state / "sessions" / DOMAIN_ID / SUBSCRIPTION_ID
    kept.mkdir(parents=True)
    hidden = [state / "sessions" / ".DS_Store", kept.parent / ".DS_Store", kept / "._x"]
    for path in hidden:
        path.write_text("finder")
    with caplog.at_level(logging.INFO, logger="medscribe"):
        Backend(scenarios={}, state_dir=state).close()
    assert not [r for r in caplog.records if r.getMessage().startswith("left ")]
    assert all(path.read_text() == "finder" for path in hidden)


def test_a_new_journal_refuses_a_folder_reached_through_a_symlink(tmp_path, caplog):
    """A new session's journal clears a folder left with its ids: through a
    symlinked domain folder that deleted the link's target. It now writes
    nothing there (logged once, the journal's error set), not even later, and
    its removal removes nothing either."""
    session_id = new_session_id()
    victim = tmp_path / "victim"
    _journal(victim / SUBSCRIPTION_ID / session_id, "precious")
    root = tmp_path / "sessions"
    root.mkdir()
    (root / DOMAIN_ID).symlink_to(victim)
    journal = Journal(root / DOMAIN_ID / SUBSCRIPTION_ID / session_id, audio_suffix="pcm", new=True)
    with caplog.at_level(logging.WARNING, logger="medscribe.journal"):
        for n in range(3):
            journal.record({"direction": "in", "type": "lost", "n": n})
            journal.sync()
        journal.remove()
        journal.wait_written()
    assert (victim / SUBSCRIPTION_ID / session_id / "events.jsonl").read_text() == "precious"
    assert journal.error is not None and f"{root / DOMAIN_ID} is a symlink" in journal.error
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1, messages
    assert messages[0].startswith(f"cannot write the journal in {journal.directory}: ")
    assert "nothing is written there, and nothing it holds removed" in messages[0]


@pytest.mark.parametrize("new", [True, False])
def test_no_journal_is_written_through_a_symlinked_domain_or_subscription_folder(
    tmp_path, caplog, new
):
    """A link planted at ``sessions/<domain id>`` (or a subscription's) had every
    session of it write its journal where the link points, outside the state
    directory, and a reset then left those files there for good."""
    victim = tmp_path / "victim"
    victim.mkdir()
    root = tmp_path / "sessions"
    (root / DOMAIN_ID).mkdir(parents=True)
    (root / DOMAIN_ID / SUBSCRIPTION_ID).symlink_to(victim)
    folder = root / DOMAIN_ID / SUBSCRIPTION_ID / new_session_id()
    journal = Journal(folder, audio_suffix="pcm", new=new)
    with caplog.at_level(logging.WARNING, logger="medscribe.journal"):
        journal.record({"direction": "in", "type": "configurationEvent"})
        journal.audio(b"\x00\x01" * 8)
        journal.sync()
    assert list(victim.iterdir()) == []
    link = root / DOMAIN_ID / SUBSCRIPTION_ID
    assert journal.error == (
        f"{link} is a symlink, which the emulator never makes: nothing is written through it"
    )
    assert [r.getMessage() for r in caplog.records] == [
        f"cannot write the journal in {folder}: {journal.error}"
    ]


def test_a_new_journal_refuses_another_sessions_folder_on_a_case_folding_file_system(
    tmp_path, monkeypatch
):
    """Session ids (hex) and subscription ids differ in case only: on a file system
    that folds case (macOS's, Windows'), two sessions' paths reach one folder, and
    the new one's journal deleted the other's. Such a file system is simulated: it
    lists the folder under the other session's spelling."""
    session_id = new_session_id()
    root = tmp_path / "sessions"
    other = root / DOMAIN_ID / SUBSCRIPTION_ID / session_id
    _journal(other, "the other session's")
    listdir = os.listdir

    def folding(path):
        names = listdir(path)
        return [name.upper() if name == session_id else name for name in names]

    monkeypatch.setattr(journal_module.os, "listdir", folding)
    journal = Journal(other, audio_suffix="pcm", new=True)
    journal.record({"direction": "in", "type": "mine"})
    journal.sync()
    monkeypatch.undo()
    assert (other / "events.jsonl").read_text() == "the other session's"
    assert journal.error is not None
    assert f"{other} is {other.parent / session_id.upper()}, another session's folder" in (
        journal.error
    )


def test_remove_tree_removes_nothing_through_a_symlinked_parent(tmp_path, caplog):
    victim = tmp_path / "victim"
    _journal(victim / "sub" / "session", "precious")
    (tmp_path / "dom").symlink_to(victim)
    with caplog.at_level(logging.WARNING, logger="medscribe.journal"):
        remove_tree(tmp_path / "dom" / "sub" / "session")
    assert (victim / "sub" / "session" / "events.jsonl").read_text() == "precious"
    assert f"{tmp_path / 'dom'} is a symlink" in caplog.text


def test_starting_the_backend_loads_fakers_providers(tmp_path):
    """Faker imports its providers, a file each, when the first Faker is built: on
    the first synthetic session, a process short of descriptors failed it for
    good. ``Backend.start`` builds one (a fresh process: this one has)."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from emulator.backend import Backend\n"
        f"backend = Backend(scenarios={{}}, state_dir=Path({str(tmp_path)!r}))\n"
        "before = 'faker.providers.person.en_US' in sys.modules\n"
        "backend.start()\n"
        "after = 'faker.providers.person.en_US' in sys.modules\n"
        "backend.close()\n"
        "print(before, after)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split() == ["False", "True"]
