"""Atomic file writes: a reader never sees a half-written file, a crash never leaves one; and
the package folder (model or LM) written that way."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    ``suffix`` defaults to the target's own suffix so that writers picking a format from the
    file name (soundfile, safetensors) still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` and move the result onto ``path`` atomically."""
    with atomic_path(path) as tmp:
        write(tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write(path, lambda p: p.write_text(text))


def write_package(
    directory: str | Path,
    config: dict[str, Any],
    weights: Mapping[str, Any],
    tokenizer: Any,
    card: str | None = None,
) -> Path:
    """Write a package folder, each file atomically, the card last: ``config.yaml``,
    ``model.safetensors`` (``weights``, tensors moved to CPU), ``tokenizer/`` (by
    ``tokenizer.save``, when there is one) and ``README.md``.

    Args:
        directory: the package folder (created).
        config: what ``config.yaml`` holds (``task`` and the constructor's options).
        weights: the state dict to save.
        tokenizer: a :class:`~suite.interfaces.Tokenizer`, or ``None`` for a task without text.
        card: the model card's markdown; an existing card is kept when ``None``.

    Returns:
        ``directory``, as a path.
    """
    import yaml
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_text(directory / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    tensors = {k: v.detach().cpu().contiguous() for k, v in weights.items()}
    with atomic_path(directory / "model.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save(directory / "tokenizer")
    if card is not None:
        atomic_write_text(directory / "README.md", card)
    return directory
