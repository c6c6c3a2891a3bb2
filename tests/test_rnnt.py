"""RNN-T head: training, batched greedy against the reference loop, padding, the chunked loss,
streaming, beam search against exhaustive search, and errors."""

from __future__ import annotations

import functools
import itertools
import json
import math
from collections.abc import Callable

import pytest
import torch

import suite
from suite.bench import decoding
from suite.cli import main
from suite.heads import rnnt_decoding
from suite.heads.rnnt import RnntHead, sub_batches
from suite.heads.rnnt_decoding import (
    greedy_search,
    greedy_search_reference,
    modified_beam_search,
)
from suite.interfaces import Batch, EncoderOutput
from suite.streaming import concat_states, split_state

PREDICTORS = ["lstm", "stateless"]
D, V = 16, 7


def make_batch() -> Batch:
    """Three utterances of 12, 9 and 6 frames with 4, 3 and 2 targets (padded with 0)."""
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([12, 9, 6])
    target_lengths = torch.tensor([4, 3, 2])
    targets = torch.randint(1, V, (3, 4), generator=g) * (
        torch.arange(4)[None] < target_lengths[:, None]
    )
    features = torch.randn(3, 12, D, generator=g)
    return Batch(features, lengths, targets, target_lengths)


def tiny_head(predictor: str, **kwargs) -> RnntHead:
    torch.manual_seed(0)
    return suite.create_head(
        "rnnt", preset="tiny", input_dim=32, vocab_size=V, predictor=predictor, **kwargs
    )


@pytest.fixture(scope="module")
def trained(fit_tiny) -> Callable[[str, int], tuple[torch.nn.Module, RnntHead, list[float]]]:
    """``trained(predictor, steps)``: a tiny encoder (Linear + Tanh) and head after ``steps``
    Adam steps on :func:`make_batch` (cached)."""

    @functools.cache
    def run(predictor: str, steps: int) -> tuple[torch.nn.Module, RnntHead, list[float]]:
        return fit_tiny(lambda: tiny_head(predictor), make_batch(), steps)

    return run


@pytest.mark.parametrize("predictor", PREDICTORS)
def test_loss_falls_and_greedy_memorizes_a_tiny_batch(predictor, trained):
    encoder, head, losses = trained(predictor, 50)
    assert losses[-1] < 0.2 * losses[0]
    batch = make_batch()
    enc = EncoderOutput(encoder(batch.inputs), batch.lengths)
    targets = [batch.targets[b, : batch.target_lengths[b]].tolist() for b in range(3)]
    assert [h.tokens for h in head.decode(enc)] == targets
    # Beam search emits one symbol per frame at most, which the trained alignment may not
    # respect (it can put two labels on one frame), so only greedy is held to the targets.


@pytest.mark.parametrize("rows_per_pass", [1, 64])  # one frame per pass, or many ahead
@pytest.mark.parametrize("max_symbols", [1, 2, 5])
@pytest.mark.parametrize("steps", [1, 2])  # labels fill most frames after 1 step, blanks after 2
@pytest.mark.parametrize("predictor", PREDICTORS)
def test_batched_greedy_equals_reference_loop(
    predictor, steps, max_symbols, rows_per_pass, monkeypatch, trained, encode_padded
):
    monkeypatch.setattr(rnnt_decoding, "ROWS_PER_PASS", rows_per_pass)
    encoder, head, _ = trained(predictor, steps)
    enc = encode_padded(encoder, [37, 12, 29, 1, 0, 23])
    batched = greedy_search(head, enc, max_symbols)
    reference = greedy_search_reference(head, enc, max_symbols)
    assert [h.tokens for h in batched] == [h.tokens for h in reference]
    for got, want in zip(batched, reference, strict=True):
        assert got.score == pytest.approx(want.score, abs=1e-3)
    # Power: labels and blanks both occur, so both inner loops of label looping run.
    emitted = sum(len(h.tokens) for h in batched)
    assert 0 < emitted < max_symbols * int(enc.lengths.sum())
    assert batched[4].tokens == [] and batched[4].score == 0.0


