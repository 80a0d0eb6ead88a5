"""Figure 7's baseline in the bench's hub: a stop as it was before autosave existed.

The bench's hub runs this subclass of the embedded default's spawner
(`NOTEBOOKS_TEST_SPAWNER_CLASS`, read by testing/hub_config.py). For every user
but the baseline's it is LocalCommitSpawner unchanged; for users named
`TODAY*` its `autosave` and `autosave_status` do nothing, so their stop (a
glue DELETE with `force=true`, which skips the glue's pre-stop autosave) is
the same code path minus the autosave work: no production code is patched.
"""

from __future__ import annotations

from typing import Any

from glue.hub.localspawner import LocalCommitSpawner

TODAY = "bench-today-"


class BenchSpawner(LocalCommitSpawner):
    """LocalCommitSpawner; for the baseline's users, without its autosave."""

    def _today(self) -> bool:
        return str(self.user.name).startswith(TODAY)

    async def autosave(self) -> dict[str, Any]:
        return {} if self._today() else await super().autosave()

    async def autosave_status(self) -> dict[str, Any]:
        return {} if self._today() else await super().autosave_status()
