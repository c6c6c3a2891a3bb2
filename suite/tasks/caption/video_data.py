"""Composed clips as captioning data: the manifests ``suite data synth-videos`` writes
(:class:`~suite.data.videos.ClipManifest`, :mod:`suite.data.video_scenes`) into batches of
normalized frames and tokenized captions for a video encoder (``patch_video``).

Dims legend: B - batch, N - frames kept per clip (at most the frontend's ``num_frames``),
C/H/W - the frontend's channels and ``input_size``, U - caption tokens.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from suite.data.videos import ClipManifest
from suite.frontends.video import VideoFrontend
from suite.interfaces import Batch, Tokenizer
from suite.tasks.caption.dataset import caption_targets


def is_clip_manifest(path: str | Path) -> bool:
    """Whether the first line of the ``.jsonl`` at ``path`` is a composed clip (it has
    ``objects`` and ``events``) rather than an image or sound scene."""
    try:
        with open(path) as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    return isinstance(row, dict) and "events" in row and "objects" in row
    except ValueError:  # not JSON, not text (UnicodeDecodeError is one)
        return False
    return False


def video_caption_batch(
    clips: ClipManifest,
    indices: Sequence[int],
    frontend: VideoFrontend,
    tokenizer: Tokenizer,
    seed: int | None = None,
) -> Batch:
    """The clips at ``indices``: normalized frames ``inputs (B, N, C, H, W)`` with frame
    ``lengths`` (zeros past a shorter clip's frames), ``targets (B, U)`` padded with 0 and
    ``target_lengths``, ``texts`` and ``ids``. Each target is one of the clip's phrasings drawn
    from ``seed`` (the first when ``None``)."""
    texts, targets, target_lengths = caption_targets(clips, indices, tokenizer, seed)
    x, lengths = frontend.batch([frontend.prepare(clips.load(i)) for i in indices])
    return Batch(
        inputs=x,
        lengths=lengths,
        targets=targets,
        target_lengths=target_lengths,
        texts=texts,
        ids=[clips[i].id for i in indices],
        prompts=["caption"] * len(texts),
    )
