"""Bad input refused fast and clearly (issue 7): YAML alias bombs, files that are not UTF-8, huge values
in error messages, recipe entries without a registry host.

Each refusal names the file (and entry), says what is wrong and what to write instead, takes well
under a second and little memory, and, in the workflow, happens before anything is written.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from unpacked.bounded import bounded_repr, bounded_text
from unpacked.config import check_config_file, load_config_file, validate_config
from unpacked.errors import ConfigError, RecipeError, UnpackedError
from unpacked.recipe import load_recipe, parse_recipe
from unpacked.workflow import prepare
from unpacked.yamlfile import MAX_CHARACTERS, MAX_VALUES, load_yaml_file

from support.registry import LocalRegistry
from support.workflow import REPO, snakemake_command, workflow_env, write_config

CERN_RECIPE = Path(__file__).parent / "data" / "recipe-images-unpacked.cern.ch.yaml"
HUGE = 1_000_000  # characters or items: far beyond anything an error may show
SHORT_MESSAGE = 500  # characters an error about a huge value may take, at most


def billion_laughs(levels: int = 9, width: int = 9) -> str:
    """The classic alias bomb: `width ** levels` strings from a few hundred bytes."""
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    lines += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * width)}]" for n in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def recipe_bomb() -> str:
    """A wishlist whose first entry is `9 ** 9` strings: an error that repr()s it runs out of memory."""
    anchors = [f"&a0 [{', '.join(['lol'] * 9)}]"]
    anchors += [f"&a{n} [{', '.join([f'*a{n - 1}'] * 9)}]" for n in range(1, 10)]
    return f"user: [{', '.join(anchors)}]\ninput: [*a9]\n"


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


@dataclass
class Cost:
    seconds: float
    peak_bytes: int


def refusal(call: Callable[[], object], error: type[UnpackedError], memory: bool = False) -> tuple[str, Cost]:
    """The message of the `error` that `call` raises, and its time (and, if asked, peak memory: tracing
    allocations slows Python down several times, so only where memory is the point)."""
    if memory:
        tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(error) as info:
            call()
    finally:
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1] if memory else 0
        tracemalloc.stop()
    return str(info.value), Cost(seconds, peak)


# -------------------------------------------------------------------------------------------------
# Alias bombs and other YAML that would take long or much memory
# -------------------------------------------------------------------------------------------------


def test_alias_bomb_recipe_is_refused_fast(tmp_path: Path) -> None:
    path = write(tmp_path / "recipe.yaml", recipe_bomb())
    message, cost = refusal(lambda: load_recipe(path), RecipeError, memory=True)
    assert message == (
        f"recipe {path}: more than {MAX_VALUES:,} values once its YAML aliases are expanded (an alias bomb?); "
        "refused. A recipe needs far less: write it without nested aliases"
    )
    assert cost.seconds < 2, cost
    assert cost.peak_bytes < 20 * 2**20, cost


def test_alias_bomb_config_is_refused_fast(tmp_path: Path) -> None:
    path = write(tmp_path / "config.yaml", billion_laughs())
    message, cost = refusal(lambda: check_config_file(path), ConfigError, memory=True)
    assert message.startswith(f"config file {path}: more than {MAX_VALUES:,} values once its YAML aliases"), message
    assert cost.seconds < 2, cost
    assert cost.peak_bytes < 20 * 2**20, cost


def test_alias_bomb_config_on_the_command_line_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`unpacked resolve --config FILE` reads the config itself: bounded too, and before any write."""
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path / "config.yaml", billion_laughs())
    message, cost = refusal(lambda: prepare(path, main_process=True), ConfigError)
    assert f"config file {path}: more than {MAX_VALUES:,} values" in message
    assert cost.seconds < 2, cost
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def values_document(values: int) -> str:
    """A YAML list of exactly `values` values once expanded (the list itself counts as one): copies of
    one aliased list of strings, then single strings."""
    block = MAX_VALUES // 10  # the aliased list and its block - 1 strings
    copies, singles = divmod(values - 1, block)
    items = [f"&b [{', '.join(['x'] * (block - 1))}]"] + ["*b"] * (copies - 1) + ["y"] * singles
    return f"[{', '.join(items)}]\n"


