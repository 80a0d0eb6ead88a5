"""The one entry point that configures JupyterHub for renku-notebooks.

A `jupyterhub_config.py`, and the Helm chart's `hub.extraConfig`, are a few
lines around `configure(c, load(path))`. It registers the glue as a hub
service with a least-privilege role, lets users reach only that service and
their own servers, and picks the spawner (local processes or KubeSpawner).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import sys
import threading
import time
from inspect import isawaitable
from pathlib import Path
from typing import Any

from glue.core import logsafe, trust
from glue.core.config import SUBDOMAIN_HOST_ENV, Config, host_cookies
from glue.core.origins import loopback, public_origin, single_origin_reason
from glue.hub import sandbox
from glue.hub.culler import KEEP_PAUSED_ENV

PROXY = "configurable-http-proxy"
DEV_SERVICE = "notebooks-dev"
DEV_SCOPES = ["list:users", "read:users", "read:servers", "delete:servers", "tokens!user=demo"]
HUB_TEMPLATES = str(Path(__file__).resolve().parent / "templates")
SLOW_SPAWN_SECONDS = 0.5
# how soon the hub finds a local server dead or its memory exhausted (default 30 s)
LOCAL_POLL_SECONDS = 10
# read the user and the API (projects, commits, registry); clone over HTTPS, and push from
# sessions (through their git token component). The GitLab application must be registered
# with each of them (docs/gitlab.rst).
GITLAB_SCOPES = ["read_user", "read_api", "read_repository", "write_repository"]
AUTH_REFRESH_SECONDS = 300
# a GitLab token (valid 2 hours) with less than this left is renewed before a spawn, so the
# hub-side check and the clone step (at most 10 minutes) never run on a dying token
TOKEN_REFRESH_MARGIN_SECONDS = 900
# user names the hub's URLs can carry: not `.` or `..` (a browser or proxy folds them
# away), nothing that splits or ends a URL path, no whitespace or control characters
USERNAME_PATTERN = r"^(?!\.\.?\Z)[^/\\%?#\s\x00-\x1f\x7f]{1,255}\Z"
SERVICE_SCOPES = ["read:users", "read:servers", "servers", "delete:servers"]
# what jupyterhub-idle-culler needs to find idle servers and remove them (not users)
CULLER_SCOPES = ["list:users", "read:users:activity", "read:servers", "delete:servers"]
# users launch only through the glue: they keep access to their own servers and
# the service, but not `servers!user`, so nobody starts a server around the access checks
USER_SCOPES = [
    "access:servers!user",
    "read:users!user",
    "read:servers!user",
    "users:activity!user",
    "tokens!user",
]


def service_role(config: Config) -> dict[str, Any]:
    scopes = list(SERVICE_SCOPES)
    if config["provider"]["kind"] == "gitlab":
        scopes.append("admin:auth_state")  # read users' GitLab tokens, nothing else
    name = config["service"]["name"]
    return {"name": f"{name}-service", "scopes": scopes, "services": [name]}


def culler_service(config: Config) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The `jupyterhub-idle-culler` hub service and its least-privilege role, from `culling`;
    None when nothing is ever culled. Both ways to run use it: every cull is a DELETE of
    the hub's autosaving API (glue.hub.autosaveapi), which keeps a server whose autosave
    fails, and then a hub stop, which passes through the spawner's autosave.

    An idle server is paused (`culling.idleAction: hibernate`, glue.hub.pauseapi) or removed
    after its autosave (`stop`); a paused server older than `culling.hibernatedKeepSeconds`
    is removed, its autosave first, by the same service (glue.hub.culler).
    """
    culling = config["culling"]
    idle, max_age = culling["idleSeconds"], culling["maxAgeSeconds"]
    if not idle and not max_age:  # (nothing is culled, nor then a paused server removed)
        return None
    name = f"{config['service']['name']}-culler"
    command = [
        sys.executable,
        "-m",
        "glue.hub.culler",  # jupyterhub_idle_culler, its DELETEs autosaving first
        # idle 0 never culls for idleness: a server idle as long as the maximum age is that old
        f"--timeout={idle or max_age}",
        f"--cull-every={culling['everySeconds']}",
        "--remove-named-servers",
    ]
    if max_age:
        command.append(f"--max-age={max_age}")
    role = {"name": name, "scopes": list(CULLER_SCOPES), "services": [name]}
    environment = {KEEP_PAUSED_ENV: str(culling["hibernatedKeepSeconds"])}
    return {"name": name, "command": command, "environment": environment}, role


