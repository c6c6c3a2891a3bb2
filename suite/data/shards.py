"""Corpora written in shards by parallel workers (``suite data synth-scenes``, ``synth-sounds``).

A corpus folder records the settings it was made with and refuses others; each split's items
are written shard by shard (``OUT/<split>/<k:05d>.jsonl`` beside the shard's media, each file
atomically), so a killed run resumes by skipping finished shards, and the shards' manifests
are then joined into ``OUT/<split>.jsonl``. Every item depends only on the settings, its split
and its index, so the number of workers changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from suite.errors import UserError
from suite.io import atomic_write_text

SPLITS = ("train", "dev", "test")


def check_settings(
    path: Path, wanted: dict[str, Any], what: str, error: type[UserError] = UserError
) -> None:
    """Record ``wanted`` in ``path``, or refuse a folder made with other settings."""
    if path.is_file():
        previous = json.loads(path.read_text())
        if previous != wanted:
            changed = sorted(k for k in wanted if previous.get(k) != wanted[k])
            raise error(
                f"{path.parent} holds {what} made with other settings ({', '.join(changed)} "
                "differ); pass the same options to resume, or a new --out"
            )
    else:
        atomic_write_text(path, json.dumps(wanted, indent=2) + "\n")


def write_shards(
    out: Path,
    config: Any,
    counts: dict[str, int],
    shard_size: int,
    write_shard: Callable[[str, Any, str, int], Any],
    jobs: int = 1,
) -> dict[str, Path]:
    """Run ``write_shard(str(out), config, split, shard)`` for every shard of every split (in
    ``jobs`` processes; ``write_shard`` must be a module-level function), then join each split's
    shard manifests into ``OUT/<split>.jsonl``; returns those paths by split."""
    shards = {split: -(-counts.get(split, 0) // shard_size) for split in SPLITS}
    tasks = [(split, shard) for split in SPLITS for shard in range(shards[split])]
    if jobs > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(jobs) as workers:
            futures = [workers.submit(write_shard, str(out), config, s, k) for s, k in tasks]
            for future in futures:
                future.result()
    else:
        for split, shard in tasks:
            write_shard(str(out), config, split, shard)
    manifests = {}
    for split in SPLITS:
        count = counts.get(split, 0)
        if not count:
            continue
        parts = [out / split / f"{k:05d}.jsonl" for k in range(shards[split])]
        path = out / f"{split}.jsonl"
        atomic_write_text(path, "".join(p.read_text() for p in parts))
        manifests[split] = path
    return manifests