@pytest.mark.parametrize("predictor", PREDICTORS)
def test_padding_invariance(predictor, trained, encode_padded):
    encoder, head, _ = trained(predictor, 1)
    lengths = [31, 8, 20]
    enc = encode_padded(encoder, lengths)
    for method in ("greedy", "beam"):
        batched = head.decode(enc, method=method)
        for b, n in enumerate(lengths):
            alone = EncoderOutput(enc.features[b : b + 1, :n], enc.lengths[b : b + 1])
            hyp = head.decode(alone, method=method)[0]
            assert hyp.tokens == batched[b].tokens
            assert hyp.score == pytest.approx(batched[b].score, abs=1e-4)


def test_sub_batches_respect_the_limit():
    lengths, target_lengths = [10, 12, 4, 30, 5, 5], [3, 2, 6, 1, 0, 2]
    spans = sub_batches(lengths, target_lengths, vocab_size=5, max_elements=800)
    assert spans[0][0] == 0 and spans[-1][1] == 6 and len(spans) > 1
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))  # contiguous, in order
    for a, b in spans:
        cost = (b - a) * max(lengths[a:b]) * (max(target_lengths[a:b]) + 1) * 5
        assert cost <= 800 or b - a == 1  # one item over the limit runs alone
    assert sub_batches(lengths, target_lengths, 5, None) == [(0, 6)]
    assert sub_batches(lengths, target_lengths, 5, 1) == [(b, b + 1) for b in range(6)]


