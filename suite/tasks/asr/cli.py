"""The ``asr`` task's CLI verbs: ``suite evaluate``, ``transcribe``, ``stream`` and ``serve``,
plus the decoding and context options they share with ``suite models attach-lm``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from suite.errors import UserError
from suite.tasks.asr.formats import FORMATS
from suite.tasks.asr.pipeline import Transcriber, default_stream_context
from suite.tasks.asr.tuning import LENGTH_BONUSES, LM_WEIGHTS

# Files `suite evaluate` is sometimes handed instead of a manifest.
AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".aiff", ".aif"}


def _transcriber(name: str) -> Transcriber:
    """The :class:`Transcriber` of a shipped name or package folder (another task's package
    is a teaching error)."""
    from suite.model import load_package, resolve

    return Transcriber(load_package(resolve(name), task="asr"), name=name)


def _stream(args: argparse.Namespace) -> None:
    from suite.audio import load_audio
    from suite.streaming import microphone_chunks, stream_audio

    asr = _transcriber(args.model)
    session = asr.stream(att_context=args.context)
    chunk_seconds = args.chunk_ms / 1000
    if args.mic:
        print("listening (Ctrl-C to stop) ...", file=sys.stderr)
        try:
            for chunk in microphone_chunks(asr.sample_rate, chunk_seconds):
                print(f"\r{session.accept(chunk, asr.sample_rate)}", end="", flush=True)
        except KeyboardInterrupt:
            pass
        print(f"\r{session.finish()}")
        return
    audio = load_audio(args.wav, target_sample_rate=asr.sample_rate)
    latencies = []
    for p in stream_audio(session, audio, chunk_seconds, realtime=not args.fast):
        latencies.append(p.latency)
        tag = "final" if p.final else f"{p.seconds:6.2f}s"
        print(f"[{tag} {p.latency * 1000:5.1f} ms] {p.text}", flush=True)
    ms = sorted(x * 1000 for x in latencies)
    print(
        f"per-chunk latency p50 {ms[len(ms) // 2]:.1f} ms, "
        f"p95 {ms[min(len(ms) - 1, int(0.95 * len(ms)))]:.1f} ms ({len(ms)} chunks)",
        file=sys.stderr,
    )


def _serve(args: argparse.Namespace) -> None:
    from suite.serve import serve

    asr = _transcriber(args.model)
    context = args.context or default_stream_context(asr.model)  # refuses an offline model
    serve(
        asr.model,
        host=args.host,
        port=args.port,
        att_context=context,
        idle_timeout=args.idle_timeout,
    )


def _open_manifest(manifest: Path) -> Any:
    """The cuts of ``manifest``, or a teaching error for a missing or foreign file."""
    from lhotse import CutSet

    if not manifest.is_file():
        raise UserError(f"manifest {manifest} does not exist; pass a lhotse cuts .jsonl.gz")
    if manifest.suffix.lower() in AUDIO_SUFFIXES:
        raise UserError(
            f"{manifest} is an audio file, not a manifest; `suite evaluate` scores a lhotse cuts "
            "manifest (.jsonl.gz) that holds reference texts - to transcribe audio files, run "
            f"`suite transcribe MODEL {manifest}`"
        )
    if manifest.stat().st_size == 0:
        raise UserError(
            f"manifest {manifest} is empty (0 bytes): it holds no cuts to score; pass a cuts "
            ".jsonl.gz such as `suite data synth-speech` writes"
        )
    try:
        cuts = CutSet.from_file(manifest).to_eager()
    except Exception as e:  # lhotse raises what its reader raises: JSON, gzip, key errors
        raise UserError(
            f"{manifest} is not a lhotse cuts manifest ({type(e).__name__}); pass a cuts "
            ".jsonl.gz such as `suite data synth-speech` writes"
        ) from None
    if len(cuts) == 0:
        raise UserError(
            f"manifest {manifest} holds no cuts, so there is nothing to score; pass a manifest "
            "with cuts"
        )
    return cuts


def _evaluate(args: argparse.Namespace) -> int:
    from suite import registry
    from suite.model import load_package, package_task, resolve
    from suite.tasks.asr.evaluation import by_group, evaluate_cuts, write_results

    held = package_task(resolve(args.model))
    if held != "asr":  # another task's package is scored its own way (e.g. caption)
        command = getattr(registry.create("task", held), "evaluate_command", None)
        if command is None:
            raise UserError(f"`suite evaluate` does not score '{held}' packages ({args.model})")
        return command(args)
    model = load_package(resolve(args.model), task="asr")
    manifest = Path(args.manifest)
    cuts = _open_manifest(manifest)
    if args.streaming:
        if args.context is not None:
            raise UserError("--streaming scores the model's own streaming context; drop --context")
        args.context = default_stream_context(model)  # a clear error for an offline model
    cuts = _sample(cuts, args)
    if args.context is not None:  # equals streaming with this context, by construction
        default_stream_context(model)  # a clear error for a model not trained for streaming
        model.encoder.att_context = args.context
    if args.tune_lm:
        return _tune_lm(args, model, cuts)
    if args.write:
        raise UserError("--write stores what --tune-lm chose; pass --tune-lm with it")
    scores = evaluate_cuts(model, cuts, head=args.head, errors="skip", **decode_options(args))
    out = Path(args.results or manifest.with_name(manifest.name.split(".")[0] + ".results.jsonl"))
    write_results(scores, out)
    for row in scores.failed:
        print(f"suite: error: {row['error']}", file=sys.stderr)
    if not scores.num_utterances:
        print(f"suite: error: none of the {len(scores.failed)} cuts could be read", file=sys.stderr)
        return 2
    if args.json:
        import torch

        from suite.tasks.asr.evaluation import summary_with_groups

        context = list(args.context) if args.context is not None else None
        described = {"model": args.model, "manifest": str(manifest), "context": context}
        described["decoding"] = decode_options(args)
        described["sample"] = {"limit": args.limit, "per_source": args.per_source}
        described["sample"]["seed"] = args.seed
        described["threads"] = torch.get_num_threads()
        print(json.dumps({**described, **summary_with_groups(scores)}))
        return 1 if scores.failed else 0
    print(
        f"WER {scores.wer:.2%}  CER {scores.cer:.2%}  RTFx {scores.rtfx:.1f}  "
        f"({scores.num_utterances} utterances, {scores.audio_seconds / 3600:.2f} h)"
    )
    groups = by_group(scores, "voice_seen_in_train")
    for seen, label in ((True, "voices used in training"), (False, "voices held out")):
        if seen in groups:
            g = groups[seen]
            print(f"  {label}: WER {g.wer:.2%}  CER {g.cer:.2%}  ({g.num_utterances} utterances)")
    unseen = {r["engine"] for r in scores.per_utterance if r.get("engine_seen_in_train") is False}
    engines = by_group(scores, "engine")
    for engine, g in sorted(engines.items()) if len(engines) > 1 else ():
        label = f"engine {engine}" + (" (held out of training)" if engine in unseen else "")
        print(f"  {label}: WER {g.wer:.2%}  CER {g.cer:.2%}  ({g.num_utterances} utterances)")
    for source, g in sorted(by_group(scores, "source").items()):
        print(f"  {source}: WER {g.wer:.2%}  CER {g.cer:.2%}  ({g.num_utterances} utterances)")
    print(f"per-utterance results: {out}")
    if scores.failed:
        print(
            f"suite: {len(scores.failed)} of {len(scores.failed) + scores.num_utterances} cuts "
            "could not be read and were not scored (listed above and in the results)",
            file=sys.stderr,
        )
        return 1
    return 0


def _sample(cuts: Any, args: argparse.Namespace) -> Any:
    """``--per-source`` (a seeded sample of each source, manifest order kept), then
    ``--limit`` (the first N)."""
    from lhotse import CutSet

    from suite.tasks.asr.peers import sample_per_source

    if args.per_source:
        cuts = CutSet.from_cuts(sample_per_source(list(cuts), args.per_source, args.seed))
    return cuts.subset(first=args.limit) if args.limit else cuts


def _tune_lm(args: argparse.Namespace, model: Any, cuts: Any) -> int:
    """``suite evaluate --tune-lm``: the grid's WER table, the best point, and with
    ``--write`` that point stored as the package's decoding defaults."""
    from suite.model import resolve
    from suite.tasks.asr.tuning import tune_lm, write_decoding

    if args.lm_weight is not None or args.length_bonus is not None or args.decoding == "greedy":
        raise UserError(
            "--tune-lm tries the values of --lm-weights and --length-bonuses; drop "
            "--lm-weight, --length-bonus and --decoding"
        )
    tuning = tune_lm(
        model,
        cuts,
        args.lm_weights,
        args.length_bonuses,
        head=args.head,
        beam_size=args.beam_size,
    )
    for row in tuning.failed:
        print(f"suite: error: {row['error']}", file=sys.stderr)
    best = tuning.best
    if args.json:
        print(json.dumps({"model": args.model, "manifest": args.manifest, **tuning.summary()}))
    else:
        decode_seconds = sum(p.seconds for p in tuning.points)
        print(
            f"LM fusion grid on {args.manifest}: {tuning.greedy.num_utterances} utterances, "
            f"{tuning.audio_seconds / 3600:.2f} h, beam {tuning.beam_size}; encoder once "
            f"({tuning.encode_seconds:.1f} s), {len(tuning.points)} beam searches "
            f"({decode_seconds:.1f} s)\n"
        )
        print(tuning.table())
        print(f"\ngreedy (no LM): WER {tuning.greedy.wer:.2%}  CER {tuning.greedy.cer:.2%}")
        print(
            f"best: LM weight {best.lm_weight:g}, length bonus {best.length_bonus:g}: "
            f"WER {best.wer:.2%}  CER {best.cer:.2%}"
        )
    edges = [
        name
        for name, value, grid in (
            ("LM weight", best.lm_weight, args.lm_weights),
            ("length bonus", best.length_bonus, args.length_bonuses),
        )
        if len(grid) > 1 and value in (min(grid), max(grid))
    ]
    if edges:
        print(
            f"suite: the best {' and '.join(edges)} lie on the edge of the grid; a wider grid "
            "may find a better point",
            file=sys.stderr,
        )
    if args.write:
        package = write_decoding(resolve(args.model), tuning, Path(args.manifest).name)
        print(f"wrote these decoding defaults to {package}/config.yaml", file=sys.stderr)
    return 1 if tuning.failed else 0


