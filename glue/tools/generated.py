"""The command line of a generator: write its file, or `--check` that the committed one is current.

Files generated from the config schema are committed, so a reader (and Helm,
and mypy) sees them without running anything; `--check` lets CI and the tests
fail when someone changed the schema but did not regenerate.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path


def main(
    argv: list[str] | None,
    render: Callable[[], str],
    output: Path,
    module: str,
    doc: str | None,
) -> int:
    """The command line of the generator `python -m <module>`, which writes `render()`."""
    summary = (doc or "").partition("\n")[0]
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=summary)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the file differs from what would be written"
    )
    parser.add_argument("--output", type=Path, default=output)
    args = parser.parse_args(argv)
    text = render()
    current = args.output.read_text() if args.output.exists() else None
    if args.check:
        if current != text:
            print(f"{args.output} is stale: run `python -m {module}`", file=sys.stderr)
            return 1
        print(f"{args.output}: up to date")
        return 0
    if current != text:
        args.output.write_text(text)
        print(f"wrote {args.output}")
    return 0
