"""The eleven figures. Each measures the glue's way and a baseline side by side, in the same run.

A figure is a function of (`Bench`, `Sizes`), or of `Sizes` alone when it needs no
hub, that returns a `Figure`; `HUB_FIGURES` and `PLAIN_FIGURES` list them by
number, and a new figure is one function and one line there.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from glue.core import contracts
from glue.hub.setup import proxy_command
from glue.session import clone as clone_step
from glue.session import gitproxy
from testing import CHECKOUT
from testing.checks import timed, wait_until
from testing.gitlab import GitLabStandIn, StandInThread
from testing.hub import RunningHub
from testing.net import free_port, listening_pid
from testing.repos import git, make_repo

from .harness import Bench, Figure, KeepAlive, Sizes, median, percentile, rss_mib
from .spawner import TODAY


def _wait_glue_running(glue: KeepAlive, path: str, timeout: float = 300) -> None:
    def running() -> bool:
        status, model = glue.get_json(path)
        return status == 200 and model["status"] == "running"

    wait_until(running, timeout, f"{path} running", every=0.1)  # timed: a steady poll


def _hub_servers(admin: KeepAlive, user: str) -> dict[str, Any]:
    status, model = admin.get_json(f"users/{user}?include_stopped_servers=1")
    return model.get("servers", {}) if status == 200 else {}


def _remove(admin: KeepAlive, user: str, name: str) -> None:
    admin.request("DELETE", f"users/{user}/servers/{name}", body={"remove": True})
    wait_until(lambda: name not in _hub_servers(admin, user), 120, f"{user}/{name} removed")


def _settled(glue: KeepAlive, path: str) -> dict[str, Any] | None:
    """The server's model once it runs or failed (with why), else None."""
    status, model = glue.get_json(path)
    return model if status == 200 and model["status"] in ("running", "failed") else None


# --- 1. status ---------------------------------------------------------------------------------


def status(bench: Bench, sizes: Sizes) -> Figure:
    """A running server's status through the glue vs the user's model from the hub API."""
    user = "bench-status"
    requests = sizes.requests
    path = bench.path("bench/status")
    glue, hub = bench.glue(user), bench.hub_api(user)
    code, _ = glue.request("POST", path)
    assert code in (201, 202), code
    _wait_glue_running(glue, path)
    hub_path = f"users/{user}?include_stopped_servers=1"
    for _ in range(sizes.warmup):  # connections open, caches (identity, access) warm
        glue.request("GET", path)
        hub.request("GET", hub_path)
    through_glue: list[float] = []
    direct: list[float] = []
    for i in range(requests):
        pair = [(glue, path, through_glue), (hub, hub_path, direct)]
        for client, target, samples in pair if i % 2 else reversed(pair):
            (code, _), seconds = timed(functools.partial(client.request, "GET", target))
            assert code == 200, (target, code)
            samples.append(seconds * 1000)
    glue.close()
    hub.close()
    g50, g99 = percentile(through_glue, 50), percentile(through_glue, 99)
    h50, h99 = percentile(direct, 50), percentile(direct, 99)
    ratio = g50 / h50
    return Figure(
        1,
        f"Server status, JSON, {requests} requests each, interleaved, caches warm",
        f"p50 {g50:.2f} ms, p99 {g99:.2f} ms (proxy -> glue -> hub API)",
        f"p50 {h50:.2f} ms, p99 {h99:.2f} ms (proxy -> hub API, the same user model)",
        ratio,
        "p50 <= 1.15",
        ratio <= 1.15,
        {"glue_p50_ms": g50, "glue_p99_ms": g99, "hub_p50_ms": h50, "hub_p99_ms": h99},
        notes=[f"p99 ratio {g99 / h99:.2f}"],
    )


# --- 2. launch to ready --------------------------------------------------------------------------


def launch(bench: Bench, sizes: Sizes) -> Figure:
    """POST through the glue until it says running vs a named-server spawn through the hub API.

    Both run the same spawner, so both include the same clone step
    (`python -m glue.session.clone`, run by the spawner) and the same server start.
    JupyterHub checks whether a new server answers with exponential backoff
    and random jitter (each wait drawn up to 0.2, 0.4, 0.8, ... 5 s), so the
    same launch is seen ready anywhere between ~3 s and ~7 s whichever way it
    came: 20 alternating runs each keep the two medians comparable.
    """
    runs = sizes.launches
    path = bench.path("bench/launch")
    name, options = bench.spawn("bench/launch")
    glue_user, direct_user = "bench-launch-glue", "bench-launch-direct"
    glue, admin = bench.glue(glue_user), bench.hub_api()
    bench.hub.token_for(direct_user)  # creates the user

    answers: dict[str, list[float]] = {"glue": [], "direct": []}

    def through_glue() -> float:
        started = time.perf_counter()
        code, _ = glue.request("POST", path)
        assert code in (201, 202), code
        answers["glue"].append(time.perf_counter() - started)
        _wait_glue_running(glue, path)
        seconds = time.perf_counter() - started
        code, _ = glue.request("DELETE", path)
        assert code in (202, 204), code
        wait_until(lambda: name not in _hub_servers(admin, glue_user), 120, "glue server gone")
        return seconds

    def direct() -> float:
        started = time.perf_counter()
        code, _ = admin.request("POST", f"users/{direct_user}/servers/{name}", body=options)
        assert code in (201, 202), code
        answers["direct"].append(time.perf_counter() - started)
        wait_until(lambda: _hub_servers(admin, direct_user).get(name, {}).get("ready"), 300,
                   "direct server ready", every=0.1)
        seconds = time.perf_counter() - started
        _remove(admin, direct_user, name)
        return seconds

    glue_times: list[float] = []
    direct_times: list[float] = []
    for i in range(runs):
        ways = [(through_glue, glue_times), (direct, direct_times)]
        for way, times in ways if i % 2 else reversed(ways):
            times.append(way())
    glue.close()
    admin.close()
    g, d = median(glue_times), median(direct_times)
    answer_glue, answer_hub = median(answers["glue"]), median(answers["direct"])
    return Figure(
        2,
        f"Launch to ready, median of {runs} each, alternating",
        f"{g:.2f} s (POST through the glue, then its status until running)",
        f"{d:.2f} s (POST of the named server to the hub API, then its model until ready; "
        "the same spawner, clone and server)",
        g / d,
        "<= 1.05",
        g / d <= 1.05,
        {"glue_s": g, "direct_s": d, "glue_answer_s": answer_glue, "direct_answer_s": answer_hub},
        notes=[f"the POST's answer: glue {answer_glue * 1000:.0f} ms, hub "
         f"{answer_hub * 1000:.0f} ms (median; the hub holds both for its "
         "0.5 s slow-spawn timeout)",
         f"glue runs {', '.join(f'{t:.2f}' for t in glue_times)} s",
         f"direct runs {', '.join(f'{t:.2f}' for t in direct_times)} s"],
    )


