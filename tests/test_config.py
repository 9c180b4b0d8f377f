"""params.yaml: every profile validates; typos and wrong types fail naming the key."""

import pytest

from k2core.config import SECTIONS, ConfigError, load_params
from tests.conftest import REPO


@pytest.mark.parametrize("profile", ["tiny", "ci", "small"])
def test_every_profile_validates(profile):
    configs = load_params(REPO / "params.yaml", profile).validate_all()
    assert set(configs) == set(SECTIONS)


def test_profile_comes_from_the_file():
    assert load_params(REPO / "params.yaml").profile == "tiny"


def _edited(tmp_path, old: str, new: str):
    text = (REPO / "params.yaml").read_text()
    assert old in text
    path = tmp_path / "params.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


def test_a_typo_names_the_key(tmp_path):
    path = _edited(tmp_path, "    micro_batch_size: 8\n    gradient_accumulation: 1\n    seq_len: 128",
                   "    micro_batch_sise: 8\n    gradient_accumulation: 1\n    seq_len: 128")
    with pytest.raises(ConfigError) as error:
        load_params(path).section("pretrain")
    message = str(error.value)
    assert "pretrain.tiny.micro_batch_sise: unknown key" in message
    assert "pretrain.tiny.micro_batch_size: required key is missing" in message


def test_a_wrong_type_names_the_key_and_value(tmp_path):
    path = _edited(tmp_path, "    lr: 0.01\n", "    lr: fast\n")
    with pytest.raises(ConfigError, match=r"pretrain\.tiny\.lr: .*'fast'"):
        load_params(path).section("pretrain")


def test_unknown_profile_and_section_are_explained(tmp_path):
    with pytest.raises(ConfigError, match="has no profile 'huge'"):
        load_params(REPO / "params.yaml", "huge").section("rl")
    path = tmp_path / "params.yaml"
    path.write_text("profile: tiny\npretrian: {}\n")
    with pytest.raises(ConfigError, match=r"unknown top-level keys \['pretrian'\]"):
        load_params(path)


def test_section_hash_changes_only_with_its_own_values(tmp_path):
    base = load_params(REPO / "params.yaml")
    edited = load_params(_edited(tmp_path, "    lr: 0.01\n", "    lr: 0.02\n"))
    assert base.section_hash("pretrain") != edited.section_hash("pretrain")
    assert base.section_hash("sft") == edited.section_hash("sft")
