"""``make demo``: speak sentences the model never heard, transcribe them, and score the result.

The sentences come from the corpus generator with a seed no training corpus uses
(:data:`DEMO_SEED`); half are spoken by voice configurations held out of training. Synthesis
needs espeak-ng; the model is the shipped ``default-asr`` unless another is named.

    python -m suite.demo [MODEL] [--sentences N]
"""

from __future__ import annotations

import argparse
import random
import sys
import time

import numpy as np

from suite.errors import UserError

DEMO_SEED = 20261122  # corpora are synthesized with small seeds (recipes use 0)


def demo_utterances(count: int) -> list[tuple[str, np.ndarray, str, bool]]:
    """``count`` demo utterances as ``(reference, 16 kHz audio, voice, voice_seen_in_train)``.

    Sentences of 8 or more words from :data:`DEMO_SEED`; voices alternate between configurations
    used in training (seed 0) and held-out ones, with random speed and pitch.
    """
    from suite.data.sentences import SentenceGenerator, speakable
    from suite.data.synth import UtteranceSpec, held_out_voices, render, voice_configs
    from suite.text import normalize_text

    rng = random.Random(DEMO_SEED)
    unseen = held_out_voices(0)
    seen = sorted(set(voice_configs()) - set(unseen))
    out = []
    sentences = SentenceGenerator(DEMO_SEED)
    while len(out) < count:
        spoken = speakable(next(sentences))
        text = normalize_text(spoken)
        if len(text.split()) < 8:
            continue
        held_out = len(out) % 2 == 1
        spec = UtteranceSpec(
            index=len(out),
            id=f"demo-{len(out)}",
            split="test",
            text=text,
            spoken=spoken,
            voice=rng.choice(unseen if held_out else seen),
            rate=rng.randint(140, 190),
            pitch=rng.randint(35, 65),
            pitch_range=rng.randint(40, 70),
            augmentation={},
            voice_seen_in_train=not held_out,
        )
        out.append((text, render(spec, DEMO_SEED), spec.voice, not held_out))
    return out


def run(model_name: str = "default-asr", count: int = 6) -> float:
    """Print reference, hypothesis and WER per sentence, then the totals; returns the WER."""
    import suite
    from suite.evaluate import score

    print(f"synthesizing {count} sentences never used in training (espeak-ng) ...")
    utterances = demo_utterances(count)
    asr = suite.load(model_name)
    audio = [u[1] for u in utterances]
    asr.transcribe(audio[:1], sample_rate=16000)  # warm-up: first call pays for lazy set-up
    start = time.perf_counter()
    hypotheses = asr.transcribe(audio, sample_rate=16000)
    elapsed = time.perf_counter() - start
    seconds = sum(len(a) for a in audio) / 16000
    for (ref, _, voice, seen), hyp in zip(utterances, hypotheses, strict=True):
        wer = score([ref], [hyp]).wer
        kind = "voice seen in training" if seen else "voice held out of training"
        print(f"\n[{voice}, {kind}]  WER {wer:.1%}\n  REF: {ref}\n  HYP: {hyp}")
    total = score([u[0] for u in utterances], hypotheses)
    print(
        f"\n{model_name}: WER {total.wer:.2%}  CER {total.cer:.2%}  on {seconds:.1f} s of audio, "
        f"transcribed in {elapsed:.2f} s (RTFx {seconds / elapsed:.0f}, "
        f"{torch_threads()} CPU threads)"
    )
    return total.wer


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m suite.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("model", nargs="?", default="default-asr")
    parser.add_argument("--sentences", type=int, default=6)
    args = parser.parse_args(argv)
    try:
        run(args.model, args.sentences)
    except UserError as e:
        print(f"suite demo: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