# --- 3. fifty at once ----------------------------------------------------------------------------


def crowd(bench: Bench, sizes: Sizes) -> Figure:
    """Wall time from the first POST until every server is ready; rounds in ABBA order."""
    users, rounds = sizes.crowd, sizes.rounds
    path = bench.path("bench/crowd")
    name, options = bench.spawn("bench/crowd")
    admin = bench.hub_api()
    hub = psutil.Process(bench.hub_pid)

    def processes() -> int:
        """The hub's processes: proxy, glue and the single-user servers it spawned."""
        return len(hub.children(recursive=True))

    def all_ready(names: list[str]) -> tuple[int, int]:
        ready = failed = 0
        for user in names:
            server = _hub_servers(admin, user).get(name, {})
            if server.get("ready"):
                ready += 1
            elif not server.get("pending"):
                failed += 1
        return ready, failed

    def run(prefix: str, post: Any) -> tuple[float, int]:
        names = [f"{prefix}{i:02d}" for i in range(users)]
        # let the previous crowd's servers exit first (best effort)
        with contextlib.suppress(AssertionError):  # what wait_until raises when time is up
            wait_until(lambda: processes() <= idle, 60, "the previous crowd gone", every=0.2)
        for user in names:
            bench.hub.token_for(user)
        started = time.perf_counter()
        with ThreadPoolExecutor(users) as pool:
            codes = list(pool.map(post, names))
        errors = sum(code not in (201, 202) for code in codes)
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            ready, failed = all_ready(names)
            if ready + failed == users:
                break
            time.sleep(0.5)
        seconds = time.perf_counter() - started
        errors += users - ready
        with ThreadPoolExecutor(10) as pool:
            list(pool.map(lambda u: _remove(bench.hub_api(), u, name), names))
        return seconds, errors

    def via_glue(user: str) -> int:
        client = KeepAlive(bench.hub.prefix,
                           {"Authorization": f"token {bench.hub.token_for(user)}"})
        code, _ = client.request("POST", path)
        client.close()
        return code

    def via_hub(user: str) -> int:
        client = bench.hub_api()
        code, _ = client.request("POST", f"users/{user}/servers/{name}", body=options)
        client.close()
        return code

    idle = processes()
    glue_runs: list[float] = []
    hub_runs: list[float] = []
    glue_errors = hub_errors = 0
    for i in range(rounds):
        ways = [("g", via_glue, glue_runs), ("h", via_hub, hub_runs)]
        for tag, post, runs in ways if i % 2 == 0 else reversed(ways):
            seconds, errors = run(f"crowd{i}{tag}", post)
            runs.append(seconds)
            if tag == "g":
                glue_errors += errors
            else:
                hub_errors += errors
    admin.close()
    ratio = sum(glue_runs) / sum(hub_runs)
    order = ", ".join("glue, hub" if i % 2 == 0 else "hub, glue" for i in range(rounds))
    return Figure(
        3,
        f"{users} users launch at once, wall time until every server is ready, "
        f"{rounds} rounds each ({order})",
        f"{', '.join(f'{t:.1f}' for t in glue_runs)} s, {glue_errors} errors "
        "(POSTs through the glue)",
        f"{', '.join(f'{t:.1f}' for t in hub_runs)} s, {hub_errors} errors "
        "(named-server POSTs to the hub API)",
        ratio,
        "<= 1.2 (total wall time), zero errors",
        ratio <= 1.2 and glue_errors == 0 and hub_errors == 0,
        {"glue_s": sum(glue_runs), "hub_s": sum(hub_runs)},
        errors=glue_errors + hub_errors,
    )


# --- 4. cloning one commit of a long history ---------------------------------------------------


