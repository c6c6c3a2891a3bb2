"""The ``caption`` task's CLI verbs: ``suite caption FILE...`` (images, audio or videos, as the
package reads), and what ``suite evaluate`` does with a caption package."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from suite.errors import UserError

DEFAULT_MODEL = "default-captioner"


def _options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {"head": getattr(args, "head", None)}
    if getattr(args, "decoding", None):
        options["method"] = args.decoding
    if getattr(args, "beam_size", None):
        options["beam_size"] = args.beam_size
    return options


def _captioner(name: str) -> Any:
    import suite
    from suite.model import package_task, resolve

    task = package_task(resolve(name))
    if task != "caption":
        raise UserError(f"{name} is a '{task}' package, not a captioner; pass --model PACKAGE")
    return suite.load(name)


def _caption(args: argparse.Namespace) -> int:
    captioner = _captioner(args.model)
    failed = 0
    for path in args.images:  # one at a time: an unreadable file does not stop the others
        prefix = f"{path}\t" if len(args.images) > 1 else ""
        try:
            if captioner.modality == "audio":
                segments = captioner.caption(
                    [path], timestamps=True, window=args.window, **_options(args)
                )[0]
            else:
                segments = None
                text = captioner.caption([path], **_options(args))[0]
        except UserError as e:
            print(f"suite: error: {e}", file=sys.stderr)
            failed += 1
            continue
        if segments is None:
            print(prefix + text)
        elif len(segments) == 1 and not args.timestamps:
            print(prefix + segments[0].text)
        else:  # a long recording: one line per window
            for s in segments:
                print(f"{prefix}{s.start:.2f}\t{s.end:.2f}\t{s.text}")
    return 1 if failed else 0


def _results_path(args: argparse.Namespace, manifest: Path) -> Path:
    return Path(args.results or manifest.with_name(manifest.name.split(".")[0] + ".results.jsonl"))


def _evaluate_clips(args: argparse.Namespace, model: Any, manifest: Path) -> int:
    from suite.data.videos import ClipManifest
    from suite.tasks.caption import CaptionTask
    from suite.tasks.caption.evaluation import write_rows

    clips = ClipManifest.from_jsonl(manifest)
    scores = CaptionTask().score(model, clips, **_options(args))
    out = _results_path(args, manifest)
    write_rows(scores, out)
    print(
        f"BLEU-4 {scores.bleu4:.3f}  CIDEr {scores.cider:.3f}  ROUGE-L {scores.rouge_l:.3f}  "
        f"object accuracy {scores.object_accuracy:.1%}  motion accuracy "
        f"{scores.motion_accuracy:.1%}  event accuracy {scores.event_accuracy:.1%}  "
        f"attribute accuracy {scores.attribute_accuracy:.1%}  fact recall "
        f"{scores.fact_recall:.1%}  ({len(clips)} clips)"
    )
    novel = [row for row in scores.rows if row["novel"]]
    if novel and len(novel) < len(clips):
        right = sum(row["events"] for row in novel)
        print(f"  held-out compositions: event accuracy {right / len(novel):.1%}")
    print(f"per-clip captions: {out}")
    return 0


def _evaluate_sounds(args: argparse.Namespace, model: Any, manifest: Path) -> int:
    from suite.tasks.caption import CaptionTask
    from suite.tasks.caption.audio_data import SoundManifest
    from suite.tasks.caption.evaluation import write_rows

    scenes = SoundManifest.from_jsonl(manifest)
    scores = CaptionTask().score(model, scenes, **_options(args))
    out = Path(args.results or manifest.with_name(manifest.name.split(".")[0] + ".results.jsonl"))
    write_rows(scores, out)
    print(
        f"BLEU-4 {scores.bleu4:.3f}  CIDEr {scores.cider:.3f}  ROUGE-L {scores.rouge_l:.3f}  "
        f"event recall {scores.event_recall:.1%}  event precision {scores.event_precision:.1%}  "
        f"order accuracy {scores.order_accuracy:.1%}  count accuracy "
        f"{scores.count_accuracy:.1%}  all right {scores.attribute_accuracy:.1%}  "
        f"({len(scenes)} scenes)"
    )
    novel = [row for row in scores.rows if row["novel"]]
    if novel and len(novel) < len(scenes):
        recall = sum(row["recall"] for row in novel) / len(novel)
        precision = sum(row["precision"] for row in novel) / len(novel)
        print(f"  held-out combinations: event recall {recall:.1%}, precision {precision:.1%}")
    print(f"per-scene captions: {out}")
    return 0


def evaluate(args: argparse.Namespace) -> int:
    """Score a caption package on a scene manifest; print the metrics, write the per-scene
    captions and missing facts beside the manifest (or at ``--results``)."""
    from suite.data.images import IMAGE_SUFFIXES
    from suite.data.scenes import SceneManifest
    from suite.model import load_package, resolve
    from suite.tasks.caption import CaptionTask
    from suite.tasks.caption.audio_data import is_sound_manifest
    from suite.tasks.caption.evaluation import write_rows
    from suite.tasks.caption.pipeline import AUDIO_SUFFIXES
    from suite.tasks.caption.video_data import is_clip_manifest
    from suite.tasks.caption.video_pipeline import ONLY_VIDEO_SUFFIXES

    model = load_package(resolve(args.model), task="caption")
    manifest = Path(args.manifest)
    if manifest.suffix.lower() in ONLY_VIDEO_SUFFIXES:
        raise UserError(
            f"{manifest} is a video, not a manifest; `suite evaluate` scores a clip manifest "
            f"(.jsonl from `suite data synth-videos`) - to caption videos, run `suite caption "
            f"{manifest} --model {args.model}`"
        )
    if manifest.suffix.lower() in AUDIO_SUFFIXES:
        raise UserError(
            f"{manifest} is audio, not a manifest; `suite evaluate` scores a sound scene "
            f"manifest (.jsonl from `suite data synth-sounds`) - to caption audio, run `suite "
            f"caption {manifest} --model {args.model}`"
        )
    if manifest.suffix.lower() in IMAGE_SUFFIXES:
        raise UserError(
            f"{manifest} is an image, not a manifest; `suite evaluate` scores a scene manifest "
            f"(.jsonl from `suite data synth-scenes`) - to caption images, run `suite caption "
            f"{manifest} --model {args.model}`"
        )
    if manifest.is_file() and is_sound_manifest(manifest):
        return _evaluate_sounds(args, model, manifest)
    if manifest.is_file() and is_clip_manifest(manifest):
        return _evaluate_clips(args, model, manifest)
    scenes = SceneManifest.from_jsonl(manifest)
    scores = CaptionTask().score(model, scenes, **_options(args))
    out = Path(args.results or manifest.with_name(manifest.name.split(".")[0] + ".results.jsonl"))
    write_rows(scores, out)
    novel = [row for row in scores.rows if row["novel"]]
    if getattr(args, "json", False):
        options = _options(args)
        print(
            json.dumps(
                {
                    "model": args.model,
                    "manifest": str(manifest),
                    "scenes": len(scenes),
                    "held_out_scenes": len(novel),
                    "decoding": options.get("method", "greedy"),
                    "beam_size": options.get("beam_size"),
                    **scores.metrics(),
                    "results": str(out),
                }
            )
        )
        return 0
    print(
        f"BLEU-4 {scores.bleu4:.3f}  CIDEr {scores.cider:.3f}  ROUGE-L {scores.rouge_l:.3f}  "
        f"attribute accuracy {scores.attribute_accuracy:.1%}  fact recall "
        f"{scores.fact_recall:.1%}  ({len(scenes)} scenes)"
    )
    if novel and len(novel) < len(scenes):
        right = sum(not row["missing"] for row in novel)
        print(f"  held-out compositions: attribute accuracy {right / len(novel):.1%}")
    print(f"per-scene captions: {out}")
    return 0


def add_commands(commands: Any) -> None:
    """Add ``suite caption`` to the ``suite`` sub-command parser."""
    cap = commands.add_parser(
        "caption",
        help="caption images, audio or videos, as the model reads (a file that cannot be read is "
        "reported on stderr, the others are still captioned; exit 1 if any); a recording "
        "longer than --window prints one line per window: start, end (seconds), caption",
    )
    cap.add_argument(
        "images",
        nargs="+",
        help="image files (PNG, JPEG, ...), audio files (WAV, FLAC, ...) or video files "
        "(MP4, AVI, MKV, ...)",
    )
    cap.add_argument("--model", default=DEFAULT_MODEL, help="a caption package or shipped name")
    cap.add_argument("--decoding", choices=["greedy", "beam"], default=None)
    cap.add_argument("--beam-size", type=int, default=None, help="hypotheses kept per step")
    cap.add_argument("--head", default=None, help="which head decodes (default: the first)")
    cap.add_argument(
        "--window", type=float, default=10.0, help="audio: seconds per captioned window"
    )
    cap.add_argument(
        "--timestamps",
        action="store_true",
        help="audio: print start and end times even for a recording of one window",
    )
    cap.set_defaults(func=_caption)
