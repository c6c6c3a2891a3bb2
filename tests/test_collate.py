"""pad_sequences: the one helper that turns variable-length items into ``(B, S, ...)`` + lengths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from suite.data.collate import pad_sequences


def test_waveforms_become_a_right_padded_batch_with_lengths():
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(n).astype(np.float32) for n in (5, 9, 1)]
    audio, lengths = pad_sequences(waves)
    assert audio.shape == (3, 9) and audio.dtype == torch.float32
    assert lengths.dtype == torch.long and lengths.tolist() == [5, 9, 1]
    for b, wave in enumerate(waves):
        assert torch.equal(audio[b, : len(wave)], torch.from_numpy(wave))
        assert (audio[b, len(wave) :] == 0).all()


def test_token_lists_stay_integer_even_with_an_empty_one():
    targets, lengths = pad_sequences([[3, 1, 4], [], [1, 5]])
    assert targets.dtype == torch.long
    assert targets.tolist() == [[3, 1, 4], [0, 0, 0], [1, 5, 0]]
    assert lengths.tolist() == [3, 0, 2]


def test_trailing_dims_padding_value_and_dtype():
    frames = [torch.ones(2, 4), torch.ones(0, 4), torch.ones(3, 4)]  # (T_b, F)
    padded, lengths = pad_sequences(frames, padding_value=-1.0, dtype=torch.float64)
    assert padded.shape == (3, 3, 4) and padded.dtype == torch.float64
    assert lengths.tolist() == [2, 0, 3]
    assert (padded[0, 2:] == -1).all() and (padded[1] == -1).all() and (padded[2] == 1).all()
    # An empty item in list form has no trailing dims of its own; it takes the others'.
    padded, lengths = pad_sequences([[], [[1, 2]]])
    assert padded.shape == (2, 1, 2) and lengths.tolist() == [0, 1]


def test_mixed_dtypes_promote():
    padded, _ = pad_sequences([np.array([1, 2], np.int16), np.array([0.5], np.float32)])
    assert padded.dtype == torch.float32
    assert padded.tolist() == [[1.0, 2.0], [0.5, 0.0]]


def test_no_items_and_only_empty_items():
    padded, lengths = pad_sequences([])
    assert padded.shape == (0, 0) and lengths.shape == (0,) and lengths.dtype == torch.long
    padded, lengths = pad_sequences([[], []], dtype=torch.long)
    assert padded.shape == (2, 0) and padded.dtype == torch.long and lengths.tolist() == [0, 0]


def test_errors_say_what_shape_was_expected():
    with pytest.raises(ValueError, match="item 1 is a scalar"):
        pad_sequences([torch.ones(3), torch.tensor(2.0)])
    with pytest.raises(ValueError, match=r"trailing shapes \[\(3,\), \(4,\)\]"):
        pad_sequences([torch.ones(2, 3), torch.ones(2, 4)])
