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

    def __init_subclass__(cls, *, status: int = 0, code: str = "", **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if status:
            cls.status = status
        if code:
            cls.code = code

    def body(self) -> dict[str, str]:
        return {"error": self.code, "message": self.message}


# Each kind names its status and default code in its class line (`__init_subclass__`): the
# list below is the whole error model of the glue, one line a kind.


class BadRequest(GlueError, status=400, code="bad_request"):
    """The request itself is wrong: nothing was asked of the hub or the provider."""


class Unauthorized(GlueError, status=401, code="unauthorized"):
    """No identity, or one the hub or GitLab no longer accepts."""


class Forbidden(GlueError, status=403, code="forbidden"):
    """Known caller, not allowed."""


class NotFound(GlueError, status=404, code="not_found"):
    """Nothing there, or nothing the caller may see (the two look alike on purpose)."""


class Conflict(GlueError, status=409, code="conflict"):
    """The server is in a state that does not allow this now."""


class AutosaveFailed(GlueError, status=409, code="autosave_failed"):
    """A server's unsaved work could not be pushed: it keeps running, nothing is stopped."""


class PayloadTooLarge(GlueError, status=413, code="payload_too_large"):
    """A body over `launch.maxBodyBytes`."""


class TooManyServers(GlueError, status=429, code="too_many_servers"):
    """The hub's limit of servers per user is reached."""


class UpstreamError(GlueError, status=502, code="upstream_error"):
    """The hub or the git provider failed; we fail closed."""


class UpstreamUnavailable(UpstreamError, status=503, code="upstream_unavailable"):
    """The hub or the git provider could not be reached."""


class UpstreamTimeout(UpstreamError, status=504, code="upstream_timeout"):
    """The hub or the git provider did not answer in time."""


class SpawnFailed(UpstreamError, status=502, code="spawn_failed"):
    """The hub took the launch and its spawn failed at once; the message says why."""


class StopFailed(UpstreamError, status=502, code="stop_failed"):
    """The hub could not stop the server (its pod could not be deleted): the server is kept."""
