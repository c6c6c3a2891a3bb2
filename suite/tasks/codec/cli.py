"""``suite codec encode IN.wav OUT.sca --kbps 1.5`` and ``suite codec decode IN.sca OUT.wav``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "default-codec"


def _load(name: str) -> Any:
    import suite
    from suite.errors import UserError
    from suite.model import package_task, resolve
    from suite.tasks.codec.pipeline import AudioCodec

    task = package_task(resolve(name))
    if task != "codec":
        raise UserError(f"{name} is a '{task}' package, not a codec; pass --model CODEC_PACKAGE")
    codec = suite.load(name)
    assert isinstance(codec, AudioCodec)
    return codec


def _encode(args: argparse.Namespace) -> None:
    codec = _load(args.model)
    encoded = codec.encode(args.input, bitrate=args.kbps)
    from suite.codecs.bitstream import write_sca

    write_sca(args.output, encoded)
    size = Path(args.output).stat().st_size
    seconds = encoded.num_samples / encoded.sample_rate
    print(
        f"{args.output}: {encoded.codes.shape[0]} codebooks, {encoded.kbps:g} kbps, "
        f"{seconds:.2f} s in {size} bytes",
        file=sys.stderr,
    )


def _decode(args: argparse.Namespace) -> None:
    codec = _load(args.model)
    codec.decode_file(args.input, args.output)
    print(f"{args.output}: {codec.sample_rate} Hz", file=sys.stderr)


def add_commands(commands: Any) -> None:
    """Add ``suite codec encode|decode`` to the ``suite`` sub-command parser."""
    codec = commands.add_parser("codec", help="encode audio into .sca codes and decode them")
    verbs = codec.add_subparsers(dest="codec_command", required=True)
    enc = verbs.add_parser("encode", help="an audio file -> a .sca bitstream")
    enc.add_argument("input", help="an audio file (any rate; mixed down to mono and resampled)")
    enc.add_argument("output", help="the .sca file to write")
    enc.add_argument(
        "--kbps", type=float, default=None, help="bitrate (default: the codec's highest)"
    )
    enc.add_argument("--model", default=DEFAULT_MODEL, help="a codec package or shipped name")
    enc.set_defaults(func=_encode)
    dec = verbs.add_parser("decode", help="a .sca bitstream -> a 16-bit WAV file")
    dec.add_argument("input", help="the .sca file")
    dec.add_argument("output", help="the .wav file to write")
    dec.add_argument("--model", default=DEFAULT_MODEL, help="the codec that encoded it")
    dec.set_defaults(func=_decode)