def register_culler(c: Any, config: Config) -> None:
    """Run `culler_service` under the hub, when culling is on (both ways to run)."""
    culler = culler_service(config)
    if culler is not None:
        service, role = culler
        c.JupyterHub.services = [*c.JupyterHub.get("services", []), service]
        c.JupyterHub.load_roles = [*c.JupyterHub.get("load_roles", []), role]


def git_token_endpoint(c: Any, config: Config) -> str:
    """The glue's `-/git-token` URL, where sessions' components get fresh GitLab tokens."""
    glue = config["service"]["url"].rstrip("/")
    base = "/".join(filter(None, ["", c.JupyterHub.get("base_url", "/").strip("/")]))
    return f"{glue}{base}/services/{config['service']['name']}/-/git-token"


def user_role(config: Config) -> dict[str, Any]:
    access = f"access:services!service={config['service']['name']}"
    return {"name": "user", "scopes": [*USER_SCOPES, access]}


def add_by_name(items: list[dict[str, Any]], item: dict[str, Any]) -> list[dict[str, Any]]:
    """Add `item` unless one of that name exists (the Helm values may have set it)."""
    if any(existing.get("name") == item["name"] for existing in items):
        return items
    return [*items, item]


def user_subdomain(name: str, domain: str, kind: str) -> str:
    """JupyterHub's `subdomain_hook`: each user's servers on a domain of their own
    (`<user>.<domain>`, the hub's own "idna" scheme), services on the hub's domain.

    A page that one user's server serves then never shares an origin, nor host-only
    cookies, with another user's servers or with the hub and the glue, whose pages
    are ours; the glue keeps the hub's origin, so its links and OAuth stay as they are.
    """
    if kind == "service":
        return domain
    from glue.hub import internals  # imports jupyterhub: only where a hub runs

    return internals.idna_subdomain(name, domain, kind)


def _host_only_cookies(c: Any) -> None:
    """The hub's and its servers' login cookies get the `__Host-` prefix where each user
    has a domain of their own (config.host_cookies says where browsers accept them)."""
    if host_cookies(c.JupyterHub.get("subdomain_host", "")):
        c.JupyterHub.cookie_host_prefix_enabled = True


def _merge_service(services: list[dict[str, Any]], service: dict[str, Any]) -> list[dict[str, Any]]:
    """Register the service, or complete the entry z2jh made (it holds the generated token)."""
    if not any(s.get("name") == service["name"] for s in services):
        return [*services, service]
    return [{**service, **s} if s.get("name") == service["name"] else s for s in services]


def configure(c: Any, config: Config) -> None:
    """Configure the hub `c` from a validated notebooks config."""
    logsafe.install()  # the hub's log lines, which carry user names and messages, escaped
    name = config["service"]["name"]
    launch = config["launch"]
    service = {"name": name, "url": config["service"]["url"], "oauth_no_confirm": True}
    c.JupyterHub.services = _merge_service(list(c.JupyterHub.get("services", [])), service)
    roles = list(c.JupyterHub.get("load_roles", []))
    for role in (service_role(config), user_role(config)):
        roles = add_by_name(roles, role)
    c.JupyterHub.load_roles = roles
    c.JupyterHub.allow_named_servers = True
    # used only where `subdomain_host` is set (the embedded default's own choice, or the
    # chart's `jupyterhub.hub.config.JupyterHub.subdomain_host`)
    c.JupyterHub.subdomain_hook = user_subdomain
    _host_only_cookies(c)
    # the service tokens in the config are random (z2jh: 64 characters; the embedded default:
    # token_hex(32)): stretching them like passwords (16,384 rounds of SHA-512 on every
    # request) only costs the glue about 4 ms per hub call
    c.JupyterHub.trust_user_provided_tokens = True
    c.Authenticator.username_pattern = USERNAME_PATTERN
    # the hub's root, its post-login page and /hub/home lead to the service: users lack
    # the `servers` scope that the hub's own spawn page and Start buttons need
    notebooks_url = f"{c.JupyterHub.get('base_url', '/').rstrip('/')}/services/{name}/"
    c.JupyterHub.default_url = notebooks_url
    c.JupyterHub.template_paths = [HUB_TEMPLATES, *c.JupyterHub.get("template_paths", [])]
    c.JupyterHub.template_vars = {
        **c.JupyterHub.get("template_vars", {}),
        "notebooks_url": notebooks_url,
    }
    # the glue's DELETE asks the spawner to autosave while the server still runs; its
    # status reads come from the hub's memory (both import jupyterhub: only where a hub is)
    from glue.hub import autosaveapi as hubautosave
    from glue.hub import pauseapi as hubpause
    from glue.hub import serversapi as hubservers

    c.JupyterHub.extra_handlers = [
        *c.JupyterHub.get("extra_handlers", []),
        *hubautosave.handlers(),
        *hubpause.handlers(),
        *hubservers.handlers(),
    ]
    # the hub counts stopped (paused) named servers too: its limit is the backstop of both
    # of ours, which the glue checks apart (running ones, paused ones: glue.service.servers)
    c.JupyterHub.named_server_limit_per_user = (
        launch["serversPerUser"] + launch["hibernatedPerUser"]
    )
    # configurable-http-proxy, its launches' route additions timed (a launch's `proxy_route`)
    c.JupyterHub.proxy_class = "glue.hub.phases.TimedProxy"
    c.Spawner.start_timeout = launch["startTimeoutSeconds"]
    # a busy machine may take longer than the hub's 30 s for a started server to answer
    c.Spawner.http_timeout = launch["startTimeoutSeconds"]
    # answer a launch at once (202) and let callers follow progress, instead of
    # holding the request open for up to the hub's default 10 s
    c.JupyterHub.tornado_settings = {
        **c.JupyterHub.get("tornado_settings", {}),
        "slow_spawn_timeout": SLOW_SPAWN_SECONDS,
    }
    if config["provider"]["kind"] == "gitlab":
        _configure_gitlab_login(c, config)
    if config["spawner"]["kind"] == "kubernetes":
        _configure_kubernetes(c, config)
    else:
        _configure_local(c, config)


