"""Recipes: one YAML file with ``task:``, ``data:``, ``model:`` and ``train:`` loaded into typed
dataclasses. Every task (``suite.tasks``) reads the same schema; a section a task does not use
keeps its defaults.

``load_recipe(path, ["train.lr=1e-3", "model.encoder.preset=small"])`` applies dotted overrides
to the YAML before validation, so overrides and files are checked the same way: an unknown key
or a value of the wrong type is a :class:`ConfigError` naming the key and the valid choices.

Component sections (``model.encoder`` and friends) are registry specs ``{name, preset, **kwargs}``;
their keys are checked against the registered constructor's signature.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from suite import registry
from suite.errors import UserError


class ConfigError(UserError, ValueError):
    """A recipe or override that does not fit the schema; the message says how to fix it."""


@dataclass
class AugmentConfig:
    """Training-time augmentation; all off by default except SpecAugment."""

    specaugment: bool = True
    speed_perturb: list[float] = field(default_factory=list)  # e.g. [0.9, 1.1]; [] is off
    noise_prob: float = 0.0  # probability of mixing white/pink noise into a cut
    noise_snr_db: list[float] = field(default_factory=lambda: [10.0, 30.0])
    # Real acoustics (suite.data.acoustics), from a noise pack: a folder with manifest.jsonl
    # (path, kind) such as the shared data's noise/, which null means.
    noise_dir: str | None = None
    real_noise_prob: float = 0.0  # recorded noise (the kinds below) at a random SNR
    real_noise_snr_db: list[float] = field(default_factory=lambda: [0.0, 20.0])
    real_noise_kinds: list[str] = field(default_factory=lambda: ["background", "sound"])
    reverb_prob: float = 0.0  # convolve with one of the pack's room impulse responses (kind ir)
    room_prob: float = 0.0  # a simulated shoebox room (needs pyroomacoustics)
    room_rt60: list[float] = field(default_factory=lambda: [0.2, 0.8])  # seconds
    lowpass_prob: float = 0.0  # low-pass at a cutoff drawn from lowpass_hz
    lowpass_hz: list[float] = field(default_factory=lambda: [3000.0, 7000.0])
    telephone_prob: float = 0.0  # band-pass to the telephone band, 300-3400 Hz


@dataclass
class DataConfig:
    """Where the manifests are and how batches are drawn."""

    corpus_dir: str = "data/espeak"
    # Relative paths resolve against corpus_dir. ``train`` may also be a weighted mix of
    # manifests, ``[{manifest: PATH, weight: W}, ...]`` (see suite.data.mixing).
    train: str | list[dict[str, Any]] = "espeak_cuts_train.jsonl.gz"
    dev: str = "espeak_cuts_dev.jsonl.gz"
    test: str = "espeak_cuts_test.jsonl.gz"
    sample_rate: int = 16000
    max_duration: float = 200.0  # seconds of audio per batch, before padding
    sampler: dict[str, Any] = field(
        default_factory=lambda: {"name": "dynamic_bucketing", "num_buckets": 30}
    )
    num_workers: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # Text tasks (lm): items per batch on each rank, and extra training sentences from the
    # corpus's sentence generator (another seed; dev and test transcripts are never added).
    batch_size: int = 64
    # Tasks that train on random crops of utterances (codec): seconds per crop.
    segment: float = 1.0
    generated_sentences: int = 0
    generator_seed: int = 1
    # Image classification: the share of each class's training images whose labels are used
    # (seeded; e.g. 0.1 for 10% of the labels), the rest left out.
    label_fraction: float = 1.0

    def manifest(self, split: str) -> Path:
        """Path of the cut manifest of ``split`` (``train``, ``dev`` or ``test``); for a mixed
        ``train``, its first source's (:meth:`sources` gives them all)."""
        return self.sources(split)[0][0]

    def single_manifest(self, split: str, task: str) -> Path:
        """:meth:`manifest`, for tasks that train on one source: a mix is a clear error."""
        if len(self.sources(split)) > 1:
            raise ConfigError(
                f"the {task} task reads one manifest, but 'data.{split}' lists a mix of "
                f"{len(self.sources(split))}; give one path (weighted mixes are for the asr task)"
            )
        return self.manifest(split)

    def sources(self, split: str) -> list[tuple[Path, float]]:
        """``(manifest path, weight)`` of each source of ``split``; one, weight 1, unless
        ``train`` lists a mix."""
        value = getattr(self, split)
        entries = [{"manifest": value}] if isinstance(value, str) else value
        out = []
        for i, entry in enumerate(entries):
            where = f"data.{split}[{i}]"
            extra = set(entry) - {"manifest", "weight"}
            if not isinstance(entry.get("manifest"), str) or extra:
                raise ConfigError(
                    f"'{where}' must be {{manifest: PATH, weight: W}}, got {entry!r}; e.g. "
                    "data.train=[{manifest: a_cuts_train.jsonl.gz, weight: 1}, ...]"
                )
            weight = entry.get("weight", 1.0)
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
                raise ConfigError(f"'{where}.weight' must be a number >= 0, got {weight!r}")
            path = Path(entry["manifest"])
            out.append((path if path.is_absolute() else Path(self.corpus_dir) / path, weight))
        if not out or not any(w > 0 for _, w in out):
            raise ConfigError(f"'data.{split}' needs at least one manifest with a weight > 0")
        return [(p, float(w)) for p, w in out]


