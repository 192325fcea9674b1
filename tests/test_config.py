from pathlib import Path

import pytest

from edgetl.config import ConfigError, build_config_from_dict, load_build_config


def test_unknown_keys_are_rejected_with_their_location():
    with pytest.raises(ConfigError, match=r"train\.epoch"):
        build_config_from_dict({"data": {"root": "x"}, "train": {"epoch": 3}})


def test_exactly_one_data_source():
    with pytest.raises(ConfigError, match="exactly one"):
        build_config_from_dict({"data": {}})
    with pytest.raises(ConfigError, match="exactly one"):
        build_config_from_dict({"data": {"root": "a", "manifest": "b.csv"}})


def test_fractions_must_leave_training_data():
    with pytest.raises(ConfigError, match="10 %"):
        build_config_from_dict({"data": {"root": "a", "test_fraction": 0.5, "val_fraction": 0.45}})


def test_yaml_relative_paths_resolve_against_the_file(tmp_path: Path):
    (tmp_path / "cfg").mkdir()
    path = tmp_path / "cfg" / "run.yaml"
    path.write_text("data:\n  manifest: ../data/m.csv\ntrain:\n  epochs: 3\n")
    config = load_build_config(path)
    assert config.data.manifest == (tmp_path / "data" / "m.csv").resolve()
    assert config.train.epochs == 3


@pytest.mark.parametrize("text", ["- a\n- b\n", "data: [unclosed\n"])
def test_bad_yaml_names_the_file(tmp_path: Path, text: str):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_build_config(path)


def test_missing_config_file_says_so(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_build_config(tmp_path / "nope.yaml")


def test_example_config_is_valid():
    config = load_build_config(Path(__file__).parents[1] / "examples" / "elpv.yaml")
    # The demo keeps edgetl's defaults: the gray mode and the recipe are chosen from the data.
    assert config.model.gray == "auto" and config.train.strategy == "auto"
    assert config.data.manifest is not None and config.train.budget_minutes == 6


def test_int8_views_need_the_onnxruntime_cache():
    with pytest.raises(ConfigError, match="int8_views needs cache_backend: onnxruntime"):
        build_config_from_dict({"data": {"root": "x"}, "train": {"int8_views": 2, "cache_backend": "torch"}})
