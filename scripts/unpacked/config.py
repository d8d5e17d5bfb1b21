"""Workflow configuration: JSON-schema validation with defaults filled in."""

from __future__ import annotations

import copy
from importlib import resources
from typing import Any

import jsonschema
import yaml

from .bounded import bounded_repr, bounded_text
from .errors import ConfigError

# How much of a key in an error's path, and of a whole validation problem, an error shows.
SHOWN_KEY_LIMIT = 60
SHOWN_PROBLEM_LIMIT = 300


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


def registry_settings(config: dict[str, Any], registry: str) -> dict[str, Any]:
    """Settings of one registry, with defaults for registries the config does not name."""
    # The schema's defaults, overridden by what the config says of this registry.
    settings = validate_config({"registries": {registry: {}}})["registries"][registry]
    settings.update(config.get("registries", {}).get(registry, {}))
    return settings