@dataclass
class ModelConfig:
    """Registry specs of the parts a task model is composed from."""

    frontend: dict[str, Any] = field(default_factory=lambda: {"name": "fbank"})
    encoder: dict[str, Any] = field(default_factory=lambda: {"name": "conformer", "preset": "tiny"})
    heads: dict[str, dict[str, Any]] = field(default_factory=lambda: {"ctc": {"name": "ctc"}})
    tokenizer: dict[str, Any] = field(default_factory=lambda: {"name": "bpe", "vocab_size": 256})
    # Each head's weight in the summed loss (default 1), e.g. a hybrid CTC/RNN-T model:
    # ``{ctc: 0.3, rnnt: 0.7}``, as NeMo's ``aux_ctc.ctc_loss_weight``.
    loss_weights: dict[str, float] = field(default_factory=dict)
    # In-place distillation from full context (dual-mode ASR, Yu et al. 2021): when a streaming
    # encoder draws a chunked context in training, the same model at full context (evaluating,
    # no gradient) teaches each CTC head's per-frame distribution; the weight of that KL term.
    context_distillation: float = 0.0
    # The mae task's options (mask ratio, decoder size, normalized-pixel loss): see
    # suite.encoders.mae.
    mae: dict[str, Any] = field(default_factory=dict)
    # The codec task's codec: a codec registry spec ``{name, preset, **options}``.
    codec: dict[str, Any] = field(default_factory=dict)
    # The lm task's TransformerLM options (vocab_size comes from the tokenizer).
    lm: dict[str, Any] = field(
        default_factory=lambda: {"d_model": 128, "num_layers": 2, "num_heads": 4}
    )


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping."""

    out_dir: str = "runs/asr"
    seed: int = 0
    max_steps: int = 1000
    lr: float = 1e-3
    weight_decay: float = 1e-3
    warmup_steps: int = 100
    grad_clip: float = 5.0
    accum_grad: int = 1
    precision: Literal["fp32", "bf16"] = "bf16"  # bf16 autocast is used on GPU only
    ema_decay: float | None = None
    val_every: int = 200
    log_every: int = 20
    keep_checkpoints: int = 2
    device: str = "auto"
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    # Under torchrun (``suite train --nproc N``): replicate the model on every rank (``ddp``) or
    # shard parameters, gradients and optimizer state across ranks (``fsdp``: FSDP2
    # ``fully_shard`` on every encoder layer and the whole model).
    strategy: Literal["ddp", "fsdp"] = "ddp"
    # Steps in a row whose loss or gradient is not finite before the run stops (each is
    # skipped, leaving the weights as they were).
    max_skipped_steps: int = 20
    # Start from a model package's weights and tokenizer (a shipped name such as ``default-asr``
    # or a package folder), as NeMo's ``init_from_nemo_model``; the optimizer starts fresh.
    init_from: str | None = None
    # Copy only these parts' weights (modules, e.g. ``[frontend, encoder]``; dotted names such
    # as ``heads.ctc.proj`` name a submodule).
    init_include: list[str] | None = None
    # Parts whose weights stay fixed (no gradient, eval mode: no dropout), e.g.
    # ``[frontend, encoder]`` to train a new head on a trained encoder; dotted names such as
    # ``heads.ctc`` name a head.
    freeze: list[str] | None = None


@dataclass
class Recipe:
    """A whole recipe: which task, what data, what model, how to train."""

    task: str = "asr"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Sections whose values are registry specs, with the registry kind they are checked against.
_COMPONENT_KINDS = {"frontend": "frontend", "encoder": "encoder", "tokenizer": "tokenizer"}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check_value(value: Any, tp: Any, key: str) -> Any:
    """Validate ``value`` against the annotation ``tp``; returns it (ints widened to float)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in args:
            if option is type(None):
                if value is None:
                    return None
                continue
            try:
                return _check_value(value, option, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(
            f"'{key}' expects {' or '.join(_type_name(a) for a in args)}, got {value!r}"
        )
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"'{key}' must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"'{key}' expects a list, got {value!r}")
        return [_check_value(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}' expects a mapping, got {value!r}")
        return {k: _check_value(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, tp):
        return value
    raise ConfigError(f"'{key}' expects {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _from_dict(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"'{prefix or 'recipe'}' must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in raw.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"unknown key '{full}'; valid keys under '{prefix or 'recipe'}': "
                f"{', '.join(valid)}.{hint}"
            )
        values[key] = _check_value(value, hints[key], full)
    return cls(**values)


def _check_components(model: ModelConfig) -> None:
    specs = [(f"model.{s}", kind, getattr(model, s)) for s, kind in _COMPONENT_KINDS.items()]
    specs += [(f"model.heads.{n}", "head", spec) for n, spec in model.heads.items()]
    for name, weight in model.loss_weights.items():
        if name not in model.heads:
            raise ConfigError(
                f"'model.loss_weights.{name}': no head named '{name}'; heads: "
                f"{', '.join(model.heads)}"
            )
        if not weight >= 0:
            raise ConfigError(f"'model.loss_weights.{name}' must be >= 0, not {weight}")
    if not model.context_distillation >= 0:
        raise ConfigError(
            f"'model.context_distillation' must be >= 0, not {model.context_distillation}"
        )
    if model.lm:  # the lm task's TransformerLM options
        from suite.heads.lm import TransformerLM

        try:
            registry.check_call(TransformerLM, model.lm, "model.lm")
        except registry.RegistryError as e:
            raise ConfigError(str(e)) from None
    for key, kind, spec in specs:
        if "name" not in spec:
            raise ConfigError(f"'{key}' needs a 'name'; registered: {registry.names(kind)}")
        options = {k: v for k, v in spec.items() if k not in ("name", "preset")}
        try:
            registry.resolve_options(kind, spec["name"], spec.get("preset"), **options)
        except registry.RegistryError as e:
            raise ConfigError(f"'{key}': {e}") from None


# (section, key, test, what the value must be)
_RANGES = (
    ("train", "lr", lambda v: v > 0, "> 0"),
    ("train", "weight_decay", lambda v: v >= 0, ">= 0"),
    ("train", "max_steps", lambda v: v >= 1, ">= 1"),
    ("train", "warmup_steps", lambda v: v >= 0, ">= 0"),
    ("train", "grad_clip", lambda v: v > 0, "> 0"),
    ("train", "accum_grad", lambda v: v >= 1, ">= 1"),
    ("train", "val_every", lambda v: v >= 1, ">= 1"),
    ("train", "log_every", lambda v: v >= 1, ">= 1"),
    ("train", "keep_checkpoints", lambda v: v >= 1, ">= 1"),
    ("train", "max_skipped_steps", lambda v: v >= 1, ">= 1"),
    ("train", "ema_decay", lambda v: v is None or 0 <= v < 1, "in [0, 1), or null for none"),
    ("train", "adam_betas", lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two in [0, 1)"),
    ("data", "max_duration", lambda v: v > 0, "> 0 seconds"),
    ("data", "batch_size", lambda v: v >= 1, ">= 1"),
    ("data", "segment", lambda v: v > 0, "> 0 seconds"),
    ("data", "num_workers", lambda v: v >= 0, ">= 0"),
    ("data", "sample_rate", lambda v: v > 0, "> 0"),
)
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?|mps")


def _check_ranges(recipe: Recipe) -> None:
    for section, key, ok, what in _RANGES:
        value = getattr(getattr(recipe, section), key)
        if not ok(value):
            raise ConfigError(f"'{section}.{key}' must be {what}, got {value!r}")
    if not _DEVICE.fullmatch(recipe.train.device):
        raise ConfigError(
            f"'train.device' must be auto, cpu, cuda or cuda:N, got {recipe.train.device!r}"
        )


def _check_packing(recipe: Recipe) -> None:
    """``data.sampler.pack`` joins utterances into one example: every head must allow that."""
    if not recipe.data.sampler.get("pack"):
        return

    def allows(name: str) -> bool:
        return bool(getattr(registry.lookup("head", name), "allows_packing", False))

    heads = recipe.model.heads.items()
    refusing = [f"{key} ({spec['name']})" for key, spec in heads if not allows(spec["name"])]
    if refusing:
        allowed = [name for name in registry.names("head") if allows(name)]
        raise ConfigError(
            f"'data.sampler.pack' joins short utterances into one example, which the head "
            f"{', '.join(refusing)} does not allow (its loss models one utterance per example); "
            f"heads that allow it: {', '.join(allowed) or '(none)'}. Set data.sampler.pack=false "
            "or train with those heads only"
        )


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into its key path and a YAML-parsed value."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key.sub=value")
    key, value = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{text}' has an empty key part")
    return key.split("."), yaml.safe_load(value) if value != "" else ""


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``a.b=c`` override set (creating mappings as needed)."""
    # A deep copy of plain data, in the recipe's key order: the first head is the one that decodes.
    out = yaml.safe_load(yaml.safe_dump(raw, sort_keys=False))
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                dotted = ".".join(path[: i + 1])
                raise ConfigError(f"override '{text}': '{dotted}' is {child!r}, not a mapping")
            node = child
        node[path[-1]] = value
    return out


def _with_defaults(cls: type, raw: Any) -> Any:
    """``raw`` laid over ``cls``'s defaults, section by section.

    Dataclass sections merge key by key; any other value (a component spec, a list) given in
    ``raw`` replaces the default whole. Overrides then apply to the complete tree, so
    ``model.encoder.preset=small`` keeps the default encoder's name.
    """
    if not isinstance(raw, dict):
        return raw  # validation reports the type error
    hints = typing.get_type_hints(cls)
    out = {f.name: getattr(cls(), f.name) for f in dataclasses.fields(cls)}
    out = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in out.items()}
    for key, value in raw.items():
        tp = hints.get(key)
        out[key] = _with_defaults(tp, value) if dataclasses.is_dataclass(tp) else value
    return out


def recipe_from_dict(raw: dict[str, Any], check_components: bool = True) -> Recipe:
    """Validate a plain mapping into a :class:`Recipe`."""
    recipe = _from_dict(Recipe, raw or {}, "")
    _check_ranges(recipe)
    recipe.data.sources("train")  # a malformed mix fails here, not when training starts
    try:
        registry.lookup("task", recipe.task)
    except registry.RegistryError as e:
        raise ConfigError(f"'task': {e}") from None
    if check_components:
        _check_components(recipe.model)
        _check_packing(recipe)
    return recipe


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"recipe {path} does not exist; recipes live in recipes/<task>/*.yaml")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"recipe {path} is not valid YAML: {e}") from None


def load_recipe(
    path: str | Path, overrides: list[str] | None = None, check_components: bool = True
) -> Recipe:
    """Load a recipe YAML, apply ``key.sub=value`` overrides, and validate the result."""
    path = Path(path)
    raw = _read_yaml(path)
    if isinstance(raw, dict) and "task" not in raw:
        raise ConfigError(
            f"recipe {path} does not say its task; start it with a line such as `task: asr` "
            f"(tasks: {', '.join(registry.names('task'))})"
        )
    try:
        full = _with_defaults(Recipe, raw)
        return recipe_from_dict(apply_overrides(full, overrides or []), check_components)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def save_recipe(recipe: Recipe, path: str | Path) -> None:
    """Write the merged recipe as YAML (atomically) so a run records exactly what it used."""
    from suite.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(recipe.to_dict(), sort_keys=False))
