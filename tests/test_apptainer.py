"""Tests of unpacked.apptainer: the generated shell code is run for real, with /bin/sh and bwrap.

bubblewrap runs the generated runscript and actions inside a small image tree as its root, the way
Apptainer runs a sandbox. A missing `bwrap` makes these tests fail, never skip.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from unpacked.apptainer import SandboxError, base_image_labels, labels_json, write_sandbox_files
from unpacked.shellscript import (
    NOTHING_TO_RUN_MESSAGE,
    OCI_EVAL_LINE,
    env_script,
    runscript,
    shell_escape,
    single_quote,
)

PRINTF = shutil.which("printf") or "/usr/bin/printf"
HOST_SH = os.path.realpath("/bin/sh")

# --------------------------------------------------------------------------- pure functions


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("plain", "plain"),
        ('say "hi"', 'say \\"hi\\"'),
        ("$HOME", "\\$HOME"),
        ("`id`", "\\`id\\`"),
        ("back\\slash", "back\\\\slash"),
        ('\\"', '\\\\\\"'),
        ("\\$", "\\\\\\$"),
        ("it's", "it's"),
        ("", ""),
    ],
)
def test_shell_escape(value: str, escaped: str) -> None:
    assert shell_escape(value) == escaped


def test_single_quote() -> None:
    assert single_quote("it's") == "'it'\"'\"'s'"


def test_env_script_text() -> None:
    text = env_script(["PATH=/usr/bin:/bin", "A=1", "B", "1BAD=x", "BAD-NAME=x", "=x", "C=a=b"])
    assert text == (
        '#!/bin/sh\nexport PATH="/usr/bin:/bin"\nexport A="${A:-"1"}"\nexport B="${B:-}"\nexport C="${C:-"a=b"}"\n'
    )


def test_env_script_empty() -> None:
    assert env_script([]) == "#!/bin/sh\n"


def test_runscript_assignments_and_eval_line() -> None:
    text = runscript(["/bin/app", "--flag"], ["it's", 'a "b"'])
    lines = text.splitlines()
    assert lines[0] == "#!/bin/sh"
    assert lines[1] == 'OCI_ENTRYPOINT=\'"/bin/app" "--flag"\''
    assert lines[2] == 'OCI_CMD=\'"it\'"\'"\'s" "a \\"b\\""\''
    assert OCI_EVAL_LINE in lines
    assert lines[-1] == 'exec "$@"'


def test_runscript_empty_assignments() -> None:
    lines = runscript(None, [])
    assert "OCI_ENTRYPOINT=''\nOCI_CMD=''\n" in lines


# --------------------------------------------------------------------------- ENV, run with sh

ENV_VALUES = [
    ('say "hi"', 'say "hi"'),
    ("$HOME and ${HOME}", "$HOME and ${HOME}"),
    ("`id` $(id)", "`id` $(id)"),
    ("back\\slash and trailing\\", "back\\slash and trailing\\"),
    ("line1\nline2\n", "line1\nline2\n"),
    ("a=b=c", "a=b=c"),
    ("", ""),
    ("it's } {", "it's } {"),
    ('\\"$`', '\\"$`'),
]


def _source_env(tmp_path: Path, env: Sequence[str], names: Sequence[str], preset: dict[str, str]) -> list[str | None]:
    """Source the generated script with /bin/sh; return the values of `names` (None: unset)."""
    script = tmp_path / "10-docker2singularity.sh"
    script.write_text(env_script(env))
    shell = (
        ". ./10-docker2singularity.sh || exit 9\n"
        'for _n in "$@"; do eval "_v=\\${$_n-@unset@}"; printf \'%s\\0\' "$_v"; done'
    )
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    result = subprocess.run(
        ["/bin/sh", "-c", shell, "sh", *names],
        cwd=tmp_path,
        env={**base, **preset},
        capture_output=True,
        check=True,
    )
    out = result.stdout.decode().split("\0")[:-1]
    return [None if item == "@unset@" else item for item in out]


@pytest.mark.parametrize(("value", "expected"), ENV_VALUES)
def test_env_value_roundtrip_when_unset(tmp_path: Path, value: str, expected: str) -> None:
    assert _source_env(tmp_path, [f"VAR={value}"], ["VAR"], {}) == [expected]


@pytest.mark.parametrize(("value", "expected"), ENV_VALUES)
def test_env_value_is_a_default_only(tmp_path: Path, value: str, expected: str) -> None:
    got = _source_env(tmp_path, [f"VAR={value}"], ["VAR"], {"VAR": "from host"})
    assert got == ["from host"]


def test_env_host_value_empty_counts_as_unset(tmp_path: Path) -> None:
    # `${VAR:-...}`, as in Apptainer: a set but empty host value gets the image's default.
    assert _source_env(tmp_path, ["VAR=image"], ["VAR"], {"VAR": ""}) == ["image"]


@pytest.mark.parametrize(("value", "expected"), ENV_VALUES)
def test_env_path_is_always_overwritten(tmp_path: Path, value: str, expected: str) -> None:
    # PATH is set with the host's value present: the image's PATH wins.
    assert _source_env(tmp_path, [f"PATH={value}"], ["PATH"], {}) == [expected]


def test_env_name_without_value(tmp_path: Path) -> None:
    assert _source_env(tmp_path, ["VAR"], ["VAR"], {}) == [""]
    assert _source_env(tmp_path, ["VAR"], ["VAR"], {"VAR": "host"}) == ["host"]


def test_env_invalid_names_skipped(tmp_path: Path) -> None:
    env = ["1BAD=x", "BAD-NAME=y", "=z", "BAD NAME=w", "GOOD_1=ok", "_U=u"]
    text = env_script(env)
    assert text.count("export") == 2
    assert _source_env(tmp_path, env, ["GOOD_1", "_U"], {}) == ["ok", "u"]


def test_env_later_entries_see_earlier_ones_literally(tmp_path: Path) -> None:
    # Docker resolves ${VAR} at build time: a literal "$A" in the config must stay literal.
    got = _source_env(tmp_path, ["A=1", "B=$A"], ["A", "B"], {})
    assert got == ["1", "$A"]


def test_env_all_at_once(tmp_path: Path) -> None:
    env = [f"V{i}={value}" for i, (value, _) in enumerate(ENV_VALUES)] + ["PATH=/opt/x:/bin"]
    names = [f"V{i}" for i in range(len(ENV_VALUES))] + ["PATH"]
    expected = [want for _, want in ENV_VALUES] + ["/opt/x:/bin"]
    assert _source_env(tmp_path, env, names, {"V0": "host"}) == ["host", *expected[1:]]


# --------------------------------------------------------------------------- image trees and bwrap


@pytest.fixture(scope="session")
def bwrap() -> str:
    path = shutil.which("bwrap")
    if path is None:
        pytest.fail("bubblewrap (bwrap) is required for these tests: apt-get install bubblewrap")
    return path


HOST_TOP = ("bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr")


def make_image(tmp_path: Path, *, with_bin_sh: bool = True) -> Path:
    """An image tree whose programs come from the host: /usr and the /lib* bound read-only.

    Top-level host symlinks (merged /usr: `bin -> usr/bin`) become the same symlinks in the tree.
    Without `with_bin_sh` there is no /bin at all (so no /bin/sh), on any host layout.
    """
    root = tmp_path / "image"
    root.mkdir()
    for name in HOST_TOP:
        host = Path("/") / name
        if name in ("bin", "sbin") and not with_bin_sh:
            continue
        if host.is_symlink():
            (root / name).symlink_to(os.readlink(host))
        elif host.is_dir():
            (root / name).mkdir()
    return root


def run_in(
    bwrap: str,
    root: Path,
    argv: Sequence[str],
    env: dict[str, str] | None = None,
    extra_binds: Sequence[tuple[str, str]] = (),
) -> subprocess.CompletedProcess[str]:
    cmd = [bwrap, "--bind", str(root), "/"]
    for name in HOST_TOP:
        host = Path("/") / name
        if host.is_dir() and not host.is_symlink() and (root / name).is_dir():
            cmd += ["--ro-bind", str(host), f"/{name}"]
    for src, dest in extra_binds:
        cmd += ["--ro-bind", src, dest]
    cmd += ["--proc", "/proc", "--dev", "/dev", "--unshare-all", "--die-with-parent", "--clearenv"]
    for key, value in (env or {}).items():
        cmd += ["--setenv", key, value]
    cmd += ["--", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def image_config(
    entrypoint: list[str] | None = None,
    cmd: list[str] | None = None,
    env: list[str] | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": env, "Entrypoint": entrypoint, "Cmd": cmd, "Labels": labels},
    }


def run_image(
    bwrap: str,
    tmp_path: Path,
    config: dict[str, Any],
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`apptainer run IMAGE ARGS`: the run action sources env/*.sh and execs the runscript."""
    root = make_image(tmp_path)
    write_sandbox_files(root, config)
    return run_in(bwrap, root, ["/.singularity.d/actions/run", *args], env)


