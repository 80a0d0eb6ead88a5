"""How servers start their kernels: nothing of the repository runs, nobody else connects.

Two decisions, for the single-user servers of the embedded default (glue.hub.localspawner) and,
the first, of Kubernetes pods too (glue.hub.podspec):

- A kernel starts with `python -P -m glue.session.kernel` (the `python3` kernel spec beside
  this module, found first through `JUPYTER_PATH`). ipykernel's own
  `python -m ipykernel_launcher` would find `ipykernel_launcher` (on Python < 3.11
  also `runpy`) in the notebook's directory; IPython then puts that directory on
  `sys.path` while the kernel still imports what it needs. Here the directory goes on
  `sys.path` only once the kernel is up, where IPython puts it (`''`, after the
  standard library, before site-packages): a cell's `import mymodule` finds the user's
  module, and nothing of the workspace shadows the standard library or what the kernel
  imported while it started (jedi, which a first Tab would import, included).
  A notebook image has no glue: its pod gets the same kernel as `python -c <launch's
  source>` (`image_kernel_spec`, glue.hub.kubespawner).
- Kernels listen on unix sockets (`ipc` transport) in the server's runtime directory,
  inside its private home, not on TCP: the sandboxes share the machine's network, and
  anyone on its loopback could subscribe to a kernel's output (IOPub: signed, not
  encrypted) or reach its other channels. Another sandbox sees neither the home nor
  the sockets (its own mounts; without bubblewrap, the home is 0700 and another uid's).
  A pod has a network namespace of its own: TCP on its loopback is already private.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

# the data directory with `kernels/python3/kernel.json`: named by JUPYTER_PATH, searched first
SPEC_DIR = Path(__file__).resolve().parent / "jupyter"
# a unix socket's path (sun_path) holds at most 107 bytes; jupyter_client names a kernel's
# sockets `<runtime>/kernel-<uuid4>-ipc-<1..5>`
SOCKET_PATH_MAX = 107
SOCKET_NAME = len("/kernel-") + 36 + len("-ipc-5")
SERVER_ARGS = ("--KernelManager.transport=ipc",)


class SocketPathTooLong(RuntimeError):
    """The server's runtime directory leaves no room for a kernel's socket names."""


def runtime_dir(home: Path) -> Path:
    """Where the server keeps its runtime files and its kernels' connection files and sockets."""
    path = home / ".jupyter-run"
    if len(os.fsencode(path)) + SOCKET_NAME > SOCKET_PATH_MAX:
        raise SocketPathTooLong(
            f"The kernels' sockets in {path} would be longer than {SOCKET_PATH_MAX} bytes."
        )
    return path


def server_environment(home: Path) -> dict[str, str]:
    """What a single-user server's environment adds: the kernel spec, the runtime directory."""
    return {"JUPYTER_PATH": str(SPEC_DIR), "JUPYTER_RUNTIME_DIR": str(runtime_dir(home))}


def launch() -> None:
    """Start an IPython kernel whose working directory joins sys.path only once it is up.

    Self-contained (its imports inside): `kernel_argv` runs its source with `python -c` where
    the glue is not installed (a notebook image). `-c` puts `''` first on sys.path, which goes
    before anything is imported; `-P` (`glue.session.kernel`'s own spec) puts nothing there.
    """
    import contextlib
    import importlib
    import os
    import sys

    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]
    from ipykernel.kernelapp import IPKernelApp

    app = IPKernelApp.instance()
    app.ignore_cwd = True  # IPython's init_path (before 9.7 it ignores -P) adds it below
    app.initialize()
    # IPython's completer imports jedi at the first completion (a Tab, not an import)
    with contextlib.suppress(ImportError):
        importlib.import_module("jedi")
    # `''` (the working directory, followed as it changes) where IPython's init_path puts it:
    # before the first site-packages, after the standard library
    if "" not in sys.path:
        places = [os.path.basename(p) in ("site-packages", "dist-packages") for p in sys.path]
        sys.path.insert(places.index(True) if True in places else len(sys.path), "")
    app.start()


def kernel_argv() -> list[str]:
    """The python3 kernel spec's argv where the glue is not installed: `launch` by its source
    (jupyter_client runs `python` as the server's own interpreter)."""
    source = inspect.getsource(launch)
    return ["python", "-c", f"{source}\nlaunch()\n", "-f", "{connection_file}"]


def image_kernel_spec() -> str:
    """The `kernel.json` of the python3 kernel for a notebook image (glue.hub.kubespawner stores
    it in the pod's Secret, glue.hub.podspec mounts it and names it first in JUPYTER_PATH):
    `kernel_argv`, and nothing an older ipykernel of the image might not support (CurveZMQ
    encryption, a newer protocol version)."""
    spec = json.loads((SPEC_DIR / "kernels" / "python3" / "kernel.json").read_text())
    metadata = {k: v for k, v in spec["metadata"].items() if k == "debugger"}
    kept = {k: spec[k] for k in ("display_name", "language")}
    return json.dumps({"argv": kernel_argv(), **kept, "metadata": metadata}, indent=1) + "\n"

if __name__ == "__main__":
    launch()