@pytest.mark.parametrize("predictor", PREDICTORS)
def test_chunked_loss_equals_full_loss_and_gradients(predictor):
    g = torch.Generator().manual_seed(3)
    lengths = torch.tensor([9, 14, 5, 11, 7])
    target_lengths = torch.tensor([3, 1, 4, 0, 2])
    targets = torch.randint(1, V, (5, 5), generator=g)
    features = torch.randn(5, 14, 32, generator=g)
    batch = Batch(features, lengths, targets, target_lengths)
    limit = 2 * 14 * 5 * V
    assert len(sub_batches(lengths.tolist(), target_lengths.tolist(), V, limit)) > 1
    results = []
    for max_joint_elements in (None, limit):
        head = tiny_head(predictor, max_joint_elements=max_joint_elements)
        x = features.clone().requires_grad_(True)
        loss = head.loss(EncoderOutput(x, lengths), batch)["loss"]
        loss.backward()
        grads = {n: p.grad for n, p in head.named_parameters()}
        results.append((loss.detach(), x.grad, grads))
    (full, full_x, full_grads), (chunked, chunked_x, chunked_grads) = results
    torch.testing.assert_close(chunked, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(chunked_x, full_x, atol=1e-6, rtol=1e-5)
    for name, grad in full_grads.items():
        torch.testing.assert_close(chunked_grads[name], grad, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("predictor", PREDICTORS)
def test_loss_is_fp32_under_autocast(predictor):
    head = tiny_head(predictor, max_joint_elements=800)
    batch = make_batch()
    x = torch.randn(3, 12, 32, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = torch.nn.functional.linear(x, torch.eye(32))  # bf16, as an encoder's would be
        loss = head.loss(EncoderOutput(features, batch.lengths), batch)["loss"]
    loss.backward()
    assert features.dtype == torch.bfloat16 and loss.dtype == torch.float32
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


def test_loss_reduction_is_per_token_mean():
    head = tiny_head("lstm")
    batch = make_batch()
    enc = EncoderOutput(torch.randn(3, 12, 32), batch.lengths)
    per_utt = [
        head.loss(
            EncoderOutput(enc.features[b : b + 1, :n], batch.lengths[b : b + 1]),
            Batch(batch.inputs, batch.lengths[b : b + 1], batch.targets[b : b + 1], u[None]),
        )["loss"]
        for b, (n, u) in enumerate(zip(batch.lengths.tolist(), batch.target_lengths, strict=True))
    ]
    torch.testing.assert_close(head.loss(enc, batch)["loss"], torch.stack(per_utt).mean())


@pytest.mark.parametrize("predictor", PREDICTORS)
def test_streaming_greedy_equals_offline_greedy(predictor, trained, encode_padded):
    encoder, head, _ = trained(predictor, 1)  # several labels on most frames
    lengths = [40, 17, 33, 0]
    enc = encode_padded(encoder, lengths, seed=4)
    want = head.decode(enc)
    g = torch.Generator().manual_seed(5)
    states = split_state(head.init_stream(len(lengths)))
    pos = [0] * len(lengths)
    previous = [[] for _ in lengths]
    while any(p < n for p, n in zip(pos, lengths, strict=True)):
        # Each stream gets 0-6 new frames; the batch is re-formed from per-stream states.
        n = [
            min(int(torch.randint(0, 7, (), generator=g)), m - p)
            for p, m in zip(pos, lengths, strict=True)
        ]
        chunk = torch.zeros(len(lengths), max(n), enc.features.shape[-1])
        for b in range(len(lengths)):
            chunk[b, : n[b]] = enc.features[b, pos[b] : pos[b] + n[b]]
        given = concat_states(states)
        kept = [t.clone() for t in (given.pred_out, given.scores, *given.pred_state)]
        hyps, state = head.streaming_decode(EncoderOutput(chunk, torch.tensor(n)), given)
        # States are values: the one passed in is left as it was (the search works on copies).
        assert all(map(torch.equal, kept, (given.pred_out, given.scores, *given.pred_state)))
        states = split_state(state)
        for b, hyp in enumerate(hyps):
            assert hyp.tokens[: len(previous[b])] == previous[b]  # partials only grow
            previous[b] = hyp.tokens
        pos = [p + k for p, k in zip(pos, n, strict=True)]
    for got, expected in zip(hyps, want, strict=True):
        assert got.tokens == expected.tokens
        assert got.score == pytest.approx(expected.score, abs=1e-4)
    assert sum(len(h.tokens) for h in want) > 0


@pytest.mark.parametrize("predictor", PREDICTORS)
def test_beam_of_one_is_greedy_with_one_symbol_per_frame(predictor, trained, encode_padded):
    encoder, head, _ = trained(predictor, 2)
    enc = encode_padded(encoder, [37, 12, 29])
    greedy = head.decode(enc, method="greedy", max_symbols_per_frame=1)
    beam = head.decode(enc, method="beam", beam_size=1)
    assert [h.tokens for h in beam] == [h.tokens for h in greedy]
    assert [h.score for h in beam] == pytest.approx([h.score for h in greedy], abs=1e-4)


def sequence_log_probs(head: RnntHead, features: torch.Tensor) -> dict[tuple[int, ...], float]:
    """log P(tokens) of every label sequence, summed over all one-symbol-per-frame alignments.

    Every alignment is T decisions (blank, or a label that also ends the frame), scored with the
    teacher-forced predictor (the training path), so this also checks ``step`` against it.
    """
    frames = head.joiner.enc_proj(features)  # (T, J)
    totals: dict[tuple[int, ...], float] = {}
    for alignment in itertools.product(range(head.vocab_size), repeat=features.shape[0]):
        tokens: tuple[int, ...] = ()
        lp = 0.0
        for t, label in enumerate(alignment):
            pred = head.predictor(torch.tensor([[head.blank_id, *tokens]]))[0, -1]  # (P,)
            log_probs = head.joiner(frames[t], head.joiner.pred_proj(pred)).log_softmax(-1)
            lp += float(log_probs[label])
            tokens = tokens if label == head.blank_id else (*tokens, label)
        prev = totals.get(tokens, -math.inf)
        totals[tokens] = max(prev, lp) + math.log1p(math.exp(-abs(prev - lp)))
    return totals


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("predictor", PREDICTORS)
def test_beam_equals_exhaustive_search(predictor, seed):
    torch.manual_seed(seed)
    T, vocab = 5, 3
    head = suite.create_head("rnnt", input_dim=8, vocab_size=vocab, predictor=predictor, pred_dim=8)
    head.joiner.out.weight.data *= 4  # peaky posteriors, so sequences differ clearly
    features = torch.randn(T, 8)
    with torch.no_grad():
        scored = sequence_log_probs(head, features)
        best = max(scored, key=scored.get)
        # A beam wider than every frame's extensions prunes nothing: it must be exact.
        hyp = modified_beam_search(head, features, beam_size=vocab**T)
        assert tuple(hyp.tokens) == best
        assert hyp.score == pytest.approx(scored[best], abs=1e-4)
        # A narrow beam loses merged mass, so its score is a lower bound.
        narrow = modified_beam_search(head, features, beam_size=2)
        assert narrow.score <= scored[tuple(narrow.tokens)] + 1e-4


class CharTokenizer:
    def decode(self, ids: list[int]) -> str:
        return "".join("_abcdefghij"[i] for i in ids)


def test_decode_fills_text_and_rejects_bad_options():
    head = tiny_head("stateless")
    enc = EncoderOutput(torch.randn(3, 7, 32), torch.tensor([7, 4, 0]))
    for method in ("greedy", "beam"):
        hyps = head.decode(enc, method=method, tokenizer=CharTokenizer())
        assert len(hyps) == 3 and hyps[2].tokens == []
        assert all(h.text == CharTokenizer().decode(h.tokens) for h in hyps)
    with pytest.raises(ValueError, match="'greedy' or 'beam'"):
        head.decode(enc, method="viterbi")
    with pytest.raises(ValueError, match="max_symbols_per_frame"):
        head.decode(enc, max_symbols_per_frame=0)
    with pytest.raises(ValueError, match="beam_size"):
        head.decode(enc, method="beam", beam_size=0)


def test_clear_errors_for_bad_inputs():
    head = tiny_head("lstm")
    batch = make_batch()
    wrong_width = EncoderOutput(torch.randn(3, 12, 24), batch.lengths)
    for call in (lambda: head.loss(wrong_width, batch), lambda: head.decode(wrong_width)):
        with pytest.raises(ValueError, match=r"\(B, T, 32\), got \(3, 12, 24\).*input_dim"):
            call()
    enc = EncoderOutput(torch.randn(3, 12, 32), batch.lengths)
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, T=12\]"):
        head.decode(EncoderOutput(enc.features, torch.tensor([13, 2, 2])))
    for bad in (V, 0):  # out of the vocabulary, and the blank inside a target
        targets = batch.targets.clone()
        targets[0, 1] = bad
        with pytest.raises(ValueError, match=f"target token {bad} .*vocab_size"):
            head.loss(enc, Batch(batch.inputs, batch.lengths, targets, batch.target_lengths))
    empty = EncoderOutput(enc.features, torch.tensor([12, 0, 6]))
    with pytest.raises(ValueError, match="at least one encoder frame"):
        head.loss(empty, batch)
    with pytest.raises(ValueError, match="unknown RNN-T predictor 'gru'"):
        RnntHead(input_dim=32, vocab_size=V, predictor="gru")
    with pytest.raises(ValueError, match="max_joint_elements"):
        RnntHead(input_dim=32, vocab_size=V, max_joint_elements=0)
    with pytest.raises(ValueError, match="context_size"):
        RnntHead(input_dim=32, vocab_size=V, predictor="stateless", context_size=0)


def test_bench_decoding_json_reports_the_speedup(monkeypatch, capsys):
    for name, value in (("BATCH", 3), ("FRAMES", 24), ("REPEATS", 1)):
        monkeypatch.setattr(decoding, name, value)  # small sizes: this checks the plumbing
    assert main(["bench", "decoding", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["identical_hypotheses"] is True
    assert result["labels_per_frame"] > 0 and result["rnnt_greedy_speedup"] > 0
    assert result["config"]["batch"] == 3 and result["batched"]["seconds"] > 0
