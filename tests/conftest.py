"""Shared fixtures: a tiny synthetic espeak-ng corpus, made once per test session, and the tiny
encoder the head tests train and decode with."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from suite.interfaces import Batch, EncoderOutput, Head


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About two minutes of synthetic speech with train/dev/test manifests."""
    from suite.data.synth import synthesize_corpus

    out = tmp_path_factory.mktemp("tiny_corpus")
    synthesize_corpus(out_dir=out, hours=0.03, seed=0, num_workers=2, augment=False)
    return out


def _fit_tiny(
    make_head: Callable[[], Head], batch: Batch, steps: int, width: int = 32, **loss_options
) -> tuple[torch.nn.Module, Head, list[float]]:
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Linear(batch.inputs.shape[-1], width), torch.nn.Tanh())
    head = make_head()
    opt = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=1e-2)
    losses = []
    for _ in range(steps):
        enc = EncoderOutput(encoder(batch.inputs), batch.lengths)
        loss = head.loss(enc, batch, **loss_options)["loss"]
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return encoder.eval(), head.eval(), losses


@pytest.fixture(scope="session")
def fit_tiny() -> Callable[..., tuple[torch.nn.Module, Head, list[float]]]:
    """``fit_tiny(make_head, batch, steps, width=32, **loss_options)``: a tiny encoder (Linear
    from ``batch.inputs``' width to ``width``, then Tanh) and the head ``make_head()`` after
    ``steps`` Adam steps (lr 1e-2) on ``batch``, both in eval mode, and the losses."""
    return _fit_tiny


def _encode_padded(encoder: torch.nn.Module, lengths: list[int], seed: int = 1) -> EncoderOutput:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), max(lengths), encoder[0].in_features, generator=g)
    n = torch.tensor(lengths)
    with torch.no_grad():
        features = encoder(x * (torch.arange(max(lengths))[None, :, None] < n[:, None, None]))
    return EncoderOutput(features, n)


@pytest.fixture(scope="session")
def encode_padded() -> Callable[..., EncoderOutput]:
    """``encode_padded(encoder, lengths, seed=1)``: random inputs, zero beyond each length,
    through a :func:`fit_tiny` encoder."""
    return _encode_padded
