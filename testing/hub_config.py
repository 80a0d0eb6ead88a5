# The tests' hub config: exactly the embedded default's, plus an admin service
# the tests use to create users and tokens (nothing the glue relies on).
# testing.hub.RunningHub names the embedded default's config in NOTEBOOKS_TEST_VALUES: this
# checkout's, or that of the checkout whose code a benchmark's second hub runs.
import os

load_subconfig(  # noqa: F821
    os.environ.get("NOTEBOOKS_TEST_VALUES")
    or os.path.join(os.path.dirname(__file__), "..", "values", "jupyterhub_config.py")
)

c.JupyterHub.services.append(  # noqa: F821
    {"name": "test-admin", "api_token": os.environ["NOTEBOOKS_TEST_ADMIN_TOKEN"]}
)
c.JupyterHub.load_roles.append(  # noqa: F821
    {
        "name": "test-admin",
        "scopes": [
            "admin:users",
            "admin:servers",
            "admin:auth_state",
            "tokens",
            "read:users",
            "read:servers",
            "read:metrics",  # the hub's /hub/metrics (its phases of a launch)
        ],
        "services": ["test-admin"],
    }
)
c.JupyterHub.log_level = "INFO"  # noqa: F821
if os.environ.get("NOTEBOOKS_TEST_AUTH_REFRESH_AGE"):
    # refresh GitLab tokens within a test's time instead of every 5 minutes
    c.Authenticator.auth_refresh_age = int(os.environ["NOTEBOOKS_TEST_AUTH_REFRESH_AGE"])  # noqa: F821
if os.environ.get("NOTEBOOKS_TEST_SPAWNER_CLASS"):
    # the benchmarks' hub (benchmarks/spawner.py): a subclass for figure 7's baseline
    c.JupyterHub.spawner_class = os.environ["NOTEBOOKS_TEST_SPAWNER_CLASS"]  # noqa: F821
if os.environ.get("NOTEBOOKS_TEST_WITHOUT_HUB_HANDLERS"):
    # a hub without renku-notebooks' own endpoints (a hub image older than the glue, or an
    # extraConfig that drops them): the glue falls back to the hub's public API
    # (tests/test_hub_internals.py)
    c.JupyterHub.extra_handlers = []  # noqa: F821
if os.environ.get("NOTEBOOKS_TEST_DRAIN_TOKEN"):
    # the chart's pre-delete hook's hub service, as z2jh registers it from hub.services, with
    # the role the chart's hub config gives it (tests/test_drain.py)
    import glue.hub.kubesetup

    c.JupyterHub.services.append(  # noqa: F821
        {"name": "notebooks-drain", "api_token": os.environ["NOTEBOOKS_TEST_DRAIN_TOKEN"]}
    )
    glue.hub.kubesetup.register_drain(c, "notebooks")  # noqa: F821
if os.environ.get("NOTEBOOKS_TEST_SERVER_PORT"):
    # every server on this one port, which a test's squatter takes first (tests/test_portsquat.py):
    # JupyterHub's own Spawner.port, which the local spawner uses when it is not 0
    c.LocalCommitSpawner.port = int(os.environ["NOTEBOOKS_TEST_SERVER_PORT"])  # noqa: F821
