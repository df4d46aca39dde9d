"""What OpenFace may reach: an environment without secrets, and a user of its own in the image.

OpenFace parses untrusted media (OpenCV, FFmpeg) with the worker's rights
unless told otherwise, and the worker holds storage credentials: a
connection string, or a managed identity's endpoint and secret header. So:

- OpenFace gets a minimal environment: PATH, the library path, the locale
  and time zone, its working folder as HOME and TMPDIR, one OpenBLAS
  thread, and only the extra variables ``OPENFACE_ENV_PASSTHROUGH`` names.
  Names that look like secrets are refused there.
- With ``OPENFACE_SANDBOX`` (the image sets it) OpenFace runs through the
  ``openface-sandbox`` helper (engine/openface-sandbox.c) as a user of its
  own, which cannot read the worker's memory or environment and may write
  only the folders the worker opens to its group. Without it (a local run
  as one user) OpenFace runs as the worker's user, with the environment above.
- Either way OpenFace dies with the worker: the helper, or ``setpriv
  --pdeathsig``, gives it a parent-death signal.
- Each OpenFace process may use at most ``OPENFACE_MEMORY_LIMIT_MB`` of
  address space (``prlimit --as``, util-linux): a media that would take
  more makes OpenFace's allocation fail, which fails that media, rather than
  the kernel's out-of-memory killer taking the whole worker.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# What any program needs to start and find its libraries; nothing here carries a secret.
BASE_VARIABLES = ("PATH", "LD_LIBRARY_PATH", "LANG", "LC_ALL", "TZ")
# Passing one of these to OpenFace would hand it a credential.
_SECRET_NAME = re.compile(
    r"KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL|CONNECTION|SAS|^AZURE_|^IDENTITY_|^MSI_|^IMDS_", re.IGNORECASE
)


class SandboxError(RuntimeError):
    """The sandbox cannot work as configured; the message says why."""


@dataclass(frozen=True)
class Sandbox:
    """How the worker starts every OpenFace process."""

    helper: Path | None = None  # openface-sandbox, when OpenFace runs as a user of its own
    ids: tuple[int, int] | None = None  # that user's uid and gid
    passthrough: tuple[str, ...] = ()
    memory_limit_mb: int = 0  # address space of each OpenFace process; 0: no cap

    @classmethod
    def create(cls, helper: Path | None, passthrough: str = "", memory_limit_mb: int = 0) -> Sandbox:
        """Checks the passthrough names and, with a helper, that it really changes user."""
        names = tuple(name.strip() for name in passthrough.split(",") if name.strip())
        secret = [name for name in names if _SECRET_NAME.search(name)]
        if secret:
            raise SandboxError(
                f"OPENFACE_ENV_PASSTHROUGH: {', '.join(secret)} may hold a secret; OpenFace never gets those"
            )
        if memory_limit_mb:
            _which("prlimit")  # util-linux, in every Debian image
        if helper is None:
            return cls(passthrough=names, memory_limit_mb=memory_limit_mb)
        if not os.access(helper, os.X_OK):
            raise SandboxError(f"OPENFACE_SANDBOX: {helper} is not an executable this user may run")
        uid, gid = (int(part) for part in _output([str(helper), "--ids"]).split())
        seen = _output([str(helper), _which("id"), "-u"])
        if seen != str(uid) or uid == os.geteuid():
            raise SandboxError(
                f"OPENFACE_SANDBOX: {helper} should run programs as uid {uid}, but they ran as "
                f"{seen or 'nothing'} (the worker is uid {os.geteuid()})"
            )
        return cls(helper, (uid, gid), names, memory_limit_mb)

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` (an absolute program first) as it is started: sandboxed, unbuffered, dying with us."""
        # stdbuf (coreutils): without it OpenFace's console reaches its file in 4 KB blocks.
        stdbuf = _find("stdbuf")
        unbuffered = [stdbuf, "-o0"] if stdbuf else []
        # prlimit takes bytes only: "3000M" would be read as 3000 bytes.
        capped = [_which("prlimit"), f"--as={self.memory_limit_mb * 1024 * 1024}", "--"] if self.memory_limit_mb else []
        if self.helper is not None:
            return [str(self.helper), *capped, *unbuffered, *argv]
        # OpenFace runs in a session of its own: without a death signal it would outlive a killed worker.
        setpriv = _find("setpriv")
        dies_with_us = [setpriv, "--pdeathsig", "KILL"] if setpriv else []
        return [*dies_with_us, *capped, *unbuffered, *argv]

    def environment(self, workdir: Path) -> dict[str, str]:
        """Everything OpenFace sees of the environment."""
        names = BASE_VARIABLES + self.passthrough
        env = {name: os.environ[name] for name in names if name in os.environ}
        # One OpenFace process per core: OpenBLAS threads of its own would only fight over them.
        env.update(HOME=str(workdir), TMPDIR=str(workdir), OPENBLAS_NUM_THREADS="1")
        return env

    def open_to(self, folder: Path) -> None:
        """Let the sandbox user read and write ``folder`` (and what is made in it), through its group."""
        if self.ids is not None:
            os.chown(folder, -1, self.ids[1])
            folder.chmod(0o2770)  # setgid: new files keep the group


def _find(name: str) -> str | None:
    return _found(name, os.environ.get("PATH"))


@functools.cache
def _found(name: str, search_path: str | None) -> str | None:
    """Looked up once per PATH, not for every OpenFace process."""
    return shutil.which(name, path=search_path)


def _which(name: str) -> str:
    path = _find(name)
    if path is None:
        raise SandboxError(f"{name} is not on PATH")
    return path


def _output(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, env={"PATH": os.defpath})
    except OSError as exc:
        raise SandboxError(f"OPENFACE_SANDBOX: {argv[0]} could not run: {exc}") from None
    if done.returncode != 0:
        raise SandboxError(f"OPENFACE_SANDBOX: {' '.join(argv)} exited {done.returncode}: {done.stderr.strip()[:300]}")
    return done.stdout.strip()
