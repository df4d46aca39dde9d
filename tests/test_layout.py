"""The house rules: which process imports what, the README's layout table, and ruff."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def modules_loaded_by(*imports: str) -> set[str]:
    code = "import sys\n" + "".join(f"import {name}\n" for name in imports) + "print('\\n'.join(sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(done.stdout.split())


def test_the_worker_process_never_loads_flask():
    loaded = modules_loaded_by("analysis.worker.__main__")
    assert "analysis.worker.loop" in loaded  # it did load the worker
    assert not {name for name in loaded if name == "flask" or name.startswith(("flask.", "werkzeug"))}


def test_the_web_process_never_loads_the_worker_or_openfaces_runner():
    loaded = modules_loaded_by("analysis.web.app")  # app.py is create_app() of it
    assert "flask" in loaded
    assert not {
        name
        for name in loaded
        if name.startswith("analysis.worker") or name in ("analysis.openface.runner", "analysis.openface.engine")
    }


def layout_paths() -> set[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Layout") :]
    section = section[: section.index("\n## ", 4)]
    return {
        path
        for row in section.splitlines()
        if row.startswith("| `")
        for path in re.findall(r"`([^`]+)`", row.split("|")[1])
    }


def test_the_readme_layout_names_every_module_and_nothing_that_is_gone():
    listed = layout_paths()
    modules = {str(path.relative_to(ROOT)) for path in (ROOT / "analysis").rglob("*.py") if path.name != "__init__.py"}
    assert modules - listed == set(), "modules the README's layout table does not name"
    stale = {path for path in listed if path.startswith("analysis/") and not (ROOT / path).exists()}
    assert stale == set(), "the README's layout table names modules that are gone"


@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]], ids=["lint", "format"])
def test_ruff_is_clean(command):
    done = subprocess.run([sys.executable, "-m", "ruff", *command], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
