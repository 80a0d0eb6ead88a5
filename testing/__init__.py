"""Real parts for the tests, the benchmarks and the kind e2e: stand-ins, hub tools, worlds.

Why a package of its own: the test modules, `benchmarks/` and `e2e/` all need the same
running hub, GitLab stand-in and helpers. Kept here, no test module imports another
(tests/test_layout.py checks it), and none of it ships in the wheel (only `glue` does).

    testing.hub         RunningHub (hub + proxy + glue from a config), Client, the hub's log
    testing.hubfork     the hubs' fork server: JupyterHub imported once per test process
    testing.worlds      typed set-ups: the local-provider world and the GitLab world
    testing.gitlab      the GitLab stand-in (API v4, OAuth, git smart HTTP)
    testing.kube        the Kubernetes pods/log stand-in
    testing.kubepods    CommitKubeSpawner's pods built offline
    testing.repos       git, and bare repositories with history
    testing.net         free ports, `*.localhost` names, listening processes
    testing.checks      waiting on events, timing, secrets kept out of text
    testing.contract    the glue's OpenAPI document as a check of every response
    testing.chromium    Debian's Chromium through playwright, one user per context
    testing.logins      a browser's hub login and the glue's OAuth flow, with requests
    testing.kernels     code in a server's kernel, hostile repositories, server processes
    testing.metrics     Prometheus text read back into numbers
    testing.chart       helm template and what the chart's pods must pass
    testing.hub_config  the tests' JupyterHub config file (`jupyterhub -f`)
    testing.marks       the `hub` mark: which tests need a hub, a server, a browser

This module imports nothing heavy: the e2e stand-in image imports `testing.gitlab` with the
glue's dependencies only.
"""

from __future__ import annotations

from pathlib import Path

# the checkout the tests run: its glue, values/, helm-chart/ and openapi document
CHECKOUT = Path(__file__).resolve().parent.parent
