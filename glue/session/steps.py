"""A step: one short command a spawner runs for a session (clone, restore, autosave, inspect).

Its command line is built by the step's own module (`clone.step`, `autosave.step`,
`gitsession.step`); glue.session.steprunner runs it. Imports nothing but `typing`: every
step module imports this, and a step's start time is the user's wait.
"""

from __future__ import annotations

from typing import NamedTuple


class Step(NamedTuple):
    """How a spawner runs a step: its command line, and what it adds to the environment."""

    argv: list[str]
    env: dict[str, str]
