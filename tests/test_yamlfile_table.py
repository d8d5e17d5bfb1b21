"""yamlfile.py by table: documents read, and the limits (values, characters, depth) at their edges.

The value and character limits are lowered for the edge cases (the real ones take 100,000 values to
reach; tests/test_bad_input.py checks those)."""

from __future__ import annotations

from pathlib import Path

import pytest

from unpacked import yamlfile
from unpacked.errors import RecipeError
from unpacked.yamlfile import MAX_DEPTH, load_yaml_text, read_text

# (document, what it reads as)
DOCUMENTS: list[tuple[str, object]] = [
    ("", None),
    ("# only a comment\n", None),
    ("a: 1\n", {"a": 1}),
    ("- x\n- y\n", ["x", "y"]),
    ("a: &x [1]\nb: *x\n", {"a": [1], "b": [1]}),
    ("\ufeffa: 1\n", {"a": 1}),  # a byte-order mark
]


def nested_list(depth: int) -> object:
    value: object = []
    for _ in range(depth - 1):
        value = [value]
    return value


def nested_map(depth: int) -> object:
    value: object = None
    for _ in range(depth):
        value = {"k": value}
    return value


DOCUMENTS += [
    ("[" * MAX_DEPTH + "]" * MAX_DEPTH, nested_list(MAX_DEPTH)),  # as deep as allowed, flow style
    ("".join(f"{' ' * level}k:\n" for level in range(MAX_DEPTH)), nested_map(MAX_DEPTH)),  # block style
]


@pytest.mark.parametrize(("text", "expected"), DOCUMENTS)
def test_load_yaml_text(text: str, expected: object) -> None:
    assert load_yaml_text(text, "r.yaml", "recipe", RecipeError) == expected


# (document, what the refusal says after `recipe r.yaml: `)
REFUSED = [
    ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), f"line 1: nested more than {MAX_DEPTH} levels deep; refused"),
    (
        "".join(f"{' ' * level}k:\n" for level in range(MAX_DEPTH + 1)),
        f"line {MAX_DEPTH + 1}: nested more than {MAX_DEPTH} levels deep; refused",
    ),
    ("a: &a [1, *a]\n", "an alias is used inside the anchor it refers to (an endless document); refused"),
    # JSON that YAML refuses (config.check_config_file reads a config as JSON first for this reason)
    (
        '{\t"json": true}',
        "not valid YAML: line 1, column 2: while scanning for the next token; found character '\\t' that "
        "cannot start any token",
    ),
]


@pytest.mark.parametrize(("text", "message"), REFUSED)
def test_load_yaml_text_refuses(text: str, message: str) -> None:
    with pytest.raises(RecipeError) as info:
        load_yaml_text(text, "r.yaml", "recipe", RecipeError)
    assert str(info.value) == f"recipe r.yaml: {message}"


# Every node counts once per time it is reached with aliases expanded (mapping keys too).
# (document, values counted, within a limit of 10?)
VALUES = [
    ("[1, 2, 3, 4, 5, 6, 7, 8, 9]", 10, True),
    ("[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]", 11, False),
    ("a: &x [1, 2]\nb: *x\n", 9, True),  # 1 mapping + 2 keys + 2 x (1 list + 2 items)
    ("a: &x [1, 2]\nb: *x\nc: *x\n", 13, False),
]


@pytest.mark.parametrize(("text", "count", "within"), VALUES)
def test_value_limit_edges(monkeypatch: pytest.MonkeyPatch, text: str, count: int, within: bool) -> None:
    monkeypatch.setattr(yamlfile, "MAX_VALUES", 10)
    try:
        load_yaml_text(text, "r.yaml", "recipe", RecipeError)
        refused = False
    except RecipeError as err:
        refused = "more than 10 values once its YAML aliases are expanded" in str(err)
    assert refused is not within, count


# (document, scalar characters with aliases expanded, within a limit of 19?)
CHARACTERS = [
    ("[&s abcdefghi, *s]", 18, True),
    ("[&s abcdefghij, *s]", 20, False),  # 19 characters of text, 20 once expanded
    ("abcdefghijklmnopqrs", 19, True),
]


@pytest.mark.parametrize(("text", "count", "within"), CHARACTERS)
def test_character_limit_edges(monkeypatch: pytest.MonkeyPatch, text: str, count: int, within: bool) -> None:
    monkeypatch.setattr(yamlfile, "MAX_CHARACTERS", 19)
    try:
        load_yaml_text(text, "r.yaml", "recipe", RecipeError)
        refused = False
    except RecipeError as err:
        refused = "more than 19 characters of text once its YAML aliases are expanded" in str(err)
    assert refused is not within, count


@pytest.mark.parametrize(("length", "refused"), [(19, False), (20, True)])
def test_text_longer_than_the_character_limit_is_refused_unparsed(
    monkeypatch: pytest.MonkeyPatch, length: int, refused: bool
) -> None:
    monkeypatch.setattr(yamlfile, "MAX_CHARACTERS", 19)
    text = "[" + "]" * (length - 1)  # not even valid YAML: refused before it is parsed
    with pytest.raises(RecipeError) as info:
        load_yaml_text(text, "r.yaml", "recipe", RecipeError)
    assert ("longer than 19 characters; refused" in str(info.value)) is refused


# (file content, the refusal after `recipe <path>: `, or None if it reads)
BYTES: list[tuple[bytes, str | None]] = [
    (b"a: 1\n", None),
    (b"\xff", "not UTF-8 text: byte 0xff at offset 0 (line 1); save the file as UTF-8"),
    (b"ok\n\xff", "not UTF-8 text: byte 0xff at offset 3 (line 2); save the file as UTF-8"),
    (b"a\nb\ncaf\xe9\n", "not UTF-8 text: byte 0xe9 at offset 7 (line 3); save the file as UTF-8"),
    (b"\xc3", "not UTF-8 text: byte 0xc3 at offset 0 (line 1); save the file as UTF-8"),  # cut short
]


@pytest.mark.parametrize(("data", "refusal"), BYTES)
def test_read_text(tmp_path: Path, data: bytes, refusal: str | None) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_bytes(data)
    if refusal is None:
        assert read_text(path, "recipe", RecipeError) == data.decode()
    else:
        with pytest.raises(RecipeError) as info:
            read_text(path, "recipe", RecipeError)
        assert str(info.value) == f"recipe {path}: {refusal}"