def make_long_history(bare: Path, commits: int, big_every: int, big_files: int,
                      big_bytes: int) -> list[str]:
    """A bare repository: `commits` commits, a large file rewritten every `big_every` commits."""
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    rng = random.Random(1)  # noqa: S311  (reproducible test data, not secrets)
    process = subprocess.Popen(["git", "-C", str(bare), "fast-import", "--quiet"],
                               stdin=subprocess.PIPE)
    assert process.stdin is not None
    write = process.stdin.write
    when = 1_700_000_000
    for i in range(1, commits + 1):
        message = f"change {i}\n".encode()
        write(b"commit refs/heads/main\n")
        write(f"mark :{i}\ncommitter Bench <bench@example.org> {when + i} +0000\n".encode())
        write(b"data %d\n%s" % (len(message), message))
        if i > 1:
            write(f"from :{i - 1}\n".encode())
        small = f"line {i}\n".encode()
        write(b"M 644 inline notes.txt\ndata %d\n%s\n" % (len(small), small))
        if i == 1 or i % big_every == 0:
            for j in range(big_files if i == 1 else 1):
                index = j if i == 1 else (i // big_every) % big_files
                blob = rng.randbytes(big_bytes)
                write(f"M 644 inline data/big{index}.bin\n".encode())
                write(b"data %d\n" % len(blob) + blob + b"\n")
    process.stdin.close()
    assert process.wait() == 0
    shas = subprocess.check_output(["git", "-C", str(bare), "rev-list", "--reverse", "main"],
                                   text=True).split()
    return shas


def _objects_bytes(repository: Path) -> int:
    objects = repository / ".git" / "objects"
    return sum(f.stat().st_size for f in objects.rglob("*") if f.is_file())


def clone(sizes: Sizes, big_every: int = 25, big_files: int = 4) -> Figure:
    """`glue.session.clone` of one old commit vs a full clone and checkout, over file://."""
    commits, big_bytes, runs = sizes.commits, sizes.big_bytes, sizes.clones
    with tempfile.TemporaryDirectory(prefix="renku-bench-clone-") as tmp:
        root = Path(tmp)
        bare = root / "long.git"
        shas, made = timed(lambda: make_long_history(bare, commits, big_every, big_files,
                                                     big_bytes))
        sha = shas[len(shas) // 2]  # an old commit, as a paper's notebook would name
        source = bare.as_uri()  # file://: a real pack transfer, no hard links
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}

        def glue_clone(dest: Path) -> None:
            subprocess.run([sys.executable, "-m", "glue.session.clone", "--source", source,
                            "--commit", sha, "--dest", str(dest)],
                           check=True, capture_output=True, env=env)

        def full_clone(dest: Path) -> None:
            subprocess.run(["git", "clone", "-q", "--no-checkout", source, str(dest)],
                           check=True, capture_output=True, env=env)
            subprocess.run(["git", "-C", str(dest), "-c", "advice.detachedHead=false",
                            "checkout", "-q", "--detach", sha], check=True, env=env)

        glue_times: list[float] = []
        full_times: list[float] = []
        glue_bytes = full_bytes = 0
        for i in range(runs):
            for way, times in ((glue_clone, glue_times), (full_clone, full_times)):
                dest = root / f"{way.__name__}-{i}"
                _, seconds = timed(functools.partial(way, dest))
                times.append(seconds)
                head = subprocess.check_output(["git", "-C", str(dest), "rev-parse", "HEAD"],
                                               text=True).strip()
                assert head == sha, (way.__name__, head)
                size = _objects_bytes(dest)
                if way is glue_clone:
                    glue_bytes = size
                else:
                    full_bytes = size
                shutil.rmtree(dest)
        history = sum(f.stat().st_size for f in (bare / "objects").rglob("*") if f.is_file())
    g, f = median(glue_times), median(full_times)
    speed, smaller = f / g, full_bytes / glue_bytes
    return Figure(
        4,
        f"Clone one commit of {commits} (a {big_bytes / (1 << 20):g} MiB file rewritten every "
        f"{big_every} commits; {history / (1 << 20):.3g} MiB of history), median of {runs}",
        f"{g:.2f} s, {glue_bytes / (1 << 20):.1f} MiB of objects "
        "(glue.session.clone: that commit only)",
        f"{f:.2f} s, {full_bytes / (1 << 20):.1f} MiB of objects (git clone, then checkout)",
        g / f,
        ">= 5x faster (ratio <= 0.2), >= 10x fewer bytes",
        speed >= 5 and smaller >= 10,
        {"glue_s": g, "full_s": f, "glue_bytes": glue_bytes, "full_bytes": full_bytes},
        notes=[f"{speed:.1f}x faster, {smaller:.1f}x fewer bytes; the history took {made:.1f} s to "
         "generate"],
    )


# --- 5. memory ------------------------------------------------------------------------------------


def memory(bench: Bench, sizes: Sizes, threads: int = 4) -> Figure:
    """The glue's RSS idle, after half of the requests and after all of them."""
    requests = sizes.memory_requests
    pid = bench.glue_pid
    idle = rss_mib(pid)
    glue_url = f"http://127.0.0.1:{bench.hub.glue_port}/services/notebooks/"
    users = [f"bench-memory-{i:02d}" for i in range(20)]
    tokens = [bench.hub.token_for(u) for u in users]
    status_sha = bench.shas["bench/status"][0]
    paths = [
        "",  # the list (the hub)
        bench.path("bench/status"),  # a status: 404, no server for these users
        "bench/status/notasha",  # 400 before anything else
        f"bench/missing/{status_sha}",  # 404: no such project
        "user",
        "health",
        "openapi.json",
    ]

    def worker(count: int, seed: int) -> int:
        rng = random.Random(seed)  # noqa: S311  (a reproducible request mix)
        client = KeepAlive(glue_url)
        failures = 0
        for _ in range(count):
            token = rng.choice(tokens)
            code, _ = client.request("GET", rng.choice(paths),
                                     headers={"Authorization": f"token {token}"})
            failures += code >= 500
        client.close()
        return failures

    half = requests // 2
    failures = 0
    samples = []
    for part in range(2):
        with ThreadPoolExecutor(threads) as pool:
            failures += sum(pool.map(worker, [half // threads] * threads,
                                     range(part * threads, (part + 1) * threads)))
        time.sleep(1)
        samples.append(rss_mib(pid))
    growth = samples[1] - samples[0]
    peak = max(idle, *samples)
    return Figure(
        5,
        f"Glue memory (RSS), idle and after {requests} requests by {len(users)} users",
        f"after {requests} requests: {samples[1]:.1f} MiB (idle {idle:.1f} MiB)",
        f"after the first {half}: {samples[0]:.1f} MiB",
        samples[1] / samples[0],
        "<= 1.01 (no growth in the second half), and at most 100 MiB",
        samples[1] / samples[0] <= 1.01 and peak <= 100 and failures == 0,
        {"idle_mib": idle, "half_mib": samples[0], "all_mib": samples[1]},
        errors=failures,
        notes=[f"growth in the second half {growth:+.2f} MiB; peak {peak:.1f} MiB; "
         f"{failures} 5xx answers"],
    )


# --- 6. the sandbox's cost -----------------------------------------------------------------------


def _alternating_launches(
    clients: dict[str, KeepAlive], path: str, runs: int
) -> dict[str, list[float]]:
    """Launch to ready through each glue in `clients` in turn (ABBA), `runs` times each:
    POST until the glue says running, then a stop until the server is gone. Hubs that share
    the machine are measured alternately rather than side by side."""
    times: dict[str, list[float]] = {way: [] for way in clients}
    ways = list(clients)

    def launch_once(way: str) -> None:
        glue = clients[way]
        started = time.perf_counter()
        code, body = glue.request("POST", path)
        assert code in (201, 202), (way, code, body[:500])
        model = wait_until(lambda: _settled(glue, path), 300, f"{way} server settled", every=0.1)
        assert model["status"] == "running", (way, model)
        times[way].append(time.perf_counter() - started)
        code, _ = glue.request("DELETE", path)
        assert code in (202, 204), (way, code)
        wait_until(lambda: glue.get_json(path)[0] == 404, 120, f"{way} server gone")

    for i in range(runs):
        for way in ways if i % 2 == 0 else reversed(ways):
            launch_once(way)
    return times


def _against(
    bench: Bench, second: RunningHub, user: str, ways: tuple[str, str], runs: int
) -> dict[str, list[float]]:
    """Launches on the bench's hub (`ways[0]`) and on `second` (`ways[1]`), started for them
    and stopped after, alternately."""
    try:
        second.start()
        clients = {
            way: KeepAlive(hub.prefix, {"Authorization": f"token {hub.token_for(user)}"})
            for way, hub in zip(ways, (bench.hub, second), strict=True)
        }
        times = _alternating_launches(clients, bench.path("bench/launch"), runs)
        for client in clients.values():
            client.close()
    finally:
        second.stop()
    return times


def sandbox(bench: Bench, sizes: Sizes) -> Figure:
    """Launch to ready through the glue on the bench's hub (every server in bubblewrap) vs a
    second hub whose only difference is `spawner.sandbox: false`, one launch each in turn.

    Both hubs run the same spawner, clone step, session step and server as the same per-user
    id in the same cgroups; the difference is bubblewrap's namespaces and mounts, for the clone
    and session steps and the server.
    """
    runs = sizes.sandbox_launches
    user = "bench-sandbox"
    plain_dir = bench.workdir / "plain-hub"
    plain_dir.mkdir()
    # unsandboxed, the per-user ids reach their workspaces through the host's directories
    # (the temporary directory is 0700), as bubblewrap's mounts otherwise let them
    bench.workdir.chmod(0o711)
    plain = RunningHub(plain_dir, {**bench.config, "spawner": {"sandbox": False}})
    times = _against(bench, plain, user, ("sandboxed", "plain"), runs)
    s, p = median(times["sandboxed"]), median(times["plain"])
    return Figure(
        6,
        f"Launch to ready with and without the sandbox, median of {runs} each, alternating",
        f"{s:.2f} s (POST through the glue until running; clone, session step and server in "
        "bubblewrap)",
        f"{p:.2f} s (the same on a second hub with `spawner.sandbox: false`)",
        s / p,
        "<= 1.1",
        s / p <= 1.1,
        {"sandboxed_s": s, "plain_s": p},
        notes=[f"sandboxed runs {', '.join(f'{t:.2f}' for t in times['sandboxed'])} s",
               f"plain runs {', '.join(f'{t:.2f}' for t in times['plain'])} s"],
    )


# --- 9. what isolating users from each other costs -----------------------------------------------

# the last commit before users' own origins, private kernels, safe server start, own autosaves
# and bounded processes and disk; NOTEBOOKS_BENCH_BASE names another
ISOLATION_BASE = "8ccc8a1"


def checked_out(ref: str, dest: Path) -> Path:
    """This repository's files at `ref` in `dest` (`git archive`), to run an earlier commit's
    code beside this one."""
    dest.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(CHECKOUT), "archive", "--format=tar", ref],
        check=True, capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def isolation(bench: Bench, sizes: Sizes) -> Figure:
    """Launch to ready on the bench's hub vs a hub running the code of `ISOLATION_BASE`,
    checked out beside this one (`git archive`), alternately, with the same config, packages,
    proxy and machine: what the isolation between users added to a launch."""
    runs = sizes.sandbox_launches
    ref = os.environ.get("NOTEBOOKS_BENCH_BASE", ISOLATION_BASE)
    base_checkout = checked_out(ref, bench.workdir / "base-checkout")
    base_dir = bench.workdir / "base-hub"
    base_dir.mkdir()
    base = RunningHub(
        base_dir, bench.config, checkout=base_checkout,
        extra_env={"NOTEBOOKS_PROXY": proxy_command()},
    )
    times = _against(bench, base, "bench-isolation", ("isolated", "base"), runs)
    i, b = median(times["isolated"]), median(times["base"])
    return Figure(
        9,
        f"Launch to ready with users isolated from each other vs at {ref}, median of {runs} "
        "each, alternating",
        f"{i:.2f} s (this checkout: an origin per user, private kernels, safe start, limits)",
        f"{b:.2f} s (the code of {ref}, checked out beside it, same config and machine)",
        i / b,
        "<= 1.1",
        i / b <= 1.1,
        {"isolated_s": i, "base_s": b},
        notes=[f"isolated runs {', '.join(f'{t:.2f}' for t in times['isolated'])} s",
               f"base runs {', '.join(f'{t:.2f}' for t in times['base'])} s"],
    )


# --- 7. a stop and its autosave ----------------------------------------------------------------

FILE_BYTES = 5_000_000  # the changed or pushed data comes in files of 5 MB


def _write_new_files(directory: Path, total: int, tag: str) -> int:
    """`total` bytes of incompressible data in new files of at most 5 MB, owned as the
    directory is (in a workspace: by the sandbox's user); how many files."""
    owner = directory.stat()
    data = directory / "data"
    data.mkdir(exist_ok=True)
    os.chown(data, owner.st_uid, owner.st_gid)
    files = 0
    for offset in range(0, total, FILE_BYTES):
        path = data / f"{tag}-{files}.bin"
        path.write_bytes(os.urandom(min(FILE_BYTES, total - offset)))
        os.chown(path, owner.st_uid, owner.st_gid)
        files += 1
    return files


def _forget(bare: Path, branch: str) -> None:
    """A pushed branch and its objects gone from a bare repository (disk, and the next push
    sends everything again)."""
    git(bare, "update-ref", "-d", f"refs/heads/{branch}")
    git(bare, "reflog", "expire", "--expire=now", "--all")
    git(bare, "prune", "--expire=now")


def _exit_watch(pid: int) -> Callable[[], float]:
    """Watch process `pid` from now on; returns a function that waits for its exit and
    gives its time (perf_counter): gone, or a zombie its parent has not reaped yet."""
    process = psutil.Process(pid)  # compares start times: a reused pid is not this process
    exited: list[float] = []

    def watch() -> None:
        while True:
            try:
                if process.status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(0.005)
        exited.append(time.perf_counter())

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()

    def wait() -> float:
        thread.join(120)
        assert exited, f"process {pid} still runs"
        return exited[0]

    return wait


def stop(bench: Bench, sizes: Sizes) -> Figure:
    """A stop through the glue's DELETE of a running server, with and without the autosave
    work, alternately (ABBA); then with changed files.

    The autosave way is the embedded default's: the glue stops the server through the
    hub's saving DELETE (glue.hub.autosaveapi: the server's route closed, the autosave step in
    the sandbox through the session's git component, then the stop, which does not save
    again). The baseline, a stop as before autosave existed, is
    the same DELETE with `force=true` (no pre-stop autosave) for a user whose spawner's
    autosave does nothing (benchmarks/spawner.py): the same hub, glue, spawner, component
    and server.

    Each stop is timed twice: until the server's process has exited (all the autosave
    work comes before that), and until the glue says the server is gone. The second adds
    the hub's polling for the exit, with random jitter (JupyterHub's exponential backoff
    from `death_interval`, up to a second) alike both ways, so the target is read on the
    first and the second is shown beside it.
    """
    project = "bench/stop"
    path, sha = bench.path(project), bench.shas[project][0]
    bare = bench.workdir / "repos" / f"{project}.git"
    prefix = "notebooks/autosave"  # the schema's default branchPrefix
    admin = bench.hub_api()

    def launched(client: KeepAlive, user: str) -> tuple[Path, int]:
        """Launch the commit for `user` until running; its workspace and process id."""
        code, body = client.request("POST", path)
        assert code in (201, 202), (user, code, body[:500])
        model = wait_until(lambda: _settled(client, path), 300, f"{user}'s server settled",
                           every=0.1)
        assert model["status"] == "running", (user, model)
        ((name, server),) = [(n, s) for n, s in _hub_servers(admin, user).items() if n]
        return bench.hub.workspaces / user / name, int(server["state"]["pid"])

    def stopped(client: KeepAlive, pid: int, force: bool) -> tuple[float, float]:
        """Seconds from the DELETE until the server's process exited, and until the glue
        says the server is gone."""
        exit_time = _exit_watch(pid)
        started = time.perf_counter()
        code, body = client.request("DELETE", path + ("?force=true" if force else ""))
        assert code in (202, 204), (code, body[:500])
        if code == 202:
            wait_until(lambda: client.get_json(path)[0] == 404, 120, "server gone", every=0.02)
        gone = time.perf_counter() - started
        return exit_time() - started, gone

    def autosaves(user: str) -> list[str]:
        mine = f"refs/heads/{contracts.autosave_user_prefix(prefix, user)}"
        return git(bare, "for-each-ref", "--format=%(refname)", mine).split()

    ways = {"autosave": ("bench-stop", False), "today": (f"{TODAY}stop", True)}
    clients = {way: bench.glue(user) for way, (user, _) in ways.items()}
    exits: dict[str, list[float]] = {way: [] for way in ways}
    gones: dict[str, list[float]] = {way: [] for way in ways}
    for i in range(sizes.stops):
        for way in ("autosave", "today") if i % 2 == 0 else ("today", "autosave"):
            user, force = ways[way]
            _, pid = launched(clients[way], user)
            exited, gone = stopped(clients[way], pid, force)
            exits[way].append(exited)
            gones[way].append(gone)
    for client in clients.values():
        client.close()
    assert not autosaves(ways["autosave"][0]), "a clean workspace wrote an autosave branch"

    dirty_exits: list[float] = []
    dirty_gones: list[float] = []
    for i in range(sizes.dirty_stops):
        user = f"bench-stop-dirty{i}"
        client = bench.glue(user)
        workspace, pid = launched(client, user)
        files = _write_new_files(workspace, sizes.changed_bytes, f"run{i}")
        exited, gone = stopped(client, pid, force=False)
        dirty_exits.append(exited)
        dirty_gones.append(gone)
        client.close()
        branch = contracts.autosave_branch(prefix, user, sha)
        saved = git(bare, "ls-tree", "-r", "--name-only", branch, "data").split()
        assert len(saved) == files, (branch, saved)
        _forget(bare, branch)
    admin.close()

    g, t = median(exits["autosave"]), median(exits["today"])
    g_gone, t_gone = median(gones["autosave"]), median(gones["today"])
    d, d_gone = median(dirty_exits), median(dirty_gones)
    difference = g - t
    megabytes = sizes.changed_bytes / 1e6

    def runs(values: list[float]) -> str:
        return ", ".join(f"{x:.3f}" for x in values)

    return Figure(
        7,
        f"A stop through the glue's DELETE, clean workspace, median of {sizes.stops} each, "
        "alternating",
        f"{g:.3f} s until the server's process exited, {g_gone:.2f} s until the glue says it "
        "is gone (one autosave, in the hub's saving DELETE right before the stop; nothing "
        "to save, no branch written)",
        f"{t:.3f} s until exited, {t_gone:.2f} s until gone (the same stop without the "
        "autosave work: force=true, the spawner's autosave a no-op)",
        g / t,
        "at most 0.2 s more than without autosave (until exited)",
        difference <= 0.2,
        {"autosave_exit_s": g, "today_exit_s": t, "autosave_gone_s": g_gone,
         "today_gone_s": t_gone, "changed_exit_s": d, "changed_gone_s": d_gone},
        difference=difference,
        notes=[f"until gone: difference {g_gone - t_gone:+.3f} s (the hub's polling jitter "
               "is in both)",
               "both ways stop the session's git component (it came with the push from "
               "the session, not with autosave)",
               f"with {megabytes:g} MB of changed files (new, in files of {FILE_BYTES / 1e6:g} MB, "
               f"saved to the autosave branch): {d:.2f} s until exited, {d_gone:.2f} s until "
               f"gone (median of {sizes.dirty_stops}; runs until exited {runs(dirty_exits)} "
               "s), no target",
               f"autosave runs until exited {runs(exits['autosave'])} s",
               f"baseline runs until exited {runs(exits['today'])} s"],
    )


# --- 8. a push through the session's git component ----------------------------------------------

PUSHER, PUSH_TOKEN = "bench", "bench-token-with-write-repository"


def _push_env(password_file: Path) -> dict[str, str]:
    """Git's environment for a push whose password is the file's (the clone step's helper)."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(password_file.parent),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        clone_step.TOKEN_FILE_ENV: str(password_file),
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "credential.helper",
        "GIT_CONFIG_VALUE_0": clone_step.CREDENTIAL_HELPER,
    }


def _pushed(work: Path, url: str, branch: str, env: dict[str, str]) -> float:
    """Seconds for `git push` of HEAD to a new branch."""
    _, seconds = timed(lambda: subprocess.run(
        ["git", "-C", str(work), "push", "-q", url, f"HEAD:refs/heads/{branch}"],
        env=env, check=True, capture_output=True,
    ))
    return seconds


def push(sizes: Sizes) -> Figure:
    """`git push` of new commits through the session's git component (glue/session/gitproxy.py, as
    its own process, with the per-server secret as the password) vs straight to the GitLab
    stand-in with the token; the same commit both ways, each to a new branch."""
    runs, total = sizes.pushes, sizes.push_bytes
    with tempfile.TemporaryDirectory(prefix="renku-bench-push-") as tmp:
        root = Path(tmp)
        make_repo(root, "bench/push")
        bare = root / "bench/push.git"
        standin = GitLabStandIn()
        standin.add_user(PUSHER, PUSH_TOKEN)
        standin.add_project("bench/push", repo=bare, members={PUSHER: 30})
        with StandInThread(standin):
            files = root / "component"
            files.mkdir()
            (files / "token").write_text(PUSH_TOKEN)
            (files / "secret").write_text("bench-per-server-secret")
            port = free_port()
            settings = gitproxy.Settings(project="bench/push", secret_file=files / "secret",
                                         upstream=standin.url, token_file=files / "token",
                                         autosave_prefix="notebooks/autosave")
            argv, _ = gitproxy.step(settings, listen=f"127.0.0.1:{port}", python=sys.executable)
            component = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
            try:
                wait_until(lambda: listening_pid(port), 20, "the component listens")
                urls = {"direct": f"{standin.url}/bench/push.git",
                        "component": f"http://127.0.0.1:{port}/bench/push.git"}
                envs = {"direct": _push_env(files / "token"),
                        "component": _push_env(files / "secret")}
                times: dict[str, list[float]] = {"direct": [], "component": []}
                work = root / "work"
                git(root, "clone", "-q", str(bare), str(work))
                for i in range(runs):
                    _write_new_files(work, total, f"push{i}")
                    git(work, "add", "-A")
                    git(work, "commit", "-q", "-m", f"push {i}")
                    for way in ("component", "direct") if i % 2 == 0 else ("direct", "component"):
                        branch = f"{way}-{i}"
                        times[way].append(_pushed(work, urls[way], branch, envs[way]))
                        _forget(bare, branch)
                    # the remote keeps this round's commit: the next round sends only its own
                    git(work, "push", "-q", str(bare), "HEAD:refs/heads/main")
            finally:
                component.terminate()
                component.wait(10)
    c, d = median(times["component"]), median(times["direct"])
    megabytes = total / 1e6
    return Figure(
        8,
        f"git push of {megabytes:g} MB of new files, median of {runs} each, alternating",
        f"{c:.2f} s (through the session's git component to the GitLab stand-in)",
        f"{d:.2f} s (straight to the stand-in with the token)",
        c / d,
        "<= 1.2",
        c / d <= 1.2,
        {"component_s": c, "direct_s": d},
        notes=[f"component runs {', '.join(f'{x:.2f}' for x in times['component'])} s",
               f"direct runs {', '.join(f'{x:.2f}' for x in times['direct'])} s"],
    )


# --- 10. where a launch's time goes, against the code before the cuts --------------------------

# the last commit before the launch was broken down and cut (issue 21); NOTEBOOKS_BENCH_LAUNCH_BASE
# names another, NOTEBOOKS_BENCH_BASE_PYTHON the interpreter of its environment
LAUNCH_BASE = "337da66"
READY_POLL_SECONDS = 0.02
# the phases of the table, in launch order: the glue's and the hub's as recorded
# (glue.core.contracts.LAUNCH_PHASES), then what only a client sees
CLIENT_PHASES = ("post", "ready", "first_page")
HUB_LINE = re.compile(r"^\[\w (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) [^\]]*\] (.*)$")
PROXY_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z \[ConfigProxy\] .*?(\d{3} \S+) \S+\s*$"
)


def _base_environment(ref: str, checkout: Path, measured: bool) -> str:
    """The interpreter whose environment the base code runs in: NOTEBOOKS_BENCH_BASE_PYTHON,
    else one of its own, built once into `.bench/` from the base's pyproject (its JupyterHub,
    JupyterLab and their dependencies as that commit installed them). A run that measures
    nothing (`measured` false: the smoke size) runs the base code in this environment."""
    given = os.environ.get("NOTEBOOKS_BENCH_BASE_PYTHON")
    if given:
        return given
    if not measured:
        return sys.executable
    venv = CHECKOUT / ".bench" / f"venv-{ref}"
    python = venv / "bin" / "python"
    if not (venv / ".installed").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", f"{checkout}[hub,singleuser]"],
            check=True,
        )
        (venv / ".installed").touch()
    return str(python)


def _hub_events(log: str, user: str) -> dict[str, float]:
    """When the steps of `user`'s one launch happened, from the hub's and the proxy's log
    lines written as they happened (epoch seconds): for the code before the breakdown, which
    recorded no phases, and for the same reading of this code."""
    # the spawner's progress messages (glue.hub.commitspawner.emit), then the hub's own lines
    ours = {
        "checking": ("Checking access to",),
        "cloning": ("Cloning ",),
        "session": ("Restoring unsaved work", "Starting clean"),
        "starting": ("starting the notebook server",),
    }
    found: dict[str, float] = {}

    def at(stamp: str, fmt: str) -> float:
        return datetime.strptime(stamp, fmt).replace(tzinfo=UTC).timestamp()

    for line in log.splitlines():
        hub = HUB_LINE.match(line)
        if hub:
            when, text = at(hub[1], "%Y-%m-%d %H:%M:%S.%f"), hub[2]
            if text.startswith(f"{user}:"):
                said = text.split(": ", 1)[-1]
                for step, words in ours.items():
                    if any(word in said for word in words):
                        found.setdefault(step, when)
            elif text.startswith(f"User {user}:") and "seconds to start" in text:
                found.setdefault("answered", when)
            elif text.startswith(f"Adding user {user} to proxy"):
                found.setdefault("routing", when)
            continue
        proxy = PROXY_LINE.match(line)
        if proxy and "routing" in found and proxy[2].startswith("201 POST"):
            found.setdefault("routed", at(proxy[1], "%Y-%m-%dT%H:%M:%S.%f"))
    return found


def _logged_phases(events: dict[str, float]) -> dict[str, float]:
    """The hub's phases as its log lines bound them (the base's clone includes the git
    component's start, which came after it; its server, the hub's backed-off wait)."""
    spans = {
        contracts.PHASE_HUB_CHECKS: ("checking", "cloning"),
        contracts.PHASE_CLONE: ("cloning", "session"),
        contracts.PHASE_SESSION: ("session", "starting"),
        contracts.PHASE_SERVER: ("starting", "answered"),
        contracts.PHASE_PROXY_ROUTE: ("routing", "routed"),
    }
    return {phase: events[b] - events[a] for phase, (a, b) in spans.items()
            if a in events and b in events and events[b] >= events[a]}


def _glue_phases(hub: RunningHub) -> dict[str, float]:
    """The glue's `notebooks_launch_phase_seconds` sums by phase (none on the base)."""
    url = f"http://127.0.0.1:{hub.glue_port}/services/notebooks/metrics"
    status, page = KeepAlive(url).request("GET", "")
    if status != 200:
        return {}
    sums = {}
    for line in page.decode().splitlines():
        match = re.match(r'notebooks_launch_phase_seconds_sum\{phase="(\w+)"\} (\S+)', line)
        if match:
            sums[match[1]] = float(match[2])
    return sums


