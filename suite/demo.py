"""``make demo``: open-domain speech no model trained on, transcribed and streamed; composed
scenes of held-out compositions, captioned.

Three groups of utterances, each scored on its own:

- **held-out engine**: open-domain sentences spoken by SVOX Pico (``ttspico``), the
  synthesizer the open-domain corpus holds out of training
  (:data:`~suite.data.engines.DEFAULT_HELD_OUT_ENGINE`);
- **held-out voice**: the same kind of sentences spoken by espeak-ng voice configurations held
  out of training (:func:`~suite.data.synth.held_out_voices` of seed 0);
- **real**: recordings of people from the test splits of the shared recorded speech
  (``cathy``, CC0, and ``ljspeech``, public domain; :mod:`suite.data.shared`).

The sentences are :data:`DEMO_SENTENCES`: sentences of the open-domain text corpus that its
deterministic split rule (:func:`~suite.data.text_corpus.split_of`, seed 0, 1% dev and 1% test,
as ``suite data text`` builds ``data/text``) puts in the test split, so no training text, of the
recognizers or of their LM, holds them; they are kept here so that a fresh clone needs no corpus.
Each comes from a public-domain source (named beside it). A group whose engine or data is not on
the machine is skipped with a line saying what to install.

``default-asr`` transcribes every utterance (per-group WER, RTFx); then ``streaming-asr`` streams
them in 160 ms chunks (partial text of the first, per-group streaming WER beside its own
full-context WER). Any other package folder can stand in for either.

Then ``default-captioner`` captions composed scenes of the held-out test compositions
(:func:`demo_scenes`: CIFAR-10 and Fashion-MNIST test images and shapes), with the facts each
caption missed.

    python -m suite.demo [MODEL] [--per-group N] [--streaming-model NAME | --no-streaming]
        [--captioner NAME] [--scenes N]

:func:`demo_utterances` gives grammar sentences in espeak-ng voices, which tests use as speech
the grammar-trained models never heard.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from typing import Any, NamedTuple

import numpy as np

from suite.errors import UserError

DEMO_SEED = 20261122  # corpora are synthesized with small seeds (recipes use 0)
TIMED_RUNS = 3  # the demo batch is transcribed this many times; the median time is reported


def demo_utterances(count: int) -> list[tuple[str, np.ndarray, str, bool]]:
    """``count`` grammar utterances as ``(reference, 16 kHz audio, voice, voice_seen_in_train)``:
    speech the grammar-trained models never heard (tests use it; the demo speaks open text).

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


# Open-domain sentences in the test split of `suite data text` (seed 0), from public-domain
# sources: SQLite's documentation (sqlite3-doc), the Jargon File (dict-jargon), Ambrose Bierce's
# The Devil's Dictionary (dict-devil), the World English Bible (sword-text-web) and Matthew
# Henry's Concise Commentary (sword-comm-mhcc). tests/test_demo.py checks the split of each.
DEMO_SENTENCES: tuple[tuple[str, str], ...] = (
    ("sqlite-doc", "this procedure works well in many scenarios and is usually very fast."),
    ("jargon", "to clear the state of a wedged device and restart it."),
    ("devils-dictionary", "we must fix the premium so that you will have paid more."),
    ("web-bible", "the whole earth was of one language and of one speech."),
    (
        "sqlite-doc",
        "this function allows the caller to simultaneously release a mutex and start waiting "
        "for an asynchronous signal.",
    ),
    ("jargon", "this does not imply any judgment on the replacement."),
    ("henry-commentary", "he did not seek his own wealth, but the welfare of his people."),
    ("devils-dictionary", "the ancient prototype and forerunner of political influence."),
    (
        "sqlite-doc",
        "but large and complex queries might still require prepared statements that are several "
        "kilobytes in size.",
    ),
    ("jargon", "by extension, to check a human's current state by any means."),
    ("web-bible", "i will come down and talk with you there."),
    (
        "sqlite-doc",
        "the sqlite approach of storing the schema as text has advantages for an embedded "
        "relational database.",
    ),
    (
        "jargon",
        "more often, however, it reveals the author's lack of experience in electronic "
        "communication.",
    ),
    (
        "devils-dictionary",
        "a famous book in which saint john the divine concealed all that he knew.",
    ),
    ("henry-commentary", "the conscience is good, when it does its office well."),
    (
        "sqlite-doc",
        "these routines are designed to aid in process initialization and shutdown on embedded "
        "systems.",
    ),
    (
        "web-bible",
        "the water in the container was spent, and she put the child under one of the shrubs.",
    ),
    ("sqlite-doc", "a b tree page is either an interior page or a leaf page."),
    (
        "jargon",
        "a program specifically designed to help users view and navigate hypertext, on line "
        "documentation, or a database.",
    ),
    (
        "devils-dictionary",
        "it is related of voltaire that one night he and some traveling companion lodged at a "
        "wayside inn.",
    ),
    (
        "sqlite-doc",
        "this new beta fixes many bugs and adds support for databases with varying page sizes.",
    ),
    (
        "sqlite-doc",
        "do not count rows where the ignore conflict resolution occurs in the row count.",
    ),
    (
        "jargon",
        "when the right thing has already been done once, there is no justification for bogosity "
        "in newer languages.",
    ),
    (
        "devils-dictionary",
        "a place where horses, ponies and elephants are permitted to see men, women and children "
        "acting the fool.",
    ),
)
GROUPS = ("held-out engine", "held-out voice", "real")
REAL_SOURCES = ("cathy", "ljspeech")  # CC0 and public domain; one test recording of each
REAL_SECONDS = (2.0, 8.0)  # the shortest test recording within this range is picked


