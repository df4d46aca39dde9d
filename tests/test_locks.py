"""The lock files (bin/lock): every package pinned with its hashes, in step with the requirement files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness import ROOT

LOCKS = {  # lock -> the requirement files it is compiled from
    "requirements-dev.lock": ["requirements-dev.txt"],
    "requirements.lock": ["requirements.txt", "function_trigger/requirements.txt"],
    "function_trigger/requirements.lock": ["function_trigger/requirements.txt"],
}
_PIN = re.compile(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s;\\]+)")


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text.split("[")[0]).lower()


def locked(path: Path) -> dict[str, tuple[str, int]]:
    """``{package: (version, hashes)}`` of a lock file."""
    packages: dict[str, tuple[str, int]] = {}
    current = None
    for line in path.read_text().splitlines():
        match = _PIN.match(line)
        if match:
            current = _name(match.group(1))
            packages[current] = (match.group(2), 0)
        elif "--hash=sha256:" in line and current:
            version, hashes = packages[current]
            packages[current] = (version, hashes + 1)
        elif line and not line.startswith((" ", "#")):
            raise AssertionError(f"{path.name}: not a pinned requirement: {line!r}")
    return packages


def wanted(path: Path) -> dict[str, str]:
    """The pins a requirement file asks for, following ``-r``."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            pins.update(wanted(path.parent / line[3:].strip()))
        elif line:
            match = _PIN.match(line)
            assert match, f"{path.name}: {line!r} is not pinned with =="
            pins[_name(match.group(1))] = match.group(2)
    return pins


@pytest.mark.parametrize("lock", LOCKS)
def test_every_package_is_pinned_with_hashes_as_its_requirements_ask(lock):
    packages = locked(ROOT / lock)
    assert packages and all(hashes for _, hashes in packages.values()), lock
    for source in LOCKS[lock]:
        for name, version in wanted(ROOT / source).items():
            assert packages.get(name, (None,))[0] == version, f"{lock}: {name} is not {version}; run bin/lock"


def test_the_locks_agree_on_every_version_they_share():
    dev = locked(ROOT / "requirements-dev.lock")
    for lock in ("requirements.lock", "function_trigger/requirements.lock"):
        for name, (version, _) in locked(ROOT / lock).items():
            assert dev[name][0] == version, f"{lock}: {name} {version}, the tests use {dev[name][0]}"


def test_installs_require_hashes():
    assert "--require-hashes -r requirements-dev.lock" in (ROOT / "bin/setup").read_text()
    assert "--require-hashes" in (ROOT / "Dockerfile").read_text()
