"""Contract tests over every registered encoder and head (after timm's ``tests/test_models.py``).

A new family gets all of these by registering itself with a ``tiny`` preset. Inputs are built
from what an encoder declares:

* sequence encoders (audio features) expose ``input_dim`` and take ``(B, T, input_dim)``;
* image encoders expose ``input_size = (C, H, W)`` and take ``(B, C, H, W)`` with full lengths;
* video encoders expose ``input_size = (N, C, H, W)`` and take whole clips ``(B, N, C, H, W)``.

Heads are built as ``create_head(name, input_dim=..., vocab_size=...)`` (a classifier with as
many ``labels`` instead; plus their ``tiny`` preset when they have one) and tested over every
encoder: heads x encoders.

Streaming encoders (subclasses of ``StreamingEncoder``) also stream with ``causal=True`` and a
chunked context: any chunking of a batch of streams of different ages reproduces ``forward``.
"""

from __future__ import annotations

import inspect

import pytest
import torch

import suite
from suite import registry
from suite.interfaces import Batch, EncoderOutput, Hypothesis, StreamingEncoder

ENCODERS = suite.list_encoders()
HEADS = suite.list_heads()
LENGTHS = [96, 71, 41]  # distinct, odd and even (41 stays odd after 1 and 2 halvings: 21, 11)
VOCAB = 8


