"""The launcher on the landing page: a form that resolves a project and ref into the
pinned launch link, with README badge snippets and the glue's own SVG badge."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
import requests
from playwright.sync_api import expect

from testing.chromium import (
    LAB_NOTEBOOK,
    LAB_TIMEOUT_MS,
    Visitor,
    assert_clean,
    assert_no_horizontal_scroll,
    fresh_user,
    shoot,
)
from testing.hub import Client, RunningHub


def test_the_launcher_resolves_and_the_badge_is_ours(hub: RunningHub, repos):
    client = Client(hub, "mira")
    shas = repos["shas"]["demo/hello"]
    body = client.get("-/launcher", params={"project": "demo/hello", "ref": "",
                                             "notebook": "notebooks/analysis.ipynb"}).json()
    assert body["commit_sha"] == shas[-1]  # the default branch
    assert body["pinned"] == f"{hub.prefix}demo/hello/{shas[-1]}/notebooks/analysis.ipynb"
    assert body["ref"] == ""
    body = client.get("-/launcher", params={"project": "http://x/demo/hello.git",
                                             "ref": shas[0][:8]}).json()
    assert body["commit_sha"] == shas[0]
    assert body["ref"] == f"{hub.prefix}demo/hello/{shas[0][:8]}"
    for params, status in (({"project": "hello"}, 400), ({"project": "demo/nothing"}, 404),
                           ({"project": "demo/hello", "ref": "nope"}, 404),
                           ({"project": "demo/hello", "ref": "-x"}, 400)):
        assert client.get("-/launcher", params=params).status_code == status, params
    badge = requests.get(hub.prefix + "-/badge.svg", timeout=10)  # no login needed
    assert badge.status_code == 200
    assert badge.headers["Content-Type"].startswith("image/svg+xml")
    svg = ET.fromstring(badge.content)
    assert svg.tag.endswith("svg") and "launch notebook" in badge.text
    assert "http" not in badge.text.replace("http://www.w3.org/2000/svg", "")  # nothing external


@pytest.mark.browser
def test_the_launcher_form_gives_a_working_link_and_a_badge_without_javascript(
    hub, repos, browser
):
    shas = repos["shas"]["demo/hello"]
    visitor = Visitor(browser, hub, fresh_user(), javascript=False)
    try:
        page = visitor.login("")
        expect(page.get_by_role("heading", name="Launch a notebook")).to_be_visible()
        assert_no_horizontal_scroll(page)
        shoot(page, "launcher-form")
        page.get_by_label("Project").fill("demo/hello")
        page.get_by_label("Branch, tag or commit").fill("main")
        page.get_by_label("Notebook path").fill("notebooks/analysis.ipynb")
        page.get_by_role("button", name="Get the link").click()
        pinned = f"{hub.prefix}demo/hello/{shas[-1]}/notebooks/analysis.ipynb"
        expect(page.locator("#pinned-link")).to_have_text(pinned)
        expect(page.locator("#markdown")).to_have_value(
            f"[![launch notebook]({hub.prefix}-/badge.svg)]({pinned})"
        )
        expect(page.locator("#rest")).to_contain_text(f":target: {pinned}")
        width = page.locator("#badge").evaluate("img => img.naturalWidth")
        assert width > 0  # the glue served the badge
        assert_no_horizontal_scroll(page)
        shoot(page, "launcher-result")
        page.get_by_role("link", name="Open the launch page").click()
        page.get_by_role("button", name="Launch").click()
        page.wait_for_url(LAB_NOTEBOOK, timeout=LAB_TIMEOUT_MS)
        (server,) = hub.hub_servers(visitor.user).values()
        assert server["user_options"]["commit_sha"] == shas[-1]
        assert re.search(r"/lab/tree/notebooks/analysis\.ipynb$", page.url)
        assert_clean(visitor)
    finally:
        visitor.close()
