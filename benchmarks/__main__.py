"""`python -m benchmarks [--only 1,3] [--rst FILE]`: run the figures and print them."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import psutil

from . import figures
from .harness import Figure, running_bench


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
            f"**{figure.title}**",
            "",
            f"- through the glue: {figure.glue}",
            f"- baseline: {figure.baseline}",
            f"- ratio {figure.ratio:.2f}, target {figure.target}: "
            f"{'met' if figure.met else '**missed**'}",
        ]
        lines += [f"- {note}" for note in figure.notes]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default="1,2,3,4,5", help="figures to run (default: all)")
    parser.add_argument("--requests", type=int, default=1000, help="status requests (figure 1)")
    parser.add_argument("--launches", type=int, default=20, help="launches each (figure 2)")
    parser.add_argument("--crowd", type=int, default=50, help="users at once (figure 3)")
    parser.add_argument("--commits", type=int, default=3000, help="history length (figure 4)")
    parser.add_argument("--memory-requests", type=int, default=10_000, help="(figure 5)")
    parser.add_argument("--rst", type=Path, help="also write the results as reStructuredText")
    args = parser.parse_args(argv)
    wanted = {int(n) for n in args.only.split(",")}
    print(f"machine: {machine()}", flush=True)
    results: list[Figure] = []

    def report(figure: Figure) -> None:
        results.append(figure)
        print(figure.show(), flush=True)

    if 4 in wanted:
        report(figures.clone(commits=args.commits))
    hub_figures = wanted & {1, 2, 3, 5}
    if hub_figures:
        with running_bench(servers_per_user=2) as bench:
            if 5 in wanted:
                report(figures.memory(bench, requests=args.memory_requests))
            if 1 in wanted:
                report(figures.status(bench, requests=args.requests))
            if 2 in wanted:
                report(figures.launch(bench, runs=args.launches))
            if 3 in wanted:
                report(figures.crowd(bench, users=args.crowd))
    results.sort(key=lambda f: f.title)
    if args.rst:
        args.rst.write_text(rst(results, time.strftime("%Y-%m-%d")) + "\n")
    missed = [f.title.split(".")[0] for f in results if not f.met]
    print(f"targets missed: {', '.join(missed)}" if missed else "every target met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
