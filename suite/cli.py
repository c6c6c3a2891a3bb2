"""The one command-line entry point, ``suite``.

Each subcommand lives beside the code it drives; this module only wires arguments to it.
Errors the user can fix (bad input, bad recipe) print one line and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

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
        engines=args.engines,
        held_out_engine=args.held_out_engine,
    )


def _text(args: argparse.Namespace) -> None:
    from suite.data.text_corpus import build_text_corpus

    build_text_corpus(
        args.out,
        sources=args.sources,
        extra=args.extra,
        grammar=args.grammar,
        seed=args.seed,
        dev=args.dev,
        test=args.test,
        jobs=args.jobs,
    )


def _real_speech(args: argparse.Namespace) -> None:
    from suite.data.real_speech import prepare_real_speech

    prepare_real_speech(args.out, root=args.root, sources=args.sources)


def _prepare(args: argparse.Namespace) -> None:
    from suite.data.prepare import prepare_corpus

    prepare_corpus(args.corpus, args.corpus_dir, args.out_dir)


def _train(args: argparse.Namespace) -> int | None:
    from suite.config import load_recipe
    from suite.train import train
    from suite.train.distributed import launch, under_launcher

    if args.nproc > 1 and not under_launcher():
        load_recipe(args.recipe, args.overrides)  # a bad recipe fails here, once
        return launch(args.nproc, ["train", *_train_argv(args)])
    recipe = load_recipe(args.recipe, args.overrides)
    package = train(recipe, resume=args.resume, progress=not args.quiet, save_every=args.save_every)
    if package is not None:
        print(f"model package: {package}")
    return None


def _train_argv(args: argparse.Namespace) -> list[str]:
    """``suite train``'s arguments as each launched process gets them (no ``--nproc``)."""
    argv = [args.recipe, *args.overrides]
    argv += ["--resume"] * args.resume + ["--quiet"] * args.quiet
    return argv + (["--save-every", str(args.save_every)] if args.save_every else [])


def _models(args: argparse.Namespace) -> None:
    import suite

    if args.models_command == "attach-lm":
        import torch

        from suite.model import resolve
        from suite.tasks.asr import attach_lm
        from suite.tasks.asr.cli import decode_options

        given = decode_options(args)
        dtype = None if args.weights_dtype == "float32" else getattr(torch, args.weights_dtype)
        out = attach_lm(resolve(args.model), args.lm, args.out, args.head, dtype, **given)
        print(f"wrote {out}: its CTC head decodes with {args.lm} ({args.out}/README.md)")
        return
    if args.models_command == "copy":
        import torch

        from suite.model import load_package, package_task, resolve, save_package

        source = resolve(args.model)
        dtype = None if args.weights_dtype == "float32" else getattr(torch, args.weights_dtype)
        model = load_package(source)
        card = (source / "README.md").read_text() if (source / "README.md").is_file() else None
        out = save_package(
            model, args.out, card=card, task=package_task(source), weights_dtype=dtype
        )
        size = (out / "model.safetensors").stat().st_size / 1e6
        print(f"wrote {out} ({args.weights_dtype} parameters, {size:.1f} MB)")
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


