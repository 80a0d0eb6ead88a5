"""The launch page in a real browser (Debian's Chromium through playwright) against the session hub.

Each test logs in through the hub's own login form as a fresh user, so no
other test's servers show up, and removes that user's servers at the end.
Screenshots of every state go to test-artifacts/screenshots/ at a laptop
(1280 px) and a phone (390 px) width. Every glue page is checked for console
errors and uncaught exceptions, and any alert/confirm dialog fails the test.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from playwright.sync_api import Browser, expect

from glue.core.target import Target
from testing.chromium import (
    LAB_NOTEBOOK,
    LAB_TIMEOUT_MS,
    WIDTHS,
    Visitor,
    assert_clean,
    assert_no_horizontal_scroll,
    fresh_user,
    shoot,
)
from testing.hub import RunningHub
from testing.repos import git

pytestmark = pytest.mark.browser






@pytest.fixture
def visitor(browser: Browser, hub: RunningHub) -> Iterator[Visitor]:
    visitor = Visitor(browser, hub, fresh_user())
    try:
        yield visitor
    finally:
        visitor.close()











def unknown_sha() -> str:
    return secrets.token_hex(20)


# --- the whole way: launch page, progress, JupyterLab, list, stop -------------------


def test_launch_follow_open_list_stop(hub, repos, visitor):
    sha = repos["shas"]["demo/hello"][0]  # an older commit, not the tip
    path = f"demo/hello/{sha}/notebooks/analysis.ipynb"
    page = visitor.login(path)

    # the launch page: project, short commit, notebook, profiles with the default chosen
    expect(page.locator("h1")).to_have_text("demo/hello")
    expect(page.locator(f"code[title='{sha}']")).to_have_text(sha[:7])
    expect(page.locator("#notebook")).to_have_text("notebooks/analysis.ipynb")
    expect(page.locator("#status")).to_have_text("not running")
    small = page.get_by_role("radio", name=re.compile(r"^small"))
    large = page.get_by_role("radio", name=re.compile(r"^large"))
    expect(small).to_be_checked()
    expect(large).not_to_be_checked()
    expect(page.get_by_text("0.5 CPU · 1G memory")).to_be_visible()
    expect(page.get_by_text("2 CPU · 4G memory")).to_be_visible()
    assert_no_horizontal_scroll(page)
    shoot(page, "launch")

    # choose the other profile and launch, with the keyboard only
    small.focus()
    page.keyboard.press("ArrowDown")
    expect(large).to_be_checked()
    page.keyboard.press("Tab")
    launch = page.get_by_role("button", name="Launch")
    expect(launch).to_be_focused()
    page.keyboard.press("Enter")

    # the status page follows the launch live
    visitor.wait_for(path)
    expect(page.locator("#log li").first).to_be_visible()
    expect(page.get_by_role("log")).to_have_attribute("aria-live", "polite")
    shoot(page, "starting", widths=(WIDTHS[0],))
    page.wait_for_url(LAB_NOTEBOOK, timeout=LAB_TIMEOUT_MS)

    # the progress bar moved and the hub's messages reached the log
    assert any(0 < value < 100 for value in visitor.progress), visitor.progress
    assert visitor.progress[-1] == 100, visitor.progress
    assert visitor.progress == sorted(visitor.progress), visitor.progress
    assert "Checking access to demo/hello" in visitor.log, visitor.log
    assert f"Cloning demo/hello at {sha[:7]}" in visitor.log, visitor.log
    assert "Your server is ready." in visitor.log, visitor.log

    # JupyterLab at the notebook, in the server started with the chosen profile
    (server,) = visitor.hub.hub_servers(visitor.user).values()
    assert server["user_options"]["profile"] == "large"
    assert server["user_options"]["commit_sha"] == sha
    assert page.url == f"{hub.absolute(server['url'])}lab/tree/notebooks/analysis.ipynb"
    expect(page).to_have_title(re.compile("analysis|JupyterLab"), timeout=LAB_TIMEOUT_MS)
    notebook_tab = page.locator(".lm-TabBar-tabLabel", has_text="analysis.ipynb")
    expect(notebook_tab.first).to_be_visible(timeout=LAB_TIMEOUT_MS)
    shoot(page, "lab", widths=(WIDTHS[0],))

    # the list: the server, its commit, status and age, and a stop button
    page.goto(hub.prefix)
    row = page.locator("tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("demo/hello")
    expect(row.locator("code[title]")).to_have_text(sha[:7])
    expect(row.locator(".status")).to_have_text("running")
    expect(row.locator("time")).to_have_text(re.compile(r"^(just now|\d+ seconds? ago)$"))
    expect(row.get_by_role("link", name=f"Open demo/hello at {sha[:7]}")).to_be_visible()
    assert_no_horizontal_scroll(page)
    shoot(page, "list")

    page.get_by_role("button", name=f"Stop demo/hello at {sha[:7]}").click()
    page.wait_for_url(hub.prefix)
    expect(page.locator("#empty")).to_be_visible()
    expect(page.locator("tbody tr")).to_have_count(0)
    shoot(page, "list-empty")
    assert visitor.hub.hub_servers(visitor.user) == {}
    assert_clean(visitor)


# --- pause, resume and delete from the pages -----------------------------------------


def test_pause_from_the_list_resume_and_delete_from_the_page(hub, repos, visitor):
    sha = repos["shas"]["demo/hello"][1]
    path = f"demo/hello/{sha}"
    page = visitor.login(path)
    page.get_by_role("button", name="Launch").click()
    page.wait_for_url(re.compile(r".*/lab.*"), timeout=LAB_TIMEOUT_MS)

    # the list: Pause beside Stop, and the warning that kernels do not survive it
    page.goto(hub.prefix)
    row = page.locator("tbody tr")
    expect(row.get_by_role("button", name=f"Stop demo/hello at {sha[:7]}")).to_be_visible()
    expect(row.locator(".pause-note")).to_contain_text("kernels do not survive a pause")
    row.get_by_role("button", name=f"Pause demo/hello at {sha[:7]}").click()
    page.wait_for_url(hub.prefix)
    expect(row.locator(".status")).to_have_text("hibernated")
    expect(row.locator(".paused")).to_contain_text("Delete autosaves it first")
    expect(row.get_by_role("button", name=f"Resume demo/hello at {sha[:7]}")).to_be_visible()
    shoot(page, "list-paused")

    # its page: paused, with Resume and Delete; Resume brings it back
    row.get_by_role("link", name=f"Open demo/hello at {sha[:7]}").click()
    visitor.wait_for(path)
    expect(page.locator("#status")).to_have_text("hibernated")
    expect(page.locator("#paused-message")).to_contain_text("its whole workspace is kept")
    expect(page.get_by_role("button", name="Delete")).to_be_visible()
    shoot(page, "paused")
    page.get_by_role("button", name="Resume").click()
    page.wait_for_url(re.compile(r".*/lab.*"), timeout=LAB_TIMEOUT_MS)
    assert "Resuming the paused workspace as it was" in visitor.log, visitor.log

    # paused again, then deleted from its page: nothing left
    page.goto(hub.prefix)
    page.get_by_role("button", name=f"Pause demo/hello at {sha[:7]}").click()
    page.wait_for_url(hub.prefix)
    page.get_by_role("link", name=f"Open demo/hello at {sha[:7]}").click()
    visitor.wait_for(path)
    page.get_by_role("button", name="Delete").click()
    page.wait_for_url(hub.prefix)
    expect(page.locator("#empty")).to_be_visible()
    assert visitor.hub.hub_servers(visitor.user) == {}
    assert_clean(visitor)


# --- failures: each one a sentence --------------------------------------------------


def test_failures_say_what_went_wrong(hub, repos, visitor, browser):
    # a well-formed commit the project does not have: the page says so at once (404), with
    # no launch form that would fail after the click
    missing = unknown_sha()
    page = visitor.login(f"demo/hello/{missing}")
    assert page.locator("#launch-form").count() == 0
    expect(page.locator("h1")).to_have_text("Not found")
    expect(page.locator("#error-message")).to_have_text(
        f"Commit {missing} was not found in demo/hello."
    )
    expect(page.get_by_role("alert")).to_be_visible()
    shoot(page, "error-commit-not-found")
    assert visitor.hub.hub_servers(visitor.user) == {}

    # a spawn that fails at the hub (started around the glue, which would have refused it):
    # the page shows the hub's own message and offers the launch form again
    target = Target("demo", "hello", unknown_sha())
    response = hub.admin(
        "POST", f"users/{visitor.user}/servers/{target.server_name}", json=target.options()
    )
    assert response.status_code in (201, 202, 500), response.text
    hub.wait_failed(visitor.user, target.server_name)
    page.goto(visitor.glue_url(f"demo/hello/{target.commit_sha}"))
    expect(page.locator("#status")).to_have_text("failed")
    expect(page.locator("#failure-message")).to_have_text(
        f"Commit {target.commit_sha} was not found in demo/hello."
    )
    expect(page.locator("#failure-next")).to_contain_text("Check the link")
    retry = page.get_by_role("button", name="Retry")
    expect(retry).to_be_visible()
    assert_no_horizontal_scroll(page)
    shoot(page, "failed-at-hub")
    retry.click()
    expect(page.locator("#error-message")).to_have_text(
        f"Commit {target.commit_sha} was not found in demo/hello."
    )
    assert_clean(visitor)

    # no access at the level a launch needs (carol is only a Reporter on demo/hello)
    carol = Visitor(browser, hub, "carol")
    try:
        page = carol.login(f"demo/hello/{repos['shas']['demo/hello'][0]}")
        expect(page.locator("h1")).to_have_text("Not allowed")
        expect(page.locator("#error-message")).to_have_text(
            "Launching demo/hello needs Developer access (30) or higher; you have Reporter access."
        )
        shoot(page, "error-no-access")
        assert_clean(carol)
    finally:
        carol.close()


# --- without JavaScript -------------------------------------------------------------


def test_without_javascript_the_page_refreshes_to_the_server(hub, repos, browser):
    visitor = Visitor(browser, hub, fresh_user(), javascript=False)
    try:
        sha = repos["shas"]["demo/hello"][1]
        path = f"demo/hello/{sha}/notebooks/analysis.ipynb"
        page = visitor.login(path)
        page.get_by_role("button", name="Launch").click()
        visitor.wait_for(path)
        expect(page.locator("#status")).to_have_text("starting")
        # (playwright's text matching skips <noscript>, so the element is named here)
        notice = page.locator("#launch noscript p")
        expect(notice).to_be_visible()
        expect(notice).to_contain_text("This page reloads itself every 3 seconds")
        assert '<noscript><meta http-equiv="refresh" content="3"></noscript>' in page.content()
        assert page.locator("#progress").get_attribute("aria-valuenow") is None  # no script ran
        shoot(page, "nojs-starting")
        page.wait_for_url(LAB_NOTEBOOK, timeout=LAB_TIMEOUT_MS)
        assert_clean(visitor)
    finally:
        visitor.close()


# --- names from requests are text, never markup -------------------------------------


def sse(*events: tuple[str, dict[str, Any]]) -> str:
    return "retry: 60000\n\n" + "".join(
        f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events
    )


def commit_with_file(repos: dict, project: str, name: str) -> str:
    """A commit (on a side branch) of a session repository that holds a file `name`."""
    work, bare = repos["root"] / ".work" / project, repos["root"] / f"{project}.git"
    branch = "file-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    if not git(bare, "branch", "--list", branch):
        git(work, "checkout", "-q", "-b", branch)
        (work / name).write_text('{"cells": [], "metadata": {}, "nbformat": 4}')
        git(work, "add", ".")
        git(work, "commit", "-q", "-m", "a file with a nasty name")
        git(work, "push", "-q", str(bare), branch)
        git(work, "checkout", "-q", "main")
    return git(bare, "rev-parse", branch)


def test_payloads_in_names_and_messages_are_inert(hub, repos, visitor):
    notebook = "<img src=x onerror=alert(1)>.ipynb"
    # a notebook that is not there: the 404 names it, as text
    missing = f"demo/hello/{repos['shas']['demo/hello'][2]}/{quote(notebook)}"
    page = visitor.login(missing)
    expect(page.locator("#error-message")).to_contain_text(notebook)
    assert page.locator("main img, main script").count() == 0
    sha = commit_with_file(repos, "demo/hello", notebook)
    path = f"demo/hello/{sha}/{quote(notebook)}"
    page.goto(visitor.glue_url(path))
    expect(page.locator("#notebook")).to_have_text(notebook)
    assert page.locator("main img, main script").count() == 0

    # messages arriving on the event stream are shown as text (the stream is replaced here
    # to carry payloads; the real relay passes the hub's messages on the same way)
    progress_payload = "<img src=x onerror=alert(2)>"
    failure_payload = "<script>alert(3)</script><b>bold</b>"
    page.route(
        re.compile(r"/-/events/"),
        lambda route: route.fulfill(
            status=200,
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"},
            body=sse(
                ("progress", {"progress": 40, "message": progress_payload}),
                ("failed", {"error": "spawn_failed", "message": failure_payload}),
            ),
        ),
    )
    page.get_by_role("button", name="Launch").click()
    visitor.wait_for(path)
    expect(page.locator("#failure-message")).to_have_text(failure_payload)
    expect(page.get_by_role("button", name="Retry")).to_be_visible()
    assert progress_payload in visitor.log
    assert page.locator("main img, main script, main b").count() == 0
    shoot(page, "payload-stream", widths=(WIDTHS[0],))
    page.unroute(re.compile(r"/-/events/"))

    # the list shows the notebook of the server literally
    page.goto(hub.prefix)
    expect(page.locator("tbody tr code.notebook")).to_have_text(notebook)
    assert page.locator("main img, main script").count() == 0
    shoot(page, "payload-list", widths=(WIDTHS[0],))

    # a project path carrying markup is refused, and the refusal shows it as text
    project = "<svg onload=alert(5)>"
    page.goto(visitor.glue_url(f"demo/{quote(project, safe='')}/{sha}"))
    expect(page.locator("#error-message")).to_contain_text(f"project '{project}' is not a valid")
    assert page.locator("main svg, main script").count() == 0
    page.wait_for_timeout(300)  # give any injected handler the chance to fire
    assert_clean(visitor)


def test_launch_script_never_writes_html():
    static = Path(__file__).parent.parent / "glue" / "service" / "static"
    source = (static / "launch.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in source


def test_ages_read_as_people_say_them():
    from datetime import UTC, datetime, timedelta

    from glue.service.render import ago

    now = datetime(2025, 1, 2, 12, 0, tzinfo=UTC)
    for delta, text in [
        (timedelta(seconds=3), "just now"),
        (timedelta(seconds=42), "42 seconds ago"),
        (timedelta(minutes=1, seconds=5), "1 minute ago"),
        (timedelta(minutes=3), "3 minutes ago"),
        (timedelta(hours=2, minutes=59), "2 hours ago"),
        (timedelta(days=1, hours=1), "1 day ago"),
    ]:
        assert ago((now - delta).isoformat().replace("+00:00", "Z"), now) == text
    assert ago(None, now) == "" and ago("yesterday", now) == ""


def test_the_hubs_own_pages_lead_to_the_service_and_every_page_can_log_out(hub, visitor):
    """Logged in at the hub's root (no `next`), a user lands on the service's list, never on
    the hub's 403 spawn page; /hub/home leads there too; the page's logout link logs out."""
    page = visitor.page
    page.goto(f"{hub.url}/")
    page.fill("#username_input", visitor.user)
    page.fill("#password_input", "any password")
    page.click("#login_submit")
    visitor.wait_for("")
    assert page.locator("h1").first.is_visible()
    page.goto(f"{hub.url}/hub/home")
    visitor.wait_for("")
    page.get_by_role("link", name="Log out").click()
    page.wait_for_url(lambda url: "/hub/login" in url)
    page.goto(f"{hub.url}/hub/home")
    page.wait_for_url(lambda url: "/hub/login" in url)  # logged out indeed
    assert_clean(visitor)


# --- links by ref survive the login ----------------------------------------------------


def test_a_logged_out_branch_link_ends_in_lab_at_the_pinned_commit(hub, repos, visitor):
    shas = repos["shas"]["demo/hello"]
    page = visitor.page
    page.goto(visitor.glue_url("demo/hello/main/notebooks/analysis.ipynb"))
    # not logged in: the hub's login form, which then sends us back along the same link
    page.fill("#username_input", visitor.user)
    page.fill("#password_input", "any password")
    page.click("#login_submit")
    pinned = f"demo/hello/{shas[-1]}/notebooks/analysis.ipynb"
    visitor.wait_for(pinned)
    expect(page.locator(f"code[title='{shas[-1]}']")).to_have_text(shas[-1][:7])
    expect(page.locator("#notebook")).to_have_text("notebooks/analysis.ipynb")
    shoot(page, "ref-link-pinned")
    page.get_by_role("button", name="Launch").click()
    page.wait_for_url(LAB_NOTEBOOK, timeout=LAB_TIMEOUT_MS)
    (server,) = visitor.hub.hub_servers(visitor.user).values()
    assert server["user_options"]["commit_sha"] == shas[-1]
    notebook_tab = page.locator(".lm-TabBar-tabLabel", has_text="analysis.ipynb")
    expect(notebook_tab.first).to_be_visible(timeout=LAB_TIMEOUT_MS)
    assert_clean(visitor)


def test_a_missing_notebook_says_so_before_the_launch_form(hub, repos, visitor):
    sha = repos["shas"]["demo/hello"][0]
    page = visitor.login(f"demo/hello/{sha}/notebooks/missing.ipynb")
    expect(page.locator("h1")).to_have_text("Not found")
    expect(page.locator("#error-message")).to_contain_text("notebooks/missing.ipynb")
    assert page.locator("#launch-form").count() == 0
    shoot(page, "error-notebook-not-found")
    assert_clean(visitor)
