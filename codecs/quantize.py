"""Vector quantizers for neural audio codecs: residual VQ (SoundStream, EnCodec; the
group-residual VQ of HiFi-Codec built on it is in ``group_quantize.py``), with EMA codebooks,
k-means initialization, dead-code restart, optional factorized low-dimensional l2-normalized
codes (DAC), and per-sample structured quantizer dropout (one model for every bitrate).

Dims legend: B - batch, T - code frames, D - latent width, d - code width (``codebook_dim``),
K - entries per codebook, Q - quantizer stages, G - groups.

What differs from the papers:

- The residual passed to stage ``i + 1`` is ``r_i - out_i`` with the *hard* codeword (no
  straight-through inside the chain), so stage ``i + 1``'s commitment loss reaches the encoder
  through every earlier stage. With EnCodec's ``r - (r + sg(q - r))`` the residual has no
  gradient and later stages never pull the encoder toward their codewords.
- The decoder sees ``sum_i out_i + (x - sg(x))``: the codewords' value, the encoder's gradient
  straight through once (not once per stage), and each stage's output projection trained by the
  reconstruction loss.
- Codebooks are EMA-updated (EnCodec) by default, also in the factorized l2-normalized space
  (entries normalized when looked up), or learned by gradient as DAC's (``update="gradient"``:
  a codebook loss, the search by direction, values unnormalized, no data statistics). The
  statistics below hold only for EMA codebooks: training standardizes by the batch's, and
  evaluation by running ones, which with ``whiten`` coded held-out speech with a few entries
  (``recipes/codec/README.md``); gradient codebooks code alike in both modes.
- Each codebook lives in standardized coordinates: its input minus its per-channel mean,
  divided by its RMS (the affine reparameterization of Huh et al., "Straightening Out the
  Straight-Through Estimator", 2023, with statistics instead of learned parameters): in training
  the batch's own (BatchNorm's rule: a running average lags an encoder that keeps drifting by
  its whole memory), in evaluation running averages of them. A freshly
  initialized SEANet's latent is a near-constant offset with a spread of about 0.01, and Adam
  moves every weight by about ``lr`` per step in the gradient's sign, so the whole cloud drifts
  by more than its own spread within a few steps: a codebook fixed in latent coordinates is
  left behind and one entry (the cloud's nearest) takes every frame. Standardized, the codebook
  moves with the cloud, and the commitment loss is measured in units of the cloud's spread, so
  the encoder cannot make it vanish by shrinking the latent.
- ``whiten`` standardizes by the inverse square root of the covariance (ZCA) instead of one
  RMS, so every direction of the input has unit variance. A fresh encoder's latent piles onto
  one direction (80% of its variance, 97% six steps later); by one RMS the other directions
  shrink toward a point and a few entries take every frame, whitened they stay spread.
- Full-width EMA codes collapse on such a latent even when it holds still: an entry that
  averages many inputs lies nearer the cloud's centre, so nearer to every new input than the
  entries k-means put on single inputs, and the EMA pulls what it wins further in (64-d codes:
  ~600 entries in use, then ~30 at the next batch). 8-dimensional l2-normalized codes (DAC's
  ``codebook_dim`` and ``l2_normalize``) have no centre to win from; with ``whiten`` they keep
  hundreds of 1024 entries in use (``recipes/codec/README.md``).
- K-means can wait for a warm-up (``init_after`` training steps of :class:`ResidualVQ`), during
  which the latent passes unquantized and is pooled; the codebooks then start, stage by stage,
  from the trained encoder's outputs instead of a random encoder's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class QuantizerOutput:
    """What a quantizer's forward returns.

    Attributes:
        quantized: ``(B, T, D)`` the codewords' sum, with a straight-through gradient to the input.
        codes: ``(B, Q, T)`` int64 entries of every stage (stages a sample dropped included).
        commitment: scalar mean commitment loss over the stages each sample used.
        num_quantizers: ``(B,)`` stages each sample used (quantizer dropout).
        stats: per-stage codebook use, e.g. ``q0_perplexity``, ``q0_dead`` (floats).
    """

    quantized: Tensor
    codes: Tensor
    commitment: Tensor
    num_quantizers: Tensor
    stats: dict[str, float] = field(default_factory=dict)


def _all_reduce(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` over ranks in place under ``torch.distributed`` (a no-op otherwise), so
    every rank's codebook moves with the whole batch."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(tensor)
    return tensor


def _broadcast(tensor: Tensor) -> Tensor:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.broadcast(tensor, 0)
    return tensor


def perplexity(counts: Tensor) -> Tensor:
    """``exp`` of the entropy of each row of entry ``counts (..., K)``: how many entries a
    code's use is worth (``K`` when all are used alike, 1 when one takes everything)."""
    p = counts.float() / counts.float().sum(-1, keepdim=True).clamp(min=1)
    return torch.exp(-(p * torch.log(p + 1e-10)).sum(-1))


