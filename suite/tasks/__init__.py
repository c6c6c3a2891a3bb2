"""Tasks (registry kind ``task``): what differs between jobs (see :mod:`suite.tasks.base`).

Importing this package registers the built-in tasks: ``asr``, ``caption``,
``classify``, ``codec``, ``lm`` and ``mae``.
"""

from suite.tasks import asr, caption, classify, codec, lm, mae
from suite.tasks.base import IndexSampler, Task

__all__ = ["IndexSampler", "Task", "asr", "caption", "classify", "codec", "lm", "mae"]
