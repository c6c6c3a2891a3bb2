"""Image encoders through timm (ViT, ConvNeXt) and the image frontend: token shapes, variable
input sizes, gradients, and outputs equal to the bare timm model's features (the wrapper adds
nothing). The heads x encoders contract tests (tests/test_contracts.py) cover them too."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision.transforms.v2 as T

import suite
from suite.frontends.image import ImageError

ENCODERS = ["vit", "convnext"]


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: these tiny models lose far more to thread hand-offs than they gain,
    most of all on a machine other jobs share."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return suite.create_encoder(name, preset="tiny", **kwargs)


def images(B: int, H: int, W: int, C: int = 3) -> torch.Tensor:
    return torch.randn(B, C, H, W, generator=torch.Generator().manual_seed(H * W + B))


def test_token_shapes_and_registry_presets():
    vit = tiny("vit")
    out = vit(images(2, 32, 32), None)
    assert out.features.shape == (2, 64, 64) and vit.output_dim == 64  # (32 / 4)^2 patches
    assert out.lengths.tolist() == [64, 64] and out.lengths.dtype == torch.int64
    with_cls = tiny("vit", keep_class_token=True)(images(2, 32, 32), None)
    assert with_cls.features.shape == (2, 65, 64)
    no_cls = tiny("vit", class_token=False)
    assert no_cls.num_prefix_tokens == 0 and no_cls(images(1, 32, 32), None).features.shape[1] == 64
    convnext = tiny("convnext")
    assert convnext.stride == 8 and convnext.output_dim == 32
    assert convnext(images(2, 32, 32), None).features.shape == (2, 16, 32)
    assert {"tiny", "small", "medium"} <= set(suite.registry.presets("encoder", "vit"))
    assert {"tiny", "atto", "femto"} <= set(suite.registry.presets("encoder", "convnext"))
    assert suite.registry.resolve_options("encoder", "vit", "medium")["img_size"] == 64


@pytest.mark.parametrize("name", ENCODERS)
def test_variable_input_sizes(name):
    encoder = tiny(name).eval()
    step = encoder.patch_size if name == "vit" else encoder.stride
    for H, W in [(32, 32), (48, 32), (24, 64)]:
        out = encoder(images(2, H, W), None)
        assert out.features.shape == (2, (H // step) * (W // step), encoder.output_dim)
        assert torch.isfinite(out.features).all()


@pytest.mark.parametrize("name", ENCODERS)
def test_no_nan_and_every_parameter_gets_a_gradient(name):
    encoder = tiny(name).train()
    out = encoder(images(3, 32, 48), None)
    assert torch.isfinite(out.features).all()
    out.features.pow(2).mean().backward()
    for pname, param in encoder.named_parameters():
        assert param.grad is not None, f"{name}: {pname} got no gradient"
        assert torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, pname


def test_forward_equals_the_bare_timm_models_features():
    """The wrappers are timm's ``forward_features``, reshaped: the same numbers, exactly."""
    vit = tiny("vit").eval()
    bare = timm.create_model(
        "vit_tiny_patch16_224",
        num_classes=0,
        img_size=32,
        patch_size=4,
        embed_dim=64,
        depth=2,
        num_heads=2,
        dynamic_img_size=True,
    ).eval()
    bare.load_state_dict(vit.model.state_dict())
    x = images(2, 32, 48)
    with torch.no_grad():
        want = bare.forward_features(x)[:, 1:]  # (B, h*w, D) without the class token
        assert torch.equal(vit(x, None).features, want)
        tokens, grid = vit.embed(x)  # the hooks masked pretraining uses, unmasked
        assert grid == (8, 12) and torch.equal(vit.encode_tokens(tokens)[:, 1:], want)
    convnext = tiny("convnext").eval()
    bare = timm.create_model(
        "convnext_atto",
        num_classes=0,
        depths=(1, 1, 1, 1),
        dims=(8, 16, 16, 32),
        patch_size=1,
        head_norm_first=True,
    ).eval()
    bare.load_state_dict(convnext.model.state_dict())
    with torch.no_grad():
        want = bare.forward_features(x)  # (B, D, h, w)
        assert torch.equal(convnext(x, None).features, want.flatten(2).transpose(1, 2))
        assert torch.equal(convnext.features(x), want)
        ones = torch.ones(2, 1, 4, 6)  # nothing masked: the masked path is the same network
        torch.testing.assert_close(convnext.features(x, ones), want, atol=1e-6, rtol=0)


