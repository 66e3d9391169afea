"""The state directory: its mode, what start-up warns of in it, and how it fails.

The emulator trusts what it finds there (its CA, journals, lock file), so a
directory others can write in is said so, and the files it opens are not
followed through symlinks planted there. Every problem claiming it is a
configuration error (exit 2) naming the directory, the file and why.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from emulator.errors import ConfigError
from emulator.resources import state_database_problem
from emulator.server import STATE_LOCK, claim_state_dir, warn_of_unsafe_state_dir
from emulator.tls import ensure_certificates

ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False
#: A user id that is not this process's (``nobody`` on most systems).
OTHER_UID = 65534


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _command() -> list[str]:
    script = shutil.which("medscribe-emulator", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "emulator"]


def _serve(state_dir: Path | str, *, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*_command(), "--port", "0", "--h2c-port", "0", "--state-dir", str(state_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )


def _refused(state_dir: Path | str, *, cwd: Path) -> str:
    """Start the real process on ``state_dir``; return its stderr once it exited with 2."""
    with _serve(state_dir, cwd=cwd) as process:
        try:
            out, err = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:  # it started: not refused
            process.kill()
            out, err = process.communicate()
    assert process.returncode == 2, err
    assert "ready" not in out and "Traceback" not in err
    return err


# -- its mode ---------------------------------------------------------------------


def test_a_state_dir_it_creates_is_0700_whatever_the_umask(tmp_path):
    """Under umask 000 (common in CI containers) it was 0777: any local user could
    replace its CA and plant symlinks the emulator then wrote through."""
    state = tmp_path / "parent" / "state"
    before = os.umask(0)
    try:
        claim = claim_state_dir(state)
    finally:
        os.umask(before)
    assert claim is not None
    with claim:
        assert _mode(state) == 0o700


def test_a_state_dir_the_user_made_keeps_its_mode(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o755)
    claim = claim_state_dir(state)
    assert claim is not None
    with claim:
        assert _mode(state) == 0o755


# -- what start-up warns of --------------------------------------------------------


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_state_dir_others_can_write_in_is_warned_of_once_saying_what_to_do(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o777)
    warn_of_unsafe_state_dir(state)
    (warning,) = _warnings(caplog)
    assert f"--state-dir {state} is writable by its group and others (mode 0777)" in warning
    assert "another local user could replace its CA" in warning and "journals" in warning
    assert warning.endswith(f"chmod 700 {state}, or use another --state-dir")

    caplog.clear()
    state.chmod(0o770)
    warn_of_unsafe_state_dir(state)
    assert "is writable by its group (mode 0770)" in _warnings(caplog)[0]

    caplog.clear()
    state.chmod(0o755)
    warn_of_unsafe_state_dir(state)
    assert _warnings(caplog) == []


@pytest.mark.skipif(not ROOT, reason="giving a directory to another user needs root")
def test_a_state_dir_another_user_owns_is_warned_of(tmp_path, caplog):
    """Another user who made it (say /tmp/medscribe) could hand the emulator a CA
    whose key they hold."""
    caplog.set_level(logging.WARNING)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, OTHER_UID, -1)
    warn_of_unsafe_state_dir(state)
    (warning,) = _warnings(caplog)
    assert f"is owned by {_user_text(OTHER_UID)}, not by " in warning
    assert warning.endswith("use a --state-dir of your own")


def _user_text(uid: int) -> str:
    import pwd

    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def test_a_ca_key_others_can_read_is_made_0600_saying_so(tmp_path, caplog):
    files = ensure_certificates(tmp_path)
    key = tmp_path / "ca-key.pem"
    key.chmod(0o640)
    caplog.set_level(logging.WARNING, logger="medscribe.tls")
    assert ensure_certificates(tmp_path) == files
    (warning,) = _warnings(caplog)
    assert f"{key} was readable by its group (mode 0640): made it 0600" in warning
    assert "issue certificates that clients trusting ca.pem accept" in warning
    assert _mode(key) == 0o600
    caplog.clear()
    ensure_certificates(tmp_path)  # once tightened, nothing more to say
    assert _warnings(caplog) == []


@pytest.mark.skipif(not ROOT, reason="giving a file to another user needs root")
def test_a_ca_key_of_another_user_is_warned_of_and_left_alone(tmp_path, caplog):
    ensure_certificates(tmp_path)
    key = tmp_path / "ca-key.pem"
    key.chmod(0o644)
    os.chown(key, OTHER_UID, -1)
    caplog.set_level(logging.WARNING, logger="medscribe.tls")
    ensure_certificates(tmp_path)
    (warning,) = _warnings(caplog)
    assert f"{key} is readable by its group and others (mode 0644) and another user's" in warning
    assert _mode(key) == 0o644


def test_the_server_process_warns_of_an_open_state_dir_and_ca_key(tmp_path):
    """End to end: the real process's log, once each, and the key tightened."""
    state = tmp_path / "state"
    ensure_certificates(state)
    state.chmod(0o777)
    (state / "ca-key.pem").chmod(0o644)
    with _serve(state, cwd=tmp_path) as process:
        try:
            assert process.stdout is not None
            for line in process.stdout:
                if "CA certificate" in line:
                    break
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 0, err
    assert err.count(f"--state-dir {state} is writable by its group and others") == 1
    assert err.count(f"{state / 'ca-key.pem'} was readable by its group and others") == 1
    assert _mode(state / "ca-key.pem") == 0o600


