"""The sandbox of the embedded default: one hub user's process inside bubblewrap.

Everything a local server or clone step runs goes through `Sandbox.command`,
which turns "run this for this user, in this workspace" into a `bwrap` command
line; nothing else in the package knows bubblewrap's flags. Inside, the
process has its own PID, IPC, UTS and mount namespaces and sees a read-only
system (`/usr`, `/etc`) and Python environment, its own workspace (the only
host directory it can write), a private home and `/tmp` (both in memory), and
its own `/proc`. The hub's state, other workspaces and other processes do not
exist there. The network stays shared: the proxy must reach the server and
the server the hub's API (so a server's kernels talk over unix sockets in its
private home, never TCP: glue.session.kernel).

Every step it runs (`environment()`) gets `PYTHONSAFEPATH=1`: `python -m
glue.session.gitsession` in a workspace would otherwise import a repository's `glue/` or
`uuid.py` before the real ones. A server starts with `python -P` instead (see
glue.hub.setup), so that its users' own `python script.py` in a terminal or a
cell keeps its directory on sys.path.

When the hub runs as root (as `make dev` on these machines), bubblewrap sets
up the mounts as root and the command then drops to a user id of its own,
stable per hub user and never 0, with no capabilities and no way to gain
any. Run as an ordinary user, bubblewrap uses a user namespace and every
server keeps that user's id: users are then apart by mounts only.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from glue.hub import disk as workspace_disk

BWRAP = "bwrap"
# far above the ids of people and system accounts (and of subordinate ranges)
UID_BASE = 3_000_000
HOME = "/home/jovyan"
# what a sandboxed command keeps of the caller's environment, besides what it is given
KEEP_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")
# what every step's Python gets: no directory of its command line (the workspace, for
# `python -m`) on sys.path (Python 3.11+)
SAFE_PATH = {"PYTHONSAFEPATH": "1"}
PACKAGE = Path(__file__).resolve().parents[1]  # glue/
# the system: these directories (or their merged-/usr symlinks) are all a process needs
SYSTEM = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
# as root, the command owns its private home, then drops to its user with no capabilities
DROP_TO_USER = (
    'chown "$0:$0" "$HOME" && exec setpriv --reuid="$0" --regid="$0" --clear-groups '
    '--inh-caps=-all --bounding-set=-all --no-new-privs -- "$@"'
)


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot create namespaces here; nothing may run unsandboxed."""


def available(isolated: bool = True) -> str | None:
    """Why sandboxes cannot be made on this machine, or None when they can; without
    `isolated` (`spawner.sandbox: false`), only dropping to the per-user id must work."""
    if isolated and shutil.which(BWRAP) is None:
        return "bubblewrap (`bwrap`) is not installed: apt-get install bubblewrap"
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        return "setpriv (util-linux) is not installed"
    return None


CGROUPS = Path("/sys/fs/cgroup")
CGROUP_GROUP = "renku-notebooks"
CPU_PERIOD_US = 100_000


def _own_cgroup(controller: str) -> Path | None:
    """This process's cgroup in the v1 hierarchy of `controller`, if one is mounted."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            for mount in (CGROUPS / controllers, CGROUPS / controller):
                if (mount / "cgroup.procs").is_file():
                    return mount / path.lstrip("/")
    return None


def limits_unavailable() -> str | None:
    """Why profile memory and CPU limits cannot be enforced here, or None when they can."""
    if os.geteuid() != 0:
        return "the hub does not run as root, so it cannot create cgroups"
    groups = [_own_cgroup("memory"), _own_cgroup("cpu")]
    if None in groups:
        if (CGROUPS / "cgroup.controllers").is_file():
            return "this machine has only cgroup v2, which the embedded default does not use yet"
        return "this machine offers no cgroup v1 memory and cpu controllers"
    if not all(os.access(group, os.W_OK) for group in groups if group):
        return "the cgroup hierarchy is read-only here"
    return None


def pids_unavailable() -> str | None:
    """Why a server's process limit cannot be a cgroup v1 `pids` controller here (it is then
    RLIMIT_NPROC, see `Sandbox.limit`), or None when it can."""
    if os.geteuid() != 0:
        return "the hub does not run as root, so it cannot create cgroups"
    group = _own_cgroup("pids")
    if group is None:
        return "this machine offers no cgroup v1 pids controller"
    if not os.access(group, os.W_OK):
        return "the cgroup hierarchy is read-only here"
    return None


def process_limit_enforcement() -> str:
    """How a server's process limit (`spawner.processLimit`) is enforced here, for the banner."""
    if pids_unavailable() is None:
        return "by a pids cgroup per server"
    shared = "all servers of a hub user" if os.geteuid() == 0 else "everything of the hub's user"
    return f"by RLIMIT_NPROC, shared by {shared} ({pids_unavailable()})"


