"""The shipped ``default-asr`` loads by name and transcribes speech it never heard."""

from __future__ import annotations

import suite
from suite.demo import demo_utterances
from suite.evaluate import score


def test_default_asr_is_listed_and_transcribes_unseen_sentences():
    assert suite.list_models()["default-asr"] == "asr"
    asr = suite.load("default-asr")
    utterances = demo_utterances(4)  # new sentences; two of them in held-out voices
    hypotheses = asr.transcribe([u[1] for u in utterances], sample_rate=16000)
    # Measured 12.7% on the six demo sentences (model card: 21.8% on the test split).
    assert score([u[0] for u in utterances], hypotheses).wer < 0.4
