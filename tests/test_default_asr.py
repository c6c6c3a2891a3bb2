"""The shipped ``default-asr`` loads by name and transcribes speech it never heard."""

from __future__ import annotations

import suite
from suite.demo import demo_utterances
from suite.tasks.asr.evaluation import score


def test_default_asr_is_listed_and_transcribes_unseen_sentences_with_its_lm():
    assert suite.list_models()["default-asr"] == "asr"
    asr = suite.load("default-asr")
    assert asr.model.heads["ctc"].lm is not None  # the package carries its LM
    utterances = demo_utterances(4)  # new sentences; two of them in held-out voices
    audio, refs = [u[1] for u in utterances], [u[0] for u in utterances]
    fused = score(refs, asr.transcribe(audio, sample_rate=16000)).wer
    greedy = score(refs, asr.transcribe(audio, sample_rate=16000, method="greedy")).wer
    # Measured 0.0% with the LM and 7.3% greedy on these four (model card, test split: 4.5% and
    # 21.8%): the LM spells the words the acoustic model only gets the sound of.
    assert fused < 0.1 and fused <= greedy < 0.4


def test_streaming_asr_streams_unseen_sentences_as_it_transcribes_them(capsys):
    from suite.demo import run_streaming
    from suite.tasks.asr import default_stream_context

    assert suite.list_models()["streaming-asr"] == "asr"
    utterances = demo_utterances(2)
    wer = run_streaming(utterances, "streaming-asr")  # (128, 1, 2): 80 ms chunks + 80 ahead
    printed = capsys.readouterr().out
    assert "streaming WER" in printed and "[final]" in printed
    assert wer < 0.5

    # The final streamed text is the offline transcription at the same attention context.
    asr = suite.load("streaming-asr")
    context = default_stream_context(asr.model)
    asr.model.encoder.att_context = context
    offline = asr.transcribe([u[1] for u in utterances], sample_rate=16000)
    session = suite.load("streaming-asr").stream(att_context=context)
    for start in range(0, len(utterances[0][1]), 2560):
        session.accept(utterances[0][1][start : start + 2560], sample_rate=16000)
    assert session.finish() == offline[0]