ARGS_SHOW = [PRINTF, "[%s]\\n"]


@pytest.mark.parametrize("no_eval", [None, "SINGULARITY_NO_EVAL", "APPTAINER_NO_EVAL"])
@pytest.mark.parametrize(
    ("entrypoint", "cmd", "args", "expected"),
    [
        pytest.param([*ARGS_SHOW, "e 1"], None, [], "[e 1]\n", id="entrypoint-only"),
        pytest.param([*ARGS_SHOW, "e 1"], None, ["x", "y z"], "[e 1]\n[x]\n[y z]\n", id="entrypoint-args"),
        pytest.param(None, [*ARGS_SHOW, "c 1"], [], "[c 1]\n", id="cmd-only"),
        pytest.param(None, [*ARGS_SHOW, "c 1"], [PRINTF, "<%s>", "a b"], "<a b>", id="cmd-replaced"),
        pytest.param(ARGS_SHOW, ["c1", "c 2"], [], "[c1]\n[c 2]\n", id="both"),
        pytest.param(ARGS_SHOW, ["c1", "c 2"], ["a 1"], "[a 1]\n", id="both-args-replace-cmd"),
        pytest.param(
            ARGS_SHOW,
            None,
            ["it's", "two  spaces", " lead", "tab\there"],
            "[it's]\n[two  spaces]\n[ lead]\n[tab\there]\n",
            id="args-spaces-single-quotes",
        ),
        pytest.param(None, None, [PRINTF, "%s|", "x y"], "x y|", id="neither-with-args-runs-args"),
    ],
)
def test_runscript_runs(
    bwrap: str,
    tmp_path: Path,
    entrypoint: list[str] | None,
    cmd: list[str] | None,
    args: list[str],
    expected: str,
    no_eval: str | None,
) -> None:
    env = {no_eval: "1"} if no_eval else {}
    result = run_image(bwrap, tmp_path, image_config(entrypoint, cmd), args, env)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == expected


