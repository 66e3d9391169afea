"""The control-plane operations of domains, subscriptions and tags, as Starlette routes.

Thin handlers over :class:`emulator.resources.ResourceRegistry`. Each follows the model's
rest-json binding (method, URI, status code, where each member travels), checks the
request as the model constrains it and reports every violation in one
``ValidationException`` in the AWS style of :mod:`emulator.shapes`::

    1 validation error detected: Value 'x' at 'domainId' failed to satisfy constraint:
    Member must have length greater than or equal to 20

Members are named by their wire names (path label, query parameter or JSON member);
JSON members of a structure as ``webAppSetupConfiguration.ehrRole``, list elements as
``tagKeys.N.member``. Unknown JSON members are refused, like the stream's; JSON ``null``
is an absent member; unknown query parameters are ignored (proxies add some). A
:class:`~emulator.errors.ServiceError` is answered by :func:`service_error_response`:
what :func:`emulator.errors.http_error` makes of it (status, ``x-amzn-errortype:
<shape>``, ``{"message":...}``), with an ``x-amzn-requestid``.

None of these twelve operations has a host prefix in the model (the scribe-stream
operations have ``streaming.``, the job operations ``runtime.``), so boto3 and the SDK
send them to the endpoint as is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, NoReturn
from urllib.parse import unquote_to_bytes

from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route

from .errors import (
    InternalServerException,
    NotEmulatedError,
    SerializationException,
    ServiceError,
    ValidationException,
    http_error,
)
from .ids import new_request_id
from .logs import get_logger
from .requestbody import read_limited, unfinished_body
from .resources import (
    ARN_FORM,
    ARN_PATTERN,
    DEFAULT_MAX_RESULTS,
    DOMAIN_ID,
    DOMAIN_NAME,
    DOMAIN_STATUS,
    KMS_KEY_ARN,
    MAX_RESULTS,
    SUBSCRIPTION_ID,
    TAG_KEY,
    TAG_KEYS_MAX,
    TAG_VALUE,
    WEB_APP_SETUP_MEMBERS,
    ResourceRegistry,
)
from .shapes import TextShape, raise_if, validation_error, violation
from .validation import integer_text, json_int, lone_surrogate

__all__ = [
    "MAX_REQUEST_BODY",
    "NOT_EMULATED",
    "ControlPlane",
    "body_too_large",
    "control_routes",
    "routing_scope",
    "service_error_response",
]

log = get_logger("medscribe.control")

#: Largest request body read: the biggest valid one (CreateDomain with many tags) is
#: far smaller, and anything larger is refused before it is parsed.
MAX_REQUEST_BODY = 1024 * 1024

# Longer values are echoed cut short, so a message stays readable.
# An integer query parameter, as the service's parser reads one (ASCII digits only).
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")
# A value never echoed: unknown members and whole bodies.
_UNSHOWN = object()


# --- Violations ---------------------------------------------------------------------------
class _Violations:
    """Collects every violation of one request, reported in one ValidationException."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, value: object, where: str, rule: str) -> None:
        self.items.append(violation(value, f"'{where}'", rule))

    def text(self, value: object, where: str, shape: TextShape, *, required: bool) -> None:
        if value is None:
            if required:
                self.add(None, where, "Member must not be null")
            return
        self.items.extend(shape.violations(value, f"'{where}'"))

    def raise_if(self) -> None:
        raise_if(self.items)


def _check_tags(tags: object, out: _Violations, *, required: bool) -> None:
    """TagMap: keys 1..128 characters, values 0..256."""
    if tags is None:
        if required:
            out.add(None, "tags", "Member must not be null")
        return
    if not isinstance(tags, dict):
        out.add(tags, "tags", "Member must be a map of strings to strings")
        return
    for key, value in tags.items():
        for rule in TAG_KEY.rules(key):
            out.add(key, "tags", f"Map keys must satisfy constraint: [{rule}]")
        out.text(value, f"tags.{key}", TAG_VALUE, required=True)


def _check_web_app(value: object, out: _Violations) -> None:
    """CreateWebAppConfiguration: optional, but with all three members when given."""
    where = "webAppSetupConfiguration"
    if value is None:
        return
    if not isinstance(value, dict):
        out.add(value, where, "Member must be an object")
        return
    _check_members(value, WEB_APP_SETUP_MEMBERS, out, prefix=f"{where}.")
    for name, shape in WEB_APP_SETUP_MEMBERS.items():
        out.text(value.get(name), f"{where}.{name}", shape, required=True)


