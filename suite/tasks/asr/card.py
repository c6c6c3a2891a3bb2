"""The model card (``README.md``) of an open-domain recognizer, filled from evaluation results.

``scripts/evaluate_open_asr.sh`` writes one ``suite evaluate --json`` (or
``python -m suite.tasks.asr.peers --json``) object per file into a results folder
(:data:`RESULT_FILES`); this module turns the folder into the card's results table, beside what
the package says of itself (size, parameters, contexts, decoding) and the data it was trained
on, with each source's license and credit:

    python -m suite.tasks.asr.card PACKAGE RESULTS_DIR [--name NAME] [--write]

Sections that other commands write into a card (``suite models attach-lm``'s language model,
``suite evaluate --tune-lm --write``'s tuning grid) are carried over from the package's
current card. A result that is missing shows as "-" (not measured), never as a number.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from suite.errors import UserError

# Results folder: what each file holds (the command that writes it is in the script).
RESULT_FILES = {
    "open": "open_test.json",  # synthetic test split, default decoding, full context
    "open_greedy": "open_test_greedy.json",  # the same, greedy (no LM)
    "open_streaming": "open_test_streaming.json",  # the same, default streaming context
    "real": "real_test.json",  # pooled recorded test speech
    "real_greedy": "real_test_greedy.json",
    "real_streaming": "real_test_streaming.json",
    "real_peer": "real_test_pocketsphinx.json",  # PocketSphinx on the same cuts
}
# Synthetic rows: label, the `kind` group of `suite evaluate --json`, and the target.
SYNTHETIC_ROWS = (
    ("open-domain text, voices seen in training", "seen", "8% (LM)"),
    ("unseen voices (espeak-ng configurations held out)", "held_out_voice", "15%"),
    ("held-out synthesizer (SVOX Pico)", "held_out_engine", "15%"),
)
REAL_TARGET = "35%"
STREAMING_TARGET = 1.15
KEPT_SECTIONS = ("## Language model", "## LM fusion tuning")

# Recorded speech of the shared data pack (its README: sources, commits, licenses, credits).
REAL_SPEECH = (
    (
        "speechocean762",
        "5.6 h, 250 non-native speakers (L1 Mandarin), read sentences",
        "free for commercial and non-commercial use (README); the authors' copy is tagged "
        "Apache-2.0",
        "J. Zhang et al., speechocean762: An Open-Source Non-native English Speech Corpus "
        "For Pronunciation Assessment, Interspeech 2021 (jimbozhang/speechocean762)",
    ),
    (
        "cathy",
        "1.4 h, one US English speaker reading CMU ARCTIC prompts",
        "CC0 1.0",
        "rhasspy/dataset-voice-cathy",
    ),
    (
        "ljspeech",
        "0.7 h of LJ Speech 1.1 (Linda Johnson, LibriVox)",
        "public domain",
        "Keith Ito, The LJ Speech Dataset, 2017",
    ),
    (
        "fsdd",
        "0.4 h of spoken digits, 6 speakers",
        "CC BY-SA 4.0",
        "Free Spoken Digit Dataset (FSDD) by Jakobovski and contributors; changed: resampled to "
        "16 kHz and encoded as Opus 32 kbit/s",
    ),
    (
        "dc_tts",
        "0.3 h, LJ Speech sentences read by PhilippMatthes",
        "Apache-2.0 (repository)",
        "github.com/PhilippMatthes/dc_tts",
    ),
)
NOISE = (
    (
        "Speech Commands background noise (6 files)",
        "CC BY 4.0",
        "Pete Warden, Speech Commands (arXiv:1804.03209), via chaeyoung-lee/wids_tutorial; "
        "changed: encoded as Opus 32 kbit/s",
    ),
    (
        "ESC-10 environmental sounds (400 clips)",
        "CC BY 3.0 (per clip: CC0, CC BY 3.0, CC Sampling+)",
        "K. J. Piczak, ESC: Dataset for Environmental Sound Classification, ACM MM "
        "2015; per-clip authors in the pack's sounds/esc10.jsonl",
    ),
    (
        "audiomentations demo noises and room impulse responses",
        "MIT",
        "Copyright (c) 2019 Iver Jordal (iver56/audiomentations)",
    ),
)
ENGINES = {
    "espeak": ("espeak-ng (formant synthesis; English dialects x voice variants)", "GPL-3+"),
    "flite": ("CMU Flite voices kal16, awb, rms, slt", "BSD-style (CMU)"),
    "festival": ("Festival: kal and ked diphone voices, CMU ARCTIC slt HTS voice",
                 "X11-style (Festival, its voices)"),
    "pico": ("SVOX Pico en-US and en-GB (ttspico)", "Apache-2.0"),
}  # fmt: skip


def load_results(
    results_dir: str | Path, files: dict[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    """The result ``files`` (default :data:`RESULT_FILES`; key -> file name) that are in
    ``results_dir``, by key (each the last JSON object of its file)."""
    files = RESULT_FILES if files is None else files
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise UserError(f"results folder {results_dir} does not exist; run the evaluation first")
    found = {}
    for key, name in files.items():
        path = results_dir / name
        if path.is_file() and path.stat().st_size:
            try:
                found[key] = json.loads(path.read_text().strip().splitlines()[-1])
            except json.JSONDecodeError:
                raise UserError(f"{path} is not `suite evaluate --json` output") from None
    if not found:
        raise UserError(f"{results_dir} holds none of {', '.join(files.values())}")
    return found


def _group(result: dict[str, Any] | None, key: str | None, value: str | None) -> dict | None:
    if result is None:
        return None
    if key is None:
        return result
    return result.get("groups", {}).get(key, {}).get(value)


def _pct(group: dict | None) -> str:
    return "-" if group is None else f"{group['wer']:.2%}"


def _ratio(streaming: dict | None, full: dict | None) -> str:
    if streaming is None or full is None:
        return "-"
    if (streaming["utterances"], streaming.get("words")) != (full["utterances"], full.get("words")):
        return "n/a (other cuts)"  # runs on different samples do not compare
    if full["wer"] == 0:
        return "-" if streaming["wer"] else "1.00"
    return f"{streaming['wer'] / full['wer']:.2f}"


def results_table(results: dict[str, dict[str, Any]], has_lm: bool = True) -> str:
    """The markdown results table: one row per synthetic kind, per recorded source and for all
    recorded speech pooled; WER with the default decoding, greedy, streaming at the default
    context, the streaming/full ratio, PocketSphinx on the same recorded cuts, and the target."""
    main = "WER (LM)" if has_lm else "WER"
    lines = [
        f"| test split | utterances | {main} | WER (greedy) | streaming WER | streaming / full "
        "| PocketSphinx | target |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]

    def row(label: str, prefix: str, key: str | None, value: str | None, target: str) -> None:
        full = _group(results.get(prefix), key, value)
        if full is None:
            return
        greedy = _group(results.get(f"{prefix}_greedy"), key, value)
        streaming = _group(results.get(f"{prefix}_streaming"), key, value)
        peer = _group(results.get(f"{prefix}_peer"), key, value) if prefix == "real" else None
        cells = [
            label,
            str(full["utterances"]),
            _pct(full),
            _pct(greedy),
            _pct(streaming),
            _ratio(streaming, full),
            _pct(peer),
            f"at most {target}",
        ]
        lines.append("| " + " | ".join(cells) + " |")

    for label, kind, target in SYNTHETIC_ROWS:
        row(label, "open", "kind", kind, target)
    sources = sorted(results.get("real", {}).get("groups", {}).get("source", {}))
    for source in sources:
        row(f"recorded speech: {source}", "real", "source", source, REAL_TARGET)
    if "real" in results:
        row("recorded speech, all sources pooled", "real", None, None, REAL_TARGET)
    return "\n".join(lines)


def _sample_note(results: dict[str, dict[str, Any]]) -> str:
    notes = set()
    for key, result in results.items():
        sample = result.get("sample") or {}
        what = key.split("_")[0]
        if sample.get("per_source"):
            notes.add(f"{what}: a seeded sample of {sample['per_source']} cuts per source")
        elif sample.get("limit"):
            notes.add(f"{what}: the first {sample['limit']} cuts")
    return "; ".join(sorted(notes))


def _speed(results: dict[str, dict[str, Any]]) -> str:
    parts = []
    for key, what in (("open", "default decoding"), ("open_greedy", "greedy")):
        if key in results and results[key].get("rtfx") not in (None, float("inf")):
            parts.append(f"RTFx {results[key]['rtfx']:.1f} ({what})")
    if not parts:
        return "not measured"
    threads = results["open"].get("threads") if "open" in results else None
    on = f" on {threads} CPU threads" if threads else ""
    return ", ".join(parts) + f" in `suite evaluate`{on} (audio decoding included)"


def describe_package(package: str | Path) -> dict[str, Any]:
    """What a package says of itself: its model spec, sizes and parameter counts."""
    from safetensors import safe_open

    package = Path(package)
    config = yaml.safe_load((package / "config.yaml").read_text())
    acoustic = lm = 0
    with safe_open(str(package / "model.safetensors"), framework="pt") as f:
        for name in f.keys():  # noqa: SIM118 - safe_open has no __iter__
            numel = 1
            for n in f.get_slice(name).get_shape():
                numel *= n
            if ".lm." in name:
                lm += numel
            else:
                acoustic += numel
    return {
        "model": config.get("model", {}),
        "megabytes": (package / "model.safetensors").stat().st_size / 1e6,
        "parameters": acoustic,
        "lm_parameters": lm,
    }


def _kept_sections(card: str) -> str:
    kept = []
    for title in KEPT_SECTIONS:
        match = re.search(rf"\n{re.escape(title)}\n.*?(?=\n## |\Z)", card, flags=re.S)
        if match:
            kept.append(match.group(0).strip("\n"))
    return "\n\n".join(kept)


def _data_section(text_summary: dict | None, synth: dict | None) -> list[str]:
    out = ["## Data, licenses and credits", ""]
    if synth is not None:
        hours = synth.get("hours", {})
        held = synth.get("settings", {}).get("held_out_engine")
        versions = synth.get("settings", {}).get("engines", {})
        out += [
            f"**Synthetic speech** (`suite data synth-speech`, {synth.get('total_hours', 0):.1f} "
            f"h: train {hours.get('train', 0):.1f} h, dev {hours.get('dev', 0):.1f} h, test "
            f"{hours.get('test', 0):.1f} h) of the open-domain text below, spoken by:",
            "",
            "| engine | voices | version | license | in training |",
            "|---|---|---|---|---|",
        ]
        for name, version in versions.items():
            what, license_ = ENGINES.get(name, (name, "see its package"))
            seen = "no: test only (held out)" if name == held else "yes"
            out.append(f"| {name} | {what} | {version} | {license_} | {seen} |")
        out.append("")
    if text_summary is not None:
        out += [
            f"**Open-domain text** (`suite data text`: {text_summary.get('sentences', 0):,} "
            f"sentences, {text_summary.get('word_types', 0):,} word types, split by sentence: "
            "no dev or test sentence is in the recognizer's or the LM's training text), read "
            "from these Debian packages (license as each package's copyright file states it):",
            "",
            "| source | packages | license | sentences (train) |",
            "|---|---|---|---:|",
        ]
        for name, source in text_summary.get("sources", {}).items():
            listed = source.get("packages", [])
            packages = ", ".join(f"{p['name']} {p['version']}" for p in listed)
            licenses = ", ".join(sorted({p["license"] for p in listed}))
            if not listed:  # the built-in grammar, or a user's --extra file
                packages = "suite's sentence grammar" if name == "grammar" else "given file"
                licenses = "this repository's" if name == "grammar" else "as given"
            train = source.get("sentences", {}).get("train", 0)
            out.append(f"| {name} | {packages} | {licenses} | {train:,} |")
        out.append("")
    out += [
        "**Recorded speech** (the shared data pack's `speech-real`, 16 kHz Opus; its train "
        "splits in training, its test splits below):",
        "",
        "| source | what | license | credit |",
        "|---|---|---|---|",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in REAL_SPEECH),
        "",
        "**Noise and rooms** (training augmentation only: added at random SNRs, convolved):",
        "",
        "| source | license | credit |",
        "|---|---|---|",
        *(f"| {a} | {b} | {c} |" for a, b, c in NOISE),
        "",
        "FSDD's audio and manifests are distributed under CC BY-SA 4.0 (ShareAlike); the license "
        "files that must travel with the data are in the pack's `LICENSES/`.",
    ]
    return out


def model_card(
    package: str | Path,
    results: dict[str, dict[str, Any]],
    name: str,
    text_summary: dict | None = None,
    synth: dict | None = None,
    recipe: str = "recipes/asr/open_conformer_ctc_cpu.yaml",
) -> str:
    """The card's markdown for ``package`` from ``results`` (:func:`load_results`)."""
    info = describe_package(package)
    model = info["model"]
    encoder = model.get("encoder", {})
    heads = model.get("heads", {})
    ctc = next((spec for spec in heads.values() if spec.get("name") == "ctc"), {})
    has_lm = bool(ctc.get("lm"))
    contexts = encoder.get("att_contexts")
    vocab = model.get("tokenizer", {}).get("vocab_size", "?")
    encoder_text = ", ".join(
        f"{k} {v}"
        for k, v in encoder.items()
        if k not in ("name", "att_contexts") and v is not None
    )
    lm_text = (
        f" decoded by prefix beam search with a transformer LM over the same pieces "
        f"({info['lm_parameters'] / 1e6:.2f}M parameters, frozen inside the package; LM weight "
        f"{ctc.get('lm_weight')}, length bonus {ctc.get('length_bonus')}, beam "
        f"{ctc.get('beam_size')})"
        if has_lm
        else " decoded greedily (no LM)"
    )
    lines = [
        f"# {name}",
        "",
        f"English speech recognition: `{encoder.get('name')}` encoder ({encoder_text}), "
        f"{info['parameters'] / 1e6:.1f}M parameters, with a CTC head over a {vocab}-piece BPE "
        f"vocabulary,{lm_text}. {info['megabytes']:.1f} MB. "
        + (
            "Trained with the attention contexts "
            + ", ".join("full" if c is None else str(tuple(c)) for c in contexts)
            + " (left, right in encoder frames), so the same weights transcribe offline and "
            "stream."
            if contexts
            else ""
        ),
        "",
        "```python",
        "import suite",
        "",
        f'asr = suite.load("{name}")',
        'asr.transcribe(["a.wav"])  # any rate, mono or stereo',
        "with asr.stream() as s:  # streaming at the lowest-latency trained context",
        "    s.accept(chunk, sample_rate=16000)",
        "```",
        "",
        "## Results",
        "",
        "`scripts/evaluate_open_asr.sh` (each cell one `suite evaluate --json`; PocketSphinx's "
        "stock en-us model through `python -m suite.tasks.asr.peers` on the same recorded cuts). "
        f"Streaming: the model's default streaming context; target for streaming / full: at "
        f"most {STREAMING_TARGET}.",
        "",
        results_table(results, has_lm),
        "",
        f"Speed: {_speed(results)}.",
    ]
    note = _sample_note(results)
    if note:
        lines += ["", f"Scored on samples, not whole splits ({note})."]
    lines += [
        "",
        "## Limits",
        "",
        "- English only, 16 kHz (other rates are resampled; stereo is mixed to mono).",
        "- Most training speech is synthetic; the recorded speech is about 8 hours, most of it "
        "read sentences of non-native speakers (speechocean762) and a few single speakers: "
        "expect errors on spontaneous, accented or distant speech, and compare the recorded "
        "rows above before relying on it.",
        "- The vocabulary and LM come from documentation, dictionaries, Bibles and quotations "
        "(see the text sources): names, numbers read as digits, and recent words are weak.",
        "- Results on the synthetic splits overstate accuracy on people: the voices are "
        "synthesizers, even the held-out ones.",
        "",
        *_data_section(text_summary, synth),
        "",
        "## Reproduce",
        "",
        "```bash",
        "make data                                     # engines, Debian text packages, data/text",
        "suite train recipes/lm/open_text_lm.yaml      # the LM and the BPE vocabulary",
        "suite data synth-speech --out data/open --text data/text --hours 12 --engines all \\",
        "    --seed 0",
        "suite data real-speech --out data/real",
        "# the recipe's init_from: the grammar-trained streaming recognizer, five stages of",
        "# recipes/asr/espeak_conformer_ctc_streaming_*.yaml (commands in recipes/asr/README.md)",
        f"suite train {recipe}",
        f"suite models attach-lm runs/{Path(recipe).stem}/model runs/open_text_lm/model \\",
        "    --out PACKAGE --weights-dtype float16",
        "suite evaluate PACKAGE data/open/synth_cuts_dev.jsonl.gz --tune-lm --write --limit 100 \\",
        "    --lm-weights W,... --length-bonuses B,...   # the grid of the tuning section",
        "PER_SOURCE=100 scripts/evaluate_open_asr.sh PACKAGE RESULTS_DIR   # this card's table",
        "```",
    ]
    card_path = Path(package) / "README.md"
    kept = _kept_sections(card_path.read_text()) if card_path.is_file() else ""
    if kept:
        lines += ["", kept]
    return "\n".join(lines) + "\n"