TRICKY = ["it's", 'a "quoted" word', "$HOME", "${X:-y}", "`id`", "$(id)", "back\\slash", "a\nb"]


@pytest.mark.parametrize("no_eval", [None, "SINGULARITY_NO_EVAL", "APPTAINER_NO_EVAL"])
def test_runscript_image_arguments_are_verbatim(bwrap: str, tmp_path: Path, no_eval: str | None) -> None:
    # Entrypoint and CMD from the image reach the program unchanged, with or without evaluation.
    env = {"HOME": "/root", **({no_eval: "1"} if no_eval else {})}
    result = run_image(bwrap, tmp_path, image_config(ARGS_SHOW, TRICKY), [], env)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "".join(f"[{arg}]\n" for arg in TRICKY)


@pytest.mark.parametrize("no_eval", ["SINGULARITY_NO_EVAL", "APPTAINER_NO_EVAL"])
def test_runscript_no_eval_passes_user_arguments_verbatim(bwrap: str, tmp_path: Path, no_eval: str) -> None:
    result = run_image(bwrap, tmp_path, image_config(ARGS_SHOW, ["c"]), TRICKY, {no_eval: "1"})
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "".join(f"[{arg}]\n" for arg in TRICKY)


def test_runscript_evaluates_user_arguments_by_default(bwrap: str, tmp_path: Path) -> None:
    # Apptainer's documented default: `apptainer run` arguments go through the shell once.
    config = image_config(ARGS_SHOW, None, env=["GREETING=hello"])
    result = run_image(bwrap, tmp_path, config, ["$GREETING", "it's", "a b"])
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "[hello]\n[it's]\n[a b]\n"


