"""Cache-aware streaming: encoder states and contexts, cached attention, streaming CTC decoding,
sessions and the multi-stream batcher (the encoder parity contract is in test_contracts.py)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

import suite
from suite.config import ConfigError, ModelConfig, load_recipe
from suite.encoders.conformer import Conformer
from suite.errors import UserError
from suite.features import Fbank
from suite.heads.ctc import CtcHead, greedy_search
from suite.heads.rnnt import RnntHead
from suite.interfaces import Batch, EncoderOutput
from suite.kernels.attention import attention, cached_attention, cached_attention_mask
from suite.model import TaskModel
from suite.nn.context import sample_context
from suite.streaming import (
    StreamBatcher,
    StreamingSession,
    concat_states,
    microphone_chunks,
    split_state,
    stream_audio,
)
from suite.tasks.asr import AsrTask, Transcriber, check_distillation
from suite.tokenizers import CharTokenizer

SR = 16000
ROOT = Path(__file__).resolve().parents[1]


def tiny_conformer(**kw) -> Conformer:
    torch.manual_seed(0)
    return Conformer(d_model=32, num_layers=2, num_heads=2, subsampling_channels=8, **kw).eval()


# --- encoder: contexts, errors, emission -------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"att_context": (4, 1)}, "causal=True"),
        ({"causal": True}, "left >= 0"),
        ({"causal": True, "att_context": (-1, 1)}, "left >= 0"),
    ],
)
@pytest.mark.parametrize("name", ["conformer", "squeezeformer"])
def test_streaming_preconditions_are_explained(name, kwargs, match):
    encoder = suite.create_encoder(name, preset="tiny", **kwargs)
    with pytest.raises(ValueError, match=match):
        encoder.init_state(1)


def test_frames_are_emitted_in_whole_chunks_until_final():
    encoder = tiny_conformer(causal=True, att_context=(6, 2))  # 3-frame chunks
    state = encoder.init_state(1)
    x = torch.randn(1, 200, 80)
    emitted = []
    with torch.no_grad():
        for start in range(0, 200, 13):
            piece = x[:, start : start + 13]
            out, state = encoder.streaming_forward(piece, torch.tensor([piece.shape[1]]), state)
            emitted.append(int(out.lengths[0]))
            assert emitted[-1] % 3 == 0
        out, state = encoder.streaming_forward(x[:, :0], torch.tensor([0]), state, final=True)
    assert sum(emitted) + int(out.lengths[0]) == 25  # ceil(200 / 8)
    assert int(out.lengths[0]) == 25 % 3


@pytest.mark.parametrize("context", [(4, 1, 2), (6, 2, 5), (3, 0, 1)])
def test_lookahead_attends_chunk_by_chunk_as_with_one_mask(context, monkeypatch):
    """A long input attends chunk by chunk (linear memory); that equals the one dense mask,
    in values and in gradients."""
    from suite.nn import lookahead

    encoder = tiny_conformer(causal=True, att_context=context, dropout=0.0)
    x, n = torch.randn(3, 300, 80), torch.tensor([300, 211, 97])
    outs, grads = [], []
    for blocked_from in (10**9, 0):  # dense, then chunk by chunk
        monkeypatch.setattr(lookahead, "BLOCKED_FROM", blocked_from)
        encoder.zero_grad()
        out = encoder(x, n).features
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append(encoder.layers[0].attn.qkv.weight.grad.clone())
    torch.testing.assert_close(outs[1], outs[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(grads[1], grads[0], atol=1e-4, rtol=1e-4)


def test_lookahead_chunks_wait_for_their_frames_ahead_and_caches_grow_in_place():
    """(6, 1, 2): a 2-frame chunk is emitted once the 2 frames after it have come; the caches
    move past the chunk only, so the next step appends in place (no copy of the cache)."""
    encoder = tiny_conformer(causal=True, att_context=(6, 1, 2))  # 8x subsampling
    state = encoder.init_state(1)
    x = torch.randn(1, 200, 80)
    emitted, storages = [], []
    with torch.no_grad():
        for start in range(0, 200, 16):  # two encoder frames per step
            piece = x[:, start : start + 16]
            out, state = encoder.streaming_forward(piece, torch.tensor([piece.shape[1]]), state)
            emitted.append(int(out.lengths[0]))
            storages.append(state.keys[0].untyped_storage().data_ptr())
        out, state = encoder.streaming_forward(x[:, :0], torch.tensor([0]), state, final=True)
    assert emitted[:3] == [0, 2, 2]  # the first chunk waits for frames 2 and 3
    assert sum(emitted) + int(out.lengths[0]) == 25
    # A copy makes a new buffer; in place, most steps keep the previous step's.
    assert sum(a == b for a, b in zip(storages, storages[1:], strict=False)) >= len(storages) // 2


def test_init_state_context_overrides_the_default():
    encoder = tiny_conformer(causal=True, att_context=(8, 3))
    x = torch.randn(1, 120, 80)
    with torch.no_grad():
        state = encoder.init_state(1, att_context=[2, 1])
        assert state.context == (2, 1)
        got, _ = encoder.streaming_forward(x, torch.tensor([120]), state, final=True)
        encoder.att_context = (2, 1)
        want = encoder(x, torch.tensor([120]))
    torch.testing.assert_close(got.features, want.features, atol=1e-5, rtol=0)


def test_training_samples_one_of_several_contexts():
    contexts = [(4, 1), (0, 3)]
    encoder = tiny_conformer(causal=True, att_contexts=contexts, dropout=0.0)
    assert encoder.att_context == (4, 1)  # inference default: the first
    x, n = torch.randn(1, 96, 80), torch.tensor([96])
    with torch.no_grad():
        by_context = {}
        for c in contexts:
            encoder.att_context = c
            by_context[c] = encoder(x, n).features
        encoder.train()
        drawn = set()
        for seed in range(8):
            torch.manual_seed(seed)
            out = encoder(x, n).features
            match = [c for c, f in by_context.items() if torch.allclose(out, f, atol=1e-6)]
            assert len(match) == 1
            drawn.add(match[0])
            torch.manual_seed(seed)  # seeded: the same draw again
            torch.testing.assert_close(encoder(x, n).features, out)
    assert drawn == set(contexts)


def test_training_with_a_lookahead_context_reaches_every_parameter_and_learns():
    """The block-processing forward of a (left, right, ahead) context trains: every parameter
    gets a gradient (look-ahead tokens included) and the loss on a fixed batch falls."""
    encoder = tiny_conformer(causal=True, att_contexts=[(4, 1, 2)])
    encoder.train()
    x, n = torch.randn(2, 96, 80), torch.tensor([96, 61])
    target = torch.randn(2, encoder.output_lengths(n).max(), encoder.output_dim)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=3e-3)
    losses = []
    for step in range(30):
        out = encoder(x, n)
        valid = out.features.new_ones(out.features.shape[:2])
        valid[1, int(out.lengths[1]) :] = 0
        loss = (((out.features - target) ** 2).mean(-1) * valid).sum() / valid.sum()
        optimizer.zero_grad()
        loss.backward()
        if step == 0:
            params = encoder.named_parameters()
            assert not [k for k, p in params if p.grad is None or not p.grad.any()]
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("name", ["conformer", "squeezeformer"])
def test_att_context_probs_weight_the_draw(name):
    contexts = [None, (4, 1), (4, 3)]
    encoder = suite.create_encoder(
        name, preset="tiny", causal=True, att_contexts=contexts, att_context_probs=[0, 1, 0]
    )
    assert encoder.att_context is None  # inference default: still the first
    torch.manual_seed(0)
    assert {sample_context(contexts, encoder.att_context_probs) for _ in range(50)} == {(4, 1)}
    torch.manual_seed(0)
    counts = Counter(sample_context(contexts, torch.tensor([0.2, 0.7, 0.1])) for _ in range(2000))
    assert 0.65 < counts[(4, 1)] / 2000 < 0.75 and counts[None] > counts[(4, 3)] > 0
    for probs in ([0.5, 0.5], [0.5, 0.7, -0.2], [0.3, 0.3, 0.3]):
        with pytest.raises(ValueError, match="att_context_probs"):
            suite.create_encoder(
                name, preset="tiny", causal=True, att_contexts=contexts, att_context_probs=probs
            )


@pytest.mark.parametrize("name", ["conformer", "squeezeformer"])
def test_a_forward_call_may_name_its_context(name):
    torch.manual_seed(0)
    encoder = suite.create_encoder(
        name, preset="tiny", causal=True, att_contexts=[(4, 1), (0, 3)], dropout=0.0
    ).eval()
    x, n = torch.randn(2, 96, 80), torch.tensor([96, 70])
    with torch.no_grad():
        want = {}
        for context in (None, (0, 3)):
            encoder.att_context = context
            want[context] = encoder(x, n).features
        encoder.att_context = (4, 1)
        assert not torch.allclose(want[None], want[(0, 3)], atol=1e-3)
        encoder.train()  # a named context is not drawn, in training as in evaluation
        for context, features in want.items():
            torch.testing.assert_close(encoder(x, n, att_context=context).features, features)
        torch.testing.assert_close(encoder(x, n, att_context=[0, 3]).features, want[(0, 3)])
    assert encoder.att_context == (4, 1)


ASR = AsrTask()  # in-place distillation is the asr task's loss


def distillation_model(weight: float, contexts: list | None, ctc: float = 1.0) -> TaskModel:
    torch.manual_seed(0)
    tokenizer = CharTokenizer()
    enc = suite.create_encoder(
        "conformer", preset="tiny", causal=True, att_contexts=contexts, dropout=0.0
    )
    head = CtcHead(enc.output_dim, tokenizer.vocab_size)
    with torch.no_grad():
        head.proj.weight.mul_(20)  # confident posteriors, which the contexts change
    config = ModelConfig(context_distillation=weight, loss_weights={"ctc": ctc})
    return check_distillation(TaskModel(Fbank(), enc, {"ctc": head}, tokenizer, config))


def test_context_distillation_pulls_chunked_posteriors_toward_full_context():
    g = torch.Generator().manual_seed(1)
    x, n = torch.randn(4, 200, 80, generator=g), torch.tensor([200, 180, 150, 120])
    batch = Batch(x, n, torch.randint(1, 20, (4, 6), generator=g), torch.tensor([6, 5, 4, 3]))

    def gap(model: TaskModel) -> float:  # KL(full || chunked) of the CTC posteriors
        model.eval()
        with torch.no_grad():
            full = model.encoder(x, n, att_context=None)
            chunked = model.encoder(x, n, att_context=(0, 0))
            return float(model.heads["ctc"].distillation_loss(chunked, full))

    # The term is the KL against the model's own full-context outputs, added to the heads' loss.
    model = distillation_model(0.5, [(0, 0)]).train()
    out = ASR.loss(model, batch)
    assert model.encoder.training  # the teacher's evaluation mode is undone
    start = gap(model)
    assert start > 0.02
    assert float(out["ctc_distill"]) == pytest.approx(start, rel=1e-4)
    want = float(out["ctc_loss"] + 0.5 * out["ctc_distill"])
    assert float(out["loss"].detach()) == pytest.approx(want)
    # Trained on that term alone, the chunked posteriors close most of the gap.
    model = distillation_model(1.0, [(0, 0)], ctc=0.0).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(15):
        optimizer.zero_grad()
        ASR.loss(model, batch)["loss"].backward()
        optimizer.step()
    assert gap(model) < 0.2 * start
    # A step that draws full context has no teacher: the term is zero.
    assert float(ASR.loss(distillation_model(1.0, [None]).train(), batch)["ctc_distill"]) == 0.0


def test_context_distillation_needs_several_contexts_and_a_ctc_head():
    with pytest.raises(UserError, match="att_contexts"):
        distillation_model(1.0, None)
    tokenizer = CharTokenizer()
    enc = suite.create_encoder("conformer", preset="tiny", causal=True, att_contexts=[(4, 1)])
    rnnt = RnntHead(enc.output_dim, tokenizer.vocab_size, pred_dim=32, joint_dim=32)
    with pytest.raises(UserError, match="CTC head"):
        config = ModelConfig(context_distillation=1.0)
        check_distillation(TaskModel(Fbank(), enc, {"rnnt": rnnt}, tokenizer, config))
    recipe = ROOT / "recipes/asr/espeak_conformer_ctc_streaming_aligned_cpu.yaml"
    with pytest.raises(ConfigError, match="context_distillation' must be >= 0"):
        load_recipe(recipe, ["model.context_distillation=-1"])


@pytest.mark.parametrize("name", ["conformer", "squeezeformer"])
def test_streaming_options_keep_checkpoint_keys_and_offline_outputs(name):
    torch.manual_seed(0)
    plain = suite.create_encoder(name, preset="tiny").eval()
    torch.manual_seed(0)
    multi = suite.create_encoder(name, preset="tiny", att_contexts=[None, (4, 1)]).eval()
    assert list(plain.state_dict()) == list(multi.state_dict())
    x, n = torch.randn(2, 64, 80), torch.tensor([64, 40])
    with torch.no_grad():
        torch.testing.assert_close(multi(x, n).features, plain(x, n).features)


def test_conformer_checkpoint_keys_are_unchanged():
    # Packages trained before streaming existed must keep loading: same names, same shapes.
    keys = list(suite.create_encoder("conformer", preset="tiny").state_dict())
    assert keys[:6] == [
        "subsampling.stages.0.weight",
        "subsampling.stages.0.bias",
        "subsampling.stages.1.0.weight",
        "subsampling.stages.1.0.bias",
        "subsampling.stages.1.1.weight",
        "subsampling.stages.1.1.bias",
    ]
    assert "layers.0.attn.norm.weight" in keys and "layers.0.ff1.0.weight" in keys
    assert "layers.0.conv.norm_in.weight" in keys and "layers.1.norm_out.bias" in keys
    assert not any("inv_freq" in k for k in keys)


# --- cached attention ------------------------------------------------------------------------


@pytest.mark.parametrize("context", [None, (4, 1), (-1, 2), (0, 0), (5, 2)])
def test_cached_attention_equals_attention_on_one_range(context):
    torch.manual_seed(0)
    B, H, T, Dh = 3, 2, 11, 8
    q, k, v = (torch.randn(B, H, T, Dh, dtype=torch.float64) for _ in range(3))
    lengths = torch.tensor([11, 6, 1])
    pos = torch.arange(T).expand(B, T)
    valid = pos < lengths[:, None]
    got = cached_attention(q, k, v, pos, pos, valid, valid, context)
    torch.testing.assert_close(got, attention(q, k, v, lengths, context), atol=1e-12, rtol=0)


def test_half_rate_frames_belong_to_the_chunk_of_their_first_full_rate_frame():
    # Chunks of 3 full-rate frames: reduced frame j sits at full-rate frame 2j, so reduced
    # frames 0,1 | 2 | 3,4 | 5 fall in chunks 0 | 1 | 2 | 3 (2j // 3 = 0,0,1,2,2,3).
    pos = torch.arange(6)[None]
    valid = torch.ones(1, 6, dtype=torch.bool)
    mask = cached_attention_mask(pos, pos, valid, valid, (3, 2), stride=2)[0, 0].int()
    want = torch.tensor(
        [
            [1, 1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [0, 0, 1, 1, 1, 0],
            [0, 0, 1, 1, 1, 0],
            [0, 0, 0, 1, 1, 1],
        ]
    )
    assert torch.equal(mask, want)


# --- streaming CTC ---------------------------------------------------------------------------


def test_streaming_ctc_equals_offline_greedy_and_only_grows():
    torch.manual_seed(0)
    head = CtcHead(input_dim=16, vocab_size=6).eval()
    # Long runs of equal frames, so token runs cross chunk boundaries.
    frames = torch.randn(3, 12, 16).repeat_interleave(4, dim=1)  # (B, 48, D)
    lengths = torch.tensor([48, 31, 5])
    with torch.no_grad():
        want = head.decode(EncoderOutput(frames, lengths))
    state = head.init_stream(3)
    g = torch.Generator().manual_seed(0)
    done = torch.zeros(3, dtype=torch.long)
    previous = [[] for _ in range(3)]
    while (done < lengths).any():
        n = torch.minimum(torch.randint(0, 7, (3,), generator=g), lengths - done)
        chunk = torch.zeros(3, int(n.max()), 16)
        for b in range(3):
            chunk[b, : n[b]] = frames[b, done[b] : done[b] + n[b]]
        hyps, state = head.streaming_decode(EncoderOutput(chunk, n), state)
        for b, hyp in enumerate(hyps):
            assert hyp.tokens[: len(previous[b])] == previous[b]  # partials only grow
            previous[b] = hyp.tokens
        done += n
    assert [h.tokens for h in hyps] == [h.tokens for h in want]
    assert any(len(h.tokens) > 2 for h in want)
    for got, exp in zip(hyps, want, strict=True):
        assert got.score == pytest.approx(exp.score, abs=1e-4)


def test_greedy_search_unchanged_for_the_offline_api():
    log_probs = torch.tensor([[[0.0, -9, -9], [-9, 0.0, -9], [-9, 0.0, -9], [-9, -9, 0.0]]])
    assert greedy_search(log_probs, torch.tensor([4]))[0].tokens == [1, 2]


# --- sessions and the batcher ----------------------------------------------------------------


def tiny_model(encoder: str = "conformer", context=(4, 1), head: str = "ctc") -> TaskModel:
    torch.manual_seed(0)
    tokenizer = CharTokenizer()
    enc = suite.create_encoder(encoder, preset="tiny", causal=True, att_context=context)
    if head == "rnnt":
        rnnt = RnntHead(enc.output_dim, tokenizer.vocab_size, pred_dim=32, joint_dim=32)
        with torch.no_grad():
            rnnt.joiner.out.weight.mul_(8)  # confident random decisions: varied text
        return TaskModel(Fbank(), enc, {"rnnt": rnnt}, tokenizer, ModelConfig()).eval()
    head = CtcHead(enc.output_dim, tokenizer.vocab_size)
    model = TaskModel(Fbank(), enc, {"ctc": head}, tokenizer, ModelConfig()).eval()
    with torch.no_grad():
        # A confident random head centred on the mean feature, so that the frame-to-frame
        # changes (not the shared offset) pick the letters: varied text, not one letter.
        audio = torch.from_numpy(tones(1.0, seed=9))[None]
        features = enc(*model.frontend(audio, torch.tensor([audio.shape[1]]))).features
        head.proj.weight.mul_(20)
        head.proj.bias.copy_(-head.proj.weight @ features[0].mean(dim=0))
    return model


def tones(seconds: float, seed: int) -> np.ndarray:
    """Quarter-second tones and silences: features that change, so the text does too."""
    t = np.arange(int(seconds * SR)) / SR
    segment = (t * 4).astype(int)
    freqs = 200 + 300 * ((segment * (7 + seed)) % 11)
    return (0.5 * np.sin(2 * np.pi * freqs * t) * (segment % 3 != seed % 3)).astype(np.float32)


def random_chunks(audio: np.ndarray, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    cuts = np.cumsum(rng.integers(0, 4000, size=len(audio) // 500 + 1))
    return np.split(audio, cuts[cuts < len(audio)])


@pytest.mark.parametrize(
    ("encoder", "head"), [("conformer", "ctc"), ("squeezeformer", "ctc"), ("conformer", "rnnt")]
)
def test_session_final_text_equals_offline_transcription(encoder, head):
    model = tiny_model(encoder, head=head)
    audio = tones(3.0, seed=0)
    offline = Transcriber(model).transcribe(audio, sample_rate=SR)[0]
    assert len(set(offline)) > 3  # the check below has power
    with StreamingSession(model) as session:
        partials = [session.accept(chunk, sample_rate=SR) for chunk in random_chunks(audio, 1)]
        final = session.finish()
    assert final == offline
    for before, after in zip(partials, [*partials[1:], final], strict=True):
        assert after.startswith(before)
    assert partials[len(partials) // 2]  # text arrives before the end


def test_session_with_a_context_other_than_the_encoders():
    model = tiny_model(context=(8, 3))
    audio = tones(2.0, seed=1)
    with StreamingSession(model, att_context=(2, 1)) as session:
        for chunk in random_chunks(audio, 2):
            session.accept(chunk)
        final = session.finish()
    model.encoder.att_context = (2, 1)
    assert final == Transcriber(model).transcribe(audio, sample_rate=SR)[0]


def test_session_inputs_and_errors():
    model = tiny_model()
    audio = tones(1.0, seed=2)
    pcm = (audio * 32767).astype(np.int16)
    with StreamingSession(model) as session:
        session.accept(pcm[:5000, None])  # (S, 1) int16, as sounddevice delivers it
        session.accept(np.zeros(0, np.int16))
        session.accept(torch.from_numpy(pcm[5000:]))
        text = session.finish()
        assert session.finish() == text == session.text
        with pytest.raises(UserError, match="finished"):
            session.accept(pcm)
    assert text == Transcriber(model).transcribe(pcm.astype(np.float32) / 32768, sample_rate=SR)[0]
    with pytest.raises(UserError, match="44.1 kHz"):
        StreamingSession(model).accept(audio, sample_rate=44100)
    offline_model = tiny_model()
    offline_model.encoder.causal = False
    with pytest.raises(UserError, match="causal"):
        StreamingSession(offline_model)


@pytest.mark.parametrize(
    ("encoder", "context"), [("squeezeformer", (5, 2)), ("conformer", (5, 1, 2))]
)
def test_batcher_equals_individual_sessions(encoder, context):
    model = tiny_model(encoder, context=context)
    audios = [tones(2.5, seed=0), tones(1.6, seed=1), tones(2.0, seed=2), tones(1.0, seed=3)]
    chunks = [random_chunks(a, seed) for seed, a in enumerate(audios)]
    alone = []
    for stream_chunks in chunks:
        with StreamingSession(model) as session:
            for chunk in stream_chunks:
                session.accept(chunk)
            alone.append(session.finish())

    batcher = StreamBatcher(model)
    starts = [0, 2, 5, 3]  # streams join at different steps
    ids: dict[int, int] = {}
    texts: dict[int, str] = {}
    dropped = 3  # this one's client leaves halfway; the others must not notice
    tick = 0
    while len(texts) < len(audios) - 1:
        for s, stream_chunks in enumerate(chunks):
            if tick == starts[s]:
                ids[s] = batcher.open()
            if s not in ids or s in texts:
                continue
            k = tick - starts[s]
            if s == dropped and k == len(stream_chunks) // 2:
                batcher.close(ids.pop(s))
            elif k < len(stream_chunks):
                batcher.accept(ids[s], stream_chunks[k])
            elif k == len(stream_chunks):
                batcher.finish(ids[s])
        for stream_id, update in batcher.step().items():
            s = next(s for s, i in ids.items() if i == stream_id)
            if update.final:
                texts[s] = update.text
        tick += 1
    assert len(set(alone[0])) > 3  # varied text: the comparison has power
    assert [texts[s] for s in range(3)] == alone[:3]
    assert alone[0] == Transcriber(model).transcribe(audios[0], sample_rate=SR)[0]


def test_states_concatenate_and_split_per_stream():
    model = tiny_model()
    a, b = model.encoder.init_state(1), model.encoder.init_state(2)
    both = concat_states([a, b])
    assert both.seen.shape == (3,) and both.keys[0].shape[0] == 3
    parts = split_state(both)
    assert len(parts) == 3 and parts[2].conv[1].shape[0] == 1 and parts[0].context == (4, 1)
    d = model.heads["ctc"].init_stream(2)
    assert split_state(concat_states([d, d]))[3].tokens == [[]]
    other = model.encoder.init_state(1, att_context=(2, 1))
    with pytest.raises(ValueError, match="context"):
        concat_states([a, other])


def test_stream_audio_yields_partials_then_the_final_text():
    model = tiny_model()
    audio = tones(1.5, seed=0)
    steps = list(stream_audio(StreamingSession(model), audio, chunk_seconds=0.1, realtime=False))
    assert len(steps) == 16 and steps[-1].final and not steps[-2].final
    assert steps[-1].text == Transcriber(model).transcribe(audio, sample_rate=SR)[0]
    assert all(s.latency >= 0 for s in steps) and steps[-2].seconds == pytest.approx(1.5)


def test_microphone_without_sounddevice_or_device_is_explained():
    with pytest.raises(UserError, match="sounddevice|input device"):
        next(microphone_chunks())


def test_transcriber_stream_uses_the_lowest_latency_trained_context(tmp_path):
    model = tiny_model(context=None)
    model.encoder.att_contexts = [None, (8, 3), (8, 1)]
    session = Transcriber(model).stream()
    audio = tones(1.5, seed=4)
    for chunk in random_chunks(audio, seed=5):
        session.accept(chunk, sample_rate=SR)
    model.encoder.att_context = (8, 1)
    assert session.finish() == Transcriber(model).transcribe(audio, sample_rate=SR)[0]


def test_stream_of_an_offline_model_is_explained():
    model = tiny_model(context=None)
    model.encoder.causal = False
    with pytest.raises(UserError, match="not trained for streaming"):
        Transcriber(model).stream()


def test_stream_cli_prints_partials_and_the_offline_text(tmp_path, capsys):
    import soundfile as sf

    from suite.cli import main
    from suite.model import save_package

    model = tiny_model(context=(4, 1))
    model.config = ModelConfig(
        encoder={"name": "conformer", "preset": "tiny", "causal": True, "att_context": [4, 1]},
        tokenizer={"name": "char"},
    )
    package = save_package(model, tmp_path / "pkg", card="# tiny\n")
    audio = tones(1.0, seed=2)
    sf.write(tmp_path / "a.wav", audio, SR)
    assert main(["stream", str(package), "--wav", str(tmp_path / "a.wav"), "--fast"]) == 0
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert lines[-1].startswith("[final")
    offline = Transcriber(model).transcribe(audio, sample_rate=SR)[0]
    assert lines[-1].endswith(f"] {offline}")
    assert "per-chunk latency p50" in err
