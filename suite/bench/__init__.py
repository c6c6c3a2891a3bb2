"""Benchmarks run by ``suite bench NAME [--json]``; results are recorded in BENCHMARKS.md.

A benchmark registers here: a name and the module whose ``main(json_output)`` prints either a
Markdown section (machine, command, date, table) or one JSON object (:func:`report`).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable

# Benchmark name -> its module; each module has ``main(json_output)``, imported only when run.
BENCHMARKS: dict[str, str] = {
    name: f"suite.bench.{name}"
    for name in (
        "sampler",
        "encoder",
        "streaming",
        "decoding",
        "transcribe",
        "distributed",
        "serve",
        "longform",
        "kernels",
        "vision",
        "codec",
    )
}


def report(result: dict, json_output: bool, markdown: Callable[[dict], None]) -> None:
    """Print ``result`` as one JSON object, or as a Markdown section through ``markdown``."""
    if json_output:
        print(json.dumps(result))
    else:
        markdown(result)


def print_header(title: str, name: str, threads: int) -> None:
    """Print a benchmark section's title and its machine, command and date lines."""
    import datetime
    import os
    import platform

    import torch

    print(f"## {title} (`suite bench {name}`)\n")
    print(
        f"- Machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {threads} threads"
    )
    print(f"- Command: `suite bench {name}` (and `--json`)")
    print(f"- Date: {datetime.date.today().isoformat()}")


def run_benchmark(name: str, json_output: bool = False) -> None:
    """Run the benchmark ``name`` (one of :data:`BENCHMARKS`) and print its result."""
    from suite.errors import UserError
    from suite.runtime import keep_freed_memory

    if name not in BENCHMARKS:
        raise UserError(f"unknown benchmark '{name}'; choose one of {', '.join(BENCHMARKS)}")
    keep_freed_memory()  # as loading a model does: measure what a user's process runs
    importlib.import_module(BENCHMARKS[name]).main(json_output)
