"""Rules of the control plane: domains, subscriptions and tags through boto3 and the real SDK.

The emulator's app does not mount these routes yet, so a Starlette app built from
``control_routes(registry)`` is served here by hypercorn over TLS (h2 + http/1.1 by
ALPN): boto3 reaches it over HTTP/1.1, the real SDK over HTTP/2.
"""

from __future__ import annotations

import http.client
import json
import random
import re
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aws_sdk_connecthealth import models as sdk
from botocore.exceptions import ClientError
from smithy_core.exceptions import CallError
from starlette.applications import Starlette
from starlette.routing import Match

from emulator import hypercorn_h2
from emulator.control import control_routes, routing_scope
from emulator.errors import ConfigError, ResourceNotFoundException, ValidationException
from emulator.resources import (
    ResourceRegistry,
    ResourcesError,
    SeedDomain,
    load_resources_file,
)
from emulator.sdk import boto3_client, make_client
from emulator.tls import ensure_certificates

from .support import serving_tls

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

DOMAIN_ID_RE = re.compile(r"(hai-|dom-)[a-z0-9]+")
SUBSCRIPTION_ID_RE = re.compile(r"sub-[a-zA-Z0-9]{21}")
DOMAIN_ARN_RE = re.compile(r"arn:aws:health-agent:[a-z0-9-]+:[0-9]{12}:domain/(hai-|dom-)[a-z0-9]+")
SUBSCRIPTION_ARN_RE = re.compile(
    r"arn:aws:health-agent:[a-z0-9-]+:[0-9]{12}:domain/(hai-|dom-)[a-z0-9]+"
    r"/subscription/sub-[a-zA-Z0-9]{21}"
)
KMS_KEY = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
SEED_DOMAIN = "dom-seeded0000000000000"
SEED_ACTIVE = "sub-SeededActive000000000"
SEED_INACTIVE = "sub-SeededInactive0000000"
SEED_TEXT = f"""\
domains:
  - domainId: {SEED_DOMAIN}
    name: seeded-clinic
    tags: {{team: scribe}}
    subscriptions:
      - subscriptionId: {SEED_ACTIVE}
      - subscriptionId: {SEED_INACTIVE}
        status: INACTIVE
"""


# --- A TLS server for the routes ----------------------------------------------------------
class StepClock:
    """The registry's clock: real time, or the next of some given instants."""

    def __init__(self) -> None:
        self.instants: Iterator[float] | None = None

    def __call__(self) -> float:
        return time.time() if self.instants is None else next(self.instants)


@dataclass(kw_only=True)
class ControlServer:
    registry: ResourceRegistry
    clock: StepClock
    port: int
    ca_file: Path
    http_versions: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"


@pytest.fixture(scope="module")
def control_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlServer]:
    """Hypercorn over TLS on a free 127.0.0.1 port, in a thread, serving control_routes."""
    # As the emulator's server does: the SDK's DATA frame ending a GET can arrive after
    # the response, which stock hypercorn answers by dropping the connection (#329).
    hypercorn_h2.install()
    tls = ensure_certificates(tmp_path_factory.mktemp("state"))
    clock = StepClock()
    registry = ResourceRegistry(db_path=None, rng=random.Random(3), clock=clock)
    starlette = Starlette(routes=control_routes(registry))
    server: ControlServer | None = None

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and server is not None:
            server.http_versions.append(scope["http_version"])
        await starlette(routing_scope(scope), receive, send)  # as the emulator's app does

    # Idle connections are closed by their clients at the end, never by the server: a
    # server-side close of boto3's idle pooled socket waits for a close_notify nobody
    # reads, and shutdown waits with it.
    try:
        with serving_tls(app, tls, keep_alive_timeout=600) as port:
            server = ControlServer(registry=registry, clock=clock, port=port, ca_file=tls.ca_cert)
            yield server
    finally:
        registry.close()


@pytest.fixture
def control(control_server: ControlServer) -> ControlServer:
    """The shared server with no resources and the default quotas."""
    registry = control_server.registry
    registry.reset()
    registry.max_domains, registry.max_subscriptions_per_domain = 100, 1000
    control_server.clock.instants = None
    control_server.http_versions.clear()
    return control_server


@pytest.fixture(scope="module")
def boto(control_server: ControlServer) -> Iterator[Any]:
    client = boto3_client(endpoint_url=control_server.url, ca_file=control_server.ca_file)
    yield client
    client.close()


def client_error(call: Callable[..., Any], **params: Any) -> tuple[int, str, str]:
    """Return (HTTP status, error code, message) of a boto3 call that must fail."""
    with pytest.raises(ClientError) as failure:
        call(**params)
    response = failure.value.response
    return (
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"]["Code"],
        response["Error"]["Message"],
    )


def raw_request(
    server: ControlServer, method: str, path: str, body: bytes | None = None
) -> tuple[int, dict[str, str], Any]:
    """Send one HTTP/1.1 request; return (status, lower-cased headers, parsed JSON or None)."""
    context = ssl.create_default_context(cafile=str(server.ca_file))
    connection = http.client.HTTPSConnection("localhost", server.port, context=context, timeout=10)
    try:
        headers = {"content-type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        return (
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            json.loads(data) if data else None,
        )
    finally:
        connection.close()


# --- Domains through boto3 ----------------------------------------------------------------
def test_create_domain_answers_201_with_model_shaped_id_arn_and_active_status(
    control: ControlServer, boto: Any
) -> None:
    """CreateDomain: 201, a DomainId and DomainArn matching the model, ACTIVE, AWS-owned key."""
    created = boto.create_domain(name="clinic-a")
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    domain_id = created["domainId"]
    assert DOMAIN_ID_RE.fullmatch(domain_id) and 20 <= len(domain_id) <= 25
    assert DOMAIN_ARN_RE.fullmatch(created["arn"])
    assert created["arn"] == f"arn:aws:health-agent:us-east-1:000000000000:domain/{domain_id}"
    assert created["name"] == "clinic-a"
    assert created["status"] == "ACTIVE"
    assert created["createdAt"].timestamp() > 0  # epoch seconds parsed into a datetime
    assert created["encryptionContext"] == {"encryptionType": "AWS_OWNED_KEY"}
    assert control.http_versions == ["1.1"]


def test_create_domain_with_kms_key_and_web_app_reports_them(
    control: ControlServer, boto: Any
) -> None:
    """A customer key gives CUSTOMER_MANAGED_KEY; a web app setup gives a configuration and URL."""
    created = boto.create_domain(
        name="clinic-b",
        kmsKeyArn=KMS_KEY,
        webAppSetupConfiguration={
            "ehrRole": "arn:aws:iam::111122223333:role/ehr",
            "idcInstanceId": "ssoins-1234567890abcdef",
            "idcRegion": "us-west-2",
        },
    )
    assert created["kmsKeyArn"] == KMS_KEY
    assert created["encryptionContext"] == {
        "encryptionType": "CUSTOMER_MANAGED_KEY",
        "kmsKeyArn": KMS_KEY,
    }
    web_app = created["webAppConfiguration"]
    assert web_app["ehrRole"] == "arn:aws:iam::111122223333:role/ehr"
    assert web_app["idcRegion"] == "us-west-2"
    assert re.fullmatch(r"apl-[0-9a-f]{16}", web_app["idcApplicationId"])
    assert created["webAppUrl"].startswith(f"https://{created['domainId']}.")


