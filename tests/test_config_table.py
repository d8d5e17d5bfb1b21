"""config.py by table: defaults filled, refusals naming the setting, per-registry and limit settings; and
workflow.parse_offline, how `--config offline=...` is read."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from unpacked.config import defaults_of, limit_settings, registry_settings, schema, validate_config
from unpacked.errors import ConfigError
from unpacked.workflow import parse_offline

from support.defaults import DEFAULT_LIMITS

# (config, where a setting is once validated, its value)
FILLED: list[tuple[dict[str, Any], tuple[str, ...], object]] = [
    ({}, ("recipe",), "config/recipe.yaml"),
    ({}, ("output_root",), "output"),
    ({}, ("work_dir",), "work"),
    ({}, ("platforms",), ["linux/amd64"]),
    ({}, ("offline",), False),
    ({}, ("resolve_workers",), 8),
    ({}, ("publisher",), {"type": "directory"}),
    ({}, ("limits",), DEFAULT_LIMITS),
    ({}, ("registries",), {}),
    (
        {"registries": {"q.io": {}}},
        ("registries", "q.io"),
        {"insecure": False, "timeout": 60, "retries": 5, "deadline": 120, "min_rate": 65536, "mirrors": []},
    ),
    ({"registries": {"q.io": {"retries": 0}}}, ("registries", "q.io", "retries"), 0),
    ({"registries": {"q.io": {"timeout": 0.5}}}, ("registries", "q.io", "timeout"), 0.5),
    (
        {"registries": {"q.io": {"mirrors": ["http://m.local:5000", "m2.io"]}}},
        ("registries", "q.io", "mirrors"),
        ["http://m.local:5000", "m2.io"],
    ),
    ({"limits": {"manifest_bytes": 1024}}, ("limits", "manifest_bytes"), 1024),  # the minimum is allowed
    ({"limits": {"tags_per_entry": 1}}, ("limits", "config_bytes"), 8 << 20),  # the others filled in
    ({"platforms": ["linux/arm64/v8", "linux/amd64"]}, ("platforms",), ["linux/arm64/v8", "linux/amd64"]),
    ({"publisher": {"type": "hook", "begin": "b", "commit": "c", "abort": "a"}}, ("publisher", "commit"), "c"),
    ({"offline": True}, ("offline",), True),
]


@pytest.mark.parametrize(("config", "path", "value"), FILLED)
def test_validate_config_fills_and_keeps(config: dict[str, Any], path: tuple[str, ...], value: object) -> None:
    found: Any = validate_config(config)
    for key in path:
        found = found[key]
    assert found == value


# (config with one bad setting, how the refusal starts: the setting's path)
REFUSED: list[tuple[object, str]] = [
    ([], "config: (top level): "),
    ({"registries": []}, "config: registries: "),
    ({"registries": {"q.io": {"timeout": 0}}}, "config: registries/q.io/timeout: "),
    ({"registries": {"q.io": {"max_connections": 0}}}, "config: registries/q.io/max_connections: "),
    ({"registries": {"q.io": {"retries": -1}}}, "config: registries/q.io/retries: "),
    ({"registries": {"q.io": {"retries": 1.5}}}, "config: registries/q.io/retries: "),
    ({"registries": {"q.io": {"mirrors": ["ftp://m.io"]}}}, "config: registries/q.io/mirrors/0: "),
    ({"registries": {"q.io": {"mirrors": ["m.io/path"]}}}, "config: registries/q.io/mirrors/0: "),
    ({"registries": {"q.io": {"mirrors": "m.io"}}}, "config: registries/q.io/mirrors: "),
    ({"registries": {"q.io": {"username_env": 5}}}, "config: registries/q.io/username_env: "),
    ({"registries": {"q.io": {"insecure": "yes"}}}, "config: registries/q.io/insecure: "),
    ({"publisher": {"type": "hook", "begin": "b"}}, "config: publisher: "),  # commit and abort missing
    ({"publisher": "directory"}, "config: publisher: "),
    ({"limits": {"manifest_bytes": 1023}}, "config: limits/manifest_bytes: "),
    ({"limits": {"config_bytes": 2048.5}}, "config: limits/config_bytes: "),
    ({"recipe": 5}, "config: recipe: "),
    ({"output_root": None}, "config: output_root: "),
    ({"platforms": "linux/amd64"}, "config: platforms: "),
    ({"platforms": ["linux/"]}, "config: platforms/0: "),
    ({"platforms": ["linux/amd64\n"]}, "config: platforms/0: "),  # \Z, not $: no trailing newline
    ({"registries": {"q.io": {"mirrors": ["m.io\n"]}}}, "config: registries/q.io/mirrors/0: "),
    ({"resolve_workers": 1.5}, "config: resolve_workers: "),
    ({"offline": "true"}, "config: offline: "),  # words are parse_offline's job, before validation
]


@pytest.mark.parametrize(("config", "start"), REFUSED)
def test_validate_config_refuses(config: dict[str, Any], start: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    assert str(info.value).startswith(start)


# (config, registry asked about, setting, value)
REGISTRY: list[tuple[dict[str, Any], str, str, object]] = [
    ({}, "q.io", "retries", 5),
    ({}, "q.io", "mirrors", []),
    ({"registries": {"q.io": {"retries": 0}}}, "q.io", "retries", 0),
    ({"registries": {"q.io": {"retries": 0}}}, "q.io", "timeout", 60),  # the rest from the schema
    ({"registries": {"other.io": {"retries": 0}}}, "q.io", "retries", 5),  # never another registry's
    ({"registries": {"q.io": {"username_env": "U"}}}, "q.io", "username_env", "U"),
]


@pytest.mark.parametrize(("config", "registry", "key", "value"), REGISTRY)
def test_registry_settings(config: dict[str, Any], registry: str, key: str, value: object) -> None:
    assert registry_settings(config, registry)[key] == value


@pytest.mark.parametrize(
    ("config", "key", "value"),
    [
        ({}, "tags_per_entry", 1000),
        ({}, "images_per_job", 16),
        ({"limits": {"images_per_job": 1}}, "images_per_job", 1),
        ({}, "small_image_bytes", 16 << 20),
        ({"limits": {}}, "manifest_bytes", 4 << 20),
        ({"limits": {"tags_per_entry": 5}}, "tags_per_entry", 5),
        ({"limits": {"tags_per_entry": 5}}, "config_bytes", 8 << 20),
    ],
)
def test_limit_settings(config: dict[str, Any], key: str, value: int) -> None:
    assert limit_settings(config)[key] == value


def test_schema_walk_fills_what_the_validator_fills() -> None:
    """registry_settings and limit_settings fill defaults without jsonschema: the same as validating."""
    validated = validate_config({"registries": {"q.io": {}}})
    assert registry_settings({}, "q.io") == validated["registries"]["q.io"]
    assert limit_settings({}) == validated["limits"]
    assert limit_settings({}) == DEFAULT_LIMITS
    # The whole config, nested defaults included (publisher, limits, registries).
    assert defaults_of(schema()) == validate_config({})


def test_defaults_are_copies() -> None:
    registry_settings({}, "q.io")["mirrors"].append("m.io")
    assert registry_settings({}, "q.io")["mirrors"] == []


def test_a_job_never_loads_jsonschema() -> None:
    """What a fetch, extract or publish job imports builds registry clients from the saved settings:
    the config's validator (70 ms of imports per job) is for the main process only."""
    code = (
        "import sys, unpacked.cli, unpacked.jobs, unpacked.source, unpacked.sync, unpacked.flat_job\n"
        "from unpacked.auth import RealmCache\n"
        "from unpacked.mirrors import make_client\n"
        "from unpacked.reference import parse_reference\n"
        "make_client(parse_reference('q.io/a/b:1'), {'registries': {'q.io': {'mirrors': ['m.io']}}}, RealmCache())\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'jsonschema'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_registry_settings_leave_the_config_alone() -> None:
    config: dict[str, Any] = {"registries": {"q.io": {"retries": 0}}}
    registry_settings(config, "q.io")
    assert config == {"registries": {"q.io": {"retries": 0}}}


# (what `offline` arrived as, what the schema then sees)
OFFLINE: list[tuple[object, object]] = [
    (True, True),
    (False, False),
    (1, True),  # `--config offline=1` arrives as an integer
    (0, False),
    ("true", True),
    ("TRUE", True),
    (" yes ", True),
    ("on", True),
    ("1", True),
    ("false", False),
    ("No", False),
    ("off", False),
    ("0", False),
    (2, 2),  # not a boolean word: the schema refuses it
    (1.0, 1.0),
    (None, None),
]


@pytest.mark.parametrize(("value", "expected"), OFFLINE)
def test_parse_offline(value: object, expected: object) -> None:
    assert parse_offline(value) == expected and type(parse_offline(value)) is type(expected)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("maybe", "config: offline: expected true or false, got 'maybe'"),
        ("", "config: offline: expected true or false, got ''"),
        ("truee", "config: offline: expected true or false, got 'truee'"),
        ("y" * 100, f"config: offline: expected true or false, got '{'y' * 40}'"),  # cut at 40 characters
    ],
)
def test_parse_offline_refuses(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_offline(value)
    assert str(info.value) == message