def _floats(text: str) -> tuple[float, ...]:
    """Comma-separated numbers (``0.3,0.6,0.9``)."""
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers like 0.3,0.6,0.9, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one number, got {text!r}")
    return values


def _output_paths(files: list[str], out_dir: Path, fmt: str) -> list[Path]:
    """``out_dir/<file's stem>.<fmt>`` per file, or a teaching error when two files would
    write the same one."""
    paths = [out_dir / f"{Path(f).stem}.{fmt}" for f in files]
    seen: dict[Path, str] = {}
    for f, path in zip(files, paths, strict=True):
        if path in seen:
            raise UserError(
                f"{seen[path]} and {f} would both be written to {path}; transcribe them in "
                "separate runs with different --output-dir folders"
            )
        seen[path] = f
    return paths


def _transcribe(args: argparse.Namespace) -> int:
    from suite.audio import AudioError
    from suite.tasks.asr.formats import render

    fmt = args.format
    timestamps = args.timestamps or fmt in ("srt", "vtt")
    out_dir = Path(args.output_dir) if args.output_dir else None
    if out_dir is None and fmt in ("srt", "vtt") and len(args.files) > 1:
        raise UserError(
            f"{fmt} subtitles of {len(args.files)} files cannot share stdout; pass "
            f"--output-dir DIR to write one .{fmt} per file"
        )
    outputs = _output_paths(args.files, out_dir, fmt) if out_dir is not None else None
    asr = _transcriber(args.model)
    results = asr.transcribe(
        args.files,
        head=args.head,
        errors="return",
        timestamps=timestamps,
        **decode_options(args),
    )
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    failed = 0
    for i, (path, result) in enumerate(zip(args.files, results, strict=True)):
        if isinstance(result, AudioError):
            failed += 1
            print(f"suite: error: {result}", file=sys.stderr)
        elif outputs is not None:
            outputs[i].write_text(render(result, fmt, file=path))
            print(outputs[i], flush=True)
        elif fmt == "txt" and not timestamps:
            print(f"{path}\t{result}", flush=True)  # one line per file, as grep and cut like
        else:
            if fmt == "txt" and len(args.files) > 1:
                print(f"# {path}")
            print(render(result, fmt, file=path), end="", flush=True)
    if failed:
        print(
            f"suite: {failed} of {len(args.files)} files could not be transcribed",
            file=sys.stderr,
        )
        return 2 if failed == len(args.files) else 1
    return 0


