"""Encoder-free patch adapters: raw patches -> one linear projection + positions -> tokens.

After Fuyu-8B (Adept, 2023) and SOLO (Chen et al. 2024, "A Single Transformer for Scalable
Vision-Language Modeling"): there is no encoder stack; each patch's raw values are flattened and
projected straight to the width of whatever reads the tokens (the AED decoder, or the LLM
adapter's language model), which does all the modelling. The same module takes three layouts:

* images ``(B, C, H, W)``: ``p x p`` pixel patches on an ``h x w`` grid (Fuyu, SOLO);
* spectrograms ``(B, T, F)``: ``patch_frames x patch_bins`` patches of log-mel features (AST's
  patches with no encoder behind them; ``patch_bins=None`` takes whole frames, i.e. frame
  stacking), padding-aware for variable-length audio;
* videos ``(B, N, C, H, W)``: ``tubelet x p x p`` tubelets (ViViT's tubelet embedding, fed
  encoder-free as in Video-Panda).

Tokens are time-major (time patches outer, the rest inner) so the valid tokens of a padded
audio clip or video are a prefix: ``lengths`` are ``ceil(frames / patch_frames)`` times the
tokens per time step. Frames past an item's length are zeroed before patching, so an item's
tokens are the same in any batch as alone.

Positions are one table per grid axis (time/height/width), summed: learned (factorized, as
ViViT's factorized embeddings; any grid up to the size built for) or fixed sinusoids with the
width split between the axes (MAE's 2-D sin-cos, extended to 3-D; any length). What differs
from Fuyu: Fuyu has no position embedding of its own (raster order with newline tokens, the
LM's own positions); here each patch carries its grid position, so every head, including the
AED decoder that attends over the tokens without order, knows where it came from.

eP-ALM (Shukor et al. 2023, a frozen LM augmented with perceptual tokens) needs no code of its
own here: an adapter with the ``llm_adapter`` head built with ``freeze_lm=True`` is a frozen
LM read through a trainable perceptual prefix (patch projection -> the head's projector -> LM
embeddings). What differs from eP-ALM: the perceptual side is these raw patches, not a frozen
ViT's [CLS] tokens injected into several LM layers, and the prefix enters at the input only.

Dims legend: B - batch, C/H/W - channels/height/width, N - video frames, T - spectrogram
frames, F - feature bins, g - grid axes (time first), P - values per patch, L - tokens (the
grid's cells, time-major), D - ``output_dim``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from suite.interfaces import Encoder, EncoderOutput
from suite.nn.frames import time_mask
from suite.registry import register_encoder

POSITIONS = ("learned", "sincos")


def _pair(size: int | list[int] | tuple[int, int], what: str) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    if len(size) != 2:
        raise ValueError(f"{what} must be one int or [H, W], got {size!r}")
    return int(size[0]), int(size[1])


def _ceil_div(a: Tensor | int, b: int) -> Tensor | int:
    return -(-a // b)


class ImagePatches(nn.Module):
    """``(B, C, H, W)`` -> ``(B, H/p, W/p, C*p*p)``; every image is whole (full lengths)."""

    def __init__(self, img_size: int | list[int], in_chans: int, patch_size: int) -> None:
        super().__init__()
        H, W = _pair(img_size, "img_size")
        self.in_chans, self.patch = in_chans, patch_size
        self.input_size = (in_chans, H, W)
        self.patch_dim = in_chans * patch_size**2
        self.max_grid = (H // patch_size, W // patch_size)

    def forward(self, x: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
        C, p = self.in_chans, self.patch
        if x.dim() != 4 or x.shape[1] != C:
            raise ValueError(
                f"patch_image takes images (B, {C}, H, W), got {tuple(x.shape)}; for "
                "spectrograms (B, T, F) use patch_audio, for videos (B, N, C, H, W) patch_video"
            )
        B, _, H, W = x.shape
        if H % p or W % p:
            raise ValueError(
                f"patch_image needs H and W divisible by its patch size {p}, got {H}x{W}; "
                "resize in the frontend (input_size) or pick another patch_size"
            )
        x = x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5)  # (B, h, w, C, p, p)
        patches = x.reshape(B, H // p, W // p, self.patch_dim)
        full = torch.full((B,), (H // p) * (W // p), dtype=torch.long, device=x.device)
        return patches, full


class SpectrogramPatches(nn.Module):
    """``(B, T, F)`` -> ``(B, ceil(T/t), F/f, t*f)`` with token lengths ``ceil(n/t) * F/f``."""

    def __init__(self, input_dim: int, patch_frames: int, patch_bins: int | None, max_frames: int):
        super().__init__()
        bins = input_dim if patch_bins is None else patch_bins
        if input_dim % bins:
            raise ValueError(
                f"patch_audio needs input_dim divisible by patch_bins, got {input_dim} bins in "
                f"patches of {bins}; pick patch_bins dividing {input_dim} (or None: whole frames)"
            )
        self.input_dim, self.frames, self.bins = input_dim, patch_frames, bins
        self.patch_dim = patch_frames * bins
        self.max_grid = (_ceil_div(max_frames, patch_frames), input_dim // bins)

    def forward(self, x: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
        Fd, t, f = self.input_dim, self.frames, self.bins
        if x.dim() != 3 or x.shape[-1] != Fd:
            raise ValueError(
                f"patch_audio takes features (B, T, {Fd}), got {tuple(x.shape)}; set "
                f"input_dim to the frontend's bins (images go to patch_image)"
            )
        B, T, _ = x.shape
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.long, device=x.device)
        lengths = lengths.to(x.device).long()
        x = x * time_mask(lengths, x, 1)  # padding frames read as zeros, batched or alone
        x = F.pad(x, (0, 0, 0, -T % t))  # (B, Tp * t, F)
        Tp = x.shape[1] // t
        x = x.reshape(B, Tp, t, Fd // f, f).transpose(2, 3)  # (B, Tp, F/f, t, f)
        return x.reshape(B, Tp, Fd // f, self.patch_dim), _ceil_div(lengths, t) * (Fd // f)


class VideoTubelets(nn.Module):
    """``(B, N, C, H, W)`` -> ``(B, ceil(N/k), H/p, W/p, k*C*p*p)``; ``lengths`` count frames
    (token lengths ``ceil(n/k) * h * w``)."""

    def __init__(
        self, num_frames: int, img_size: int | list[int], in_chans: int, tubelet: int, patch: int
    ) -> None:
        super().__init__()
        H, W = _pair(img_size, "img_size")
        self.in_chans, self.tubelet, self.patch = in_chans, tubelet, patch
        self.input_size = (num_frames, in_chans, H, W)
        self.patch_dim = tubelet * in_chans * patch**2
        self.max_grid = (_ceil_div(num_frames, tubelet), H // patch, W // patch)

    def forward(self, x: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
        C, k, p = self.in_chans, self.tubelet, self.patch
        if x.dim() != 5 or x.shape[2] != C:
            raise ValueError(
                f"patch_video takes videos (B, N, {C}, H, W) (N frames), got {tuple(x.shape)}; "
                "one image is (B, C, H, W) for patch_image, or a video of N=1 frames"
            )
        B, N, _, H, W = x.shape
        if H % p or W % p:
            raise ValueError(
                f"patch_video needs H and W divisible by its patch size {p}, got {H}x{W}"
            )
        if lengths is None:
            lengths = torch.full((B,), N, dtype=torch.long, device=x.device)
        lengths = lengths.to(x.device).long()
        x = x * time_mask(lengths, x, 1)
        x = F.pad(x, (0, 0, 0, 0, 0, 0, 0, -N % k))  # (B, Np * k, C, H, W)
        Np, h, w = x.shape[1] // k, H // p, W // p
        x = x.reshape(B, Np, k, C, h, p, w, p).permute(0, 1, 4, 6, 2, 3, 5, 7)  # (B,Np,h,w,k,C,p,p)
        return x.reshape(B, Np, h, w, self.patch_dim), _ceil_div(lengths, k) * (h * w)


def sincos(positions: Tensor, dim: int) -> Tensor:
    """``(L, dim)`` fixed sinusoids of ``positions (L,)`` (sines, then cosines; ``dim`` even)."""
    freqs = torch.exp(
        torch.arange(dim // 2, device=positions.device) * (-math.log(10000.0) / (dim // 2))
    )
    angles = positions.float()[:, None] * freqs[None, :]  # (L, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class GridPositions(nn.Module):
    """Position vectors for a grid of ``g`` axes: ``grid`` -> ``(*grid, D)``.

    ``learned``: one table per axis (``max_grid[i]`` rows of D), summed; a larger grid is an
    error. ``sincos``: axis ``i`` gets its own slice of the width (even sizes), any size.
    """

    def __init__(self, max_grid: tuple[int, ...], dim: int, kind: str) -> None:
        super().__init__()
        if kind not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, got {kind!r}")
        g = len(max_grid)
        if kind == "sincos" and (dim % 2 or dim < 2 * g):
            raise ValueError(f"sincos positions need an even embed_dim >= {2 * g}, got {dim}")
        self.kind, self.dim, self.max_grid = kind, dim, tuple(max_grid)
        if kind == "learned":
            self.tables = nn.ParameterList(
                nn.Parameter(torch.randn(n, dim) * 0.02) for n in max_grid
            )
        # Width per axis for sincos: the later axes get 2 * (D // 2g) each, the first the rest.
        rest = 2 * (dim // (2 * g))
        self.widths = [dim - rest * (g - 1)] + [rest] * (g - 1)

    def forward(self, grid: tuple[int, ...], device: torch.device) -> Tensor:
        g = len(grid)
        if self.kind == "learned":
            too_big = [f"{n} > {m}" for n, m in zip(grid, self.max_grid, strict=True) if n > m]
            if too_big:
                raise ValueError(
                    f"the input's patch grid {tuple(grid)} exceeds the learned positions' "
                    f"{self.max_grid} ({', '.join(too_big)}); build the adapter for the largest "
                    "input (img_size, max_frames, num_frames) or use positions='sincos'"
                )
            out = torch.zeros(*grid, self.dim, device=device)
            for i, (n, table) in enumerate(zip(grid, self.tables, strict=True)):
                shape = [1] * g + [self.dim]
                shape[i] = n
                out = out + table[:n].view(shape)
            return out
        parts = []
        for i, (n, width) in enumerate(zip(grid, self.widths, strict=True)):
            shape = [1] * g + [width]
            shape[i] = n
            table = sincos(torch.arange(n, device=device), width).view(shape)
            parts.append(table.expand(*grid, width))
        return torch.cat(parts, dim=-1)  # (*grid, D)


class PatchAdapter(Encoder):
    """Patches of a layout -> ``Linear(P, D)`` + grid positions -> tokens ``(B, L, D)``.

    Args:
        patches: the layout (:class:`ImagePatches`, :class:`SpectrogramPatches`,
            :class:`VideoTubelets`): cuts the input into ``(B, *grid, P)`` and counts the valid
            tokens. Its ``input_dim`` (audio) or ``input_size`` (images, videos) is the
            adapter's, as a frontend-facing encoder declares.
        embed_dim: D, the token width.
        positions: ``"learned"`` or ``"sincos"`` (see the module docstring).
    """

    def __init__(self, patches: nn.Module, embed_dim: int, positions: str = "learned") -> None:
        super().__init__()
        self.patches = patches
        for attr in ("input_dim", "input_size"):
            if hasattr(patches, attr):
                setattr(self, attr, getattr(patches, attr))
        self.output_dim = embed_dim
        self.proj = nn.Linear(patches.patch_dim, embed_dim)
        self.positions = GridPositions(patches.max_grid, embed_dim, positions)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> EncoderOutput:
        """``x`` in the layout's shape and ``lengths (B,)`` (frames; ignored for images) ->
        tokens ``(B, L, D)`` and their ``lengths (B,)`` (padding tokens: bias and positions)."""
        patches, token_lengths = self.patches(x, lengths)  # (B, *grid, P), (B,)
        B, *grid, _ = patches.shape
        tokens = self.proj(patches) + self.positions(tuple(grid), x.device).to(x.dtype)
        return EncoderOutput(tokens.reshape(B, -1, self.output_dim), token_lengths)


@register_encoder(
    "patch_image",
    presets={
        # Tests: 16 tokens of 32 dims at 32 px, 7k parameters.
        "tiny": {"embed_dim": 32, "patch_size": 8},
        # 32 px, patch 4: 64 tokens (the ViT "small" preset's grid) of 192 dims, 22k parameters.
        "small": {"embed_dim": 192, "patch_size": 4},
    },
)
def patch_image(
    img_size: int | list[int] = 32,
    in_chans: int = 3,
    patch_size: int = 4,
    embed_dim: int = 192,
    positions: str = "learned",
) -> PatchAdapter:
    """Encoder-free image tokens: ``(B, C, H, W)`` -> ``(H/p * W/p)`` tokens, row by row.

    Args:
        img_size: the largest ``H, W`` the learned positions cover (the frontend's size).
        in_chans: image channels.
        patch_size: pixels per patch side; H and W must be multiples of it.
        embed_dim: D, the token width.
        positions: ``"learned"`` (per-axis tables) or ``"sincos"``.
    """
    return PatchAdapter(ImagePatches(img_size, in_chans, patch_size), embed_dim, positions)


@register_encoder(
    "patch_audio",
    presets={
        # Tests: 16 bins in 2 x (4 frames x 8 bins) patches per 4 frames, 32 dims.
        "tiny": {"input_dim": 16, "patch_frames": 4, "patch_bins": 8, "embed_dim": 32},
        # 80 mel bins, whole frames stacked by 4 (40 ms tokens at a 10 ms hop), 256 dims.
        "small": {"patch_frames": 4, "embed_dim": 256},
    },
)
def patch_audio(
    input_dim: int = 80,
    patch_frames: int = 4,
    patch_bins: int | None = None,
    embed_dim: int = 256,
    positions: str = "sincos",
    max_frames: int = 3000,
) -> PatchAdapter:
    """Encoder-free spectrogram tokens: ``(B, T, F)`` -> ``ceil(T/t) * F/f`` tokens, time-major.

    Args:
        input_dim: F, feature bins per frame (the frontend's).
        patch_frames: t, frames per patch.
        patch_bins: f, bins per patch (dividing F); ``None``: whole frames (one token per
            ``t`` frames).
        embed_dim: D, the token width.
        positions: ``"sincos"`` (any length) or ``"learned"`` (up to ``max_frames``).
        max_frames: the longest input the learned positions cover (30 s at a 10 ms hop).
    """
    layout = SpectrogramPatches(input_dim, patch_frames, patch_bins, max_frames)
    return PatchAdapter(layout, embed_dim, positions)


@register_encoder(
    "patch_video",
    presets={
        # Tests: 4 frames of 32 px, tubelets 2 x 8 x 8: 32 tokens of 32 dims.
        "tiny": {"num_frames": 4, "tubelet": 2, "patch_size": 8, "embed_dim": 32},
        # 8 frames of 32 px, tubelets 2 x 4 x 4: 256 tokens of 192 dims.
        "small": {"num_frames": 8, "tubelet": 2, "patch_size": 4, "embed_dim": 192},
    },
)
def patch_video(
    num_frames: int = 8,
    img_size: int | list[int] = 32,
    in_chans: int = 3,
    tubelet: int = 2,
    patch_size: int = 4,
    embed_dim: int = 192,
    positions: str = "learned",
) -> PatchAdapter:
    """Encoder-free video tokens: ``(B, N, C, H, W)`` -> ``ceil(N/k) * H/p * W/p`` tokens.

    Args:
        num_frames: the most frames the learned positions cover (clips may be shorter:
            ``lengths`` counts each clip's frames).
        img_size: frame ``H, W``.
        in_chans: frame channels.
        tubelet: k, frames per tubelet.
        patch_size: p, pixels per tubelet side.
        embed_dim: D, the token width.
        positions: ``"learned"`` (per-axis tables) or ``"sincos"``.
    """
    layout = VideoTubelets(num_frames, img_size, in_chans, tubelet, patch_size)
    return PatchAdapter(layout, embed_dim, positions)