def _check_members(
    value: dict[str, Any], known: Collection[str], out: _Violations, *, prefix: str = ""
) -> None:
    # Whether the service ignores unknown members is not documented; refusing them
    # catches client typos, which is what an emulator is for (as the stream does).
    for name in value:
        if name not in known:
            rule = f"Member must be one of the modeled members [{', '.join(known)}]"
            out.add(_UNSHOWN, f"{prefix}{name}", rule)


def _check_arn(value: str, out: _Violations) -> None:
    # The model types resourceArn as a plain String; naming the expected form is the
    # useful answer to a malformed one (a well-formed unknown ARN is not found instead).
    if ARN_PATTERN.fullmatch(value) is None:
        out.add(value, "resourceArn", f"Member must be an ARN of the form {ARN_FORM}")


def _query_one(request: Request, name: str, out: _Violations) -> str | None:
    """Return the query parameter ``name``, or None if absent; one given more than once
    is a violation (and None): the model binds it to one value, and taking one of
    the copies (``?status=ACTIVE&status=DELETED`` listed the deleted domains) would
    answer a question the client did not ask."""
    values = request.query_params.getlist(name)
    if len(values) > 1:
        out.add(values, name, f"Member must be given once, got {len(values)} values")
        return None
    return values[0] if values else None


def _query_int(request: Request, name: str, out: _Violations) -> int | None:
    """Return the integer query parameter ``name`` (MAX_RESULTS range), or None if absent."""
    text = _query_one(request, name, out)
    if text is None:
        return None
    if not _INTEGER_TEXT.fullmatch(text):
        out.add(text, name, "Member must be an integer")
        return None
    low, high = MAX_RESULTS
    if len(text.lstrip("+-").lstrip("0")) > 18:  # out of range; int() refuses 4,300 digits
        below = text.startswith("-")
        rule = f"greater than or equal to {low}" if below else f"less than or equal to {high}"
        out.add(text, name, f"Member must have value {rule}")
        return None
    value = integer_text(text)
    if value < low:
        out.add(value, name, f"Member must have value greater than or equal to {low}")
    elif value > high:
        out.add(value, name, f"Member must have value less than or equal to {high}")
    else:
        return value
    return None


async def _json_body(
    request: Request, members: Collection[str], out: _Violations
) -> dict[str, Any]:
    """Return the request's JSON object (``{}`` for no body), noting unknown members in ``out``.

    JSON ``null`` members are dropped: in AWS JSON protocols null is an absent member.
    Raises ValidationException at once for a body that is too large, and
    SerializationException for one that is not a JSON object (NaN and Infinity,
    which Python's parser takes, are not JSON).
    """
    body, received = await read_limited(request, MAX_REQUEST_BODY)
    if received > MAX_REQUEST_BODY:
        raise body_too_large()
    if not body.strip():
        return {}
    try:
        document = json.loads(body, parse_constant=_not_json, parse_int=json_int)
    except RecursionError:
        raise SerializationException(
            "Request body must nest its arrays and objects less deeply: the emulator's JSON "
            "reader stops at about 1,500 levels"
        ) from None
    except ValueError as error:  # not UTF-8, not JSON
        raise SerializationException(f"Request body must be valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise SerializationException(
            f"Request body must be a JSON object, got a JSON {_json_kind(document)}"
        )
    if (where := lone_surrogate(document)) is not None:
        # JSON may escape half a UTF-16 pair (\ud800); no string of the service
        # can hold one, and nothing downstream (SQLite, UTF-8) could store it.
        _fail(where, "Member must be valid Unicode text (it holds an unpaired surrogate)")
    _check_members(document, members, out)
    return {k: v for k, v in document.items() if v is not None}


def _not_json(token: str) -> NoReturn:
    raise ValueError(f"{token} is not a JSON value (Python's extension, not JSON's)")


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return "number"


def body_too_large() -> ValidationException:
    """The refusal of a request body over :data:`MAX_REQUEST_BODY`, read for its
    signature or for its members alike."""
    return _violation("body", f"Request body must be at most {MAX_REQUEST_BODY} bytes")


def _violation(where: str, rule: str) -> ValidationException:
    return validation_error([violation(_UNSHOWN, f"'{where}'", rule)])


def _fail(where: str, rule: str) -> NoReturn:
    raise _violation(where, rule)


