"""`snakemake --lint`, with the one lint this workflow answers on purpose taken out.

The rules carry no `conda:` directive (envs/README.md says why), so Snakemake's "Specify a conda
environment or container for each rule" is expected for every rule; any other lint, or a lint run
that fails without printing lints, fails the check. Usage: python tests/support/lint_workflow.py
[snakemake arguments...]
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DELIBERATE = {"Specify a conda environment or container for each rule."}
_LINT_TITLE = re.compile(r"^\s+\* (.+?):?$")


def unexpected_lints(output: str) -> list[str]:
    """The titles of the lints in Snakemake's lint output that are not deliberate."""
    titles = [m.group(1) for line in output.splitlines() if (m := _LINT_TITLE.match(line))]
    return [title for title in titles if title not in DELIBERATE and title.rstrip(":") not in DELIBERATE]


def main(argv: list[str]) -> int:
    snakemake = Path(sys.executable).with_name("snakemake")
    done = subprocess.run([str(snakemake), "--lint", *argv], capture_output=True, text=True, check=False)
    output = done.stdout + done.stderr
    found = unexpected_lints(output)
    if found or (done.returncode != 0 and "Lints for rule" not in output):
        print(output, file=sys.stderr)
        print(f"snakemake --lint: unexpected lint(s): {found or 'the lint run failed'}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