def test_runscript_neither_fails_with_message(bwrap: str, tmp_path: Path) -> None:
    result = run_image(bwrap, tmp_path, image_config(None, None))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip() == NOTHING_TO_RUN_MESSAGE


def test_runscript_neither_fails_without_eval_too(bwrap: str, tmp_path: Path) -> None:
    result = run_image(bwrap, tmp_path, {"config": None}, [], {"APPTAINER_NO_EVAL": "1"})
    assert result.returncode == 1
    assert result.stderr.strip() == NOTHING_TO_RUN_MESSAGE


def test_runscript_missing_program_fails_loudly(bwrap: str, tmp_path: Path) -> None:
    result = run_image(bwrap, tmp_path, image_config(["/no/such/program"], None))
    assert result.returncode != 0
    assert "/no/such/program" in result.stderr


def test_exec_action_applies_image_env(bwrap: str, tmp_path: Path) -> None:
    root = make_image(tmp_path)
    config = image_config(env=["PATH=/usr/bin:/bin", "FOO=image value", 'Q=a "b" $c'])
    write_sandbox_files(root, config)
    show = 'printf \'%s|%s|%s|%s\' "$FOO" "$Q" "$PATH" "$LD_LIBRARY_PATH"'
    argv = ["/.exec", "/bin/sh", "-c", show]
    result = run_in(bwrap, root, argv, {"PATH": "/host/bin", "Q": "host"})
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "image value|host|/usr/bin:/bin|/.singularity.d/libs"


def test_no_bin_sh_fails_clearly_but_interpreter_still_runs_it(bwrap: str, tmp_path: Path) -> None:
    root = make_image(tmp_path, with_bin_sh=False)
    write_sandbox_files(root, image_config([PRINTF, "[%s]\\n"], ["c 1"]))
    assert not os.path.lexists(root / "bin")

    # Run directly, the kernel needs /bin/sh for the shebang: a clear error, not silence.
    direct = run_in(bwrap, root, ["/.singularity.d/runscript", "x"])
    assert direct.returncode != 0
    assert direct.stdout == ""
    assert "/.singularity.d/runscript" in direct.stderr
    assert "No such file or directory" in direct.stderr

    # Apptainer runs it in its embedded interpreter instead, found by the eval line. A shell that
    # is not at /bin/sh stands in for it: the script itself must not need /bin/sh.
    (root / "opt").mkdir()
    (root / "opt" / "sh").touch()
    interp = run_in(
        bwrap,
        root,
        ["/opt/sh", "/.singularity.d/runscript", "x y"],
        extra_binds=[(HOST_SH, "/opt/sh")],
    )
    assert (interp.returncode, interp.stderr, interp.stdout) == (0, "", "[x y]\n")
    assert OCI_EVAL_LINE in (root / ".singularity.d" / "runscript").read_text().splitlines()


# --------------------------------------------------------------------------- tree layout


