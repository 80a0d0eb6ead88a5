"""Generate the configuration reference in docs/configuration.rst from the config schema.

The schema (schema/notebooks.schema.yaml) is the only source: its descriptions are the
reference, so the page cannot tell an operator of a key, type or default that the glue and
the hub do not accept. Only the part between the page's markers is generated; the prose
around it is written by hand and kept as it is.

    python -m glue.tools.configdocs           # write the page
    python -m glue.tools.configdocs --check   # fail if the committed page is stale (tests)
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

from glue.core import config
from glue.tools import generated

PAGE = Path(__file__).resolve().parent.parent.parent / "docs" / "configuration.rst"
MARKERS = (".. config-reference-start\n", ".. config-reference-end\n")
# the docs' line length, which doc8 checks in `make lint`
WIDTH = 100


def entries() -> str:
    """One entry a key of the schema, in its order: name, type, default, description (RST)."""
    out: list[str] = []

    def walk(node: dict[str, Any], path: str) -> None:
        for key, prop in node.get("properties", {}).items():
            name = f"{path}.{key}" if path else key
            kind = prop.get("type", "")
            shown = "default" in prop and kind != "object"
            default = f" (default ``{json.dumps(prop['default'])}``)" if shown else ""
            text = re.sub(r"`([^`]+)`", r"``\1``", " ".join(prop.get("description", "").split()))
            out.append(f"``{name}`` *{kind}*{default}\n    {text}\n")
            walk(prop, name)
            if isinstance(prop.get("items"), dict):
                walk(prop["items"], f"{name}[]")

    walk(config.schema(), "")
    return "\n".join(out)


class MarkersMissing(Exception):
    """The page lacks a marker, so there is no place to put the reference."""


def reference() -> str:
    """The reference (`entries()`), each description wrapped to the docs' line length."""
    lines = []
    for line in entries().split("\n"):
        if line.startswith("    ") and len(line) > WIDTH:
            line = textwrap.fill(
                line.strip(),
                WIDTH,
                initial_indent="    ",
                subsequent_indent="    ",
                break_long_words=False,
                break_on_hyphens=False,
            )
        lines.append(line)
    return "\n".join(lines)


def with_reference(page: str) -> str:
    """`page` with the generated reference between its markers, everything else as it was."""
    start, end = MARKERS
    head, found, rest = page.partition(start)
    if not found or end not in rest:
        raise MarkersMissing(f"the page needs the lines {start.strip()!r} and {end.strip()!r}")
    _, _, tail = rest.partition(end)
    return f"{head}{start}\n{reference()}\n{end}{tail}"


def render() -> str:
    return with_reference(PAGE.read_text())


def main(argv: list[str] | None = None) -> int:
    return generated.main(argv, render, PAGE, "glue.tools.configdocs", __doc__)


if __name__ == "__main__":
    sys.exit(main())
