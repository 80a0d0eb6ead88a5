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


# chartpress's placeholder (chartpress.yaml resetTag), and the tag the tests' copies get instead
PLACEHOLDER_TAG = "set-by-chartpress"
BUILT_TAG = "0.1.0-test"


def as_built(chart: Path) -> Path:
    """The chart as `chartpress` leaves it after a build: its image tags written (the
    chart refuses to render the placeholders)."""
    values = chart / "values.yaml"
    values.write_text(values.read_text().replace(PLACEHOLDER_TAG, BUILT_TAG))
    return chart


def without_dependency(source: Path, dest: Path, *, built: bool = True) -> Path:
    """A copy of the chart that renders offline: Chart.yaml without `dependencies`; with
    `built`, its image tags written as by a build (as_built)."""
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("charts", "Chart.lock"))
    meta = yaml.safe_load((dest / "Chart.yaml").read_text())
    meta.pop("dependencies", None)
    (dest / "Chart.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    return as_built(dest) if built else dest


def values_file(tmp_path: Path, values: dict[str, Any], name: str = "values.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values))
    return path


class StrictLoader(yaml.SafeLoader):
    """YAML as strict parsers (kustomize, Argo CD's) read it: a mapping that repeats a key is
    an error, where PyYAML and helm silently keep the last value."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, StrictLoader.construct_mapping
)


def load_strict(text: str) -> list[dict[str, Any]]:
    """Every document of a render, parsed strictly (StrictLoader)."""
    return [doc for doc in yaml.load_all(text, Loader=StrictLoader) if doc]


def template(
    helm: str, chart: Path, release: str = "rel", *args: str | Path, namespace: str = NAMESPACE
) -> list[dict[str, Any]]:
    """`helm template`, every rendered document parsed strictly (a repeated key fails)."""
    out = run(helm, "template", release, chart, "--namespace", namespace, *args).stdout
    return load_strict(out)
