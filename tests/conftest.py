"""Shared fixtures: a tiny synthetic espeak-ng corpus, made once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About two minutes of synthetic speech with train/dev/test manifests."""
    from suite.data.synth import synthesize_corpus

    out = tmp_path_factory.mktemp("tiny_corpus")
    synthesize_corpus(out_dir=out, hours=0.03, seed=0, num_workers=2, augment=False)
    return out