def _configure_kubernetes(c: Any, config: Config) -> None:
    """Make the hub spawn CommitKubeSpawner pods; z2jh's `c.KubeSpawner` config still applies.

    The start timeout is set on CommitKubeSpawner: z2jh sets `KubeSpawner.start_timeout`,
    which would win over `Spawner.start_timeout`; the subclass's setting wins over both.
    """
    c.JupyterHub.spawner_class = "glue.hub.kubespawner.CommitKubeSpawner"
    c.CommitKubeSpawner.notebooks_config = config
    c.CommitKubeSpawner.start_timeout = config["launch"]["startTimeoutSeconds"]
    c.CommitKubeSpawner.http_timeout = config["launch"]["startTimeoutSeconds"]
    name = config["service"]["name"]
    entry: dict[str, Any] = next(
        (s for s in c.JupyterHub.get("services", []) if s.get("name") == name), {}
    )
    if entry.get("api_token"):  # z2jh's, generated into its hub Secret (hub.services.<name>)
        c.CommitKubeSpawner.service_api_token = entry["api_token"]
        c.CommitKubeSpawner.git_token_endpoint = git_token_endpoint(c, config)
    register_culler(c, config)  # z2jh's own culler is off (chart values): this one autosaves


def _configure_gitlab_login(c: Any, config: Config) -> None:
    """Users log in with GitLab; the hub keeps their token encrypted in auth_state.

    The hub refreshes it (GitLab tokens expire after two hours) when a user's
    request reaches the hub after `auth_refresh_age` and before every spawn,
    ahead of expiry (`refresh_expiring_login`). Client id and secret come from
    GITLAB_CLIENT_ID / GITLAB_CLIENT_SECRET or the Helm values; who may log in
    at all is the operator's choice.
    """
    c.JupyterHub.authenticator_class = "gitlab"
    c.GitLabOAuthenticator.gitlab_url = config["provider"]["url"]
    c.GitLabOAuthenticator.scope = GITLAB_SCOPES
    c.GitLabOAuthenticator.refresh_user_hook = refresh_expiring_login
    c.Authenticator.enable_auth_state = True
    c.Authenticator.refresh_pre_spawn = True
    c.Authenticator.auth_refresh_age = AUTH_REFRESH_SECONDS
    ca_bundle = config["provider"]["caBundle"]
    if ca_bundle:  # tornado's ca_certs replaces the system store: a file with both
        c.OAuthenticator.http_request_kwargs = {
            **c.OAuthenticator.get("http_request_kwargs", {}),
            "ca_certs": str(trust.write_bundle(ca_bundle)),
        }


def token_seconds_left(auth_state: dict[str, Any], now: float) -> float | None:
    """Seconds the stored GitLab token has left, from its token answer; None if unknown."""
    answer = auth_state.get("token_response") or {}
    created, lifetime = answer.get("created_at"), answer.get("expires_in")
    numbers = [
        v for v in (created, lifetime) if isinstance(v, int | float) and not isinstance(v, bool)
    ]
    if len(numbers) != 2:
        return None
    return float(numbers[0]) + float(numbers[1]) - now


