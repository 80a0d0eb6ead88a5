"""`python -m glue.hub.culler [options]`: jupyterhub-idle-culler through the hub's autosaving API.

The hub runs this as its culler service (glue.hub.setup.culler_service). It is
jupyterhub-idle-culler with `--url` set to the hub's API under
`notebooks/saving` (glue.hub.autosaveapi): there a server's DELETE autosaves
first and answers 409 when that fails, so an idle server whose work cannot
be saved keeps running and is tried again at the next round.
"""

from __future__ import annotations

import os
import sys

from glue.core.contracts import SAVING_API


def culler_url(api_url: str) -> str:
    """The culler's API root below the hub's API URL (JUPYTERHUB_API_URL)."""
    return f"{api_url.rstrip('/')}/{SAVING_API}"


def main() -> None:
    from jupyterhub_idle_culler import main as cull

    sys.argv.append(f"--url={culler_url(os.environ['JUPYTERHUB_API_URL'])}")
    cull()


if __name__ == "__main__":
    main()