def _launch_breakdown(hub: RunningHub, user: str, path: str) -> dict[str, float]:
    """One launch through the glue, timed as it goes: the POST's answer, the server's first
    answer of its own API through the proxy (ready), then its first page (JupyterLab's)
    through the proxy; with the phases the code recorded and those its logs show."""
    token = hub.token_for(user)
    glue = KeepAlive(hub.prefix, {"Authorization": f"token {token}"})
    glue_before = _glue_phases(hub)
    mark = len(hub.log())
    started = time.perf_counter()
    code, body = glue.request("POST", path)
    assert code in (201, 202), (code, body[:500])
    posted = time.perf_counter()
    model = json.loads(body)
    server = KeepAlive(hub.absolute(model["url"]), {"Authorization": f"token {token}"})

    def answers() -> bool:
        status, answer = server.request("GET", "api")
        return status == 200 and b'"version"' in answer

    deadline = started + 300
    while not answers():
        assert time.perf_counter() < deadline, f"{path}: no answer through the proxy"
        time.sleep(READY_POLL_SECONDS)
    ready = time.perf_counter()
    status, _ = server.request("GET", "lab")
    assert status == 200, status
    paged = time.perf_counter()
    glue_after = _glue_phases(hub)
    status, shown = glue.get_json(path)
    recorded = dict(shown.get("phases") or {}) if status == 200 else {}
    for phase, total in glue_after.items():
        if total > glue_before.get(phase, 0.0):
            recorded[phase] = total - glue_before.get(phase, 0.0)
    time.sleep(0.3)  # the hub writes a line after its answer
    logged = _logged_phases(_hub_events(hub.log()[mark:], user))
    code, _ = glue.request("DELETE", path)
    assert code in (202, 204), code
    wait_until(lambda: glue.get_json(path)[0] == 404, 120, f"{path} gone")
    glue.close()
    server.close()
    return {
        "post": posted - started, "ready": ready - started, "first_page": paged - ready,
        **{f"recorded:{k}": v for k, v in recorded.items()},
        **{f"logged:{k}": v for k, v in logged.items()},
    }