def kmeans(samples: Tensor, k: int, iters: int, cosine: bool = False) -> Tensor:
    """``k`` centroids ``(k, d)`` of ``samples (N, d)`` by Lloyd's algorithm from ``k`` random
    samples (drawn with replacement when ``N < k``); empty clusters keep their centroid."""
    n = samples.shape[0]
    pick = torch.randperm(n, device=samples.device)[:k] if n >= k else None
    if pick is None:
        pick = torch.randint(0, n, (k,), device=samples.device)
    centroids = samples[pick].clone()
    for _ in range(iters):
        if cosine:
            assign = (samples @ centroids.t()).argmax(-1)
        else:
            assign = torch.cdist(samples, centroids).argmin(-1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, samples)
        counts = torch.bincount(assign, minlength=k).to(samples.dtype)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
        if cosine:
            centroids = F.normalize(centroids, dim=-1)
    return centroids


def draw_stages(
    batch: int,
    num_quantizers: int,
    choices: list[int],
    probability: float,
    device: torch.device | None = None,
) -> Tensor:
    """Stages per sample ``(B,)`` for a training batch: ``num_quantizers``, or with
    ``probability`` a uniform draw from ``choices`` (structured quantizer dropout)."""
    full = torch.full((batch,), num_quantizers, dtype=torch.long, device=device)
    options = torch.tensor(choices, dtype=torch.long, device=device)
    drawn = options[torch.randint(0, len(choices), (batch,), device=device)]
    dropped = torch.rand(batch, device=device) < probability
    return torch.where(dropped, drawn, full)


# Decay of the entries' use statistics that decide restarts (the codebook's own EMA, ``decay``,
# is slower: it averages the entries' positions).
USAGE_DECAY = 0.9
# Decay of the running mean and RMS that standardize a codebook's input outside training (as
# BatchNorm's running statistics; training standardizes by the batch's own, so a drifting encoder
# is never behind): about the last 10 batches.
STATS_DECAY = 0.9


def _apply(u: Tensor, transform: Tensor) -> Tensor:
    """``u (..., d)`` times a scalar or a symmetric ``(d, d)`` transform."""
    return u * transform if transform.ndim == 0 else u @ transform


# Eigenvalues below this fraction of the mean are floored there before whitening: directions the
# input never varies in (a residual's numerical zeros) are not blown up to unit variance.
WHITEN_FLOOR = 1e-3


def _whitening(covariance: Tensor) -> tuple[Tensor, Tensor]:
    """The inverse square root and the square root ``(d, d)`` of a covariance (ZCA)."""
    values, vectors = torch.linalg.eigh(covariance.double())
    values = values.clamp(min=WHITEN_FLOOR * float(values.mean().clamp(min=1e-30)))
    root = (vectors * values.sqrt()) @ vectors.t()
    inverse = (vectors * values.rsqrt()) @ vectors.t()
    return inverse.to(covariance.dtype), root.to(covariance.dtype)