# --- Responses ----------------------------------------------------------------------------
def _headers(**extra: str) -> dict[str, str]:
    return {"x-amzn-requestid": new_request_id(), **extra}


def _ok(document: dict[str, Any], *, status: int = 200) -> Response:
    return JSONResponse(document, status_code=status, headers=_headers())


def _no_content() -> Response:
    return Response(status_code=204, headers=_headers())


def service_error_response(
    error: ServiceError, *, status: int | None = None, headers: Mapping[str, str] | None = None
) -> Response:
    """Return ``error`` as a Starlette response, as :func:`emulator.errors.http_error`
    shapes it (``status`` in place of the error's own), with ``headers`` and a new
    ``x-amzn-requestid`` after its own."""
    extra = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in _headers(**(headers or {})).items()
    ]
    status, raw, body = http_error(error, status=status, headers=extra)
    # Given content-type and content-length, Starlette adds neither.
    fields = {name.decode("latin-1"): value.decode("latin-1") for name, value in raw}
    return Response(body, status_code=status, headers=fields)


Handler = Callable[[Request], Awaitable[Response]]


class _LabelConvertor(Convertor[str]):
    """A URI label as sent: empty allowed (the handler then names the member
    that must not be empty), an escaped ``/`` kept inside it (see :func:`routing_scope`)."""

    regex = "[^/]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("medscribe_label", _LabelConvertor())


def routing_scope(scope: Any) -> Any:
    """``scope`` with ``path`` as the client sent it, escapes undecoded.

    Starlette routes on the decoded path, where an id holding an escaped ``/``
    (``dom-a%2Fb``) becomes two segments and no route: the service decodes each
    label after matching, and so do the control plane's handlers (:func:`_operation`).
    """
    raw = scope.get("raw_path")
    if not raw:
        return scope
    return {**scope, "path": raw.split(b"?", 1)[0].decode("latin-1")}


def _decoded(label: str) -> str:
    return unquote_to_bytes(label.encode("latin-1")).decode("utf-8", "replace")


def _operation(handler: Handler) -> Handler:
    """Wrap a handler so that every error it raises is answered as a modeled error."""

    async def endpoint(request: Request) -> Response:
        bare = _stray_slash(request)
        request.scope["path_params"] = {
            name: _decoded(value) for name, value in request.path_params.items()
        }
        try:
            return await handler(request)
        except ServiceError as error:
            if bare is not None and isinstance(error, ValidationException):
                error = ValidationException(
                    f"{error.message} (the path ends in a slash: did you mean "
                    f"{request.method} {bare}, without it?)"
                )
            return service_error_response(error)
        except ClientDisconnect:
            # Its body ended early or stopped arriving. (A body HTTP/1.1 refused has its
            # 400 sent already, and one whose client went reaches no one: this answer
            # is then dropped.)
            return service_error_response(ValidationException(unfinished_body(request.scope)))
        except Exception:
            # A bug here must still reach the client as a modeled error, not a bare 500.
            log.exception("%s %s failed", request.method, request.url.path)
            return service_error_response(InternalServerException("Internal error in the emulator"))

    endpoint.__name__ = handler.__name__
    return endpoint


def _stray_slash(request: Request) -> str | None:
    """The request's path without its trailing slash, when the slash made an empty id
    of what names another operation: ``GET /domain/`` may be ListDomains with a
    stray slash as well as GetDomain without its id (as boto3 sends that), so the
    latter's ValidationException, naming a ``domainId`` a hand-written request
    never meant to send, says so too."""
    path = request.url.path
    if not path.endswith("/") or "" not in request.path_params.values():
        return None
    bare = path.rstrip("/")
    scope = {**request.scope, "path": bare}
    if any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes):
        return bare
    return None


# --- Routes -------------------------------------------------------------------------------
def _ids(request: Request, *, subscription: bool = False) -> tuple[str, str]:
    """The request's domain id (and subscription id), checked."""
    out = _Violations()
    domain_id = request.path_params["domainId"]
    subscription_id = request.path_params.get("subscriptionId", "")
    out.text(domain_id, "domainId", DOMAIN_ID, required=True)
    if subscription:
        out.text(subscription_id, "subscriptionId", SUBSCRIPTION_ID, required=True)
    out.raise_if()
    return domain_id, subscription_id


async def _empty_body(request: Request) -> None:
    """Check that the request's body is empty or ``{}``, as its operation takes no members."""
    out = _Violations()
    await _json_body(request, (), out)
    out.raise_if()


