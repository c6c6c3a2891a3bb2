"""The encoder-free patch adapters (``suite.encoders.patch_adapter``) and the eP-ALM composition.

The registry contracts (shapes, gradients, padding invariance, every head over every encoder)
are in ``test_contracts.py``; here: what is particular to patches, per modality.
"""

from __future__ import annotations

import pytest
import torch

import suite
from suite.encoders.patch_adapter import GridPositions
from suite.interfaces import Batch
from suite.tokenizers import CharTokenizer


def adapter(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return suite.create_encoder(name, preset="tiny", **kwargs)


@pytest.mark.parametrize("positions", ["learned", "sincos"])
def test_image_tokens_are_patches_row_by_row(positions):
    enc = adapter("patch_image", positions=positions)  # 32 px, patch 8: a 4 x 4 grid
    x = torch.randn(2, 3, 32, 32)
    out = enc(x, torch.tensor([32, 32]))
    assert out.features.shape == (2, 16, 32) and out.lengths.tolist() == [16, 16]
    # Token 5 (row 1, column 1) is the patch at pixels [8:16, 8:16], projected.
    patch = x[:, :, 8:16, 8:16].reshape(2, -1)
    pos = enc.positions((4, 4), x.device).reshape(16, 32)
    torch.testing.assert_close(out.features[:, 5], enc.proj(patch) + pos[5])
    # Smaller images are fine (fewer tokens); larger ones only with sinusoids.
    assert enc(torch.randn(1, 3, 16, 24)).features.shape == (1, 6, 32)
    if positions == "learned":
        with pytest.raises(ValueError, match="exceeds the learned positions"):
            enc(torch.randn(1, 3, 40, 32))
    else:
        assert enc(torch.randn(1, 3, 40, 32)).features.shape == (1, 20, 32)


def test_audio_shapes_lengths_and_padding_invariance():
    enc = adapter("patch_audio").eval()  # 16 bins, patches of 4 frames x 8 bins: 2 per step
    lengths = [13, 8, 1]
    x = torch.randn(3, 13, 16)
    x[1, 8:] = 5.0  # padding that is not zero must not leak either
    out = enc(x, torch.tensor(lengths))
    assert out.features.shape == (3, 8, 32)  # ceil(13 / 4) = 4 time steps x 2 bands
    assert out.lengths.tolist() == [8, 4, 2]
    for b, n in enumerate(lengths):
        alone = enc(x[b : b + 1, :n], torch.tensor([n]))
        m = int(alone.lengths[0])
        torch.testing.assert_close(out.features[b, :m], alone.features[0], atol=1e-6, rtol=0)
    # Whole frames (patch_bins=None): one token per 4 frames.
    whole = adapter("patch_audio", patch_bins=None)
    assert whole(x, torch.tensor(lengths)).lengths.tolist() == [4, 2, 1]


def test_video_tubelets_lengths_and_padding_invariance():
    enc = adapter("patch_video").eval()  # 4 frames x 32 px, tubelets 2 x 8 x 8: 2 x 16 tokens
    x = torch.randn(2, 4, 3, 32, 32)
    out = enc(x, torch.tensor([4, 3]))
    assert out.features.shape == (2, 32, 32) and out.lengths.tolist() == [32, 32]
    out = enc(x, torch.tensor([4, 1]))
    assert out.lengths.tolist() == [32, 16]
    alone = enc(x[1:, :1], torch.tensor([1]))
    torch.testing.assert_close(out.features[1, :16], alone.features[0], atol=1e-6, rtol=0)
    # Without lengths every clip is whole.
    assert enc(x).lengths.tolist() == [32, 32]


@pytest.mark.parametrize("name", ["patch_image", "patch_audio", "patch_video"])
@pytest.mark.parametrize("positions", ["learned", "sincos"])
def test_every_parameter_gets_a_gradient(name, positions):
    enc = adapter(name, positions=positions)
    shape = {
        "patch_image": (2, 3, 32, 32),
        "patch_audio": (2, 12, 16),
        "patch_video": (2, 4, 3, 32, 32),
    }[name]
    out = enc(torch.randn(shape))
    out.features.square().mean().backward()
    for pname, param in enc.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, pname


def test_sincos_positions_tell_every_cell_apart():
    pos = GridPositions((3, 4, 5), 32, "sincos")((3, 4, 5), torch.device("cpu")).reshape(60, 32)
    assert torch.cdist(pos, pos).add(torch.eye(60)).min() > 0.1


def test_wrong_inputs_get_teaching_errors():
    with pytest.raises(ValueError, match=r"takes images \(B, 3, H, W\).*patch_audio"):
        adapter("patch_image")(torch.randn(2, 10, 16))
    with pytest.raises(ValueError, match="divisible by its patch size 8"):
        adapter("patch_image")(torch.randn(1, 3, 30, 32))
    with pytest.raises(ValueError, match=r"takes features \(B, T, 16\)"):
        adapter("patch_audio")(torch.randn(2, 10, 80))
    with pytest.raises(ValueError, match=r"takes videos \(B, N, 3, H, W\)"):
        adapter("patch_video")(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="patch_bins dividing 16"):
        adapter("patch_audio", patch_bins=5)
    with pytest.raises(ValueError, match="positions must be one of"):
        adapter("patch_image", positions="rope")
    with pytest.raises(suite.registry.RegistryError, match="takes no option 'patch'"):
        adapter("patch_image", patch=4)


def test_epalm_frozen_lm_with_a_trainable_perceptual_prefix():
    """eP-ALM is the adapter plus the LLM-adapter head with ``freeze_lm=True``: the LM gets no
    gradient and does not change; the patch projection and the head's projector learn."""
    tokenizer = CharTokenizer()
    enc = adapter("patch_image")
    torch.manual_seed(0)
    head = suite.create_head(
        "llm_adapter",
        preset="tiny",
        input_dim=enc.output_dim,
        vocab_size=tokenizer.vocab_size,
        freeze_lm=True,
    )
    texts = ["a red cat", "two dogs"]
    ids = [tokenizer.encode(t) for t in texts]
    targets = torch.zeros(2, max(map(len, ids)), dtype=torch.long)
    for b, row in enumerate(ids):
        targets[b, : len(row)] = torch.tensor(row)
    x = torch.randn(2, 3, 32, 32)
    batch = Batch(x, torch.tensor([32, 32]), targets, torch.tensor(list(map(len, ids))), texts)
    lm_before = {k: v.clone() for k, v in head.lm.state_dict().items()}
    trainable = [p for p in [*enc.parameters(), *head.parameters()] if p.requires_grad]
    opt = torch.optim.Adam(trainable, lr=1e-2)
    enc.train(), head.train()
    assert not head.lm.training  # a frozen LM stays in eval mode (no dropout)
    losses = []
    for _ in range(15):
        loss = head.loss(enc(batch.inputs, batch.lengths), batch)["loss"]
        opt.zero_grad()
        loss.backward()
        losses.append(float(loss.detach()))
        for name, p in head.lm.named_parameters():
            assert p.grad is None, f"frozen LM parameter {name} got a gradient"
        for name, p in [*enc.named_parameters(), *head.projector.named_parameters()]:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"prefix {name} got none"
        opt.step()
    assert losses[-1] < losses[0]  # a random frozen LM: the prefix alone moves the loss
    for k, v in head.lm.state_dict().items():
        assert torch.equal(v, lm_before[k]), f"frozen LM tensor {k} changed"


def test_the_encoder_free_scene_recipe_builds_and_learns_a_step():
    from pathlib import Path

    from suite.config import load_recipe
    from suite.model import build_model

    recipe = (
        Path(__file__).resolve().parents[1] / "recipes/vision/scenes_caption_patch_aed_cpu.yaml"
    )
    tokenizer = CharTokenizer()
    torch.manual_seed(0)
    model = build_model(load_recipe(recipe).model, tokenizer)
    assert model.encoder.input_size == (3, 64, 64)
    ids = tokenizer.encode("a red circle")
    batch = Batch(
        torch.rand(2, 3, 64, 64),
        torch.tensor([64, 64]),
        torch.tensor([ids, ids]),
        torch.tensor([len(ids)] * 2),
        prompts=["caption", "caption"],
    )
    enc = model.encoder(batch.inputs, batch.lengths)
    assert enc.features.shape == (2, 64, 128)
    loss = model.heads["aed"].loss(enc, batch)["loss"]
    loss.backward()
    assert torch.isfinite(loss) and model.encoder.proj.weight.grad is not None
