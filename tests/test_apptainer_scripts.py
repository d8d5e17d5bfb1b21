"""Table tests of the pure text functions behind the Apptainer sandbox files: one case, one assertion.

Shell quoting and script text (`unpacked.shellscript`) and labels (`unpacked.apptainer`). The shell
code itself is run for real in test_apptainer.py; here only the exact text is pinned, fast.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from unpacked.apptainer import SandboxError, base_image_labels, labels_json, sandbox_labels
from unpacked.shellscript import (
    NOTHING_TO_RUN_MESSAGE,
    OCI_EVAL_LINE,
    TEMPLATES,
    env_script,
    quote_args,
    runscript,
    shell_escape,
    single_quote,
    static_scripts,
)

# --------------------------------------------------------------------------- quoting

SHELL_ESCAPE = [
    ("plain", "plain"),
    ("", ""),
    ('"', '\\"'),
    ("$", "\\$"),
    ("`", "\\`"),
    ("\\", "\\\\"),
    ("\\$", "\\\\\\$"),  # backslash first: the escape of `$` is not escaped again
    ('\\"', '\\\\\\"'),
    ("${HOME}", "\\${HOME}"),
    ("'", "'"),  # single quotes are literal inside double quotes
    ("a\nb", "a\nb"),  # so are newlines
    ("!*?[]~", "!*?[]~"),  # no globbing or history inside double quotes
    ("é ü", "é ü"),
]


@pytest.mark.parametrize(("value", "expected"), SHELL_ESCAPE)
def test_shell_escape(value: str, expected: str) -> None:
    assert shell_escape(value) == expected


SINGLE_QUOTE = [
    ("plain", "'plain'"),
    ("", "''"),
    ("it's", "'it'\"'\"'s'"),
    ("''", "''\"'\"''\"'\"''"),
    ("$HOME `id` \\", "'$HOME `id` \\'"),
    ('"', "'\"'"),
    ("a\nb", "'a\nb'"),
]


@pytest.mark.parametrize(("value", "expected"), SINGLE_QUOTE)
def test_single_quote(value: str, expected: str) -> None:
    assert single_quote(value) == expected


QUOTE_ARGS: list[tuple[list[str], str]] = [
    ([], ""),
    ([""], '""'),
    (["a"], '"a"'),
    (["a", "b c"], '"a" "b c"'),
    (["$x", '"y"'], '"\\$x" "\\"y\\""'),
    (["it's"], '"it\'s"'),
    (["", ""], '"" ""'),
]


@pytest.mark.parametrize(("args", "expected"), QUOTE_ARGS)
def test_quote_args(args: list[str], expected: str) -> None:
    assert quote_args(args) == expected


# --------------------------------------------------------------------------- env script

ENV_SCRIPT: list[tuple[list[str], str]] = [
    ([], "#!/bin/sh\n"),
    (["PATH=/usr/bin:/bin"], '#!/bin/sh\nexport PATH="/usr/bin:/bin"\n'),
    (["PATH="], '#!/bin/sh\nexport PATH=""\n'),
    (["A=1"], '#!/bin/sh\nexport A="${A:-"1"}"\n'),
    (["A="], '#!/bin/sh\nexport A="${A:-""}"\n'),
    (["A"], '#!/bin/sh\nexport A="${A:-}"\n'),
    (["A=b=c"], '#!/bin/sh\nexport A="${A:-"b=c"}"\n'),  # split at the first `=`
    (['A=$B`c`"\\'], '#!/bin/sh\nexport A="${A:-"\\$B\\`c\\`\\"\\\\"}"\n'),
    (["_x1=y"], '#!/bin/sh\nexport _x1="${_x1:-"y"}"\n'),
    (["1BAD=x"], "#!/bin/sh\n"),  # not a shell identifier: skipped
    (["BAD-NAME=x"], "#!/bin/sh\n"),
    (["=x"], "#!/bin/sh\n"),
    ([""], "#!/bin/sh\n"),
    (["A B=x"], "#!/bin/sh\n"),
    (["É=x"], "#!/bin/sh\n"),
    (["A=1", "B=2"], '#!/bin/sh\nexport A="${A:-"1"}"\nexport B="${B:-"2"}"\n'),  # in order
    (["A=1", "A=2"], '#!/bin/sh\nexport A="${A:-"1"}"\nexport A="${A:-"2"}"\n'),
]


@pytest.mark.parametrize(("env", "expected"), ENV_SCRIPT)
def test_env_script(env: list[str], expected: str) -> None:
    assert env_script(env) == expected


# --------------------------------------------------------------------------- runscript


def _line(index: int) -> Callable[[str], str]:
    return lambda text: text.splitlines()[index]


def _count(needle: str) -> Callable[[str], int]:
    return lambda text: text.count(needle)


RUNSCRIPT: list[tuple[str, Sequence[str] | None, Sequence[str] | None, Callable[[str], Any], Any]] = [
    ("shebang", None, None, _line(0), "#!/bin/sh"),
    ("entrypoint assignment", ["/bin/app", "--flag"], None, _line(1), 'OCI_ENTRYPOINT=\'"/bin/app" "--flag"\''),
    ("cmd assignment", None, ["it's"], _line(2), "OCI_CMD='\"it'\"'\"'s\"'"),
    ("none: empty entrypoint", None, None, _line(1), "OCI_ENTRYPOINT=''"),
    ("none: empty cmd", None, None, _line(2), "OCI_CMD=''"),
    ("empty lists are none", [], [], _line(1), "OCI_ENTRYPOINT=''"),
    ("ends with exec", ["/e"], ["c"], _line(-1), 'exec "$@"'),
    ("eval line once", ["/e"], ["c"], _count(OCI_EVAL_LINE + "\n"), 1),
    ("nothing-to-run message", None, None, _count(single_quote(NOTHING_TO_RUN_MESSAGE)), 1),
    ("no-eval: entrypoint in each of 3 branches", ["/e"], None, _count("set -- '/e' \"$@\""), 3),
    ("no-eval: entrypoint in 3 branches with cmd", ["/e"], ["c"], _count("set -- '/e' \"$@\""), 3),
    ("no-eval: cmd in 2 branches with entrypoint", ["/e"], ["c"], _count("set -- 'c' \"$@\""), 2),
    ("no-eval: cmd in 2 branches alone", None, ["c"], _count("set -- 'c' \"$@\""), 2),
    ("no-eval: args prepended last first", ["/e", "x"], None, _count("set -- 'x' \"$@\"\n        set -- '/e'"), 3),
    ("no-eval: $ kept literal", None, ["$HOME"], _count("set -- '$HOME' \"$@\""), 2),
    ("no-eval: nothing to prepend", None, None, _count("set -- "), 0),
    ("honours APPTAINER_NO_EVAL", None, None, _count('[ -n "${APPTAINER_NO_EVAL:-}" ]'), 1),
]


@pytest.mark.parametrize(
    ("entrypoint", "cmd", "probe", "expected"),
    [case[1:] for case in RUNSCRIPT],
    ids=[case[0] for case in RUNSCRIPT],
)
def test_runscript(
    entrypoint: Sequence[str] | None, cmd: Sequence[str] | None, probe: Callable[[str], Any], expected: Any
) -> None:
    assert probe(runscript(entrypoint, cmd)) == expected


# --------------------------------------------------------------------------- static scripts

SOURCE_ENV = 'for script in /.singularity.d/env/*.sh; do\n    if [ -f "$script" ]; then\n        . "$script"\n'


@pytest.mark.parametrize("relpath", sorted(TEMPLATES))
def test_static_script_is_sh(relpath: str) -> None:
    assert static_scripts()[relpath].startswith("#!/bin/sh\n")


@pytest.mark.parametrize("relpath", sorted(r for r in TEMPLATES if r.startswith("actions/")))
def test_actions_source_the_environment(relpath: str) -> None:
    assert static_scripts()[relpath].count(SOURCE_ENV) == 1


# --------------------------------------------------------------------------- labels

DEFFILE = "org.label-schema.usage.singularity.deffile."
BASE = "org.opencontainers.image.base."

BASE_IMAGE_LABELS: list[tuple[str, str | None, dict[str, str]]] = [
    ("x:1", None, {f"{BASE}name": "x:1", f"{DEFFILE}bootstrap": "docker", f"{DEFFILE}from": "x:1"}),
    ("x:1", "", {f"{BASE}name": "x:1", f"{DEFFILE}bootstrap": "docker", f"{DEFFILE}from": "x:1"}),
    (
        "x:1",
        "sha256:ab",
        {f"{BASE}name": "x:1", f"{DEFFILE}bootstrap": "docker", f"{DEFFILE}from": "x:1", f"{BASE}digest": "sha256:ab"},
    ),
]


@pytest.mark.parametrize(("name", "digest", "expected"), BASE_IMAGE_LABELS)
def test_base_image_labels(name: str, digest: str | None, expected: dict[str, str]) -> None:
    assert base_image_labels(name, digest) == expected


SCHEMA = {"org.label-schema.schema-version": "1.0"}
ARCH = "org.label-schema.build-arch"

SANDBOX_LABELS: list[tuple[str, dict[str, Any], dict[str, str] | None, dict[str, str]]] = [
    ("empty config", {}, None, SCHEMA),
    ("null config", {"config": None}, None, SCHEMA),
    ("null labels", {"config": {"Labels": None}}, None, SCHEMA),
    ("image labels", {"config": {"Labels": {"a": "1"}}}, None, {"a": "1", **SCHEMA}),
    ("architecture", {"architecture": "arm64"}, None, {ARCH: "arm64", **SCHEMA}),
    ("empty architecture", {"architecture": ""}, None, SCHEMA),
    ("architecture not a string", {"architecture": 7}, None, SCHEMA),
    (
        "build labels win over image",
        {"config": {"Labels": {ARCH: "x"}}, "architecture": "amd64"},
        None,
        {ARCH: "amd64", **SCHEMA},
    ),
    ("extra labels win over all", {"architecture": "amd64"}, {ARCH: "y"}, {ARCH: "y", **SCHEMA}),
    ("extra labels added", {}, {"b": "2"}, {"b": "2", **SCHEMA}),
]


@pytest.mark.parametrize(
    ("config", "extra", "expected"), [case[1:] for case in SANDBOX_LABELS], ids=[case[0] for case in SANDBOX_LABELS]
)
def test_sandbox_labels(config: dict[str, Any], extra: dict[str, str] | None, expected: dict[str, str]) -> None:
    assert sandbox_labels(config, extra) == expected


BAD_LABELS: list[tuple[str, dict[str, Any], str]] = [
    ("config a list", {"config": []}, "'config' is a list, not an object"),
    ("labels a list", {"config": {"Labels": ["a"]}}, "config.Labels is not a map of strings"),
    ("label value a number", {"config": {"Labels": {"a": 1}}}, "config.Labels is not a map of strings"),
    ("label value null", {"config": {"Labels": {"a": None}}}, "config.Labels is not a map of strings"),
]


@pytest.mark.parametrize(("config", "message"), [case[1:] for case in BAD_LABELS], ids=[case[0] for case in BAD_LABELS])
def test_sandbox_labels_refused(config: dict[str, Any], message: str) -> None:
    with pytest.raises(SandboxError, match=message):
        sandbox_labels(config)


LABELS_JSON: list[tuple[dict[str, str], str]] = [
    ({}, "{}"),
    ({"a": "1"}, '{\n\t"a": "1"\n}'),  # tab-indented, no final newline
    ({"b": "2", "a": "1"}, '{\n\t"a": "1",\n\t"b": "2"\n}'),  # keys sorted
    ({"é": "ü"}, '{\n\t"é": "ü"\n}'),  # not ASCII-escaped
    ({"q": '"\\'}, '{\n\t"q": "\\"\\\\"\n}'),
]


@pytest.mark.parametrize(("labels", "expected"), LABELS_JSON)
def test_labels_json(labels: dict[str, str], expected: str) -> None:
    assert labels_json(labels) == expected