class VectorQuantizer(nn.Module):
    """One codebook of ``codebook_size`` entries, updated by exponential moving averages.

    Args:
        dim: input width D.
        codebook_size: K.
        codebook_dim: d, the width codes live in; a value below ``dim`` adds learned input and
            output projections (DAC's factorized codes). ``None`` keeps ``dim``.
        l2_normalize: compare l2-normalized inputs and entries (cosine similarity; DAC).
        decay: EMA decay of the entries and their counts (after the first updates, whose
            decay is ``(1 + n) / (10 + n)`` for the ``n``-th, when that is lower).
        kmeans_iters: k-means iterations on the first training batch (0: random samples).
        dead_threshold: an entry whose recent use (an EMA of its counts with decay
            :data:`USAGE_DECAY`, about the last 10 batches) falls below this fraction of the
            mean is dead and restarts at a random input vector of the current batch. Relative,
            so it means the same for any batch and codebook size; recent, so a codebook the
            encoder's early steps left behind (all inputs on a few entries) recovers within
            tens of steps rather than hundreds.
        standardize: keep the codebook in coordinates standardized by the input's running
            per-channel mean and overall RMS (see the module docstring).
        whiten: standardize by the inverse square root of the input's covariance instead of
            one RMS, so every direction has unit variance (see the module docstring). Needs
            ``standardize``.
        epsilon: Laplace smoothing of the counts.
        update: how entries learn: ``"ema"`` (EnCodec: moving averages of the inputs each
            entry wins, in standardized coordinates) or ``"gradient"`` (DAC: the entries are a
            parameter pulled toward their inputs by a codebook loss, and no data statistics
            are kept, so evaluation codes exactly as training does). As in DAC, under
            ``l2_normalize`` only the search compares directions: an entry's value, the losses
            and the output are the unnormalized vectors (gradients through a normalization
            scale with one over the input's norm, and a codec's small latent made them explode).
            Under ``"gradient"`` the per-frame ``commitment`` that :meth:`forward` returns is
            ``beta * |u - sg(e)|^2 + |sg(u) - e|^2`` and ``standardize`` defaults to off.
        beta: the commitment's weight against the codebook loss under ``"gradient"`` (DAC's
            0.25).
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        codebook_dim: int | None = None,
        l2_normalize: bool = False,
        decay: float = 0.99,
        kmeans_iters: int = 10,
        dead_threshold: float = 0.05,
        standardize: bool | None = None,
        whiten: bool = False,
        epsilon: float = 1e-5,
        update: str = "ema",
        beta: float = 0.25,
    ) -> None:
        super().__init__()
        if update not in ("ema", "gradient"):
            raise ValueError(f"codebook update must be 'ema' or 'gradient', got {update!r}")
        if standardize is None:
            standardize = update == "ema"
        if whiten and not standardize:
            raise ValueError("whiten=True needs standardize=True (whitening standardizes)")
        self.update, self.beta = update, beta
        code_dim = codebook_dim or dim
        self.codebook_size, self.code_dim, self.l2 = codebook_size, code_dim, l2_normalize
        self.decay, self.kmeans_iters = decay, kmeans_iters
        self.dead_threshold, self.epsilon = dead_threshold, epsilon
        self.standardize, self.whiten = standardize, whiten
        factorized = code_dim != dim
        self.in_proj = nn.Linear(dim, code_dim) if factorized else nn.Identity()
        self.out_proj = nn.Linear(code_dim, dim) if factorized else nn.Identity()
        if update == "gradient":  # same state-dict name, learned by the codebook loss
            self.embed = nn.Parameter(torch.randn(codebook_size, code_dim))
        else:
            self.register_buffer("embed", torch.randn(codebook_size, code_dim))
        self.register_buffer("embed_sum", self.embed.clone())
        self.register_buffer("cluster_size", torch.ones(codebook_size))
        self.register_buffer("usage", torch.ones(codebook_size))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))  # EMA steps since start
        # Running statistics of the input in code space: per-channel mean (d,), overall RMS ().
        self.register_buffer("center", torch.zeros(code_dim))
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("covariance", torch.eye(code_dim))  # (d, d), used under ``whiten``

    def codebook(self) -> Tensor:
        """The entries ``(K, d)`` as searched (normalized under ``l2_normalize``)."""
        return F.normalize(self.embed, dim=-1) if self.l2 else self.embed

    def values(self) -> Tensor:
        """The entries ``(K, d)`` as decoded: as searched, or under ``update="gradient"`` the
        unnormalized vectors (in the input's own coordinates)."""
        return self.embed if self.update == "gradient" else self.codebook()

    def _running(self) -> tuple[Tensor, Tensor, Tensor]:
        """The running statistics as ``(mean (d,), to codes, from codes)``."""
        if self.whiten:
            return (self.center, *_whitening(self.covariance))
        return self.center, 1 / self.scale, self.scale

    def _standardized(self, u: Tensor, stats: tuple[Tensor, ...] | None = None) -> Tensor:
        """``u (..., d)`` standardized by ``stats`` (see :meth:`_track`; default the running
        ones)."""
        if self.standardize:
            center, forward, _ = stats or self._running()
            u = _apply(u - center, forward)
        return F.normalize(u, dim=-1) if self.l2 else u

    def project(self, x: Tensor) -> Tensor:
        """Inputs ``(..., D)`` into the codebook's coordinates ``(..., d)``."""
        return self._standardized(self.in_proj(x))

    def _output(self, entries: Tensor, stats: tuple[Tensor, ...] | None = None) -> Tensor:
        """Entries ``(..., d)`` in the codebook's coordinates -> input space ``(..., D)``."""
        if self.standardize and not self.l2:  # l2 codes are directions: out_proj reads them
            center, _, inverse = stats or self._running()
            entries = center + _apply(entries, inverse)
        return self.out_proj(entries)

    @torch.no_grad()
    def _track(self, u: Tensor, decay: float) -> tuple[Tensor, Tensor, Tensor]:
        """The statistics of ``u (N, d)`` (over every rank) as ``(mean (d,), to codes, from
        codes)``: the transforms are ``1 / RMS`` and ``RMS`` (scalars), or under ``whiten`` the
        covariance's inverse square root and square root ``(d, d)``. Moves the running ones
        toward them (``decay=0``: sets them)."""
        count = _all_reduce(u.new_full((), u.shape[0]).float())
        mean = _all_reduce(u.float().sum(0)) / count
        centered = u.float() - mean
        # New tensors, not in place: an earlier forward's graph still reads the old ones.
        self.center = torch.lerp(self.center, mean, 1 - decay)
        if self.whiten:
            covariance = _all_reduce(centered.t() @ centered) / count  # (d, d)
            self.covariance = torch.lerp(self.covariance, covariance, 1 - decay)
            return (mean, *_whitening(covariance))
        var = _all_reduce(centered.pow(2).sum()) / (count * u.shape[1])
        scale = var.sqrt().clamp(min=1e-6)
        self.scale = torch.lerp(self.scale, scale, 1 - decay)
        return mean, 1 / scale, scale

    @torch.no_grad()
    def nearest(self, z: Tensor) -> Tensor:
        """Indices ``(N,)`` of the nearest entries to ``z (N, d)`` (fp32 distances)."""
        book = self.codebook().float()
        z = z.float()
        if self.l2:
            return (z @ book.t()).argmax(-1)
        dist = z.pow(2).sum(-1, keepdim=True) - 2 * z @ book.t() + book.pow(2).sum(-1)
        return dist.argmin(-1)

    def lookup(self, codes: Tensor) -> Tensor:
        """Entries of ``codes (...)`` in input space ``(..., D)``."""
        return self._output(F.embedding(codes, self.values()))

    @torch.no_grad()
    def initialize(self, batches: list[Tensor]) -> list[Tensor]:
        """Start from the inputs of several training batches, ``[(N_i, D), ...]``: each
        standardized by its own statistics, as training does, then k-means on them all; the
        running statistics start at their mean. Returns each batch's codewords ``(N_i, D)``
        (what the next residual stage subtracts)."""
        us = [self.in_proj(x) for x in batches]
        stats = [self._track(u, 0.0) if self.standardize else None for u in us]
        if self.standardize:  # running statistics: the batches' average
            self.center = torch.stack([st[0] for st in stats]).mean(0)
            if self.whiten:  # each batch's covariance is its transform's inverse squared
                self.covariance = torch.stack([st[2] @ st[2] for st in stats]).mean(0)
            else:
                self.scale = torch.stack([st[2] for st in stats]).mean(0)
        zs = [self._standardized(u, st) for u, st in zip(us, stats, strict=True)]
        self._init(torch.cat(zs), torch.cat(us))
        book = self.values()
        return [self._output(book[self.nearest(z)], st) for z, st in zip(zs, stats, strict=True)]

    @torch.no_grad()
    def _init(self, z: Tensor, u: Tensor) -> None:
        """K-means on the searched vectors ``z (N, d)``; under ``update="gradient"`` with
        ``l2_normalize`` the directions found take the mean norm of the inputs ``u (N, d)``."""
        centroids = kmeans(z.float(), self.codebook_size, self.kmeans_iters, cosine=self.l2)
        if self.update == "gradient" and self.l2:
            centroids = centroids * u.float().norm(dim=-1).mean()  # rank 0's, broadcast below
        self.embed.copy_(_broadcast(centroids))
        share = z.shape[0] / self.codebook_size  # a uniform share of the batch
        self.embed_sum.copy_(self.embed * share)
        self.cluster_size.fill_(share)
        self.usage.fill_(share)
        self.initialized.fill_(True)
        self.updates.zero_()

    @torch.no_grad()
    def _update(self, z: Tensor, codes: Tensor) -> float:
        """Usage (and under ``"ema"`` the EMA) step on the valid vectors ``z (N, d)``, in the
        entries' value space (:meth:`values`), and their ``codes (N,)``; restarts dead entries
        at inputs. Returns the dead fraction before the restart."""
        onehot_sum = _all_reduce(torch.bincount(codes, minlength=self.codebook_size).to(z.dtype))
        self.usage.lerp_(onehot_sum, 1 - USAGE_DECAY)
        # A short memory at first (TensorFlow's ExponentialMovingAverage with num_updates):
        # the encoder moves fastest in its first steps, and a 100-step average of where its
        # outputs were would hold the entries there.
        steps = int(self.updates)
        decay = min(self.decay, (1 + steps) / (10 + steps))
        self.updates += 1
        self.cluster_size.lerp_(onehot_sum, 1 - decay)
        if self.update == "ema":
            embed_sum = torch.zeros_like(self.embed).index_add_(0, codes, z.float())
            self.embed_sum.lerp_(_all_reduce(embed_sum), 1 - decay)
            n = self.cluster_size.sum()
            smoothed = (self.cluster_size + self.epsilon) / (n + self.codebook_size * self.epsilon)
            self.embed.copy_(self.embed_sum / (smoothed * n)[:, None])
        dead = self.usage < self.dead_threshold * self.usage.mean()
        fraction = float(dead.float().mean())
        if dead.any():
            count = int(dead.sum())
            if count <= z.shape[0]:  # distinct inputs: duplicates would split one input's use
                pick = torch.randperm(z.shape[0], device=z.device)[:count]
            else:
                pick = torch.randint(0, z.shape[0], (count,), device=z.device)
            fresh = z[pick].float()
            if count > z.shape[0]:  # drawn twice: apart by a little, so both can win inputs
                fresh = fresh + 0.01 * fresh.std() * torch.randn_like(fresh)
            fresh = _broadcast(fresh.contiguous())  # every rank restarts alike
            # A restarted entry starts at the mean use: ~28 batches to be picked before it
            # counts as dead again.
            size = self.cluster_size.mean()
            self.embed[dead] = fresh
            self.embed_sum[dead] = fresh * size
            self.cluster_size[dead] = size
            self.usage[dead] = self.usage.mean()
        return fraction

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, dict]:
        """Quantize ``x (B, T, D)``; ``mask (B, T)`` marks the valid frames (default all).

        Returns ``(hard (B, T, D), codes (B, T), commitment (B, T), stats)``: ``hard`` is the
        codewords in input space (gradient only to ``out_proj``), ``commitment`` the per-frame
        squared distance of the standardized input to its codeword (gradient to the input and
        ``in_proj``), ``stats`` the batch's ``perplexity`` and ``dead`` fraction in training.
        """
        u = self.in_proj(x)  # (B, T, d)
        batch_stats = None  # training: the batch's own mean and RMS (BatchNorm's rule)
        if self.training and self.standardize:
            seen = u[mask] if mask is not None else u.reshape(-1, u.shape[-1])  # (N, d)
            if seen.shape[0] > 1:
                decay = STATS_DECAY if bool(self.initialized) else 0.0
                batch_stats = self._track(seen.detach(), decay)
        z = self._standardized(u, batch_stats)  # (B, T, d), as searched
        # What the entries stand for: the input itself under "gradient", else as searched.
        raw = u if self.update == "gradient" else z
        valid = z[mask] if mask is not None else z.reshape(-1, z.shape[-1])  # (N, d)
        valid_raw = raw[mask] if mask is not None else raw.reshape(-1, raw.shape[-1])
        if self.training and not bool(self.initialized) and valid.shape[0] > 0:
            self._init(valid.detach(), valid_raw.detach())
        codes = self.nearest(z.reshape(-1, z.shape[-1])).view(z.shape[:-1])  # (B, T)
        stats: dict[str, float] = {}
        if self.training and valid.shape[0] > 0:
            used = codes[mask] if mask is not None else codes.reshape(-1)
            counts = torch.bincount(used, minlength=self.codebook_size)
            stats["perplexity"] = float(perplexity(counts))
            stats["dead"] = self._update(valid_raw.detach(), used)
        entries = F.embedding(codes, self.values())  # (B, T, d)
        codeword = entries.detach()
        commitment = (raw - codeword).pow(2).mean(-1)  # (B, T)
        if self.update == "gradient":  # the codebook loss moves the entries, only them
            codebook_loss = (raw.detach() - entries).pow(2).mean(-1)
            commitment = self.beta * commitment + codebook_loss
        return self._output(codeword, batch_stats), codes, commitment, stats