def test_layout_modes_and_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "image"
    root.mkdir()
    write_sandbox_files(root, {})
    sing = root / ".singularity.d"
    for rel in ("libs", "actions", "env"):
        assert stat.S_IMODE((sing / rel).lstat().st_mode) == 0o755
    for rel in ("dev", "proc", "root", "var", "var/tmp", "tmp", "etc", "sys", "home"):
        st = (root / rel).lstat()
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755, rel
    links = {
        "singularity": ".singularity.d/runscript",
        ".run": ".singularity.d/actions/run",
        ".exec": ".singularity.d/actions/exec",
        ".test": ".singularity.d/actions/test",
        ".shell": ".singularity.d/actions/shell",
        "environment": ".singularity.d/env/90-environment.sh",
    }
    for name, target in links.items():
        assert os.readlink(root / name) == target
        assert (root / name).is_file()
    scripts = [
        "runscript",
        "startscript",
        *(f"actions/{a}" for a in ("exec", "run", "shell", "start", "test")),
        *(
            f"env/{e}"
            for e in (
                "01-base.sh",
                "10-docker2singularity.sh",
                "90-environment.sh",
                "95-apps.sh",
                "99-base.sh",
                "99-runtimevars.sh",
            )
        ),
    ]
    for rel in scripts:
        st = (sing / rel).lstat()
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755, rel
        assert (sing / rel).read_text().startswith("#!/bin/sh\n"), rel
    for rel in ("labels.json", "../etc/hosts", "../etc/resolv.conf"):
        st = (sing / rel).lstat()
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o644, rel
    assert (root / "etc" / "hosts").read_bytes() == b""
    assert sorted(p.name for p in root.rglob("*.tmp")) == []


@pytest.mark.parametrize(
    "script",
    [
        "env/01-base.sh",
        "env/90-environment.sh",
        "env/95-apps.sh",
        "env/99-base.sh",
        "env/99-runtimevars.sh",
        "env/10-docker2singularity.sh",
        "runscript",
        "startscript",
        "actions/exec",
        "actions/run",
        "actions/shell",
        "actions/start",
        "actions/test",
    ],
)
def test_scripts_are_valid_posix_sh(tmp_path: Path, script: str) -> None:
    root = tmp_path / "image"
    root.mkdir()
    write_sandbox_files(root, image_config(["/bin/app"], ["x"], ["A=1", 'B="q" `x` $y']))
    subprocess.run(["/bin/sh", "-n", str(root / ".singularity.d" / script)], check=True)


def test_runtimevars_and_base(tmp_path: Path) -> None:
    root = tmp_path / "image"
    root.mkdir()
    write_sandbox_files(root, {})
    env_dir = root / ".singularity.d" / "env"
    shell = '. ./99-runtimevars.sh; . ./99-base.sh; printf \'%s|%s|%s\' "$PATH" "$LD_LIBRARY_PATH" '
    shell += '"${SING_USER_DEFINED_PREPEND_PATH-unset}"'
    env = {"PATH": "/usr/bin:/bin", "SING_USER_DEFINED_PREPEND_PATH": "/pre", "LD_LIBRARY_PATH": "/l"}
    result = subprocess.run(["/bin/sh", "-c", shell], cwd=env_dir, env=env, capture_output=True, text=True, check=True)
    assert result.stdout == "/pre:/usr/bin:/bin|/l:/.singularity.d/libs|unset"


def test_second_run_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "image"
    root.mkdir()
    config = image_config(["/bin/app"], ["x"], ["A=1"], {"a": "b"})
    write_sandbox_files(root, config)
    before = {p: p.lstat() for p in root.rglob("*")}
    write_sandbox_files(root, config)
    after = {p: p.lstat() for p in root.rglob("*")}
    assert before.keys() == after.keys()
    for path, st in before.items():
        assert (st.st_ino, st.st_mtime_ns) == (after[path].st_ino, after[path].st_mtime_ns), path