def _has_processes(group: Path) -> bool:
    try:
        return bool((group / "cgroup.procs").read_text().strip())
    except OSError:
        return False


def uid_for(hub_user_id: int) -> int:
    """The user id a hub user's processes run as: stable while the hub database lasts."""
    return UID_BASE + hub_user_id if os.geteuid() == 0 else os.getuid()


def _python_dirs() -> list[Path]:
    """The interpreter and environment the hub runs, as paths a command may name."""
    dirs = {Path(p) for p in (sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix)}
    return sorted(d for d in dirs if not d.resolve().is_relative_to("/usr"))


def _system_args() -> list[str]:
    args = []
    for entry in SYSTEM:
        path = Path(entry)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), entry]
        elif path.is_dir():
            args += ["--ro-bind", entry, entry]
    return args


def _parents(paths: Iterable[Path]) -> list[str]:
    """The directories above `paths` that the sandbox's root must have, outermost first."""
    system = [Path(entry) for entry in SYSTEM]
    parents = {
        parent
        for path in paths
        for parent in path.parents
        if parent != Path("/") and not any(parent.is_relative_to(s) for s in system)
    }
    return [str(p) for p in sorted(parents, key=lambda p: len(p.parts))]


@dataclass(frozen=True)
class Sandbox:
    """Where one server (or its clone step) runs: `uid`, allowed to write `workspace` only."""

    uid: int
    workspace: Path
    readable: tuple[Path, ...] = field(default=())
    # the profile's limits
    memory: int | None = None
    cpus: float | None = None
    # `spawner.processLimit`: the most processes and threads the server may have at once
    processes: int | None = None
    # the profile's disk: the workspace is a filesystem of this many bytes (glue.hub.disk)
    disk: int | None = None
    # False (`spawner.sandbox: false`, for benchmarks and single-user machines): no bubblewrap
    isolated: bool = True

    @property
    def cgroup_name(self) -> str:
        """One per workspace, so two hubs on one machine (same user ids, same server
        names) never share a cgroup."""
        digest = hashlib.sha256(str(self.workspace).encode()).hexdigest()[:12]
        return f"{self.uid}-{self.workspace.name}-{digest}"

    def _cgroups(self) -> dict[str, Path]:
        controllers = []
        if (self.memory or self.cpus) and not limits_unavailable():
            controllers += ["memory", "cpu"]
        if self.processes and not pids_unavailable():
            controllers.append("pids")
        return {
            controller: own / CGROUP_GROUP / self.cgroup_name
            for controller in controllers
            if (own := _own_cgroup(controller))
        }

    def limit(self) -> Callable[[], None] | None:
        """Create the server's cgroups with its profile's limits; returns what the new
        process runs (before bubblewrap) to enter them, or None where limits are unavailable.
        When the memory runs out, the kernel's OOM killer ends a process inside (usually
        the notebook's kernel, which JupyterLab then reports as died); nothing outside.
        Past its process limit, a fork inside fails (EAGAIN); without a pids controller the
        limit is RLIMIT_NPROC, which the kernel counts per user id (and ignores for root,
        so it binds once the command has dropped to the sandbox's user)."""
        groups = self._cgroups()
        nproc = self.processes if self.processes and "pids" not in groups else None
        if not groups and nproc is None:
            return None
        for group in groups.values():
            group.mkdir(parents=True, exist_ok=True)
        if self.memory:
            (groups["memory"] / "memory.limit_in_bytes").write_text(str(self.memory))
            swap = groups["memory"] / "memory.memsw.limit_in_bytes"
            if swap.exists():
                swap.write_text(str(self.memory))  # no swapping past the limit either
        if self.cpus:
            (groups["cpu"] / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
            quota = max(1000, int(self.cpus * CPU_PERIOD_US))
            (groups["cpu"] / "cpu.cfs_quota_us").write_text(str(quota))
        if "pids" in groups:
            (groups["pids"] / "pids.max").write_text(str(self.processes))
        procs = [str(group / "cgroup.procs") for group in groups.values()]

        def enter() -> None:  # runs in the child between fork and exec: no allocation-heavy work
            for path in procs:
                with open(path, "w") as f:
                    f.write("0")
            if nproc is not None:
                resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))

        return enter

    def oom_kills(self) -> int | None:
        """How many processes the kernel's OOM killer has ended in the server's memory cgroup;
        None without one (no limits here) or where the kernel does not count (before 4.13)."""
        own = _own_cgroup("memory")
        if own is None:
            return None
        try:
            text = (own / CGROUP_GROUP / self.cgroup_name / "memory.oom_control").read_text()
        except OSError:
            return None
        counters = dict(line.split(maxsplit=1) for line in text.splitlines() if " " in line)
        kills = counters.get("oom_kill", "")
        return int(kills) if kills.strip().isdigit() else None

    def release(self, wait: float = 5, *, unmount: bool = True) -> None:
        """Remove the server's cgroups once nothing runs in them (the last processes of a
        stopped sandbox may take a moment to go), and the home of an unisolated one; unmount
        its workspace's filesystem (its files stay in the image for the next start) unless
        told to keep it there (a workspace whose autosave failed, for people to rescue)."""
        if not self.isolated:
            shutil.rmtree(self._plain_home, ignore_errors=True)
        for group in self._cgroups().values():
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _has_processes(group):
                time.sleep(0.1)
            with contextlib.suppress(OSError):
                group.rmdir()
        if unmount:
            with contextlib.suppress(workspace_disk.DiskError):
                workspace_disk.detach(self.workspace)  # lazy if something still holds it

    def prepare(self) -> None:
        """Create the workspace, owned by the sandbox's user and closed to everyone else: a
        filesystem of `disk` bytes of its own where this machine can mount one (DiskError
        when that fails here), a plain directory where it cannot (`disk.unavailable`)."""
        self.workspace.mkdir(parents=True, exist_ok=True)
        if self.disk and workspace_disk.unavailable() is None:
            workspace_disk.attach(self.workspace, self.disk, self.uid)
        self.give(self.workspace)
        self.workspace.chmod(0o700)

    def remove_workspace(self) -> None:
        """The server is removed: its workspace and its filesystem go (unmounted lazily if
        something still holds it)."""
        with contextlib.suppress(workspace_disk.DiskError):
            workspace_disk.remove(self.workspace)
        if not workspace_disk.mounted(self.workspace):  # never into a still-mounted one
            shutil.rmtree(self.workspace, ignore_errors=True)

    def disk_usage(self) -> workspace_disk.Usage | None:
        return workspace_disk.usage(self.workspace)

    def give(self, path: Path) -> None:
        """Hand `path` (and what is in it) to the sandbox's user, e.g. a workspace made
        before sandboxes or a file only the sandbox may read."""
        if os.geteuid() != 0 or path.stat().st_uid == self.uid:
            return
        os.chown(path, self.uid, self.uid, follow_symlinks=False)
        if path.is_dir() and not path.is_symlink():
            for root, dirs, files in os.walk(path):
                for name in dirs + files:
                    os.chown(Path(root) / name, self.uid, self.uid, follow_symlinks=False)

    @property
    def home(self) -> Path:
        """The private home of its processes: in memory inside bubblewrap, else a 0700
        directory of its own (`_plain_home`)."""
        return Path(HOME) if self.isolated else self._plain_home

    def environment(self, base: Mapping[str, str], **extra: str) -> dict[str, str]:
        """A step's minimal environment: the locale and PATH of `base`, no directory of the
        workspace on sys.path (SAFE_PATH), plus `extra`."""
        return {**{k: base[k] for k in KEEP_ENV if k in base}, **SAFE_PATH, **extra}

    def command(
        self, argv: Sequence[str], *, readable: Iterable[Path] = (), outlive_hub: bool = False
    ) -> list[str]:
        """The command line that runs `argv` in the sandbox, in the workspace; `readable`
        paths are added read-only (a repository to clone, a token file). A server may
        `outlive_hub` (a restarted hub finds it again by its pid); a clone step dies with
        the hub."""
        problem = available(self.isolated)
        if problem:
            raise SandboxUnavailable(problem)
        root = os.geteuid() == 0
        if not self.isolated:
            return self._unisolated(argv)
        args = [BWRAP] if root else [BWRAP, "--unshare-user"]
        args += _system_args()
        args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp"]
        shown = [*_python_dirs(), PACKAGE, *self.readable, *readable]
        for parent in _parents([*shown, self.workspace, Path(HOME)]):
            args += ["--perms", "0755", "--dir", parent]  # bwrap would make them 0700
        args += ["--perms", "0700", "--tmpfs", HOME]
        for path in shown:
            args += ["--ro-bind", str(path), str(path)]
        args += ["--bind", str(self.workspace), str(self.workspace)]
        args += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        args += ["--hostname", "notebook", "--new-session"]
        if not outlive_hub:
            args += ["--die-with-parent"]
        args += ["--chdir", str(self.workspace), "--setenv", "HOME", HOME]
        args += ["--setenv", "PYTHONPATH", str(PACKAGE.parent), "--"]
        if root:
            args += ["/bin/sh", "-c", DROP_TO_USER, str(self.uid)]
        return [*args, *argv]

    @property
    def _plain_home(self) -> Path:
        """Short (a kernel's unix sockets live below it, within 107 bytes), one per workspace."""
        digest = hashlib.sha256(self.cgroup_name.encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"renku-home-{digest}"

    def _unisolated(self, argv: Sequence[str]) -> list[str]:
        """`argv` as the sandbox's user, in the workspace, with a home of its own, but
        without bubblewrap: it sees the whole machine (namespaces and mounts are the one
        difference, which is what the sandbox benchmark measures)."""
        self._plain_home.mkdir(mode=0o700, exist_ok=True)
        args = ["env", "-C", str(self.workspace), f"HOME={self._plain_home}"]
        args += [f"PYTHONPATH={PACKAGE.parent}"]
        if os.geteuid() == 0:
            args += ["/bin/sh", "-c", DROP_TO_USER, str(self.uid)]
        return [*args, *argv]


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def send_signal(pid: int, sig: int) -> bool:
    """Signal the sandbox started as `pid`; True while it runs.

    bubblewrap itself dies of SIGINT and SIGTERM, so those go to the command it
    runs, which may then stop in order; the sandbox ends when the command does.
    SIGKILL ends the sandbox's init (and with it all inside) and bubblewrap.
    """
    inits = _children(pid)  # bwrap -> its init (pid 1 inside) -> the command
    if sig == signal.SIGKILL:
        for init in inits:  # the end of a PID namespace's init ends everything in it
            with contextlib.suppress(ProcessLookupError):
                os.kill(init, sig)
    target = pid
    if sig in (signal.SIGINT, signal.SIGTERM):
        commands = [c for init in inits for c in _children(init)]
        target = commands[0] if commands else pid
    try:
        os.kill(target, sig)
    except ProcessLookupError:
        return target != pid and _alive(pid)
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