def breakdown(bench: Bench, sizes: Sizes) -> Figure:
    """Launch to ready on the bench's hub vs a hub running the code of `LAUNCH_BASE` in its
    own environment (its checkout and venv beside this one), one launch each in turn, and
    where each launch's time went: the phases this code records as they happen (the glue's
    checks and spawn call, the spawner's steps, the server's start to its first answer, the
    proxy's route), the first page after, and the same steps read from both hubs' logs.

    Ready is the server answering its own API through the proxy, polled every 20 ms alike
    on both, so no hub's or glue's poll interval decides it."""
    runs = sizes.breakdown_launches
    ref = os.environ.get("NOTEBOOKS_BENCH_LAUNCH_BASE", LAUNCH_BASE)
    base_checkout = checked_out(ref, bench.workdir / "launch-base-checkout")
    python = _base_environment(ref, base_checkout, measured=runs > 1)
    base_dir = bench.workdir / "launch-base-hub"
    base_dir.mkdir()
    base = RunningHub(
        base_dir, bench.config, checkout=base_checkout, python=python,
        extra_env={"NOTEBOOKS_PROXY": proxy_command()},
    )
    path = bench.path("bench/launch")
    took: dict[str, list[dict[str, float]]] = {"new": [], "base": []}
    try:
        base.start()
        hubs = {"new": bench.hub, "base": base}
        for i in range(runs):
            for way in ("new", "base") if i % 2 == 0 else ("base", "new"):
                took[way].append(_launch_breakdown(hubs[way], f"bench-breakdown-{i}", path))
    finally:
        base.stop()

    def med(way: str, key: str) -> float | None:
        values = [launch[key] for launch in took[way] if key in launch]
        return median(values) if values else None

    new, old = med("new", "ready"), med("base", "ready")
    assert new and old
    numbers = {"new_ready_s": new, "base_ready_s": old}
    rows = []
    phases = [*contracts.LAUNCH_PHASES, *CLIENT_PHASES]
    for phase in phases:
        recorded = med("new", phase if phase in CLIENT_PHASES else f"recorded:{phase}")
        before = med("base", phase if phase in CLIENT_PHASES else f"logged:{phase}")
        logged = med("new", f"logged:{phase}")
        if recorded is None and before is None:
            continue
        if recorded:
            numbers[f"{phase}_s"] = recorded
        if before:
            numbers[f"base_{phase}_s"] = before

        def show(value: float | None) -> str:
            return "-" if value is None else f"{value:.3f}"

        rows.append(f"{phase:<12} {show(before):>9} {show(logged):>9} {show(recorded):>9}")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    both = "each in its own environment"
    if python == sys.executable:
        both = "the base code in this environment (NOTEBOOKS_BENCH_BASE_PYTHON unset, smoke size)"
    new_runs = ", ".join(f"{t['ready']:.2f}" for t in took["new"])
    base_runs = ", ".join(f"{t['ready']:.2f}" for t in took["base"])
    return Figure(
        10,
        f"Launch to ready and where it goes, this code vs {ref}, median of {runs} each, "
        "alternating",
        f"{new:.2f} s (POST through the glue until the server answers its API through the "
        "proxy; phases recorded as they ran)",
        f"{old:.2f} s (the code of {ref} in its own environment, checked out beside it, same "
        "config and machine)",
        new / old,
        "<= 0.6",
        new / old <= 0.6,
        numbers,
        notes=[
            f"median seconds per phase, {both}; load average {load}",
            f"{'phase':<12} {'before':>9} {'after':>9} {'recorded':>9}"
            "   (before, after: read from each hub's log; recorded: by this code as it ran)",
            *rows,
            f"new runs {new_runs} s",
            f"base runs {base_runs} s",
        ],
    )


