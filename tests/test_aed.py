"""AED head: a tiny model memorizes utterances for two tasks, padding invariance, beam of one
against greedy, the KV cache against recomputation, length normalization, the package round
trip, the benchmark's plumbing, and errors."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

import suite
from suite.bench import decoding
from suite.cli import main
from suite.config import ModelConfig
from suite.heads.aed import AedHead
from suite.heads.search import beam_search, greedy_search
from suite.interfaces import Batch, EncoderOutput
from suite.model import build_model, save_package
from suite.tokenizers import CharTokenizer

D, V = 16, 10
# Two utterances, each with a transcript and a caption: the task token alone tells them apart.
TASKS = ["transcribe", "transcribe", "caption", "caption"]
TARGETS = [[1, 2, 3, 4, 5], [6, 7, 6, 7], [9, 8], [3, 3, 3, 1, 2, 9]]
LENGTHS = [12, 9, 12, 9]


def make_batch() -> Batch:
    g = torch.Generator().manual_seed(0)
    inputs = torch.randn(2, 12, D, generator=g)
    lengths = torch.tensor(LENGTHS)
    features = inputs[[0, 1, 0, 1]] * (torch.arange(12)[None, :, None] < lengths[:, None, None])
    U = max(map(len, TARGETS))
    targets = torch.tensor([t + [0] * (U - len(t)) for t in TARGETS])
    return Batch(features, lengths, targets, torch.tensor(list(map(len, TARGETS))))


def tiny_head(**kwargs) -> AedHead:
    torch.manual_seed(0)
    return suite.create_head("aed", preset="tiny", input_dim=32, vocab_size=V, **kwargs)


@pytest.fixture(scope="module")
def trained(fit_tiny) -> Callable[[int], tuple[torch.nn.Module, AedHead, list[float]]]:
    """``trained(steps)``: a tiny encoder (Linear + Tanh) and head after ``steps`` Adam steps on
    :func:`make_batch` (cached)."""

    @functools.cache
    def run(steps: int) -> tuple[torch.nn.Module, AedHead, list[float]]:
        return fit_tiny(lambda: tiny_head(dropout=0.0), make_batch(), steps, task=TASKS)

    return run


def test_loss_falls_and_decoding_memorizes_both_tasks(trained):
    encoder, head, losses = trained(120)
    assert losses[-1] < 0.3 * losses[0], losses
    batch = make_batch()
    with torch.no_grad():
        enc = EncoderOutput(encoder(batch.inputs), batch.lengths)
        for method in ("greedy", "beam"):
            hyps = head.decode(enc, method=method, task=TASKS)
            assert [h.tokens for h in hyps] == TARGETS, method
        # The same audio under the other task token gives the other task's target.
        swapped = head.decode(enc, task=TASKS[2:] + TASKS[:2])
        assert [h.tokens for h in swapped[:2]] != TARGETS[:2]
        accuracy = head.loss(enc, batch, task=TASKS)["accuracy"]
    assert float(accuracy) == 1.0


def test_loss_reduction_and_padding_invariance(trained):
    encoder, head, _ = trained(3)
    batch = make_batch()
    with torch.no_grad():
        enc = EncoderOutput(encoder(batch.inputs), batch.lengths)
        full = head.loss(enc, batch, task=TASKS)["loss"]
        # Garbage in the padding frames, and more of them, changes nothing.
        T = enc.features.shape[1]
        noise = torch.randn(4, T + 5, 32)
        valid = (torch.arange(T + 5)[None, :] < batch.lengths[:, None])[..., None]
        noisy = EncoderOutput(
            torch.where(valid, torch.nn.functional.pad(enc.features, (0, 0, 0, 5)), noise),
            enc.lengths,
        )
        torch.testing.assert_close(head.loss(noisy, batch, task=TASKS)["loss"], full)
        alone = []
        for b, (n, u) in enumerate(zip(LENGTHS, map(len, TARGETS), strict=True)):
            item = EncoderOutput(enc.features[b : b + 1, :n], enc.lengths[b : b + 1])
            targets = Batch(
                batch.inputs,
                batch.lengths[b : b + 1],
                batch.targets[b : b + 1, :u],
                torch.tensor([u]),
            )
            alone.append(head.loss(item, targets, task=TASKS[b])["loss"])
        torch.testing.assert_close(full, torch.stack(alone).mean())


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_decoding_is_padding_invariant(method, trained, encode_padded):
    encoder, head, _ = trained(3)
    lengths = [31, 8, 20]
    enc = encode_padded(encoder, lengths)
    batched = head.decode(enc, method=method, beam_size=3)
    noisy = enc.features.clone()
    for b, n in enumerate(lengths):
        noisy[b, n:] = torch.randn_like(noisy[b, n:])
        alone = EncoderOutput(enc.features[b : b + 1, :n], enc.lengths[b : b + 1])
        hyp = head.decode(alone, method=method, beam_size=3)[0]
        assert hyp.tokens == batched[b].tokens
        assert hyp.score == pytest.approx(batched[b].score, abs=1e-4)
    again = head.decode(EncoderOutput(noisy, enc.lengths), method=method, beam_size=3)
    assert [h.tokens for h in again] == [h.tokens for h in batched]


def test_beam_of_one_is_greedy(trained, encode_padded):
    encoder, head, _ = trained(3)
    enc = encode_padded(encoder, [37, 12, 29, 1])
    greedy = head.decode(enc, method="greedy")
    beam = head.decode(enc, method="beam", beam_size=1)
    assert [h.tokens for h in beam] == [h.tokens for h in greedy]
    assert [h.score for h in beam] == pytest.approx([h.score for h in greedy], abs=1e-5)
    assert any(len(h.tokens) > 1 for h in greedy)


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_kv_cache_equals_recomputing_the_prefix(method, trained, encode_padded):
    encoder, head, _ = trained(3)
    enc = encode_padded(encoder, [37, 12, 29, 0], seed=2)
    options = {"method": method, "beam_size": 4, "task": ["transcribe", "caption"] * 2}
    cached = head.decode(enc, use_kv_cache=True, **options)
    recomputed = head.decode(enc, use_kv_cache=False, **options)
    assert [h.tokens for h in cached] == [h.tokens for h in recomputed]
    assert [h.score for h in cached] == pytest.approx([h.score for h in recomputed], abs=1e-4)
    # Power: hypotheses of several lengths, and one that ended before its length limit.
    assert len({len(h.tokens) for h in cached}) > 1
    assert any(0 < len(h.tokens) < n for h, n in zip(cached, [37, 12, 29], strict=False))
    assert cached[3].tokens == []  # no frames: eos is forced at once


class TableScorer:
    """A stand-in decoder over classes ``a = 0``, ``b = 1``, ``eos = 2``, whose next-token
    probabilities depend on the history: eos at once is likelier than ``a`` then eos, but the
    longer hypothesis has the better log-probability per token."""

    EOS = 2
    TABLE = {(): [0.45, 0.05, 0.5], (0,): [0.1, 0.1, 0.8]}
    OTHER = [0.2, 0.2, 0.6]

    def __init__(self, batch_size: int) -> None:
        self.history: list[tuple[int, ...]] = [()] * batch_size

    def _log_probs(self) -> torch.Tensor:
        return torch.tensor([self.TABLE.get(h, self.OTHER) for h in self.history]).log()

    def start(self) -> torch.Tensor:
        return self._log_probs()

    def expand(self, rows: torch.Tensor) -> None:
        self.history = [self.history[r] for r in rows.tolist()]

    def advance(self, tokens: torch.Tensor, parents: torch.Tensor | None = None) -> torch.Tensor:
        if parents is not None:
            self.expand(parents)
        self.history = [(*h, t) for h, t in zip(self.history, tokens.tolist(), strict=True)]
        return self._log_probs()


def test_the_untrained_decoder_already_hears_the_audio():
    # Token embeddings at the paper's scale leave room in the residual stream for what the
    # cross-attention brings: other frames must move the decoder's states from the start.
    # With nn.Embedding's N(0, 1) init times sqrt(E) they moved by 1% (measured: 0.0099 at this
    # size), and the decoder trained as an LM that ignored the audio.
    torch.manual_seed(0)
    head = AedHead(input_dim=144, vocab_size=256, d_model=144, num_layers=3, num_heads=4).eval()
    B, T, L = 8, 50, 12
    tokens = torch.randint(1, 256, (B, L))

    def states(seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        frames = torch.nn.functional.layer_norm(torch.randn(B, T, 144, generator=g), (144,))
        lengths = torch.full((B,), T)
        memory = head.decoder.memory(head.input_proj(frames), lengths)
        return head.decoder(tokens, torch.full((B,), L), memory)[0]

    with torch.no_grad():
        a, b = states(1), states(2)
    assert float((a - b).norm() / a.norm()) > 0.05


def test_length_normalization_prefers_longer_hypotheses():
    max_lengths = torch.tensor([5, 5])
    raw = beam_search(TableScorer(2), max_lengths, TableScorer.EOS, beam_size=3, length_penalty=0)
    normalized = beam_search(TableScorer(2), max_lengths, TableScorer.EOS, beam_size=3)
    assert [h.tokens for h in raw] == [[], []]
    assert raw[0].score == pytest.approx(math.log(0.5))
    assert [h.tokens for h in normalized] == [[0], [0]]
    assert normalized[0].score == pytest.approx(math.log(0.45 * 0.8))
    # Greedy takes eos at once; a length limit of 0 forces it for beam search too.
    assert greedy_search(TableScorer(1), torch.tensor([5]), TableScorer.EOS)[0].tokens == []
    forced = beam_search(TableScorer(1), torch.tensor([0]), TableScorer.EOS, beam_size=3)
    assert forced[0].tokens == [] and forced[0].score == pytest.approx(math.log(0.5))


def test_decodes_through_a_package_and_suite_load(tmp_path):
    config = ModelConfig(
        encoder={"name": "conformer", "preset": "tiny"},
        heads={"aed": {"name": "aed", "preset": "tiny", "tasks": ["transcribe"]}},
        tokenizer={"name": "char"},
    )
    torch.manual_seed(0)
    save_package(build_model(config, CharTokenizer()), tmp_path / "model")
    asr = suite.load(tmp_path / "model")
    audio = np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1
    texts = asr.transcribe([audio, audio[:4000]], sample_rate=16000, method="beam", beam_size=2)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_bench_decoding_json_reports_the_kv_cache_speedup(monkeypatch, capsys):
    for name, value in (("BATCH", 2), ("FRAMES", 24), ("REPEATS", 1), ("AED_BATCH", 2)):
        monkeypatch.setattr(decoding, name, value)  # small sizes: this checks the plumbing
    assert main(["bench", "decoding", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    aed = result["aed"]
    assert aed["identical_hypotheses"] is True and result["aed_kv_cache_speedup"] > 0
    assert aed["config"]["batch"] == 2 and aed["cached"]["seconds"] > 0
    assert aed["tokens"] > 0 and aed["config"]["beam_size"] == decoding.AED_BEAM


def test_clear_errors():
    head = tiny_head()
    batch = make_batch()
    enc = EncoderOutput(torch.randn(4, 12, 32), batch.lengths)
    wrong_width = EncoderOutput(torch.randn(4, 12, 24), batch.lengths)
    for call in (lambda: head.loss(wrong_width, batch), lambda: head.decode(wrong_width)):
        with pytest.raises(ValueError, match=r"\(B, T, 32\), got \(4, 12, 24\).*input_dim"):
            call()
    with pytest.raises(ValueError, match=r"unknown task 'translate'.*\['transcribe', 'caption'\]"):
        head.decode(enc, task="translate")
    with pytest.raises(ValueError, match="got 2 tasks for a batch of 4"):
        head.loss(enc, batch, task=["caption", "caption"])
    with pytest.raises(ValueError, match="'greedy' or 'beam'"):
        head.decode(enc, method="viterbi")
    with pytest.raises(ValueError, match="beam_size"):
        head.decode(enc, method="beam", beam_size=0)
    for bad in (V, 0):  # out of the vocabulary, and the blank inside a target
        targets = batch.targets.clone()
        targets[0, 1] = bad
        with pytest.raises(ValueError, match=f"target token {bad} .*vocab_size"):
            head.loss(enc, Batch(batch.inputs, batch.lengths, targets, batch.target_lengths))
    with pytest.raises(ValueError, match="even d_model that num_heads divides"):
        AedHead(input_dim=32, vocab_size=V, d_model=30, num_heads=4)
    with pytest.raises(ValueError, match="label_smoothing"):
        AedHead(input_dim=32, vocab_size=V, label_smoothing=1.0)