def build_parser() -> argparse.ArgumentParser:
    from suite.tasks.asr.cli import add_beam_options

    parser = argparse.ArgumentParser(prog="suite", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="corpus synthesis and manifest preparation")
    data_commands = data.add_subparsers(dest="data_command", required=True)

    synth = data_commands.add_parser(
        "synth-speech",
        help="synthesize a multi-voice speech corpus (espeak-ng, flite, festival, SVOX Pico)",
    )
    synth.add_argument("--out", required=True, help="output folder (audio + lhotse manifests)")
    synth.add_argument("--hours", type=float, default=1.0, help="total audio to synthesize")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument(
        "--text",
        default=None,
        help="a text file, one sentence per line, or a folder that `suite data text` wrote "
        "(each sentence stays in its file's split); default: the built-in sentence generator",
    )
    synth.add_argument("--jobs", type=int, default=None, help="worker processes (default: cores)")
    synth.add_argument("--no-augment", action="store_true", help="no noise/reverb augmentation")
    synth.add_argument(
        "--engines",
        default=None,
        help="comma-separated synthesizers from espeak, flite, festival, pico (each must be "
        "installed), or 'all' (those installed; the others are skipped with a warning); "
        "default: espeak (the corpus of earlier versions)",
    )
    synth.add_argument(
        "--held-out-engine",
        default=None,
        help="the engine heard only in test, or 'none' (default: pico when used with others)",
    )
    synth.set_defaults(func=_synth_speech)

    text = data_commands.add_parser(
        "text", help="an English sentence corpus from Debian packages of prose (make data)"
    )
    text.add_argument("--out", required=True, help="folder for train/dev/test .txt + summary")
    text.add_argument(
        "--sources",
        type=lambda names: [n for n in names.split(",") if n],
        default=None,
        help="comma-separated sources to read (default: all; a wrong name lists them)",
    )
    text.add_argument(
        "--extra",
        nargs="+",
        action="extend",
        default=[],
        metavar="FILE",
        help="more text: plain (blank lines between paragraphs), HTML, POD or man, .gz too",
    )
    text.add_argument("--grammar", type=int, default=0, help="add N built-in grammar sentences")
    text.add_argument("--seed", type=int, default=0, help="seeds the splits and the grammar")
    text.add_argument("--dev", type=float, default=0.01, help="fraction of sentences for dev")
    text.add_argument("--test", type=float, default=0.01, help="fraction for test")
    text.add_argument("--jobs", type=int, default=None, help="worker processes (default: cores)")
    text.set_defaults(func=_text)

    from suite.data.scenes import add_command as add_synth_scenes

    add_synth_scenes(data_commands)

    from suite.data.sounds import add_command as add_synth_sounds

    add_synth_sounds(data_commands)

    from suite.data.video_scenes import add_command as add_synth_videos

    add_synth_videos(data_commands)

    prepare = data_commands.add_parser("prepare", help="lhotse manifests for a real corpus")
    prepare.add_argument("corpus", choices=["librispeech", "ljspeech", "cmu_arctic"])
    prepare.add_argument("corpus_dir")
    prepare.add_argument("out_dir")
    prepare.set_defaults(func=_prepare)

    real = data_commands.add_parser(
        "real-speech",
        help="cut manifests (per source and pooled) for the shared pack's recorded speech",
    )
    real.add_argument("--out", default="data/real", help="folder for the manifests")
    real.add_argument(
        "--root", default=None, help="the speech-real folder (default: the shared data pack's)"
    )
    real.add_argument("--sources", nargs="+", default=None, help="only these sources")
    real.set_defaults(func=_real_speech)

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
    tr.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="processes on this machine (torchrun, one per GPU; gloo on CPU); for several "
        "machines run torchrun yourself (README: multi-GPU and multi-node)",
    )
    tr.set_defaults(func=_train)

    from suite import registry

    for name in registry.names("task"):
        registry.create("task", name).add_commands(commands)

    models = commands.add_parser("models", help="list the shipped models (or attach an LM)")
    models_commands = models.add_subparsers(dest="models_command", required=False)
    attach = models_commands.add_parser(
        "attach-lm", help="copy a model package with an LM for its CTC head's beam search"
    )
    attach.add_argument("model", help="a shipped model name or a package folder")
    attach.add_argument("lm", help="an lm package from `suite train` (same tokenizer)")
    attach.add_argument("--out", required=True, help="the new package folder")
    attach.add_argument("--head", default=None, help="the CTC head (default: the first)")
    attach.add_argument(
        "--weights-dtype",
        choices=("float32", "float16", "bfloat16"),
        default="float32",
        help="store the parameters in this dtype (float16: half the size; loading casts back)",
    )
    add_beam_options(attach)
    copy = models_commands.add_parser(
        "copy", help="copy a model package of any task, its parameters in another dtype"
    )
    copy.add_argument("model", help="a shipped model name or a package folder")
    copy.add_argument("--out", required=True, help="the new package folder")
    copy.add_argument(
        "--weights-dtype",
        choices=("float32", "float16", "bfloat16"),
        default="float16",
        help="store the parameters in this dtype (default float16: half the size; loading "
        "casts back)",
    )
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
    training = getattr(args, "command", None) == "train"
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
