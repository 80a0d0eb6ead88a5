"""The glue service: build the aiohttp app from config and the hub's environment, and run it.

JupyterHub hands a service its settings in JUPYTERHUB_* variables (the hub
sets them for a managed service; the Helm chart sets them for ours).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from glue.core import logsafe
from glue.core.config import SUBDOMAIN_HOST_ENV, Config, ConfigError, host_cookies, load
from glue.providers.access import Access
from glue.providers.select import make_provider
from glue.service import accesslog, podlogs
from glue.service.auth import Auth
from glue.service.hubapi import Hub
from glue.service.render import Renderer
from glue.service.routes import Routes
from glue.service.servers import Servers

log = logging.getLogger(__name__)

MAX_REQUEST_LINE = 64 * 1024
# how long an idle connection is kept. The proxy in front (configurable-http-proxy, in both
# ways to run) keeps its connections to us alive and reuses them with no idle limit of its
# own; when we close one just as it sends a request on it, the user gets the proxy's 503.
# aiohttp's run_app closes them after 75 s; the hub and the servers behind the same proxy
# (Tornado's idle_connection_timeout) keep them an hour, and so do we.
IDLE_CONNECTION_SECONDS = 3600.0


@dataclass(frozen=True)
class HubSettings:
    """What the hub tells a service about itself, read once from the environment."""

    api_url: str
    api_token: str
    prefix: str
    base_url: str
    client_id: str
    callback_url: str
    cookie_secret: bytes
    # `__Host-` cookies, where each user has an origin of their own (config.host_cookies)
    host_cookies: bool = False

    @classmethod
    def from_env(cls, config: Config, env: os._Environ[str] | dict[str, str]) -> HubSettings:
        name = config["service"]["name"]
        token = env.get("JUPYTERHUB_API_TOKEN", "")
        if not token:
            raise ConfigError(
                "JUPYTERHUB_API_TOKEN is not set: the glue needs its hub service token."
            )
        prefix = env.get("JUPYTERHUB_SERVICE_PREFIX") or f"/services/{name}/"
        prefix = prefix.rstrip("/") + "/"
        secret = env.get("NOTEBOOKS_COOKIE_SECRET", "")
        # without a secret of its own the service derives one from its token: every replica agrees
        cookie_secret = secret.encode() if secret else hashlib.sha256(token.encode()).digest()
        return cls(
            api_url=env.get("JUPYTERHUB_API_URL", "http://127.0.0.1:8081/hub/api"),
            api_token=token,
            prefix=prefix,
            base_url=env.get("JUPYTERHUB_BASE_URL", "/"),
            client_id=env.get("JUPYTERHUB_CLIENT_ID", f"service-{name}"),
            callback_url=env.get("JUPYTERHUB_OAUTH_CALLBACK_URL", prefix + "oauth_callback"),
            cookie_secret=cookie_secret,
            host_cookies=host_cookies(env.get(SUBDOMAIN_HOST_ENV, "")),
        )


def build(
    config: Config, settings: HubSettings, pod_logs: podlogs.PodLogs | None = None
) -> web.Application:
    """The glue's app; `pod_logs` reads servers' logs when they are Kubernetes pods (`main`
    makes it from the pod's service account when `spawner.kind` is kubernetes)."""
    hub = Hub(settings.api_url, settings.api_token, config["launch"]["hubTimeoutSeconds"])
    provider = make_provider(config)
    access = Access(
        provider, config["provider"]["minAccessLevel"], config["provider"]["cacheSeconds"]
    )
    render = Renderer(
        prefix=settings.prefix,
        base_url=settings.base_url,
        cull_warning_seconds=config["culling"]["warningSeconds"],
    )
    auth = Auth(
        hub,
        service=config["service"]["name"],
        prefix=settings.prefix,
        base_url=settings.base_url,
        client_id=settings.client_id,
        callback_url=settings.callback_url,
        secret=settings.cookie_secret,
        metrics_networks=config["metrics"]["allowedNetworks"],
        host_cookies=settings.host_cookies,
    )
    servers = Servers(
        hub, access, provider, config, base_url=settings.base_url, pod_logs=pod_logs
    )
    app = web.Application(
        middlewares=[accesslog.middleware(render.error, auth.login_redirect)],
        client_max_size=config["launch"]["maxBodyBytes"],
    )
    app.on_response_prepare.append(accesslog.send_request_id)
    Routes(config, hub, auth, access, servers, render).add_to(app, settings.prefix)

    async def close(_: web.Application) -> None:
        await hub.close()
        await provider.close()
        if pod_logs is not None:
            await pod_logs.close()

    app.on_cleanup.append(close)
    return app


def setup_logging() -> None:
    """The service's log: one line a record, user input in it escaped (glue.core.logsafe)."""
    logsafe.install()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


# the chart's NOTES warnings (templates/_helpers.tpl "renku-notebooks.warnings"), paragraphs
# apart by a blank line: Helm shows only a parent chart's NOTES, so the glue says them too
CHART_WARNINGS_ENV = "NOTEBOOKS_CHART_WARNINGS"


def log_chart_warnings(env: os._Environ[str] | dict[str, str]) -> list[str]:
    """Log each of the chart's warnings, one line each, at every start: an operator who
    installed the chart as a dependency (of renku) never saw its NOTES."""
    warnings = [" ".join(p.split()) for p in env.get(CHART_WARNINGS_ENV, "").split("\n\n")]
    warnings = [w for w in warnings if w]
    for warning in warnings:
        log.warning("chart: %s", warning)
    return warnings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The renku-notebooks glue service.")
    parser.add_argument(
        "--config",
        default=os.environ.get("NOTEBOOKS_CONFIG"),
        help="notebooks config file (default: $NOTEBOOKS_CONFIG)",
    )
    parser.add_argument(
        "--host",
        action="append",
        help="address to listen on, repeatable (e.g. 0.0.0.0 and :: for both IP stacks; "
        "default: from service.url)",
    )
    parser.add_argument("--port", type=int, help="port to listen on (default: from service.url)")
    args = parser.parse_args(argv)
    setup_logging()
    log_chart_warnings(os.environ)
    if not args.config:
        print("glue: give --config or set NOTEBOOKS_CONFIG", file=sys.stderr)
        return 2
    try:
        config = load(args.config)
        settings = HubSettings.from_env(config, os.environ)
    except ConfigError as e:
        print(f"glue: {e}", file=sys.stderr)
        return 2
    url = urlsplit(os.environ.get("JUPYTERHUB_SERVICE_URL") or config["service"]["url"])
    host = args.host or url.hostname or "127.0.0.1"
    port = args.port or url.port or 8090
    web.run_app(
        build(config, settings, podlogs.from_config(config["spawner"]["kind"])),
        host=host,
        port=port,
        print=None,
        access_log=None,
        # the longest valid launch URL (4096 percent-encoded characters of notebook) must
        # reach our validation, which answers with a JSON 400, not aiohttp's bare one
        max_line_size=MAX_REQUEST_LINE,
        # bodies are inflated by glue.service.requestbody, where a bad one is a 400, not a dropped
        # connection
        auto_decompress=False,
        keepalive_timeout=IDLE_CONNECTION_SECONDS,
    )
    return 0
