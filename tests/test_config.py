"""Configuration: schema validation, defaults, per-registry settings."""

from __future__ import annotations

import pytest

from unpacked.config import registry_settings, validate_config
from unpacked.errors import ConfigError


def test_defaults_filled() -> None:
    config = validate_config({})
    assert config == {
        "recipe": "config/recipe.yaml",
        "output_root": "output",
        "work_dir": "work",
        "platforms": ["linux/amd64"],
        "offline": False,
        "resolve_workers": 8,
        "publisher": {"type": "directory"},
        "limits": {"manifest_bytes": 4 << 20, "config_bytes": 8 << 20, "tags_per_entry": 1000},
        "registries": {},
    }


def test_given_values_kept_and_registry_defaults_filled() -> None:
    config = validate_config(
        {
            "platforms": ["linux/arm64/v8", "linux/amd64"],
            "registries": {"127.0.0.1:5000": {"insecure": True}, "quay.io": {"username_env": "U", "password_env": "P"}},
            "publisher": {"type": "hook", "begin": "b", "commit": "c", "abort": "a"},
        }
    )
    assert config["platforms"] == ["linux/arm64/v8", "linux/amd64"]
    assert {"insecure": True, "timeout": 60, "retries": 5}.items() <= config["registries"]["127.0.0.1:5000"].items()
    assert {"deadline": 120, "min_rate": 65536}.items() <= config["registries"]["127.0.0.1:5000"].items()
    assert config["registries"]["quay.io"]["username_env"] == "U"
    assert config["registries"]["quay.io"]["insecure"] is False
    assert config["publisher"]["type"] == "hook"


def test_defaults_are_not_shared_between_configs() -> None:
    first = validate_config({})
    first["platforms"].append("linux/arm64")
    assert validate_config({})["platforms"] == ["linux/amd64"]


def test_registry_settings_for_unnamed_registry() -> None:
    config = validate_config({"registries": {"a.example": {"timeout": 5}}})
    assert registry_settings(config, "a.example")["timeout"] == 5
    # A registry the config does not name gets exactly the schema's defaults.
    assert registry_settings(config, "b.example") == validate_config({"registries": {"b": {}}})["registries"]["b"]
    assert {"insecure": False, "timeout": 60, "retries": 5}.items() <= registry_settings(config, "b.example").items()


@pytest.mark.parametrize(
    ("config", "fragments"),
    [
        ({"recipie": "x.yaml"}, ["(top level)", "'recipie'"]),
        ({"registries": {"quay.io": {"insecur": True}}}, ["registries/quay.io", "'insecur'"]),
        ({"publisher": {"type": "directory", "comit": "x"}}, ["publisher", "'comit'"]),
        ({"platforms": ["amd64"]}, ["platforms/0", "'amd64'"]),
        ({"platforms": ["linux/amd64", "Linux/AMD64"]}, ["platforms/1", "'Linux/AMD64'"]),
        ({"platforms": ["linux/amd64/v8/x"]}, ["platforms/0"]),
        ({"platforms": []}, ["platforms"]),
        ({"resolve_workers": 0}, ["resolve_workers"]),
        ({"offline": "yes"}, ["offline", "'yes'"]),
        ({"publisher": {"type": "cvmfs"}}, ["publisher/type", "'cvmfs'"]),
        ({"registries": {"quay.io": {"retries": "many"}}}, ["registries/quay.io/retries"]),
        ({"registries": {"quay.io": {"deadline": 0}}}, ["registries/quay.io/deadline"]),
        ({"registries": {"quay.io": {"min_rate": -1}}}, ["registries/quay.io/min_rate"]),
        ({"limits": {"manifest_bytes": "4M"}}, ["limits/manifest_bytes"]),
        ({"limits": {"tags_per_entry": 0}}, ["limits/tags_per_entry"]),
        ({"limits": {"tag_count": 5}}, ["limits", "'tag_count'"]),
    ],
)
def test_invalid_config(config: dict, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    message = str(info.value)
    assert message.startswith("config: ")
    for fragment in fragments:
        assert fragment in message, message
