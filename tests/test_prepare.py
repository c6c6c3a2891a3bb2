"""``suite data prepare librispeech``: a tiny folder laid out exactly like LibriSpeech."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet, validate

from suite.cli import main
from suite.data.prepare import find_librispeech_parts

SAMPLE_RATE = 16000

# part -> {utterance id: (transcript as LibriSpeech writes it, duration in seconds)}
UTTERANCES = {
    "dev-clean": {
        "84-121123-0000": ("GO DO YOU HEAR", 0.5),
        "84-121123-0001": ("BUT IN LESS THAN FIVE MINUTES THE STAIRCASE GROANED", 0.75),
        "174-50561-0000": ("FORGOTTEN TOO THE NAME OF GILLIAN THE LOVELY CAPTIVE", 1.0),
    },
    "train-clean-100": {
        "103-1240-0000": ("CHAPTER ONE MISSUS RACHEL LYNDE IS SURPRISED MISSUS RACHEL'S", 0.25),
        "103-1240-0001": ("THAT HAD ITS SOURCE AWAY BACK IN THE WOODS", 0.5),
    },
}


def _write_librispeech(root: Path) -> None:
    rng = np.random.default_rng(0)
    for part, utterances in UTTERANCES.items():
        chapters: dict[Path, list[str]] = {}
        for utt_id, (text, seconds) in utterances.items():
            speaker, chapter, _ = utt_id.split("-")
            folder = root / part / speaker / chapter
            folder.mkdir(parents=True, exist_ok=True)
            t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
            audio = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(t.size)
            sf.write(folder / f"{utt_id}.flac", audio.astype(np.float32), SAMPLE_RATE)
            chapters.setdefault(folder / f"{speaker}-{chapter}.trans.txt", []).append(
                f"{utt_id} {text}"
            )
        for path, lines in chapters.items():
            path.write_text("\n".join(lines) + "\n")
    # Top-level files of the real archive; lhotse's recipe does not read them.
    (root / "SPEAKERS.TXT").write_text("; ID  |SEX| SUBSET | MINUTES | NAME\n")
    (root / "CHAPTERS.TXT").write_text("; ID | READER | MINUTES | SUBSET | PROJ. | BOOK ID\n")


@pytest.mark.parametrize("with_top_level", [True, False])
def test_prepare_librispeech(tmp_path: Path, capsys, with_top_level: bool) -> None:
    corpus = tmp_path / "corpus"
    _write_librispeech(corpus / "LibriSpeech" if with_top_level else corpus)
    out = tmp_path / "manifests"

    assert main(["data", "prepare", "librispeech", str(corpus), str(out)]) == 0

    summary = capsys.readouterr().out.splitlines()
    for part, utterances in UTTERANCES.items():
        path = out / f"librispeech_cuts_{part}.jsonl.gz"
        assert path.is_file()
        cuts = CutSet.from_file(path)
        validate(cuts, read_data=True)
        assert sorted(cuts.ids) == sorted(utterances)
        for cut in cuts:
            text, seconds = utterances[cut.id]
            assert cut.duration == pytest.approx(seconds)
            assert cut.sampling_rate == SAMPLE_RATE
            (sup,) = cut.supervisions
            assert sup.text == text.lower()  # normalize_text: lower case, apostrophes kept
            assert sup.speaker == cut.id.split("-")[0]
            assert cut.load_audio().shape == (1, int(seconds * SAMPLE_RATE))
        hours = sum(s for _, s in utterances.values()) / 3600
        line = f"librispeech {part}: {len(utterances)} utterances, {hours:.2f} h"
        assert any(s.startswith(line) for s in summary), summary
    assert not list(out.glob(".*")), "no temporary files left behind"


def test_prepare_again_reuses_lhotse_manifests(tmp_path: Path) -> None:
    corpus, out = tmp_path / "LibriSpeech", tmp_path / "out"
    _write_librispeech(corpus)
    assert main(["data", "prepare", "librispeech", str(corpus), str(out)]) == 0
    first = CutSet.from_file(out / "librispeech_cuts_dev-clean.jsonl.gz")
    assert main(["data", "prepare", "librispeech", str(corpus), str(out)]) == 0
    assert list(CutSet.from_file(out / "librispeech_cuts_dev-clean.jsonl.gz")) == list(first)


def test_prepare_errors(tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "out")
    assert main(["data", "prepare", "librispeech", str(tmp_path / "nowhere"), out]) == 2
    assert "does not exist" in capsys.readouterr().err

    empty = tmp_path / "empty"
    (empty / "LibriSpeech" / "dev-clean").mkdir(parents=True)  # a part with no transcripts
    assert main(["data", "prepare", "librispeech", str(empty), out]) == 2
    err = capsys.readouterr().err
    assert "found no LibriSpeech part" in err and "train-clean-100" in err
    assert err.count("\n") == 1  # one line, no traceback

    # Transcripts whose audio is missing.
    broken = tmp_path / "broken" / "dev-clean" / "1" / "2"
    broken.mkdir(parents=True)
    (broken / "1-2.trans.txt").write_text("1-2-0000 HELLO\n")
    assert main(["data", "prepare", "librispeech", str(tmp_path / "broken"), out]) == 2
    assert ".flac" in capsys.readouterr().err


def test_find_parts_prefers_given_folder(tmp_path: Path) -> None:
    _write_librispeech(tmp_path)
    root, parts = find_librispeech_parts(tmp_path)
    assert root == tmp_path and parts == ["dev-clean", "train-clean-100"]


def _tone(path: Path, seconds: float = 0.3) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), SAMPLE_RATE)


def test_prepare_ljspeech_and_cmu_arctic_split_by_sentence_like_the_shared_pack(tmp_path):
    from suite.data.prepare import sentence_split

    lj = tmp_path / "LJSpeech-1.1"
    rows = {
        "LJ001-0001": "Printing, in the only sense|Printing, in the only sense",
        "LJ001-0014": "In 1450 and 1460|In fourteen fifty and fourteen sixty",
        "LJ001-0016": "Dr. Smith|Doctor Smith",
        "LJ002-0020": "In 1813|In eighteen thirteen",  # held out of every split
    }
    for clip in rows:
        _tone(lj / "wavs" / f"{clip}.wav")
    (lj / "metadata.csv").write_text("".join(f"{k}|{v}\n" for k, v in rows.items()))
    out = tmp_path / "out"
    assert main(["data", "prepare", "ljspeech", str(tmp_path), str(out / "lj")]) == 0
    texts = {}
    for split in ("train", "dev", "test"):
        for cut in CutSet.from_file(out / "lj" / f"ljspeech_cuts_{split}.jsonl.gz"):
            assert sentence_split(cut.id) == split and cut.custom["source"] == "ljspeech"
            texts[cut.id] = cut.supervisions[0].text
    assert texts == {
        "LJ001-0001": "printing in the only sense",
        "LJ001-0014": "in fourteen fifty and fourteen sixty",
        "LJ001-0016": "doctor smith",
    }

    arctic = tmp_path / "arctic" / "cmu_us_slt_arctic"
    prompts = {"arctic_a0001": "Author of the danger trail.", "arctic_a0007": "It was 6 o'clock."}
    prompts |= {"arctic_a0011": "If I ever needed a fighter.", "arctic_a0073": "Yes."}
    for prompt in prompts:
        _tone(arctic / "wav" / f"{prompt}.wav")
    (arctic / "etc").mkdir()
    (arctic / "etc/txt.done.data").write_text(
        "".join(f'( {k} "{v}" )\n' for k, v in prompts.items())
    )
    assert main(["data", "prepare", "cmu_arctic", str(tmp_path / "arctic"), str(out / "a")]) == 0
    splits = {
        split: [c.id for c in CutSet.from_file(out / "a" / f"cmu_arctic_cuts_{split}.jsonl.gz")]
        for split in ("train", "dev", "test")
    }
    assert splits == {
        "train": ["slt-arctic_a0007"],
        "dev": ["slt-arctic_a0073"],
        "test": ["slt-arctic_a0011"],
    }
    cut = next(iter(CutSet.from_file(out / "a" / "cmu_arctic_cuts_train.jsonl.gz")))
    assert cut.supervisions[0].text == "it was six o'clock"
    assert main(["data", "prepare", "ljspeech", str(tmp_path / "arctic"), str(out)]) == 2
