"""Residual and group-residual vector quantizers: gradients reach every stage, codebooks learn
by EMA and restart dead entries, and quantizer dropout gives every bitrate from one model."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from suite.codecs.group_quantize import GroupResidualVQ
from suite.codecs.quantize import ResidualVQ, VectorQuantizer, kmeans, perplexity

DIM = 16


def _data(n: int = 512, seed: int = 0) -> torch.Tensor:
    """``(4, n // 4, DIM)`` vectors around 8 clusters, so codebooks have something to learn."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(8, DIM, generator=g) * 3
    pick = torch.randint(0, 8, (n,), generator=g)
    return (centres[pick] + 0.3 * torch.randn(n, DIM, generator=g)).view(4, n // 4, DIM)


QUANTIZERS = {
    "rvq": lambda: ResidualVQ(DIM, 4, 32),
    "rvq-factorized-l2": lambda: ResidualVQ(DIM, 4, 32, codebook_dim=4, l2_normalize=True),
    "rvq-factorized-l2-whitened": lambda: ResidualVQ(
        DIM, 4, 32, codebook_dim=4, l2_normalize=True, whiten=True
    ),
    "rvq-whitened": lambda: ResidualVQ(DIM, 4, 32, whiten=True),
    "rvq-factorized-l2-gradient": lambda: ResidualVQ(
        DIM, 4, 32, codebook_dim=4, l2_normalize=True, update="gradient"
    ),
    "grvq": lambda: GroupResidualVQ(DIM, 4, 32, groups=2),
}


@pytest.mark.parametrize("name", sorted(QUANTIZERS))
def test_a_later_stages_commitment_gradient_reaches_the_input(name):
    torch.manual_seed(0)
    quantizer = QUANTIZERS[name]().train()
    x = _data().requires_grad_(True)
    # Only the last stage counts: its commitment loss alone must move the encoder's output.
    last = quantizer.num_quantizers
    out = quantizer(x, num_quantizers=torch.full((4,), last))
    layers = quantizer.layers if name != "grvq" else quantizer.rvqs[0].layers
    residual = x if name != "grvq" else x.chunk(2, -1)[0]
    for layer in layers[:-1]:  # recompute the residual the last stage sees, as forward does
        hard, _, _, _ = layer(residual)
        residual = residual - hard.detach()
    _, _, commitment, _ = layers[-1](residual)
    (grad,) = torch.autograd.grad(commitment.mean(), x)
    assert grad.abs().sum() > 0
    # And through the quantizer's own loss and output, every input gets a gradient.
    (grad,) = torch.autograd.grad(out.commitment + out.quantized.sum(), x)
    assert bool((grad.abs().sum(-1) > 0).all())


@pytest.mark.parametrize("name", sorted(QUANTIZERS))
def test_codebooks_learn_and_more_stages_reconstruct_better(name):
    torch.manual_seed(0)
    quantizer = QUANTIZERS[name]().train()
    x = _data()
    # EMA moves the codebooks; the factorized projections learn from the reconstruction loss,
    # as a decoder's loss trains them in a codec.
    optimizer = torch.optim.Adam(quantizer.parameters(), lr=3e-2) if "factorized" in name else None
    for _ in range(60):
        out = quantizer(x, num_quantizers=torch.full((4,), quantizer.num_quantizers))
        if optimizer is not None:
            optimizer.zero_grad()
            ((out.quantized - x).pow(2).mean() + out.commitment).backward()
            optimizer.step()
    assert {"perplexity", "dead"} <= {k.rsplit("_", 1)[1] for k in out.stats if "q0" in k}
    quantizer.eval()
    stages = quantizer.bitrate_stages
    errors = []
    for q in stages:
        codes = quantizer.encode(x, q)
        assert codes.shape == (4, q, x.shape[1]) and codes.dtype == torch.long
        with torch.no_grad():
            errors.append(float((quantizer.decode(codes) - x).pow(2).mean()))
    assert errors[-1] < float(x.pow(2).mean()) * 0.2
    assert all(b <= a * 1.01 for a, b in zip(errors, errors[1:], strict=False)), errors


def test_encode_matches_the_training_forward_and_lower_bitrates_are_prefixes():
    torch.manual_seed(0)
    for quantizer in (ResidualVQ(DIM, 4, 32), GroupResidualVQ(DIM, 4, 32, groups=2)):
        quantizer.train()
        x = _data()
        quantizer(x)  # initializes the codebooks
        quantizer.eval()
        full = quantizer(x)
        assert torch.equal(quantizer.encode(x), full.codes)
        low = quantizer.encode(x, quantizer.bitrate_stages[0])
        assert torch.equal(low, full.codes[:, : low.shape[1]])
        assert torch.allclose(quantizer.decode(full.codes), full.quantized, atol=1e-5)


def test_gradient_codebooks_learn_by_their_loss_and_code_alike_in_evaluation():
    # DAC's scheme: the entries are a parameter that only the codebook loss moves, and no data
    # statistics are kept, so a batch gets the same codes in training and in evaluation (the
    # standardized EMA codebooks code training batches by their own statistics instead).
    torch.manual_seed(0)
    vq = VectorQuantizer(DIM, 32, codebook_dim=4, l2_normalize=True, update="gradient")
    vq.dead_threshold = 0.0  # no restarts: they would move entries between the two passes
    assert isinstance(vq.embed, torch.nn.Parameter) and "embed" in vq.state_dict()
    optimizer = torch.optim.Adam(vq.parameters(), lr=1e-2)
    vq.train()
    for step in range(20):
        x = _data(seed=step) + 0.1 * step  # a drifting latent
        hard, codes, loss, _ = vq(x)
        optimizer.zero_grad()
        (loss.mean() + (hard - x).pow(2).mean()).backward()
        assert vq.embed.grad is not None and vq.embed.grad.abs().sum() > 0
        optimizer.step()
    with torch.no_grad():
        _, training_codes, _, _ = vq(x)
        vq.eval()
        _, evaluation_codes, _, _ = vq(x)
    assert torch.equal(training_codes, evaluation_codes)
    assert len(evaluation_codes.unique()) > 8
    # EMA entries stay buffers, out of the optimizer's reach.
    assert "embed" not in dict(VectorQuantizer(DIM, 32).named_parameters())
    with pytest.raises(ValueError, match="'ema' or 'gradient'"):
        VectorQuantizer(DIM, 32, update="adam")


def test_dead_codes_are_restarted_at_the_data():
    torch.manual_seed(0)
    vq = VectorQuantizer(DIM, 32).train()
    x = _data()
    vq(x)  # k-means start
    with torch.no_grad():  # move a quarter of the entries far from every input
        vq.embed[:8] = 1e3
        vq.embed_sum[:8] = 1e3 * vq.cluster_size[:8, None]
    deads = [vq(x)[3]["dead"] for _ in range(40)]  # unused for ~28 batches: dead
    assert sum(deads) >= 8 / 32  # they were seen dead ...
    assert float(vq.embed[:8].abs().max()) < 50  # ... and restarted among the inputs
    assert deads[-1] < 8 / 32
    _, codes, _, _ = vq(x)
    assert len(codes.unique()) > 24


@pytest.mark.parametrize("name", sorted(QUANTIZERS))
def test_quantizer_dropout_gives_every_bitrate(name):
    torch.manual_seed(0)
    quantizer = QUANTIZERS[name]().train()
    quantizer.quantizer_dropout = 1.0
    x = _data()
    seen = set()
    for _ in range(30):
        seen |= set(quantizer(x).num_quantizers.tolist())
    assert seen == set(quantizer.bitrate_stages)
    # A sample's dropped stages contribute nothing to its output. (Compared in evaluation: a
    # training forward standardizes by the batch's statistics, decoding by the running ones.)
    quantizer.eval()
    stages = torch.tensor(quantizer.bitrate_stages[:4] * 4)[:4]
    out = quantizer(x, num_quantizers=stages)
    for b, q in enumerate(stages.tolist()):
        value = quantizer.decode(out.codes[b : b + 1, :q])
        assert torch.allclose(out.quantized[b : b + 1], value, atol=1e-5)


def test_kmeans_finds_separated_clusters():
    torch.manual_seed(0)
    points = torch.cat([torch.randn(50, 2) * 0.1 + c for c in (5.0, -5.0)])
    centroids = kmeans(points, 2, 10)
    assert sorted(round(float(c)) for c in centroids[:, 0]) == [-5, 5]


def test_group_residual_vq_refuses_bitrates_that_split_a_group():
    quantizer = GroupResidualVQ(DIM, 4, 32, groups=2).eval()
    with pytest.raises(ValueError, match="multiple of 2"):
        quantizer.encode(_data(), 3)
    with pytest.raises(ValueError, match="divisible by groups"):
        GroupResidualVQ(DIM, 3, 32, groups=2)


def _perplexity(codes: torch.Tensor, k: int) -> float:
    return float(perplexity(torch.bincount(codes.flatten(), minlength=k)))


@pytest.mark.parametrize("standardize", [True, False])
def test_the_codebook_follows_a_latent_that_drifts_by_more_than_its_spread(standardize):
    # A fresh encoder's latent: a small cloud (spread about 0.01) that Adam's first steps move
    # as a whole, here by 0.1 per step. A codebook in latent coordinates is left behind and one
    # entry takes every frame; standardized, it moves with the cloud and keeps its clusters.
    torch.manual_seed(0)
    vq = VectorQuantizer(DIM, 32, standardize=standardize).train()
    base = 0.003 * _data()
    for step in range(30):
        _, codes, commitment, stats = vq(base + 0.1 * step)
    if standardize:
        assert stats["perplexity"] > 6  # the 8 clusters stay apart
        assert float(commitment.mean()) < 0.1  # in units of the cloud's spread
    else:
        assert stats["perplexity"] < 2  # the collapse this option prevents


def test_standardized_codes_decode_to_the_inputs_scale():
    torch.manual_seed(0)
    quantizer = ResidualVQ(DIM, 4, 32).train()
    x = 5.0 + 0.01 * _data()  # far from the origin, small spread
    for _ in range(5):
        quantizer(x, num_quantizers=torch.full((4,), 4))
    quantizer.eval()
    error = (quantizer.decode(quantizer.encode(x)) - x).pow(2).mean()
    assert float(error) < 0.2 * float((x - x.mean((0, 1))).pow(2).mean())


def test_warm_up_passes_the_latent_through_then_starts_from_the_pool():
    torch.manual_seed(0)
    quantizer = ResidualVQ(DIM, 3, 32, init_after=3, pool_size=4096, quantizer_dropout=0.0)
    quantizer.train()
    batches = list(_data(n=2048).chunk(4, dim=1))  # four training batches of one data set
    for x in batches[:3]:
        out = quantizer(x)
        assert torch.equal(out.quantized, x) and float(out.commitment) == 0.0
        assert not any(bool(layer.initialized) for layer in quantizer.layers)
    assert quantizer.warming_up is False
    out = quantizer(batches[3])  # the fourth step starts every stage from all four batches
    assert all(bool(layer.initialized) for layer in quantizer.layers)
    # The running mean started at the pooled batches' (then one step toward the fourth's).
    pooled = torch.stack([b.reshape(-1, DIM).mean(0) for b in batches]).mean(0)
    expected = torch.lerp(pooled, batches[3].reshape(-1, DIM).mean(0), 0.1)
    assert torch.allclose(quantizer.layers[0].center, expected, atol=1e-4)
    # Every batch is coded well, not only the current one.
    quantizer.eval()
    for x in batches:
        codes = quantizer.encode(x)
        assert _perplexity(codes[:, 0], 32) > 4
        assert float((quantizer.decode(codes) - x).pow(2).mean()) < 0.25 * float(x.var())
    # Later stages quantize a non-zero residual (more vectors than entries in the pool).
    assert float(quantizer.layers[1].scale) > 1e-3
    assert out.stats["q2_perplexity"] > 4


def test_group_residual_vq_warms_up_every_group_then_starts_them():
    torch.manual_seed(0)
    quantizer = GroupResidualVQ(DIM, 4, 32, groups=2, init_after=2, pool_size=4096).train()
    batches = list(_data(n=2048).chunk(4, dim=1))
    for x in batches[:2]:
        out = quantizer(x)
        assert torch.equal(out.quantized, x) and float(out.commitment) == 0.0
    out = quantizer(batches[2])
    layers = [layer for rvq in quantizer.rvqs for layer in rvq.layers]
    assert all(bool(layer.initialized) for layer in layers)
    assert out.stats["g0_q0_perplexity"] > 4 and out.stats["g1_q0_perplexity"] > 4


RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes" / "codec").glob("*.yaml"))


def _fresh_encoder_latent(step: int, dim: int, n: int = 800) -> torch.Tensor:
    """``(1, n, dim)``: what a freshly initialized SEANet hands its quantizer in its first Adam
    steps (measured on speech, the ``small`` preset): an offset with a small spread, most of the
    variance on one direction that takes more of it every step (80% to 99%), the whole growing
    by 15% per step, and a new batch every step."""
    g = torch.Generator().manual_seed(1)
    basis = torch.linalg.qr(torch.randn(dim, dim, generator=g))[0]
    offset = 0.07 * torch.randn(dim, generator=g)
    share = 1 - 0.2 * 0.85**step  # of the variance on the first direction
    spread = torch.full((dim,), math.sqrt((1 - share) / (dim - 1)))
    spread[0] = math.sqrt(share)
    x = 0.1 * spread * torch.randn(n, dim, generator=torch.Generator().manual_seed(100 + step))
    return (1.15**step * (offset + x @ basis.t()))[None]


def _usage(vq: VectorQuantizer, dim: int, steps: int = 30) -> list[float]:
    """Stage perplexity over the frames of each training batch of that latent."""
    torch.manual_seed(0)
    vq.train()
    with torch.no_grad():
        return [vq(_fresh_encoder_latent(step, dim))[3]["perplexity"] for step in range(steps)]


def _trained_encoder_latent(step: int, dim: int, n: int = 800) -> torch.Tensor:
    """``(1, n, dim)``: a latent after the recipes' unquantized warm-up, roughly: an offset of
    half the spread, 90% of the variance on one direction, a new batch every step."""
    basis = torch.linalg.qr(torch.randn(dim, dim, generator=torch.Generator().manual_seed(1)))[0]
    spread = torch.full((dim,), math.sqrt(0.1 / (dim - 1)))
    spread[0] = math.sqrt(0.9)
    x = spread * torch.randn(n, dim, generator=torch.Generator().manual_seed(100 + step))
    return (0.5 + x @ basis.t())[None]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_the_recipes_codebooks_stay_in_use_on_a_fresh_encoders_latent(recipe):
    # Each recipe's codebook options, at the latent width one codebook of its `small` preset
    # sees (64, split among the groups), keep hundreds of its 1024 entries in use per batch of
    # 800 frames: low-dimensional l2-normalized codes leave no entry nearer to every input than
    # the rest, and whitening keeps a latent that piles onto one direction spread over them.
    codec = yaml.safe_load(recipe.read_text())["model"]["codec"]
    keys = ("codebook_dim", "l2_normalize", "whiten", "dead_threshold")
    options = {k: codec[k] for k in keys if k in codec}
    dim = 64 // codec.get("groups", 1)
    usage = _usage(VectorQuantizer(dim, 1024, **options), dim)
    assert min(usage[1:]) > 300, [round(u) for u in usage]


def test_gradient_codebooks_code_a_new_batch_in_evaluation_as_widely_as_in_training():
    # 8-dimensional l2-normalized codes, trained as a codec trains them (Adam on the
    # commitment, codebook and reconstruction losses) on a latent shaped like a warmed-up
    # encoder's, keep hundreds of the 1024 entries in use per batch of 800 frames. Learned by
    # gradient, they code a new batch in evaluation as widely (no data statistics).
    dim = 64
    options = {"codebook_dim": 8, "l2_normalize": True, "dead_threshold": 0.5, "update": "gradient"}
    torch.manual_seed(0)
    vq = VectorQuantizer(dim, 1024, **options).train()
    optimizer = torch.optim.Adam(vq.parameters(), lr=3e-4)
    training = []
    for step in range(30):
        x = _trained_encoder_latent(step, dim)
        hard, codes, commitment, stats = vq(x)
        optimizer.zero_grad()
        (commitment.mean() + (hard - x).pow(2).mean()).backward()
        optimizer.step()
        training.append(stats["perplexity"])
    vq.eval()
    with torch.no_grad():
        _, codes, _, _ = vq(_trained_encoder_latent(999, dim))
    evaluation = _perplexity(codes, 1024)
    assert min(training[1:]) > 300, [round(u) for u in training]
    assert evaluation > 0.8 * training[-1], (evaluation, training[-1])


def test_full_width_codebooks_collapse_on_a_fresh_encoders_latent():
    # The failure the recipes' options avoid: 64-dimensional EMA codes (standardized by one
    # RMS) fall from ~600 entries in use to ~30 at the next batch, as in real training runs
    # (the entries k-means put on single inputs lose every frame to the few that average many,
    # which lie nearer the cloud's centre); 8-dimensional l2 codes without whitening follow the
    # latent onto its one direction.
    dim = 64
    assert max(_usage(VectorQuantizer(dim, 1024), dim)[1:10]) < 80
    narrow = _usage(VectorQuantizer(dim, 1024, codebook_dim=8, l2_normalize=True), dim)
    assert min(narrow[20:]) < 100
