"""The one exception the routes turn into a JSON error response."""

from __future__ import annotations


class ApiError(Exception):
    """A request the server refuses: ``status`` is the HTTP code, the message names the problem."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}
