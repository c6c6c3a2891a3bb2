"""Word error rates of a peer recognizer on our manifests, scored exactly as ``suite evaluate``
scores ours (the same text normalization, WER and per-source grouping).

The peer is CMU PocketSphinx with its stock US English model (PyPI ``pocketsphinx``, which
bundles the acoustic model, dictionary and language model): a recognizer of real human speech
trained on data we do not have, so its WER on the shared recorded speech is the figure ours has
to beat there.

    python -m suite.tasks.asr.peers MANIFEST [--per-source N] [--seed S] [--results FILE]

``--per-source N`` scores a seeded random sample of at most N cuts of each source (PocketSphinx
decodes at about 5x real time on one core); the sample's cut ids go into ``--results`` so that
ours can be scored on the same cuts (``suite evaluate PKG`` on a manifest of those ids).
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np

from suite.errors import UserError

PEER = "pocketsphinx"


def pocketsphinx_decoder() -> Any:
    """A PocketSphinx decoder with the bundled US English model, at 16 kHz, silent."""
    try:
        from pocketsphinx import Decoder
    except ImportError:
        raise UserError(
            "the peer recognizer needs PocketSphinx: pip install pocketsphinx"
        ) from None
    return Decoder(samprate=16000, loglevel="FATAL")


def recognize(decoder: Any, samples: np.ndarray) -> str:
    """PocketSphinx's text for ``(S,)`` float samples at 16 kHz."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16).tobytes()
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    return hyp.hypstr if hyp is not None else ""


def sample_per_source(cuts: list[Any], per_source: int | None, seed: int) -> list[Any]:
    """At most ``per_source`` cuts of each ``custom.source`` (a seeded sample, manifest order
    kept); all of them with ``per_source=None``. Synthetic test cuts, which mark no source, are
    sampled per kind instead (:func:`~suite.tasks.asr.evaluation.held_out_kind`: voices seen in
    training, held-out voices, held-out engine), so a sample holds every kind."""
    if per_source is None:
        return cuts
    from suite.tasks.asr.evaluation import cut_row, held_out_kind

    by_source: dict[str, list[int]] = {}
    for i, cut in enumerate(cuts):
        row = cut_row(cut)
        key = row.get("source") or held_out_kind(row) or ""
        by_source.setdefault(key, []).append(i)
    rng = random.Random(seed)
    keep: set[int] = set()
    for indices in by_source.values():
        keep |= set(rng.sample(indices, min(per_source, len(indices))))
    return [cut for i, cut in enumerate(cuts) if i in keep]


def evaluate_peer(cuts: list[Any]) -> Any:
    """PocketSphinx's :class:`~suite.tasks.asr.evaluation.Scores` on ``cuts``."""
    from suite.tasks.asr.dataset import cut_text, load_cut_audio
    from suite.tasks.asr.evaluation import cut_row, score

    decoder = pocketsphinx_decoder()
    refs, hyps, rows = [], [], []
    for cut in cuts:
        refs.append(cut_text(cut))
        hyps.append(recognize(decoder, load_cut_audio(cut, 16000)))
        rows.append(cut_row(cut))
    scores = score(refs, hyps)
    for row, utt in zip(rows, scores.per_utterance, strict=True):
        row.update(utt)
    scores.per_utterance = rows
    return scores


def main(argv: list[str] | None = None) -> int:
    from suite.tasks.asr import load_cuts
    from suite.tasks.asr.evaluation import by_group, write_results

    parser = argparse.ArgumentParser(prog="python -m suite.tasks.asr.peers", description=__doc__)
    parser.add_argument("manifest", help="a cut manifest with transcripts")
    parser.add_argument("--per-source", type=int, default=None, help="cuts per source (sample)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", help="per-utterance JSON lines")
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object, as `suite evaluate --json`"
    )
    args = parser.parse_args(argv)
    try:
        cuts = sample_per_source(
            list(load_cuts(Path(args.manifest), "test")), args.per_source, args.seed
        )
        scores = evaluate_peer(cuts)
    except UserError as e:
        print(f"suite: error: {e}", file=sys.stderr)
        return 2
    if args.results:
        write_results(scores, args.results)
    if args.json:
        import json

        from suite.tasks.asr.evaluation import summary_with_groups

        sample = {"limit": None, "per_source": args.per_source, "seed": args.seed}
        described = {"model": PEER, "manifest": args.manifest, "sample": sample}
        print(json.dumps({**described, **summary_with_groups(scores)}))
        return 0
    print(
        f"{PEER}: WER {scores.wer:.2%}  CER {scores.cer:.2%}  ({scores.num_utterances} utterances)"
    )
    for source, g in sorted(by_group(scores, "source").items()):
        print(f"  {source}: WER {g.wer:.2%}  CER {g.cer:.2%}  ({g.num_utterances} utterances)")
    if args.results:
        print(f"per-utterance results: {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
