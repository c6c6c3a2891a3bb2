"""Image encoders built with ``timm.create_model``: ViT (Dosovitskiy et al. 2021) and ConvNeXt
(Liu et al. 2022), as token encoders behind the :class:`~suite.interfaces.Encoder` contract.

Dims legend: B - batch, C/H/W - image channels/height/width, h/w - the token grid (H and W
over the patch size or the total stride), T - tokens (``h * w``, plus the class token when it
is kept), D - ``output_dim``.

The wrappers add nothing to timm's computation: ``forward`` is the timm model's
``forward_features`` with the ConvNeXt map flattened to tokens (or the ViT's prefix tokens
dropped), so timm users' names, presets and feature extraction carry over. Any timm model name
of the family can be given (``model``), and the size options left at ``None`` keep that
model's own; the presets here fill in small models for 32-128 px inputs. Both take variable
input sizes: ViT through ``dynamic_img_size`` (position embeddings resampled to the grid),
ConvNeXt natively (sizes should be multiples of ``stride``).

The masked-autoencoder wrappers (``suite.encoders.mae``) use the two hooks beside ``forward``:
:meth:`VitEncoder.embed` / :meth:`VitEncoder.encode_tokens` (so masking can drop tokens
between them) and :meth:`ConvNextEncoder.features` with a ``keep`` map (sparse-convolution
emulation).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from suite.interfaces import Encoder, EncoderOutput
from suite.registry import register_encoder


def _pair(size: int | list[int] | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    if len(size) != 2:
        raise ValueError(f"img_size must be one int or [H, W], got {size!r}")
    return int(size[0]), int(size[1])


def _overrides(**options: Any) -> dict[str, Any]:
    """The options that were set: ``None`` keeps the timm model's own value."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in options.items() if v is not None}


def _check_images(x: Tensor, in_chans: int, who: str) -> None:
    if x.dim() != 4 or x.shape[1] != in_chans:
        raise ValueError(
            f"{who} takes images (B, {in_chans}, H, W), got {tuple(x.shape)}; image encoders "
            f"read what an image frontend (`image`) gives, not sequence features (B, T, F)"
        )


def _full_lengths(x: Tensor, num_tokens: int) -> Tensor:
    return torch.full((x.shape[0],), num_tokens, dtype=torch.long, device=x.device)


