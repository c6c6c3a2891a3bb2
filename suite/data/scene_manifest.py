"""Composed scenes as data: one :class:`SceneItem` per canvas (its image, captions and the
facts they state) and the :class:`SceneManifest` of a split (``suite data synth-scenes`` writes
them; the caption task reads them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from suite.data.images import ImageDataError, ImageItem, ImageManifest, load_item
from suite.data.manifest_files import JsonlManifest
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


class SceneManifest(JsonlManifest[SceneItem]):
    """An immutable list of :class:`SceneItem` read from a ``.jsonl`` manifest; images decode
    on :meth:`load`. ``images()`` gives the same scenes as an
    :class:`~suite.data.images.ImageManifest` (labels are the first captions)."""

    item_type = SceneItem
    error = ImageDataError
    noun, plural, command = "scene", "scenes", "synth-scenes"

    @classmethod
    def _item(cls, raw: Any) -> SceneItem:
        raw["captions"] = tuple(raw.get("captions") or [raw.get("caption", "")])
        raw["objects"] = tuple(raw.get("objects", ()))
        raw["relations"] = tuple(tuple(r) for r in raw.get("relations", ()))
        raw["novel"] = tuple(raw.get("novel", ()))
        return SceneItem(**raw)

    def images(self) -> ImageManifest:
        return ImageManifest(i.image_item() for i in self._items)

    def load(self, index: int) -> Tensor:
        """The scene's image, ``uint8 (3, S, S)``."""
        return load_item(self._items[index].image_item())