def test_identical_create_domain_requests_return_the_same_domain(
    control: ControlServer, boto: Any
) -> None:
    """CreateDomain is idempotent: the same input returns the same domain, another makes one."""
    first = boto.create_domain(name="clinic", tags={"env": "test"})
    again = boto.create_domain(name="clinic", tags={"env": "test"})
    other = boto.create_domain(name="clinic")
    assert again["domainId"] == first["domainId"]
    assert other["domainId"] != first["domainId"]
    assert len(boto.list_domains()["domains"]) == 2


def test_get_domain_returns_the_domain_with_its_tags(control: ControlServer, boto: Any) -> None:
    """GetDomain echoes what CreateDomain made, plus the tags."""
    created = boto.create_domain(name="clinic", tags={"env": "test", "team": "scribe"})
    got = boto.get_domain(domainId=created["domainId"])
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 200
    for key in ("domainId", "arn", "name", "status", "createdAt", "encryptionContext"):
        assert got[key] == created[key]
    assert got["tags"] == {"env": "test", "team": "scribe"}


def test_get_unknown_domain_is_resource_not_found_naming_the_id(
    control: ControlServer, boto: Any
) -> None:
    """GetDomain of a well-formed unknown id: 404 ResourceNotFoundException naming it."""
    status, code, message = client_error(boto.get_domain, domainId="dom-unknown0000000000000")
    assert (status, code) == (404, "ResourceNotFoundException")
    assert "dom-unknown0000000000000" in message


def test_list_domains_pages_by_max_results_and_next_token(
    control: ControlServer, boto: Any
) -> None:
    """ListDomains returns maxResults per page in creation order; the last page has no token."""
    ids = [boto.create_domain(name=f"clinic-{i}")["domainId"] for i in range(5)]
    pages, token = [], None
    while True:
        page = boto.list_domains(maxResults=2, **({"nextToken": token} if token else {}))
        pages.append([d["domainId"] for d in page["domains"]])
        token = page.get("nextToken")
        if token is None:
            break
    assert pages == [ids[0:2], ids[2:4], ids[4:5]]
    summary = boto.list_domains(maxResults=1)["domains"][0]
    assert set(summary) == {"domainId", "arn", "name", "status", "createdAt"}


def test_list_domains_filters_by_status(control: ControlServer, boto: Any) -> None:
    """status=ACTIVE lists the domains; DELETED lists none (deletion is immediate)."""
    boto.create_domain(name="clinic")
    assert len(boto.list_domains(status="ACTIVE")["domains"]) == 1
    assert boto.list_domains(status="DELETED")["domains"] == []


@pytest.mark.parametrize(
    ("params", "member", "rule"),
    [
        ({"maxResults": 101}, "maxResults", "Member must have value less than or equal to 100"),
        ({"status": "GONE"}, "status", "Member must satisfy enum value set: [ACTIVE, DELETING"),
        ({"nextToken": "not-a-token"}, "nextToken", "Member must be a nextToken returned by"),
    ],
    ids=["max-results-over-100", "status-not-in-enum", "next-token-not-issued"],
)
def test_list_domains_validation_errors_name_the_member(
    control: ControlServer, boto: Any, params: dict[str, Any], member: str, rule: str
) -> None:
    """Bad ListDomains parameters: 400 ValidationException naming the member and the rule."""
    status, code, message = client_error(boto.list_domains, **params)
    assert (status, code) == (400, "ValidationException")
    assert message.startswith("1 validation error detected: Value '")
    assert f"at '{member}' failed to satisfy constraint: {rule}" in message


@pytest.mark.parametrize(
    ("path", "member"),
    [
        ("/domain?status=ACTIVE&status=DELETED", "status"),
        ("/domain?maxResults=1&maxResults=2", "maxResults"),
        ("/domain?nextToken=a&nextToken=b", "nextToken"),
        ("/domains/dom-abcdefghij0123456789/subscriptions?maxResults=1&maxResults=1", "maxResults"),
    ],
    ids=["status", "max-results", "next-token", "subscriptions-max-results"],
)
def test_a_query_parameter_given_twice_is_a_validation_error_naming_it(
    control: ControlServer, path: str, member: str
) -> None:
    """The model binds each to one value: taking either copy would answer another question."""
    status, headers, body = raw_request(control, "GET", path)
    assert (status, headers["x-amzn-errortype"]) == (400, "ValidationException")
    assert body["message"] == (
        f"1 validation error detected: Value at '{member}' failed to satisfy constraint: "
        "Member must be given once, got 2 values"
    )


