"""CTC head: greedy on a hand-made posterior, beam search against exhaustive search, the loss."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from suite.heads.ctc import CtcHead, greedy_search, prefix_beam_search
from suite.interfaces import Batch, EncoderOutput


def sequence_log_prob(log_probs: torch.Tensor, tokens: list[int]) -> float:
    """log P(tokens | log_probs (T, V)) summed over all CTC alignments (blank 0)."""
    T = log_probs.shape[0]
    nll = F.ctc_loss(
        log_probs[:, None],  # (T, 1, V)
        torch.tensor([tokens], dtype=torch.long).reshape(1, -1),
        torch.tensor([T]),
        torch.tensor([len(tokens)]),
        reduction="sum",
    )
    return -float(nll)


def one_hot_posterior(frames: list[int], V: int) -> torch.Tensor:
    probs = torch.full((len(frames), V), 0.01)
    probs[torch.arange(len(frames)), torch.tensor(frames)] = 1.0
    return (probs / probs.sum(-1, keepdim=True)).log()


def test_greedy_on_hand_made_posterior():
    V = 5
    a = one_hot_posterior([1, 1, 0, 2, 2, 3, 0, 0], V)  # runs collapse, blanks drop
    b = one_hot_posterior([4, 0, 4, 4, 1, 0, 3, 3], V)  # a blank separates a real repeat
    log_probs = torch.stack([a, b])  # (2, 8, V)
    hyps = greedy_search(log_probs, torch.tensor([8, 5]))  # item 2: frames 5.. are padding
    assert [h.tokens for h in hyps] == [[1, 2, 3], [4, 4, 1]]
    want = log_probs[1, :5].max(-1).values.sum()
    assert hyps[1].score == pytest.approx(float(want), abs=1e-5)


def test_greedy_empty_item():
    hyps = greedy_search(torch.randn(2, 4, 3).log_softmax(-1), torch.tensor([0, 4]))
    assert hyps[0].tokens == [] and hyps[0].score == 0.0


def all_label_sequences(T: int, tokens: list[int]):
    for n in range(T + 1):
        yield from itertools.product(tokens, repeat=n)


@pytest.mark.parametrize("seed", range(4))
def test_beam_equals_exhaustive_search(seed):
    torch.manual_seed(seed)
    T, V = 5, 3
    log_probs = (torch.randn(T, V, dtype=torch.float64) * 1.5).log_softmax(-1)
    scored = {}
    for seq in all_label_sequences(T, [1, 2]):
        lp = sequence_log_prob(log_probs, list(seq))
        if lp > float("-inf"):
            scored[seq] = lp
    best = max(scored, key=scored.get)
    # A beam wider than the number of prefixes prunes nothing: it must be exact.
    (hyp,) = prefix_beam_search(log_probs[None], torch.tensor([T]), blank_id=0, beam_size=64)
    assert tuple(hyp.tokens) == best
    assert hyp.score == pytest.approx(scored[best], abs=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_beam_at_least_greedy(seed):
    torch.manual_seed(seed)
    T, V = 30, 6
    log_probs = (torch.randn(T, V) * 2.0).log_softmax(-1)
    (beam,) = prefix_beam_search(log_probs[None], torch.tensor([T]), beam_size=8)
    greedy = greedy_search(log_probs[None], torch.tensor([T]))[0]
    beam_lp = sequence_log_prob(log_probs.double(), beam.tokens)
    # Pruned prefixes lose alignment mass, so the beam's score is a lower bound.
    assert beam.score <= beam_lp + 1e-4
    assert beam_lp >= sequence_log_prob(log_probs.double(), greedy.tokens) - 1e-6


class CharTokenizer:
    def decode(self, ids: list[int]) -> str:
        return "".join("_abcdefghij"[i] for i in ids)


def test_decode_fills_text_and_rejects_unknown_method():
    torch.manual_seed(0)
    head = CtcHead(input_dim=8, vocab_size=6)
    enc = EncoderOutput(torch.randn(3, 7, 8), torch.tensor([7, 4, 0]))
    for method in ("greedy", "beam"):
        hyps = head.decode(enc, method=method, beam_size=4, tokenizer=CharTokenizer())
        assert len(hyps) == 3 and hyps[2].tokens == []
        assert all(h.text == CharTokenizer().decode(h.tokens) for h in hyps)
    with pytest.raises(ValueError, match="greedy"):
        head.decode(enc, method="viterbi")


def make_batch(B: int = 3, T: int = 12, D: int = 16, V: int = 7) -> tuple[EncoderOutput, Batch]:
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([12, 9, 6])[:B]
    target_lengths = torch.tensor([4, 3, 2])[:B]
    targets = torch.randint(1, V, (B, 4), generator=g) * (
        torch.arange(4)[None] < target_lengths[:, None]
    )
    features = torch.randn(B, T, D, generator=g)
    batch = Batch(features, lengths, targets, target_lengths)
    return EncoderOutput(features, lengths), batch


def test_loss_reduction_is_per_token_mean():
    torch.manual_seed(0)
    head = CtcHead(input_dim=16, vocab_size=7)
    enc, batch = make_batch()
    per_utt = F.ctc_loss(
        head.log_probs(enc).transpose(0, 1),
        batch.targets,
        enc.lengths,
        batch.target_lengths,
        reduction="none",
    )
    want = (per_utt / batch.target_lengths).mean()
    torch.testing.assert_close(head.loss(enc, batch)["loss"], want)


def test_impossible_target_gives_zero_not_inf():
    head = CtcHead(input_dim=4, vocab_size=5)
    enc = EncoderOutput(torch.randn(1, 2, 4), torch.tensor([2]))
    batch = Batch(enc.features, enc.lengths, torch.tensor([[1, 2, 3]]), torch.tensor([3]))
    assert head.loss(enc, batch)["loss"].item() == 0.0


def test_loss_falls_training_a_tiny_model():
    torch.manual_seed(0)
    enc, batch = make_batch()
    encoder = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh())
    head = CtcHead(input_dim=32, vocab_size=7)
    params = [*encoder.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=1e-2)
    losses = []
    for _ in range(60):
        out = EncoderOutput(encoder(batch.inputs), batch.lengths)
        loss = head.loss(out, batch)["loss"]
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
    out = EncoderOutput(encoder(batch.inputs), batch.lengths)
    hyps = head.decode(out, method="beam")
    targets = [batch.targets[b, : batch.target_lengths[b]].tolist() for b in range(3)]
    assert [h.tokens for h in hyps] == targets  # memorized the fixed batch
