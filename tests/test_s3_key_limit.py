"""S3 takes an object key of at most 1,024 bytes of UTF-8; the on-disk stand-in refuses
the same keys, saying so.

The model limits outputS3Uri to 1,024 characters and the service appends about 170
bytes of its own, so a prefix in CJK letters (three bytes each) passes S3's limit long
before the model's. The stand-in stored such keys and reported COMPLETED where S3's
PUT fails (KeyTooLongError), and it advised "S3 takes it" for keys S3 refuses.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from emulator.artifacts import KEY_MAX, NAME_MAX, DiskBuckets, artifact_locations, s3_uri
from emulator.server import RunningServer

from .support import DOMAIN_ID, SUBSCRIPTION_ID, new_session_id, running_emulator
from .test_artifacts import _settings, empty_session_to, settled, state_of

BUCKET = "emulator-bucket"
USE_S3 = "(S3 takes it: use --s3-endpoint-url)"


def s3_limit_reason(key: str) -> str:
    """The failureReason's tail for a key over S3's limit."""
    return (
        f"the object key is longer than the {KEY_MAX} bytes S3 takes (KeyTooLongError; S3 "
        f"counts the key's bytes of UTF-8, not its characters): it is {len(key.encode())} "
        f"bytes ({len(key)} characters)"
    )


def prefix_of(size: int) -> str:
    """A key prefix of exactly ``size`` bytes of UTF-8, mostly three-byte CJK letters,
    in parts of 240 bytes: each fits a file name, so only S3's limit is in play."""
    parts: list[str] = []
    left = size
    while left > 240 + 1:  # a part and its slash
        parts.append("患者記録"[len(parts) % 4] * 80)
        left -= 240 + 1
    threes, rest = divmod(left, 3)
    parts.append("録" * threes + {0: "", 1: "a", 2: "é"}[rest])
    prefix = "/".join(parts)
    assert len(prefix.encode()) == size and all(len(p.encode()) <= NAME_MAX for p in parts)
    return prefix


