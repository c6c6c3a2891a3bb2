"""Block processing of look-ahead contexts ``(left, right, ahead)`` over whole sequences.

After Emformer's right context (Shi et al., 2021): chunks of ``c = right + 1`` frames, each also
seeing the ``ahead`` frames after it at every layer. Those frames are computed as copies
("look-ahead tokens") placed after the ``T`` frames, one set per chunk, that see only what their
chunk sees: its ``left // c`` earlier chunks, itself and its own look-ahead tokens. A streaming
step computes a chunk and its look-ahead frames and keeps only the chunk in its caches, which is
the same computation, so a chunk waits for ``c + ahead`` frames in all.

Dims legend: B - batch, H - heads, T - frames, S - tokens (frames and look-ahead copies),
N - chunks, Q - query tokens per chunk, K - key tokens per chunk (or depthwise kernel taps),
Dh - head width.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# A look-ahead input attends chunk by chunk once its tokens outnumber a chunk's keys this many
# times: below, one dense (S, S) mask is the faster; past it, attention time and memory grow
# with S instead of its square.
BLOCKED_FROM = 24


@dataclass
class Lookahead:
    """The tokens of a look-ahead context over ``T`` frames (see the module docstring).

    Attributes:
        source: ``(S,)`` the frame each of the ``S = T + N * ahead`` tokens holds (N chunks).
        positions: ``(S,)`` that frame's position (rotary), equal to ``source`` except past the
            end, where the look-ahead tokens of the last chunk hold no frame.
        mask: ``(B, 1, S, S)`` bool, True where a token may attend to a key token; ``None``
            for a long input, which attends chunk by chunk instead (``blocks``).
        taps: ``(S, K)`` index of each token's K depthwise inputs among the tokens, ``S`` for
            a zero (before the first frame).
        valid: ``(B, S, 1)`` 1.0 on tokens that hold a real frame.
        blocks: ``None``, or for a long input (``S`` over ``BLOCKED_FROM`` times a chunk's
            keys) ``(queries (N, Q), keys (N, K), mask (B, 1, N, Q, K))``: each chunk's query
            tokens and the tokens it may attend to (index ``S``: none).
    """

    source: Tensor
    positions: Tensor
    mask: Tensor | None
    taps: Tensor
    valid: Tensor
    blocks: tuple[Tensor, Tensor, Tensor] | None = None


@functools.lru_cache(maxsize=32)
def _lookahead_tokens(
    T: int, left: int, right: int, ahead: int, kernel: int, device: torch.device, dense: bool
) -> tuple[Tensor, Tensor | None, Tensor]:
    """``(frame (S,), allowed (S, S) or None, taps (S, K))`` of :class:`Lookahead`, before
    padding (``allowed`` only if ``dense``)."""
    size = right + 1
    chunks = -(-T // size)
    main = torch.arange(T)
    owner = torch.arange(chunks).repeat_interleave(ahead)  # each look-ahead token's chunk
    frame = torch.cat([main, (owner + 1) * size + torch.arange(ahead).repeat(chunks)])
    chunk = torch.cat([main // size, owner])
    extra = torch.arange(frame.shape[0]) >= T
    allowed = None
    if dense:
        q, k = chunk[:, None], chunk[None, :]  # straight to bool: no (S, S) of int64
        allowed = ~extra[None, :] & (k <= q) & (k >= q - left // size)
        allowed |= extra[None, :] & (k == q)
    # A token's K depthwise inputs are the K frames ending at its own: a chunk's frames from
    # the frames up to it, a look-ahead token's past its chunk from its chunk's look-ahead tokens.
    tap_frame = frame[:, None] - (kernel - 1) + torch.arange(kernel)  # (S, K)
    end = (chunk[:, None] + 1) * size
    copies = T + chunk[:, None] * ahead + (tap_frame - end)
    from_copies = extra[:, None] & (tap_frame >= end)
    taps = torch.where(from_copies, copies, tap_frame)
    # Before the first frame: zeros; past the last (only tokens past the end, which are padding).
    outside = (tap_frame < 0) | (~from_copies & (tap_frame >= T))
    taps = torch.where(outside, frame.shape[0], taps)
    allowed = None if allowed is None else allowed.to(device)
    return frame.to(device), allowed, taps.to(device)


@functools.lru_cache(maxsize=32)
def _lookahead_blocks(
    T: int, left: int, right: int, ahead: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """``(queries (N, Q), keys (N, K))`` of :class:`Lookahead` ``blocks``: per chunk, its
    frames and look-ahead tokens; the ``left // c`` chunks before it, itself and its look-ahead
    tokens. Index ``S`` (a zero token) fills what lies outside the frames."""
    size = right + 1
    chunks = -(-T // size)
    S = T + chunks * ahead
    start = torch.arange(chunks)[:, None] * size
    copies = T + torch.arange(chunks)[:, None] * ahead + torch.arange(ahead)
    own = start + torch.arange(size)
    history = start - (left // size) * size + torch.arange((left // size) * size + size)
    own = torch.where(own < T, own, S)
    history = torch.where((history >= 0) & (history < T), history, S)
    return torch.cat([own, copies], 1).to(device), torch.cat([history, copies], 1).to(device)


def blocked_attention(q: Tensor, k: Tensor, v: Tensor, tokens: Lookahead) -> Tensor:
    """Attention of ``q, k, v (B, H, S, Dh)`` chunk by chunk over ``tokens.blocks``."""
    queries, keys, mask = tokens.blocks  # type: ignore[misc]
    B, H, S, Dh = q.shape

    def pad(x: Tensor) -> Tensor:
        return F.pad(x, (0, 0, 0, 1))  # the zero token at index S

    out = F.scaled_dot_product_attention(
        pad(q)[:, :, queries], pad(k)[:, :, keys], pad(v)[:, :, keys], attn_mask=mask
    )  # (B, H, N, Q, Dh)
    flat = out.reshape(B, H, -1, Dh)  # chunks' queries in order; index S where none
    return q.new_zeros(B, H, S + 1, Dh).index_copy(2, queries.reshape(-1), flat)[:, :, :S]


def lookahead(lengths: Tensor, T: int, context: tuple[int, int, int], kernel: int) -> Lookahead:
    """The :class:`Lookahead` of ``T`` frames of which the first ``lengths[b]`` are valid."""
    left, right, ahead = context
    size = right + 1
    S = T + -(-T // size) * ahead
    dense = S <= BLOCKED_FROM * ((left // size) * size + size + ahead)
    device = lengths.device
    frame, allowed, taps = _lookahead_tokens(T, left, right, ahead, kernel, device, dense)
    valid = frame[None, :] < lengths[:, None]  # (B, S): the last chunk's tokens past the end
    mask, blocks = None, None
    if allowed is not None:
        mask = ((allowed & valid[:, None, :]) | ~valid[:, :, None])[:, None]  # pad rows: all True
    else:
        queries, keys = _lookahead_blocks(T, left, right, ahead, device)
        padded = F.pad(valid, (0, 1))  # the zero token is no key
        block_mask = padded[:, keys][:, :, None, :] | ~padded[:, queries][:, :, :, None]
        blocks = (queries, keys, block_mask[:, None])  # (B, 1, N, Q, K)
    return Lookahead(
        source=frame.clamp(max=T - 1),
        positions=frame,
        mask=mask,
        taps=taps,
        valid=valid[..., None].float(),
        blocks=blocks,
    )