def test_value_limit_is_exact(tmp_path: Path) -> None:
    within = write(tmp_path / "within.yaml", values_document(MAX_VALUES))
    document = load_yaml_file(within, "recipe", RecipeError)
    assert document[0] is document[1] and len(document[0]) == MAX_VALUES // 10 - 1
    over = write(tmp_path / "over.yaml", values_document(MAX_VALUES + 1))
    with pytest.raises(RecipeError, match=f"more than {MAX_VALUES:,} values"):
        load_yaml_file(over, "recipe", RecipeError)


@pytest.mark.parametrize(
    ("name", "text", "fragments"),
    [
        ("recursive alias", "a: &a [1, *a]\n", ["an alias is used inside the anchor it refers to"]),
        (
            "string bomb",
            f"s: &s {'x' * 20_000}\nl: [{', '.join(['*s'] * 600)}]\n",
            [f"more than {MAX_CHARACTERS:,} characters of text once its YAML aliases are expanded"],
        ),
        ("plain huge file", "x" * (MAX_CHARACTERS + 1), [f"longer than {MAX_CHARACTERS:,} characters"]),
        ("deep flow nesting", "[" * HUGE, ["line 1: nested more than 100 levels deep; refused"]),
        (
            "deep block nesting",
            "".join(f"{' ' * level}k:\n" for level in range(1000)),
            ["line 101: nested more than 100 levels deep; refused"],
        ),
        ("huge integer", "version: " + "1" * 5000 + "\n", ["a value cannot be read", "4300 digits"]),
        ("NUL character", "input: [a\x00]\n", ["not valid YAML", "unacceptable character #x0000"]),
        ("undefined alias", "input: *nope\n", ["not valid YAML: line 1, column 8", "found undefined alias 'nope'"]),
        (
            "python tag",
            "!!python/object/apply:os.system [id]\n",
            ["not valid YAML", "could not determine a constructor"],
        ),
        ("unclosed list", "input: [a\n", ["not valid YAML: line 2, column 1", "expected ',' or ']'"]),
        ("huge alias name", f"a: *{'n' * HUGE}\n", ["not valid YAML", "found undefined alias 'nnn"]),
    ],
)
def test_hostile_yaml_is_refused_fast_and_clearly(tmp_path: Path, name: str, text: str, fragments: list[str]) -> None:
    path = write(tmp_path / "recipe.yaml", text)
    message, cost = refusal(lambda: load_recipe(path), RecipeError)
    assert message.startswith(f"recipe {path}: "), message
    for fragment in fragments:
        assert fragment in message, message
    assert len(message) < SHORT_MESSAGE and "\n" not in message, message
    assert cost.seconds < 2, cost


def test_real_files_are_within_the_limits() -> None:
    assert len(load_recipe(CERN_RECIPE).images) == 46
    check_config_file(REPO / "config" / "config.yaml")
    config = validate_config(load_config_file(REPO / "config" / "config.yaml"))
    assert config["registries"]["registry.hub.docker.com"]["retries"] == 5


def test_json_config_is_left_to_snakemake_as_json(tmp_path: Path) -> None:
    """Snakemake reads a config as JSON first: JSON that YAML would refuse (a tab) is accepted."""
    check_config_file(write(tmp_path / "config.yaml", '{\t"offline":\ttrue}\n'))
    with pytest.raises(ConfigError, match="expected a mapping of settings, found a list"):
        check_config_file(write(tmp_path / "list.yaml", "- a\n- b\n"))
    check_config_file(tmp_path / "missing.yaml")  # Snakemake says it is missing, or --configfile replaces it


# -------------------------------------------------------------------------------------------------
# Not UTF-8
# -------------------------------------------------------------------------------------------------

LATIN1_RECIPE = "- quay.io/a/b:1\n- quay.io/café/x:1\n".encode("latin-1")
BAD_OFFSET = LATIN1_RECIPE.index(b"\xe9")


def test_recipe_not_utf8_names_file_and_place(tmp_path: Path) -> None:
    path = write(tmp_path / "recipe.yaml", LATIN1_RECIPE)
    message, _ = refusal(lambda: load_recipe(path), RecipeError)
    assert message == (
        f"recipe {path}: not UTF-8 text: byte 0xe9 at offset {BAD_OFFSET} (line 2); save the file as UTF-8"
    )