def uri_for(session_id: str, name: str, key_bytes: int) -> str:
    """An outputS3Uri whose ``name`` artifact key of ``session_id`` is ``key_bytes`` long."""
    ids = {"domain_id": DOMAIN_ID, "subscription_id": SUBSCRIPTION_ID, "session_id": session_id}
    service_part = artifact_locations(f"s3://{BUCKET}", **ids)[name][1]  # the key past the prefix
    uri = f"s3://{BUCKET}/{prefix_of(key_bytes - len(service_part.encode()) - 1)}"
    assert len(uri) <= 1024  # the model's limit for S3Uri, in characters
    assert len(artifact_locations(uri, **ids)[name][1].encode()) == key_bytes
    return uri


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The on-disk S3 stand-in (no --s3-endpoint-url), writing artifacts at once."""
    state = tmp_path_factory.mktemp("s3-key-limit")
    with running_emulator(_settings(state, post_stream_delay=0.0)) as running:
        yield running


def test_an_artifact_key_of_exactly_1024_bytes_of_utf8_is_written(emulator):
    """The longest key (afterVisitSummary.json's) at S3's limit: every artifact
    COMPLETED, and the admin API serves the object."""
    from emulator.testing import MedscribeEmulator

    session_id = new_session_id()
    uri = uri_for(session_id, "afterVisitSummaryResult", KEY_MAX)
    empty_session_to(emulator, session_id, uri)
    artifacts = settled(emulator, session_id)
    assert {a["status"] for a in artifacts.values()} == {"COMPLETED"}
    location = artifacts["afterVisitSummaryResult"]["outputLocation"]
    key = location.removeprefix(f"s3://{BUCKET}/")
    assert len(key.encode()) == KEY_MAX and len(key) < KEY_MAX  # bytes, not characters
    handle = MedscribeEmulator.connect(emulator.h2c_url, ca_dir=state_of(emulator))
    written = state_of(emulator) / "s3" / BUCKET / key
    served = handle.artifact(session_id, "afterVisitSummaryResult")
    assert served == json.loads(written.read_text())


def test_an_artifact_key_one_byte_over_1024_fails_naming_s3s_limit_in_bytes(emulator):
    """afterVisitSummary.json's key at 1,025 bytes: that artifact FAILED as S3's PUT
    would, its reason naming the limit and the key's bytes; the shorter keys of the
    same session are written."""
    from emulator.testing import MedscribeAdminError, MedscribeEmulator

    session_id = new_session_id()
    uri = uri_for(session_id, "afterVisitSummaryResult", KEY_MAX + 1)
    empty_session_to(emulator, session_id, uri)
    artifacts = settled(emulator, session_id)
    assert artifacts["transcriptResult"]["status"] == "COMPLETED"
    assert artifacts["noteResult"]["status"] == "COMPLETED"
    failed = artifacts["afterVisitSummaryResult"]
    ids = {"domain_id": DOMAIN_ID, "subscription_id": SUBSCRIPTION_ID, "session_id": session_id}
    location = artifact_locations(uri, **ids)["afterVisitSummaryResult"]
    assert failed == {
        "status": "FAILED",
        "failureReason": f"could not write {s3_uri(location)}: {s3_limit_reason(location[1])}",
    }
    assert "1025 bytes" in failed["failureReason"]
    assert not (state_of(emulator) / "s3" / BUCKET / location[1]).exists()
    handle = MedscribeEmulator.connect(emulator.h2c_url, ca_dir=state_of(emulator))
    with pytest.raises(MedscribeAdminError) as refused:
        handle.artifact(session_id, "afterVisitSummaryResult")
    assert refused.value.status == 409
    assert s3_limit_reason(location[1]) in str(refused.value)


def test_the_advice_that_s3_takes_a_key_is_given_only_for_keys_s3_takes(emulator):
    """A key part over a file name's 255 bytes: within S3's limit the stand-in points
    to --s3-endpoint-url; in a key S3 refuses too (1,024 characters of CJK, about
    3,000 bytes), the reason is S3's limit and gives no such advice."""
    within, beyond = new_session_id(), new_session_id()
    empty_session_to(emulator, within, f"s3://{BUCKET}/" + "患" * 100)  # a 300-byte part
    for result in settled(emulator, within).values():
        assert result["status"] == "FAILED"
        assert USE_S3 in result["failureReason"]
    uri = f"s3://{BUCKET}/" + "患" * (1024 - len(f"s3://{BUCKET}/"))
    assert len(uri) == 1024  # the model's limit for S3Uri, in characters
    empty_session_to(emulator, beyond, uri)
    ids = {"domain_id": DOMAIN_ID, "subscription_id": SUBSCRIPTION_ID, "session_id": beyond}
    locations = artifact_locations(uri, **ids)
    for name, result in settled(emulator, beyond).items():
        assert result["status"] == "FAILED"
        assert result["failureReason"].endswith(s3_limit_reason(locations[name][1]))
        assert "S3 takes it" not in result["failureReason"]
        assert len(result["failureReason"]) < 2048  # not cut before it says why


# --- Sans-IO: the stand-in's own bucket -----------------------------------------------------
@pytest.mark.parametrize(
    "key",
    [
        "/".join(["a" * 254] * 4) + "/aaaa",  # parts a file name holds
        "/".join(["é" * 127] * 4) + "/" + "a" * 4,  # two-byte letters: 4 * 254 + 4 + 4 bytes
        prefix_of(KEY_MAX - len("/transcript.json")) + "/transcript.json",
    ],
    ids=["ascii", "two-byte", "three-byte"],
)
def test_disk_stand_in_stores_a_key_of_exactly_1024_bytes(tmp_path, key):
    assert len(key.encode()) == KEY_MAX
    DiskBuckets(tmp_path).put("b", key, b"{}")
    assert (tmp_path / "b" / key).read_bytes() == b"{}"


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(
            prefix_of(KEY_MAX + 1 - len("/transcript.json")) + "/transcript.json",
            id="one-byte-over",
        ),
        pytest.param("/".join(["患" * 80] * 5), id="far-over-in-few-characters"),  # 1,204 bytes
        pytest.param("患" * 342, id="with-a-part-too-long-for-a-file-name"),
        pytest.param("../" + prefix_of(KEY_MAX), id="with-dot-dot-parts"),
    ],
)
def test_disk_stand_in_refuses_a_key_over_1024_bytes_as_s3_does_and_writes_nothing(tmp_path, key):
    assert len(key.encode()) > KEY_MAX
    with pytest.raises(ValueError) as info:
        DiskBuckets(tmp_path).put("b", key, b"{}")
    assert str(info.value) == s3_limit_reason(key)
    assert not tmp_path.joinpath("b").exists()