def _json_file(path: str | None) -> dict | None:
    if path is None or not Path(path).is_file():
        return None
    return json.loads(Path(path).read_text())


def main(argv: list[str] | None = None) -> int:
    from suite.io import atomic_write_text

    parser = argparse.ArgumentParser(prog="python -m suite.tasks.asr.card", description=__doc__)
    parser.add_argument("package", help="the model package folder")
    parser.add_argument("results", help="the results folder of scripts/evaluate_open_asr.sh")
    parser.add_argument("--name", default=None, help="the model's name (default: the folder's)")
    parser.add_argument("--text-summary", default="data/text/summary.json")
    parser.add_argument("--synth-corpus", default="data/open/corpus.json")
    parser.add_argument("--recipe", default="recipes/asr/open_conformer_ctc_cpu.yaml")
    parser.add_argument("--write", action="store_true", help="write PACKAGE/README.md")
    args = parser.parse_args(argv)
    try:
        card = model_card(
            args.package,
            load_results(args.results),
            args.name or Path(args.package).resolve().name,
            _json_file(args.text_summary),
            _json_file(args.synth_corpus),
            args.recipe,
        )
    except UserError as e:
        print(f"suite: error: {e}", file=sys.stderr)
        return 2
    if args.write:
        atomic_write_text(Path(args.package) / "README.md", card)
        print(f"wrote {Path(args.package) / 'README.md'}", file=sys.stderr)
    else:
        print(card, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
