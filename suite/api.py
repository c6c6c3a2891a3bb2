"""The Python inference API: ``suite.load(name_or_path)`` and ``suite.list_models()``; a
shipped name or a package folder gives the pipeline of the package's task.

Shipped packages live in ``suite/pretrained/<name>/`` (installed with the package); any folder
written by ``suite train`` (``RUN/model``) loads the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from suite import registry
from suite.model import PRETRAINED_DIR, load_package, package_task, resolve


def list_models() -> dict[str, str]:
    """Shipped model packages by name, with their task (e.g. ``{"default-asr": "asr"}``)."""
    configs = sorted(PRETRAINED_DIR.glob("*/config.yaml"))
    return {config.parent.name: package_task(config.parent) for config in configs}


def load(name_or_path: str | Path, device: str | torch.device = "cpu") -> Any:
    """Load a shipped model by name (see :func:`list_models`) or a package folder; returns
    its task's pipeline (a :class:`~suite.tasks.asr.Transcriber` for ``asr``, a
    :class:`~suite.tasks.lm.LanguageModel` for ``lm``)."""
    path = resolve(name_or_path)
    task = registry.create("task", package_task(path))
    return task.pipeline(load_package(path, device=device), name=str(name_or_path))
