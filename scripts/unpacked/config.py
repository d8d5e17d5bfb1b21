"""Workflow configuration: JSON-schema validation with defaults filled in."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .bounded import bounded_repr, bounded_text
from .errors import ConfigError
from .netsettings import RegistrySettings
from .yamlfile import load_yaml_file, load_yaml_text, read_text

if TYPE_CHECKING:
    import jsonschema

# How much of a key in an error's path, and of a whole validation problem, an error shows.
SHOWN_KEY_LIMIT = 60
SHOWN_PROBLEM_LIMIT = 300


SCHEMA_PATH = Path(__file__).with_name("schemas") / "config.schema.yaml"
# libyaml's loader when PyYAML has it: the schema parses in 1 ms instead of 11 ms.
_SCHEMA_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def schema() -> dict[str, Any]:
    """The config schema (shared: callers must not change it)."""
    document: dict[str, Any] = yaml.load(SCHEMA_PATH.read_text(), Loader=_SCHEMA_LOADER)
    return document


def _extend_with_defaults(validator_class: Any) -> type:
    """A validator that fills in `default` values while validating (jsonschema FAQ recipe)."""
    import jsonschema  # here, not at the top: only a process that validates a config pays its 70 ms

    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):  # type: ignore[no-untyped-def]
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema:
                    instance.setdefault(name, copy.deepcopy(subschema["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    extended: type = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
        validator_class, {"properties": set_defaults}
    )
    return extended


@functools.cache
def _validator() -> Any:
    """The schema's validator, built once per process (the main process, `unpacked serve-hook`)."""
    import jsonschema  # see _extend_with_defaults

    return _extend_with_defaults(jsonschema.Draft202012Validator)(schema())


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Validate `config` in place, filling defaults; raise ConfigError naming the bad key."""
    errors = sorted(_validator().iter_errors(config), key=lambda e: list(e.path))
    if errors:
        err = errors[0]
        where = "/".join(bounded_text(str(p), SHOWN_KEY_LIMIT) for p in err.path) or "(top level)"
        raise ConfigError(f"config: {where}: {_problem(err)}")
    return config


def _problem(err: jsonschema.ValidationError) -> str:
    """jsonschema's message with the offending value shown bounded.

    Its messages embed `repr(instance)` whole, which for a huge value is a huge line.
    """
    message = err.message
    if len(message) > SHOWN_PROBLEM_LIMIT:
        message = message.replace(repr(err.instance), bounded_repr(err.instance))
    return bounded_text(message, SHOWN_PROBLEM_LIMIT)


def check_config_file(path: str | Path) -> None:
    """Refuse a config file that Snakemake's own loader would choke on, before it reads it.

    Called by the Snakefile right before its `configfile:` directive. Snakemake reads the file as
    UTF-8, as JSON or else as YAML, and walks the whole document: an alias bomb would run for minutes
    and take gigabytes before any of our code runs. A missing file is left to Snakemake, which
    accepts that when `--configfile` is given. (Files given with `--configfile` are read before the
    Snakefile runs, so they are not checked here.)
    """
    path = Path(path)
    if not path.exists():
        return
    text = read_text(path, "config file", ConfigError)
    try:
        json.loads(text)
        return  # Snakemake takes it as JSON: no aliases, nothing expands
    except ValueError:
        pass
    _as_settings(load_yaml_text(text, path, "config file", ConfigError), path)


def load_config_file(path: Path) -> dict[str, Any]:
    """A config file read as `check_config_file` reads it (for the command line; Snakemake reads its own)."""
    return _as_settings(load_yaml_file(path, "config file", ConfigError), path)


def _as_settings(document: object, path: Path) -> dict[str, Any]:
    if document is None:
        return {}
    if not isinstance(document, dict):
        msg = f"config file {path}: expected a mapping of settings, found a {type(document).__name__}"
        raise ConfigError(msg)
    return document


def defaults_of(node: dict[str, Any]) -> dict[str, Any]:
    """What validating an empty object against the schema `node` fills in: each property's
    `default`, and within an object default, its own properties' defaults (as _Validator does).

    A job reads settings that were validated, with defaults, by the main process; only a registry
    the config does not name has no section there. Its defaults come from here, without loading
    jsonschema (tests/test_config_table.py checks both give the same).
    """
    filled: dict[str, Any] = {}
    for name, subschema in node.get("properties", {}).items():
        if "default" in subschema:
            value = copy.deepcopy(subschema["default"])
            if isinstance(value, dict):
                value = {**defaults_of(subschema), **value}
            filled[name] = value
    return filled


def _top_level(key: str) -> dict[str, Any]:
    node: dict[str, Any] = schema()["properties"][key]
    return node


def registry_settings(config: dict[str, Any], registry: str) -> dict[str, Any]:
    """Settings of one registry, with defaults for registries the config does not name."""
    # The schema's defaults, overridden by what the config says of this registry.
    settings = defaults_of(_top_level("registries")["additionalProperties"])
    settings.update(config.get("registries", {}).get(registry, {}))
    return settings


def limit_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The `limits` section, with the schema's defaults for what the config does not say."""
    limits = defaults_of(_top_level("limits"))
    limits.update(config.get("limits", {}))
    return limits


def client_settings(config: dict[str, Any], registry: str) -> RegistrySettings:
    """The typed settings of `registry`'s client: its section and the limits, with the schema's defaults."""
    settings = registry_settings(config, registry)
    limits = limit_settings(config)
    max_connections = settings.get("max_connections")
    return RegistrySettings(
        insecure=bool(settings["insecure"]),
        timeout=float(settings["timeout"]),
        retries=int(settings["retries"]),
        deadline=float(settings["deadline"]),
        min_rate=float(settings["min_rate"]),
        max_connections=None if max_connections is None else int(max_connections),
        manifest_bytes=int(limits["manifest_bytes"]),
        config_bytes=int(limits["config_bytes"]),
        username_env=settings.get("username_env"),
        password_env=settings.get("password_env"),
    )