def _port(text: str) -> int:
    """A TCP port for ``--port``: 0 (any free one) to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port lies in 0-65535 (0 picks a free one), got {port}")
    return port


def _positive(text: str) -> float:
    """A number greater than 0 (seconds, milliseconds)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number above 0, got {text}")
    return value


def add_decoding(parser: argparse.ArgumentParser) -> None:
    """``--decoding``, ``--head`` and the beam options: how a model decodes, with which head."""
    parser.add_argument(
        "--decoding",
        default=None,
        choices=["greedy", "beam"],
        help="default: the head's (beam for a CTC head with an LM, else greedy)",
    )
    parser.add_argument("--head", default=None, help="which head decodes (default: the first)")
    add_beam_options(parser)


def add_beam_options(parser: argparse.ArgumentParser) -> None:
    """``--beam-size``, ``--lm-weight``, ``--length-bonus`` (default: the head's own)."""
    parser.add_argument("--beam-size", type=int, default=None, help="hypotheses kept per step")
    parser.add_argument(
        "--lm-weight", type=float, default=None, help="weight of the CTC head's LM (0: none)"
    )
    parser.add_argument("--length-bonus", type=float, default=None, help="score per token")


def decode_options(args: argparse.Namespace) -> dict[str, Any]:
    """The decoding options given on the command line (the rest stay the head's defaults)."""
    options = {
        "method": getattr(args, "decoding", None),  # attach-lm sets only the beam options
        "beam_size": args.beam_size,
        "lm_weight": args.lm_weight,
        "length_bonus": args.length_bonus,
    }
    return {k: v for k, v in options.items() if v is not None}


