"""``make demo``: speak sentences the model never heard, transcribe them, and score the result.

The sentences come from the corpus generator with a seed no training corpus uses
(:data:`DEMO_SEED`); half are spoken by voice configurations held out of training. Synthesis
needs espeak-ng; the model is the shipped ``default-asr`` unless another is named. Then the same
sentences stream through the shipped ``streaming-asr`` in 160 ms chunks: partial text as it
grows, per-chunk compute time, and the streaming WER beside that model's full-context WER.

    python -m suite.demo [MODEL] [--sentences N] [--streaming-model NAME | --no-streaming]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

import numpy as np

from suite.errors import UserError

DEMO_SEED = 20261122  # corpora are synthesized with small seeds (recipes use 0)
TIMED_RUNS = 3  # the demo batch is transcribed this many times; the median time is reported


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


def run(
    model_name: str = "default-asr", count: int = 6, streaming_model: str | None = "streaming-asr"
) -> float:
    """Print reference, hypothesis and WER per sentence, then the totals, then stream the same
    sentences through ``streaming_model`` (unless ``None``); returns the offline WER."""
    import suite
    from suite.tasks.asr.evaluation import score

    print(f"synthesizing {count} sentences never used in training (espeak-ng) ...")
    utterances = demo_utterances(count)
    asr = suite.load(model_name)
    audio = [u[1] for u in utterances]
    asr.transcribe(audio[:1], sample_rate=16000)  # warm-up: first call pays for lazy set-up
    times = []
    for _ in range(TIMED_RUNS):  # one call's time moves with the machine's load and phase
        start = time.perf_counter()
        hypotheses = asr.transcribe(audio, sample_rate=16000)
        times.append(time.perf_counter() - start)
    elapsed = statistics.median(times)
    seconds = sum(len(a) for a in audio) / 16000
    for (ref, _, voice, seen), hyp in zip(utterances, hypotheses, strict=True):
        wer = score([ref], [hyp]).wer
        kind = "voice seen in training" if seen else "voice held out of training"
        print(f"\n[{voice}, {kind}]  WER {wer:.1%}\n  REF: {ref}\n  HYP: {hyp}")
    total = score([u[0] for u in utterances], hypotheses)
    print(
        f"\n{model_name}: WER {total.wer:.2%}  CER {total.cer:.2%}  on {seconds:.1f} s of audio, "
        f"transcribed in {elapsed:.2f} s (median of {TIMED_RUNS} runs; RTFx "
        f"{seconds / elapsed:.0f}, {torch_threads()} CPU threads)"
    )
    if streaming_model is not None:
        run_streaming(utterances, streaming_model)
    return total.wer


def run_streaming(
    utterances: list[tuple[str, np.ndarray, str, bool]],
    model_name: str = "streaming-asr",
    chunk_seconds: float = 0.16,
) -> float:
    """Stream each utterance chunk by chunk (as fast as it computes), print how the first
    one's text grows, then streaming vs full-context WER; returns the streaming WER."""
    import suite
    from suite.streaming import stream_audio
    from suite.tasks.asr import default_stream_context
    from suite.tasks.asr.evaluation import score

    asr = suite.load(model_name)
    context = default_stream_context(asr.model)
    print(
        f"\nstreaming with {model_name}: {chunk_seconds * 1000:.0f} ms chunks, attention "
        f"context (left, right{', ahead' if len(context) == 3 else ''}) = {context} encoder "
        "frames"
    )
    finals, latencies = [], []
    for index, (_, audio, _, _) in enumerate(utterances):
        shown = ""
        for p in stream_audio(asr.stream(att_context=context), audio, chunk_seconds, False):
            latencies.append(p.latency)
            if index == 0 and p.text != shown:
                tag = "final" if p.final else f"{p.seconds:5.2f} s"
                print(f"  [{tag}] {p.text}")
                shown = p.text
            if p.final:
                finals.append(p.text)
    offline = asr.transcribe([u[1] for u in utterances], sample_rate=16000)
    refs = [u[0] for u in utterances]
    streaming, full = score(refs, finals).wer, score(refs, offline).wer
    ms = sorted(x * 1000 for x in latencies)
    print(
        f"{model_name}: streaming WER {streaming:.2%} vs full-context WER {full:.2%}; "
        f"per-chunk compute p50 {ms[len(ms) // 2]:.1f} ms, "
        f"p95 {ms[min(len(ms) - 1, int(0.95 * len(ms)))]:.1f} ms ({len(ms)} chunks)"
    )
    return streaming


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m suite.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("model", nargs="?", default="default-asr")
    parser.add_argument("--sentences", type=int, default=6)
    parser.add_argument("--streaming-model", default="streaming-asr")
    parser.add_argument("--no-streaming", action="store_true", help="skip the streaming part")
    args = parser.parse_args(argv)
    try:
        run(args.model, args.sentences, None if args.no_streaming else args.streaming_model)
    except UserError as e:
        print(f"suite demo: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
