"""Domain errors with their HTTP status (mapped once in ``app.main``)."""

from __future__ import annotations


class ServiceError(Exception):
    """A client-visible error: ``status_code`` and a precise ``detail``."""

    status_code = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequestError(ServiceError):
    """Malformed request (empty file, unsafe zip path, not a zip)."""

    status_code = 400


class NotFoundError(ServiceError):
    """Unknown job or model."""

    status_code = 404


class ConflictError(ServiceError):
    """The request conflicts with the resource's state (cancelling a finished job)."""

    status_code = 409


class PayloadTooLargeError(ServiceError):
    """Upload above the configured size limit."""

    status_code = 413


class UnprocessableError(ServiceError):
    """Well-formed but unusable input (no CIF in a zip, unknown model, bad labels)."""

    status_code = 422


class UnavailableError(ServiceError):
    """A dependency the request needs is missing (no model registered)."""

    status_code = 503


class UnauthorizedError(ServiceError):
    """No valid API key (401 with ``WWW-Authenticate: Bearer``)."""

    status_code = 401


class TooManyRequestsError(ServiceError):
    """A per-key limit was hit (429); ``retry_after`` in s goes to the ``Retry-After`` header."""

    status_code = 429

    def __init__(self, detail: str, retry_after: float = 1.0) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
