"""A package from a run's checkpoint: the EMA weights by default, the trained ones on request,
and a teaching error for a run without checkpoints."""

from __future__ import annotations

import pytest
import torch
import yaml
from lhotse import CutSet

from suite.config import ModelConfig
from suite.errors import UserError
from suite.model import build_model, load_package, save_package
from suite.tasks.asr.checkpoint_package import main, package_from_checkpoint
from suite.tokenizers import CharTokenizer
from suite.train.checkpoint import save_checkpoint

MODEL = {
    "encoder": {"name": "conformer", "preset": "tiny"},
    "heads": {"ctc": {"name": "ctc"}},
    "tokenizer": {"name": "char"},
}


def test_the_newest_checkpoint_becomes_a_package_of_its_ema_weights(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(UserError, match="config.yaml"):
        package_from_checkpoint(run, tmp_path / "pkg")
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"task": "asr", "model": MODEL}))
    tokenizer = CharTokenizer()
    tokenizer.save(run / "tokenizer")
    with pytest.raises(UserError, match="no checkpoints"):
        package_from_checkpoint(run, tmp_path / "pkg")
    torch.manual_seed(0)
    model = build_model(ModelConfig(**MODEL), tokenizer)
    optimizer = torch.optim.AdamW(model.parameters())
    live = model.state_dict()
    ema = {f"ema.{k}": v + 1 for k, v in live.items() if v.is_floating_point()}
    for step in (2, 4):
        save_checkpoint(run / "checkpoints", step, live, optimizer.state_dict(), {}, ema)

    assert main([str(run), str(tmp_path / "pkg")]) == 0
    packaged = load_package(tmp_path / "pkg").state_dict()
    for key, value in ema.items():
        assert torch.equal(packaged[key.removeprefix("ema.")], value), key
    assert "step-00000004" in (tmp_path / "pkg/README.md").read_text()

    package_from_checkpoint(run, tmp_path / "live", "step-00000002", live=True)
    packaged = load_package(tmp_path / "live").state_dict()
    assert all(torch.equal(packaged[k], v) for k, v in live.items())


@pytest.mark.parametrize(
    ("include", "theirs"),
    [(None, True), (["frontend", "encoder"], False), (["encoder", "heads.ctc"], True)],
)
def test_a_run_on_a_pretrained_encoder_takes_the_vocabulary_of_the_head_it_trains(
    tmp_path, include, theirs
):
    from suite.config import recipe_from_dict
    from suite.tasks.asr import AsrTask
    from suite.text import ALPHABET

    pretrained = CharTokenizer(ALPHABET[::-1])
    model = build_model(ModelConfig(**MODEL), pretrained)
    save_package(model, tmp_path / "pkg", card="# pkg\n")
    train = {"init_from": str(tmp_path / "pkg"), "init_include": include}
    recipe = recipe_from_dict({"task": "asr", "model": MODEL, "train": train})
    tokenizer = AsrTask().tokenizer(recipe, CutSet.from_cuts([]), tmp_path / "run" / "tokenizer")
    expected = pretrained if theirs else CharTokenizer()
    assert tokenizer.encode("a b") == expected.encode("a b")
