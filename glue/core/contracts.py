"""The names two processes must agree on, written once: each side imports them from here.

The glue service, the hub, a session's steps and the Helm chart run apart and
meet only through these: the hub API paths of ours the glue calls, the name of
a user's autosave branch (the session pushes it, the glue lists and deletes
it, the git component guards it), the pod's containers, ports and Secret keys
(the hub writes them, the glue reads a container's log, the chart's
NetworkPolicy opens a port), and the key a session's git component presents
to the glue. A leaf: it imports nothing of the package.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import socket

# -- the hub's API of ours, below the hub's `/hub/api/` (glue.hub.serversapi,
# glue.hub.autosaveapi), as the glue's hub client (glue.service.hubapi) and the culler
# (glue.hub.culler) call it
SERVERS_API = "notebooks/servers"  # GET <SERVERS_API>/<user>: one read of a user's servers
AUTOSAVE_API = "notebooks/autosave"  # GET <AUTOSAVE_API>/<user>/<server>: what a stop saves
# the hub's own server API again, whose DELETE autosaves first (the glue's and the culler's stops):
# DELETE <SAVING_API>/users/<user>/servers/<server>
SAVING_API = "notebooks/saving"
# a server's pause (glue.hub.pauseapi): POST <PAUSE_API>/users/<user>/servers/<server>
PAUSE_API = "notebooks/pause"
# the culler's root: the saving API's, whose server DELETE pauses or stops as
# `culling.idleAction` says (glue.hub.pauseapi)
CULLING_API = "notebooks/culling"
# the hub service of the chart's pre-delete hook (glue.service.drain) is `<service name><this>`:
# the chart reads its token by that name ("renku-notebooks.drainServiceName" in
# templates/_helpers.tpl), the hub gives it its role (glue.hub.kubesetup)
DRAIN_SUFFIX = "-drain"

# -- JupyterHub's own REST answers that the glue reads by their text: the hub's API gives
# errors no code, only a status and a sentence. They are JupyterHub internals as much as
# those of glue.hub.internals (whose docstring lists both), written here because the glue
# service may not import glue.hub; tests/test_hub_internals.py checks each against the
# pinned hub (jupyterhub==5.5.0), so an upgrade that rewords one fails there.
# what the hub answers for an API path that nothing serves (its catch-all `API404`): a hub
# without our extra_handlers answers our paths so. Its own handlers answer a bare 404 like
# this one for an unknown user too; ours always add an `error` (glue.service.hubapi tells
# the two apart)
HUB_NO_SUCH_PATH = {"status": 404, "message": "Not Found"}
# in the 400 of a launch (POST users/<u>/servers/<s>) past `named_server_limit_per_user`
HUB_TOO_MANY_SERVERS = "maximum"
# in the 400 of a launch of a server that runs ("<user>:<server> is already running") or is
# stopping ("... is pending stop")
HUB_ALREADY_RUNNING = "already running"
HUB_PENDING = "pending"
# how the hub's progress stream begins the message of its `failed` event, before the
# spawner's exception ("Spawn failed: <exception>")
HUB_SPAWN_FAILED = "Spawn failed:"

# -- the keys of a server's user_options in the hub: what the glue asks for (USER_OPTIONS,
# glue.core.launch checks them on both sides), and what the spawners write back for the glue
# to show (SPAWNER_OPTIONS)
# written by the spawner into the hub's user_options after a start: where the workspace's
# unsaved work came from (the server model's `restored_from`)
RESTORED_FROM = "restored_from"
# written by the spawner after a start that found an autosave branch it did not restore (its
# tip not an autosave this service signed for the user): why, for the server model's
# `restore_refused`
RESTORE_REFUSED = "restore_refused"
# written by the Kubernetes spawner at the start: the server's pod (KubeSpawner's `pod_name`),
# whose log the glue reads (glue.service.podlogs)
POD_NAME = "pod_name"
# written by the Kubernetes spawner while a pod that a stop could not delete may still run:
# why (the glue then answers a stop with `stop_failed`)
STOP_FAILED = "stop_failed"
# written by the local spawner at the start and whenever its poll finds the kernel's OOM killer
# at work in the server's memory cgroup: {"limit", "oom_kills", "server_killed"} (the server
# model's `memory`)
MEMORY = "memory"
# written by the local spawner at the start and whenever its poll finds the workspace's own
# filesystem past (or back below) its warning threshold: {"limit", "near_limit", "used_percent",
# "autosave"} (the server model's `disk`)
DISK = "disk"
# written by both spawners as a launch goes, and by the hub's proxy once its route is in:
# {phase: seconds} of the phases below that ran in the hub, the session and the server (the
# server model's `phases`)
PHASES = "phases"
# written by both spawners at a pause, beside the spawner state of the same names (below):
# when it was paused and the bytes its kept workspace holds, for the glue to show
HIBERNATED_AT = "hibernated_at"
HIBERNATED_DISK = "hibernated_disk_bytes"
SPAWNER_OPTIONS = frozenset(
    {
        RESTORED_FROM,
        RESTORE_REFUSED,
        POD_NAME,
        STOP_FAILED,
        MEMORY,
        DISK,
        PHASES,
        HIBERNATED_AT,
        HIBERNATED_DISK,
    }
)

# -- a launch's phases, each recorded where it happens (glue.core.metrics'
# `notebooks_launch_phase_seconds{phase}`), in launch order; some overlap (the hub holds the
# spawn call while the spawner works)
# the glue: its checks until it calls the hub (access, commit, image), then that call
PHASE_CHECKS = "checks"
PHASE_SPAWN_CALL = "spawn_call"
# the spawner: its own re-check of the launch and the workspace's set-up
PHASE_HUB_CHECKS = "hub_checks"
# the clone step (Kubernetes: the pod's scheduling, image pulls and init containers instead)
PHASE_CLONE = "clone"
# the session step: the git component's start, the restore check and the checkout's remote
PHASE_SESSION = "session"
# the server's process from its start to its first HTTP answer
PHASE_SERVER = "server"
# the hub's route for the server added to the proxy
PHASE_PROXY_ROUTE = "proxy_route"
# Kubernetes only, from the pod's events: scheduled, images pulled, init containers done,
# containers started, ready
PHASE_POD_SCHEDULED = "pod_scheduled"
PHASE_POD_PULLED = "pod_pulled"
PHASE_POD_INIT = "pod_init"
PHASE_POD_STARTED = "pod_started"
PHASE_POD_READY = "pod_ready"
LAUNCH_PHASES = (
    PHASE_CHECKS,
    PHASE_SPAWN_CALL,
    PHASE_HUB_CHECKS,
    PHASE_POD_SCHEDULED,
    PHASE_POD_PULLED,
    PHASE_POD_INIT,
    PHASE_CLONE,
    PHASE_SESSION,
    PHASE_POD_STARTED,
    PHASE_SERVER,
    PHASE_POD_READY,
    PHASE_PROXY_ROUTE,
)
USER_OPTIONS = frozenset(
    {
        "namespace",
        "project",
        "commit_sha",
        "notebook",
        "profile",
        "image",
        "image_fallback",
        "image_status",
        "lfs",
        "autosave",
    }
)

# -- a paused ("hibernated") server: a hub stop WITHOUT the named server's removal, which
# keeps the server, its user_options (image, profile) and its spawner state, and the
# spawner keeps the whole workspace (the embedded default's directory and disk image, a
# PersistentVolumeClaim on Kubernetes). The keys of its spawner state
# (CommitSpawnerMixin.get_state/load_state), each absent while the server is not paused,
# are HIBERNATED_AT (when it was paused: seconds since the epoch, a float) and
# HIBERNATED_DISK (how many bytes its kept workspace holds on the disk, measured at the
# pause: an int), written above
# the `state` of a server in the API (PATCH <prefix>/<ns>/<project>/<sha> asks for one)
STATE_HIBERNATED = "hibernated"
STATE_RUNNING = "running"
# the file in a workspace's `.git` that says a session was opened on it for one commit
# (glue.session.workspace): a start that finds it reopens the workspace as it is, with no
# clone and no autosave restore; both spawners' steps decide by it
OPENED_MARK = "renku-notebooks-opened"

# -- the embedded default's local processes: the loopback socket the local spawner binds for a
# server's notebook server (or its git component) and holds until the server is stopped,
# inherited by that process as this file descriptor number (glue.session.serverapp,
# glue.session.gitproxy): no other process can take the port before it listens or after it
# ends while the hub still routes there
LISTEN_FD_ENV = "NOTEBOOKS_LISTEN_FD"


def inherited_listener() -> socket.socket | None:
    """In the process: the listening socket it inherited from the hub, named by
    LISTEN_FD_ENV; None when none was passed. Taken out of the environment, and closed on
    exec, so that nothing the process starts has it."""
    fd = os.environ.pop(LISTEN_FD_ENV, "")
    if not fd:
        return None
    held = socket.socket(fileno=int(fd))
    held.set_inheritable(False)
    held.setblocking(False)  # as tornado's and asyncio's own listening sockets
    return held


# -- autosave branches: `<prefix>/<user>/<sha>` (config `autosave.branchPrefix`)
SHA = re.compile(r"[0-9a-f]{40}")
# characters a ref name may not hold (git check-ref-format), quoted as %XX in branch names
_REF_UNSAFE = re.compile(r"[\x00-\x20\x7f~^:?*\[\\%@]|\.(?=\.)|^\.|\.lock$|/$")


def autosave_branch(prefix: str, user: str, sha: str) -> str:
    """`<prefix>/<user>/<sha>`; characters a ref may not hold are quoted as %XX."""
    if not SHA.fullmatch(sha):
        raise ValueError("a launched commit is a full 40-character lowercase sha")
    return autosave_user_prefix(prefix, user) + sha


def autosave_user_prefix(prefix: str, user: str) -> str:
    """`<prefix>/<user>/`: where one user's autosave branches are, and no other user's."""
    safe = _REF_UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), user)
    return f"{prefix.strip('/')}/{safe or '%00'}/"


# -- a server's pod on Kubernetes (glue.hub.podspec builds it)
CLONE_CONTAINER = "git-clone"  # the clone step (init): its log is the glue's to show
SESSION_CONTAINER = "git-session"  # the restore of the autosave (init)
NOTEBOOK_CONTAINER = "notebook"  # the single-user server: its log is the glue's to show
PROXY_CONTAINER = "git-proxy"  # the git token component and the autosave control (sidecar)
# the component, on the pod's loopback only
PROXY_PORT = 7480
# the sidecar's autosave control, on the pod's IP: the chart's NetworkPolicy opens it to the
# hub only (its `renku-notebooks.autosavePort`, checked by tests/test_chart.py)
CONTROL_PORT = 7481
CONTROL_PORT_NAME = "autosave"
# the keys of the pod's Secret, each a file of the containers that mount it
TOKEN_KEY = "token"  # the user's GitLab token
SECRET_KEY = "session-secret"  # what the notebook's git presents to the component
COMPONENT_KEY = "component-key"  # what the component presents to the glue's -/git-token
HUB_TOKEN_KEY = "hub-token"  # the server's hub token: the hub refreshes the login on its use
CA_KEY = "ca.crt"  # the system store plus provider.caBundle, when the operator gave one
CONTROL_KEY = "control-secret"  # what the hub presents to the sidecar's control listener
# the autosave branch's signing key (its own Secret on Kubernetes; a private file locally)
AUTOSAVE_KEY = "autosave-key"

# -- what a server's git component presents to the glue's `-/git-token`
_COMPONENT_KEY_CONTEXT = b"renku-notebooks git token component key v1"


def component_key(api_token: str, user: str, server: str) -> str:
    """The key a server's component presents; only holders of the service token can mint it
    (the hub writes it for the component, the glue checks it)."""
    derived = hmac.new(api_token.encode(), _COMPONENT_KEY_CONTEXT, hashlib.sha256).digest()
    return hmac.new(derived, f"{user}/{server}".encode(), hashlib.sha256).hexdigest()