async def refresh_expiring_login(authenticator: Any, user: Any, auth_state: Any) -> Any:
    """Renew a GitLab token that expires within the margin while it still works.

    oauthenticator refreshes only a token GitLab already refuses, so one with seconds
    left would pass the spawn's check and then fail in the clone step. None hands the
    login back to oauthenticator's own refresh; False asks the user to log in again.
    """
    refresh_token = (auth_state or {}).get("refresh_token")
    left = token_seconds_left(auth_state or {}, time.time())
    if not refresh_token or left is None or left > TOKEN_REFRESH_MARGIN_SECONDS:
        return None
    params = authenticator.build_refresh_token_request_params(refresh_token)
    try:
        token_info = await authenticator.get_token_info(None, params)
        if not token_info.get("refresh_token"):
            token_info["refresh_token"] = refresh_token
        user_info = await authenticator.token_to_user(token_info)
        state = authenticator.build_auth_state_dict(token_info, user_info)
        state = await state if isawaitable(state) else state
    except Exception as e:  # a dead refresh token or GitLab refusing: log in again
        authenticator.log.info(
            "Renewing the GitLab login of %s failed (%s)", user.name, type(e).__name__
        )
        return False
    name = authenticator.normalize_username(authenticator.user_info_to_username(user_info))
    authenticator.log.info("Renewed the GitLab login of %s (%.0f s were left)", name, left)
    return {"name": name, "auth_state": state}


def _configure_local(c: Any, config: Config) -> None:
    c.JupyterHub.spawner_class = "glue.hub.localspawner.LocalCommitSpawner"
    c.LocalCommitSpawner.notebooks_config = config
    # each server runs in its own sandbox (glue.hub.sandbox), never as root; none runs without
    # (`spawner.sandbox: false` drops bubblewrap only: benchmarks, single-user machines)
    problem = sandbox.available(config["spawner"]["sandbox"])
    if problem:
        raise SystemExit(f"The local spawner runs every server in a sandbox, but {problem}.")
    # -P: `-m` in the workspace would put it first on sys.path, and a repository's `uuid.py`
    # would run in the server (a flag, not PYTHONSAFEPATH: terminals and kernels inherit no
    # change, their users' `python script.py` keeps its directory on sys.path). JupyterHub's
    # single-user server, on the socket the spawner holds (glue.session.serverapp)
    c.LocalCommitSpawner.cmd = [sys.executable, "-P", "-m", "glue.session.serverapp"]
    # the hub's poll finds a dead server and the OOM killer's work (spawner.watch_memory)
    c.LocalCommitSpawner.poll_interval = LOCAL_POLL_SECONDS
    register_culler(c, config)


def proxy_command() -> str:
    """configurable-http-proxy from the checkout's node_modules, else from PATH."""
    local = Path(__file__).resolve().parents[2] / "node_modules" / ".bin" / PROXY
    found = os.environ.get("NOTEBOOKS_PROXY") or (
        str(local) if local.exists() else shutil.which(PROXY)
    )
    if not found:
        raise RuntimeError(f"{PROXY} not found: run `npm install` in the checkout (make dev does).")
    return found


def _secret_file(path: Path) -> bytes:
    """A 32-byte key kept (mode 0600) in the state directory across restarts."""
    if not path.exists():
        path.touch(mode=0o600)
        path.write_bytes(os.urandom(32))
    return path.read_bytes()


