"""The ``.jsonl`` manifests the synthetic corpora write (scenes, clips, sound scenes), read as
immutable lists of frozen dataclass rows. :class:`JsonlManifest` holds what they share (reading,
checking, slicing, sampling); each manifest names its rows and how a JSON line becomes one."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from suite.errors import UserError

if TYPE_CHECKING:  # typing.Self needs Python 3.11
    from typing_extensions import Self

ItemT = TypeVar("ItemT")


class JsonlManifest(Sequence[ItemT]):
    """An immutable list of rows with unique ``id`` read from a ``.jsonl`` manifest.

    A subclass sets the class attributes below and :meth:`_item`, which turns one decoded line
    into a row (a ``ValueError`` or ``TypeError`` there reports the line as malformed).

    Attributes:
        item_type: the row dataclass (its fields name what a line holds in error messages).
        error: the exception raised for a missing, empty or malformed manifest.
        noun: what one row is, in messages ("clip", "sound scene").
        plural: what several rows are ("clips", "scenes").
        command: the ``suite data`` sub-command that writes the manifest.
    """

    item_type: ClassVar[type]
    error: ClassVar[type[UserError]] = UserError
    noun: ClassVar[str]
    plural: ClassVar[str]
    command: ClassVar[str]

    def __init__(self, items: Iterable[ItemT]) -> None:
        self._items = tuple(items)
        ids = [i.id for i in self._items]  # type: ignore[attr-defined]
        if len(set(ids)) != len(ids):
            raise self.error(f"{self.noun} ids must be unique within a manifest")

    @classmethod
    def _item(cls, raw: Any) -> ItemT:
        """The row a decoded ``.jsonl`` line describes."""
        raise NotImplementedError

    @classmethod
    def from_jsonl(cls, path: str | Path) -> Self:
        """The rows of the manifest at ``path`` (blank lines skipped)."""
        path = Path(path)
        if not path.is_file():
            raise cls.error(
                f"no {cls.noun} manifest at {path}; write one with `suite data {cls.command} "
                f"--out {path.parent}`"
            )
        fields = ", ".join(f.name for f in dataclasses.fields(cls.item_type))
        items = []
        with open(path) as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    items.append(cls._item(json.loads(line)))
                except (ValueError, TypeError) as e:
                    raise cls.error(
                        f"{path}:{number} is not a {cls.noun} ({e}); a line holds {fields} "
                        f"(suite data {cls.command})"
                    ) from None
        if not items:
            raise cls.error(f"{cls.noun} manifest {path} holds no {cls.plural}")
        return cls(items)

    @classmethod
    def from_dicts(cls, rows: Iterable[dict[str, Any]]) -> Self:
        """The rows given as the decoded lines of a ``.jsonl`` manifest."""
        return cls(cls._item(dict(row)) for row in rows)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return type(self)(self._items[index])
        return self._items[index]

    def __iter__(self) -> Iterator[ItemT]:
        return iter(self._items)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} {self.plural})"

    def sample(self, count: int, seed: int = 0) -> Self:
        """``count`` rows drawn by ``seed`` (all when fewer), in manifest order."""
        if count >= len(self):
            return self
        chosen = sorted(random.Random(seed).sample(range(len(self)), count))
        return type(self)(self._items[i] for i in chosen)


__all__ = ["JsonlManifest"]
