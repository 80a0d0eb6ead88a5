"""Why a launch failed, in words a user understands, and what to do next.

The hub says "Spawn failed: <the spawner's exception>"; the spawners word
their exceptions (the access and commit checks, "Clone failed: <git's
message>", the kubelet's pull failure, KubeSpawner's "did not start in N
seconds"), and KubeSpawner's progress carries the scheduler's events
("0/3 nodes are available: 3 Insufficient memory"). This leaf (only the
hub's wording comes from glue.core.contracts) turns those into one reason
code, a sentence and a next step: the launch page and the server model's
`failure` field say the same.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from glue.core.contracts import HUB_SPAWN_FAILED

MAX_CHARS = 600
LOG_LINES = 10


@dataclass(frozen=True)
class Failure:
    reason: str
    message: str
    next_step: str
    log: tuple[str, ...] = ()

    def model(self) -> dict[str, Any]:
        """The server model's `failure` field."""
        return {**asdict(self), "log": list(self.log)}

    def sentence(self) -> str:
        return f"{self.message} {self.next_step}"


# (reason, pattern on the hub's message or the launch's last events, next step); first match
RULES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    (
        "unknown_commit",
        re.compile(r"Commit [0-9a-f]{40} was not found"),
        "Check the link: the commit may never have been pushed, or was removed by a rebase.",
    ),
    (
        "no_access",
        re.compile(
            r"cannot see it|needs \w+ access|does not include reading its code"
            r"|GitLab login has expired|No GitLab login is stored"
        ),
        "Ask a maintainer of the project for Developer access, or log in again.",
    ),
    (
        "clone_failed",
        re.compile(r"^Clone failed|Cloning took longer"),
        "Try again in a moment; if it keeps failing, the project's repository (or its LFS "
        "files) cannot be fetched from here: tell the project's maintainers.",
    ),
    (
        "image_not_found",
        re.compile(r"cannot be pulled.*(manifest unknown|not found|NotFound|does not exist)", re.I),
        "The commit's image is not in the registry (any more): launch with the default image, "
        "or ask the project's maintainers to rebuild it.",
    ),
    (
        "image_pull_failed",
        re.compile(r"cannot be pulled|ErrImagePull|ImagePullBackOff|Failed to pull image"),
        "Try again in a moment, or launch with the default image; if it keeps failing, the "
        "registry refuses the cluster: tell the operators.",
    ),
    (
        "unschedulable",
        re.compile(r"nodes are available|FailedScheduling|Insufficient (cpu|memory|nvidia)", re.I),
        "No machine has room for the chosen resources: choose a smaller profile, or try "
        "again later.",
    ),
    (
        "start_timeout",
        re.compile(r"did not start in|didn't respond|never showed up|^Timeout$|timed out", re.I),
        "Try again; if it keeps happening, choose a smaller profile or tell the operators.",
    ),
    (
        "server_exited",
        re.compile(r"Spawner failed to start|exited|status=\d+"),
        "Read the log below: the project's environment may be broken. Fix it, or try again.",
    ),
)
UNKNOWN_NEXT = "Launch it again."
OUT_OF_MEMORY_NEXT = (
    "Launch it again with a profile that has more memory, or make the notebook use less "
    "(load less data at a time)."
)
UNKNOWN = (
    "This server is not running any more: its launch failed or it stopped, and JupyterHub "
    "no longer knows why."
)


def _clean(text: str | None) -> str:
    text = " ".join(str(text or "").split()).removeprefix(HUB_SPAWN_FAILED).strip()
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 1] + "…"


def explain(
    message: str | None,
    events: list[str] | tuple[str, ...] = (),
    log: list[str] | None = None,
    memory: dict[str, Any] | None = None,
) -> Failure:
    """The reason for the hub's failure message; the scheduler's events decide between a
    timeout and a server that never fit, and an exited server shows its last log lines.
    A server the OOM killer ended (the server model's `memory.server_killed`, decided by the
    local spawner) says so whatever the hub says: it only saw the server exit."""
    said = _clean(message)
    tail = tuple((log or [])[-LOG_LINES:])
    if memory and memory.get("server_killed"):
        return Failure(
            "out_of_memory",
            f"Stopped: used more than the profile's memory ({memory.get('limit')}).",
            OUT_OF_MEMORY_NEXT,
            tail,
        )
    if not said:
        return Failure("unknown", UNKNOWN, UNKNOWN_NEXT, tail)
    for reason, pattern, next_step in RULES:
        if pattern.search(said):
            if reason == "start_timeout" and any(RULES[5][1].search(e) for e in events):
                scheduler = next(e for e in events if RULES[5][1].search(e))
                return Failure("unschedulable", _clean(scheduler), RULES[5][2], tail)
            return Failure(reason, _end(said), next_step, tail)
    return Failure("unknown", _end(said), UNKNOWN_NEXT, tail)


def _end(text: str) -> str:
    return text if text.endswith((".", "!", "?", "…")) else text + "."
