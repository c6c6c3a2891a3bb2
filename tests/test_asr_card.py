"""The open recognizers' model card: its table comes from real ``suite evaluate --json`` runs of a
tiny streaming package, and it credits every data source with its license."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import torch

from suite.cli import main
from suite.config import ModelConfig
from suite.heads.lm import save_lm_package
from suite.model import build_model, save_package
from suite.tasks.asr.card import RESULT_FILES, load_results, model_card, results_table
from suite.tasks.asr.pipeline import attach_lm
from suite.tokenizers import CharTokenizer
from tests.test_asr_tuning import write_manifest
from tests.test_ctc_lm import random_lm

SYNTHETIC = (
    {"engine": "espeak", "voice_seen_in_train": True, "engine_seen_in_train": True},
    {"engine": "espeak", "voice_seen_in_train": False, "engine_seen_in_train": True},
    {"engine": "pico", "voice_seen_in_train": False, "engine_seen_in_train": False},
)
REAL = ({"source": "cathy"}, {"source": "fsdd"})


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny causal package (two attention contexts, an LM) and the results folder of its
    evaluation on a synthetic and a recorded test manifest, as the script writes it."""
    tmp = tmp_path_factory.mktemp("card")
    tokenizer = CharTokenizer()
    torch.manual_seed(0)
    encoder = {"name": "conformer", "preset": "tiny", "causal": True}
    encoder["att_contexts"] = [None, [4, 1]]
    config = ModelConfig(
        encoder=encoder, heads={"ctc": {"name": "ctc"}}, tokenizer={"name": "char"}
    )
    save_package(build_model(config, tokenizer), tmp / "asr", card="# asr\n")
    save_lm_package(random_lm(tokenizer.vocab_size), tokenizer, tmp / "lm")
    package = attach_lm(tmp / "asr", tmp / "lm", tmp / "pkg", lm_weight=1.0, beam_size=4)
    open_manifest = write_manifest(tmp / "open", seed=1, customs=SYNTHETIC)
    real_manifest = write_manifest(tmp / "real", seed=2, customs=REAL)
    results = tmp / "results"
    results.mkdir()
    runs = {
        "open": [str(open_manifest)],
        "open_greedy": [str(open_manifest), "--decoding", "greedy"],
        "open_streaming": [str(open_manifest), "--streaming"],
        "real": [str(real_manifest)],
        "real_streaming": [str(real_manifest), "--streaming"],
    }
    for key, args in runs.items():
        argv = ["evaluate", str(package), *args, "--json", "--results", str(tmp / "r.jsonl")]
        (results / RESULT_FILES[key]).write_text(printed(main, argv))
    return package, results


def printed(command, argv: list[str]) -> str:
    """What ``command(argv)`` prints on stdout; it must succeed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert command(argv) == 0
    return out.getvalue()


def test_the_table_holds_what_evaluate_measured(evaluated):
    package, results_dir = evaluated
    results = load_results(results_dir)
    assert set(results) == {"open", "open_greedy", "open_streaming", "real", "real_streaming"}
    table = results_table(results)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines()[2:]}
    kinds = results["open"]["groups"]["kind"]
    assert kinds["seen"]["utterances"] == 2 and kinds["held_out_engine"]["utterances"] == 2
    seen = rows["open-domain text, voices seen in training"].split(" | ")
    assert seen[1:3] == ["2", f"{kinds['seen']['wer']:.2%}"]
    greedy = results["open_greedy"]["groups"]["kind"]["seen"]["wer"]
    streaming = results["open_streaming"]["groups"]["kind"]["seen"]["wer"]
    assert seen[3:5] == [f"{greedy:.2%}", f"{streaming:.2%}"]
    assert results["open_streaming"]["context"] == [4, 1]
    ratio = streaming / kinds["seen"]["wer"] if kinds["seen"]["wer"] else None
    assert seen[5] == (f"{ratio:.2f}" if ratio is not None else "-")
    results["open_streaming"]["groups"]["kind"]["seen"]["utterances"] = 1  # another sample
    assert "| n/a (other cuts) |" in results_table(results).splitlines()[2]
    cathy = rows["recorded speech: cathy"].split(" | ")
    assert cathy[2] == f"{results['real']['groups']['source']['cathy']['wer']:.2%}"
    assert cathy[3] == "-" and cathy[6] == "-"  # not measured: no greedy run, no peer
    pooled = rows["recorded speech, all sources pooled"].split(" | ")
    assert pooled[1:3] == ["6", f"{results['real']['wer']:.2%}"]
    # Word counts pool: the groups add up to the whole.
    by_source = results["real"]["groups"]["source"].values()
    assert sum(g["word_errors"] for g in by_source) == results["real"]["word_errors"]


def test_the_card_credits_the_data_and_keeps_the_lm_sections(evaluated, tmp_path):
    package, results_dir = evaluated
    summary = {
        "sentences": 10,
        "word_types": 5,
        "sources": {
            "jargon": {
                "packages": [{"name": "dict-jargon", "version": "4.4.7-3.1", "license": "PD"}],
                "sentences": {"train": 8, "dev": 1, "test": 1},
            }
        },
    }
    card = model_card(package, load_results(results_dir), "open-asr", summary)
    assert card.startswith("# open-asr\n") and "contexts full, (4, 1) (left" in card
    for credit in ("CC0 1.0", "CC BY-SA 4.0", "CC BY 4.0", "CC BY 3.0", "MIT", "dict-jargon"):
        assert credit in card, credit
    assert card.count("## Language model") == 1  # attach-lm's section is carried over
    assert "RTFx" in card and "| held-out synthesizer (SVOX Pico) | 2 |" in card
    from suite.tasks.asr.card import main as card_main

    command = printed(card_main, [str(package), str(results_dir), "--name", "open-asr"])
    assert command.startswith("# open-asr") and results_table(load_results(results_dir)) in command


def test_a_results_folder_without_results_is_refused(tmp_path):
    from suite.errors import UserError

    with pytest.raises(UserError, match="holds none of"):
        load_results(tmp_path)
    (tmp_path / RESULT_FILES["open"]).write_text("not json\n")
    with pytest.raises(UserError, match="not `suite evaluate --json`"):
        load_results(tmp_path)


def test_a_synthetic_sample_holds_every_held_out_kind():
    from lhotse.testing.dummies import dummy_cut, dummy_supervision

    from suite.tasks.asr.peers import sample_per_source

    cuts = []
    for i in range(30):
        supervision = dummy_supervision(i)
        supervision.custom = dict(SYNTHETIC[0] if i < 24 else SYNTHETIC[1 + i % 2])
        cuts.append(dummy_cut(i, supervisions=[supervision]))
    sample = sample_per_source(cuts, 2, seed=0)
    kinds = [c.supervisions[0].custom["voice_seen_in_train"] for c in sample]
    assert len(sample) == 6 and kinds.count(True) == 2
    assert {c.supervisions[0].custom["engine"] for c in sample} == {"espeak", "pico"}
