"""Every error the emulator raises, in one tree, and the one place they become wire bytes.

::

    EmulatorError
    ├── FramingError                  the event-stream bytes themselves are wrong
    │   ├── PreludeCRCError           prelude CRC32 does not match
    │   ├── MessageCRCError           message CRC32 does not match
    │   ├── InvalidLengthError        total/headers length fields are impossible
    │   ├── FrameTooLargeError        a message over the event-stream limits
    │   ├── InvalidHeaderError        a header that cannot be decoded or encoded
    │   └── TruncatedMessageError     input ended inside a message
    ├── ServiceError                  an error of the service model (code, status)
    │   ├── ValidationException              400
    │   ├── AccessDeniedException            401
    │   ├── ServiceQuotaExceededException    402
    │   ├── ResourceNotFoundException        404
    │   ├── ThrottlingException              429
    │   ├── InternalServerException          500
    │   ├── SerializationException           400  a body that is not JSON (protocol)
    │   ├── UnknownOperationException        404  no operation at that path (protocol)
    │   └── NotEmulatedError                 501  ``NotImplemented``: not emulated
    └── ConfigError                   a scenario, rule or fixture file is invalid

A :class:`ServiceError` becomes wire bytes in exactly one place. Before a
response starts, :func:`http_error` gives its status, headers
(``x-amzn-errortype: <code>``) and JSON body, which each transport sends as
they are: :func:`emulator.stream.error_response` over ASGI, the control plane's
Starlette responses, the HTTP/1.1 refusals of :mod:`emulator.hypercorn_h11`,
the shutdown answer of :mod:`emulator.hypercorn_h2` and the raw bytes of
:mod:`emulator.hypercorn_tcp`. Once a stream is open, :func:`stream_member_of`
names the output-stream union member that carries an error (a
:class:`FramingError` is a ``validationException``), and
:func:`emulator.events.exception_message` encodes it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

__all__ = [
    "EmulatorError",
    "FramingError",
    "PreludeCRCError",
    "MessageCRCError",
    "InvalidLengthError",
    "FrameTooLargeError",
    "InvalidHeaderError",
    "TruncatedMessageError",
    "ServiceError",
    "ValidationException",
    "AccessDeniedException",
    "ServiceQuotaExceededException",
    "ResourceNotFoundException",
    "ThrottlingException",
    "InternalServerException",
    "SerializationException",
    "UnknownOperationException",
    "NotEmulatedError",
    "ConfigError",
    "SERVICE_ERRORS",
    "service_error",
    "http_error",
    "stream_member_of",
]


class EmulatorError(Exception):
    """Base of every error raised on purpose by the emulator."""


class FramingError(EmulatorError):
    """The bytes of an event-stream message are malformed.

    Met in a stream's input, it ends the stream with ``stream_member``: the
    service reports input it cannot read as a ``validationException``.
    """

    stream_member: str = "validationException"


class PreludeCRCError(FramingError):
    """The CRC32 of the 8-byte prelude does not match the prelude CRC field."""


class MessageCRCError(FramingError):
    """The CRC32 of the whole message does not match its trailing CRC field."""


class InvalidLengthError(FramingError):
    """The total or headers length in the prelude cannot describe a message."""


class FrameTooLargeError(FramingError):
    """A message's payload or headers exceed the event-stream limits."""


class InvalidHeaderError(FramingError):
    """A header has an unknown type, a bad length or a value out of range."""


class TruncatedMessageError(FramingError):
    """The input ended part-way through a message."""


class ServiceError(EmulatorError):
    """An error of the service model.

    ``code`` is the model's shape name (sent as ``x-amzn-errortype``), ``status``
    its HTTP status, and ``stream_member`` the output-stream union member that
    carries it in-stream, or ``None`` where the model has no such member.
    """

    code: str = "InternalServerException"
    status: int = 500
    stream_member: str | None = None

    def __init__(self, message: str) -> None:
        # A message quoting what a client sent may hold the surrogates that stand
        # for its undecodable bytes (surrogateescape): written as escapes, so
        # that the message is valid UTF-8 in every JSON it reaches (the
        # response, and the admin API's list of rejected requests).
        if not message.isascii():
            message = message.encode("utf-8", "backslashreplace").decode("utf-8")
        super().__init__(message)
        self.message = message


