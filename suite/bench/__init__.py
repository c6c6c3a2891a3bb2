"""Benchmarks run by ``suite bench NAME [--json]``; results are recorded in BENCHMARKS.md.

A benchmark registers here: a name and a function taking ``json_output`` that prints either a
Markdown section (machine, command, date, table) or one JSON object.
"""

from __future__ import annotations

from collections.abc import Callable


def _sampler(json_output: bool) -> None:
    from suite.bench.sampler import main

    main(json_output)


def _encoder(json_output: bool) -> None:
    from suite.bench.encoder import main

    main(json_output)


def _streaming(json_output: bool) -> None:
    from suite.bench.streaming import main

    main(json_output)


def _decoding(json_output: bool) -> None:
    from suite.bench.decoding import main

    main(json_output)


def _transcribe(json_output: bool) -> None:
    from suite.bench.transcribe import main

    main(json_output)


BENCHMARKS: dict[str, Callable[[bool], None]] = {
    "sampler": _sampler,
    "encoder": _encoder,
    "streaming": _streaming,
    "decoding": _decoding,
    "transcribe": _transcribe,
}


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

    if name not in BENCHMARKS:
        raise UserError(f"unknown benchmark '{name}'; choose one of {', '.join(BENCHMARKS)}")
    BENCHMARKS[name](json_output)