# --- the figures by number ---------------------------------------------------------------------

# run in this order: the memory figure first, while the glue is idle
# --- 11. resuming a paused server -------------------------------------------------------------


def _data_project(bench: Bench, project: str, total: int) -> str:
    """A project whose commit holds `total` bytes of incompressible data files (a research
    project's data set, in its repository): the glue's path of that commit."""
    repos = bench.workdir / "repos"
    make_repo(repos, project, versions=1)
    work = bench.workdir / "data-work" / project
    git(bench.workdir, "clone", "-q", str(repos / f"{project}.git"), str(work))
    _write_new_files(work, total, "dataset")
    git(work, "add", ".")
    git(work, "commit", "-q", "-m", "a data set")
    git(work, "push", "-q", "origin", "main")
    return f"{project}/{git(work, 'rev-parse', 'HEAD').strip()}"


def resume(bench: Bench, sizes: Sizes) -> Figure:
    """A paused server resumed until the glue says it runs, against a fresh launch of the same
    commit until it runs, alternately (ABBA), on the same hub; and the disk a paused server
    holds.

    The resume is `PATCH {"state": "running"}` of a server paused with `{"state":
    "hibernated"}` (glue.hub.pauseapi): its workspace reopened as it was, no clone, no
    autosave restore. The fresh launch is the glue's POST for a user without a server (its
    clone, its session step), removed with `force=true` after each run. The project's commit
    holds a data set of `project_bytes` (what a research project's repository carries, and
    a fresh launch clones); the paused workspace also holds `resume_bytes` of files written
    into it, as a session's results would.
    """
    path = _data_project(bench, "bench/data", sizes.project_bytes)
    fresh_user, paused_user = "bench-fresh", "bench-resume"
    fresh, paused = bench.glue(fresh_user), bench.glue(paused_user)
    admin = bench.hub_api()

    # the phases before the server's own start (hub checks, clone, session step): the part
    # of a start that a resume changes; the server's start is the same both ways
    before_server: dict[str, list[float]] = {"resume": [], "fresh": []}

    def running(client: KeepAlive, way: str | None = None) -> None:
        model = wait_until(lambda: _settled(client, path), 300, "the server settled", every=0.02)
        assert model["status"] == "running", model
        if way is not None:
            phases = model.get("phases") or {}
            before_server[way].append(
                sum(phases.get(p, 0.0) for p in ("hub_checks", "clone", "session"))
            )

    def pause() -> int:
        code, body = paused.request("PATCH", path, body={"state": "hibernated"})
        assert code == 200, (code, body[:500])
        return int(json.loads(body)["disk_bytes"])

    code, _ = paused.request("POST", path)
    assert code in (201, 202), code
    running(paused)
    ((name, _),) = [(n, s) for n, s in _hub_servers(admin, paused_user).items() if n]
    _write_new_files(bench.hub.workspaces / paused_user / name, sizes.resume_bytes, "paused")
    held = [pause()]
    times: dict[str, list[float]] = {"resume": [], "fresh": []}
    for i in range(sizes.resumes):
        for way in ("resume", "fresh") if i % 2 == 0 else ("fresh", "resume"):
            started = time.perf_counter()
            if way == "resume":
                code, body = paused.request("PATCH", path, body={"state": "running"})
                assert code in (201, 202), (code, body[:500])
                running(paused, way)
                times[way].append(time.perf_counter() - started)
                held.append(pause())
            else:
                code, body = fresh.request("POST", path)
                assert code in (201, 202), (code, body[:500])
                running(fresh, way)
                times[way].append(time.perf_counter() - started)
                code, _ = fresh.request("DELETE", path + "?force=true")
                assert code in (202, 204), code
                wait_until(lambda: fresh.get_json(path)[0] == 404, 120, "fresh server gone")
    code, _ = paused.request("DELETE", path + "?force=true")
    assert code in (202, 204), code
    for client in (fresh, paused, admin):
        client.close()
    r, f = median(times["resume"]), median(times["fresh"])
    disk = median([float(b) for b in held])
    r_pre, f_pre = median(before_server["resume"]), median(before_server["fresh"])

    def runs(values: list[float]) -> str:
        return ", ".join(f"{x:.2f}" for x in values)

    return Figure(
        11,
        f"A paused server resumed until it runs vs a fresh launch of the same commit (a "
        f"project with {sizes.project_bytes / 1e6:g} MB of data at it), median of "
        f"{sizes.resumes} each, alternating",
        f"{r:.2f} s (PATCH state running: the kept workspace reopened, no clone, no restore)",
        f"{f:.2f} s (POST of the same commit for a user without a server: clone, session step)",
        r / f,
        "at most 0.7",
        r / f <= 0.7,
        {"resume_s": r, "fresh_s": f, "paused_disk_bytes": disk,
         "resume_before_server_s": r_pre, "fresh_before_server_s": f_pre},
        notes=[f"a paused server holds {disk / 1e6:.1f} MB of disk "
               f"({sizes.resume_bytes / 1e6:g} MB of files written into its workspace)",
               f"before the server's own start (hub checks, clone, session step): resume "
               f"{r_pre:.2f} s, fresh {f_pre:.2f} s (ratio {r_pre / f_pre:.2f}); the server's "
               "start, the rest, is the same process both ways",
               f"resume runs {runs(times['resume'])} s; fresh runs {runs(times['fresh'])} s"],
    )


HUB_FIGURES: dict[int, Callable[[Bench, Sizes], Figure]] = {
    5: memory, 1: status, 2: launch, 3: crowd, 6: sandbox, 9: isolation, 10: breakdown, 7: stop,
    11: resume,
}
PLAIN_FIGURES: dict[int, Callable[[Sizes], Figure]] = {4: clone, 8: push}