class DemoUtterance(NamedTuple):
    """One demo utterance: reference text, 16 kHz float32 audio, who speaks it, its group."""

    text: str
    audio: np.ndarray
    speaker: str
    group: str


def _synthesized(
    engine: str, voices: list[str], sentences: list[str], group: str, rng: random.Random
) -> list[DemoUtterance]:
    """``sentences`` spoken by ``engine`` in ``voices`` (taking turns), random speed and pitch."""
    from suite.data.synth import UtteranceSpec, render
    from suite.text import normalize_text

    out = []
    for i, spoken in enumerate(sentences):
        spec = UtteranceSpec(
            index=i,
            id=f"demo-{engine}-{i}",
            split="test",
            text=normalize_text(spoken),
            spoken=spoken,
            voice=voices[i % len(voices)],
            rate=rng.randint(150, 185),
            pitch=rng.randint(40, 60),
            pitch_range=rng.randint(40, 70),
            augmentation={},
            voice_seen_in_train=False,
            engine=engine,
            engine_seen_in_train=group != "held-out engine",
        )
        out.append(DemoUtterance(spec.text, render(spec, DEMO_SEED), spec.voice, group))
    return out


def _real_recordings(count: int) -> tuple[list[DemoUtterance], str | None]:
    """Up to ``count`` test-split recordings of :data:`REAL_SOURCES`, or why there are none."""
    from suite.data.real_speech import source_cuts
    from suite.data.shared import shared_data_dir
    from suite.tasks.asr.dataset import cut_text, load_cut_audio

    root = shared_data_dir()
    if root is None or not (root / "speech-real").is_dir():
        return [], (
            "no shared recorded speech (../shared/data/speech-real, or set SUITE_SHARED_DATA): "
            "skipping the real-speech group"
        )
    out = []
    for source in REAL_SOURCES[:count]:
        try:
            cuts = source_cuts(root / "speech-real", source, "test")
        except UserError as e:
            return out, f"{source}: {e}"
        fits = [c for c in cuts if REAL_SECONDS[0] <= c.duration <= REAL_SECONDS[1]]
        cut = min(fits or list(cuts), key=lambda c: (c.duration, c.id))
        speaker = f"{source} ({cut.supervisions[0].speaker}, {cut.id})"
        out.append(DemoUtterance(cut_text(cut), load_cut_audio(cut, 16000), speaker, "real"))
    return out, None


