"""How the full emulator routes the control plane's paths, as boto3 sends them.

botocore's own checks are off here (``parameter_validation=False``), so that what
answers is the emulator's: ids holding an escaped ``/`` or nothing at all, and the
model's operations the emulator does not implement.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from botocore.exceptions import ClientError

from emulator.control import NOT_EMULATED

from .support import admin


@pytest.fixture
def boto(emulator) -> Any:
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(
        aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret", region_name="us-east-1"
    )
    client = session.client(
        "connecthealth",
        endpoint_url=emulator.h2c_url,
        config=Config(parameter_validation=False, inject_host_prefix=False),
    )
    yield client
    client.close()


def failure(call, **params: Any) -> tuple[int, str, str]:
    with pytest.raises(ClientError) as error:
        call(**params)
    response = error.value.response
    assert response["ResponseMetadata"]["RequestId"]
    return (
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"]["Code"],
        response["Error"]["Message"],
    )


OTHER_DOMAIN = "dom-aaaaaaaaaabbbbbbbbbb"


#: Operations with an id in their path, and the member it is.
PATH_IDS = [
    ("get_domain", "domainId"),
    ("delete_domain", "domainId"),
    ("list_subscriptions", "domainId"),
    ("create_subscription", "domainId"),
    ("get_subscription", "subscriptionId"),
    ("activate_subscription", "subscriptionId"),
    ("deactivate_subscription", "subscriptionId"),
]


def _params(member: str, value: str) -> dict[str, str]:
    if member == "domainId":
        return {"domainId": value}
    return {"domainId": OTHER_DOMAIN, "subscriptionId": value}


@pytest.mark.parametrize("value", ["dom-aaaaaaaaaa/bbbbbbbbb", "x/activate", ""])
@pytest.mark.parametrize(("operation", "member"), PATH_IDS)
def test_an_id_holding_a_slash_or_nothing_is_a_validation_exception_naming_it(
    boto, operation, member, value
):
    """boto3 escapes a "/" inside a label, and sends an empty one as nothing between
    two slashes: either way the id stays one, and is refused as such."""
    status, code, message = failure(getattr(boto, operation), **_params(member, value))
    assert (status, code) == (400, "ValidationException")
    assert f"at '{member}'" in message
    assert value in message  # the id as given, decoded once


def test_an_escaped_percent_in_an_id_is_decoded_once(boto):
    """ "%41" sent as "%2541" is the three characters %41, not "A"."""
    status, code, message = failure(boto.get_domain, domainId="dom-%41aaaaaaaaaaaaaaaaaa")
    assert (status, code) == (400, "ValidationException")
    assert "dom-%41aaaaaaaaaaaaaaaaaa" in message


def test_a_domain_found_through_the_raw_path_still_answers(boto):
    domain_id = boto.create_domain(name="routing-clinic")["domainId"]
    assert boto.get_domain(domainId=domain_id)["domainId"] == domain_id
    subscription_id = boto.create_subscription(domainId=domain_id)["subscriptionId"]
    got = boto.get_subscription(domainId=domain_id, subscriptionId=subscription_id)
    assert got["subscription"]["subscriptionId"] == subscription_id
    arn = boto.get_domain(domainId=domain_id)["arn"]
    boto.tag_resource(resourceArn=arn, tags={"team": "scribe"})
    assert boto.list_tags_for_resource(resourceArn=arn)["tags"] == {"team": "scribe"}


DOMAIN = "dom-aaaaaaaaaabbbbbbbbbb"
CALLS = {
    "CreateDataset": ("create_dataset", {"domainId": DOMAIN, "name": "ds"}),
    "ListDatasets": ("list_datasets", {"domainId": DOMAIN}),
    "GetDataset": ("get_dataset", {"domainId": DOMAIN, "datasetId": "ds-1"}),
    "DeleteDataset": ("delete_dataset", {"domainId": DOMAIN, "datasetId": "ds-1"}),
    "StartMedicalCodingJob": ("start_medical_coding_job", {"domainId": DOMAIN}),
    "GetMedicalCodingJob": ("get_medical_coding_job", {"domainId": DOMAIN, "jobId": "j"}),
    "StartPatientInsightsJob": ("start_patient_insights_job", {"domainId": DOMAIN}),
    "GetPatientInsightsJob": ("get_patient_insights_job", {"domainId": DOMAIN, "jobId": "j"}),
    "SubmitFeedback": ("submit_feedback", {"domainId": DOMAIN}),
}


def test_every_operation_of_the_model_is_emulated_or_named_as_not():
    """The table of operations not emulated covers exactly what the control plane,
    the stream and Get leave out of the model boto3 knows."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("connecthealth")
    emulated = {
        "ActivateSubscription",
        "CreateDomain",
        "CreateSubscription",
        "DeactivateSubscription",
        "DeleteDomain",
        "GetDomain",
        "GetMedicalScribeListeningSession",
        "GetSubscription",
        "ListDomains",
        "ListSubscriptions",
        "ListTagsForResource",
        "StartMedicalScribeListeningSession",
        "TagResource",
        "UntagResource",
    }
    assert set(model.operation_names) == emulated | set(NOT_EMULATED) == emulated | set(CALLS)
    for name, (method, path) in NOT_EMULATED.items():
        http = model.operation_model(name).http
        assert (http["method"], http["requestUri"]) == (method, path)


