"""The embedded default: hub, proxy and glue on one machine, started by one command (`make dev`).

It creates a demo project on first run, writes the effective config, starts a
real JupyterHub (which starts the proxy and the glue) on the one port
NOTEBOOKS_PORT, waits until a launch URL answers, prints it with an API token
for user `demo`, and on Ctrl-C (or SIGTERM, or SIGHUP when its terminal closes)
removes every server from the hub and stops everything it started. Whatever
fails on the way, it stops what it had started and says why in one line; killed
outright, it takes the hub, and so all the hub started, with it.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

import yaml

from glue.core.config import Config, ConfigError, load, validate
from glue.core.configtypes import SpawnerConfig
from glue.core.origins import loopback, public_origin, single_origin_reason
from glue.core.ports import reserve
from glue.hub import disk, sandbox

CHECKOUT = Path(__file__).resolve().parents[2]
DEMO_PROJECT = ("demo", "hello-notebooks")
DEMO_NOTEBOOK = "hello.ipynb"
READY_TIMEOUT = 90
STOP_TIMEOUT = 30
MIN_TOKEN_CHARS = 32
# each stops the stack in order, as Ctrl-C does
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# the variables `make dev` reads; `--help`, `make help` and docs/embedded.rst list them
VARIABLES = {
    "NOTEBOOKS_PORT": "the one port to open in a browser (default 8000); the hub, proxy API "
    "and glue ports are chosen free at each start",
    "NOTEBOOKS_LISTEN": "address to listen on (default 127.0.0.1); any other needs GitLab login",
    "NOTEBOOKS_PUBLIC_URL": "the URL people use when a TLS proxy is in front (GitLab callback); "
    "its subdomains must lead here too (wildcard DNS and certificate): one per user",
    "NOTEBOOKS_SINGLE_ORIGIN": "1: every user's servers on the hub's origin instead of "
    "<user>.<host> (for a single user or fully trusted users only)",
    "NOTEBOOKS_CONFIG": "your notebooks config (YAML) instead of values/embedded.yaml",
    "NOTEBOOKS_STATE": "hub database, secrets and workspaces (default .dev/state)",
    "NOTEBOOKS_REPOS": "local projects as <namespace>/<project>.git (default .dev/repos)",
    "NOTEBOOKS_DEMO_TOKEN": "keep this API token (32+ random characters) for user demo (default: a "
    "new one each start, earlier ones revoked)",
    "NOTEBOOKS_PROXY": "configurable-http-proxy to run (default: node_modules, then PATH)",
    "GITLAB_URL": "log in with this GitLab and launch its projects (with GITLAB_CLIENT_ID "
    "and GITLAB_CLIENT_SECRET)",
}


class StartError(Exception):
    """The stack could not start; the message names the cause for a person."""


def _git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Renku demo",
        "GIT_AUTHOR_EMAIL": "demo@example.org",
        "GIT_COMMITTER_NAME": "Renku demo",
        "GIT_COMMITTER_EMAIL": "demo@example.org",
    }
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


def notebook(*cells: str) -> str:
    """A minimal nbformat 4.5 notebook with code cells (with the ids 4.5 requires, so that
    JupyterLab does not add them and show the notebook as modified when it opens)."""
    return json.dumps(
        {
            "cells": [
                {
                    "cell_type": "code",
                    "execution_count": None,
                    "id": f"cell-{number}",
                    "metadata": {},
                    "outputs": [],
                    "source": source,
                }
                for number, source in enumerate(cells, 1)
            ],
            "metadata": {
                "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
            },
            "nbformat": 4,
            "nbformat_minor": 5,
        },
        indent=1,
    )


def make_demo_project(root: Path) -> list[str]:
    """A bare repository with two commits; returns their shas, oldest first."""
    bare = root / DEMO_PROJECT[0] / f"{DEMO_PROJECT[1]}.git"
    if not bare.is_dir():
        bare.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            _git(work, "init", "-q", "-b", "main")
            (work / DEMO_NOTEBOOK).write_text(notebook("print('Hello from the first commit')"))
            (work / "README.md").write_text("# Hello notebooks\n\nVersion 1.\n")
            _git(work, "add", ".")
            _git(work, "commit", "-q", "-m", "First version")
            (work / "README.md").write_text("# Hello notebooks\n\nVersion 2.\n")
            _git(work, "commit", "-q", "-am", "Second version")
            _git(root, "clone", "-q", "--bare", str(work), str(bare))
    return _git(bare, "rev-list", "--reverse", "main").splitlines()


def gitlab_provider() -> dict[str, str]:
    """GitLab instead of local repositories, when GITLAB_URL and the OAuth client are set."""
    missing = [v for v in ("GITLAB_CLIENT_ID", "GITLAB_CLIENT_SECRET") if not os.environ.get(v)]
    if missing:
        raise StartError(
            f"GITLAB_URL is set but {' and '.join(missing)} not: register an OAuth application "
            "in GitLab (callback <hub-url>/hub/oauth_callback) and set both."
        )
    return {"kind": "gitlab", "url": os.environ["GITLAB_URL"].rstrip("/")}


def write_config(state: Path, repos: Path, glue_port: int) -> tuple[Path, Config]:
    """The effective config: the user's (NOTEBOOKS_CONFIG) or the embedded values, with this
    machine's directories and the glue's port filled in, validated like any other."""
    source = Path(os.environ.get("NOTEBOOKS_CONFIG") or CHECKOUT / "values" / "embedded.yaml")
    try:
        config = yaml.safe_load(source.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise StartError(f"Cannot read the notebooks config {source}: {e}") from None
    if not isinstance(config, dict):
        raise StartError(f"The notebooks config {source} is not a mapping of settings.")
    provider = config.setdefault("provider", {"kind": "local"})
    if os.environ.get("GITLAB_URL"):
        config["provider"] = gitlab_provider()
    elif provider.get("kind", "local") == "local" and (
        "root" not in provider or source.name == "embedded.yaml"
    ):
        provider["root"] = str(repos)
    spawner = config.setdefault("spawner", {"kind": "local"})
    spawner.setdefault("workspaceRoot", str(state / "workspaces"))
    config.setdefault("service", {})["url"] = f"http://127.0.0.1:{glue_port}"
    try:
        validate(config, str(source))
        path = state / "notebooks.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path, load(path)
    except ConfigError as e:
        raise StartError(str(e)) from None


def check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        # as the proxy binds it: connections of an earlier run closing down do not count
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise StartError(
                f"Port {port} on {host} is not free ({e.strerror}): another instance may be "
                "running; set NOTEBOOKS_PORT to a free port."
            ) from None


def _become_subreaper() -> None:
    """Processes the hub starts and leaves (the proxy, the glue, sandboxes) become our
    children when the hub dies, so that nothing of this stack can outlive us unseen."""
    PR_SET_CHILD_SUBREAPER = 36
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _stop_with_parent(parent: int) -> None:
    """In the hub's child before exec: should this command die without stopping (SIGKILL,
    a crash), the kernel sends the hub SIGTERM, and the hub's own shutdown stops its servers
    (`cleanup_servers`), the proxy and its services. Only the death of this command does
    that: a hub restarted by hand still finds the servers that outlive a hub."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # died before the prctl took hold
        os.kill(os.getpid(), signal.SIGTERM)


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc (children first-level, then theirs)."""
    found: list[int] = []
    queue = [pid]
    while queue:
        parent = queue.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                children = Path(f"/proc/{parent}/task/{task}/children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.append(child)
                    queue.append(child)
    return found


class Hub:
    """The hub process and its REST API, as this command's own service sees it."""

    def __init__(self, base: str, hub_port: int, token: str):
        self.base = base
        self.api = f"http://127.0.0.1:{hub_port}/hub/api"
        self.token = token
        self.process: subprocess.Popen[bytes] | None = None
        self.ready = False

    @property
    def started(self) -> subprocess.Popen[bytes]:
        """The hub's process, once `start` ran."""
        if self.process is None:
            raise RuntimeError("the hub was not started")
        return self.process

    def start(self, env: dict[str, str], cwd: Path) -> None:
        config = CHECKOUT / "values" / "jupyterhub_config.py"
        parent = os.getpid()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(config)],
            cwd=cwd,
            env=env,
            start_new_session=True,  # Ctrl-C reaches us only; we stop the hub in order
            preexec_fn=lambda: _stop_with_parent(parent),
        )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 (loopback)
            f"{self.api}/{path}",
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            text = response.read()
        return json.loads(text) if text else None

    def wait_ready(self, url: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if not self.running():
                raise StartError(
                    f"JupyterHub exited with status {self.started.returncode} during start-up "
                    "(its log is above)."
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback)
                    if response.status == 200:
                        self.ready = True
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        raise StartError(f"The hub did not become ready within {READY_TIMEOUT} s.")

    def revoke_demo_tokens(self, since: datetime) -> None:
        """Earlier runs' demo tokens stop working: only this start's stays."""
        try:
            tokens = self.call("GET", "users/demo/tokens")["api_tokens"]
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return
            raise
        for token in tokens:
            created = datetime.fromisoformat(token["created"].replace("Z", "+00:00"))
            if created.tzinfo is None:
                created = created.replace(tzinfo=UTC)
            if created < since:
                self.call("DELETE", f"users/demo/tokens/{token['id']}")

    def remove_servers(self) -> None:
        """Stop every server in order and remove it, so that a restart lists no failed ones."""
        users = self.call("GET", "users?include_stopped_servers=1&limit=1000")
        for user in users:
            for name in user.get("servers", {}):
                if name:
                    path = f"users/{quote(user['name'], safe='')}/servers/{quote(name, safe='')}"
                    self.call("DELETE", path, {"remove": True})
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:
            users = self.call("GET", "users?include_stopped_servers=1&limit=1000")
            if not any(name for user in users for name in user.get("servers", {})):
                return
            time.sleep(0.3)


def stop_everything(hub: Hub) -> None:
    """Servers removed, the hub stopped (it stops the proxy and the glue), then whatever is
    left of what we started, by process id, ending with SIGKILL."""
    # a second Ctrl-C, or the SIGTERM or SIGHUP that often follows the first, changes nothing
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOP_SIGNALS}
    try:
        if hub.running() and hub.ready:
            try:
                hub.remove_servers()
            except (urllib.error.URLError, OSError, ValueError) as e:
                say(f"renku-notebooks: could not remove the servers in order: {e}")
        if hub.running():
            hub.started.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                hub.started.wait(STOP_TIMEOUT)
        _end(descendants(os.getpid()))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def say(text: str, stream: TextIO | None = None) -> None:
    """Print a line; a terminal closed under us (SIGHUP, then EIO) must not stop the stop."""
    with contextlib.suppress(OSError, ValueError):
        print(text, file=stream or sys.stdout, flush=True)