# -- the lock file ---------------------------------------------------------------


def test_a_symlink_at_the_lock_file_is_refused_and_its_target_left_alone(tmp_path):
    """It truncated the file the symlink points to and wrote its pid there."""
    state = tmp_path / "state"
    state.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("important line 1\nimportant line 2\n")
    (state / STATE_LOCK).symlink_to(victim)
    err = _refused(state, cwd=tmp_path)
    assert (
        f"cannot use --state-dir {state}: {state / STATE_LOCK} is a symlink (to {victim}): "
        "the emulator does not follow one there"
    ) in err
    assert victim.read_text() == "important line 1\nimportant line 2\n"


def test_a_failed_write_of_the_lock_names_the_file_and_frees_it(tmp_path, monkeypatch):
    """A full disk gave a bare "[Errno 28] No space left on device" and exit 1."""
    from emulator import server

    opened = server._open_lock

    def full_disk(lock: Path):
        handle = opened(lock)

        def write(text: str) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        handle.write = write  # type: ignore[method-assign]
        return handle

    monkeypatch.setattr(server, "_open_lock", full_disk)
    with pytest.raises(ConfigError) as caught:
        claim_state_dir(tmp_path)
    assert str(caught.value) == (
        f"cannot use --state-dir {tmp_path}: writing {tmp_path / STATE_LOCK}: "
        "No space left on device"
    )
    monkeypatch.undo()
    claim = claim_state_dir(tmp_path)  # the failed claim let go of its lock
    assert claim is not None
    claim.close()


def test_a_state_dir_the_user_cannot_write_names_its_owner_and_the_user(tmp_path, monkeypatch):
    """A root-made bind mount, or `docker run --user` another uid, gave only
    "opening .server.lock: Permission denied". (Simulated: these tests may run
    as root, whom no mode refuses.)"""
    import errno

    from emulator import server

    def refused(lock):
        raise PermissionError(errno.EACCES, "Permission denied")

    tmp_path.chmod(0o755)
    monkeypatch.setattr(server, "_open_lock", refused)
    monkeypatch.setattr(os, "geteuid", lambda: 65432)  # a uid with no name here
    with pytest.raises(ConfigError) as caught:
        claim_state_dir(tmp_path)
    owner = server._user(tmp_path.stat().st_uid)
    assert str(caught.value) == (
        f"cannot use --state-dir {tmp_path}: opening {tmp_path / STATE_LOCK}: Permission "
        f"denied: {tmp_path} is owned by {owner}, mode 0755, and the emulator runs as uid "
        "65432 (make it that user's, or use a directory it can write: a named volume, in a "
        "container)"
    )


def test_a_lock_file_that_cannot_be_opened_names_it(tmp_path):
    (tmp_path / STATE_LOCK).mkdir()  # a directory: EISDIR, even for root
    with pytest.raises(ConfigError) as caught:
        claim_state_dir(tmp_path)
    assert str(caught.value) == (
        f"cannot use --state-dir {tmp_path}: opening {tmp_path / STATE_LOCK}: Is a directory"
    )


