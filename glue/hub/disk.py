"""A workspace's own filesystem of the profile's size, in the embedded default.

A directory on the hub's filesystem has no size of its own: one session
could fill the disk that also holds the hub's database and everyone's
workspaces. So each workspace is an ext4 filesystem of its own, in a sparse
image file beside it (`<workspaceRoot>/<user>/.<server>.ext4`, root's, 0600),
loop-mounted on the workspace while the server runs. A write past its size
fails inside the session with "No space left on device"; the machine's disk
holds at most what the sessions really wrote.

The image outlives a stop (the stop's autosave runs before the unmount, the
next start mounts it again and the restore runs on it) and a hub restart (a
running server's mount stays as it was; a stopped one's image is found by its
path); it goes with the server. A workspace whose autosave failed stays
mounted after its stop, so that its work is at its path for people to rescue.
Mounting needs root and loop devices: `unavailable` says why not, and the
launch then runs without a size (the `make dev` banner says so); a mount that
fails where it should work fails the launch instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

LOOP_CONTROL = Path("/dev/loop-control")
TOOLS = ("mkfs.ext4", "mount", "umount", "losetup")
# no reserved blocks (the session gets the whole size); inode tables and journal are
# initialised lazily, so a 10G image costs a few MB of the host's disk until written
MKFS = ["mkfs.ext4", "-q", "-F", "-m", "0"]
LAZY_INIT = "lazy_itable_init=1,lazy_journal_init=1"
# discard: what the session deletes is given back to the host's disk (holes in the image);
# noinit_itable: no background zeroing of inode tables; nosuid, nodev: nothing of the
# session's own becomes more than it is
MOUNT_OPTIONS = "loop,discard,noinit_itable,nosuid,nodev"
COMMAND_SECONDS = 60
# how long a launch waits for the last session's processes, which hold a lazily unmounted
# filesystem, to end (the sandbox kills them as the server stops)
RELEASE_SECONDS = 10


class DiskError(RuntimeError):
    """The workspace's filesystem could not be made or mounted; the message is for people."""


class Usage(NamedTuple):
    used: int
    size: int

    @property
    def fraction(self) -> float:
        return self.used / self.size if self.size else 0.0


def unavailable() -> str | None:
    """Why workspaces cannot get a filesystem of their own here, or None when they can."""
    if os.geteuid() != 0:
        return "the hub does not run as root, so it cannot mount workspace filesystems"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (e2fsprogs, mount)"
    if not LOOP_CONTROL.exists():
        return "this machine offers no loop devices (/dev/loop-control)"
    return None


def image_of(workspace: Path) -> Path:
    """The workspace's image file, beside it (server names hold no dots: no clash)."""
    return workspace.parent / f".{workspace.name}.ext4"


def mounted(workspace: Path) -> bool:
    return os.path.ismount(workspace)


def _run(*argv: str, ok: tuple[int, ...] = (0,)) -> None:
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=COMMAND_SECONDS, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DiskError(f"{argv[0]} failed: {e}") from None
    if result.returncode not in ok:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise DiskError(f"{argv[0]} failed: {lines[-1] if lines else result.returncode}")


def attach(workspace: Path, size: int, uid: int) -> None:
    """Mount the workspace's filesystem of `size` bytes on it, making it at the first launch
    (a workspace made before sizes had its own files: they are moved in). An unmounted image
    smaller than `size` (a stopped server launched with a larger profile) is grown; never
    shrunk: a smaller profile keeps the size it has."""
    workspace.mkdir(parents=True, exist_ok=True)
    image = image_of(workspace)
    if not image.exists():
        _create(image, size, uid)
        if any(workspace.iterdir()):
            _move_into(image, workspace)
    elif not mounted(workspace):
        _wait_released(image)
        if image.stat().st_size < size:
            _grow(image, size)  # (a kept workspace, still mounted, keeps its size)
    if not mounted(workspace):
        _run("mount", "-o", MOUNT_OPTIONS, str(image), str(workspace))