class ValidationException(ServiceError):
    """``ValidationException``: 400; in-stream ``validationException``."""

    code = "ValidationException"
    status = 400
    stream_member = "validationException"


class AccessDeniedException(ServiceError):
    """``AccessDeniedException``: 401; no in-stream member."""

    code = "AccessDeniedException"
    status = 401


class ServiceQuotaExceededException(ServiceError):
    """``ServiceQuotaExceededException``: 402; no in-stream member."""

    code = "ServiceQuotaExceededException"
    status = 402


class ResourceNotFoundException(ServiceError):
    """``ResourceNotFoundException``: 404; no in-stream member."""

    code = "ResourceNotFoundException"
    status = 404


class ThrottlingException(ServiceError):
    """``ThrottlingException``: 429; no in-stream member."""

    code = "ThrottlingException"
    status = 429


class InternalServerException(ServiceError):
    """``InternalServerException``: 500; in-stream ``internalFailureException``."""

    code = "InternalServerException"
    status = 500
    stream_member = "internalFailureException"


class SerializationException(ServiceError):
    """``SerializationException``: 400; a request body that is not a JSON object.

    Not a shape of the model, but what AWS's REST-JSON services answer for a body
    they cannot deserialize, before any member is validated.
    """

    code = "SerializationException"
    status = 400


class UnknownOperationException(ServiceError):
    """``UnknownOperationException``: 404 (405 for a method); a request naming no operation.

    Not a shape of the model, but the code AWS's REST-JSON protocol answers a
    path no route serves with (404), or a method its route does not take (405,
    given as :func:`http_error`'s ``status``); the SDKs and boto3 report it as it is.
    """

    code = "UnknownOperationException"
    status = 404


class NotEmulatedError(ServiceError):
    """``NotImplemented``: 501; an operation or HTTP feature the emulator does not implement.

    An operation of the model, or a request's transfer coding. Not a shape of
    the model: the code and status are S3's for an unimplemented feature, which
    clients report as they are and do not retry.
    """

    code = "NotImplemented"
    status = 501


class ConfigError(EmulatorError):
    """A scenario, rule or fixture is invalid; the message names file and field."""


#: The six modeled errors of StartMedicalScribeListeningSession, by shape name.
SERVICE_ERRORS: dict[str, type[ServiceError]] = {
    cls.code: cls
    for cls in (
        ValidationException,
        AccessDeniedException,
        ServiceQuotaExceededException,
        ResourceNotFoundException,
        ThrottlingException,
        InternalServerException,
    )
}


def service_error(code: str, message: str) -> ServiceError:
    """Return the modeled error named ``code`` (a shape name) carrying ``message``.

    Raises :class:`KeyError` when ``code`` is not one of :data:`SERVICE_ERRORS`.
    """
    return SERVICE_ERRORS[code](message)


def http_error(
    error: ServiceError,
    *,
    status: int | None = None,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Return ``error`` in the service's REST-JSON error shape: ``(status, headers, body)``.

    The status is ``error.status`` unless ``status`` is given (a 405
    :class:`UnknownOperationException`, a 431 :class:`ValidationException`).
    The headers are ``content-type: application/json``, ``content-length``
    and ``x-amzn-errortype: <code>`` (what the SDKs map onto the modeled
    class), then ``headers`` as given (request ids, ``allow``, ``connection``).
    The body is ``{"message":"..."}``: compact JSON, non-ASCII escaped, so that it
    is ASCII whatever the message quotes. Raises nothing.
    """
    body = json.dumps({"message": error.message}, separators=(",", ":")).encode()
    return (
        error.status if status is None else status,
        [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
            (b"x-amzn-errortype", error.code.encode()),
            *headers,
        ],
        body,
    )


def stream_member_of(error: BaseException) -> str:
    """Return the output-stream union member that reports ``error`` in-stream.

    A :class:`FramingError` or :class:`ServiceError` gives its ``stream_member``,
    or ``validationException`` where the model has none for it (a refused event
    signature is the client's fault); any other exception, a bug of the
    emulator's, ``internalFailureException``.
    """
    if isinstance(error, (FramingError, ServiceError)):
        return error.stream_member or "validationException"
    return "internalFailureException"
