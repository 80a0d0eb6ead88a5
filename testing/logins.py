"""A person's browser without a browser engine: the hub's login form, then the glue's OAuth
flow, with the cookies and redirects a browser gets (requests.Session).

Used where a real Chromium (testing.chromium) would only be context: the security and autosave
API tests check cookies, form tokens and redirects.
"""

from __future__ import annotations

import html
import re
from typing import Any

import requests

from testing.contract import assert_conforms
from testing.hub import RunningHub

HTML = {"Accept": "text/html"}


class Browser:
    """A person's browser: hub login form, then the glue's OAuth flow, cookies kept."""

    def __init__(self, hub: RunningHub, user: str):
        self.hub = hub
        self.user = user
        self.session = requests.Session()

    def log_in_to_hub(self) -> None:
        form = self.session.get(f"{self.hub.url}/hub/login", timeout=30)
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', form.text)
        assert xsrf, "the hub's login form has no _xsrf field"
        response = self.session.post(
            f"{self.hub.url}/hub/login",
            data={"username": self.user, "password": "any password", "_xsrf": xsrf[1]},
            timeout=30,
            allow_redirects=False,  # to /hub/spawn, which users may not use: they launch here
        )
        assert response.status_code == 302 and "jupyterhub-session-id" in self.session.cookies

    def open(self, path: str, **kwargs: Any) -> requests.Response:
        """GET a glue page as a browser does: HTML, following the login redirects."""
        kwargs.setdefault("headers", HTML)
        return self.session.get(self.hub.prefix + path, timeout=30, **kwargs)

    def xsrf(self, page: requests.Response) -> str:
        found = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
        assert found, "the page has no form token"
        return html.unescape(found[1])

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("allow_redirects", False)
        return assert_conforms(
            self.session.request(method, self.hub.prefix + path, timeout=60, **kwargs)
        )
