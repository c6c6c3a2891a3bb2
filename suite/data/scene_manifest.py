"""Composed scenes as data: one :class:`SceneItem` per canvas (its image, captions and the
facts they state) and the :class:`SceneManifest` of a split (``suite data synth-scenes`` writes
them; the caption task reads them)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from suite.data.images import ImageDataError, ImageItem, ImageManifest, load_item
from suite.data.scene_captions import SceneGroup, scene_facts


@dataclass(frozen=True)
class SceneItem:
    """One scene of a manifest: its image, captions and structure.

    Attributes:
        id: unique within the manifest.
        source: the zip (or image file) holding the scene's PNG.
        member: the PNG's name in a zip source.
        caption: the first caption (a training target).
        captions: every phrasing (references for BLEU/CIDEr/ROUGE).
        objects: the groups, as :class:`SceneGroup` fields.
        relations: ``[subject index, relation, object index]`` over ``objects``.
        novel: the held-out compositions the scene shows (test scenes), as facts.
    """

    id: str
    source: str
    member: str | None = None
    caption: str = ""
    captions: tuple[str, ...] = ()
    objects: tuple[dict[str, Any], ...] = ()
    relations: tuple[tuple[int, str, int], ...] = ()
    novel: tuple[str, ...] = ()

    def facts(self) -> set[str]:
        """The facts every caption of the scene states (see :func:`scene_facts`)."""
        groups = [SceneGroup(**{**o, "boxes": (), "images": ()}) for o in self.objects]
        return scene_facts(groups, self.relations)

    def image_item(self) -> ImageItem:
        return ImageItem(self.id, self.source, member=self.member, label=self.caption)


class SceneManifest(Sequence[SceneItem]):
    """An immutable list of :class:`SceneItem` read from a ``.jsonl`` manifest; images decode
    on :meth:`load`. ``images()`` gives the same scenes as an
    :class:`~suite.data.images.ImageManifest` (labels are the first captions)."""

    def __init__(self, items: Iterable[SceneItem]) -> None:
        self._items = tuple(items)
        ids = [i.id for i in self._items]
        if len(set(ids)) != len(ids):
            raise ImageDataError("scene ids must be unique within a manifest")

    @classmethod
    def from_jsonl(cls, path: str | Path) -> SceneManifest:
        path = Path(path)
        if not path.is_file():
            raise ImageDataError(
                f"no scene manifest at {path}; write one with `suite data synth-scenes --out "
                f"{path.parent}`"
            )
        items = []
        with open(path) as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    raw = json.loads(line)
                    raw["captions"] = tuple(raw.get("captions") or [raw.get("caption", "")])
                    raw["objects"] = tuple(raw.get("objects", ()))
                    raw["relations"] = tuple(tuple(r) for r in raw.get("relations", ()))
                    raw["novel"] = tuple(raw.get("novel", ()))
                    items.append(SceneItem(**raw))
                except (ValueError, TypeError) as e:
                    raise ImageDataError(
                        f"{path}:{number} is not a scene ({e}); a line holds id, source, member, "
                        "caption, captions, objects, relations, novel (suite data synth-scenes)"
                    ) from None
        if not items:
            raise ImageDataError(f"scene manifest {path} holds no scenes")
        return cls(items)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return SceneManifest(self._items[index])
        return self._items[index]

    def __iter__(self) -> Iterator[SceneItem]:
        return iter(self._items)

    def __repr__(self) -> str:
        return f"SceneManifest({len(self)} scenes)"

    def images(self) -> ImageManifest:
        return ImageManifest(i.image_item() for i in self._items)

    def load(self, index: int) -> Tensor:
        """The scene's image, ``uint8 (3, S, S)``."""
        return load_item(self._items[index].image_item())

    def sample(self, count: int, seed: int = 0) -> SceneManifest:
        """``count`` scenes drawn by ``seed`` (all when fewer), in manifest order."""
        if count >= len(self):
            return self
        chosen = sorted(random.Random(seed).sample(range(len(self)), count))
        return SceneManifest(self._items[i] for i in chosen)
