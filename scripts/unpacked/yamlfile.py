"""Reading the user's YAML files (the config, the recipe) with bounds.

YAML aliases let a few hundred bytes stand for billions of values (a "billion laughs"). PyYAML
builds them as shared objects, but whatever walks the result (Snakemake's yte, jsonschema, repr()
in an error message) expands them: 135 s and 4.7 GB before a MemoryError. So a document is first
composed into its node graph, where an alias is the very node it refers to (cheap), its expanded size
is counted once per node, and only a document within the limits is constructed.

Every error names the file and says what is wrong, as `<what> <path>: <problem>`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .bounded import bounded_text
from .errors import UnpackedError

# A real recipe has a few hundred entries and the config a few dozen values: these limits are far
# above both, and far below what would take seconds or gigabytes to walk. Counted with every alias
# expanded; mapping keys count as values.
MAX_VALUES = 100_000
MAX_CHARACTERS = 10_000_000  # of all scalars together, expanded likewise
# PyYAML's scanner does work in proportion to the nesting depth for every token, so 10 kB of `[`
# took seconds and 100 kB would take hours; the config and a recipe nest 4 levels at most.
MAX_DEPTH = 100


@dataclass(frozen=True)
class _Size:
    values: int
    characters: int

    def __add__(self, other: _Size) -> _Size:
        # Capped just above the limits, so that counting a bomb never builds huge integers.
        return _Size(
            min(self.values + other.values, MAX_VALUES + 1), min(self.characters + other.characters, MAX_CHARACTERS + 1)
        )


class _RecursiveAlias(Exception):
    """An alias used inside the node it refers to: the document would be infinite."""


class _TooDeep(yaml.MarkedYAMLError):
    """Collections nested deeper than MAX_DEPTH, found while scanning."""


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing collections nested deeper than MAX_DEPTH as soon as it sees them."""

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:
        if self.flow_level >= MAX_DEPTH:
            raise _TooDeep(problem=f"nested more than {MAX_DEPTH} levels deep", problem_mark=self.get_mark())
        super().fetch_flow_collection_start(TokenClass)

    def add_indent(self, column: int) -> bool:
        if len(self.indents) >= MAX_DEPTH and self.indent < column:
            raise _TooDeep(problem=f"nested more than {MAX_DEPTH} levels deep", problem_mark=self.get_mark())
        return bool(super().add_indent(column))


def read_text(path: Path, what: str, error: type[UnpackedError]) -> str:
    """The file's text; raise `error` naming the file if it cannot be read or is not UTF-8."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        msg = f"{what} {path}: cannot read it: {err.strerror or err}"
        raise error(msg) from err
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        msg = (
            f"{what} {path}: not UTF-8 text: byte 0x{data[err.start]:02x} at offset {err.start} (line {line}); "
            "save the file as UTF-8"
        )
        raise error(msg) from err


def _expanded_size(root: yaml.Node) -> _Size:
    """Values and scalar characters of the document with every alias expanded, counted once per node."""
    sizes: dict[int, _Size] = {}
    in_progress: set[int] = set()

    def size_of(node: yaml.Node) -> _Size:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in in_progress:
            raise _RecursiveAlias
        in_progress.add(key)
        size = _Size(1, len(node.value) if isinstance(node, yaml.ScalarNode) else 0)
        if isinstance(node, yaml.SequenceNode):
            for item in node.value:
                size += size_of(item)
        elif isinstance(node, yaml.MappingNode):
            for item_key, item_value in node.value:
                size += size_of(item_key) + size_of(item_value)
        in_progress.discard(key)
        sizes[key] = size
        return size

    return size_of(root)


def _check_size(node: yaml.Node, path: Path | str, what: str, error: type[UnpackedError]) -> None:
    try:
        size = _expanded_size(node)
    except _RecursiveAlias:
        msg = f"{what} {path}: an alias is used inside the anchor it refers to (an endless document); refused"
        raise error(msg) from None
    if size.values > MAX_VALUES:
        amount = f"more than {MAX_VALUES:,} values"
    elif size.characters > MAX_CHARACTERS:
        amount = f"more than {MAX_CHARACTERS:,} characters of text"
    else:
        return
    msg = (
        f"{what} {path}: {amount} once its YAML aliases are expanded (an alias bomb?); refused. "
        f"A {what} needs far less: write it without nested aliases"
    )
    raise error(msg)


def _describe(err: yaml.YAMLError) -> str:
    """One line: where (line, column) and what; YAML quotes the user's text, so it is bounded."""
    if isinstance(err, yaml.reader.ReaderError):
        text = f"character {err.position}: unacceptable character #x{err.character:04x}: {err.reason}"
    elif isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        mark = err.problem_mark
        problem = "; ".join(part for part in (err.context, err.problem) if part)
        text = f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    else:
        text = " ".join(str(err).split())
    return bounded_text(text, 300)


def load_yaml_text(text: str, path: Path | str, what: str, error: type[UnpackedError]) -> Any:
    """Parse one YAML document read from `path`, refusing it if it expands beyond the limits."""
    try:
        return _bounded_load(text, path, what, error)
    except _TooDeep as err:
        assert err.problem_mark is not None
        msg = f"{what} {path}: line {err.problem_mark.line + 1}: {err.problem}; refused"
        raise error(msg) from None
    except yaml.YAMLError as err:
        msg = f"{what} {path}: not valid YAML: {_describe(err)}"
        raise error(msg) from err
    except ValueError as err:  # a value YAML parses but Python cannot build, e.g. a 5,000-digit integer
        msg = f"{what} {path}: a value cannot be read: {bounded_text(str(err), 200)}"
        raise error(msg) from err
    except RecursionError:
        msg = f"{what} {path}: nested too deeply to read; refused"
        raise error(msg) from None


def _bounded_load(text: str, path: Path | str, what: str, error: type[UnpackedError]) -> Any:
    if len(text) > MAX_CHARACTERS:  # refused before it is parsed at all
        msg = f"{what} {path}: longer than {MAX_CHARACTERS:,} characters; refused. A real {what} is far smaller"
        raise error(msg)
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_size(node, path, what, error)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def load_yaml_file(path: Path, what: str, error: type[UnpackedError]) -> Any:
    """Read, decode and parse a user's YAML file; every failure is an `error` naming `path`."""
    return load_yaml_text(read_text(path, what, error), path, what, error)
