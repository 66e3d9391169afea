"""Every error the emulator raises, in one tree.

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
    │   └── InternalServerException          500
    └── ConfigError                   a scenario, rule or fixture file is invalid

A :class:`ServiceError` becomes wire bytes in exactly one place: before the
response starts, :func:`emulator.stream` turns it into an HTTP status with
``x-amzn-errortype: <code>``; once the stream is open it becomes an event-stream
exception message whose ``:exception-type`` is :attr:`ServiceError.stream_member`.
A :class:`FramingError` met inside a stream is reported as a
``validationException``.
"""

from __future__ import annotations

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
    "ConfigError",
    "SERVICE_ERRORS",
    "service_error",
]


class EmulatorError(Exception):
    """Base of every error raised on purpose by the emulator."""


class FramingError(EmulatorError):
    """The bytes of an event-stream message are malformed."""


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
    code = "ValidationException"
    status = 400
    stream_member = "validationException"


class AccessDeniedException(ServiceError):
    code = "AccessDeniedException"
    status = 401


class ServiceQuotaExceededException(ServiceError):
    code = "ServiceQuotaExceededException"
    status = 402


class ResourceNotFoundException(ServiceError):
    code = "ResourceNotFoundException"
    status = 404


class ThrottlingException(ServiceError):
    code = "ThrottlingException"
    status = 429


class InternalServerException(ServiceError):
    code = "InternalServerException"
    status = 500
    stream_member = "internalFailureException"


class SerializationException(ServiceError):
    """A request body the protocol cannot read (not JSON, not an object).

    Not a shape of the model, but what AWS's REST-JSON services answer for a body
    they cannot deserialize, before any member is validated.
    """

    code = "SerializationException"
    status = 400


class NotEmulatedError(ServiceError):
    """An operation of the service model the emulator does not implement.

    Not a shape of the model: the code and status are S3's for an unimplemented
    feature (``NotImplemented``, 501), which clients report as they are and do
    not retry.
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
