"""`python -m benchmarks [--smoke] [--only 1,3] [--rst FILE] [--json FILE]`: run the figures.

`--smoke` runs every figure once at a tiny size: it checks the harness (imports,
the hub stack, every figure's requests), not the timings; tests/test_bench_smoke.py
runs it in `make test`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import psutil

from .figures import HUB_FIGURES, PLAIN_FIGURES
from .harness import FULL, SMOKE, Figure, Sizes, running_bench


def machine() -> str:
    memory = psutil.virtual_memory().total / (1 << 30)
    system = platform.freedesktop_os_release().get("PRETTY_NAME", platform.system())
    return (f"{os.cpu_count()} cores, {memory:.0f} GiB, {system}, "
            f"Python {platform.python_version()}")


def rst(results: list[Figure], when: str) -> str:
    lines = [
        "Measured with ``make bench`` (``python -m benchmarks``) on " + machine() + f", {when}.",
        "Each ratio compares the glue's way with a baseline measured side by side in the same",
        "run (interleaved where the figure allows).",
        "",
    ]
    for figure in results:
        lines += [
            f"**{figure.heading}**",
            "",
            f"- through the glue: {figure.glue}",
            f"- baseline: {figure.baseline}",
            f"- {figure.comparison}, target {figure.target}: "
            f"{'met' if figure.met else '**missed**'}",
        ]
        lines += [f"- {note}" for note in figure.notes]
        lines.append("")
    return "\n".join(lines)


def run(wanted: set[int], sizes: Sizes) -> list[Figure]:
    """The wanted figures at these sizes, printed as each is measured; sorted by number."""
    results: list[Figure] = []

    started = time.monotonic()

    def report(figure: Figure) -> None:
        nonlocal started
        results.append(figure)
        print(figure.show(), f"    ({time.monotonic() - started:.0f} s)", sep="\n", flush=True)
        started = time.monotonic()

    for number, plain in PLAIN_FIGURES.items():
        if number in wanted:
            report(plain(sizes))
    if wanted & HUB_FIGURES.keys():
        with running_bench(servers_per_user=2) as bench:
            for number, figure in HUB_FIGURES.items():
                if number in wanted:
                    report(figure(bench, sizes))
    return sorted(results, key=lambda f: f.number)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    every = sorted(PLAIN_FIGURES.keys() | HUB_FIGURES.keys())
    parser.add_argument("--only", default=",".join(map(str, every)),
                        help="figures to run (default: all)")
    parser.add_argument("--smoke", action="store_true",
                        help="every figure once at a tiny size: checks the harness, not timings")
    for size in dataclasses.fields(Sizes):
        parser.add_argument(f"--{size.name.replace('_', '-')}", type=int,
                            help=f"default {getattr(FULL, size.name)}, "
                                 f"{getattr(SMOKE, size.name)} with --smoke")
    parser.add_argument("--rst", type=Path, help="also write the results as reStructuredText")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.smoke and args.rst:
        parser.error("--rst publishes figures; a --smoke run has none worth publishing")
    wanted = {int(n) for n in args.only.split(",")}
    if not wanted <= set(every):
        parser.error(f"--only: the figures are {', '.join(map(str, every))}")
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(Sizes)
                 if getattr(args, f.name) is not None}
    sizes = dataclasses.replace(SMOKE if args.smoke else FULL, **overrides)
    print(f"machine: {machine()}", flush=True)
    print(f"sizes: {sizes.describe()}", flush=True)
    results = run(wanted, sizes)
    if args.rst:
        args.rst.write_text(rst(results, time.strftime("%Y-%m-%d")) + "\n")
    if args.json:
        args.json.write_text(json.dumps([f.as_json() for f in results], indent=1) + "\n")
    missed = [str(f.number) for f in results if not f.met]
    print(f"targets missed: {', '.join(missed)}" if missed else "every target met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
