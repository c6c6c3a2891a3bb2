"""Recipes: YAML into typed dataclasses, dotted overrides, and errors that name the key."""

from pathlib import Path

import pytest
import yaml

from suite import registry
from suite.cli import main
from suite.config import ConfigError, Recipe, apply_overrides, load_recipe, save_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(ROOT.glob("recipes/*/*.yaml"))


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"task": "asr", **data}, sort_keys=False))
    return path


def test_a_recipe_names_its_task(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"train": {"lr": 0.1}}))
    with pytest.raises(ConfigError, match="start it with a line such as `task: asr`.*codec, lm"):
        load_recipe(path)
    with pytest.raises(ConfigError, match="unknown task 'ars'.*Did you mean 'asr'"):
        load_recipe(write(tmp_path, {"task": "ars"}))
    assert load_recipe(write(tmp_path, {"task": "lm"})).task == "lm"


def test_yaml_loads_into_typed_dataclasses(tmp_path):
    path = write(tmp_path, {"train": {"lr": 1, "max_steps": 50}, "data": {"max_duration": 30}})
    recipe = load_recipe(path)
    assert isinstance(recipe, Recipe)
    assert recipe.train.lr == 1.0 and isinstance(recipe.train.lr, float)
    assert recipe.train.max_steps == 50
    assert recipe.data.max_duration == 30.0
    assert recipe.train.warmup_steps == Recipe().train.warmup_steps  # defaults fill the rest


def test_overrides_set_nested_fields_and_parse_values(tmp_path):
    path = write(tmp_path, {"train": {"lr": 0.1}})
    recipe = load_recipe(
        path,
        [
            "train.lr=1e-3",  # YAML 1.1 reads this as a string; float fields accept it
            "train.ema_decay=0.999",
            "data.augment.speed_perturb=[0.9, 1.1]",
            "model.encoder.preset=small",
            "model.heads.ctc.blank_id=0",
        ],
    )
    assert recipe.train.lr == 1e-3
    assert recipe.train.ema_decay == 0.999
    assert recipe.data.augment.speed_perturb == [0.9, 1.1]
    assert recipe.model.encoder == {"name": "conformer", "preset": "small"}
    assert recipe.model.heads["ctc"]["blank_id"] == 0


def test_overrides_do_not_mutate_the_input():
    raw = {"train": {"lr": 0.1}}
    apply_overrides(raw, ["train.lr=0.2"])
    assert raw == {"train": {"lr": 0.1}}


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lrr=1", "unknown key 'train.lrr'; valid keys under 'train': out_dir, seed"),
        ("train.lrr=1", "Did you mean 'lr'?"),
        ("bogus.x=1", "unknown key 'bogus'; valid keys under 'recipe': task, data, model, train"),
        ("train.lr=fast", "'train.lr' expects float, got 'fast'"),
        ("train.max_steps=1.5", "'train.max_steps' expects int, got 1.5"),
        ("train.max_steps=true", "'train.max_steps' expects int, got True"),
        ("train.precision=fp16", "'train.precision' must be one of 'fp32', 'bf16', got 'fp16'"),
        ("data.augment.speed_perturb=0.9", "'data.augment.speed_perturb' expects a list"),
        ("train.lr.x=1", "'train.lr' is 0.001, not a mapping"),
        ("train.lr", "is not of the form key.sub=value"),
        ("model.encoder.name=transformerz", "registered encoders: audio_convnext, conformer"),
        ("model.encoder.preset=huge", "encoder 'conformer' has no preset 'huge'; presets:"),
        ("model.encoder.d_modle=8", "takes no option 'd_modle'; valid options:"),
        ("model.heads.ctc.name=cct", "unknown head 'cct'"),
    ],
)
def test_bad_overrides_name_the_key_and_the_choices(tmp_path, override, message):
    with pytest.raises(ConfigError) as err:
        load_recipe(write(tmp_path, {}), [override])
    assert message in str(err.value)


def test_missing_and_malformed_recipe_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(bad)


def test_saved_recipe_loads_back_identically(tmp_path):
    recipe = load_recipe(write(tmp_path, {}), ["train.lr=0.02", "data.augment.noise_prob=0.5"])
    save_recipe(recipe, tmp_path / "run" / "config.yaml")
    again = load_recipe(tmp_path / "run" / "config.yaml")
    assert again == recipe
    assert not list((tmp_path / "run").glob(".*"))  # no temporary file left behind


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_shipped_recipes_validate(path):
    load_recipe(path)


def test_registry_errors_list_known_names():
    with pytest.raises(registry.RegistryError, match="registered encoders: .*conformer"):
        registry.create_encoder("conformr")
    with pytest.raises(registry.RegistryError, match="Did you mean 'conformer'"):
        registry.create_encoder("conformr")


def test_cli_reports_user_errors_in_one_line(tmp_path, capsys):
    code = main(
        [
            "data",
            "synth-speech",
            "--out",
            str(tmp_path),
            "--hours",
            "0.01",
            "--text",
            str(tmp_path / "missing.txt"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("suite: error:") and "missing.txt" in err
    assert "Traceback" not in err


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    import os

    from suite.io import atomic_write_text

    atomic_write_text(tmp_path / "a.txt", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~mask


def test_tasks_of_one_source_refuse_a_weighted_mix():
    recipe = load_recipe(
        ROOT / "recipes/lm/open_text_lm.yaml",
        ["data.train=[{manifest: a.txt, weight: 1}, {manifest: b.txt, weight: 2}]"],
    )
    with pytest.raises(ConfigError, match="the lm task reads one manifest, but 'data.train' lists"):
        registry.create("task", "lm").load_split(recipe, "train")