# -- --state-dir edge cases -----------------------------------------------------


def test_a_dangling_symlink_as_state_dir_says_where_it_points(tmp_path):
    """It said "File exists"."""
    (tmp_path / "dangling").symlink_to("/nonexistent/x")
    err = _refused("dangling", cwd=tmp_path)
    assert (
        "cannot use --state-dir dangling: it is a symlink to /nonexistent/x, which does not exist\n"
    ) in err


def test_a_state_dir_under_a_dangling_symlink_names_it(tmp_path):
    (tmp_path / "dangling").symlink_to("/nonexistent/x")
    with pytest.raises(ConfigError) as caught:
        claim_state_dir(tmp_path / "dangling" / "state")
    assert str(caught.value).endswith(
        f"{tmp_path / 'dangling'} is a symlink to /nonexistent/x, which does not exist"
    )


def test_a_state_dir_name_too_long_is_a_configuration_error(tmp_path):
    """Its look at the path in the error handler raised ENAMETOOLONG again: a bare
    errno and exit 1."""
    name = "d" * 300
    err = _refused(name, cwd=tmp_path)
    assert (
        f"cannot use --state-dir {name}: its name is too long for the file system "
        "(most allow 255 bytes a name, 4,096 a path)\n"
    ) in err


# -- the state database ------------------------------------------------------------


def test_a_full_disk_under_the_state_database_is_said_so(tmp_path):
    """SQLITE_FULL got the hint for another version's database."""
    database = tmp_path / "medscribe.sqlite3"
    message = state_database_problem(database, sqlite3.OperationalError("database or disk is full"))
    assert message.startswith(f"cannot use the state database {database}: database or disk is full")
    assert "(the file system holding --state-dir is full (" in message
    assert "bytes free): free space on it, or use another --state-dir)" in message
    assert "another version" not in message


def test_a_dangling_symlink_at_the_state_database_is_named(tmp_path):
    """SQLite says "unable to open database file", which, the directory being
    writable, was blamed on the open-file limit."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "medscribe.sqlite3").symlink_to("/nonexistent/medscribe.sqlite3")
    err = _refused(state, cwd=tmp_path)
    assert (
        f"cannot use the state database {state / 'medscribe.sqlite3'}: unable to open "
        "database file (it is a symlink to /nonexistent/medscribe.sqlite3, which does not "
        "exist: remove it, or use another --state-dir)"
    ) in err
    assert "ulimit" not in err


def test_a_symlink_at_the_rule_ids_file_is_not_written_through(tmp_path):
    """The admin API's last rule id is noted in ``rule-ids``: a symlink planted
    there had its target overwritten. The rule is still added."""
    from emulator.backend import RULE_IDS, Backend

    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    (state / RULE_IDS).symlink_to(victim)
    backend = Backend(scenarios={}, state_dir=state)
    try:
        rule = backend.add_rule({"match": {}, "scenario": "synthetic"})
    finally:
        backend.close()
    assert rule.id
    assert victim.read_text() == "keep me\n"
    assert (state / RULE_IDS).is_symlink()


@pytest.mark.parametrize(
    ("version", "advice"),
    [
        ("2", "(a newer medscribe-emulator wrote it): run that release or a newer one"),
        ("0", ": give this emulator another --state-dir"),
        ("\u00b2", ": give this emulator another --state-dir"),  # a digit int() refuses
    ],
    ids=["newer", "unknown", "superscript-two"],
)
def test_a_resource_schema_it_does_not_read_is_refused_without_advice_to_delete(
    tmp_path, version, advice
):
    """The refusal said "delete the file to start afresh": the file holds every
    session, domain and subscription too, and the next start then swept every
    session's journal."""
    from emulator.resources import ResourceRegistry

    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    database = state / "medscribe.sqlite3"
    ResourceRegistry(db_path=database).close()
    with sqlite3.connect(database) as db:
        db.execute("UPDATE resource_meta SET value = ? WHERE key = 'schema'", (version,))
    err = _refused(state, cwd=tmp_path)
    assert f"{database}: resource database version {version}, this emulator reads 1" in err
    assert advice in err
    assert "do not delete it to start afresh unless you mean to lose them" in err
    assert len(err.strip().splitlines()) <= 2