def test_sequence_features_and_odd_sizes_are_refused_with_a_reason():
    with pytest.raises(ValueError, match=r"takes images \(B, 3, H, W\), got \(2, 50, 80\)"):
        tiny("vit")(torch.randn(2, 50, 80), torch.tensor([50, 40]))
    with pytest.raises(ValueError, match="divisible by its patch size 4"):
        tiny("vit")(images(1, 30, 32), None)
    with pytest.raises(ValueError, match="divisible by its stride 8"):
        tiny("convnext").features(images(1, 36, 32), torch.ones(1, 1, 4, 4))


def test_image_frontend_resizes_normalizes_and_says_its_input_size():
    frontend = suite.create_frontend("image", input_size=[32, 48])
    assert frontend.input_size == (32, 48) and frontend.channels == 3
    x = torch.randint(0, 256, (2, 3, 64, 96), dtype=torch.uint8)
    out, lengths = frontend(x, None)
    assert out.shape == (2, 3, 32, 48) and lengths.tolist() == [32, 32]
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    want = T.Compose(
        [
            T.ToDtype(torch.float32, scale=True),
            T.Resize([32, 48], antialias=True),
            T.Normalize(mean, std),
        ]
    )(x)
    torch.testing.assert_close(out, want, atol=1e-2, rtol=0)  # resize rounding, then clamp
    x = torch.rand(2, 3, 32, 48)  # float in [0, 1] at input_size: normalized only
    torch.testing.assert_close(frontend.unnormalize(frontend(x)[0]), x, atol=1e-6, rtol=0)
    # Single images: grayscale to RGB and back, any size to input_size.
    gray = torch.randint(0, 256, (28, 28), dtype=torch.uint8)
    assert frontend.prepare(gray).shape == (3, 32, 48)
    mono = suite.create_frontend("image", input_size=28, channels=1)
    assert mono.prepare(torch.rand(3, 28, 28)).shape == (1, 28, 28)
    assert mono.mean.shape == (1, 1, 1, 1)
    kept, _ = suite.create_frontend("image", resize=False)(torch.rand(1, 3, 40, 24))
    assert kept.shape[-2:] == (40, 24)
    with pytest.raises(ImageError, match="RGBA"):
        frontend.prepare(torch.rand(4, 8, 8))
    with pytest.raises(ImageError, match="expected one image"):
        frontend.prepare(torch.rand(0, 8, 8))
    with pytest.raises(ImageError, match=r"takes \(B, 3, H, W\)"):
        frontend(torch.rand(2, 1, 8, 8))


def test_registering_the_vision_families_imports_neither_timm_nor_torchvision():
    """Speech commands load every registry; the vision families must not slow them down."""
    import subprocess
    import sys

    code = (
        "import sys, suite; suite.list_encoders(); suite.list_frontends(); "
        "print(sorted(m for m in ('timm', 'torchvision') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_build_model_tells_an_image_encoder_its_size_and_channels():
    from suite.config import ModelConfig
    from suite.model import build_model
    from suite.tokenizers import CharTokenizer

    config = ModelConfig(
        frontend={"name": "image", "input_size": 32},
        encoder={"name": "vit", "preset": "tiny"},
        heads={"ctc": {"name": "ctc"}},
    )
    model = build_model(config, CharTokenizer())
    images = torch.rand(2, 3, 32, 32)
    enc = model.encode(*model.frontend(images, torch.full((2,), 32)))
    assert enc.features.shape[0] == 2 and enc.features.shape[-1] == model.encoder.output_dim
