"""The errors the client raises.

Every error is a :class:`ConsortError`. A daemon that cannot be reached raises
:class:`DaemonUnreachable`; a daemon that answers with an error status raises an
:class:`ApiError` subclass chosen by the status, carrying the daemon's own message.
"""

from __future__ import annotations

from typing import Dict, Type


class ConsortError(Exception):
    """Anything that went wrong talking to a Consort daemon."""


class DaemonUnreachable(ConsortError, ConnectionError):
    """The daemon did not answer: not running, wrong address, or the connection was lost."""


class ApiError(ConsortError):
    """The daemon answered with an error status and said why.

    Attributes:
        status: The HTTP status code (or the one the WebSocket error stands for).
        message: The daemon's ``{"error": ...}`` text.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return f"{self.message} (HTTP {self.status})" if self.status else self.message


class BadRequest(ApiError):
    """400 or 413: the input is invalid (a bad key, a value too large, a bad option)."""


class Unauthorized(ApiError):
    """401: the daemon wants ``Authorization: Bearer TOKEN`` (pass ``token=`` or set
    ``CONSORT_API_TOKEN``)."""


class Forbidden(ApiError):
    """403: the key is reserved."""


class NotFound(ApiError):
    """404: no such key, node or route."""


class Conflict(ApiError):
    """409: refused in the current state (a follower broadcasting, a write refused)."""


class ProviderError(ApiError):
    """502: the service provider answered with an error, or was lost during the call."""


class Unavailable(ApiError):
    """503: no leader, no provider, the owner of a key unreachable, or the node stopping."""


class DeliveryTimeout(ApiError, TimeoutError):
    """504: a call or a reliable send did not complete in time."""


_BY_STATUS: Dict[int, Type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: BadRequest,
    502: ProviderError,
    503: Unavailable,
    504: DeliveryTimeout,
}


def error_for(status: int, message: str) -> ApiError:
    """The error for an answer with ``status`` and the daemon's ``message``."""
    return _BY_STATUS.get(status, ApiError)(status, message)
