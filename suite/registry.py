"""A tiny registry per kind of component (after lhotse's ``register_extractor``).

Each kind (encoder, head, frontend, tokenizer, codec, task) maps a name to a constructor that takes
plain keyword arguments. A family may register named size presets beside its constructor;
``create_*(name, preset="tiny", **overrides)`` fills the preset's numbers, then the overrides.

Families register themselves on import; the registry imports them lazily on first use so that
``import suite`` stays cheap.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import typing
from collections.abc import Callable
from typing import Any

from suite.errors import UserError

KINDS = ("encoder", "head", "frontend", "tokenizer", "codec", "task")

# Modules whose import registers the built-in families.
_BUILTIN_MODULES = (
    "suite.features",
    "suite.frontends",
    "suite.tokenizers",
    "suite.encoders",
    "suite.heads",
    "suite.codecs",
    "suite.tasks",
)

_entries: dict[str, dict[str, Callable[..., Any]]] = {kind: {} for kind in KINDS}
_presets: dict[str, dict[str, dict[str, dict[str, Any]]]] = {kind: {} for kind in KINDS}
_loaded = False


class RegistryError(UserError, KeyError):
    """An unknown name, preset or keyword argument; the message lists the valid choices."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in _BUILTIN_MODULES:
            importlib.import_module(module)


def _hint(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def register(
    kind: str, name: str, presets: dict[str, dict[str, Any]] | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering ``fn`` (a class or factory) under ``name`` for ``kind``."""
    if kind not in _entries:
        raise RegistryError(f"unknown registry kind '{kind}'; valid kinds: {', '.join(KINDS)}")

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _entries[kind] and _entries[kind][name] is not fn:
            raise RegistryError(f"{kind} '{name}' is already registered by {_entries[kind][name]}")
        _entries[kind][name] = fn
        _presets[kind][name] = dict(presets or {})
        return fn

    return wrap


def names(kind: str) -> list[str]:
    """Sorted registered names of one kind."""
    _load_builtins()
    return sorted(_entries[kind])


def presets(kind: str, name: str) -> dict[str, dict[str, Any]]:
    """The named size presets of one registered entry (may be empty)."""
    lookup(kind, name)
    return dict(_presets[kind][name])


def lookup(kind: str, name: str) -> Callable[..., Any]:
    """The constructor registered as ``name``; an unknown name lists the known ones."""
    _load_builtins()
    try:
        return _entries[kind][name]
    except KeyError:
        known = sorted(_entries[kind])
        raise RegistryError(
            f"unknown {kind} '{name}'; registered {kind}s: {', '.join(known) or '(none)'}."
            + _hint(name, known)
        ) from None


def check_kwargs(kind: str, name: str, kwargs: dict[str, Any]) -> None:
    """Raise if ``kwargs`` holds a keyword the constructor does not take, listing the valid ones,
    or a plain value (int, float, bool, str) of the wrong type."""
    check_call(lookup(kind, name), kwargs, f"{kind} '{name}'")


def check_call(fn: Callable[..., Any], kwargs: dict[str, Any], what: str) -> None:
    """Raise a :class:`RegistryError` naming ``what`` unless ``fn`` takes every keyword of
    ``kwargs``, with values of the plain types its annotations name."""
    params = inspect.signature(fn).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        valid = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
        for key in kwargs:
            if key not in valid:
                raise RegistryError(
                    f"{what} takes no option '{key}'; valid options: {', '.join(valid)}."
                    + _hint(key, valid)
                )
    hints = _type_hints(fn)
    for key, value in kwargs.items():
        expected = hints.get(key)
        if expected in _PLAIN and not _fits(value, expected):
            raise RegistryError(f"{what} option '{key}' takes {expected.__name__}, got {value!r}")


_PLAIN = (int, float, bool, str)


def _type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """The constructor's resolved annotations (empty when they cannot be resolved)."""
    try:
        return typing.get_type_hints(fn.__init__ if inspect.isclass(fn) else fn)
    except Exception:  # annotations naming what this module cannot import: no type checks
        return {}


def _fits(value: Any, expected: type) -> bool:
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def resolve_options(
    kind: str, name: str, preset: str | None = None, **kwargs: Any
) -> dict[str, Any]:
    """The keyword arguments ``create`` would pass: the preset's numbers, then ``kwargs``.

    Raises :class:`RegistryError` for an unknown name, preset or keyword, listing valid ones.
    """
    lookup(kind, name)
    args: dict[str, Any] = {}
    if preset is not None:
        known = _presets[kind][name]
        if preset not in known:
            raise RegistryError(
                f"{kind} '{name}' has no preset '{preset}'; presets: "
                f"{', '.join(sorted(known)) or '(none)'}." + _hint(preset, sorted(known))
            )
        args.update(known[preset])
    args.update(kwargs)
    check_kwargs(kind, name, args)
    return args


def create(kind: str, name: str, preset: str | None = None, **kwargs: Any) -> Any:
    """Build a registered component from a preset plus keyword overrides."""
    return lookup(kind, name)(**resolve_options(kind, name, preset, **kwargs))


def create_from_spec(kind: str, spec: dict[str, Any], **extra: Any) -> Any:
    """Build from a recipe mapping ``{name: ..., preset: ..., **kwargs}`` plus ``extra`` kwargs."""
    spec = dict(spec)
    if "name" not in spec:
        raise RegistryError(f"a {kind} spec needs a 'name'; registered: {', '.join(names(kind))}")
    name = spec.pop("name")
    preset = spec.pop("preset", None)
    return create(kind, name, preset=preset, **spec, **extra)


def _bind(kind: str) -> tuple[Callable[..., Any], Callable[..., Any], Callable[[], list[str]]]:
    def register_kind(name: str, presets: dict[str, dict[str, Any]] | None = None):
        return register(kind, name, presets)

    def create_kind(name: str, preset: str | None = None, **kwargs: Any) -> Any:
        return create(kind, name, preset=preset, **kwargs)

    def list_kind() -> list[str]:
        return names(kind)

    register_kind.__doc__ = f"Decorator registering a {kind} constructor (optionally with presets)."
    create_kind.__doc__ = f"Build a registered {kind} from a preset plus keyword overrides."
    list_kind.__doc__ = f"Sorted names of the registered {kind}s."
    return register_kind, create_kind, list_kind


register_encoder, create_encoder, list_encoders = _bind("encoder")
register_head, create_head, list_heads = _bind("head")
register_frontend, create_frontend, list_frontends = _bind("frontend")
register_tokenizer, create_tokenizer, list_tokenizers = _bind("tokenizer")
register_codec, create_codec, list_codecs = _bind("codec")
register_task, create_task, list_tasks = _bind("task")
