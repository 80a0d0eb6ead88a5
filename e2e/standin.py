"""The GitLab stand-in as the kind e2e runs it: projects group/demo and group/private-demo, two
commits each, then serve.

Runs in the stand-in pod (`python -m e2e.standin`, image built by e2e/run.sh
from the glue image plus testing/ and e2e/). The e2e test launches the older
commit, so the repositories need history, which a fixture `source:` directory
cannot give. group/private-demo's registry lists an image for each of its
commits (their shas exist only now, so they are added here): e2e/run.sh pushes
the older one to the e2e registry, which asks for credentials; the newer one
is never pushed, so it cannot be pulled.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import yaml

from testing import gitlab

NOTEBOOK = json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
COMMITS = [
    {"data.txt": "the older commit\n", "notebooks/analysis.ipynb": NOTEBOOK},
    {"data.txt": "the newer commit\n"},
]


def prepare(work: Path) -> Path:
    """The projects' repositories in `work` and the fixture that serves them; returns its path."""
    data = yaml.safe_load(Path(__file__).with_name("fixture.yaml").read_text())
    for project in data["projects"]:
        # the project's path in its first commit: each project's commits are its own
        first = {**COMMITS[0], "README.md": f"{project['path']}\n"}
        shas = gitlab.create_bare_repo(work / project["repo"], [first, *COMMITS[1:]])
        if project.get("registryTags") == "each commit":
            project["registryTags"] = [sha[:7] for sha in shas]
    fixture = work / "fixture.yaml"
    fixture.write_text(yaml.safe_dump(data))
    return fixture


def main() -> int:
    fixture = prepare(Path(tempfile.mkdtemp(prefix="e2e-standin-")))
    return gitlab.main(["--host", "0.0.0.0", "--port", "8080", "--fixture", str(fixture)])


if __name__ == "__main__":
    sys.exit(main())