class ResidualVQ(nn.Module):
    """``num_quantizers`` codebooks, each quantizing what the earlier ones left (RVQ), with
    per-sample structured quantizer dropout (SoundStream): in training a sample uses only its
    first ``n`` stages, ``n`` drawn from ``bitrate_stages`` with probability
    ``quantizer_dropout`` (DAC applies it to half the batch), so one model decodes at every
    bitrate.

    Args:
        dim: latent width D.
        num_quantizers: Q.
        codebook_size: K entries per stage.
        quantizer_dropout: probability that a sample drops its later stages.
        bitrate_stages: the stage counts dropout draws from (default ``1..Q``).
        init_after: training steps (forward calls) that pass the input through unquantized
            while pooling it (the last ``pool_size`` vectors); the next step starts every
            codebook from the pool, stage by stage (k-means on the residual the earlier stages
            leave). 0: each stage starts from its first training batch. The pool is not saved:
            a run resumed inside the warm-up starts from what it pools after resuming.
        pool_size: vectors kept for that start (default ``8 * codebook_size``).
        **vq: options of every :class:`VectorQuantizer` (``codebook_dim``, ``l2_normalize``,
            ``decay``, ``kmeans_iters``, ``dead_threshold``, ``standardize``).
    """

    def __init__(
        self,
        dim: int,
        num_quantizers: int = 8,
        codebook_size: int = 1024,
        quantizer_dropout: float = 0.5,
        bitrate_stages: list[int] | None = None,
        init_after: int = 0,
        pool_size: int | None = None,
        **vq: object,
    ) -> None:
        super().__init__()
        self.num_quantizers, self.codebook_size = num_quantizers, codebook_size
        self.quantizer_dropout = quantizer_dropout
        self.init_after, self.pool_size = init_after, pool_size or 8 * codebook_size
        self._pool: list[Tensor] = []
        # Training forward calls so far (saved, so a resumed run knows its warm-up is over).
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        stages = sorted(set(bitrate_stages or range(1, num_quantizers + 1)))
        if not stages or stages[0] < 1 or stages[-1] > num_quantizers:
            raise ValueError(f"bitrate_stages must lie in [1, {num_quantizers}], got {stages}")
        self.bitrate_stages = stages
        self.layers = nn.ModuleList(
            VectorQuantizer(dim, codebook_size, **vq) for _ in range(num_quantizers)
        )

    def draw_stages(self, batch: int, device: torch.device | None = None) -> Tensor:
        """Stages per sample ``(B,)`` for a training batch (see :func:`draw_stages`)."""
        return draw_stages(
            batch, self.num_quantizers, self.bitrate_stages, self.quantizer_dropout, device
        )

    @property
    def warming_up(self) -> bool:
        """Whether training steps still pass the input through unquantized."""
        return int(self.steps) < self.init_after

    @torch.no_grad()
    def _remember(self, x: Tensor) -> None:
        """Pool one batch's valid vectors ``x (N, D)``; the oldest batches leave beyond
        ``pool_size`` vectors."""
        self._pool.append(x.detach().float())
        while len(self._pool) > 1 and sum(len(b) for b in self._pool[1:]) >= self.pool_size:
            self._pool.pop(0)

    def _start(self, x: Tensor) -> None:
        """Every codebook from the pooled batches plus ``x (N, D)``, stage by stage (each batch
        kept apart: a codebook standardizes every batch by its own statistics)."""
        self._remember(x)
        residuals, self._pool = self._pool, []
        for layer in self.layers:
            codewords = layer.initialize(residuals)
            residuals = [r - c for r, c in zip(residuals, codewords, strict=True)]

    def forward(
        self, x: Tensor, mask: Tensor | None = None, num_quantizers: Tensor | None = None
    ) -> QuantizerOutput:
        """Quantize ``x (B, T, D)``; ``mask (B, T)`` marks valid frames; ``num_quantizers (B,)``
        stages per sample (default: drawn by :meth:`draw_stages` in training, all otherwise).
        In the warm-up (``init_after``) the output is ``x`` itself, codes are zeros and the
        commitment is 0."""
        b, t, _ = x.shape
        if num_quantizers is None:
            if self.training:
                num_quantizers = self.draw_stages(b, x.device)
            else:
                num_quantizers = torch.full(
                    (b,), self.num_quantizers, dtype=torch.long, device=x.device
                )
        valid = mask if mask is not None else torch.ones(b, t, dtype=torch.bool, device=x.device)
        if self.training:
            self.steps += 1
            if self.init_after > 0 and not bool(self.layers[0].initialized):
                if int(self.steps) <= self.init_after:
                    self._remember(x[valid])
                    codes = torch.zeros(
                        b, self.num_quantizers, t, dtype=torch.long, device=x.device
                    )
                    return QuantizerOutput(x, codes, x.new_zeros(()), num_quantizers, {})
                self._start(x[valid].detach())
        residual, total = x, torch.zeros_like(x)
        codes, commit, weight, stats = [], x.new_zeros(()), x.new_zeros(()), {}
        for i, layer in enumerate(self.layers):
            active = (num_quantizers > i).to(x.dtype)[:, None]  # (B, 1)
            hard, code, commitment, layer_stats = layer(residual, valid)
            total = total + hard * active[..., None]
            frames = valid.to(x.dtype) * active  # (B, T)
            commit = commit + (commitment * frames).sum()
            weight = weight + frames.sum()
            # The hard codeword, so this residual carries gradient to every earlier stage.
            residual = residual - hard.detach()
            codes.append(code)
            stats.update({f"q{i}_{k}": v for k, v in layer_stats.items()})
        quantized = total + (x - x.detach())  # straight through to the encoder, once
        return QuantizerOutput(
            quantized, torch.stack(codes, 1), commit / weight.clamp(min=1), num_quantizers, stats
        )

    def encode(self, x: Tensor, num_quantizers: int | None = None) -> Tensor:
        """Codes ``(B, q, T)`` of ``x (B, T, D)`` from the first ``q`` stages (default all)."""
        q = num_quantizers or self.num_quantizers
        residual, codes = x, []
        for layer in self.layers[:q]:
            code = layer.nearest(layer.project(residual).reshape(-1, layer.code_dim))
            code = code.view(x.shape[:-1])
            residual = residual - layer.lookup(code)
            codes.append(code)
        return torch.stack(codes, 1)

    def decode(self, codes: Tensor) -> Tensor:
        """The latent ``(B, T, D)`` of ``codes (B, q, T)``, ``q <= Q``."""
        return sum(
            layer.lookup(codes[:, i]) for i, layer in enumerate(self.layers[: codes.shape[1]])
        )
