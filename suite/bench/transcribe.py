"""``suite bench transcribe``: RTFx of ``asr.transcribe`` with a shipped model, on CPU.

What a user runs: ``suite.load(MODEL).transcribe(arrays, sample_rate=16000)`` on speech the
model never heard (the ``make demo`` sentences, :func:`suite.demo.demo_utterances`, synthesized
by espeak-ng), from memory, warm. Two workloads: the demo's ``DEMO_COUNT`` sentences (one batch)
and ``MORE_COUNT`` sentences (batches of the default size), each decoded with the model's
default (for ``default-asr``: CTC prefix beam search with its LM) and greedily, all four runs
interleaved within each of ``REPEATS`` passes so that the machine's drift hits them alike.
Reported: RTFx (audio seconds / wall seconds) per run, as the median and range over the passes.
Feature extraction, the encoder and decoding are timed; synthesis and loading are not.
"""

from __future__ import annotations

import statistics
import time

import torch

from suite.bench import print_header, report

MODEL = "default-asr"
DEMO_COUNT, MORE_COUNT = 6, 32
REPEATS = 10
DECODINGS = {"default": {}, "greedy": {"method": "greedy"}}


def measure() -> dict:
    """RTFx of each workload and decoding; returns the figures as a dict."""
    import suite
    from suite.demo import demo_utterances

    utterances = demo_utterances(max(DEMO_COUNT, MORE_COUNT))
    workloads = {
        "demo": [u[1] for u in utterances[:DEMO_COUNT]],
        "more": [u[1] for u in utterances[:MORE_COUNT]],
    }
    asr = suite.load(MODEL)
    runs = {
        (work, decoding): (audio, options)
        for work, audio in workloads.items()
        for decoding, options in DECODINGS.items()
    }
    rtfx: dict[tuple[str, str], list[float]] = {key: [] for key in runs}
    for audio, options in runs.values():  # warm-up: lazy set-up, allocator, caches
        asr.transcribe(audio, sample_rate=16000, **options)
    for _ in range(REPEATS):
        for key, (audio, options) in runs.items():
            start = time.perf_counter()
            asr.transcribe(audio, sample_rate=16000, **options)
            rtfx[key].append(sum(len(a) for a in audio) / 16000 / (time.perf_counter() - start))
    result: dict = {
        "config": {
            "model": MODEL,
            "repeats": REPEATS,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "workloads": {
            work: {
                "utterances": len(audio),
                "audio_seconds": round(sum(len(a) for a in audio) / 16000, 2),
            }
            for work, audio in workloads.items()
        },
    }
    for (work, decoding), values in rtfx.items():
        result["workloads"][work][decoding] = {
            "rtfx_median": statistics.median(values),
            "rtfx_min": min(values),
            "rtfx_max": max(values),
        }
    result["transcribe_rtfx"] = result["workloads"]["more"]["default"]["rtfx_median"]
    return result


def main(json_output: bool = False) -> None:
    report(measure(), json_output, _markdown)


def _markdown(result: dict) -> None:
    c = result["config"]
    print_header(f"ASR transcription speed (`{c['model']}`)", "transcribe", c["threads"])
    print(
        f"- `asr.transcribe` of demo sentences (never in training), from memory, warm; median "
        f"(range) RTFx of {c['repeats']} interleaved passes\n"
    )
    print("| workload | audio (s) | default decoding | greedy |")
    print("|---|---:|---:|---:|")
    for w in result["workloads"].values():
        cells = [
            f"{w[d]['rtfx_median']:.0f} ({w[d]['rtfx_min']:.0f}-{w[d]['rtfx_max']:.0f})"
            for d in DECODINGS
        ]
        print(f"| {w['utterances']} sentences | {w['audio_seconds']:.1f} | {' | '.join(cells)} |")
    print(f"\nTranscribe RTFx (default decoding, {MORE_COUNT} sentences): ", end="")
    print(f"**{result['transcribe_rtfx']:.0f}**")
