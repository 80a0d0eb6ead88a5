"""The GitLab stand-in as the kind e2e runs it: project group/demo with two commits, then serve.

Runs in the stand-in pod (`python -m e2e.standin`, image built by e2e/run.sh
from the glue image plus tests/ and e2e/). The e2e test launches the older
commit, so the repository needs history, which a fixture `source:` directory
cannot give.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

from tests import gitlab_standin

NOTEBOOK = json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
COMMITS = [
    {"data.txt": "the older commit\n", "notebooks/analysis.ipynb": NOTEBOOK},
    {"data.txt": "the newer commit\n"},
]


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="e2e-standin-"))
    gitlab_standin.create_bare_repo(work / "demo.git", COMMITS)
    fixture = work / "fixture.yaml"
    shutil.copy(Path(__file__).with_name("fixture.yaml"), fixture)
    return gitlab_standin.main(["--host", "0.0.0.0", "--port", "8080", "--fixture", str(fixture)])


if __name__ == "__main__":
    sys.exit(main())
