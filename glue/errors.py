"""The errors every layer raises; routes turn them into `{"error", "message"}` responses."""

from __future__ import annotations


class LoginRequired(Exception):
    """A browser without a session: the answer is the hub's OAuth flow, not an error page."""


class GlueError(Exception):
    """An error with an HTTP status, a stable code and a sentence for people."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status

    def body(self) -> dict[str, str]:
        return {"error": self.code, "message": self.message}


class BadRequest(GlueError):
    status, code = 400, "bad_request"


class Unauthorized(GlueError):
    status, code = 401, "unauthorized"


class Forbidden(GlueError):
    status, code = 403, "forbidden"


class NotFound(GlueError):
    status, code = 404, "not_found"


class Conflict(GlueError):
    status, code = 409, "conflict"


class PayloadTooLarge(GlueError):
    status, code = 413, "payload_too_large"


class TooManyServers(GlueError):
    status, code = 429, "too_many_servers"


class UpstreamError(GlueError):
    """The hub or the git provider failed; we fail closed."""

    status, code = 502, "upstream_error"


class UpstreamUnavailable(UpstreamError):
    status, code = 503, "upstream_unavailable"


class UpstreamTimeout(UpstreamError):
    status, code = 504, "upstream_timeout"


class SpawnFailed(UpstreamError):
    """The hub took the launch and its spawn failed at once; the message says why."""

    status, code = 502, "spawn_failed"
