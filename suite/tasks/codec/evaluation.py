"""Evaluation of a codec on held-out utterances: at every bitrate, the multi-scale mel distance
(the training loss's, lower is better) and SI-SDR of the round trip; and how the codes the
evaluation-mode encoder emits use each codebook (perplexity over every frame, the share of
entries never used).

Dims legend: B - batch (one utterance), S - audio samples.
"""

from __future__ import annotations

import torch
from torch import Tensor

from suite.codecs.model import NeuralCodec
from suite.codecs.quantize import perplexity
from suite.tasks.codec.dataset import CropDataset


def si_sdr(estimate: Tensor, reference: Tensor) -> float:
    """Scale-invariant signal-to-distortion ratio in dB of ``(S,)`` signals."""
    reference = reference - reference.mean()
    estimate = estimate - estimate.mean()
    scale = (estimate @ reference) / (reference @ reference).clamp(min=1e-8)
    target = scale * reference
    noise = estimate - target
    ratio = target.pow(2).sum() / noise.pow(2).sum().clamp(min=1e-8)
    return float(10 * torch.log10(ratio.clamp(min=1e-8)))


@torch.no_grad()
def evaluate_codec(model: NeuralCodec, items: CropDataset) -> dict[str, float]:
    """Mean ``mel_distance`` and ``si_sdr`` at every bitrate (``mel_distance_1.5kbps``, ...);
    the unsuffixed names are the highest bitrate's. Codebook use over all frames: per stage
    ``q{i}_perplexity`` and ``q{i}_unused`` (the share of entries no frame used), and the worst
    stage's as ``perplexity_min`` and ``unused_max``."""
    device = next(model.parameters()).device
    stages = list(getattr(model.quantizer, "bitrate_stages", range(1, model.num_quantizers + 1)))
    sums: dict[str, float] = {}
    counts = torch.zeros(model.num_quantizers, model.codebook_size)
    for index in range(len(items)):
        batch = items[[index]]
        audio, lengths = batch.inputs.to(device), batch.lengths.to(device)
        codes, code_lengths = model.encode(audio, lengths)
        used = codes[0, :, : int(code_lengths[0])].cpu()  # (Q, T)
        counts.scatter_add_(1, used, torch.ones(used.shape))
        for q in stages:
            decoded, _ = model.decode(codes[:, :q], code_lengths)
            decoded = decoded[:, : audio.shape[-1]]
            kbps = f"{q * model.bits_per_stage / 1000:g}kbps"
            values = {
                f"mel_distance_{kbps}": float(model.mel_loss(decoded, audio)),
                f"si_sdr_{kbps}": si_sdr(decoded[0], audio[0]),
            }
            for key, value in values.items():
                sums[key] = sums.get(key, 0.0) + value
    out = {k: v / max(len(items), 1) for k, v in sums.items()}
    top = f"{stages[-1] * model.bits_per_stage / 1000:g}kbps"
    spread = perplexity(counts)  # (Q,)
    unused = (counts == 0).float().mean(1)  # (Q,)
    for i in range(model.num_quantizers):
        out[f"q{i}_perplexity"], out[f"q{i}_unused"] = float(spread[i]), float(unused[i])
    out["perplexity_min"], out["unused_max"] = float(spread.min()), float(unused.max())
    return {"mel_distance": out[f"mel_distance_{top}"], "si_sdr": out[f"si_sdr_{top}"], **out}
