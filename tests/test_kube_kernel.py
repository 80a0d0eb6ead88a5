"""A Kubernetes pod's notebook starts its kernels as the embedded default's do
(glue.session.kernel).

The pod is built offline (testing.kubepods, as in tests/test_kube_manifest.py); the notebook
container's kernel spec is then resolved as jupyter_client would in the container: from the
container's JUPYTER_PATH and the files its volumes put there (the pod's Secret), else
the image's own spec (here the installed one). That spec's kernel is started for real
in a hostile checkout (testing.kernels' files, as in tests/test_startup.py), and must leave no
trace at its start, its first cell or a completion, while `import mymodule` works.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

from glue.hub import podspec
from testing.kernels import hostile_start_files, traces
from testing.kubepods import (
    FakeCoreApi,
    by_name,
    kube_repos,
    make_spawner,
    no_kube_config,
    options,
    serialize,
    shaped_pod,
    valid,
)


# test_kube_manifest's fixtures: its repositories, and no kube config needed
@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    return kube_repos(tmp_path_factory)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    no_kube_config(monkeypatch)


async def pod_and_secret(repos: SimpleNamespace) -> tuple[dict[str, Any], dict[str, str]]:
    """The pod a launch creates, and the data of the Secret created once the pod exists."""
    spawner = make_spawner(repos, options(repos))
    spawner.api = api = FakeCoreApi()
    pod = valid(await shaped_pod(spawner))
    await spawner.after_pod_created_hook(spawner, {"metadata": {"uid": "pod-uid-1"}})
    secret = valid(await serialize(api.secrets[spawner.token_secret_name]))
    return pod, secret["stringData"]


def container_kernel_dirs(pod: dict[str, Any], data: dict[str, str], root: Path) -> list[str]:
    """The notebook container's JUPYTER_PATH, its directories made under `root` from the
    Secret volumes mounted there (only the keys each projects)."""
    notebook = pod["spec"]["containers"][0]
    env = {var["name"]: var.get("value") for var in notebook.get("env") or []}
    volumes = by_name(pod["spec"]["volumes"])
    mounts = {m["mountPath"]: m for m in notebook.get("volumeMounts") or []}
    dirs = []
    for entry in (env.get("JUPYTER_PATH") or "").split(":"):
        mount = mounts.get(entry)
        if not entry or mount is None:
            continue
        secret = volumes[mount["name"]]["secret"]
        local = root / entry.lstrip("/")
        for item in secret["items"]:
            (local / item["path"]).parent.mkdir(parents=True, exist_ok=True)
            (local / item["path"]).write_text(data[item["key"]])
        dirs.append(str(local))
    return dirs


async def test_the_notebook_finds_the_protected_kernel_first(repos: SimpleNamespace) -> None:
    pod, data = await pod_and_secret(repos)
    notebook = pod["spec"]["containers"][0]
    mount = by_name(notebook["volumeMounts"])[podspec.KERNEL_VOLUME]
    assert mount == {
        "name": podspec.KERNEL_VOLUME,
        "mountPath": podspec.KERNEL_DIR,
        "readOnly": True,
    }
    # the notebook's one key of the pod's Secret: the kernel spec, never a token
    volume = by_name(pod["spec"]["volumes"])[podspec.KERNEL_VOLUME]["secret"]
    assert volume["items"] == [
        {"key": "kernel.json", "path": "kernels/python3/kernel.json", "mode": 0o444}
    ]
    env = by_name(notebook["env"])
    assert env["JUPYTER_PATH"]["value"].split(":")[0] == podspec.KERNEL_DIR
    spec = json.loads(data["kernel.json"])
    assert spec["argv"][:2] == ["python", "-c"] and spec["language"] == "python"
    assert "launch()" in spec["argv"][2] and spec["argv"][3:] == ["-f", "{connection_file}"]
    # nothing an image's older ipykernel may lack (CurveZMQ encryption, a newer protocol)
    assert spec["metadata"] == {"debugger": True} and "kernel_protocol_version" not in spec


async def test_the_pods_kernel_runs_nothing_of_the_checkout(
    repos: SimpleNamespace, tmp_path: Path
) -> None:
    pod, data = await pod_and_secret(repos)
    dirs = container_kernel_dirs(pod, data, tmp_path / "container")
    workspace = tmp_path / "work"
    workspace.mkdir()
    for path, content in hostile_start_files().items():
        (workspace / path).parent.mkdir(parents=True, exist_ok=True)
        (workspace / path).write_text(content)
    # the image's python3 spec when the pod names none (here: the one installed beside us)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "JUPYTER_PATH": ":".join(dirs),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "run"),
    }
    if dirs:
        specs = KernelSpecManager(kernel_dirs=[f"{d}/kernels" for d in dirs])
    else:
        specs = KernelSpecManager()
    manager = KernelManager(kernel_name="python3", kernel_spec_manager=specs)
    manager.start_kernel(cwd=str(workspace), env=env)
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        seen = {"kernel start": traces(workspace)}
        client.execute_interactive("1 + 1", timeout=60)
        client.complete("impo", 4, reply=True, timeout=60)
        seen["a first cell and a completion"] = traces(workspace)
        out: list[str] = []

        def keep(message: dict[str, Any]) -> None:
            if message["msg_type"] == "stream":
                out.append(message["content"]["text"])

        client.execute_interactive(
            "import mymodule; print(mymodule.VALUE)", timeout=60, output_hook=keep
        )
        assert seen == {"kernel start": [], "a first cell and a completion": []}
        assert "".join(out) == "42\n"
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