def test_existing_entries_are_kept(tmp_path: Path) -> None:
    root = tmp_path / "image"
    root.mkdir()
    (root / "home").symlink_to("/nonexistent/home")
    (root / "tmp").write_text("a file")
    (root / "var").symlink_to("elsewhere")
    (root / ".run").symlink_to("/dangling")
    (root / "environment").write_text("mine")
    write_sandbox_files(root, {})
    assert os.readlink(root / "home") == "/nonexistent/home"
    assert (root / "tmp").read_text() == "a file"
    assert os.readlink(root / "var") == "elsewhere"
    assert not (root / "elsewhere").exists()
    assert os.readlink(root / ".run") == "/dangling"
    assert (root / "environment").read_text() == "mine"


def test_existing_singularity_dir_is_reused(tmp_path: Path) -> None:
    root = tmp_path / "image"
    (root / ".singularity.d" / "env").mkdir(parents=True)
    (root / ".singularity.d" / "env" / "50-custom.sh").write_text("#!/bin/sh\nexport X=1\n")
    (root / ".singularity.d" / "runscript").write_text("old")
    write_sandbox_files(root, image_config(["/bin/app"]))
    assert (root / ".singularity.d" / "env" / "50-custom.sh").read_text().endswith("X=1\n")
    assert "/bin/app" in (root / ".singularity.d" / "runscript").read_text()


@pytest.mark.parametrize(
    "bad",
    [
        {"config": []},
        {"config": {"Env": "A=1"}},
        {"config": {"Cmd": [1, 2]}},
        {"config": {"Labels": {"a": 1}}},
    ],
)
def test_malformed_config(tmp_path: Path, bad: dict[str, Any]) -> None:
    with pytest.raises(SandboxError, match="image config"):
        write_sandbox_files(tmp_path, bad)


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="write apptainer files"):
        write_sandbox_files(tmp_path / "missing", {})


# --------------------------------------------------------------------------- safety


