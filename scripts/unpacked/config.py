"""Workflow configuration: JSON-schema validation with defaults filled in."""

from __future__ import annotations

import copy
from importlib import resources
from typing import Any

import jsonschema
import yaml

from .errors import ConfigError


def schema() -> dict[str, Any]:
    text = resources.files("unpacked").joinpath("schemas/config.schema.yaml").read_text()
    return yaml.safe_load(text)


def _extend_with_defaults(validator_class: type) -> type:
    """A validator that fills in `default` values while validating (jsonschema FAQ recipe)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):  # type: ignore[no-untyped-def]
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema:
                    instance.setdefault(name, copy.deepcopy(subschema["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _extend_with_defaults(jsonschema.Draft202012Validator)


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Validate `config` in place, filling defaults; raise ConfigError naming the bad key."""
    errors = sorted(_Validator(schema()).iter_errors(config), key=lambda e: list(e.path))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.path) or "(top level)"
        raise ConfigError(f"config: {where}: {err.message}")
    return config


def registry_settings(config: dict[str, Any], registry: str) -> dict[str, Any]:
    """Settings of one registry, with defaults for registries the config does not name."""
    # The schema's defaults, overridden by what the config says of this registry.
    settings = validate_config({"registries": {registry: {}}})["registries"][registry]
    settings.update(config.get("registries", {}).get(registry, {}))
    return settings


def limit_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The `limits` section, with the schema's defaults for what the config does not say."""
    limits = validate_config({"limits": {}})["limits"]
    limits.update(config.get("limits", {}))
    return limits