def _reap_orphans(keep: int) -> None:
    """Collect the processes that ended after their parent did and so became ours (a
    sandbox's init, say); `keep` (the hub) is waited for by its Popen."""
    for pid in Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split():
        if int(pid) != keep:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(int(pid), os.WNOHANG)


def _end(pids: list[int]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _reap(pids):
            time.sleep(0.1)
    _reap(pids)


def _reap(pids: list[int]) -> list[int]:
    """The processes of `pids` still alive; collects those that ended (we are their reaper)."""
    alive = []
    for pid in pids:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not our child: alive while it can be signalled
            try:
                os.kill(pid, 0)
                alive.append(pid)
            except ProcessLookupError:
                pass
            continue
        if not done:
            alive.append(pid)
    return alive


def banner(
    base: str,
    name: str,
    shas: list[str],
    token: str,
    ports: dict[str, int],
    spawner: SpawnerConfig,
) -> str:
    ns, project = DEMO_PROJECT
    service = f"{base}/services/{name}"
    launch = f"{service}/{ns}/{project}/{shas[0]}/{DEMO_NOTEBOOK}"
    internal = ", ".join(f"{what} {port}" for what, port in ports.items())
    return f"""
renku-notebooks is running (Ctrl-C stops everything).

  Open in a browser (log in as any name, e.g. demo, any password):
    {launch}

  API token for user demo:  {token}
    export TOKEN={token}
    curl -H "Authorization: token $TOKEN" {service}/user
    curl -X POST -H "Authorization: token $TOKEN" {service}/{ns}/{project}/{shas[0]}
    curl -H "Authorization: token $TOKEN" {service}/
    curl -X DELETE -H "Authorization: token $TOKEN" {service}/{ns}/{project}/{shas[0]}

  Internal ports on 127.0.0.1 (chosen free): {internal}
  {origin_line(base)}
  {sandbox_line(spawner)}
"""


def origin_line(base: str) -> str:
    """What a page served by one user's server can reach of other people's."""
    reason = single_origin_reason(os.environ)
    if reason is None:
        host = base.split("://", 1)[-1]
        return (
            f"Each user's servers have an origin of their own (<user>.{host}): a page one "
            "user's server serves cannot act as anyone who opens it."
        )
    return (
        f"ONE ORIGIN ({reason}): every server shares the hub's origin, so a page one user's "
        "server serves runs with the login of anyone who opens it (their servers, the hub): "
        "for a single user or fully trusted users only."
    )


def sandbox_line(spawner: SpawnerConfig) -> str:
    """What the banner says of the sandbox and of which limits are enforced here."""
    limits = sandbox.limits_unavailable()
    how = (
        "Every server runs in its own bubblewrap sandbox; "
        if spawner["sandbox"]
        else "NO SANDBOX (spawner.sandbox: false): every server sees the whole machine; "
    )
    no_disk = disk.unavailable()
    return "\n  ".join(
        [
            how
            + (
                "profile memory and CPU limits are enforced (cgroups)."
                if limits is None
                else f"profile memory and CPU limits are NOT enforced: {limits}."
            ),
            f"At most {spawner['processLimit']} processes per server (spawner.processLimit), "
            f"enforced {sandbox.process_limit_enforcement()}.",
            "Profile disk limits are enforced (a filesystem of that size per workspace)."
            if no_disk is None
            else f"Profile disk limits are NOT enforced: {no_disk}.",
        ]
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    variables = "\n".join(f"  {name:22} {text}" for name, text in VARIABLES.items())
    parser = argparse.ArgumentParser(
        prog="renku-notebooks-dev",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        epilog=f"environment variables:\n{variables}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser.parse_args(argv)


def run(hub_holder: list[Hub]) -> int:
    """Start the stack and wait on the hub; raises StartError with the cause."""
    state = Path(os.environ.get("NOTEBOOKS_STATE") or CHECKOUT / ".dev" / "state").resolve()
    repos = Path(os.environ.get("NOTEBOOKS_REPOS") or CHECKOUT / ".dev" / "repos").resolve()
    listen = os.environ.get("NOTEBOOKS_LISTEN", "127.0.0.1")
    port_text = os.environ.get("NOTEBOOKS_PORT", "8000")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise StartError(f"NOTEBOOKS_PORT={port_text} is not a port number.")
    port = int(port_text)
    if not loopback(listen) and not os.environ.get("GITLAB_URL"):
        raise StartError(
            f"NOTEBOOKS_LISTEN={listen} would let anyone who reaches this machine log in under "
            "any name: listening beyond loopback needs GitLab login (set GITLAB_URL)."
        )
    check_port(listen, port)
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    # chosen here, bound by the hub, the proxy and the glue seconds later (glue.core.ports)
    ports = {"hub": reserve(), "proxy API": reserve(), "glue": reserve()}
    config_path, config = write_config(state, repos, ports["glue"])
    isolated = config["spawner"]["sandbox"]
    problem = sandbox.available(isolated)
    if problem:
        raise StartError(f"Every server runs in a sandbox, but {problem}.")
    local = config["provider"]["kind"] == "local"
    shas = make_demo_project(repos) if local else []
    token = os.environ.get("NOTEBOOKS_DEMO_TOKEN") or secrets.token_hex(20)
    if len(token) < MIN_TOKEN_CHARS:  # the hub trusts config tokens to be random
        raise StartError(
            f"NOTEBOOKS_DEMO_TOKEN must be a random string of {MIN_TOKEN_CHARS} characters "
            "or more (e.g. openssl rand -hex 20)."
        )
    base = public_origin(os.environ)
    hub = Hub(base, ports["hub"], secrets.token_hex(20))
    hub_holder.append(hub)
    env = {
        **os.environ,
        "NOTEBOOKS_CONFIG": str(config_path),
        "NOTEBOOKS_STATE": str(state),
        "NOTEBOOKS_PORT": str(port),
        "NOTEBOOKS_HUB_PORT": str(ports["hub"]),
        "NOTEBOOKS_PROXY_API_PORT": str(ports["proxy API"]),
        "NOTEBOOKS_DEV_TOKEN": hub.token,
    }
    if local:
        env["NOTEBOOKS_DEMO_TOKEN"] = token  # the demo user exists only with local projects
    started = datetime.now(UTC)
    hub.start(env, state)
    name = config["service"]["name"]
    hub.wait_ready(f"{base}/services/{name}/health")
    if local:
        if not os.environ.get("NOTEBOOKS_DEMO_TOKEN"):
            hub.revoke_demo_tokens(started)
        print(banner(base, name, shas, token, ports, config["spawner"]), flush=True)
    else:
        print(
            f"\nrenku-notebooks is running with GitLab login at {base}/hub/login "
            f"(launch links: {base}/services/{name}/<namespace>/<project>/<sha>); "
            f"Ctrl-C stops everything.\n  {origin_line(base)}\n"
            f"  {sandbox_line(config['spawner'])}",
            flush=True,
        )
    while hub.running():
        _reap_orphans(keep=hub.started.pid)
        time.sleep(1)
    raise StartError(f"JupyterHub exited with status {hub.started.returncode}; see its log above.")


def stop_in_order(signum: int, frame: object) -> None:
    """The first stop signal: every stop signal is ignored from this moment, not only once
    stop_everything has begun (a terminal, `make` and supervisors repeat the signal, and one
    that came between this and the stop's start cut the stop short), then the main loop
    is interrupted to stop in order."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parse_args(argv)
    # Ctrl-C, SIGTERM and SIGHUP (the terminal closed) all stop in order, even when started
    # with SIGINT ignored (a background job); started with SIGHUP ignored (nohup), it is meant
    # to outlive its terminal, and does
    for sig in STOP_SIGNALS:
        if sig != signal.SIGHUP or signal.getsignal(sig) != signal.SIG_IGN:
            signal.signal(sig, stop_in_order)
    _become_subreaper()
    hub_holder: list[Hub] = []
    cause = None
    try:
        run(hub_holder)
    except KeyboardInterrupt:
        say("\nStopping servers, hub, proxy and glue...")
    except StartError as e:
        cause = str(e)
    except Exception as e:  # anything unforeseen: still one line, and nothing left behind
        cause = f"{type(e).__name__}: {e}"
    finally:
        stop_everything(hub_holder[0] if hub_holder else Hub("", 0, ""))
    if cause:  # last, after what the stopping processes print
        say(f"renku-notebooks: {cause}", sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
