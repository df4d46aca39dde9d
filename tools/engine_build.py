"""Builds openface-engine (engine/) natively, against an OpenFace build on this machine: ``bin/build-engine``.

    bin/build-engine --openface /opt/openface               # an OpenFace installed with its CMake package
    bin/build-engine --include-dirs A:B:C:D --libraries a.a:b.a:c.a:d.a   # any other build of OpenFace
    bin/build-engine ... --install-into BIN_DIR              # put it next to OpenFace's executables

The build lands in ``.cache/engine/<key>/`` (the key hashes the sources and
what they are built against), so an unchanged engine is never built twice.
The images build it themselves (base-image/Dockerfile).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "engine"
CACHE = ROOT / ".cache" / "engine"
EXECUTABLE = "openface-engine"


class EngineBuildError(RuntimeError):
    """The engine cannot be built here; the message says why."""


def missing_tools() -> list[str]:
    return [tool for tool in ("cmake", "c++") if shutil.which(tool) is None]


def cmake_arguments(openface: Path | None, include_dirs: list[str], libraries: list[str]) -> list[str]:
    if include_dirs or libraries:
        return [f"-DOPENFACE_INCLUDE_DIRS={';'.join(include_dirs)}", f"-DOPENFACE_LIBRARIES={';'.join(libraries)}"]
    if openface is None:
        raise EngineBuildError("name OpenFace's install (--openface) or its build (--include-dirs, --libraries)")
    if not (openface / "lib" / "cmake" / "OpenFace").is_dir():
        raise EngineBuildError(f"{openface} has no lib/cmake/OpenFace: give --include-dirs and --libraries instead")
    return [f"-DCMAKE_PREFIX_PATH={openface}"]


def build(
    openface: Path | None = None, include_dirs: list[str] | None = None, libraries: list[str] | None = None
) -> Path:
    """The engine built against that OpenFace, built now unless the cache has it."""
    missing = missing_tools()
    if missing:
        raise EngineBuildError(f"no {', '.join(missing)} to build the engine with")
    arguments = cmake_arguments(openface, include_dirs or [], libraries or [])
    key = _key(arguments)
    folder = CACHE / key
    built = folder / "build" / EXECUTABLE
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # test processes build side by side: one builds, the others wait
        if built.is_file():
            return built
        log = folder / "build.log"
        with log.open("w") as out:
            for argv in (
                ["cmake", "-S", str(SOURCE), "-B", str(folder / "build"), "-DCMAKE_BUILD_TYPE=Release", *arguments],
                ["cmake", "--build", str(folder / "build"), "--parallel", str(os.cpu_count() or 1)],
            ):
                if subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                    tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
                    raise EngineBuildError(f"{' '.join(argv[:2])} failed (see {log}):\n{tail}")
    return built


def _key(arguments: list[str]) -> str:
    digest = hashlib.sha256("\0".join(arguments).encode())
    for path in sorted(SOURCE.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(SOURCE).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bin/build-engine", description=__doc__.split("\n\n")[0])
    parser.add_argument("--openface", type=Path, help="prefix of an OpenFace installed with its CMake package")
    parser.add_argument("--include-dirs", default="", help="its libraries' include/ folders, ':'-separated")
    parser.add_argument("--libraries", default="", help="its static libraries, ':'-separated")
    parser.add_argument("--install-into", type=Path, help="copy the engine into this folder (OPENFACE_BIN_DIR)")
    args = parser.parse_args(argv)
    try:
        built = build(
            args.openface,
            [d for d in args.include_dirs.split(":") if d],
            [lib for lib in args.libraries.split(":") if lib],
        )
    except EngineBuildError as exc:
        print(f"build-engine: {exc}", file=sys.stderr)
        return 1
    if args.install_into:
        shutil.copy2(built, args.install_into / EXECUTABLE)
        built = args.install_into / EXECUTABLE
    print(built)
    return 0


if __name__ == "__main__":
    sys.exit(main())