@pytest.mark.parametrize("reader", [check_config_file, load_config_file])
def test_config_not_utf8_names_file_and_place(tmp_path: Path, reader: Callable[[Path], object]) -> None:
    content = "offline: false\nwork_dir: /srv/w\xf6rk\n".encode("latin-1")
    path = write(tmp_path / "config.yaml", content)
    message, _ = refusal(lambda: reader(path), ConfigError)
    offset = content.index(b"\xf6")
    assert (
        message == f"config file {path}: not UTF-8 text: byte 0xf6 at offset {offset} (line 2); save the file as UTF-8"
    )


def test_utf8_with_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path / "recipe.yaml", "\ufeff- quay.io/a/b:1\n".encode())
    assert [str(ref) for ref in load_recipe(path).images] == ["https://quay.io/a/b:1"]


# -------------------------------------------------------------------------------------------------
# Huge values are shown bounded in errors, still saying where and what
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "fragments"),
    [
        ([{"x" * HUGE: 1}], ["entry 1 ({'xxx", "is not a string"]),
        (["quay.io/a/b:1", list(range(HUGE))], ["entry 2 ([0, 1, 2, 3, ...])", "is not a string"]),
        (["quay.io/a/" + "b" * HUGE + ":1"], ["entry 1: 'quay.io/a/bbb", "longer than 255 characters"]),
        (["quay.io/a/b:" + "t" * HUGE], ["entry 1: 'quay.io/a/b:ttt", "invalid tag 'ttt"]),
        (
            [" " + "x" * HUGE + "/a:1"],
            ["entry 1: ' xxx", "is not a registry host", "e.g. registry.hub.docker.com/<repository>:<tag>"],
        ),
        ({"version": "v" * HUGE, "input": []}, ["version 'vvv", "unknown (use 1)"]),
        ({"input": [], "k" * HUGE: 1}, ["unknown key(s) kkk", "a wishlist has"]),
    ],
)
def test_huge_recipe_values_are_shown_bounded(document: object, fragments: list[str]) -> None:
    message, cost = refusal(lambda: parse_recipe(document, source="big.yaml"), RecipeError)
    assert message.startswith("recipe big.yaml: "), message
    for fragment in fragments:
        assert fragment in message, message
    assert len(message) < SHORT_MESSAGE, message
    assert cost.seconds < 2, cost


@pytest.mark.parametrize(
    ("config", "fragments"),
    [
        ({"offline": "y" * HUGE}, ["config: offline: 'yyy", "is not of type 'boolean'"]),
        ({"platforms": ["x" * HUGE]}, ["config: platforms/0: 'xxx", "does not match"]),
        ({"platforms": [list(range(HUGE))]}, ["config: platforms/0: [0, 1, 2, 3, ...]", "is not of type 'string'"]),
        ({"z" * HUGE: 1}, ["config: (top level): Additional properties are not allowed ('zzz"]),
        (
            {"registries": {"h" * HUGE: {"retries": "many"}}},
            ["config: registries/hhh", "hhh/retries: 'many' is not of type 'integer'"],
        ),
        ({"publisher": {"type": "t" * HUGE}}, ["config: publisher/type: 'ttt", "is not one of ['directory', 'hook']"]),
    ],
)
def test_huge_config_values_are_shown_bounded(config: dict[str, Any], fragments: list[str]) -> None:
    message, cost = refusal(lambda: validate_config(config), ConfigError)
    for fragment in fragments:
        assert fragment in message, message
    assert len(message) < SHORT_MESSAGE, message
    assert cost.seconds < 2, cost


def test_bounded_helpers() -> None:
    assert bounded_repr("short") == "'short'"
    assert bounded_repr({"a": [1, 2]}) == "{'a': [1, 2]}"
    for value in ("s" * HUGE, list(range(HUGE)), {str(n): n for n in range(10_000)}, 10**100_000, [[[[["deep"]]]]]):
        shown = bounded_repr(value)
        assert 0 < len(shown) <= 100, shown
    assert bounded_text("a" * 50 + "b" * 50 + "c" * 50, 40) == "a" * 25 + "..." + "c" * 12
    assert bounded_text("fits", 4) == "fits"


# -------------------------------------------------------------------------------------------------
# The workflow as a user runs it: refused at parse time, one clear line, nothing written
# -------------------------------------------------------------------------------------------------


@dataclass
class Run:
    returncode: int
    stderr: str
    seconds: float
    max_rss_kib: int