class ControlPlane:
    """The twelve domain, subscription and tag operations, moto's Responses class
    for them: each handler reads and checks its request (every member's breach
    listed in one ValidationException), calls :attr:`registry`, the backend, and
    shapes the model's answer. :func:`control_routes` binds them to their paths.
    """

    def __init__(self, registry: ResourceRegistry) -> None:
        self.registry = registry

    async def create_domain(self, request: Request) -> Response:
        out = _Violations()
        body = await _json_body(
            request, ("name", "kmsKeyArn", "tags", "webAppSetupConfiguration"), out
        )
        out.text(body.get("name"), "name", DOMAIN_NAME, required=True)
        out.text(body.get("kmsKeyArn"), "kmsKeyArn", KMS_KEY_ARN, required=False)
        _check_web_app(body.get("webAppSetupConfiguration"), out)
        _check_tags(body.get("tags"), out, required=False)
        out.raise_if()
        domain = self.registry.create_domain(
            name=body["name"],
            kms_key_arn=body.get("kmsKeyArn"),
            web_app_setup=body.get("webAppSetupConfiguration"),
            tags=body.get("tags"),
        )
        return _ok(domain.to_json(with_tags=False), status=201)

    async def get_domain(self, request: Request) -> Response:
        domain_id, _ = _ids(request)
        return _ok(self.registry.get_domain(domain_id).to_json(with_tags=True))

    async def list_domains(self, request: Request) -> Response:
        out = _Violations()
        status = _query_one(request, "status", out)
        out.text(status, "status", DOMAIN_STATUS, required=False)
        max_results = _query_int(request, "maxResults", out)
        next_token = _query_one(request, "nextToken", out)
        out.raise_if()
        page = self.registry.list_domains(
            status=status,
            max_results=max_results or DEFAULT_MAX_RESULTS,
            next_token=next_token,
        )
        document: dict[str, Any] = {"domains": [domain.summary() for domain in page.items]}
        if page.next_token is not None:
            document["nextToken"] = page.next_token
        return _ok(document)

    async def delete_domain(self, request: Request) -> Response:
        domain_id, _ = _ids(request)
        domain = self.registry.delete_domain(domain_id)
        return _ok({"domainId": domain.domain_id, "arn": domain.arn, "status": domain.status})

    async def create_subscription(self, request: Request) -> Response:
        domain_id, _ = _ids(request)
        await _empty_body(request)
        return _ok(self.registry.create_subscription(domain_id).to_json(), status=201)

    async def get_subscription(self, request: Request) -> Response:
        domain_id, subscription_id = _ids(request, subscription=True)
        subscription = self.registry.get_subscription(domain_id, subscription_id)
        return _ok({"subscription": subscription.to_json()})

    async def list_subscriptions(self, request: Request) -> Response:
        out = _Violations()
        domain_id = request.path_params["domainId"]
        out.text(domain_id, "domainId", DOMAIN_ID, required=True)
        max_results = _query_int(request, "maxResults", out)
        next_token = _query_one(request, "nextToken", out)
        out.raise_if()
        page = self.registry.list_subscriptions(
            domain_id,
            max_results=max_results or DEFAULT_MAX_RESULTS,
            next_token=next_token,
        )
        document: dict[str, Any] = {"subscriptions": [s.to_json() for s in page.items]}
        if page.next_token is not None:
            document["nextToken"] = page.next_token
        return _ok(document)

    async def activate_subscription(self, request: Request) -> Response:
        domain_id, subscription_id = _ids(request, subscription=True)
        await _empty_body(request)
        subscription = self.registry.activate_subscription(domain_id, subscription_id)
        return _ok({"subscription": subscription.to_json()})

    async def deactivate_subscription(self, request: Request) -> Response:
        domain_id, subscription_id = _ids(request, subscription=True)
        await _empty_body(request)
        subscription = self.registry.deactivate_subscription(domain_id, subscription_id)
        return _ok({"subscription": subscription.to_json()})

    async def tag_resource(self, request: Request) -> Response:
        out = _Violations()
        resource_arn = request.path_params["resourceArn"]
        _check_arn(resource_arn, out)
        body = await _json_body(request, ("tags",), out)
        _check_tags(body.get("tags"), out, required=True)
        out.raise_if()
        self.registry.tag_resource(resource_arn, body["tags"])
        return _no_content()

    async def untag_resource(self, request: Request) -> Response:
        out = _Violations()
        resource_arn = request.path_params["resourceArn"]
        _check_arn(resource_arn, out)
        tag_keys = request.query_params.getlist("tagKeys")
        if not tag_keys:
            out.add(None, "tagKeys", "Member must not be null")
        elif len(tag_keys) > TAG_KEYS_MAX:
            rule = f"Member must have length less than or equal to {TAG_KEYS_MAX}"
            out.add(tag_keys, "tagKeys", rule)
        for index, key in enumerate(tag_keys, start=1):
            out.text(key, f"tagKeys.{index}.member", TAG_KEY, required=True)
        out.raise_if()
        self.registry.untag_resource(resource_arn, tag_keys)
        return _no_content()

    async def list_tags_for_resource(self, request: Request) -> Response:
        out = _Violations()
        resource_arn = request.path_params["resourceArn"]
        _check_arn(resource_arn, out)
        out.raise_if()
        return _ok({"tags": self.registry.list_tags_for_resource(resource_arn)})


