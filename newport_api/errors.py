"""The errors the client raises, each with one sentence an artist can act on.

``str(error)`` is always that sentence.  Technical detail for logs and bug
reports goes into ``error.detail``.  Neither ever contains the API key: the
transport redacts it before an error is built (see ``http.Transport``).
"""

from __future__ import annotations


class NewportError(Exception):
    """Base of every error the client raises.

    ``retryable`` says whether repeating the same call later may succeed; the
    retry loop only ever repeats calls that are safe to repeat.
    """

    retryable = False
    kind = "error"

    def __init__(self, message: str, *, detail: str = "", code: int | None = None,
                 http_status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.code = code
        self.http_status = http_status

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code}, http_status={self.http_status})"


class ConfigurationError(NewportError):
    """Something in the settings must change before any request can be made."""

    kind = "configuration"


class InsecureURLError(ConfigurationError):
    kind = "insecure_url"


class AuthenticationError(NewportError):
    """The service refused the key: blank, malformed or invalid."""

    kind = "authentication"


class QuotaError(NewportError):
    """Out of credits, or the account's quota is used up."""

    kind = "quota"


class RateLimitedError(QuotaError):
    """Too many requests; waiting ``retry_after`` seconds should help."""

    retryable = True
    kind = "rate_limited"

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class InvalidParameterError(NewportError):
    """The service rejected a parameter of the request."""

    kind = "invalid_parameter"


class TaskFailedError(NewportError):
    """The service ran the task and it failed; ``reason`` is the service's own words."""

    kind = "task_failed"

    def __init__(self, message: str, *, reason: str = "", **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.reason = reason


class NoResultError(TaskFailedError):
    """The task reported success but named no result video."""

    kind = "no_result"


class ResultExpiredError(NewportError):
    """The result was deleted by the service (results live about a day)."""

    kind = "result_expired"


class SubmitUncertainError(NewportError):
    """A submit may have reached the service, but no task id came back.

    Never retried automatically: a second submit is a second bill.
    """

    kind = "submit_uncertain"


class ServiceUnavailableError(NewportError):
    """The service answered with a server error or something that is not its API."""

    retryable = True
    kind = "service_unavailable"


class NetworkError(NewportError):
    """The service could not be reached, or the connection broke or stalled."""

    retryable = True
    kind = "network"


class NotConnectedError(NetworkError):
    """The connection never opened, so the request certainly did not arrive."""


class TLSError(NewportError):
    """The server's certificate failed verification; a CA bundle may be missing, retrying will not help.

    The request never left this machine, so even a submit is certain not to have arrived.
    """

    kind = "tls"


class StillProcessingError(NewportError):
    """The task stayed in the service's queue or in processing beyond the runner's patience.

    The task id is kept: Retry polls the same task again and pays nothing more.
    """

    kind = "still_processing"


class StorageError(NewportError):
    """The upload storage refused the file."""

    kind = "storage"


class ProtocolError(NewportError):
    """The service answered in a shape this client does not understand."""

    kind = "protocol"


class CancelledError(NewportError):
    """The job was cancelled by the artist (or the program is shutting down)."""

    kind = "cancelled"