def _attached(image: Path) -> bool:
    """Whether a loop device still holds the image: after a lazy unmount (`detach`) its
    filesystem stays live in the kernel until the last process in it ends."""
    try:
        result = subprocess.run(
            ["losetup", "--associated", str(image)],
            capture_output=True, text=True, timeout=COMMAND_SECONDS, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DiskError(f"losetup failed: {e}") from None
    if result.returncode != 0:
        raise DiskError(f"losetup failed: {result.stderr.strip() or result.returncode}")
    return bool(result.stdout.strip())


def _wait_released(image: Path) -> None:
    """Wait until no loop device holds the image, or fail closed: checking, growing or
    mounting a filesystem that is still live (a second loop device on one ext4 image)
    corrupts it, and with it the user's work."""
    deadline = time.monotonic() + RELEASE_SECONDS
    while _attached(image):
        if time.monotonic() > deadline:
            raise DiskError(
                "The workspace's filesystem is still in use by processes of its last "
                "session; try again when they have ended."
            )
        time.sleep(0.2)


def _create(image: Path, size: int, uid: int) -> None:
    partial = image.with_name(image.name + ".new")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
    try:
        _run(*MKFS, "-E", f"{LAZY_INIT},root_owner={uid}:{uid}", str(partial))  # one -E
        with _mounted_at_temp(partial) as root:
            (root / "lost+found").rmdir()  # an empty workspace, as the clone wants it
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.rename(image)


def _grow(image: Path, size: int) -> None:
    """Grow an unmounted image (a stopped server launched again with a larger profile)."""
    os.truncate(image, size)
    _run("e2fsck", "-f", "-p", str(image), ok=(0, 1))  # 1: it corrected something
    _run("resize2fs", "-f", str(image))


@contextlib.contextmanager
def _mounted_at_temp(image: Path):  # type: ignore[no-untyped-def]
    with tempfile.TemporaryDirectory(prefix="renku-disk-") as tmp:
        _run("mount", "-o", MOUNT_OPTIONS, str(image), tmp)
        try:
            yield Path(tmp)
        finally:
            _run("umount", tmp)


def _move_into(image: Path, workspace: Path) -> None:
    """A workspace that predates its image keeps its files (say, one whose autosave failed)."""
    with _mounted_at_temp(image) as root:
        _run("cp", "-a", f"{workspace}/.", str(root))
    for entry in workspace.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def detach(workspace: Path) -> None:
    """Unmount the workspace (its files stay in the image). Processes of the sandbox that are
    still going hold it: the unmount is then lazy, the loop device freed when they end."""
    if not (mounted(workspace) and image_of(workspace).exists()):
        return  # not ours
    try:
        _run("umount", str(workspace))
    except DiskError:
        _run("umount", "--lazy", str(workspace))


def remove(workspace: Path) -> None:
    """The server is removed: its filesystem goes (the caller removes the directory)."""
    detach(workspace)
    image_of(workspace).unlink(missing_ok=True)


def usage(workspace: Path) -> Usage | None:
    """How full the workspace's own filesystem is; None when it has none mounted."""
    if not mounted(workspace):
        return None
    try:
        stat = os.statvfs(workspace)
    except OSError:
        return None
    size = stat.f_blocks * stat.f_frsize
    return Usage(used=size - stat.f_bavail * stat.f_frsize, size=size)


def held(workspace: Path) -> int:
    """Bytes the workspace takes of the host's disk: its image's allocated blocks (sparse:
    only what was written) and what lies in its directory itself (a workspace without a
    filesystem of its own, or one still mounted). What a paused server holds."""
    total = 0
    with contextlib.suppress(OSError):
        total += image_of(workspace).stat().st_blocks * 512
    if mounted(workspace) and image_of(workspace).exists():
        return total  # the directory is the image's mount: counted once
    for root, dirs, files in os.walk(workspace):
        for name in dirs + files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total