def control_routes(registry: ResourceRegistry) -> list[Route]:
    """Return the routes of the twelve domain, subscription and tag operations.

    Paths are the model's: ``/domain``, ``/domain/{domainId}``,
    ``/domains/{domainId}/subscriptions[/{subscriptionId}[/activate|/deactivate]]`` and
    ``/tags/{resourceArn}`` (the ARN percent-encoded, slashes included). None overlaps
    ``/medical-scribe-stream/...`` or ``/_emulator/...``.
    """
    plane = ControlPlane(registry)
    domain = "/domains/{domainId:medscribe_label}"
    subscription = f"{domain}/subscriptions/{{subscriptionId:medscribe_label}}"
    # The ARN label is not greedy in the model, so clients percent-encode its "/"; the
    # path converter also takes one sent unescaped.
    tags = "/tags/{resourceArn:path}"
    table: list[tuple[str, str, Handler]] = [
        ("/domain", "POST", plane.create_domain),
        ("/domain", "GET", plane.list_domains),
        ("/domain/{domainId:medscribe_label}", "GET", plane.get_domain),
        ("/domain/{domainId:medscribe_label}", "DELETE", plane.delete_domain),
        (f"{domain}/subscriptions", "POST", plane.create_subscription),
        (f"{domain}/subscriptions", "GET", plane.list_subscriptions),
        (subscription, "GET", plane.get_subscription),
        (f"{subscription}/activate", "POST", plane.activate_subscription),
        (f"{subscription}/deactivate", "POST", plane.deactivate_subscription),
        (tags, "POST", plane.tag_resource),
        (tags, "DELETE", plane.untag_resource),
        (tags, "GET", plane.list_tags_for_resource),
    ]
    table += [
        (path.replace("}", ":medscribe_label}"), method, _not_emulated(name))
        for name, (method, path) in NOT_EMULATED.items()
    ]
    return [Route(path, _operation(handler), methods=[method]) for path, method, handler in table]


#: The model's operations the emulator does not implement, by their HTTP bindings:
#: a request for one is told so by name, not answered as an unknown path.
NOT_EMULATED: dict[str, tuple[str, str]] = {
    "CreateDataset": ("POST", "/domains/{domainId}/datasets"),
    "ListDatasets": ("GET", "/domains/{domainId}/datasets"),
    "GetDataset": ("GET", "/domains/{domainId}/datasets/{datasetId}"),
    "DeleteDataset": ("DELETE", "/domains/{domainId}/datasets/{datasetId}"),
    "StartMedicalCodingJob": ("POST", "/domain/{domainId}/medical-coding-job"),
    "GetMedicalCodingJob": ("GET", "/domain/{domainId}/medical-coding-job/{jobId}"),
    "StartPatientInsightsJob": ("POST", "/domain/{domainId}/patient-insights-job"),
    "GetPatientInsightsJob": ("GET", "/domain/{domainId}/patient-insights-job/{jobId}"),
    "SubmitFeedback": ("POST", "/domain/{domainId}/feedback"),
}


def _not_emulated(operation: str) -> Handler:
    async def refuse(request: Request) -> Response:
        raise NotEmulatedError(
            f"{operation} is not emulated: medscribe-emulator implements the listening "
            "session (StartMedicalScribeListeningSession, GetMedicalScribeListeningSession) "
            "and the domain, subscription and tag operations (see its README, Limits)"
        )

    refuse.__name__ = operation
    return refuse
