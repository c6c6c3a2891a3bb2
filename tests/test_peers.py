"""The peer recognizer (PocketSphinx) scored as ours is: the sample per source, and one real
recording it recognizes (when PocketSphinx and the shared recorded speech are there)."""

from __future__ import annotations

import pytest
from lhotse.testing.dummies import dummy_cut, dummy_supervision

from suite.data.shared import shared_data_dir
from suite.tasks.asr.peers import evaluate_peer, sample_per_source


def cut_of(index: int, source: str):
    supervision = dummy_supervision(index)
    supervision.custom = {"source": source}
    return dummy_cut(index, supervisions=[supervision])


def test_sample_per_source_is_seeded_bounded_and_keeps_manifest_order():
    cuts = [cut_of(i, "a" if i % 3 else "b") for i in range(30)]
    sample = sample_per_source(cuts, 4, seed=0)
    assert [c.supervisions[0].custom["source"] for c in sample].count("a") == 4
    assert [c.supervisions[0].custom["source"] for c in sample].count("b") == 4
    assert sample == sorted(sample, key=cuts.index)
    assert [c.id for c in sample_per_source(cuts, 4, seed=0)] == [c.id for c in sample]
    assert [c.id for c in sample_per_source(cuts, 4, seed=1)] != [c.id for c in sample]
    assert sample_per_source(cuts, None, seed=0) == cuts


def test_pocketsphinx_recognizes_a_real_recording():
    pytest.importorskip("pocketsphinx")
    if shared_data_dir() is None:
        pytest.skip("no shared recorded speech")
    from suite.data.real_speech import source_cuts

    cuts = list(source_cuts(shared_data_dir() / "speech-real", "cathy", "test"))[:3]
    scores = evaluate_peer(cuts)
    assert scores.num_utterances == 3 and scores.wer < 0.5
    assert {r["source"] for r in scores.per_utterance} == {"cathy"}
