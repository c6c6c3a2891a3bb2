"""Masked-autoencoder pretraining of the image encoders in :mod:`suite.encoders.vision`.

* :class:`VitMae`: MAE (He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners").
  Each image draws its own random mask over the patch grid; the encoder runs on the visible
  patch tokens only (plus its class token), and a light transformer decoder (timm ``Block``\\ s,
  fixed 2-D sin-cos positions, so any grid size works) fills in mask tokens and predicts the
  pixels of every patch.
* :class:`ConvNextMae`: the same objective on ConvNeXt with sparse-convolution emulation
  (SparK, Tian et al. 2023; ConvNeXt V2's FCMAE, Woo et al. 2023): the mask lives on the
  encoder's output grid (one unit = ``stride`` x ``stride`` pixels) and masked positions are
  zeroed after every stem, downsampling and block, so masked pixels never reach a visible
  position (:meth:`~suite.encoders.vision.ConvNextEncoder.features`). The decoder is a 1x1
  projection, mask tokens, ConvNeXt blocks and a 1x1 convolution to each unit's pixels.

What differs from the papers: the decoders are small (2 blocks of 128 by default) for 32-128 px
images; the loss is on masked patches only, with the per-patch normalized target (``norm_pix``,
MAE's best setting and what makes small-data reconstructions sharp) optional.

Dims legend: B - batch, C/H/W - image channels/height/width, p - pixels per patch (mask unit)
side, h/w - the patch grid, N - patches (``h * w``), K - visible patches, P - the ViT's prefix
(class) tokens, D - encoder width, E - decoder width.

Both wrappers hold the encoder as ``encoder`` (and its frontend as ``frontend``), so their
weights load into a task model's encoder by the same names (``train.init_include: [encoder]``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from suite.encoders.vision import ConvNextEncoder, VitEncoder
from suite.interfaces import Batch


@dataclass
class MaeOutput:
    """What a masked autoencoder returns.

    Attributes:
        loss: scalar, the mean squared error over masked patches.
        pred: ``(B, N, p*p*C)`` predicted patches, in the target's space.
        target: ``(B, N, p*p*C)`` the input's patches, per-patch normalized with ``norm_pix``.
        mask: ``(B, N)`` bool, True where a patch was hidden from the encoder.
    """

    loss: Tensor
    pred: Tensor
    target: Tensor
    mask: Tensor


def random_mask(
    batch: int,
    num_patches: int,
    ratio: float,
    generator: torch.Generator | None = None,
    device: Any = None,
) -> Tensor:
    """``(B, N)`` bool, True for hidden: each row hides its own random ``round(N * ratio)``
    patches (at least one, and at least one stays visible)."""
    hidden = min(max(int(round(num_patches * ratio)), 1), num_patches - 1)
    noise = torch.rand(batch, num_patches, generator=generator)  # (B, N)
    order = noise.argsort(dim=1)
    mask = torch.zeros(batch, num_patches, dtype=torch.bool)
    mask.scatter_(1, order[:, :hidden], True)
    return mask.to(device)


def patchify(images: Tensor, p: int) -> Tensor:
    """``(B, C, H, W)`` -> ``(B, N, p*p*C)``, patches row by row, pixels ``(p, p, C)``."""
    B, C, H, W = images.shape
    x = images.reshape(B, C, H // p, p, W // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(B, (H // p) * (W // p), p * p * C)


def unpatchify(patches: Tensor, p: int, grid: tuple[int, int], channels: int) -> Tensor:
    """The inverse of :func:`patchify`: ``(B, N, p*p*C)`` -> ``(B, C, h*p, w*p)``."""
    h, w = grid
    B = patches.shape[0]
    x = patches.reshape(B, h, w, p, p, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(B, channels, h * p, w * p)


class MaskedAutoencoder(nn.Module):
    """What both masked autoencoders share: masking, targets, loss and reconstruction.

    Subclasses give :meth:`predict` (visible patches in, every patch's pixels out) and set
    ``patch_size``.

    Args:
        encoder: the image encoder being pretrained.
        frontend: the image frontend whose normalization the inputs carry (for display).
        mask_ratio: fraction of patches hidden from the encoder, in (0, 1).
        norm_pix_loss: predict each patch normalized by its own mean and variance.
    """

    patch_size: int

    def __init__(
        self,
        encoder: nn.Module,
        frontend: nn.Module | None,
        mask_ratio: float,
        norm_pix_loss: bool,
    ) -> None:
        super().__init__()
        if not 0 < mask_ratio < 1:
            raise ValueError(f"mask_ratio must lie in (0, 1), got {mask_ratio}")
        self.encoder = encoder
        self.frontend = frontend
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss

    def grid(self, images: Tensor) -> tuple[int, int]:
        """The patch grid ``(h, w)`` of ``images (B, C, H, W)``."""
        H, W = images.shape[-2:]
        p = self.patch_size
        if H % p or W % p:
            raise ValueError(
                f"masked pretraining needs H and W divisible by the patch size {p}, got {H}x{W}"
            )
        return H // p, W // p

    def predict(self, images: Tensor, mask: Tensor, grid: tuple[int, int]) -> Tensor:
        """``(B, N, p*p*C)`` pixels of every patch, the encoder seeing only ``~mask``."""
        raise NotImplementedError

    def targets(self, images: Tensor) -> Tensor:
        """``(B, N, p*p*C)``: the patches, normalized per patch with ``norm_pix_loss``."""
        target = patchify(images, self.patch_size)
        if self.norm_pix_loss:
            mean = target.mean(-1, keepdim=True)
            var = target.var(-1, keepdim=True)
            target = (target - mean) / (var + 1e-6).sqrt()
        return target

    def forward(
        self,
        images: Tensor,
        mask: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> MaeOutput:
        """Mask (``mask (B, N)``, or a fresh random one drawn from ``generator``), encode the
        visible patches, predict all, and score the hidden ones."""
        h, w = self.grid(images)
        if mask is None:
            mask = random_mask(images.shape[0], h * w, self.mask_ratio, generator, images.device)
        pred = self.predict(images, mask, (h, w))
        target = self.targets(images)
        per_patch = (pred.float() - target).pow(2).mean(-1)  # (B, N)
        loss = (per_patch * mask).sum() / mask.sum()
        return MaeOutput(loss, pred, target, mask)

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        """The training loss of a batch of normalized images ``batch.inputs (B, C, H, W)``."""
        return {"loss": self(batch.inputs).loss}

    def reconstruct(self, images: Tensor, out: MaeOutput) -> Tensor:
        """The predicted image ``(B, C, H, W)`` in the inputs' (normalized) space: a
        ``norm_pix`` prediction is scaled back with each true patch's mean and variance."""
        pred = out.pred.float()
        if self.norm_pix_loss:
            patches = patchify(images, self.patch_size)
            mean = patches.mean(-1, keepdim=True)
            std = (patches.var(-1, keepdim=True) + 1e-6).sqrt()
            pred = pred * std + mean
        return unpatchify(pred, self.patch_size, self.grid(images), images.shape[1])

    def mask_image(self, images: Tensor, mask: Tensor) -> Tensor:
        """``(B, C, H, W)`` with 1 where a pixel's patch is hidden, 0 elsewhere."""
        p, (h, w) = self.patch_size, self.grid(images)
        m = mask.view(-1, 1, h, w).to(images.dtype)
        return m.repeat_interleave(p, -2).repeat_interleave(p, -1).expand_as(images)


class VitMaeDecoder(nn.Module):
    """MAE's decoder: encoder tokens to width E, mask tokens at hidden patches, fixed sin-cos
    positions, transformer blocks, and a linear map to each patch's pixels.

    Args:
        encoder_dim: D.
        patch_dim: pixels per patch, ``p*p*C``.
        num_prefix_tokens: P, the encoder's class tokens (kept through the decoder, then dropped).
        dim: E, a multiple of 4 (the 2-D sin-cos positions).
        depth: transformer blocks.
        num_heads: attention heads.
    """

    def __init__(
        self,
        encoder_dim: int,
        patch_dim: int,
        num_prefix_tokens: int,
        dim: int = 128,
        depth: int = 2,
        num_heads: int = 4,
    ) -> None:
        from timm.models.vision_transformer import Block

        super().__init__()
        if dim % 4:
            raise ValueError(f"decoder_dim must be a multiple of 4 (2-D sin-cos), got {dim}")
        self.num_prefix_tokens = num_prefix_tokens
        self.embed = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.normal_(self.mask_token, std=0.02)
        self.blocks = nn.Sequential(
            *[Block(dim, num_heads, qkv_bias=True, norm_layer=nn.LayerNorm) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(dim)
        self.pred = nn.Linear(dim, patch_dim)

    def forward(self, latent: Tensor, visible: Tensor, grid: tuple[int, int]) -> Tensor:
        """``latent (B, P + K, D)`` of the visible patches at indices ``visible (B, K)`` ->
        ``(B, N, p*p*C)``."""
        from timm.layers import build_sincos2d_pos_embed

        P = self.num_prefix_tokens
        x = self.embed(latent)  # (B, P + K, E)
        B, _, E = x.shape
        N = grid[0] * grid[1]
        index = visible[..., None].expand(-1, -1, E)  # (B, K, E)
        full = self.mask_token.expand(B, N, E).scatter(1, index, x[:, P:])  # (B, N, E)
        pos = build_sincos2d_pos_embed(list(grid), E, device=x.device, dtype=x.dtype)  # (N, E)
        x = torch.cat([x[:, :P], full + pos], dim=1)  # (B, P + N, E)
        return self.pred(self.norm(self.blocks(x)))[:, P:]  # (B, N, p*p*C)


class VitMae(MaskedAutoencoder):
    """MAE on a :class:`~suite.encoders.vision.VitEncoder`; see the module docstring.

    Args:
        encoder: the ViT being pretrained.
        frontend: its image frontend (kept for display and packages).
        mask_ratio: fraction of patches hidden (MAE: 0.75).
        decoder_dim: decoder width E.
        decoder_depth: decoder blocks.
        decoder_heads: decoder attention heads.
        norm_pix_loss: per-patch normalized targets.
    """

    def __init__(
        self,
        encoder: VitEncoder,
        frontend: nn.Module | None = None,
        mask_ratio: float = 0.75,
        decoder_dim: int = 128,
        decoder_depth: int = 2,
        decoder_heads: int = 4,
        norm_pix_loss: bool = True,
    ) -> None:
        super().__init__(encoder, frontend, mask_ratio, norm_pix_loss)
        self.patch_size = encoder.patch_size
        self.decoder = VitMaeDecoder(
            encoder.output_dim,
            self.patch_size**2 * encoder.input_size[0],
            encoder.num_prefix_tokens,
            decoder_dim,
            decoder_depth,
            decoder_heads,
        )

    def predict(self, images: Tensor, mask: Tensor, grid: tuple[int, int]) -> Tensor:
        tokens, _ = self.encoder.embed(images)  # (B, P + N, D)
        P = self.encoder.num_prefix_tokens
        counts = (~mask).sum(1)  # (B,)
        kept = int(counts[0])
        if bool((counts != kept).any()):
            raise ValueError(
                f"every image must keep as many visible patches (they share one encoder batch), "
                f"got {sorted(set(counts.tolist()))}; draw masks with random_mask"
            )
        # Visible patch indices in grid order (every row hides as many patches).
        visible = mask.to(torch.int8).argsort(dim=1, stable=True)[:, :kept]  # (B, K)
        patches = tokens[:, P:].gather(1, visible[..., None].expand(-1, -1, tokens.shape[-1]))
        latent = self.encoder.encode_tokens(torch.cat([tokens[:, :P], patches], dim=1))
        return self.decoder(latent, visible, grid)  # (B, N, p*p*C)


class ConvMaeDecoder(nn.Module):
    """The masked ConvNeXt's decoder: a 1x1 projection to width E, a mask token at hidden
    positions, ConvNeXt blocks, and a 1x1 convolution to each unit's ``p*p*C`` pixels.

    Args:
        encoder_dim: D.
        patch_dim: pixels per mask unit, ``p*p*C``.
        dim: E.
        depth: ConvNeXt blocks.
    """

    def __init__(self, encoder_dim: int, patch_dim: int, dim: int = 128, depth: int = 1) -> None:
        from timm.models.convnext import ConvNeXtBlock

        super().__init__()
        self.proj = nn.Conv2d(encoder_dim, dim, kernel_size=1)
        self.mask_token = nn.Parameter(torch.zeros(1, dim, 1, 1))
        nn.init.normal_(self.mask_token, std=0.02)
        self.blocks = nn.Sequential(*[ConvNeXtBlock(dim) for _ in range(depth)])
        self.pred = nn.Conv2d(dim, patch_dim, kernel_size=1)

    def forward(self, features: Tensor, mask: Tensor) -> Tensor:
        """``features (B, D, h, w)`` (zero where hidden) and ``mask (B, N)`` ->
        ``(B, N, p*p*C)``."""
        B, _, h, w = features.shape
        x = self.proj(features)  # (B, E, h, w)
        x = torch.where(mask.view(B, 1, h, w), self.mask_token.to(x.dtype), x)
        return self.pred(self.blocks(x)).flatten(2).transpose(1, 2)  # (B, N, p*p*C)


class ConvNextMae(MaskedAutoencoder):
    """Masked ConvNeXt pretraining on a :class:`~suite.encoders.vision.ConvNextEncoder`; see
    the module docstring. A mask unit is ``encoder.stride`` pixels square.

    Args:
        encoder: the ConvNeXt being pretrained.
        frontend: its image frontend (kept for display and packages).
        mask_ratio: fraction of units hidden (FCMAE: 0.6; MAE: 0.75).
        decoder_dim: decoder width E.
        decoder_depth: decoder ConvNeXt blocks (FCMAE: 1).
        norm_pix_loss: per-unit normalized targets.
    """

    def __init__(
        self,
        encoder: ConvNextEncoder,
        frontend: nn.Module | None = None,
        mask_ratio: float = 0.6,
        decoder_dim: int = 128,
        decoder_depth: int = 1,
        norm_pix_loss: bool = True,
    ) -> None:
        super().__init__(encoder, frontend, mask_ratio, norm_pix_loss)
        self.patch_size = encoder.stride
        self.decoder = ConvMaeDecoder(
            encoder.output_dim,
            self.patch_size**2 * encoder.input_size[0],
            decoder_dim,
            decoder_depth,
        )

    def predict(self, images: Tensor, mask: Tensor, grid: tuple[int, int]) -> Tensor:
        keep = (~mask).view(-1, 1, *grid).to(images.dtype)  # (B, 1, h, w)
        features = self.encoder.features(images, keep)  # (B, D, h, w), zero where hidden
        return self.decoder(features, mask)


# Which masked autoencoder pretrains which encoder.
MAE_FOR = {VitEncoder: VitMae, ConvNextEncoder: ConvNextMae}


def mae_class(encoder: nn.Module) -> type[MaskedAutoencoder]:
    """The masked-autoencoder class for ``encoder``, with an error naming those there are."""
    for kind, cls in MAE_FOR.items():
        if isinstance(encoder, kind):
            return cls
    raise ValueError(
        f"no masked-autoencoder pretraining for {type(encoder).__name__}; there is one for "
        "the encoders vit and convnext"
    )


def build_mae(
    encoder: nn.Module, frontend: nn.Module | None = None, **options: Any
) -> MaskedAutoencoder:
    """The masked autoencoder of ``encoder`` with ``options`` (e.g. ``mask_ratio``,
    ``decoder_dim``); an option that class does not take is an error listing those it does."""
    cls = mae_class(encoder)
    valid = [n for n in inspect.signature(cls).parameters if n not in ("encoder", "frontend")]
    unknown = [k for k in options if k not in valid]
    if unknown:
        raise ValueError(
            f"{cls.__name__} takes no option {unknown[0]!r}; its options: {', '.join(valid)}"
        )
    return cls(encoder, frontend, **options)