def tiny_encoder(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return suite.create_encoder(name, preset="tiny", **kwargs)


def example_input(encoder: torch.nn.Module, lengths: list[int]) -> tuple[torch.Tensor, ...]:
    """``(x, lengths)`` for ``encoder``; items are zero beyond their length."""
    g = torch.Generator().manual_seed(1)
    if hasattr(encoder, "input_dim"):
        x = torch.randn(len(lengths), max(lengths), encoder.input_dim, generator=g)
        n = torch.tensor(lengths)
        return x * (torch.arange(max(lengths))[None, :, None] < n[:, None, None]), n
    if hasattr(encoder, "input_size") and len(encoder.input_size) == 4:  # videos: whole clips
        N, C, H, W = encoder.input_size
        return torch.randn(len(lengths), N, C, H, W, generator=g), torch.full((len(lengths),), N)
    if hasattr(encoder, "input_size"):
        C, H, W = encoder.input_size
        return torch.randn(len(lengths), C, H, W, generator=g), torch.full((len(lengths),), H)
    raise AssertionError(
        f"{type(encoder).__name__} declares no input: expose `input_dim` (sequence features "
        f"(B, T, input_dim)) or `input_size = (C, H, W)` (images) so contract tests can feed it"
    )


def is_image(encoder: torch.nn.Module) -> bool:
    return not hasattr(encoder, "input_dim")


@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_output_shapes_and_lengths(name):
    encoder = tiny_encoder(name).eval()
    x, lengths = example_input(encoder, LENGTHS)
    with torch.no_grad():
        out = encoder(x, lengths)
    assert isinstance(out, EncoderOutput)
    B, T, D = out.features.shape
    assert (B, D) == (len(LENGTHS), encoder.output_dim)
    assert out.lengths.shape == (B,) and out.lengths.dtype == torch.int64
    assert int(out.lengths.max()) == T  # the longest item fills the padded length
    if is_image(encoder):
        assert (out.lengths == T).all()
    else:
        assert out.lengths.tolist() == sorted(out.lengths.tolist(), reverse=True)
        assert int(out.lengths.min()) >= 1


@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_no_nan_and_every_parameter_gets_a_gradient(name):
    encoder = tiny_encoder(name).train()
    x, lengths = example_input(encoder, LENGTHS)
    out = encoder(x, lengths)
    assert torch.isfinite(out.features).all()
    valid = torch.arange(out.features.shape[1])[None, :] < out.lengths[:, None]  # (B, T)
    weights = torch.randn(out.features.shape, generator=torch.Generator().manual_seed(2))
    (out.features * weights * valid[..., None]).sum().backward()
    for pname, param in encoder.named_parameters():
        assert param.grad is not None, f"{name}: parameter {pname} got no gradient"
        assert torch.isfinite(param.grad).all(), f"{name}: non-finite gradient in {pname}"


@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_padding_invariance(name):
    encoder = tiny_encoder(name).eval()
    if is_image(encoder):
        pytest.skip("image encoders take full-size inputs; there is no padding")
    x, lengths = example_input(encoder, LENGTHS)
    with torch.no_grad():
        batched = encoder(x, lengths)
        for b, n in enumerate(LENGTHS):
            alone = encoder(x[b : b + 1, :n], lengths[b : b + 1])
            m = int(alone.lengths[0])
            assert int(batched.lengths[b]) == m == alone.features.shape[1]
            torch.testing.assert_close(
                batched.features[b, :m], alone.features[0], atol=1e-4, rtol=0
            )


def takes(name: str, *options: str) -> bool:
    params = inspect.signature(registry.lookup("encoder", name)).parameters
    return all(o in params for o in options)


def prefix_needed(encoder: torch.nn.Module, frames: int) -> int:
    """Fewest input frames from which ``encoder`` emits ``frames`` output frames."""
    n = 1
    while int(encoder.output_lengths(torch.tensor([n]))) < frames:
        n += 1
    return n


CHUNKED = [n for n in ENCODERS if takes(n, "causal", "att_context")]


# Subsampling modes of a causal encoder: causal (frame t sees inputs up to t * factor) or
# symmetric (up to the end of its own window, (t + 1) * factor - 1).
SUBSAMPLING = [None, False]


@pytest.mark.parametrize("causal_subsampling", SUBSAMPLING)
@pytest.mark.parametrize("context", [(4, 1), (-1, 2), (0, 3)])
@pytest.mark.parametrize("name", CHUNKED)
def test_chunked_context_has_no_look_ahead_leak(name, context, causal_subsampling):
    """With causal convs and chunked attention, frame t sees no input past its chunk's edge:
    its chunk's first input frame with causal subsampling, the end of its last window with
    symmetric subsampling."""
    encoder = tiny_encoder(
        name, causal=True, causal_subsampling=causal_subsampling, att_context=context
    ).eval()
    x, lengths = example_input(encoder, [128])
    factor = subsampling_factor(encoder)
    with torch.no_grad():
        base = encoder(x, lengths).features
        chunk = context[1] + 1
        for edge in range(chunk - 1, base.shape[1] - 1, chunk):  # last frame of each chunk
            # inputs from here on are future
            start = prefix_needed(encoder, edge + 1)
            if causal_subsampling is False:
                start = (edge + 1) * factor
            y = x.clone()
            y[:, start:] = torch.randn_like(y[:, start:])
            out = encoder(y, lengths).features
            torch.testing.assert_close(out[:, : edge + 1], base[:, : edge + 1], atol=1e-5, rtol=0)
            # The next chunk does change, so the check above has power.
            assert (out[:, edge + 1] - base[:, edge + 1]).abs().max() > 1e-4


@pytest.mark.parametrize("causal_subsampling", SUBSAMPLING)
@pytest.mark.parametrize("context", [(4, 1, 2), (2, 0, 3)])
def test_lookahead_context_sees_its_frames_ahead_and_no_further(context, causal_subsampling):
    """With ``(left, right, ahead)`` a chunk's frames depend on the ``ahead`` encoder frames
    after the chunk (at every layer) and on nothing later, whatever the stack's depth."""
    encoder = tiny_encoder(
        "conformer", causal=True, causal_subsampling=causal_subsampling, att_context=context
    ).eval()
    x, lengths = example_input(encoder, [128])
    factor = subsampling_factor(encoder)
    chunk, ahead = context[1] + 1, context[2]
    with torch.no_grad():
        base = encoder(x, lengths).features
        plain = encoder(x, lengths, att_context=context[:2]).features
        assert (plain - base).abs().max() > 1e-4  # the look-ahead changes the output
        for edge in range(chunk - 1, base.shape[1] - 1 - ahead, chunk):  # each chunk's last
            seen = edge + 1 + ahead  # encoder frames the chunk may depend on
            start = prefix_needed(encoder, seen)
            if causal_subsampling is False:
                start = seen * factor
            y = x.clone()
            y[:, start:] = torch.randn_like(y[:, start:])
            out = encoder(y, lengths).features
            torch.testing.assert_close(out[:, : edge + 1], base[:, : edge + 1], atol=1e-5, rtol=0)
            # Its last look-ahead frame does reach the chunk's last frame.
            y = x.clone()
            last = prefix_needed(encoder, seen - 1) if causal_subsampling is None else start - 1
            y[:, last:] = torch.randn_like(y[:, last:])
            out = encoder(y, lengths).features
            assert (out[:, edge] - base[:, edge]).abs().max() > 1e-4


def test_lookahead_context_is_refused_where_it_is_not_built():
    """Squeezeformer has no block processing: a look-ahead context is a clear error, as is a
    look-ahead with an unlimited left context or a non-causal Conformer."""
    with pytest.raises(ValueError, match="no look-ahead contexts"):
        tiny_encoder("squeezeformer", causal=True, att_contexts=[None, (4, 1, 2)])
    with pytest.raises(ValueError, match="no look-ahead contexts"):
        tiny_encoder("squeezeformer", causal=True).init_state(1, att_context=(4, 1, 2))
    with pytest.raises(ValueError, match="ahead"):
        tiny_encoder("conformer", causal=True, att_context=(-1, 1, 2))
    encoder = tiny_encoder("conformer", causal=False)
    x, lengths = example_input(encoder, [40])
    with pytest.raises(ValueError, match="causal=True"):
        encoder(x, lengths, att_context=(4, 1, 2))
    # The chunk masks over one sequence take (left, right) only (a zero look-ahead is that).
    from suite.kernels.attention import attention_mask

    with pytest.raises(ValueError, match="a chunk mask takes no look-ahead contexts"):
        attention_mask(torch.tensor([8]), 8, (4, 1, 2))
    assert torch.equal(
        attention_mask(torch.tensor([8]), 8, (4, 1, 0)),
        attention_mask(torch.tensor([8]), 8, (4, 1)),
    )


def tiny_head(name: str, input_dim: int) -> torch.nn.Module:
    """A head over ``VOCAB`` outputs: tokens, or for a classifier (``labels``) classes."""
    preset = "tiny" if "tiny" in registry.presets("head", name) else None
    torch.manual_seed(0)
    if "labels" in inspect.signature(registry.lookup("head", name)).parameters:
        labels = [f"class{k}" for k in range(VOCAB)]
        return suite.create_head(name, preset=preset, input_dim=input_dim, labels=labels)
    return suite.create_head(name, preset=preset, input_dim=input_dim, vocab_size=VOCAB)


def fixed_batch(encoder: torch.nn.Module) -> Batch:
    x, lengths = example_input(encoder, [64, 48, 40])
    target_lengths = torch.tensor([3, 2, 3])
    targets = torch.tensor([[1, 2, 3], [4, 5, 0], [6, 7, 6]])
    return Batch(x, lengths, targets, target_lengths)


@pytest.mark.parametrize("encoder_name", ENCODERS)
@pytest.mark.parametrize("name", HEADS)
def test_head_loss_finite_falls_and_reaches_every_parameter(name, encoder_name):
    encoder = tiny_encoder(encoder_name)
    head = tiny_head(name, encoder.output_dim)
    batch = fixed_batch(encoder)
    params = [*encoder.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=3e-3)

    def eval_loss() -> float:
        encoder.eval(), head.eval()
        with torch.no_grad():
            return float(head.loss(encoder(batch.inputs, batch.lengths), batch)["loss"])

    before = eval_loss()
    encoder.train(), head.train()
    for step in range(20):
        losses = head.loss(encoder(batch.inputs, batch.lengths), batch)
        loss = losses["loss"]
        assert loss.dim() == 0 and torch.isfinite(loss), f"{name}: loss {loss} at step {step}"
        opt.zero_grad()
        loss.backward()
        if step == 0:
            for pname, param in head.named_parameters():
                assert param.grad is not None, f"{name}: parameter {pname} got no gradient"
                assert torch.isfinite(param.grad).all(), f"{name}: non-finite grad in {pname}"
        opt.step()
    after = eval_loss()
    assert after < 0.8 * before, f"{name}: loss {before:.3f} -> {after:.3f} after 20 steps"


@pytest.mark.parametrize("encoder_name", ENCODERS)
@pytest.mark.parametrize("name", HEADS)
def test_head_decode_returns_one_hypothesis_per_item(name, encoder_name):
    encoder = tiny_encoder(encoder_name).eval()
    head = tiny_head(name, encoder.output_dim).eval()
    batch = fixed_batch(encoder)
    with torch.no_grad():
        hyps = head.decode(encoder(batch.inputs, batch.lengths))
    assert len(hyps) == len(batch.lengths)
    for hyp in hyps:
        assert isinstance(hyp, Hypothesis)
        assert all(isinstance(t, int) and 0 <= t < VOCAB for t in hyp.tokens)


@pytest.mark.parametrize("encoder_name", ENCODERS)
@pytest.mark.parametrize("name", HEADS)
def test_head_padding_invariance(name, encoder_name):
    """Each item's hypothesis is the same alone as in the batch, and neither the hypotheses nor
    the loss change with what the padding frames hold or how many there are."""
    encoder = tiny_encoder(encoder_name).eval()
    head = tiny_head(name, encoder.output_dim).eval()
    batch = fixed_batch(encoder)
    with torch.no_grad():
        enc = encoder(batch.inputs, batch.lengths)
        B, T, D = enc.features.shape
        valid = torch.arange(T + 3)[None, :, None] < enc.lengths[:, None, None]
        noise = torch.randn(B, T + 3, D, generator=torch.Generator().manual_seed(4))
        padded = torch.where(valid, torch.nn.functional.pad(enc.features, (0, 0, 0, 3)), noise)
        noisy = EncoderOutput(padded, enc.lengths)
        hyps = head.decode(enc)
        assert [h.tokens for h in head.decode(noisy)] == [h.tokens for h in hyps]
        torch.testing.assert_close(head.loss(noisy, batch)["loss"], head.loss(enc, batch)["loss"])
        for b in range(B):
            n = int(enc.lengths[b])
            hyp = head.decode(EncoderOutput(enc.features[b : b + 1, :n], enc.lengths[b : b + 1]))
            assert hyp[0].tokens == hyps[b].tokens, f"{name} on {encoder_name}: item {b}"
            assert abs(hyp[0].score - hyps[b].score) <= 1e-4


# --- Streaming encoders: concatenated streaming_forward outputs equal forward -------------------


def is_streaming(name: str) -> bool:
    fn = registry.lookup("encoder", name)
    return inspect.isclass(fn) and issubclass(fn, StreamingEncoder)


STREAMING = [n for n in ENCODERS if is_streaming(n)]
# Chunks of 2, 4, 3 and 1 frames (odd ones too); left context a multiple of the chunk, not a
# multiple, and none at all.
STREAM_CONTEXTS = [(4, 1), (7, 3), (0, 2), (2, 0)]
# (left, right, ahead): every chunk also sees the next `ahead` frames at every layer (block
# processing, Conformer only): look-ahead shorter than, longer than and as long as a chunk.
LOOKAHEAD_CONTEXTS = [(4, 1, 1), (6, 2, 5), (3, 0, 1)]
STREAM_CASES = [(n, c) for n in STREAMING for c in STREAM_CONTEXTS] + [
    ("conformer", c) for c in LOOKAHEAD_CONTEXTS
]


def drive_streams(step, inputs, starts, sizes, ends_late):
    """Feed ``inputs`` (per stream ``(S_b, ...)``) through ``step`` as one batch of streams.

    Stream ``b`` joins at step ``starts[b]`` (it gets empty chunks before), then receives
    ``sizes(b)`` items per step. Its last data carries ``final=True``, or, if ``ends_late[b]``,
    a later empty step does. ``step(chunk, lengths, final) -> (out (B, T, D), out_lengths)``.

    Returns:
        Per stream, its outputs over all steps concatenated along time.
    """
    B = len(inputs)
    pos, done, outs = [0] * B, [False] * B, [[] for _ in range(B)]
    t = 0
    while not all(done):
        n, final = [0] * B, [False] * B
        for b in range(B):
            if done[b] or t < starts[b]:
                continue
            n[b] = min(sizes(b), len(inputs[b]) - pos[b])
            at_end = pos[b] + n[b] == len(inputs[b])
            final[b] = at_end and (not ends_late[b] or n[b] == 0)
        chunk = inputs[0].new_zeros(B, max(n), *inputs[0].shape[1:])
        for b in range(B):
            chunk[b, : n[b]] = inputs[b][pos[b] : pos[b] + n[b]]
        out, out_lengths = step(chunk, torch.tensor(n), torch.tensor(final))
        for b in range(B):
            outs[b].append(out[b, : int(out_lengths[b])])
            pos[b] += n[b]
            done[b] = done[b] or final[b]
        t += 1
    return [torch.cat(o) for o in outs]


def subsampling_factor(encoder: torch.nn.Module) -> int:
    return prefix_needed(encoder, 2) - 1


@pytest.mark.parametrize("causal_subsampling", SUBSAMPLING)
@pytest.mark.parametrize(("name", "context"), STREAM_CASES)
def test_streaming_forward_equals_forward(name, context, causal_subsampling):
    """Random chunk sizes (multiples of the subsampling factor and not), streams of different
    lengths (odd and even) joining at different steps, some ending on an empty final step."""
    encoder = tiny_encoder(
        name, causal=True, causal_subsampling=causal_subsampling, att_context=context
    ).eval()
    lengths = [150, 97, 203, 40]
    x, n = example_input(encoder, lengths)
    factor = subsampling_factor(encoder)
    g = torch.Generator().manual_seed(sum(context))

    def sizes(b: int) -> int:
        if torch.rand((), generator=g) < 0.5:
            return factor * int(torch.randint(1, 5, (), generator=g))
        return int(torch.randint(0, 3 * factor, (), generator=g))

    state = encoder.init_state(len(lengths))

    def step(chunk, chunk_lengths, final):
        nonlocal state
        out, state = encoder.streaming_forward(chunk, chunk_lengths, state, final=final)
        assert out.features.shape[:2] == (len(lengths), int(out.lengths.max()))
        return out.features, out.lengths

    with torch.no_grad():
        want = encoder(x, n)
        got = drive_streams(
            step, [x[b, :m] for b, m in enumerate(lengths)], [0, 3, 1, 6], sizes, [0, 1, 0, 1]
        )
    for b in range(len(lengths)):
        expected = want.features[b, : int(want.lengths[b])]
        assert got[b].shape == expected.shape, f"{name}: stream {b} emitted {got[b].shape[0]}"
        assert (got[b] - expected).abs().max() <= 1e-4, f"{name}, stream {b}, {context}"


@pytest.mark.parametrize("causal_subsampling", SUBSAMPLING)
@pytest.mark.parametrize(
    ("name", "context"), [(n, (4, 1)) for n in STREAMING] + [("conformer", (4, 1, 2))]
)
def test_streaming_with_chunked_fbank_equals_offline(name, context, causal_subsampling):
    """Audio chunks of any size -> Fbank.streaming_forward -> encoder.streaming_forward equals
    Fbank.forward -> encoder.forward."""
    frontend = suite.create_frontend("fbank")
    encoder = tiny_encoder(
        name,
        causal=True,
        causal_subsampling=causal_subsampling,
        att_context=context,
        input_dim=frontend.input_dim,
    )
    encoder.eval()
    g = torch.Generator().manual_seed(3)
    lengths = [16000, 9100, 12345]
    audio = [torch.randn(m, generator=g) * torch.linspace(0.1, 1.0, m).sin().abs() for m in lengths]
    fb_state, enc_state = frontend.init_state(len(lengths)), encoder.init_state(len(lengths))

    def step(chunk, chunk_lengths, final):
        nonlocal fb_state, enc_state
        (feats, feat_lengths), fb_state = frontend.streaming_forward(chunk, chunk_lengths, fb_state)
        out, enc_state = encoder.streaming_forward(feats, feat_lengths, enc_state, final=final)
        return out.features, out.lengths

    def sizes(b: int) -> int:
        return int(torch.randint(0, 3000, (), generator=g))

    with torch.no_grad():
        padded = torch.nn.utils.rnn.pad_sequence(audio, batch_first=True)
        want = encoder(*frontend(padded, torch.tensor(lengths)))
        got = drive_streams(step, audio, [0, 2, 5], sizes, [1, 0, 0])
    for b in range(len(lengths)):
        expected = want.features[b, : int(want.lengths[b])]
        assert got[b].shape == expected.shape
        assert (got[b] - expected).abs().max() <= 1e-4, f"{name}, stream {b}"


@pytest.mark.parametrize(
    ("name", "context"),
    [(n, STREAM_CONTEXTS[0]) for n in STREAMING] + [("conformer", LOOKAHEAD_CONTEXTS[0])],
)
def test_stepping_twice_from_one_state_leaves_the_first_step_intact(name, context):
    """Caches grow in place inside a buffer (``suite.nn.frames.append``); a second step from the
    same state (a branch) must not write over the frames the first step's state holds."""
    encoder = tiny_encoder(name, causal=True, att_context=context).eval()
    x, _ = example_input(encoder, [128, 128])
    main, other = x[0].split(16), x[1].split(16)  # (16, F) pieces
    one = torch.tensor([16])

    def run(pieces, state):
        outs = []
        for piece in pieces:
            out, state = encoder.streaming_forward(piece[None], one, state)
            outs.append(out.features[0, : int(out.lengths[0])])
        return torch.cat(outs), state

    with torch.inference_mode():
        want, _ = run(main, encoder.init_state(1))
        branch_want, _ = run([main[0], *other[1:4]], encoder.init_state(1))
        first, s1 = run(main[:1], encoder.init_state(1))
        second, s2 = run(main[1:2], s1)
        branch, _ = run(other[1:4], s1)  # from s1 again, after s2 was made from it
        rest, _ = run(main[2:], s2)
    torch.testing.assert_close(torch.cat([first, second, rest]), want, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.cat([first, branch]), branch_want, atol=1e-5, rtol=0)
