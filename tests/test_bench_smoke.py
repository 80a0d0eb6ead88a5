"""`make bench` cannot rot: every figure runs once at a tiny size (`--smoke`) in `make test`.

This checks the harness (imports, the hub stack, each figure's requests and
clean-up), not the timings: a figure that raises, is skipped, measures nothing or
sees a failed request fails here, long before anyone runs the full benchmark.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from testing import CHECKOUT

FIGURES = {1, 2, 3, 4, 5, 6, 7, 8, 9}


@pytest.mark.hub  # the figures start hubs, servers and glues of their own
def test_every_figure_measures_something_at_smoke_size(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(CHECKOUT), os.environ.get("PYTHONPATH")]))}
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--json", str(out)],
        cwd=CHECKOUT, env=env, capture_output=True, text=True, timeout=400,
    )
    assert run.returncode == 0, f"the smoke run failed:\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}"
    figures = json.loads(out.read_text())
    assert {f["number"] for f in figures} == FIGURES, run.stdout
    for figure in figures:
        values = {"ratio": figure["ratio"], **figure["numbers"]}
        assert len(values) > 1, figure
        bad = {k: v for k, v in values.items() if not (math.isfinite(v) and v > 0)}
        assert not bad, (figure["title"], bad)
        assert figure["errors"] == 0, figure
