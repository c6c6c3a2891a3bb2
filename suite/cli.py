"""The one command-line entry point, ``suite``.

Each subcommand lives beside the code it drives; this module only wires arguments to it.
Errors the user can fix (bad input, bad recipe) print one line and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int | None] = args.func
    try:
        return func(args) or 0
    except UserError as e:
        print(f"suite: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("suite: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
