"""A model package from a training checkpoint, to evaluate a run before it exports one.

A run folder exports its package (``RUN/model``) only when a dev check improves; between checks,
and while it trains, its checkpoints are the newest weights. This writes a package from one:

    python -m suite.tasks.asr.checkpoint_package RUN_DIR OUT [--checkpoint step-00000800] [--live]

It uses the run's merged recipe (``config.yaml``) and tokenizer, and the checkpoint's EMA weights
where the run keeps an EMA (``--live``: the trained weights), as the run's own export does. It
reads the run folder only (safe beside a run that is still training: checkpoints are written
atomically).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from suite.errors import UserError

EMA_PREFIX = "ema."  # what the trainer prefixes its EMA weights with in optimizer.safetensors


def latest_checkpoint(run_dir: Path) -> Path:
    """The newest checkpoint folder of ``run_dir``, or a teaching error when it has none."""
    folder = run_dir / "checkpoints"
    found = sorted(folder.glob("step-*")) if folder.is_dir() else []
    if not found:
        raise UserError(
            f"{run_dir} has no checkpoints/step-* folder yet; wait for the first checkpoint "
            "(train.save_every) or pass a run that has one"
        )
    return found[-1]


def package_from_checkpoint(
    run_dir: str | Path, out: str | Path, checkpoint: str | None = None, live: bool = False
) -> Path:
    """Write the package of one checkpoint of ``run_dir`` into ``out``.

    Args:
        run_dir: a ``suite train`` run folder (``config.yaml``, ``tokenizer/``, ``checkpoints/``).
        out: the package folder to write.
        checkpoint: a checkpoint folder name under ``checkpoints/`` (default: the newest).
        live: the trained weights even where the checkpoint holds EMA weights.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    from suite import registry
    from suite.config import recipe_from_dict
    from suite.model import save_package
    from suite.tokenizers import load_tokenizer

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir} is not a run folder: it has no config.yaml")
    path = run_dir / "checkpoints" / checkpoint if checkpoint else latest_checkpoint(run_dir)
    if not (path / "model.safetensors").is_file():
        raise UserError(f"{path} is not a checkpoint: it has no model.safetensors")
    recipe = recipe_from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    task = registry.create("task", recipe.task)
    model = task.build_model(recipe.model, load_tokenizer(run_dir / "tokenizer"))
    weights = load_file(str(path / "model.safetensors"))
    ema = {}
    if not live and (path / "optimizer.safetensors").is_file():
        with safe_open(str(path / "optimizer.safetensors"), framework="pt") as f:
            ema = {
                k[len(EMA_PREFIX) :]: f.get_tensor(k) for k in f.keys() if k.startswith(EMA_PREFIX)
            }
    model.load_state_dict({**weights, **ema})
    card = (
        f"# {Path(out).name}\n\nWeights of `{path}` ({'EMA' if ema else 'trained'}), "
        f"exported by `python -m suite.tasks.asr.checkpoint_package`; recipe in "
        f"`{run_dir / 'config.yaml'}`.\n"
    )
    return save_package(model.eval(), out, card=card, task=recipe.task)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m suite.tasks.asr.checkpoint_package", description=__doc__.split("\n")[0]
    )
    parser.add_argument("run_dir", help="a suite train run folder")
    parser.add_argument("out", help="the package folder to write")
    parser.add_argument("--checkpoint", default=None, help="e.g. step-00000800 (default: newest)")
    parser.add_argument("--live", action="store_true", help="trained weights, not the EMA")
    args = parser.parse_args(argv)
    try:
        out = package_from_checkpoint(args.run_dir, args.out, args.checkpoint, args.live)
    except UserError as e:
        print(f"suite: error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