def embedded(c: Any, config: Config, config_path: str) -> None:
    """One machine: dummy login on loopback (GitLab login for a team), the proxy from npm,
    the glue run by the hub.

    Addresses, ports and the state directory come from NOTEBOOKS_* variables set by
    `python -m glue.embedded.dev` or the tests.
    """
    env = os.environ
    state = Path(env.get("NOTEBOOKS_STATE", ".dev/state")).resolve()
    state.mkdir(parents=True, exist_ok=True)
    listen = env.get("NOTEBOOKS_LISTEN", "127.0.0.1")
    gitlab = config["provider"]["kind"] == "gitlab"
    if not loopback(listen) and not gitlab:
        raise SystemExit(
            f"NOTEBOOKS_LISTEN={listen} would let anyone who reaches this machine log in "
            "under any name: listening beyond loopback needs GitLab login (GITLAB_URL)."
        )
    host = f"[{listen}]" if ":" in listen else listen
    c.JupyterHub.bind_url = f"http://{host}:{env.get('NOTEBOOKS_PORT', '8000')}"
    c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{env.get('NOTEBOOKS_HUB_PORT', '8081')}"
    c.ConfigurableHTTPProxy.api_url = (
        f"http://127.0.0.1:{env.get('NOTEBOOKS_PROXY_API_PORT', '8001')}"
    )
    c.ConfigurableHTTPProxy.command = [proxy_command()]
    c.ConfigurableHTTPProxy.pid_file = str(state / "proxy.pid")
    # a hub that is stopped (SIGTERM: Ctrl-C of `make dev`, or its death, glue.embedded.dev)
    # stops its servers and the proxy; only a hub that is killed leaves its servers to the next one
    c.JupyterHub.cleanup_servers = True
    c.JupyterHub.cleanup_proxy = True
    c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
    public = public_origin(env)
    if single_origin_reason(env) is None:
        # each user's servers on `<user>.<host>` (user_subdomain); the proxy routes by host
        c.JupyterHub.subdomain_host = public
        _host_only_cookies(c)
    c.Authenticator.allow_all = True
    if gitlab:
        c.GitLabOAuthenticator.oauth_callback_url = f"{public}/hub/oauth_callback"
        c.CryptKeeper.keys = [_secret_file(state / "auth_state_key")]
    else:
        c.JupyterHub.authenticator_class = "dummy"
    c.Authenticator.admin_users = set(config["service"]["adminUsers"])
    demo_token = env.get("NOTEBOOKS_DEMO_TOKEN")
    if demo_token:
        # a user created from a config token gets no default role: give `demo` the user scopes
        c.JupyterHub.api_tokens = {demo_token: "demo"}
        demo_role = {**user_role(config), "name": "notebooks-demo", "users": ["demo"]}
        c.JupyterHub.load_roles = add_by_name(list(c.JupyterHub.load_roles), demo_role)
    if env.get("NOTEBOOKS_DEV_TOKEN"):  # started by `python -m glue.embedded.dev`
        _dev_service(c, env["NOTEBOOKS_DEV_TOKEN"])
        _stop_once_handled()
    name = config["service"]["name"]
    command = [sys.executable, "-m", "glue", "--config", config_path]
    # the glue's token for this run, known to the spawner too: sessions' component keys
    # derive from it (glue.service.gittoken), so the glue can tell which server asks for a token
    token = secrets.token_hex(32)
    glue: dict[str, Any] = {"command": command, "api_token": token}
    if c.JupyterHub.get("subdomain_host"):  # its own cookies are `__Host-` ones too
        glue["environment"] = {SUBDOMAIN_HOST_ENV: c.JupyterHub.subdomain_host}
    c.JupyterHub.services = [
        {**s, **glue} if s["name"] == name else s for s in c.JupyterHub.services
    ]
    c.LocalCommitSpawner.service_api_token = token
    c.LocalCommitSpawner.git_token_endpoint = git_token_endpoint(c, config)
    sessions = state / "sessions"  # the components' files: the hub's user's only
    sessions.mkdir(mode=0o700, exist_ok=True)
    sessions.chmod(0o700)
    c.LocalCommitSpawner.sessions_root = str(sessions)


def _stop_once_handled() -> None:
    """A SIGTERM while the hub starts (the dev command killed: glue.embedded.dev) would end it
    before its own handler is in place, leaving the proxy and the services it started running:
    until then it is noted, and then handed to that handler, which stops them in order."""
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return  # someone handles it already (not a hub's start)
    asked = threading.Event()

    def note(signum: int, frame: Any) -> None:
        asked.set()

    signal.signal(signal.SIGTERM, note)

    def hand_over() -> None:
        while signal.getsignal(signal.SIGTERM) is note:
            time.sleep(0.1)
        if asked.is_set():
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=hand_over, name="sigterm-hand-over", daemon=True).start()


def _dev_service(c: Any, token: str) -> None:
    """`python -m glue.embedded.dev`'s own token, for one run: on Ctrl-C it removes every server
    (so a restart shows no failed ones) and at start it revokes earlier demo tokens."""
    c.JupyterHub.services = [*c.JupyterHub.services, {"name": DEV_SERVICE, "api_token": token}]
    role = {"name": DEV_SERVICE, "scopes": DEV_SCOPES, "services": [DEV_SERVICE]}
    c.JupyterHub.load_roles = add_by_name(list(c.JupyterHub.load_roles), role)
