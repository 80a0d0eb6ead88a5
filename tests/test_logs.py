"""Logs and failure reasons against the session hub: the local spawner's per-server log
files, the logs endpoint, and a failed clone explained on the page and in the model."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from glue.service import failures
from glue.service.render import Renderer, disk_notice, memory_notice
from glue.service.servers import server_model
from testing.checks import wait_until
from testing.chromium import (
    Visitor,
    assert_clean,
    assert_no_horizontal_scroll,
    fresh_user,
    shoot,
)
from testing.hub import Client, RunningHub
from testing.repos import git


@pytest.fixture
def lena(hub: RunningHub) -> Iterator[Client]:
    hub.remove_all_servers("lena")
    yield Client(hub, "lena")
    hub.remove_all_servers("lena")


def broken_commit(repos: dict) -> str:
    """A commit of demo/other (on a side branch) whose README's blob is gone from the bare
    repository: every check before the launch passes, the clone itself fails."""
    work = repos["root"] / ".work" / "demo/other"
    bare = repos["root"] / "demo/other.git"
    if "broken" in git(bare, "branch", "--list", "broken"):
        return git(bare, "rev-parse", "broken")
    git(work, "checkout", "-q", "-b", "broken")
    (work / "README.md").write_text("a blob that will be lost\n")
    git(work, "commit", "-q", "-am", "lost blob")
    blob = git(work, "rev-parse", "HEAD:README.md")
    git(work, "push", "-q", str(bare), "broken")
    git(work, "checkout", "-q", "main")
    (bare / "objects" / blob[:2] / blob[2:]).unlink()
    return git(bare, "rev-parse", "broken")


def test_logs_of_a_running_server_and_who_may_read_them(hub, repos, lena):
    sha = repos["shas"]["demo/hello"][1]
    path = f"demo/hello/{sha}"
    assert lena.get(f"{path}/-/logs").status_code == 404  # no server yet
    assert lena.post(path).status_code in (201, 202)
    lena.wait_running(path)
    body = lena.get(f"{path}/-/logs", params={"lines": 1000}).json()
    assert body["lines"][0] == f"Cloned demo/hello at {sha}"
    assert any("Jupyter" in line for line in body["lines"]), body["lines"][-5:]
    short = lena.get(f"{path}/notebooks/analysis.ipynb/-/logs", params={"lines": 2}).json()
    assert len(short["lines"]) == 2  # the notebook path names the same server
    for bad in ("0", "1001", "x", "-3"):
        response = lena.get(f"{path}/-/logs", params={"lines": bad})
        assert response.status_code == 400 and response.json()["error"] == "invalid_lines"
    # bob has no server for this commit: lena's log is a 404 for him
    other = Client(hub, "bob").get(f"{path}/-/logs")
    assert other.status_code == 404 and other.json()["error"] == "server_not_found"
    # a browser's "show log" link gets plain text
    text = lena.get(f"{path}/-/logs", headers={"Accept": "text/html"})
    assert text.headers["Content-Type"].startswith("text/plain")
    assert text.text.startswith(f"Cloned demo/hello at {sha}")
    # the file lives beside the workspaces, not in the user's workspace
    name = body["name"]
    log_file = Path(str(hub.workspaces) + ".logs") / "lena" / f"{name}.log"
    assert not list(hub.workspaces.rglob(f"{name}.log"))
    # jupyter_lsp serves, but searches for no language server: the hub's environment has
    # none, and the search ran node at every start (localspawner.NO_LANGUAGE_SERVERS); it
    # logs what it skipped a moment after the server's first answer
    assert "jupyter_lsp | extension was successfully loaded" in log_file.read_text()
    time.sleep(1)
    assert "Skipped non-installed server(s)" not in log_file.read_text()


def test_a_failed_clone_is_explained_with_the_log_tail(hub, repos, lena):
    sha = broken_commit(repos)
    path = f"demo/other/{sha}"
    response = lena.post(path)
    if response.status_code not in (201, 202):  # it failed before the hub answered
        assert response.status_code == 502, response.text
        assert response.json()["error"] == "spawn_failed"
        assert "Clone failed" in response.json()["message"]
    model = wait_until(
        lambda: (m := lena.get(path).json()).get("status") == "failed" and m, 60,
        "the launch to fail",
    )
    failure = model["failure"]
    assert failure["reason"] == "clone_failed", failure
    assert failure["message"].startswith("Clone failed")
    assert failure["next_step"] and failure["log"]
    assert failure["log"][-1].startswith("Clone failed")
    lines = lena.get(f"{path}/-/logs").json()["lines"]
    assert lines[-1].startswith("Clone failed")


def test_failure_reasons_from_kubespawner_and_the_hub():
    cases = {
        "Spawn failed: Commit " + "a" * 40 + " was not found in x/y.": "unknown_commit",
        "Spawn failed: Launching x/y needs Developer access (30) or higher; you have "
        "Reporter access.": "no_access",
        "Spawn failed: Clone failed: fatal: could not read from remote": "clone_failed",
        "Spawn failed: The image r.example/x/y:abc cannot be pulled (ErrImagePull): "
        "manifest unknown": "image_not_found",
        "Spawn failed: The image r.example/x/y:abc cannot be pulled (ImagePullBackOff): "
        "unauthorized: access denied": "image_pull_failed",
        "Spawn failed: pod ns/jupyter-a did not start in 300 seconds!": "start_timeout",
        "Spawn failed: Timeout": "start_timeout",
        "Spawn failed: Spawner failed to start [status=1]. The logs for a may contain "
        "details.": "server_exited",
        "Spawn failed: something new": "unknown",
    }
    for message, reason in cases.items():
        failure = failures.explain(message)
        assert failure.reason == reason, message
        assert not failure.message.startswith("Spawn failed") and failure.next_step
    # KubeSpawner relays the scheduler's events: a timeout after them is unschedulable
    events = ["Server requested", "[Warning] 0/3 nodes are available: 3 Insufficient memory."]
    failure = failures.explain("Spawn failed: pod ns/p did not start in 300 seconds!", events)
    assert failure.reason == "unschedulable" and "Insufficient memory" in failure.message
    assert "smaller profile" in failure.next_step
    # a server that exited shows its last log lines
    log = [f"line {i}" for i in range(30)]
    failure = failures.explain("Spawner failed to start [status=1].", log=log)
    assert failure.log == tuple(log[-failures.LOG_LINES:])
    assert failures.explain(None).reason == "unknown"
    # the local spawner found the server ended by the OOM killer: that is the reason, whatever
    # the hub saw (a server that exited); kills that left the server running are not
    memory = {"limit": "300M", "oom_kills": 2, "server_killed": True}
    for message in (None, "Spawner failed to start [status=137]."):
        failure = failures.explain(message, log=log, memory=memory)
        assert failure.reason == "out_of_memory", message
        assert failure.message == "Stopped: used more than the profile's memory (300M)."
        assert "more memory" in failure.next_step and failure.log
    memory = {**memory, "server_killed": False}
    assert failures.explain(None, memory=memory).reason == "unknown"


def test_memory_in_the_server_model_and_on_the_pages():
    options = {"namespace": "a", "project": "b", "commit_sha": "c" * 40}
    hub_model = {"name": "x", "ready": True, "user_options": options}
    served = server_model(hub_model)
    assert served is not None and served["memory"] is None  # nobody watches (Kubernetes)
    recorded = {"limit": "300M", "oom_kills": 2, "server_killed": False}
    served = server_model({**hub_model, "user_options": {**options, "memory": recorded}})
    assert served is not None and served["memory"] == recorded
    odd = server_model({**hub_model, "user_options": {**options, "memory": {"limit": 3}}})
    assert odd is not None and odd["memory"] is None
    assert memory_notice({**recorded, "oom_kills": 0}) is None
    page = Renderer(prefix="/", base_url="/").env.get_template("list.html").render(
        servers=[served]
    )
    assert "Out of memory: 2 processes were stopped" in page and "profile&#39;s 300M" in page


def test_disk_in_the_server_model_and_on_the_pages():
    """The local spawner's `disk` record becomes the model's `disk` (odd values dropped) and,
    once near the limit, a warning on the list and the launch page."""
    options = {"namespace": "a", "project": "b", "commit_sha": "c" * 40}
    hub_model = {"name": "x", "ready": True, "user_options": options}
    served = server_model(hub_model)
    assert served is not None and served["disk"] is None  # nobody watches (Kubernetes)
    quiet = {"limit": "64M", "near_limit": False}
    served = server_model({**hub_model, "user_options": {**options, "disk": quiet}})
    assert served is not None
    assert served["disk"] == {**quiet, "used_percent": None, "autosave": None}
    assert disk_notice(served["disk"]) is None
    near = {"limit": "64M", "near_limit": True, "used_percent": 93, "autosave": "failed"}
    served = server_model({**hub_model, "user_options": {**options, "disk": near}})
    assert served is not None and served["disk"] == near
    odd = {"limit": "64M", "near_limit": True, "used_percent": "x", "autosave": "maybe"}
    odd_model = server_model({**hub_model, "user_options": {**options, "disk": odd}})
    assert odd_model is not None
    assert odd_model["disk"] == {**odd, "used_percent": None, "autosave": None}
    env = Renderer(prefix="/", base_url="/").env
    page = env.get_template("list.html").render(servers=[served])
    assert "Disk nearly full: the workspace uses 93% of the profile&#39;s 64M" in page
    assert "autosave FAILED" in page  # the launch page's: tests/test_sandbox.py


@pytest.mark.browser
def test_a_failed_launch_shows_the_log_tail(hub, repos, browser):
    sha = broken_commit(repos)
    visitor = Visitor(browser, hub, fresh_user())
    try:
        path = f"demo/other/{sha}"
        page = visitor.login(path)
        page.get_by_role("button", name="Launch").click()
        visitor.wait_for(path)
        expect(page.locator("#show-log")).to_be_visible()
        expect(page.locator("#failure-message")).to_contain_text("Clone failed", timeout=60_000)
        expect(page.locator("#failure-next")).to_contain_text("Try again")
        expect(page.locator("#failure-log")).to_contain_text("Clone failed")
        expect(page.locator("#show-log")).to_be_visible()  # the whole log, still a click away
        assert_no_horizontal_scroll(page)
        shoot(page, "failed-clone-log")
        # the page rendered again says the same, without the stream
        page.reload()
        expect(page.locator("#failure")).to_have_attribute("data-reason", "clone_failed")
        expect(page.locator("#failure-log")).to_contain_text("Clone failed")
        assert_clean(visitor)
    finally:
        visitor.close()