def run_measured(directory: Path, env: dict[str, str], timeout: float = 300) -> Run:
    """`snakemake` in `directory`, with its wall time and peak memory (the bombs took 135 s and 4.7 GB)."""
    out, err = directory / "snakemake.out", directory / "snakemake.err"
    start = time.monotonic()
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(snakemake_command(directory), stdout=stdout, stderr=stderr, env=env)
        watchdog = threading.Timer(timeout, process.kill)
        watchdog.start()
        _, status, usage = os.wait4(process.pid, 0)
        watchdog.cancel()
    process.returncode = os.waitstatus_to_exitcode(status)
    run = Run(process.returncode, err.read_text(errors="replace"), time.monotonic() - start, usage.ru_maxrss)
    out.unlink()
    err.unlink()
    return run


# Requests to any host but 127.0.0.1 go to this closed local port (no DNS lookup either), if anything
# tried one: before this change, `library/busybox` was looked up and retried as a host for 19 s.
DEAD_PROXY = "http://127.0.0.1:9"
NO_NETWORK = {
    name: value
    for proxy in ("http_proxy", "https_proxy")
    for name, value in ((proxy, DEAD_PROXY), (proxy.upper(), DEAD_PROXY))
} | {"no_proxy": "127.0.0.1", "NO_PROXY": "127.0.0.1"}


@pytest.mark.parametrize(
    ("file", "content", "expected"),
    [
        (
            "config.yaml",
            billion_laughs(),
            "config file config/config.yaml: more than 100,000 values once its YAML aliases are expanded",
        ),
        ("config.yaml", b"offline: false\nwork_dir: w\xf6rk\n", "config file config/config.yaml: not UTF-8 text"),
        (
            "recipe.yaml",
            recipe_bomb(),
            "recipe config/recipe.yaml: more than 100,000 values once its YAML aliases are expanded",
        ),
        (
            "recipe.yaml",
            LATIN1_RECIPE,
            f"recipe config/recipe.yaml: not UTF-8 text: byte 0xe9 at offset {BAD_OFFSET} (line 2); save the file",
        ),
        (
            "recipe.yaml",
            "- http://{host}/{repo}:1\n- library/busybox:1.36\n",
            "recipe config/recipe.yaml: entry 2: 'library/busybox:1.36': 'library' is not a registry host (a host "
            "has a '.' or a ':', or is localhost); name the registry first, e.g. "
            "registry.hub.docker.com/library/busybox:1.36",
        ),
    ],
    ids=["config alias bomb", "config not UTF-8", "recipe alias bomb", "recipe not UTF-8", "host-less entry"],
)
@pytest.mark.workflow
def test_workflow_refuses_bad_input_before_writing_anything(
    registry: LocalRegistry, tmp_path: Path, repo_name: str, file: str, content: str | bytes, expected: str
) -> None:
    directory = tmp_path / "run"
    write_config(directory, [f"http://{registry.host}/{repo_name}:1"], {registry.host: {"insecure": True}})
    if isinstance(content, str):
        content = content.format(host=registry.host, repo=repo_name)
    write(directory / "config" / file, content)
    log_before = registry.log
    run = run_measured(directory, workflow_env(**NO_NETWORK))
    assert run.returncode == 1, run.stderr[-3000:]
    error_type = "ConfigError" if file == "config.yaml" else "RecipeError"
    assert f"{error_type} in file " in run.stderr, run.stderr[-3000:]
    lines = [line for line in run.stderr.splitlines() if line.startswith(expected)]
    assert len(lines) == 1, run.stderr[-3000:]
    assert len(lines[0]) < SHORT_MESSAGE and len(run.stderr) < 5000, "no expanded structure or huge value printed"
    assert run.seconds < 30, run  # Snakemake's own start-up is most of it
    assert run.max_rss_kib < 512 * 1024, run
    assert sorted(p.name for p in directory.iterdir()) == [".snakemake", "config"], "no work/ or output/"
    assert registry.log[len(log_before) :].count(repo_name) == 0, "no registry was asked anything"


def test_peak_memory_is_measured_not_assumed() -> None:
    """The memory assertion above can fail: wait4 sees a child that takes 200 MB take them."""
    script = "x = bytearray(200 * 2**20); x[::4096] = b'1' * len(x[::4096])"
    process = subprocess.Popen([sys.executable, "-c", script])
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    assert process.returncode == 0
    assert usage.ru_maxrss > 150 * 1024, usage.ru_maxrss
