"""The Helm chart as the tests render it: helm (the pinned one), the chart without its
z2jh dependency, values files and `helm template`.

Shared by the chart tests and the hub extraConfig tests, which render the same chart.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


CHART = ROOT / "helm-chart" / "renku-notebooks"


INSTALL_HELM = ROOT / "tests" / "setup" / "install-helm.sh"


KUBE_VERSION = "1.28"


NAMESPACE = "notebooks"


def run(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300)
    if check and result.returncode:
        raise AssertionError(f"{' '.join(map(str, args))} failed:\n{result.stderr}")
    return result


@functools.cache
def find_helm() -> str:
    """helm on PATH, else the one tests/setup/install-helm.sh puts in .tools/bin."""
    found = shutil.which("helm")
    if found:
        return found
    result = run("bash", INSTALL_HELM, check=False)
    if result.returncode:
        pytest.fail(f"no helm on PATH and {INSTALL_HELM} failed:\n{result.stderr}")
    return result.stdout.strip().splitlines()[-1]


def without_dependency(source: Path, dest: Path) -> Path:
    """A copy of the chart that renders offline: Chart.yaml without `dependencies`."""
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("charts", "Chart.lock"))
    meta = yaml.safe_load((dest / "Chart.yaml").read_text())
    meta.pop("dependencies", None)
    (dest / "Chart.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    return dest


def values_file(tmp_path: Path, values: dict[str, Any], name: str = "values.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values))
    return path


def template(
    helm: str, chart: Path, release: str = "rel", *args: str | Path, namespace: str = NAMESPACE
) -> list[dict[str, Any]]:
    out = run(helm, "template", release, chart, "--namespace", namespace, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]
