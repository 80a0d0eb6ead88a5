"""`make bench` cannot rot: every figure runs once at a tiny size (`--smoke`) in `make test`.

This checks the harness (imports, the hub stack, each figure's requests and
clean-up), not the timings: a figure that raises, is skipped, measures nothing or
sees a failed request fails here, long before anyone runs the full benchmark. The
figures run in four parts side by side (PARTS), each a `python -m benchmarks --smoke
--only ...` of its own.
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

FIGURES = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}
# four runs, side by side in `make test`: the figures without a hub (4, 8), and the hub's
# figures in three runs of a bench hub each, the memory figure first while its glue is idle;
# the two figures that also run the earlier commit's code (9, 10) apart from the rest, so
# that no part is left running alone at the end of the suite
PARTS = ((4, 8), (1, 2, 3, 5), (6, 7, 11), (9, 10))


@pytest.mark.hub  # the figures start hubs, servers and glues of their own
@pytest.mark.parametrize("part", PARTS, ids=lambda part: "figures-" + "-".join(map(str, part)))
def test_every_figure_measures_something_at_smoke_size(
    tmp_path: Path, part: tuple[int, ...]
) -> None:
    assert set().union(*PARTS) == FIGURES  # every figure runs in one of the parts
    out = tmp_path / "figures.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(CHECKOUT), os.environ.get("PYTHONPATH")]))}
    only = ",".join(map(str, part))
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--only", only, "--json", str(out)],
        cwd=CHECKOUT, env=env, capture_output=True, text=True, timeout=400,
    )
    assert run.returncode == 0, f"the smoke run failed:\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}"
    figures = json.loads(out.read_text())
    assert {f["number"] for f in figures} == set(part), run.stdout
    for figure in figures:
        values = {"ratio": figure["ratio"], **figure["numbers"]}
        assert len(values) > 1, figure
        bad = {k: v for k, v in values.items() if not (math.isfinite(v) and v > 0)}
        assert not bad, (figure["title"], bad)
        assert figure["errors"] == 0, figure