class _ContextAction(argparse.Action):
    """Two or three integers: ``LEFT RIGHT [AHEAD]``."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[override]
        if len(values) not in (2, 3):
            parser.error(f"{option_string} takes LEFT RIGHT [AHEAD], got {len(values)} numbers")
        setattr(namespace, self.dest, tuple(values))


def add_context(
    parser: argparse.ArgumentParser,
    text: str = "attention context in encoder frames (default: the model's lowest-latency one)",
) -> None:
    """``--context LEFT RIGHT [AHEAD]``: a streaming model's attention context, in encoder
    frames (chunks of RIGHT + 1 frames, each seeing AHEAD frames past it); ``text`` is its
    help."""
    parser.add_argument(
        "--context",
        type=int,
        nargs="+",
        action=_ContextAction,
        metavar="N",
        default=None,
        help=f"{text}: LEFT RIGHT [AHEAD], chunks of RIGHT + 1 frames that each see AHEAD more",
    )


def add_commands(commands: Any) -> None:
    """Add the asr verbs to the ``suite`` sub-command parser."""
    ev = commands.add_parser(
        "evaluate",
        help="WER, CER and RTFx of a model on a manifest (cuts that cannot be read are listed "
        "on stderr and in the results, not scored; exit 1 if any); a caption package: BLEU-4, "
        "CIDEr, ROUGE-L and attribute accuracy on a scene manifest",
    )
    ev.add_argument("model", help="a shipped model name or a package folder")
    ev.add_argument(
        "manifest", help="lhotse cuts (.jsonl.gz) with reference texts, or scenes (.jsonl)"
    )
    ev.add_argument("--results", default=None, help="per-utterance results (.jsonl)")
    ev.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (totals, and WER per voice group, engine and source)",
    )
    ev.add_argument("--limit", type=int, default=None, help="score only the first N cuts")
    ev.add_argument(
        "--per-source",
        type=int,
        default=None,
        metavar="N",
        help="score a seeded sample of at most N cuts per source (custom.source; on a "
        "synthetic test split, per held-out kind), the sample `python -m suite.tasks.asr.peers` "
        "takes",
    )
    ev.add_argument("--seed", type=int, default=0, help="seed of the --per-source sample")
    ev.add_argument(
        "--streaming",
        action="store_true",
        help="score at the model's default streaming context (what `suite stream` uses; equal "
        "to streaming by construction)",
    )
    ev.add_argument(
        "--tune-lm",
        action="store_true",
        help="grid-search the LM weight and length bonus of the CTC head's beam search on this "
        "manifest (a dev split, never test): the encoder runs once, each point is one beam "
        "search; prints the WER table and the best point",
    )
    ev.add_argument(
        "--lm-weights",
        type=_floats,
        default=LM_WEIGHTS,
        metavar="W,W,...",
        help=f"LM weights --tune-lm tries (default {','.join(map(str, LM_WEIGHTS))})",
    )
    ev.add_argument(
        "--length-bonuses",
        type=_floats,
        default=LENGTH_BONUSES,
        metavar="B,B,...",
        help=f"length bonuses --tune-lm tries (default {','.join(map(str, LENGTH_BONUSES))})",
    )
    ev.add_argument(
        "--write",
        action="store_true",
        help="with --tune-lm: store the best point as the package's decoding defaults "
        "(config.yaml) and the table in its model card",
    )
    add_decoding(ev)
    add_context(ev, "attention context of a streaming model, in encoder frames (default: its own)")
    ev.set_defaults(func=_evaluate)

    tx = commands.add_parser(
        "transcribe",
        help="transcribe audio files, as text, JSON or subtitles, with word times on request "
        "(a file that cannot be read is reported on stderr, the others are still transcribed; "
        "exit 1 if some failed, 2 if all did)",
    )
    tx.add_argument("model", help="a shipped model name or a package folder")
    tx.add_argument("files", nargs="+", help="audio files; long ones are split at pauses")
    tx.add_argument(
        "--format",
        choices=FORMATS,
        default="txt",
        help="txt (default: FILE<tab>TEXT lines on stdout), json (one object per file), or "
        "srt / vtt subtitles (timed, so they imply --timestamps)",
    )
    tx.add_argument(
        "--timestamps",
        action="store_true",
        help="time every word (start, end, confidence; the model needs a CTC head): json "
        "gains words, txt gives [start --> end] lines",
    )
    tx.add_argument(
        "--output-dir",
        default=None,
        metavar="DIR",
        help="write DIR/<file name>.<format> per file (printing each path) instead of stdout",
    )
    add_decoding(tx)
    tx.set_defaults(func=_transcribe)

    st = commands.add_parser("stream", help="stream a file or the microphone, printing partials")
    st.add_argument("model", help="a shipped model name or a package folder (streaming-trained)")
    source = st.add_mutually_exclusive_group(required=True)
    source.add_argument("--wav", help="an audio file, fed in real time")
    source.add_argument("--mic", action="store_true", help="the default input device")
    st.add_argument("--chunk-ms", type=_positive, default=160.0, help="audio per fed chunk")
    add_context(st)
    st.add_argument("--fast", action="store_true", help="--wav as fast as possible, not paced")
    st.set_defaults(func=_stream)

    sv = commands.add_parser(
        "serve", help="a web page that streams the microphone to the model (localhost)"
    )
    sv.add_argument("model", help="a shipped model name or a package folder (streaming-trained)")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: local)")
    sv.add_argument("--port", type=_port, default=8000, help="port; 0 picks a free one")
    sv.add_argument(
        "--idle-timeout",
        type=_positive,
        default=30.0,
        metavar="SECONDS",
        help="close a client that sends nothing for this long, telling it why (default 30)",
    )
    add_context(sv)
    sv.set_defaults(func=_serve)