def test_etc_hosts_absolute_symlink_outside_untouched(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    canary.write_text("canary hosts\n")
    canary.chmod(0o600)
    root = tmp_path / "image"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hosts").symlink_to(canary)
    (root / "etc" / "resolv.conf").symlink_to("../../canary")
    write_sandbox_files(root, {})
    assert canary.read_text() == "canary hosts\n"
    assert stat.S_IMODE(canary.stat().st_mode) == 0o600
    assert os.readlink(root / "etc" / "hosts") == str(canary)
    assert os.readlink(root / "etc" / "resolv.conf") == "../../canary"


def test_etc_symlink_to_outside_dir_untouched(tmp_path: Path) -> None:
    outside = tmp_path / "outside-etc"
    outside.mkdir()
    (outside / "hosts").write_text("canary\n")
    root = tmp_path / "image"
    root.mkdir()
    (root / "etc").symlink_to(outside)
    write_sandbox_files(root, {})
    assert sorted(p.name for p in outside.iterdir()) == ["hosts"]
    assert (outside / "hosts").read_text() == "canary\n"
    assert os.readlink(root / "etc") == str(outside)


def test_etc_relative_symlink_escaping_untouched(tmp_path: Path) -> None:
    outside = tmp_path / "outside-etc"
    outside.mkdir()
    root = tmp_path / "image"
    root.mkdir()
    (root / "etc").symlink_to("../outside-etc")
    write_sandbox_files(root, {})
    assert list(outside.iterdir()) == []


def test_hard_linked_files_are_replaced_not_written(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    shared = {"hosts": store / "hosts", "resolv": store / "resolv", "run": store / "run"}
    for path in shared.values():
        path.write_text("x")
        path.chmod(0o600)
    root = tmp_path / "image"
    (root / "etc").mkdir(parents=True)
    (root / ".singularity.d" / "env").mkdir(parents=True)
    os.link(shared["hosts"], root / "etc" / "hosts")
    os.link(shared["resolv"], root / "etc" / "resolv.conf")
    os.link(shared["run"], root / ".singularity.d" / "runscript")
    write_sandbox_files(root, image_config(["/bin/app"]))
    for path in shared.values():
        assert path.read_text() == "x"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.stat().st_nlink == 1
    assert (root / "etc" / "hosts").read_bytes() == b""
    assert stat.S_IMODE((root / "etc" / "hosts").stat().st_mode) == 0o644


@pytest.mark.parametrize("kind", ["absolute", "relative", "file", "dangling"])
def test_singularity_dir_not_a_directory_is_replaced(tmp_path: Path, kind: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "runscript").write_text("canary")
    root = tmp_path / "image"
    root.mkdir()
    link = root / ".singularity.d"
    if kind == "absolute":
        link.symlink_to(outside)
    elif kind == "relative":
        link.symlink_to("../outside")
    elif kind == "file":
        link.write_text("not a dir")
    else:
        link.symlink_to("/nonexistent/place")
    write_sandbox_files(root, image_config(["/bin/app"]))
    assert not link.is_symlink() and link.is_dir()
    assert (link / "runscript").read_text().startswith("#!/bin/sh\n")
    assert sorted(p.name for p in outside.iterdir()) == ["runscript"]
    assert (outside / "runscript").read_text() == "canary"


def test_singularity_subdirs_symlinked_outside_are_replaced(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "image"
    (root / ".singularity.d").mkdir(parents=True)
    (root / ".singularity.d" / "env").symlink_to(outside)
    (root / ".singularity.d" / "actions").symlink_to("../../outside")
    (root / ".singularity.d" / "labels.json").symlink_to(outside / "labels.json")
    write_sandbox_files(root, image_config(["/bin/app"]))
    assert list(outside.iterdir()) == []
    for name in ("env", "actions"):
        assert (root / ".singularity.d" / name).is_dir()
        assert not (root / ".singularity.d" / name).is_symlink()
    assert not (root / ".singularity.d" / "labels.json").is_symlink()


def test_mount_point_under_symlinked_parent_not_created(tmp_path: Path) -> None:
    outside = tmp_path / "outside-var"
    outside.mkdir()
    root = tmp_path / "image"
    root.mkdir()
    (root / "var").symlink_to(outside)
    write_sandbox_files(root, {})
    assert list(outside.iterdir()) == []


# --------------------------------------------------------------------------- labels


def test_labels_json_exact(tmp_path: Path) -> None:
    root = tmp_path / "image"
    root.mkdir()
    config = image_config(
        labels={
            "org.opencontainers.image.version": "24.04",
            "maintainer": 'Jane "J" Doe <j@example.org>',
            "org.label-schema.schema-version": "image's own",
            "unicode": "café",
        }
    )
    extra = base_image_labels("docker.io/library/ubuntu:24.04", "sha256:" + "ab" * 32)
    write_sandbox_files(root, config, extra_labels=extra)
    text = (root / ".singularity.d" / "labels.json").read_text(encoding="utf-8")
    assert text == (
        "{\n"
        '\t"maintainer": "Jane \\"J\\" Doe <j@example.org>",\n'
        '\t"org.label-schema.build-arch": "amd64",\n'
        '\t"org.label-schema.schema-version": "1.0",\n'
        '\t"org.label-schema.usage.singularity.deffile.bootstrap": "docker",\n'
        '\t"org.label-schema.usage.singularity.deffile.from": "docker.io/library/ubuntu:24.04",\n'
        f'\t"org.opencontainers.image.base.digest": "sha256:{"ab" * 32}",\n'
        '\t"org.opencontainers.image.base.name": "docker.io/library/ubuntu:24.04",\n'
        '\t"org.opencontainers.image.version": "24.04",\n'
        '\t"unicode": "café"\n'
        "}"
    )


def test_labels_json_without_labels(tmp_path: Path) -> None:
    root = tmp_path / "image"
    root.mkdir()
    write_sandbox_files(root, {"config": {"Labels": None}})
    labels = json.loads((root / ".singularity.d" / "labels.json").read_text())
    assert labels == {"org.label-schema.schema-version": "1.0"}


def test_labels_json_helper() -> None:
    assert labels_json({"b": "2", "a": "1"}) == '{\n\t"a": "1",\n\t"b": "2"\n}'