@pytest.mark.parametrize("operation", sorted(CALLS))
def test_an_operation_not_emulated_is_a_501_naming_it(boto, operation):
    method, params = CALLS[operation]
    status, code, message = failure(getattr(boto, method), **params)
    assert (status, code) == (501, "NotImplemented")
    assert message.startswith(f"{operation} is not emulated")


def test_an_unknown_path_is_named_as_sent(emulator):
    status, body = admin(emulator.h2c_url, "GET", "/domains/a%2Fb/nothing")
    assert status == 404
    assert body["message"] == "no route for GET /domains/a%2Fb/nothing"


@pytest.mark.parametrize(
    ("method", "path", "status", "hint"),
    [
        ("POST", "/domain/", 405, "(did you mean POST /domain, without the trailing slash?)"),
        (
            "GET",
            "/domain/",
            400,
            "(the path ends in a slash: did you mean GET /domain, without it?)",
        ),
        (
            "GET",
            f"/domains/{OTHER_DOMAIN}/subscriptions/",
            400,
            f"(the path ends in a slash: did you mean GET /domains/{OTHER_DOMAIN}/subscriptions, "
            "without it?)",
        ),
        (
            "POST",
            "/medical-scribe-stream",
            404,
            "(did you mean /medical-scribe-stream/, with the trailing slash?)",
        ),
    ],
    ids=["create-domain", "list-domains", "list-subscriptions", "stream-without-slash"],
)
def test_a_path_off_by_a_slash_says_what_was_meant(emulator, method, path, status, hint):
    """curl users typed a collection's path with a slash: CreateDomain was told POST
    is not allowed, ListDomains of an empty domainId it never sent."""
    body = b'{"name": "slash"}' if method == "POST" else None
    got, answer = admin(emulator.h2c_url, method, path, body)
    assert got == status
    assert answer["message"].endswith(hint)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "HEAD"])
def test_another_method_on_the_stream_path_is_a_405_naming_post(emulator, method):
    """Was a 404 "no route", as if the path were wrong, where every other
    operation's path answers a wrong method with a 405."""
    request = urllib.request.Request(
        emulator.h2c_url + "/medical-scribe-stream/",
        data=b"{}" if method in ("PUT", "PATCH") else None,
        method=method,
    )
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=10)
    assert error.value.code == 405
    assert error.value.headers["allow"] == "POST"
    assert error.value.headers["x-amzn-errortype"] == "UnknownOperationException"
    body = error.value.read()
    if method == "HEAD":
        assert body == b""
    else:
        assert json.loads(body) == {
            "message": f"{method} is not allowed on /medical-scribe-stream/; it takes POST "
            "(StartMedicalScribeListeningSession)"
        }


def test_an_empty_id_as_boto3_sends_it_is_still_the_validation_exception(boto):
    """GetDomain(domainId="") is GET /domain/ too: refused as the model says, the
    slash's hint added."""
    status, code, message = failure(boto.get_domain, domainId="")
    assert (status, code) == (400, "ValidationException")
    assert "at 'domainId'" in message and "did you mean GET /domain, without it?" in message


def test_a_transfer_coding_it_does_not_read_is_named(emulator):
    import socket

    port = int(emulator.h2c_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /domain HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip\r\n\r\nabc")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 501 Not Implemented\r\n")
    assert b"x-amzn-errortype: NotImplemented" in head
    assert b"it reads a body by its Content-Length or the chunked coding alone" in body


def test_http1_status_lines_carry_their_reason_phrase(emulator):
    """hypercorn wrote "HTTP/1.1 404 " with nothing after the code, which every log
    and ``curl -i`` shows."""
    import socket

    port = int(emulator.h2c_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"GET /_emulator/health HTTP/1.1\r\nhost: x\r\n\r\n"
            b"GET /nowhere HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"HTTP/1.1 404 Not Found\r\n" in answer
