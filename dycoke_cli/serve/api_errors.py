"""Failures as an OpenAI-compatible server reports them: a status and `{"error": {"message", "type",
"param", "code"}}`, never a traceback.

Clients (the `openai` package among them) pick their exception class from the status and show the
message, so the status must say what kind of failure it was and the message what to change.
"""

from __future__ import annotations

from dycoke_cli.errors import BadInputError, DycokeError, describe

TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
         404: "not_found_error", 405: "invalid_request_error", 408: "timeout_error",
         413: "invalid_request_error", 429: "rate_limit_error", 500: "server_error", 503: "server_error",
         504: "timeout_error"}


class ApiError(Exception):
    """A request that ends with `status` and one line of `message`; `headers` go with the response
    (Retry-After on a 429, WWW-Authenticate on a 401)."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": TYPES.get(self.status, "server_error"),
                          "param": None, "code": self.code}}


def api_error(exc: BaseException) -> ApiError:
    """Any failure as an ApiError: bad input (a setting, a video) is the client's 400; anything else,
    a failure of the server while running valid input, is a 500 with the one-line description."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, BadInputError):
        return ApiError(400, str(exc), "invalid_value")
    if isinstance(exc, DycokeError):
        return ApiError(500, str(exc), "runtime_failure")
    return ApiError(500, describe(exc), "internal_error")
