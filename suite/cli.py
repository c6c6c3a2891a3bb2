"""The one command-line entry point, ``suite``.

Each subcommand lives beside the code it drives; this module only wires arguments to it.
Errors the user can fix (bad input, bad recipe) print one line and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from suite.bench import BENCHMARKS
from suite.errors import UserError


def _synth_speech(args: argparse.Namespace) -> None:
    from suite.data.synth import synthesize_corpus

    synthesize_corpus(
        out_dir=args.out,
        hours=args.hours,
        seed=args.seed,
        text_file=args.text,
        num_workers=args.jobs,
        augment=not args.no_augment,
    )


def _prepare(args: argparse.Namespace) -> None:
    from suite.data.prepare import prepare_corpus

    prepare_corpus(args.corpus, args.corpus_dir, args.out_dir)


def _train(args: argparse.Namespace) -> None:
    from suite.config import load_recipe
    from suite.train import train

    recipe = load_recipe(args.recipe, args.overrides)
    package = train(recipe, resume=args.resume, progress=not args.quiet, save_every=args.save_every)
    print(f"model package: {package}")


def _train_lm(args: argparse.Namespace) -> None:
    from suite.train.lm import load_lm_recipe, train_lm

    package = train_lm(load_lm_recipe(args.recipe, args.overrides), progress=not args.quiet)
    print(f"LM package: {package}")


def _stream(args: argparse.Namespace) -> None:
    import suite
    from suite.audio import load_audio
    from suite.streaming import microphone_chunks, stream_audio

    asr = suite.load(args.model)
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
    import suite
    from suite.api import default_stream_context
    from suite.serve import serve

    asr = suite.load(args.model)
    context = args.context or default_stream_context(asr.model)  # refuses an offline model
    serve(asr.model, host=args.host, port=args.port, att_context=context)


def _evaluate(args: argparse.Namespace) -> None:
    from lhotse import CutSet

    from suite.api import default_stream_context, resolve
    from suite.evaluate import by_group, evaluate_cuts, write_results
    from suite.model import load_package

    model = load_package(resolve(args.model))
    manifest = Path(args.manifest)
    if not manifest.is_file():
        raise UserError(f"manifest {manifest} does not exist; pass a lhotse cuts .jsonl.gz")
    if args.context is not None:  # equals streaming with this context, by construction
        default_stream_context(model)  # a clear error for a model not trained for streaming
        model.encoder.att_context = args.context
    cuts = CutSet.from_file(manifest)
    scores = evaluate_cuts(model, cuts, head=args.head, **_decode_options(args))
    out = Path(args.results or manifest.with_name(manifest.name.split(".")[0] + ".results.jsonl"))
    write_results(scores, out)
    print(
        f"WER {scores.wer:.2%}  CER {scores.cer:.2%}  RTFx {scores.rtfx:.1f}  "
        f"({scores.num_utterances} utterances, {scores.audio_seconds / 3600:.2f} h)"
    )
    groups = by_group(scores, "voice_seen_in_train")
    for seen, label in ((True, "voices used in training"), (False, "voices held out")):
        if seen in groups:
            g = groups[seen]
            print(f"  {label}: WER {g.wer:.2%}  CER {g.cer:.2%}  ({g.num_utterances} utterances)")
    print(f"per-utterance results: {out}")


def _transcribe(args: argparse.Namespace) -> None:
    import suite

    asr = suite.load(args.model)
    texts = asr.transcribe(args.files, head=args.head, **_decode_options(args))
    for path, text in zip(args.files, texts, strict=True):
        print(f"{path}\t{text}")


def _models(args: argparse.Namespace) -> None:
    import suite

    if args.models_command == "attach-lm":
        from suite.api import resolve
        from suite.model import attach_lm

        given = _decode_options(args)
        out = attach_lm(resolve(args.model), args.lm, args.out, args.head, **given)
        print(f"wrote {out}: its CTC head decodes with {args.lm} ({args.out}/README.md)")
        return
    for name, task in suite.list_models().items():
        print(f"{name}\t{task}")


def _estimate_buckets(args: argparse.Namespace) -> None:
    from suite.data.bucketing import estimate_manifest_buckets

    print(
        estimate_manifest_buckets(
            args.manifest,
            num_buckets=args.buckets,
            num_token_buckets=args.token_buckets,
            tokenizer_dir=args.tokenizer,
            max_duration=args.max_duration,
            quadratic_duration=args.quadratic_duration,
        ),
        end="",
    )


def _oomptimize(args: argparse.Namespace) -> None:
    from suite.train.oomptimizer import oomptimize

    oomptimize(
        args.recipe,
        out=args.out,
        device=args.device,
        memory_cap_gb=args.memory_cap_gb,
        memory_fraction=args.memory_fraction,
        max_batch_size=args.max_batch_size,
        num_buckets=args.buckets,
        log=lambda line: print(line, file=sys.stderr),
    )


def _bench(args: argparse.Namespace) -> None:
    from suite.bench import run_benchmark

    run_benchmark(args.name, json_output=args.json)


def _add_decoding(parser: argparse.ArgumentParser) -> None:
    """``--decoding``, ``--head`` and the beam options: how a model decodes, with which head."""
    parser.add_argument(
        "--decoding",
        default=None,
        choices=["greedy", "beam"],
        help="default: the head's (beam for a CTC head with an LM, else greedy)",
    )
    parser.add_argument("--head", default=None, help="which head decodes (default: the first)")
    _add_beam_options(parser)


def _add_beam_options(parser: argparse.ArgumentParser) -> None:
    """``--beam-size``, ``--lm-weight``, ``--length-bonus`` (default: the head's own)."""
    parser.add_argument("--beam-size", type=int, default=None, help="hypotheses kept per step")
    parser.add_argument(
        "--lm-weight", type=float, default=None, help="weight of the CTC head's LM (0: none)"
    )
    parser.add_argument("--length-bonus", type=float, default=None, help="score per token")


def _decode_options(args: argparse.Namespace) -> dict[str, Any]:
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


def _add_context(
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="suite", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="corpus synthesis and manifest preparation")
    data_commands = data.add_subparsers(dest="data_command", required=True)

    synth = data_commands.add_parser(
        "synth-speech", help="synthesize a multi-voice speech corpus with espeak-ng"
    )
    synth.add_argument("--out", required=True, help="output folder (audio + lhotse manifests)")
    synth.add_argument("--hours", type=float, default=1.0, help="total audio to synthesize")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument(
        "--text",
        default=None,
        help="a text file, one sentence per line (default: the built-in sentence generator)",
    )
    synth.add_argument("--jobs", type=int, default=None, help="worker processes (default: cores)")
    synth.add_argument("--no-augment", action="store_true", help="no noise/reverb augmentation")
    synth.set_defaults(func=_synth_speech)

    prepare = data_commands.add_parser("prepare", help="lhotse manifests for a real corpus")
    prepare.add_argument("corpus", choices=["librispeech"])
    prepare.add_argument("corpus_dir")
    prepare.add_argument("out_dir")
    prepare.set_defaults(func=_prepare)

    est = data_commands.add_parser(
        "estimate-buckets", help="duration (x token) bucket bins of a manifest, as recipe YAML"
    )
    est.add_argument("manifest", help="lhotse cuts (.jsonl.gz)")
    est.add_argument("--buckets", type=int, default=100, help="duration buckets")
    est.add_argument("--token-buckets", type=int, default=None, help="token buckets each (2D)")
    est.add_argument("--tokenizer", default=None, help="tokenizer folder, to count tokens (2D)")
    est.add_argument("--max-duration", type=float, default=None, help="also show batch sizes")
    est.add_argument("--quadratic-duration", type=float, default=None, help="attention cost")
    est.set_defaults(func=_estimate_buckets)

    oom = data_commands.add_parser(
        "oomptimize",
        help="measure the largest batch per bucket under a memory cap; write it into the recipe",
    )
    oom.add_argument("recipe", help="a recipe whose data.sampler is suite_bucketing")
    oom.add_argument("--out", default=None, help="default: RECIPE.oomptimized.yaml beside it")
    cap = oom.add_mutually_exclusive_group()
    cap.add_argument("--memory-cap-gb", type=float, default=None, help="the cap in GiB")
    cap.add_argument(
        "--memory-fraction",
        type=float,
        default=0.9,
        help="the cap as a fraction of GPU memory (CPU: of available memory); default 0.9",
    )
    oom.add_argument("--device", default=None, help="cuda[:N] or cpu (default: train.device)")
    oom.add_argument("--max-batch-size", type=int, default=4096, help="no bucket gets more")
    oom.add_argument("--buckets", type=int, default=None, help="duration buckets to estimate")
    oom.set_defaults(func=_oomptimize)

    tr = commands.add_parser("train", help="train a recipe: suite train RECIPE key.sub=value ...")
    tr.add_argument("recipe", help="a recipe YAML, e.g. recipes/asr/espeak_conformer_ctc.yaml")
    tr.add_argument("overrides", nargs="*", help="overrides such as train.lr=1e-3")
    tr.add_argument("--resume", action="store_true", help="continue the run in train.out_dir")
    tr.add_argument("--save-every", type=int, default=None, help="checkpoint every N steps")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(func=_train)

    lm = commands.add_parser(
        "train-lm", help="pre-train the LLM-adapter's causal LM on corpus text (an LM recipe)"
    )
    lm.add_argument("recipe", help="an LM recipe YAML, e.g. recipes/lm/espeak_text_lm.yaml")
    lm.add_argument("overrides", nargs="*", help="overrides such as train.max_steps=500")
    lm.add_argument("--quiet", action="store_true", help="no progress lines")
    lm.set_defaults(func=_train_lm)

    ev = commands.add_parser("evaluate", help="WER, CER and RTFx of a model on a manifest")
    ev.add_argument("model", help="a shipped model name or a package folder")
    ev.add_argument("manifest", help="lhotse cuts (.jsonl.gz) with reference texts")
    ev.add_argument("--results", default=None, help="per-utterance results (.jsonl)")
    _add_decoding(ev)
    _add_context(ev, "attention context of a streaming model, in encoder frames (default: its own)")
    ev.set_defaults(func=_evaluate)

    tx = commands.add_parser("transcribe", help="transcribe audio files")
    tx.add_argument("model", help="a shipped model name or a package folder")
    tx.add_argument("files", nargs="+")
    _add_decoding(tx)
    tx.set_defaults(func=_transcribe)

    st = commands.add_parser("stream", help="stream a file or the microphone, printing partials")
    st.add_argument("model", help="a shipped model name or a package folder (streaming-trained)")
    source = st.add_mutually_exclusive_group(required=True)
    source.add_argument("--wav", help="an audio file, fed in real time")
    source.add_argument("--mic", action="store_true", help="the default input device")
    st.add_argument("--chunk-ms", type=float, default=160.0, help="audio per fed chunk")
    _add_context(st)
    st.add_argument("--fast", action="store_true", help="--wav as fast as possible, not paced")
    st.set_defaults(func=_stream)

    sv = commands.add_parser(
        "serve", help="a web page that streams the microphone to the model (localhost)"
    )
    sv.add_argument("model", help="a shipped model name or a package folder (streaming-trained)")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: local)")
    sv.add_argument("--port", type=int, default=8000, help="port; 0 picks a free one")
    _add_context(sv)
    sv.set_defaults(func=_serve)

    models = commands.add_parser("models", help="list the shipped models (or attach an LM)")
    models_commands = models.add_subparsers(dest="models_command", required=False)
    attach = models_commands.add_parser(
        "attach-lm", help="copy a model package with an LM for its CTC head's beam search"
    )
    attach.add_argument("model", help="a shipped model name or a package folder")
    attach.add_argument("lm", help="an LM package from `suite train-lm` (same tokenizer)")
    attach.add_argument("--out", required=True, help="the new package folder")
    attach.add_argument("--head", default=None, help="the CTC head (default: the first)")
    _add_beam_options(attach)
    models.set_defaults(func=_models)

    bench = commands.add_parser("bench", help="run a benchmark (results go in BENCHMARKS.md)")
    bench.add_argument("name", choices=sorted(BENCHMARKS))
    bench.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    bench.set_defaults(func=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse ends a `nargs="*"` positional at the first flag, so `suite train R --quiet a=b`
    # would leave `a=b` over; overrides may come anywhere after the recipe.
    training = getattr(args, "command", None) in ("train", "train-lm")
    if extra and training and all("=" in e for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    func: Callable[[argparse.Namespace], int | None] = args.func
    try:
        return func(args) or 0
    except UserError as e:
        print(f"suite: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("suite: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`suite evaluate ... | head -1`): stop quietly
        sys.stdout = None  # type: ignore[assignment]  # no flush of the closed pipe at exit
        return 141


if __name__ == "__main__":
    sys.exit(main())
