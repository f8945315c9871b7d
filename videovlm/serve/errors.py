"""Errors as the OpenAI API shapes them, so OpenAI clients raise their own exceptions for ours.

Every refused request is an :class:`APIError`: an HTTP status and one line saying what is wrong
and what to do, sent as ``{"error": {"message", "type", "param", "code"}}``. The ``type`` follows
from the status (:data:`TYPES`), in one place.
"""

from __future__ import annotations

from typing import Any

TYPES: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("authentication_error", "invalid_api_key"),
    403: ("invalid_request_error", "forbidden"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "too_large"),
    500: ("server_error", None),
    503: ("server_error", "overloaded"),
}


class APIError(Exception):
    """A request the server refuses or could not serve, with the status it is answered with."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        kind, code = TYPES.get(self.status, ("invalid_request_error", None))
        return {"error": {"message": self.message, "type": kind, "param": self.param,
                          "code": self.code or code}}
