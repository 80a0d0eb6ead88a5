"""`python -m benchmarks.autosave_bench [--mb 50] [--repeat 3]`: autosave, the git component.

Prints: autosave of a clean workspace (issue 11's target: well under 0.2 s), autosave of
`--mb` MB of changed files to a bare remote, and a push of that much through the component
versus a direct push with the token, both to the GitLab stand-in (target: at most 1.2x).
Real git, the real stand-in and the component as a process, all on loopback.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from glue import autosave, clone, gitproxy
from tests.gitlab_standin import GitLabStandIn, StandInThread
from tests.hubtools import free_port, git, listening_pid, make_repo, wait_until

USER, TOKEN = "bench", "bench-token-with-write-repository"


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _forget(bare: Path, branch: str) -> None:
    """The pushed branch and its objects gone, so the next push sends them all again."""
    git(bare, "update-ref", "-d", f"refs/heads/{branch}")
    git(bare, "reflog", "expire", "--expire=now", "--all")
    git(bare, "prune", "--expire=now")


def _timed_push(work: Path, url: str, branch: str, env: dict[str, str]) -> float:
    return _timed(lambda: _push(work, url, branch, env))


def _fill(work: Path, mb: int, tag: str) -> None:
    """`mb` MB of incompressible data in 5 MB files."""
    (work / "data").mkdir(exist_ok=True)
    for i in range(max(1, mb // 5)):
        (work / "data" / f"{tag}-{i}.bin").write_bytes(os.urandom(5 << 20))


def _push_env(token_file: Path) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(token_file.parent),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        clone.TOKEN_FILE_ENV: str(token_file),
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "credential.helper",
        "GIT_CONFIG_VALUE_0": clone.CREDENTIAL_HELPER,
    }


def _push(work: Path, url: str, branch: str, env: dict[str, str]) -> None:
    subprocess.run(
        ["git", "-C", str(work), "push", "-q", url, f"HEAD:refs/heads/{branch}"],
        env=env,
        check=True,
        capture_output=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-autosave-") as tmp_:
        tmp = Path(tmp_)
        shas = make_repo(tmp, "bench/demo")
        bare = tmp / "bench/demo.git"
        prefix = "notebooks/autosave"
        ws = tmp / "ws"
        clone.clone(str(bare), shas[-1], ws)
        branch = autosave.branch(prefix, USER, shas[-1])
        clean = [_timed(lambda: autosave.save(ws, shas[-1], str(bare), branch)) for _ in range(10)]
        print(f"autosave, clean workspace: median {statistics.median(clean) * 1000:.0f} ms")
        dirty = []
        for i in range(args.repeat):
            _fill(ws, args.mb, f"r{i}")
            dirty.append(
                _timed(
                    lambda: autosave.save(ws, shas[-1], str(bare), branch, max_file_bytes=100 << 20)
                )
            )
        print(f"autosave, {args.mb} MB changed: median {statistics.median(dirty):.2f} s")

        standin = GitLabStandIn()
        standin.add_user(USER, TOKEN)
        standin.add_project("bench/demo", repo=bare, members={USER: 30})
        with StandInThread(standin):
            files = tmp / "component"
            files.mkdir()
            (files / "token").write_text(TOKEN)
            (files / "secret").write_text("bench-secret")
            port = free_port()
            settings = gitproxy.Settings(
                project="bench/demo",
                secret_file=files / "secret",
                upstream=standin.url,
                token_file=files / "token",
            )
            argv_ = gitproxy.step(settings, listen=f"127.0.0.1:{port}", python=sys.executable)
            proc = subprocess.Popen(
                argv_.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                wait_until(lambda: listening_pid(port), 20, "the component listens")
                direct_env, proxy_env = _push_env(files / "token"), _push_env(files / "secret")
                direct, through = [], []
                work = tmp / "work"
                git(tmp, "clone", "-q", str(bare), str(work))
                for i in range(args.repeat):
                    _fill(work, args.mb, f"p{i}")
                    git(work, "add", "-A")
                    git(work, "commit", "-q", "-m", f"push {i}")
                    # the same commit both ways, each to a new branch: the same objects travel
                    gitlab = f"{standin.url}/bench/demo.git"
                    component = f"http://127.0.0.1:{port}/bench/demo.git"
                    direct.append(_timed_push(work, gitlab, f"direct-{i}", direct_env))
                    _forget(bare, f"direct-{i}")
                    through.append(_timed_push(work, component, f"proxied-{i}", proxy_env))
                    _forget(bare, f"proxied-{i}")
            finally:
                proc.terminate()
                proc.wait(10)
        d, t = statistics.median(direct), statistics.median(through)
        print(f"push of {args.mb} MB, direct with the token: median {d:.2f} s")
        print(f"push of {args.mb} MB, through the component:  median {t:.2f} s ({t / d:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
