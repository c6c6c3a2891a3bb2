"""``suite bench longform``: the memory and speed of transcribing long files, 10 min vs 60 min.

What a user runs: ``suite.load(MODEL).transcribe(path)`` on one long WAV file, which reads the
file block by block, splits it at pauses and decodes the chunks in batches
(:mod:`suite.tasks.asr.longform`). Each length runs in a fresh Python process that loads the
model, transcribes, and reports its own peak resident memory (``getrusage``'s ``ru_maxrss``)
after loading and after transcribing, as a user's process would see it (glibc's default
allocator: the child does not call :func:`suite.runtime.keep_freed_memory`). Target: the 60 min
peak within 10% of the 10 min peak.

Audio: :data:`SENTENCES` ``make demo`` sentences (never in training) synthesized by espeak-ng,
repeated in a seeded random order with 0.2-0.6 s pauses and a -60 dBFS noise floor until the
length is reached, written once into a temporary folder as 16 kHz 16-bit WAV, block by block.
Reported per length: peak RSS, RSS after loading, the wall and CPU seconds spent in
``transcribe`` (loading is not timed; CPU time, all threads together, says what the wall time
would be on an idle machine), RTFx (audio seconds / wall seconds), words recognized.

    python -m suite.bench.longform --child FILE [--model NAME] [--method greedy]
        (one measurement; what the benchmark runs in each fresh process)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from suite.bench import print_header, report

MODEL = "default-asr"
SHORT_SECONDS, LONG_SECONDS = 600.0, 3600.0
SENTENCES = 40
METHOD: str | None = None  # None: the model's default decoding (default-asr: beam with its LM)
TARGET = 1.10  # the longer file's peak RSS over the shorter one's, at most
RATE = 16000
PAUSES = (0.2, 0.6)  # seconds between sentences
NOISE_DBFS = -60.0


def write_speech(
    path: str | Path, seconds: float, pieces: Sequence[np.ndarray], seed: int = 0
) -> list[tuple[float, int]]:
    """Write ``seconds`` of speech to a 16 kHz 16-bit WAV ``path``: ``pieces`` (16 kHz audio) in
    a seeded random order, :data:`PAUSES` apart, over a :data:`NOISE_DBFS` noise floor, a piece
    at a time (memory holds one piece, whatever ``seconds``).

    Returns:
        ``(start seconds, index into pieces)`` of every piece written, in order.
    """
    import soundfile as sf

    rng = np.random.default_rng(seed)
    noise = 10 ** (NOISE_DBFS / 20)
    total, written, layout = int(seconds * RATE), 0, []
    with sf.SoundFile(path, "w", samplerate=RATE, channels=1, subtype="PCM_16") as f:
        while written < total:
            index = int(rng.integers(len(pieces)))
            pause = np.zeros(int(rng.uniform(*PAUSES) * RATE), np.float32)
            block = np.concatenate([pieces[index], pause])[: total - written]
            block = block + rng.normal(0, noise, len(block)).astype(np.float32)
            layout.append((written / RATE, index))
            f.write(block)
            written += len(block)
    return layout


def run_child(path: str | Path, model: str = MODEL, method: str | None = None) -> dict:
    """Load ``model``, transcribe ``path``, and measure this process (see the module
    docstring); called in a fresh process by :func:`measure`."""
    import resource
    import time

    import soundfile as sf
    import torch

    import suite

    asr = suite.load(model)
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    options = {"method": method} if method else {}
    start, cpu = time.perf_counter(), time.process_time()
    text = asr.transcribe(str(path), progress=False, **options)[0]
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    seconds = sf.info(str(path)).duration
    return {
        "audio_seconds": round(seconds, 2),
        "wall_seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),
        "rtfx": seconds / wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "loaded_rss_mb": loaded,
        "words": len(text.split()),
        "threads": torch.get_num_threads(),
    }


def measure() -> dict:
    """Synthesize both files, transcribe each in a fresh process; returns the figures."""
    from suite.demo import demo_utterances

    pieces = [u[1] for u in demo_utterances(SENTENCES)]
    runs = {}
    with tempfile.TemporaryDirectory(prefix="suite-longform-") as tmp:
        for label, seconds in (("short", SHORT_SECONDS), ("long", LONG_SECONDS)):
            path = Path(tmp) / f"{label}.wav"
            write_speech(path, seconds, pieces)
            command = [sys.executable, "-m", "suite.bench.longform", "--child", str(path)]
            command += ["--model", MODEL] + (["--method", METHOD] if METHOD else [])
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode:
                raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
            runs[label] = json.loads(done.stdout.strip().splitlines()[-1])
            path.unlink()
    ratio = runs["long"]["peak_rss_mb"] / runs["short"]["peak_rss_mb"]
    return {
        "config": {
            "model": MODEL,
            "decoding": METHOD or "default",
            "sentences": SENTENCES,
            "threads": runs["short"]["threads"],
        },
        "runs": runs,
        "peak_rss_ratio": ratio,
        "target_ratio": TARGET,
        "within_target": ratio <= TARGET,
    }


def main(json_output: bool = False) -> None:
    report(measure(), json_output, _markdown)


def _markdown(result: dict) -> None:
    c = result["config"]
    print_header(f"Long-form transcription memory (`{c['model']}`)", "longform", c["threads"])
    print(
        f"- `asr.transcribe(path)` of one WAV file ({c['sentences']} espeak-ng demo sentences "
        f"repeated with pauses), {c['decoding']} decoding, each in a fresh process\n"
    )
    print("| audio | peak RSS (MB) | after loading (MB) | wall (s) | CPU (s) | RTFx | words |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for run in result["runs"].values():
        print(
            f"| {run['audio_seconds'] / 60:.1f} min | {run['peak_rss_mb']:.0f} | "
            f"{run['loaded_rss_mb']:.0f} | {run['wall_seconds']:.1f} | {run['cpu_seconds']:.1f} "
            f"| {run['rtfx']:.0f} | {run['words']} |"
        )
    verdict = "within" if result["within_target"] else "**outside**"
    print(
        f"\nPeak RSS, long over short: **{result['peak_rss_ratio']:.3f}** ({verdict} the "
        f"target {result['target_ratio']:.2f})"
    )


def _child_main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", required=True, help="the WAV file to transcribe")
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--method", default=None, choices=["greedy", "beam"])
    args = parser.parse_args(argv)
    print(json.dumps(run_child(args.child, args.model, args.method)))


if __name__ == "__main__":
    _child_main()
