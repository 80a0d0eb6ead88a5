"""Debian's Chromium through playwright (never a browser download), one user per context.

`Visitor` logs in through the hub's form and records what goes wrong on the glue's pages
(console errors, uncaught exceptions, dialogs); `shoot` keeps screenshots of each state in
test-artifacts/screenshots/ at a laptop and a phone width. The browser, launcher, logs,
image and origin tests drive the same browser the same way.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, unquote

from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from testing import CHECKOUT
from testing.hub import RunningHub
from testing.marks import check_may_start

# Debian's Chromium, driven by playwright (never a browser download), with what keeps it off
# the network on these machines
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = CHECKOUT / "test-artifacts" / "screenshots"
# screenshots are for people reviewing the pages, and nothing checks them: taken only when
# asked (`NOTEBOOKS_SCREENSHOTS=1 make test`), they cost the browser tests 20 s of 70
SCREENSHOTS = os.environ.get("NOTEBOOKS_SCREENSHOTS") == "1"


WIDTHS = (1280, 390)


LAB_TIMEOUT_MS = 90_000


FAILED_LOAD = re.compile(r"Failed to load resource: the server responded with a status of (\d+) .*")


# records what the launch page shows while it changes, across navigations
RECORDER = """
(() => {
  const seen = () => {
    const bar = document.getElementById("progress");
    const log = document.getElementById("log");
    const now = bar && bar.getAttribute("aria-valuenow");
    if (now !== null && now !== undefined) window.__progress(now);
    if (log) window.__log(Array.from(log.children, (li) => li.textContent));
  };
  new MutationObserver(seen).observe(document, {
    subtree: true, childList: true, attributes: true, attributeFilter: ["aria-valuenow"],
  });
})();
"""


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, started through playwright, closed at the end."""
    check_may_start("a browser")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Visitor:
    """One user in one browser context: logs in through the hub, records what goes wrong."""

    def __init__(self, browser: Browser, hub: RunningHub, user: str, *, javascript: bool = True):
        self.hub = hub
        self.user = user
        self.context: BrowserContext = browser.new_context(
            viewport={"width": WIDTHS[0], "height": 800}, java_script_enabled=javascript
        )
        self.context.set_default_timeout(20_000)
        self.progress: list[int] = []
        self.log: list[str] = []
        self.context.expose_function("__progress", lambda v: self.progress.append(int(v)))
        self.context.expose_function("__log", self._log)
        self.context.add_init_script(RECORDER)
        self.errors: list[str] = []  # console errors and exceptions on the glue's pages
        self.lab_errors: list[str] = []
        # error pages the test opens on purpose: Chromium logs their status as a console error
        self.error_documents: set[tuple[str, int]] = set()
        self.dialogs: list[str] = []
        self.page: Page = self.context.new_page()
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self._error(f"uncaught: {e}"))
        self.page.on("dialog", self._dialog)
        self.page.on("response", self._response)

    def _response(self, response: Any) -> None:
        if response.request.resource_type == "document" and response.status >= 400:
            self.error_documents.add((response.url, response.status))

    def _log(self, items: list[str]) -> None:
        for item in items:
            if item not in self.log:
                self.log.append(item)

    def _error(self, text: str) -> None:
        url = self.page.url
        (self.errors if url.startswith(self.hub.prefix) else self.lab_errors).append(
            f"{url}: {text}"
        )

    def _console(self, message: Any) -> None:
        if message.type != "error":
            return
        status = FAILED_LOAD.fullmatch(message.text)
        where = message.location.get("url", "")
        if status and (where, int(status[1])) in self.error_documents:
            return  # the error page itself, which the test reads
        self._error(message.text)

    def _dialog(self, dialog: Any) -> None:
        if dialog.type == "beforeunload":
            dialog.accept()  # JupyterLab asks before leaving an open notebook: leave
            return
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def glue_url(self, path: str) -> str:
        return self.hub.prefix + path

    def login(self, path: str) -> Page:
        """Log in at the hub's login form, which then sends us on to `path` on the glue."""
        page = self.page
        next_path = "/services/notebooks/" + path
        page.goto(f"{self.hub.url}/hub/login?next={quote(next_path, safe='')}")
        page.fill("#username_input", self.user)
        page.fill("#password_input", "any password")
        page.click("#login_submit")
        self.wait_for(path)
        return page

    def wait_for(self, path: str) -> None:
        """Until the page is at `path` on the glue; the glue's redirects (after the login,
        after a launch) name the path decoded, so the paths are compared decoded."""
        wanted = unquote(self.glue_url(path))
        self.page.wait_for_url(lambda url: unquote(url) == wanted)

    def close(self) -> None:
        self.context.close()
        self.hub.remove_all_servers(self.user)


def fresh_user() -> str:
    return f"web-{secrets.token_hex(4)}"


def shoot(page: Page, name: str, widths: tuple[int, ...] = WIDTHS) -> None:
    """Full-page screenshots at each width, if asked for (SCREENSHOTS); the viewport goes
    back to the laptop width."""
    if not SCREENSHOTS:
        return
    SHOTS.mkdir(parents=True, exist_ok=True)
    for width in widths:
        page.set_viewport_size({"width": width, "height": 800})
        page.screenshot(path=SHOTS / f"{name}-{width}.png", full_page=True)
    page.set_viewport_size({"width": WIDTHS[0], "height": 800})


def assert_no_horizontal_scroll(page: Page) -> None:
    """Readable at the phone width: nothing wider than the screen."""
    page.set_viewport_size({"width": 390, "height": 800})
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    page.set_viewport_size({"width": WIDTHS[0], "height": 800})
    assert overflow <= 0, f"{page.url} scrolls sideways by {overflow} px at 390 px"


def assert_clean(visitor: Visitor) -> None:
    assert visitor.dialogs == [], visitor.dialogs
    assert visitor.errors == [], visitor.errors
    assert visitor.lab_errors == [], visitor.lab_errors


LAB_NOTEBOOK = re.compile(r"/lab/tree/notebooks/analysis\.ipynb$")
