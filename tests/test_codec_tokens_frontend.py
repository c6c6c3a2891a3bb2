"""The codec-token frontend: audio -> a frozen codec's codes -> summed per-codebook embeddings,
which an encoder and a CTC head train on."""

from __future__ import annotations

import pytest
import torch

import suite
from suite import registry
from suite.errors import UserError
from suite.interfaces import Batch

CODEC = {"name": "seanet", "preset": "tiny", "discriminator_channels": 0}


def _frontend(**options):
    torch.manual_seed(0)
    return registry.create("frontend", "codec_tokens", codec=CODEC, embed_dim=16, **options)


def test_it_is_registered_and_embeds_the_codes_of_the_first_codebooks():
    assert "codec_tokens" in registry.names("frontend")
    frontend = _frontend(num_quantizers=2)
    hop = frontend.codec.hop
    audio, lengths = torch.randn(2, 10 * hop) * 0.1, torch.tensor([10 * hop, 7 * hop - 5])
    features, out_lengths = frontend(audio, lengths)
    assert features.shape == (2, 10, 16) and out_lengths.tolist() == [10, 7]
    assert frontend.input_dim == 16 and frontend.sample_rate == 16000
    codes, _ = frontend.codes(audio, lengths)  # (B, 2, T): the sum of their two embeddings
    expected = frontend.embeddings[0](codes[:, 0]) + frontend.embeddings[1](codes[:, 1])
    assert torch.equal(features, expected)


def test_only_the_embeddings_train_and_the_codec_stays_frozen():
    frontend = _frontend().train()
    assert not frontend.codec.training
    before = {k: v.clone() for k, v in frontend.codec.state_dict().items()}
    encoder = suite.create_encoder("conformer", preset="tiny", input_dim=16, subsampling_factor=2)
    head = suite.create_head("ctc", input_dim=encoder.output_dim, vocab_size=8)
    params = [p for m in (frontend, encoder, head) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    hop = frontend.codec.hop
    audio, lengths = torch.randn(2, 40 * hop) * 0.1, torch.tensor([40 * hop, 32 * hop])
    targets, target_lengths = torch.tensor([[1, 2, 3], [4, 5, 0]]), torch.tensor([3, 2])
    batch = Batch(inputs=audio, lengths=lengths, targets=targets, target_lengths=target_lengths)
    losses = []
    for _ in range(3):
        loss = head.loss(encoder(*frontend(audio, lengths)), batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    assert all(e.weight.grad is not None for e in frontend.embeddings)
    assert not any(p.requires_grad for p in frontend.codec.parameters())
    after = frontend.codec.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # buffers too


def test_a_bad_codec_or_codebook_count_is_a_teaching_error(tmp_path):
    with pytest.raises(UserError, match="not a codec package folder"):
        registry.create("frontend", "codec_tokens", codec=str(tmp_path))
    with pytest.raises(UserError, match="num_quantizers must lie in"):
        _frontend(num_quantizers=9)