def test_list_domains_takes_max_results_of_exactly_100(control: ControlServer, boto: Any) -> None:
    """maxResults may be 1..100: 100 itself is accepted (101 is refused, above)."""
    ids = [boto.create_domain(name=f"clinic-{i}")["domainId"] for i in range(3)]
    page = boto.list_domains(maxResults=100)
    assert page["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert [d["domainId"] for d in page["domains"]] == ids and "nextToken" not in page


def test_next_token_of_another_filter_is_refused(control: ControlServer, boto: Any) -> None:
    """A nextToken is only valid for the operation and filter that returned it."""
    for i in range(3):
        boto.create_domain(name=f"clinic-{i}")
    token = boto.list_domains(maxResults=1)["nextToken"]
    _, code, message = client_error(boto.list_domains, status="ACTIVE", nextToken=token)
    assert code == "ValidationException" and "'nextToken'" in message


def test_delete_domain_answers_deleted_and_removes_subscriptions_and_tags(
    control: ControlServer, boto: Any
) -> None:
    """DeleteDomain answers DELETED; the domain, its subscriptions and tags are gone."""
    domain = boto.create_domain(name="clinic", tags={"a": "1"})
    sub = boto.create_subscription(domainId=domain["domainId"])
    deleted = boto.delete_domain(domainId=domain["domainId"])
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert {k: deleted[k] for k in ("domainId", "arn", "status")} == {
        "domainId": domain["domainId"],
        "arn": domain["arn"],
        "status": "DELETED",
    }
    assert client_error(boto.get_domain, domainId=domain["domainId"])[1] == (
        "ResourceNotFoundException"
    )
    for arn in (domain["arn"], sub["arn"]):
        assert client_error(boto.list_tags_for_resource, resourceArn=arn)[0] == 404
    assert client_error(boto.delete_domain, domainId=domain["domainId"])[:2] == (
        404,
        "ResourceNotFoundException",
    )


# --- Subscriptions through boto3 ----------------------------------------------------------
def test_create_subscription_answers_201_active_with_model_shaped_id_and_arn(
    control: ControlServer, boto: Any
) -> None:
    """CreateSubscription: 201, SubscriptionId/Arn matching the model, ACTIVE from creation."""
    domain = boto.create_domain(name="clinic")
    sub = boto.create_subscription(domainId=domain["domainId"])
    assert sub["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert SUBSCRIPTION_ID_RE.fullmatch(sub["subscriptionId"])
    assert SUBSCRIPTION_ARN_RE.fullmatch(sub["arn"])
    assert sub["arn"] == f"{domain['arn']}/subscription/{sub['subscriptionId']}"
    assert sub["domainId"] == domain["domainId"]
    assert sub["status"] == "ACTIVE"
    assert sub["createdAt"] == sub["lastUpdatedAt"] == sub["activatedAt"]
    assert "deactivatedAt" not in sub


def test_create_subscription_in_unknown_domain_is_resource_not_found(
    control: ControlServer, boto: Any
) -> None:
    """CreateSubscription under an unknown domain: 404 naming the domain."""
    status, code, message = client_error(
        boto.create_subscription, domainId="dom-unknown0000000000000"
    )
    assert (status, code) == (404, "ResourceNotFoundException")
    assert "dom-unknown0000000000000" in message


def test_get_subscription_returns_it_and_only_under_its_own_domain(
    control: ControlServer, boto: Any
) -> None:
    """GetSubscription finds a subscription under its domain; under another it is not found."""
    one = boto.create_domain(name="one")["domainId"]
    two = boto.create_domain(name="two")["domainId"]
    sub = boto.create_subscription(domainId=one)
    got = boto.get_subscription(domainId=one, subscriptionId=sub["subscriptionId"])
    assert got["subscription"]["subscriptionId"] == sub["subscriptionId"]
    assert got["subscription"]["status"] == "ACTIVE"
    status, code, message = client_error(
        boto.get_subscription, domainId=two, subscriptionId=sub["subscriptionId"]
    )
    assert (status, code) == (404, "ResourceNotFoundException")
    assert sub["subscriptionId"] in message


def test_list_subscriptions_pages_by_max_results_and_next_token(
    control: ControlServer, boto: Any
) -> None:
    """ListSubscriptions pages a domain's subscriptions in creation order, and no others."""
    domain_id = boto.create_domain(name="clinic")["domainId"]
    other = boto.create_domain(name="other")["domainId"]
    boto.create_subscription(domainId=other)
    ids = [boto.create_subscription(domainId=domain_id)["subscriptionId"] for _ in range(3)]
    first = boto.list_subscriptions(domainId=domain_id, maxResults=2)
    second = boto.list_subscriptions(domainId=domain_id, maxResults=2, nextToken=first["nextToken"])
    assert [s["subscriptionId"] for s in first["subscriptions"]] == ids[:2]
    assert [s["subscriptionId"] for s in second["subscriptions"]] == ids[2:]
    assert "nextToken" not in second
    assert client_error(boto.list_subscriptions, domainId="dom-unknown0000000000000")[0] == 404


def test_deactivate_then_activate_changes_status_and_stamps_times(
    control: ControlServer, boto: Any
) -> None:
    """Deactivate: INACTIVE with deactivatedAt; Activate: ACTIVE again with a new activatedAt."""
    control.clock.instants = iter(range(1_000, 2_000, 10))  # distinct, known instants
    domain_id = boto.create_domain(name="clinic")["domainId"]
    sub_id = boto.create_subscription(domainId=domain_id)["subscriptionId"]
    off = boto.deactivate_subscription(domainId=domain_id, subscriptionId=sub_id)
    on = boto.activate_subscription(domainId=domain_id, subscriptionId=sub_id)
    off, on = off["subscription"], on["subscription"]
    assert off["status"] == "INACTIVE"
    assert off["deactivatedAt"].timestamp() == off["lastUpdatedAt"].timestamp() == 1_020
    assert off["activatedAt"].timestamp() == 1_010
    assert on["status"] == "ACTIVE"
    assert on["activatedAt"].timestamp() == on["lastUpdatedAt"].timestamp() == 1_030
    assert on["deactivatedAt"].timestamp() == 1_020


def test_deactivating_an_inactive_subscription_changes_nothing(
    control: ControlServer, boto: Any
) -> None:
    """DeactivateSubscription is idempotent: a second call returns the same description."""
    domain_id = boto.create_domain(name="clinic")["domainId"]
    sub_id = boto.create_subscription(domainId=domain_id)["subscriptionId"]
    first = boto.deactivate_subscription(domainId=domain_id, subscriptionId=sub_id)
    second = boto.deactivate_subscription(domainId=domain_id, subscriptionId=sub_id)
    assert first["subscription"] == second["subscription"]


def test_subscription_quota_is_service_quota_exceeded(control: ControlServer, boto: Any) -> None:
    """Past max_subscriptions_per_domain CreateSubscription is a 402 quota error."""
    control.registry.max_subscriptions_per_domain = 1
    domain_id = boto.create_domain(name="clinic")["domainId"]
    boto.create_subscription(domainId=domain_id)
    status, code, _ = client_error(boto.create_subscription, domainId=domain_id)
    assert (status, code) == (402, "ServiceQuotaExceededException")


def test_domain_quota_is_service_quota_exceeded(control: ControlServer, boto: Any) -> None:
    """Past max_domains CreateDomain is a 402 ServiceQuotaExceededException."""
    control.registry.max_domains = 1
    boto.create_domain(name="one")
    status, code, message = client_error(boto.create_domain, name="two")
    assert (status, code) == (402, "ServiceQuotaExceededException")
    assert "quota" in message


# --- Tags through boto3 -------------------------------------------------------------------
def test_tags_are_added_replaced_listed_and_removed_on_domains_and_subscriptions(
    control: ControlServer, boto: Any
) -> None:
    """TagResource/UntagResource answer 204; ListTagsForResource shows the result per ARN."""
    domain = boto.create_domain(name="clinic", tags={"env": "dev"})
    sub = boto.create_subscription(domainId=domain["domainId"])
    tagged = boto.tag_resource(resourceArn=domain["arn"], tags={"env": "prod", "team": "a"})
    assert tagged["ResponseMetadata"]["HTTPStatusCode"] == 204
    boto.tag_resource(resourceArn=sub["arn"], tags={"user": "dr-who"})
    assert boto.list_tags_for_resource(resourceArn=domain["arn"])["tags"] == {
        "env": "prod",
        "team": "a",
    }
    assert boto.list_tags_for_resource(resourceArn=sub["arn"])["tags"] == {"user": "dr-who"}
    untagged = boto.untag_resource(resourceArn=domain["arn"], tagKeys=["env", "absent"])
    assert untagged["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert boto.get_domain(domainId=domain["domainId"])["tags"] == {"team": "a"}


def test_untag_takes_up_to_50_tag_keys(control: ControlServer, boto: Any) -> None:
    """TagKeyList holds 1..50 keys: 50 are removed at once, 51 are a 400 naming tagKeys."""
    keys = [f"k{i}" for i in range(51)]
    domain = boto.create_domain(name="clinic", tags={key: "v" for key in keys[:50]})
    status, code, message = client_error(
        boto.untag_resource, resourceArn=domain["arn"], tagKeys=keys
    )
    assert (status, code) == (400, "ValidationException")
    assert (
        "at 'tagKeys' failed to satisfy constraint: Member must have length less than or "
        "equal to 50" in message
    )
    untagged = boto.untag_resource(resourceArn=domain["arn"], tagKeys=keys[:50])
    assert untagged["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert boto.list_tags_for_resource(resourceArn=domain["arn"])["tags"] == {}


def test_tagging_an_unknown_arn_is_resource_not_found(control: ControlServer, boto: Any) -> None:
    """A well-formed ARN naming nothing (or another account) is 404 naming the ARN."""
    domain = boto.create_domain(name="clinic")
    unknown = "arn:aws:health-agent:us-east-1:000000000000:domain/dom-unknown0000000000000"
    foreign = domain["arn"].replace("000000000000", "111122223333")
    for arn in (unknown, foreign):
        status, code, message = client_error(boto.tag_resource, resourceArn=arn, tags={"a": "b"})
        assert (status, code) == (404, "ResourceNotFoundException")
        assert arn in message


def test_malformed_arn_is_validation_error_naming_resource_arn(
    control: ControlServer, boto: Any
) -> None:
    """An ARN of no domain or subscription form: 400 naming 'resourceArn' and the form."""
    status, code, message = client_error(boto.list_tags_for_resource, resourceArn="arn:nope")
    assert (status, code) == (400, "ValidationException")
    assert "Value 'arn:nope' at 'resourceArn' failed to satisfy constraint" in message
    assert "domain/<domainId>" in message


def test_tag_constraints_are_reported_together(control: ControlServer, boto: Any) -> None:
    """Tag keys over 128 and values over 256 characters are each a violation naming 'tags'."""
    domain = boto.create_domain(name="clinic")
    status, code, message = client_error(
        boto.tag_resource, resourceArn=domain["arn"], tags={"k" * 129: "v", "ok": "v" * 257}
    )
    assert (status, code) == (400, "ValidationException")
    assert message.startswith("2 validation errors detected: ")
    assert "at 'tags' failed to satisfy constraint: Map keys must satisfy constraint: " in message
    assert "at 'tags.ok' failed to satisfy constraint: Member must have length less" in message


# --- Validation through boto3 -------------------------------------------------------------
def test_invalid_domain_id_is_validation_error_naming_the_member(
    control: ControlServer, boto: Any
) -> None:
    """A domainId breaking the DomainId pattern is 400 naming 'domainId' and the pattern."""
    status, code, message = client_error(boto.get_domain, domainId="dom-UPPERCASE000000000")
    assert (status, code) == (400, "ValidationException")
    assert message == (
        "1 validation error detected: Value 'dom-UPPERCASE000000000' at 'domainId' failed to "
        "satisfy constraint: Member must satisfy regular expression pattern: (hai-|dom-)[a-z0-9]+"
    )


def test_invalid_subscription_id_is_validation_error_naming_the_member(
    control: ControlServer, boto: Any
) -> None:
    """A subscriptionId of the wrong length is 400 naming 'subscriptionId'."""
    domain_id = boto.create_domain(name="clinic")["domainId"]
    _, code, message = client_error(
        boto.activate_subscription, domainId=domain_id, subscriptionId="sub-has_underscores_here_"
    )
    assert code == "ValidationException"
    assert "Value 'sub-has_underscores_here_' at 'subscriptionId' failed to satisfy" in message


def test_create_domain_violations_are_reported_together(control: ControlServer, boto: Any) -> None:
    """Every violation of one CreateDomain is listed in one ValidationException."""
    status, code, message = client_error(
        boto.create_domain,
        name="n" * 65,
        kmsKeyArn="arn:aws:kms:us-east-1:1:key/x",
        webAppSetupConfiguration={
            "ehrRole": "not-a-role",
            "idcInstanceId": "ssoins-1",
            "idcRegion": "us-east-1",
        },
    )
    assert (status, code) == (400, "ValidationException")
    assert message.startswith("3 validation errors detected: ")
    assert "at 'name' failed to satisfy constraint: Member must have length less than" in message
    assert "at 'kmsKeyArn' failed to satisfy constraint: Member must satisfy" in message
    assert "at 'webAppSetupConfiguration.ehrRole' failed to satisfy constraint" in message


#: CreateWebAppConfiguration's members: a value of each at its longest (the role
#: ARN padded to 2048 characters), and that longest length.
WEB_APP_AT_MAX = {
    "ehrRole": ("arn:aws:iam::111122223333:role/" + "r" * 2017, 2048),
    "idcInstanceId": ("i" * 256, 256),
    "idcRegion": ("r" * 64, 64),
}
WEB_APP = {member: value for member, (value, _) in WEB_APP_AT_MAX.items()}


@pytest.mark.parametrize("member", WEB_APP_AT_MAX)
def test_web_app_setup_members_take_their_model_lengths_and_not_a_character_more(
    control: ControlServer, boto: Any, member: str
) -> None:
    """Each member of webAppSetupConfiguration is taken at its longest, refused a
    character longer (boto3 sends it: it checks no maximum), and refused empty
    (boto3 refuses that itself, so on the wire), naming the member and its limit."""
    longest, limit = WEB_APP_AT_MAX[member]
    created = boto.create_domain(name=f"at-{member}", webAppSetupConfiguration=WEB_APP)
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    status, code, message = client_error(
        boto.create_domain,
        name="over",
        webAppSetupConfiguration={**WEB_APP, member: longest + "x"},
    )
    assert (status, code) == (400, "ValidationException")
    assert message.startswith("1 validation error detected: "), message
    assert (
        f"at 'webAppSetupConfiguration.{member}' failed to satisfy constraint: "
        f"Member must have length less than or equal to {limit}" in message
    )
    body = json.dumps({"name": "empty", "webAppSetupConfiguration": {**WEB_APP, member: ""}})
    status, headers, answer = raw_request(control, "POST", "/domain", body.encode())
    assert status == 400 and headers["x-amzn-errortype"] == "ValidationException"
    assert (
        f"at 'webAppSetupConfiguration.{member}' failed to satisfy constraint: "
        "Member must have length greater than or equal to 1" in answer["message"]
    )
    assert [domain.name for domain in control.registry.list_domains().items] == [f"at-{member}"]


# --- The wire, below boto3 ----------------------------------------------------------------
def test_error_response_has_status_errortype_header_and_json_message(
    control: ControlServer,
) -> None:
    """An error is its status, x-amzn-errortype: <shape name> and {"message": ...}."""
    status, headers, body = raw_request(control, "GET", "/domain/dom-unknown0000000000000")
    assert status == 404
    assert headers["x-amzn-errortype"] == "ResourceNotFoundException"
    assert headers["content-type"] == "application/json"
    assert headers["x-amzn-requestid"]
    assert body == {"message": "Domain dom-unknown0000000000000 not found"}


def test_unknown_json_member_is_rejected_naming_it(control: ControlServer) -> None:
    """A body member the model does not have is a ValidationException naming it."""
    body = json.dumps({"name": "clinic", "nmae": "typo"}).encode()
    status, headers, answer = raw_request(control, "POST", "/domain", body)
    assert status == 400 and headers["x-amzn-errortype"] == "ValidationException"
    assert answer["message"] == (
        "1 validation error detected: Value at 'nmae' failed to satisfy constraint: Member "
        "must be one of the modeled members [name, kmsKeyArn, tags, webAppSetupConfiguration]"
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "Request body must be valid JSON: Expecting property name"),
        (b"[1, 2]", "Request body must be a JSON object, got a JSON array"),
        (b'"clinic"', "Request body must be a JSON object, got a JSON string"),
        (b'{"name": NaN}', "Request body must be valid JSON: NaN is not a JSON value"),
        (b'{"name": -Infinity}', "Request body must be valid JSON: -Infinity is not a JSON"),
        (b"\xff{}", "Request body must be valid JSON"),
    ],
    ids=["not-json", "array", "string", "nan", "infinity", "not-utf8"],
)
def test_body_that_is_not_a_json_object_is_a_serialization_exception(
    control: ControlServer, body: bytes, message: str
) -> None:
    """A body the protocol cannot read is refused before any member is validated, as
    AWS's REST-JSON services do: 400 SerializationException."""
    status, headers, answer = raw_request(control, "POST", "/domain", body)
    assert status == 400
    assert headers["x-amzn-errortype"] == "SerializationException"
    assert answer["message"].startswith(message)


def test_thousands_of_leading_zeros_are_still_a_number(control: ControlServer) -> None:
    """Java reads 000...05 as 5, and so does the emulator, however many zeros lead."""
    status, _, answer = raw_request(control, "GET", "/domain?maxResults=" + "0" * 5000 + "5")
    assert status == 200, answer


def test_nesting_deeper_than_pythons_recursion_is_a_validation_error(
    control: ControlServer,
) -> None:
    """json.loads takes 1,200 levels; the checks after it must not recurse into them."""
    body = b'{"name": "clinic", "tags": ' + b"[" * 1200 + b"]" * 1200 + b"}"
    status, headers, answer = raw_request(control, "POST", "/domain", body)
    assert status == 400 and headers["x-amzn-errortype"] == "ValidationException", answer


def test_nesting_past_the_json_reader_is_said_to_be_so(control: ControlServer) -> None:
    """Valid JSON nested 5,000 deep: not called invalid JSON with Python's words."""
    body = b'{"name": "clinic", "tags": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    status, headers, answer = raw_request(control, "POST", "/domain", body)
    assert status == 400 and headers["x-amzn-errortype"] == "SerializationException", answer
    assert answer["message"] == (
        "Request body must nest its arrays and objects less deeply: the emulator's JSON "
        "reader stops at about 1,500 levels"
    )


def _token(document: dict[str, Any]) -> str:
    import base64

    raw = json.dumps(document, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    ("method", "path", "body", "where", "rule"),
    [
        ("GET", "/domain?maxResults=" + "9" * 5000, None, "maxResults", "less than or equal to"),
        ("GET", "/domain?maxResults=-" + "9" * 30, None, "maxResults", "greater than or equal"),
        (
            "GET",
            "/domain?nextToken=" + _token({"op": "ListDomains", "scope": "", "after": 2**70}),
            None,
            "nextToken",
            "",
        ),
        ("POST", "/domain", b'{"name": ' + b"9" * 5000 + b"}", "name", "Member must be a string"),
        ("POST", "/domain", b'{"name": "\\ud800"}', "name", "unpaired surrogate"),
        (
            "POST",
            "/domain",
            b'{"name": "clinic", "tags": {"\\udc80": "v"}}',
            "tags.\\udc80",
            "unpaired surrogate",
        ),
    ],
    ids=[
        "max-results-5000-digits",
        "max-results-negative",
        "token-past-int64",
        "name-of-5000-digits",
        "name",
        "tag-key",
    ],
)
def test_values_past_what_a_parser_or_database_holds_are_validation_errors(
    control: ControlServer, method: str, path: str, body: bytes | None, where: str, rule: str
) -> None:
    """Numbers of thousands of digits, positions past 64 bits and unpaired surrogates are
    400 ValidationExceptions naming the member, not internal errors."""
    status, headers, answer = raw_request(control, method, path, body)
    assert status == 400 and headers["x-amzn-errortype"] == "ValidationException", answer
    assert f"at '{where}'" in answer["message"] and rule in answer["message"]
    assert len(answer["message"]) < 3000


@pytest.mark.parametrize(
    ("operation", "created"),
    [("", 201), ("/{subscriptionId}/activate", 200), ("/{subscriptionId}/deactivate", 200)],
    ids=["create-subscription", "activate", "deactivate"],
)
def test_members_on_bodiless_operations_are_rejected(
    control: ControlServer, operation: str, created: int
) -> None:
    """CreateSubscription and (De)ActivateSubscription have no body members: any JSON
    member is refused (the request does nothing), {} is fine."""
    domain_id = control.registry.create_domain(name="clinic").domain_id
    sub_id = control.registry.create_subscription(domain_id).subscription_id
    path = f"/domains/{domain_id}/subscriptions" + operation.format(subscriptionId=sub_id)
    status, headers, answer = raw_request(control, "POST", path, b'{"force": true}')
    assert status == 400 and headers["x-amzn-errortype"] == "ValidationException"
    assert "at 'force' failed to satisfy constraint" in answer["message"]
    assert len(control.registry.list_subscriptions(domain_id).items) == 1
    assert raw_request(control, "POST", path, b"{}")[0] == created


def test_a_partial_web_app_setup_configuration_is_refused_naming_what_it_lacks(
    control: ControlServer,
) -> None:
    """CreateWebAppConfiguration is optional, but given, all three members are required
    (boto3 checks this before sending; any other client reaches the server)."""
    web_app = {"ehrRole": "arn:aws:iam::111122223333:role/ehr"}
    body = json.dumps({"name": "clinic", "webAppSetupConfiguration": web_app}).encode()
    status, headers, answer = raw_request(control, "POST", "/domain", body)
    assert status == 400 and headers["x-amzn-errortype"] == "ValidationException"
    assert answer["message"].startswith("2 validation errors detected: ")
    for member in ("idcInstanceId", "idcRegion"):
        assert (
            f"Value null at 'webAppSetupConfiguration.{member}' failed to satisfy constraint: "
            "Member must not be null" in answer["message"]
        )
    assert control.registry.list_domains().items == ()


def test_untag_without_tag_keys_is_validation_error(control: ControlServer) -> None:
    """UntagResource needs tagKeys in the query string; without it: 'tagKeys' must not be null."""
    arn = control.registry.create_domain(name="clinic").arn
    status, _, answer = raw_request(control, "DELETE", "/tags/" + arn.replace("/", "%2F"))
    assert status == 400
    assert (
        "Value null at 'tagKeys' failed to satisfy constraint: Member must not be null"
        in (answer["message"])
    )


def test_max_results_that_is_not_an_integer_is_validation_error(control: ControlServer) -> None:
    """maxResults=ten is a ValidationException naming maxResults."""
    status, _, answer = raw_request(control, "GET", "/domain?maxResults=ten")
    assert status == 400
    assert (
        "Value 'ten' at 'maxResults' failed to satisfy constraint: Member must be an integer"
        in (answer["message"])
    )


def test_routes_do_not_collide_with_stream_or_admin_paths(control: ControlServer) -> None:
    """No control route matches the scribe-stream operations or /_emulator/ paths."""
    others = [
        ("POST", "/medical-scribe-stream/"),
        (
            "GET",
            "/medical-scribe-stream/domain/dom-0123456789abcdefghij/subscription/"
            "sub-0123456789abcdefghijk/session/0f0e0d0c-0b0a-4900-8800-aabbccddeeff",
        ),
        ("GET", "/_emulator/health"),
        ("POST", "/_emulator/reset"),
    ]
    for route in control_routes(control.registry):
        for method, path in others:
            scope = {"type": "http", "method": method, "path": path, "root_path": ""}
            assert route.matches(scope)[0] is Match.NONE, (route.path, path)


# --- The real SDK over HTTP/2 -------------------------------------------------------------
async def test_sdk_runs_the_domain_subscription_and_tag_operations_over_h2(
    control: ControlServer,
) -> None:
    """aws-sdk-connecthealth drives every operation over h2 and reads the model's shapes."""
    async with await make_client(endpoint_url=control.url, ca_file=control.ca_file) as client:
        domain = await client.create_domain(sdk.CreateDomainInput(name="clinic", tags={"a": "1"}))
        assert DOMAIN_ID_RE.fullmatch(domain.domain_id) and domain.status == "ACTIVE"
        got = await client.get_domain(sdk.GetDomainInput(domain_id=domain.domain_id))
        assert (got.arn, got.tags, got.created_at) == (domain.arn, {"a": "1"}, domain.created_at)
        listed = await client.list_domains(sdk.ListDomainsInput(max_results=10))
        assert [d.domain_id for d in listed.domains] == [domain.domain_id]

        sub = await client.create_subscription(
            sdk.CreateSubscriptionInput(domain_id=domain.domain_id)
        )
        assert SUBSCRIPTION_ID_RE.fullmatch(sub.subscription_id) and sub.status == "ACTIVE"
        ids = {"domain_id": domain.domain_id, "subscription_id": sub.subscription_id}
        off = await client.deactivate_subscription(sdk.DeactivateSubscriptionInput(**ids))
        assert off.subscription is not None and off.subscription.status == "INACTIVE"
        on = await client.activate_subscription(sdk.ActivateSubscriptionInput(**ids))
        assert on.subscription is not None and on.subscription.status == "ACTIVE"
        one = await client.get_subscription(sdk.GetSubscriptionInput(**ids))
        assert one.subscription is not None and one.subscription.arn == sub.arn
        subs = await client.list_subscriptions(
            sdk.ListSubscriptionsInput(domain_id=domain.domain_id)
        )
        assert [s.subscription_id for s in subs.subscriptions] == [sub.subscription_id]

        await client.tag_resource(sdk.TagResourceInput(resource_arn=sub.arn, tags={"u": "v"}))
        tags = await client.list_tags_for_resource(
            sdk.ListTagsForResourceInput(resource_arn=sub.arn)
        )
        assert tags.tags == {"u": "v"}
        await client.untag_resource(sdk.UntagResourceInput(resource_arn=sub.arn, tag_keys=["u"]))
        tags = await client.list_tags_for_resource(
            sdk.ListTagsForResourceInput(resource_arn=sub.arn)
        )
        assert not tags.tags

        deleted = await client.delete_domain(sdk.DeleteDomainInput(domain_id=domain.domain_id))
        assert deleted.status == "DELETED"
    assert set(control.http_versions) == {"2"}


async def test_sdk_raises_the_modeled_error_classes(control: ControlServer) -> None:
    """The SDK maps x-amzn-errortype onto its ResourceNotFoundException/ValidationException."""
    domain_id = control.registry.create_domain(name="clinic").domain_id
    async with await make_client(endpoint_url=control.url, ca_file=control.ca_file) as client:
        with pytest.raises(sdk.ResourceNotFoundException) as missing:
            await client.get_subscription(
                sdk.GetSubscriptionInput(
                    domain_id=domain_id, subscription_id="sub-000000000000000000000"
                )
            )
        assert "sub-000000000000000000000" in missing.value.message
        with pytest.raises(sdk.ValidationException) as invalid:
            await client.list_subscriptions(
                sdk.ListSubscriptionsInput(domain_id=domain_id, max_results=500)
            )
        assert "at 'maxResults'" in invalid.value.message


async def test_sdk_reports_an_error_its_operation_does_not_model_with_the_shape_id(
    control: ControlServer,
) -> None:
    """GetDomain models only ResourceNotFoundException: a ValidationException is a CallError."""
    async with await make_client(endpoint_url=control.url, ca_file=control.ca_file) as client:
        with pytest.raises(CallError) as failure:
            await client.get_domain(sdk.GetDomainInput(domain_id="dom-UPPERCASE000000000"))
    assert "status: 400" in str(failure.value)
    assert "com.amazonaws.connecthealth#ValidationException" in str(failure.value)


# --- The registry: persistence, seeds, strict checks --------------------------------------
def write_seed(path: Path, text: str = SEED_TEXT) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_state_survives_a_new_registry_on_the_same_file(tmp_path: Path) -> None:
    """Domains, subscriptions (with status) and tags are read back by a new registry."""
    db = tmp_path / "state" / "resources.sqlite3"
    first = ResourceRegistry(db_path=db)
    domain = first.create_domain(name="clinic", tags={"env": "test"})
    sub = first.create_subscription(domain.domain_id)
    first.deactivate_subscription(domain.domain_id, sub.subscription_id)
    first.tag_resource(sub.arn, {"user": "x"})
    first.close()

    second = ResourceRegistry(db_path=db)
    try:
        assert second.get_domain(domain.domain_id) == domain
        again = second.get_subscription(domain.domain_id, sub.subscription_id)
        assert again.status == "INACTIVE"
        assert second.list_tags_for_resource(sub.arn) == {"user": "x"}
        # Creating the same domain again after a restart is still idempotent.
        assert second.create_domain(name="clinic", tags={"env": "test"}) == domain
    finally:
        second.close()


def test_page_tokens_stay_valid_across_a_restart(tmp_path: Path) -> None:
    """A nextToken names a position in the saved state, not in one process."""
    db = tmp_path / "resources.sqlite3"
    first = ResourceRegistry(db_path=db)
    ids = [first.create_domain(name=f"c{i}").domain_id for i in range(3)]
    token = first.list_domains(max_results=2).next_token
    first.close()
    second = ResourceRegistry(db_path=db)
    try:
        page = second.list_domains(max_results=2, next_token=token)
        assert [d.domain_id for d in page.items] == ids[2:]
    finally:
        second.close()


def test_a_file_that_is_not_a_resource_database_is_a_config_error(tmp_path: Path) -> None:
    """Opening a registry on a file that is not SQLite raises ConfigError naming it."""
    bad = tmp_path / "resources.sqlite3"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigError, match="resources.sqlite3"):
        ResourceRegistry(db_path=bad)


def test_seed_file_creates_its_resources_with_their_ids(tmp_path: Path) -> None:
    """load_seed creates the seeded domain, its tags and both subscriptions with their status."""
    registry = ResourceRegistry(db_path=None)
    seeds = registry.load_seed(write_seed(tmp_path / "resources.yaml"))
    assert [s.domain_id for s in seeds] == [SEED_DOMAIN]
    domain = registry.get_domain(SEED_DOMAIN)
    assert (domain.name, dict(domain.tags)) == ("seeded-clinic", {"team": "scribe"})
    assert registry.get_subscription(SEED_DOMAIN, SEED_ACTIVE).status == "ACTIVE"
    inactive = registry.get_subscription(SEED_DOMAIN, SEED_INACTIVE)
    assert inactive.status == "INACTIVE" and inactive.deactivated_at is not None


def test_unchanged_seed_does_not_overwrite_saved_state(tmp_path: Path) -> None:
    """After a restart with the same seed, API changes to seeded resources are kept."""
    db, seed = tmp_path / "resources.sqlite3", write_seed(tmp_path / "resources.yaml")
    first = ResourceRegistry(db_path=db)
    first.load_seed(seed)
    first.deactivate_subscription(SEED_DOMAIN, SEED_ACTIVE)
    extra = first.create_domain(name="made-by-api").domain_id
    first.close()
    second = ResourceRegistry(db_path=db)
    try:
        second.load_seed(seed)
        assert second.get_subscription(SEED_DOMAIN, SEED_ACTIVE).status == "INACTIVE"
        assert second.get_domain(extra).name == "made-by-api"
    finally:
        second.close()


def test_changed_seed_replaces_the_resources_with_its_ids(tmp_path: Path) -> None:
    """A seed whose content changed overwrites the resources it names, and keeps the rest."""
    db, seed = tmp_path / "resources.sqlite3", write_seed(tmp_path / "resources.yaml")
    first = ResourceRegistry(db_path=db)
    first.load_seed(seed)
    first.deactivate_subscription(SEED_DOMAIN, SEED_ACTIVE)
    extra = first.create_domain(name="made-by-api").domain_id
    first.close()
    write_seed(seed, SEED_TEXT.replace("seeded-clinic", "renamed-clinic"))
    second = ResourceRegistry(db_path=db)
    try:
        second.load_seed(seed)
        assert second.get_domain(SEED_DOMAIN).name == "renamed-clinic"
        assert second.get_subscription(SEED_DOMAIN, SEED_ACTIVE).status == "ACTIVE"
        assert second.get_domain(extra).name == "made-by-api"
    finally:
        second.close()


def test_reset_clears_api_resources_and_reapplies_the_seed(tmp_path: Path) -> None:
    """reset() deletes everything, then the seed file's resources come back as written."""
    registry = ResourceRegistry(db_path=None)
    registry.load_seed(write_seed(tmp_path / "resources.yaml"))
    registry.delete_domain(SEED_DOMAIN)
    extra = registry.create_domain(name="made-by-api").domain_id
    registry.reset()
    assert registry.get_subscription(SEED_DOMAIN, SEED_ACTIVE).status == "ACTIVE"
    with pytest.raises(ResourceNotFoundException):
        registry.get_domain(extra)


def test_reset_keeps_the_domain_and_subscription_of_a_session_it_keeps(tmp_path: Path) -> None:
    """A reset keeps the sessions whose stream is open; under --strict-resources their
    Get then found their domain gone (a shared emulator: another job's reset)."""
    registry = ResourceRegistry(db_path=None)
    registry.load_seed(write_seed(tmp_path / "resources.yaml"))
    live = registry.create_domain(name="streaming-now").domain_id
    live_sub = registry.create_subscription(live).subscription_id
    other_sub = registry.create_subscription(live).subscription_id
    registry.tag_resource(registry.domain_arn(live), {"job": "b"})
    gone = registry.create_domain(name="finished").domain_id
    registry.reset(keep=[(live, live_sub)])
    assert registry.get_subscription(live, live_sub).status == "ACTIVE"
    assert registry.list_tags_for_resource(registry.domain_arn(live)) == {"job": "b"}
    for domain, subscription in [(gone, None), (live, other_sub)]:
        with pytest.raises(ResourceNotFoundException):
            if subscription is None:
                registry.get_domain(domain)
            else:
                registry.get_subscription(domain, subscription)
    assert registry.get_subscription(SEED_DOMAIN, SEED_ACTIVE).status == "ACTIVE"
    registry.reset()  # kept once, not for ever
    with pytest.raises(ResourceNotFoundException):
        registry.get_domain(live)


def test_reset_with_an_invalid_seed_raises_and_deletes_nothing(tmp_path: Path) -> None:
    """If the seed file became invalid, reset() raises ResourcesError and keeps the state."""
    seed = write_seed(tmp_path / "resources.yaml")
    registry = ResourceRegistry(db_path=None)
    registry.load_seed(seed)
    extra = registry.create_domain(name="made-by-api").domain_id
    write_seed(seed, "domains: 5\n")
    with pytest.raises(ResourcesError):
        registry.reset()
    assert registry.get_domain(extra).name == "made-by-api"


def test_missing_seed_file_seeds_nothing(tmp_path: Path) -> None:
    """load_seed on a path that does not exist returns [] and creates nothing."""
    registry = ResourceRegistry(db_path=None)
    assert registry.load_seed(tmp_path / "absent.yaml") == []
    assert registry.list_domains().items == ()


def test_shipped_resources_file_seeds_nothing() -> None:
    """fixtures/resources.yaml is valid and empty, so default behaviour is unchanged."""
    assert load_resources_file(FIXTURES / "resources.yaml") == []


def test_empty_resources_file_is_no_resources(tmp_path: Path) -> None:
    """A file with only comments seeds nothing."""
    assert load_resources_file(write_seed(tmp_path / "r.yaml", "# nothing yet\n")) == []


def test_json_resources_file_is_read_by_suffix(tmp_path: Path) -> None:
    """A .json resources file is read as JSON."""
    document = {"domains": [{"domainId": SEED_DOMAIN, "name": "json-clinic"}]}
    path = write_seed(tmp_path / "resources.json", json.dumps(document))
    assert load_resources_file(path) == [SeedDomain(domain_id=SEED_DOMAIN, name="json-clinic")]


SEED_PROBLEMS = {
    "domain-id-pattern": (
        "domains:\n  - domainId: dom-UPPER000000000000000\n    name: x\n",
        "r.yaml:2: domains[0].domainId: Member must satisfy regular expression pattern: "
        "(hai-|dom-)[a-z0-9]+, got a string ('dom-UPPER000000000000000')",
    ),
    "missing-name": (
        f"domains:\n  - domainId: {SEED_DOMAIN}\n",
        "r.yaml:2: domains[0]: missing required key 'name'",
    ),
    "unknown-key-with-hint": (
        f"domains:\n  - domainId: {SEED_DOMAIN}\n    name: x\n    tag: {{a: b}}\n",
        "r.yaml:4: domains[0].tag: unknown key 'tag' (did you mean 'tags'?); "
        "allowed: domainId, name, kmsKeyArn, tags, subscriptions",
    ),
    "subscription-id-pattern": (
        f"domains:\n  - domainId: {SEED_DOMAIN}\n    name: x\n    subscriptions:\n"
        "      - subscriptionId: sub-has_underscores_here_\n",
        "r.yaml:5: domains[0].subscriptions[0].subscriptionId: Member must satisfy regular "
        "expression pattern: sub-[a-zA-Z0-9]{21}, got a string ('sub-has_underscores_here_')",
    ),
    "status-deleted": (
        f"domains:\n  - domainId: {SEED_DOMAIN}\n    name: x\n    subscriptions:\n"
        f"      - {{subscriptionId: {SEED_ACTIVE}, status: DELETED}}\n",
        "r.yaml:5: domains[0].subscriptions[0].status: Member must satisfy enum value set: "
        "[ACTIVE, INACTIVE], got a string ('DELETED')",
    ),
    "duplicate-subscription-id": (
        f"domains:\n  - domainId: {SEED_DOMAIN}\n    name: x\n    subscriptions:\n"
        f"      - subscriptionId: {SEED_ACTIVE}\n      - subscriptionId: {SEED_ACTIVE}\n",
        f"r.yaml:6: domains[0].subscriptions[1].subscriptionId: duplicate id '{SEED_ACTIVE}' "
        "(first at line 5)",
    ),
    "tag-value-too-long": (
        f"domains:\n  - domainId: {SEED_DOMAIN}\n    name: x\n    tags:\n      k: {'v' * 257}\n",
        "r.yaml:5: domains[0].tags.k: tag value: Member must have length less than or equal "
        "to 256, got a string ('vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv...')",
    ),
    "domains-not-a-list": (
        "domains: {a: 1}\n",
        "r.yaml:1: domains: must be a list of domains, got a mapping",
    ),
    "invalid-yaml": (
        "domains: [\n",
        "r.yaml:2: invalid YAML: expected the node content, but found '<stream end>'",
    ),
}


@pytest.mark.parametrize(("text", "problem"), SEED_PROBLEMS.values(), ids=SEED_PROBLEMS.keys())
def test_seed_file_problems_name_file_line_and_field(
    tmp_path: Path, text: str, problem: str
) -> None:
    """load_resources_file raises ResourcesError (a ConfigError) with file:line: field: message."""
    path = write_seed(tmp_path / "r.yaml", text)
    with pytest.raises(ResourcesError) as failure:
        load_resources_file(path)
    assert isinstance(failure.value, ConfigError)
    assert [str(p) for p in failure.value.problems] == [f"{tmp_path}/{problem}"]


def test_seed_file_reports_every_problem_at_once(tmp_path: Path) -> None:
    """Problems of several domains are all listed in one ResourcesError."""
    text = "domains:\n  - {domainId: bad, name: x}\n  - {domainId: dom-also-bad, name: ''}\n"
    with pytest.raises(ResourcesError) as failure:
        load_resources_file(write_seed(tmp_path / "r.yaml", text))
    fields = [p.field for p in failure.value.problems]
    assert fields.count("domains[0].domainId") == 2  # too short and not the pattern
    assert "domains[1].domainId" in fields and "domains[1].name" in fields


@pytest.fixture
def seeded(tmp_path: Path) -> ResourceRegistry:
    registry = ResourceRegistry(db_path=None)
    registry.load_seed(write_seed(tmp_path / "resources.yaml"))
    return registry


def test_check_stream_accepts_an_active_subscription_of_its_domain(
    seeded: ResourceRegistry,
) -> None:
    """check_stream returns None for a known domain and an ACTIVE subscription of it."""
    assert seeded.check_stream(domain_id=SEED_DOMAIN, subscription_id=SEED_ACTIVE) is None


def test_check_stream_unknown_domain_is_resource_not_found_naming_it(
    seeded: ResourceRegistry,
) -> None:
    """An unknown domain is ResourceNotFoundException naming the domain id."""
    with pytest.raises(ResourceNotFoundException, match="dom-unknown0000000000000"):
        seeded.check_stream(domain_id="dom-unknown0000000000000", subscription_id=SEED_ACTIVE)


def test_check_stream_unknown_subscription_is_resource_not_found_naming_it(
    seeded: ResourceRegistry,
) -> None:
    """An unknown subscription, or one of another domain, is ResourceNotFoundException."""
    other = seeded.create_domain(name="other").domain_id
    foreign = seeded.create_subscription(other).subscription_id
    for sub_id in ("sub-000000000000000000000", foreign):
        with pytest.raises(ResourceNotFoundException, match=sub_id):
            seeded.check_stream(domain_id=SEED_DOMAIN, subscription_id=sub_id)


def test_check_stream_deactivated_subscription_is_validation_exception(
    seeded: ResourceRegistry,
) -> None:
    """An INACTIVE subscription fails a stream with ValidationException, not a look-up."""
    with pytest.raises(ValidationException, match=f"{SEED_INACTIVE}.*INACTIVE"):
        seeded.check_stream(domain_id=SEED_DOMAIN, subscription_id=SEED_INACTIVE)
    seeded.check_stream(domain_id=SEED_DOMAIN, subscription_id=SEED_INACTIVE, require_active=False)


def test_check_stream_follows_deactivation_and_deletion(seeded: ResourceRegistry) -> None:
    """check_stream sees API changes at once: deactivated fails, deleted is not found."""
    seeded.deactivate_subscription(SEED_DOMAIN, SEED_ACTIVE)
    with pytest.raises(ValidationException):
        seeded.check_stream(domain_id=SEED_DOMAIN, subscription_id=SEED_ACTIVE)
    seeded.delete_domain(SEED_DOMAIN)
    with pytest.raises(ResourceNotFoundException, match=SEED_DOMAIN):
        seeded.check_stream(domain_id=SEED_DOMAIN, subscription_id=SEED_ACTIVE)
