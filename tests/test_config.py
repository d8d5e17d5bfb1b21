"""Configuration: schema validation, defaults, per-registry settings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from unpacked.config import registry_settings, schema, validate_config
from unpacked.errors import ConfigError

from support.defaults import DEFAULT_LIMITS


def test_defaults_filled() -> None:
    config = validate_config({})
    assert config == {
        "recipe": "config/recipe.yaml",
        "output_root": "output",
        "work_dir": "work",
        "platforms": ["linux/amd64"],
        "offline": False,
        "only": "",
        "resolve_workers": 8,
        "publisher": {"type": "directory"},
        "limits": DEFAULT_LIMITS,
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


# -------------------------------------------------------------------------------------------------
# Every setting documented: the schema's description and config/README.md's tables, with defaults
# -------------------------------------------------------------------------------------------------

README = Path(__file__).resolve().parents[1] / "config" / "README.md"
# README.md's section whose table documents each level of the schema.
SECTIONS = {
    "top level": "# Configuration",
    "publisher": "## `publisher`",
    "registries": "## `registries.<host[:port]>`",
    "limits": "## `limits`",
}


def schema_levels() -> dict[str, dict[str, Any]]:
    properties = schema()["properties"]
    return {
        "top level": properties,
        "publisher": properties["publisher"]["properties"],
        "registries": properties["registries"]["additionalProperties"]["properties"],
        "limits": properties["limits"]["properties"],
    }


def readme_tables() -> dict[str, dict[str, str]]:
    """{section heading: {key: default cell}} from README.md's `| key | default | meaning |` tables."""
    tables: dict[str, dict[str, str]] = {}
    heading = ""
    for line in README.read_text().splitlines():
        if line.startswith("#"):
            heading = line.strip()
        elif line.startswith("| `"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            tables.setdefault(heading, {})[cells[0].strip("`")] = cells[1]
    return tables


def as_yaml(value: Any) -> str:
    """A default as README.md writes it: YAML flow style (`[linux/amd64]`, `{type: directory}`, `false`)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(as_yaml(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {as_yaml(item)}" for key, item in value.items()) + "}"
    return str(value)


@pytest.mark.parametrize("level", sorted(SECTIONS))
def test_every_setting_is_documented_with_its_default(level: str) -> None:
    """Each key of the schema has a description and a row in config/README.md with its default; no row
    documents a key the schema does not have."""
    keys = schema_levels()[level]
    table = readme_tables()[SECTIONS[level]]
    assert sorted(table) == sorted(keys), f"README.md {SECTIONS[level]} and the schema list other keys"
    for key, subschema in keys.items():
        assert str(subschema.get("description", "")).strip(), f"{level}: {key} has no description in the schema"
        if "default" in subschema:
            expected = f"`{as_yaml(subschema['default'])}`"
        elif match := re.match(r"Default (\S+?)\.", subschema["description"]):
            expected = f"`{match.group(1)}`"  # a default the code applies, stated by the description
        else:
            expected = "none"
        assert table[key].startswith(expected), f"{level}: {key}: README.md says {table[key]}, expected {expected}"
