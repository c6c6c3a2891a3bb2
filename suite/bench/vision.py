"""``suite bench vision``: what masking buys MAE pretraining, and what our encoder wrapper costs.

1. MAE training step (forward, backward, AdamW step) of the CIFAR recipe's model (ViT ``small``,
   32 px, patch 4: 64 patches; 2-block decoder of width 128) at mask ratio 0.75, where the
   encoder sees the 16 visible patches, against the same model with the encoder on all 64
   patch tokens (the decoder then reads encoded tokens only, no mask tokens; the loss covers
   every patch, as SimMIM's). Images per second; target: masking at least 2.5x faster.
2. Inference forward of :class:`~suite.encoders.vision.VitEncoder` against the bare timm model
   it wraps (``forward_features`` on the same weights): the wrapper only checks the input and
   drops the class token, so the ratio should be within 3% of 1.

Times are medians of several timed passes after warm-up, the two variants interleaved (in
turns, first one then the other leading) so that machine noise hits both alike. On CUDA when
there is a GPU (synchronized around each pass), else on the CPU.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from suite.bench import print_header, report

BATCH, IMAGE_SIZE = 64, 32
REPEATS, WARMUP = 8, 2
MASK_RATIO = 0.75
PRESET = "small"  # the ViT of recipes/vision/cifar_mae_vit_cpu.yaml


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _timed(step: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _interleaved(steps: dict[str, Callable[[], None]], device: torch.device) -> dict[str, float]:
    """Median seconds per call of each step, run in turns."""
    for _ in range(WARMUP):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for repeat in range(REPEATS):
        # The order turns every round: on a shared machine the first of a pair ran up to 10%
        # faster, whichever it was.
        for name in names if repeat % 2 == 0 else names[::-1]:
            times[name].append(_timed(steps[name], device))
    return {name: statistics.median(values) for name, values in times.items()}


def _mae_steps(device: torch.device) -> dict[str, Callable[[], None]]:
    import suite
    from suite.encoders.mae import build_mae, random_mask

    torch.manual_seed(0)
    frontend = suite.create_frontend("image", input_size=IMAGE_SIZE)
    encoder = suite.create_encoder("vit", preset=PRESET, img_size=IMAGE_SIZE)
    model = build_mae(encoder, frontend, mask_ratio=MASK_RATIO).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randn(BATCH, 3, IMAGE_SIZE, IMAGE_SIZE, device=device)
    h, w = model.grid(images)
    nothing_hidden = torch.zeros(BATCH, h * w, dtype=torch.bool, device=device)

    def step(loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def masked() -> None:
        mask = random_mask(BATCH, h * w, MASK_RATIO, device=device)
        step(model(images, mask=mask).loss)

    def all_tokens() -> None:
        pred = model.predict(images, nothing_hidden, (h, w))  # the encoder on every patch
        step((pred.float() - model.targets(images)).pow(2).mean())

    return {"masked": masked, "all_tokens": all_tokens}


def _wrapper_steps(device: torch.device) -> tuple[dict[str, Callable[[], None]], int, str]:
    import timm

    import suite

    torch.manual_seed(0)
    ours = suite.create_encoder("vit", preset=PRESET, img_size=IMAGE_SIZE).to(device).eval()
    bare = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        num_classes=0,
        global_pool="",
        img_size=IMAGE_SIZE,
        patch_size=ours.patch_size,
        embed_dim=ours.output_dim,
        depth=len(ours.layers),
        num_heads=ours.model.blocks[0].attn.num_heads,
        dynamic_img_size=True,
    )
    bare.load_state_dict(ours.model.state_dict())
    bare = bare.to(device).eval()
    images = torch.randn(BATCH, 3, IMAGE_SIZE, IMAGE_SIZE, device=device)

    def ours_forward() -> None:
        with torch.inference_mode():
            ours(images)

    def bare_forward() -> None:
        with torch.inference_mode():
            bare.forward_features(images)

    with torch.inference_mode():  # the same numbers, before timing them
        same = torch.equal(ours(images).features, bare.forward_features(images)[:, 1:])
    if not same:
        raise RuntimeError("the wrapped and the bare ViT disagree; the comparison is void")
    params = sum(p.numel() for p in ours.parameters())
    shape = f"vit {PRESET} (patch {ours.patch_size}, d{ours.output_dim}, {len(ours.layers)} blocks)"
    return {"ours": ours_forward, "timm": bare_forward}, params, shape


def measure() -> dict:
    """Both comparisons; returns the figures as a dict."""
    device = _device()
    mae = _interleaved(_mae_steps(device), device)
    wrapper_steps, params, shape = _wrapper_steps(device)
    wrapper = _interleaved(wrapper_steps, device)
    return {
        "config": {
            "device": str(device),
            "batch": BATCH,
            "image_size": IMAGE_SIZE,
            "mask_ratio": MASK_RATIO,
            "encoder": shape,
            "encoder_parameters": params,
            "threads": torch.get_num_threads(),
            "repeats": REPEATS,
        },
        "mae_images_per_sec": BATCH / mae["masked"],
        "all_tokens_images_per_sec": BATCH / mae["all_tokens"],
        "mae_speedup": mae["all_tokens"] / mae["masked"],
        "ours_images_per_sec": BATCH / wrapper["ours"],
        "timm_images_per_sec": BATCH / wrapper["timm"],
        "wrapper_overhead": wrapper["ours"] / wrapper["timm"] - 1,
    }


def _markdown(result: dict) -> None:
    c = result["config"]
    print_header("Vision: MAE step and encoder wrapper", "vision", c["threads"])
    print(
        f"- Model: {c['encoder']}, {c['encoder_parameters'] / 1e6:.1f}M parameters; batch "
        f"{c['batch']} of {c['image_size']} px; {c['device']}\n"
    )
    print("| measure | images/s | against | images/s | ratio | target |")
    print("|---|---:|---|---:|---:|---|")
    print(
        f"| MAE step, mask {c['mask_ratio']:.2f} | {result['mae_images_per_sec']:.1f} | "
        f"all-token step | {result['all_tokens_images_per_sec']:.1f} | "
        f"{result['mae_speedup']:.2f}x | >= 2.5x |"
    )
    print(
        f"| our ViT encoder forward | {result['ours_images_per_sec']:.1f} | bare timm "
        f"forward_features | {result['timm_images_per_sec']:.1f} | "
        f"{result['wrapper_overhead']:+.1%} | within 3% |"
    )


def main(json_output: bool = False) -> None:
    report(measure(), json_output, _markdown)


if __name__ == "__main__":
    main()