def open_demo_utterances(per_group: int = 3, real: int = 2) -> list[DemoUtterance]:
    """The demo's utterances, group by group (:data:`GROUPS`); a group that cannot be made here
    (SVOX Pico not installed, no shared recorded speech) is left out with a line on stdout.

    Args:
        per_group: sentences of :data:`DEMO_SENTENCES` per synthesized group (at most half).
        real: recordings of people (at most one per :data:`REAL_SOURCES` source).
    """
    from suite.data.engines import DEFAULT_HELD_OUT_ENGINE, get_engine
    from suite.data.synth import held_out_voices

    per_group = max(0, min(per_group, len(DEMO_SENTENCES) // 2))
    rng = random.Random(DEMO_SEED)
    sentences = [s for _, s in DEMO_SENTENCES]
    rng.shuffle(sentences)
    out: list[DemoUtterance] = []
    engine = get_engine(DEFAULT_HELD_OUT_ENGINE)
    why = engine.missing()
    if why is None:
        engine.load()
        first = sentences[:per_group]
        out += _synthesized(engine.name, list(engine.voices), first, "held-out engine", rng)
    else:
        print(f"held-out engine: {why}; skipping that group (`make demo` installs it)")
    voices = held_out_voices(0)
    rng.shuffle(voices)
    second = sentences[per_group : 2 * per_group]
    out += _synthesized("espeak", voices[:per_group], second, "held-out voice", rng)
    recordings, why = _real_recordings(real)
    if why is not None:
        print(why)
    return out + recordings


def _group_scores(
    utterances: list[Any], hypotheses: list[str]
) -> dict[str, tuple[float, float, int]]:
    """``{group: (WER, CER, utterances)}`` in :data:`GROUPS` order, then ``"all"``."""
    from suite.tasks.asr.evaluation import score

    out = {}
    for group in (*GROUPS, "all"):
        pairs = [
            (u[0], h)
            for u, h in zip(utterances, hypotheses, strict=True)
            if group == "all" or getattr(u, "group", None) == group
        ]
        if pairs:
            s = score([r for r, _ in pairs], [h for _, h in pairs])
            out[group] = (s.wer, s.cer, len(pairs))
    return out


def run(
    model_name: str = "default-asr",
    per_group: int = 3,
    streaming_model: str | None = "streaming-asr",
    real: int = 2,
) -> float:
    """Print reference, hypothesis and WER per utterance, then WER per group, then stream the
    same utterances through ``streaming_model`` (unless ``None``); returns the offline WER."""
    import suite
    from suite.tasks.asr.evaluation import score

    print("speaking open-domain test sentences with a held-out engine and held-out voices ...")
    utterances = open_demo_utterances(per_group, real)
    if not utterances:
        raise UserError("no demo utterance could be made; install espeak-ng (make setup)")
    asr = suite.load(model_name)
    audio = [u.audio for u in utterances]
    asr.transcribe(audio[:1], sample_rate=16000)  # warm-up: first call pays for lazy set-up
    times = []
    for _ in range(TIMED_RUNS):  # one call's time moves with the machine's load and phase
        start = time.perf_counter()
        hypotheses = asr.transcribe(audio, sample_rate=16000)
        times.append(time.perf_counter() - start)
    elapsed = statistics.median(times)
    seconds = sum(len(a) for a in audio) / 16000
    for u, hyp in zip(utterances, hypotheses, strict=True):
        wer = score([u.text], [hyp]).wer
        print(f"\n[{u.group}: {u.speaker}]  WER {wer:.1%}\n  REF: {u.text}\n  HYP: {hyp}")
    print(f"\n{model_name}, WER per group:")
    groups = _group_scores(utterances, hypotheses)
    for group, (wer, cer, n) in groups.items():
        print(f"  {group:16s} WER {wer:7.2%}  CER {cer:7.2%}  ({n} utterances)")
    print(
        f"{seconds:.1f} s of audio transcribed in {elapsed:.2f} s (median of {TIMED_RUNS} runs; "
        f"RTFx {seconds / elapsed:.0f}, {torch_threads()} CPU threads)"
    )
    if streaming_model is not None:
        run_streaming(utterances, streaming_model)
    return groups["all"][0]


def run_streaming(
    utterances: list[Any],
    model_name: str = "streaming-asr",
    chunk_seconds: float = 0.16,
) -> float:
    """Stream each utterance (``(text, audio, ...)``) chunk by chunk, as fast as it computes,
    print how the first one's text grows, then streaming vs full-context WER (per group where
    the utterances have one); returns the streaming WER."""
    import suite
    from suite.streaming import stream_audio
    from suite.tasks.asr import default_stream_context

    asr = suite.load(model_name)
    context = default_stream_context(asr.model)
    print(
        f"\nstreaming with {model_name}: {chunk_seconds * 1000:.0f} ms chunks, attention "
        f"context (left, right{', ahead' if len(context) == 3 else ''}) = {context} encoder "
        "frames"
    )
    finals, latencies = [], []
    for index, u in enumerate(utterances):
        shown = ""
        for p in stream_audio(asr.stream(att_context=context), u[1], chunk_seconds, False):
            latencies.append(p.latency)
            if index == 0 and p.text != shown:
                tag = "final" if p.final else f"{p.seconds:5.2f} s"
                print(f"  [{tag}] {p.text}")
                shown = p.text
            if p.final:
                finals.append(p.text)
    offline = asr.transcribe([u[1] for u in utterances], sample_rate=16000)
    streamed, full = _group_scores(utterances, finals), _group_scores(utterances, offline)
    for group in streamed:
        if group != "all":
            print(
                f"  {group:16s} streaming WER {streamed[group][0]:7.2%}  full-context WER "
                f"{full[group][0]:7.2%}  ({streamed[group][2]} utterances)"
            )
    ms = sorted(x * 1000 for x in latencies)
    print(
        f"{model_name}: streaming WER {streamed['all'][0]:.2%} vs full-context WER "
        f"{full['all'][0]:.2%}; per-chunk compute p50 {ms[len(ms) // 2]:.1f} ms, "
        f"p95 {ms[min(len(ms) - 1, int(0.95 * len(ms)))]:.1f} ms ({len(ms)} chunks)"
    )
    return streamed["all"][0]


def demo_scenes(count: int, config: Any = None) -> list[tuple[np.ndarray, Any]]:
    """The first ``count`` scenes of the composed test split of ``config`` (a
    :class:`~suite.data.scenes.SceneConfig`; default ``suite data synth-scenes``'s: 64 px,
    seed 0, composition seed 0), composed here from the sources' test images: the same canvases
    and captions as ``data/scenes/test.jsonl``, each showing a composition the captioners never
    saw in training. Returns ``(image (S, S, 3) uint8, SceneItem)`` pairs."""
    from suite.data.scene_captions import held_out_compositions
    from suite.data.scene_manifest import SceneManifest
    from suite.data.scenes import SceneConfig, compose_scene, object_pool

    config = config or SceneConfig()
    config.check()
    comps = held_out_compositions(config.names(), config.composition_seed)
    held = {k: set(v) for k, v in comps.items()}
    pool = object_pool(config, "test")
    images, rows = [], []
    for index in range(count):
        image, fields = compose_scene(index, "test", config, held, pool)
        images.append(image)
        rows.append({"id": f"test-{index:06d}", "source": "", **fields})
    return list(zip(images, SceneManifest.from_dicts(rows), strict=True))


def run_captioning(
    model_name: str = "default-captioner", count: int = 8, config: Any = None
) -> float:
    """Caption the first ``count`` held-out composed test scenes (:func:`demo_scenes`) with
    ``model_name``; print reference, hypothesis, the facts it missed and the held-out
    compositions each scene shows, then attribute accuracy, fact recall and CIDEr; returns the
    attribute accuracy."""
    import suite
    from suite.data.scene_manifest import SceneManifest
    from suite.tasks.caption.evaluation import score_captions

    print(f"\ncaptioning {count} composed test scenes (held-out compositions) ...")
    scenes = demo_scenes(count, config)
    captioner = suite.load(model_name)
    start = time.perf_counter()
    hypotheses = captioner.caption([image for image, _ in scenes], method="beam")
    elapsed = time.perf_counter() - start
    scores = score_captions(SceneManifest([item for _, item in scenes]), hypotheses)
    for row in scores.rows:
        missing = ", ".join(row["missing"]) or "none"
        print(f"\n[{row['id']}; held out: {'; '.join(row['novel'])}]  missed: {missing}")
        print(f"  REF: {row['reference']}\n  HYP: {row['hypothesis']}")
    print(
        f"\n{model_name} on {count} held-out scenes: attribute accuracy "
        f"{scores.attribute_accuracy:.0%}, fact recall {scores.fact_recall:.0%}, CIDEr "
        f"{scores.cider:.2f} ({elapsed:.2f} s, beam search, {torch_threads()} CPU threads)"
    )
    return scores.attribute_accuracy


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m suite.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("model", nargs="?", default="default-asr")
    parser.add_argument(
        "--per-group", type=int, default=3, help="sentences per synthesized group (default 3)"
    )
    parser.add_argument(
        "--real", type=int, default=2, help="recorded test utterances, at most 2 (default 2)"
    )
    parser.add_argument("--streaming-model", default="streaming-asr")
    parser.add_argument("--no-streaming", action="store_true", help="skip the streaming part")
    parser.add_argument("--captioner", default="default-captioner")
    parser.add_argument(
        "--scenes", type=int, default=8, help="composed test scenes to caption (0: none)"
    )
    args = parser.parse_args(argv)
    try:
        streaming = None if args.no_streaming else args.streaming_model
        run(args.model, args.per_group, streaming, args.real)
        if args.scenes:
            run_captioning(args.captioner, args.scenes)
    except UserError as e:
        print(f"suite demo: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