@register_encoder(
    "vit",
    presets={
        # Tests and smoke runs: 64 tokens of 64 dims at 32 px, 0.1M parameters.
        "tiny": {"embed_dim": 64, "depth": 2, "num_heads": 2, "patch_size": 4},
        # 32 px (CIFAR-10, Fashion-MNIST resized), patch 4: 64 tokens, 3.6M parameters
        # (ViT-Tiny's width, 8 of its 12 blocks).
        "small": {"embed_dim": 192, "depth": 8, "num_heads": 3, "patch_size": 4},
        # 64-128 px, patch 8: 64-256 tokens, 14M parameters (ViT-S width, 8 blocks).
        "medium": {
            "embed_dim": 384,
            "depth": 8,
            "num_heads": 6,
            "patch_size": 8,
            "img_size": 64,
        },
    },
)
class VitEncoder(Encoder):
    """A timm Vision Transformer as a token encoder: images ``(B, C, H, W)`` -> patch tokens
    ``(B, T, D)`` after the final norm.

    Args:
        model: the timm model name whose defaults fill the options left at ``None``.
        img_size: the size the position embeddings are made for (other sizes are resampled).
        patch_size: pixels per patch side; H and W must be multiples of it.
        in_chans: image channels.
        embed_dim: token width D (``None``: the timm model's).
        depth: transformer blocks (``None``: the timm model's).
        num_heads: attention heads (``None``: the timm model's).
        mlp_ratio: MLP hidden width over D.
        class_token: whether the model has a class token (it takes part in attention).
        keep_class_token: also return the class token, first (``T = 1 + h * w``); otherwise
            only the patch tokens (``T = h * w``).
        drop_path_rate: stochastic depth.
    """

    def __init__(
        self,
        model: str = "vit_tiny_patch16_224",
        img_size: int | list[int] = 32,
        patch_size: int | None = 4,
        in_chans: int = 3,
        embed_dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        mlp_ratio: float | None = None,
        class_token: bool = True,
        keep_class_token: bool = False,
        drop_path_rate: float = 0.0,
    ) -> None:
        import timm  # here, not at import: registering the encoders stays cheap

        super().__init__()
        if keep_class_token and not class_token:
            raise ValueError("keep_class_token=True needs class_token=True")
        H, W = _pair(img_size)
        self.model = timm.create_model(
            model,
            pretrained=False,
            num_classes=0,
            global_pool="",  # tokens out, no pooling (and no unused pooling parameters)
            img_size=(H, W),
            in_chans=in_chans,
            class_token=class_token,
            dynamic_img_size=True,
            drop_path_rate=drop_path_rate,
            **_overrides(
                patch_size=patch_size,
                embed_dim=embed_dim,
                depth=depth,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
            ),
        )
        self.input_size = (in_chans, H, W)
        self.output_dim = int(self.model.embed_dim)
        self.patch_size = int(self.model.patch_embed.patch_size[0])
        self.num_prefix_tokens = int(self.model.num_prefix_tokens)
        self.keep_class_token = keep_class_token

    @property
    def layers(self) -> nn.ModuleList:
        """The transformer blocks: the units FSDP shards one by one (``suite.train``)."""
        return nn.ModuleList(self.model.blocks)

    def _check(self, x: Tensor) -> None:
        _check_images(x, self.input_size[0], "the ViT encoder")
        H, W = x.shape[-2:]
        if H % self.patch_size or W % self.patch_size:
            raise ValueError(
                f"the ViT encoder needs H and W divisible by its patch size {self.patch_size}, "
                f"got {H}x{W}; resize in the frontend (input_size) or pick another patch_size"
            )

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> EncoderOutput:
        """``x (B, C, H, W)`` -> tokens ``(B, T, D)`` and full ``lengths (B,)``; ``lengths``
        in is ignored (every image is whole)."""
        self._check(x)
        tokens = self.model.forward_features(x)  # (B, P + h*w, D)
        if not self.keep_class_token:
            tokens = tokens[:, self.num_prefix_tokens :]  # (B, h*w, D)
        return EncoderOutput(tokens, _full_lengths(x, tokens.shape[1]))

    def embed(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Patch embedding with positions: ``(B, C, H, W)`` -> ``(B, P + h*w, D)`` (the P
        prefix tokens first) and the grid ``(h, w)``."""
        self._check(x)
        patches = self.model.patch_embed(x)  # (B, h, w, D): dynamic_img_size keeps the grid
        grid = (patches.shape[1], patches.shape[2])
        # timm's own position step (resampling to the grid, class token): not repeated here.
        tokens = self.model._pos_embed(patches)  # (B, P + h*w, D)
        return self.model.patch_drop(tokens), grid

    def encode_tokens(self, tokens: Tensor) -> Tensor:
        """The transformer blocks and final norm over embedded tokens ``(B, P + n, D)`` (all
        of them, or a subset of the patch tokens after the P prefix tokens)."""
        return self.model.norm(self.model.blocks(self.model.norm_pre(tokens)))


@register_encoder(
    "convnext",
    presets={
        # Tests and smoke runs: stride 8, 16 tokens of 32 dims at 32 px, 20k parameters.
        "tiny": {"depths": [1, 1, 1, 1], "dims": [8, 16, 16, 32], "patch_size": 1},
        # ConvNeXt-Atto's widths, stride 8 (patch 1): 16 tokens at 32 px, 64 at 64 px; 3.4M.
        "atto": {"depths": [2, 2, 6, 2], "dims": [40, 80, 160, 320], "patch_size": 1},
        # ConvNeXt-Femto's widths, stride 32 (patch 4) for 64-128 px: 4-16 tokens; 4.8M.
        "femto": {
            "depths": [2, 2, 6, 2],
            "dims": [48, 96, 192, 384],
            "patch_size": 4,
            "img_size": 128,
        },
    },
)
class ConvNextEncoder(Encoder):
    """A timm ConvNeXt as a token encoder: images ``(B, C, H, W)`` -> the last stage's map,
    normalized and flattened row by row to ``(B, h*w, D)``.

    timm's ConvNeXt has four stages; the stem's ``patch_size`` sets the total stride: 1 gives
    8, 4 gives 32 (a stem of 2 also downsamples in the first stage: 32).

    Args:
        model: the timm model name whose defaults fill the options left at ``None``.
        img_size: the size the encoder is built for (``input_size``; any size runs).
        in_chans: image channels.
        depths: blocks per stage (``None``: the timm model's).
        dims: widths per stage; the last is ``output_dim`` (``None``: the timm model's).
        patch_size: the stem's patch (``None``: the timm model's, 4).
        drop_path_rate: stochastic depth.
    """

    def __init__(
        self,
        model: str = "convnext_atto",
        img_size: int | list[int] = 32,
        in_chans: int = 3,
        depths: list[int] | None = None,
        dims: list[int] | None = None,
        patch_size: int | None = None,
        drop_path_rate: float = 0.0,
    ) -> None:
        import timm

        super().__init__()
        H, W = _pair(img_size)
        self.model = timm.create_model(
            model,
            pretrained=False,
            num_classes=0,
            in_chans=in_chans,
            # The norm before pooling, not after it: forward_features ends normalized and the
            # (pool, fc) head holds no parameters the tokens do not use.
            head_norm_first=True,
            drop_path_rate=drop_path_rate,
            **_overrides(depths=depths, dims=dims, patch_size=patch_size),
        )
        self.input_size = (in_chans, H, W)
        self.output_dim = int(self.model.num_features)
        self.stride = int(self.model.feature_info[-1]["reduction"])

    @property
    def layers(self) -> nn.ModuleList:
        """Every stage's blocks: the units FSDP shards one by one (``suite.train``)."""
        return nn.ModuleList([block for stage in self.model.stages for block in stage.blocks])

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> EncoderOutput:
        """``x (B, C, H, W)`` -> tokens ``(B, h*w, D)`` and full ``lengths (B,)``.

        ``lengths`` in is ignored (every image is whole)."""
        _check_images(x, self.input_size[0], "the ConvNeXt encoder")
        tokens = self.model.forward_features(x).flatten(2).transpose(1, 2)  # (B, h*w, D)
        return EncoderOutput(tokens, _full_lengths(x, tokens.shape[1]))

    def features(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        """The normalized last map ``(B, D, h, w)``.

        With ``keep (B, 1, h, w)`` (1 visible, 0 masked, on the output grid), every stage works
        as a sparse convolution would (SparK, Tian et al. 2023; ConvNeXt V2's FCMAE): masked
        positions are zeroed after the stem, each downsampling and each block, so masked pixels
        reach no visible output and masked positions hold nothing for later layers to read.
        Needs H and W divisible by :attr:`stride`.
        """
        _check_images(x, self.input_size[0], "the ConvNeXt encoder")
        if keep is None:
            return self.model.forward_features(x)
        H, W = x.shape[-2:]
        if H % self.stride or W % self.stride:
            raise ValueError(
                f"masked ConvNeXt needs H and W divisible by its stride {self.stride}, got "
                f"{H}x{W}, so that every mask unit is whole at every stage"
            )

        def masked(t: Tensor) -> Tensor:  # keep upsampled to t's grid (nearest)
            scale = t.shape[-1] // keep.shape[-1]
            return t * keep.repeat_interleave(scale, -2).repeat_interleave(scale, -1)

        t = masked(self.model.stem(x))
        for stage in self.model.stages:
            t = masked(stage.downsample(t))
            for block in stage.blocks:
                t = masked(block(t))
        return masked(self.model.norm_pre(t))
