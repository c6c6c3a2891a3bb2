"""Where the shared data pack (recorded speech, noise, impulse responses) lives.

The pack sits beside the repository, at ``<repo>/../shared/data`` (as in CI), unless the
environment variable ``SUITE_SHARED_DATA`` names another folder. Code that needs it calls
:func:`require_shared_data`, which fails with one message saying where it looked and how to
point at the pack; tests call :func:`shared_data_dir` and skip when it returns ``None``.
"""

from __future__ import annotations

import os
from pathlib import Path

from suite.errors import UserError

ENV_VAR = "SUITE_SHARED_DATA"
_REPO = Path(__file__).resolve().parents[2]


def _candidates() -> list[Path]:
    env = os.environ.get(ENV_VAR)
    if env:
        return [Path(env)]
    return [_REPO.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]


def shared_data_dir() -> Path | None:
    """The shared data folder, or ``None`` when it is not there.

    ``$SUITE_SHARED_DATA`` when set (and only it), else ``<repo>/../shared/data``, else
    ``<cwd>/../shared/data``.
    """
    for candidate in _candidates():
        if candidate.is_dir():
            return candidate.resolve()
    return None


def require_shared_data(sub: str, what: str) -> Path:
    """The folder ``sub`` of the shared data pack, with a teaching error when it is missing.

    Args:
        sub: a folder inside the pack, e.g. ``"noise"`` or ``"speech-real"``.
        what: what needs it, for the message (e.g. ``"data.augment.real_noise_prob"``).
    """
    root = shared_data_dir()
    path = root / sub if root is not None else None
    if path is None or not path.is_dir():
        looked = ", ".join(str(c / sub) for c in _candidates())
        raise UserError(
            f"{what} needs the shared data pack's {sub}/ folder, which is not at {looked}; "
            f"set {ENV_VAR}=/path/to/shared/data or pass the folder explicitly"
        )
    return path
