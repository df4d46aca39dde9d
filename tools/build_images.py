"""Builds the base image and the service image: ``bin/build-images``.

With docker when it has an engine, otherwise with buildah (daemonless; as
root it needs no setup). Prints each image's build time, size and ID.

    bin/build-images                                  # the real images: compiles OpenFace (tens of minutes)
    bin/build-images --offline --openface-stage=standin   # no registry: Debian made here, the test stand-in
    bin/build-images --tag 1.4.0 --registry myacr.azurecr.io --push
    bin/build-images --build-arg OPENFACE_MODELS_URL=https://mirror/{name}

``--offline`` never pulls: when the Debian image the Dockerfiles start from
is missing, it is made from Debian's packages with mmdebstrap and tagged
under the same name. The stand-in stage (``--openface-stage=standin``) puts
the test stand-in where OpenFace would be, so everything after OpenFace's
compile builds and runs where its sources and models cannot be fetched.
Those images are tagged apart (``...-standin``): they do no vision.

Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE_DOCKERFILE = ROOT / "base-image" / "Dockerfile"
SERVICE_DOCKERFILE = ROOT / "Dockerfile"
STAGES = {"build": "openface-build", "standin": "openface-standin"}
OPENFACE_VERSION = "2.2.0"
# Debian's mirrors, for an image made offline.
DEBIAN_MIRROR = "http://deb.debian.org/debian"


class BuildError(RuntimeError):
    """The build cannot go on; the message says why."""


def default_debian_image() -> str:
    match = re.search(r"^ARG DEBIAN_IMAGE=(\S+)", BASE_DOCKERFILE.read_text(), re.MULTILINE)
    assert match, "base-image/Dockerfile declares ARG DEBIAN_IMAGE"
    return match.group(1)


def full_name(image: str) -> str:
    """``debian:bookworm-slim`` as registries and buildah name it: ``docker.io/library/debian:bookworm-slim``."""
    first = image.split("/", 1)[0]
    if "/" not in image:
        return f"docker.io/library/{image}"
    if "." not in first and ":" not in first and first != "localhost":
        return f"docker.io/{image}"
    return image


class Builder:
    """The commands of one image builder; ``docker`` and ``buildah`` differ only in their flags."""

    def __init__(self, tool: str, offline: bool, no_cache: bool):
        self.tool = tool
        self.offline = offline
        self.no_cache = no_cache

    @classmethod
    def find(cls, wanted: str, offline: bool, no_cache: bool) -> Builder:
        if wanted in ("auto", "docker") and shutil.which("docker"):
            if subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
                return cls("docker", offline, no_cache)
            if wanted == "docker":
                raise BuildError("docker has no engine to talk to (docker info fails)")
        if wanted in ("auto", "buildah") and shutil.which("buildah"):
            return cls("buildah", offline, no_cache)
        raise BuildError("neither a docker engine nor buildah is here (Debian: apt-get install buildah)")

    def has_image(self, ref: str) -> bool:
        argv = (
            [self.tool, "image", "inspect", ref]
            if self.tool == "docker"
            else [self.tool, "inspect", "--type", "image", ref]
        )
        return subprocess.run(argv, capture_output=True).returncode == 0

    def build(
        self,
        dockerfile: Path,
        tag: str,
        args: dict[str, str],
        secrets: dict[str, Path],
        ignore_file: Path | None = None,
    ) -> None:
        argv = [self.tool, "build", "-f", str(dockerfile), "-t", tag]
        if self.tool == "buildah":
            # chroot isolation works without namespaces; the docker format keeps HEALTHCHECK and SHELL.
            argv += [
                "--isolation",
                "chroot",
                "--format",
                "docker",
                "--layers",
                "--force-rm",
                "--pull=never" if self.offline else "--pull=false",
            ]
            if ignore_file is not None:
                argv += ["--ignorefile", str(ignore_file)]
        elif self.offline:
            argv += ["--pull=false"]
        if self.no_cache:
            argv += ["--no-cache"]
        for name, value in args.items():
            argv += ["--build-arg", f"{name}={value}"]
        for name, path in secrets.items():
            argv += ["--secret", f"id={name},src={path}"]
        env = {**os.environ, "DOCKER_BUILDKIT": "1"}
        if subprocess.run([*argv, str(ROOT)], env=env).returncode != 0:
            raise BuildError(f"building {tag} failed (its output is above)")

    def size_and_id(self, ref: str) -> tuple[str, str]:
        """The image's size as the tool reports it, and its ID."""
        if self.tool == "docker":
            size, image_id = _output(["docker", "image", "inspect", "--format", "{{.Size}} {{.Id}}", ref]).split()
            return f"{int(size) / 1e6:.0f} MB", image_id
        (image,) = json.loads(_output(["buildah", "images", "--json", "--no-trunc", ref]))
        return image["size"], image["id"]

    def push(self, ref: str) -> None:
        if subprocess.run([self.tool, "push", ref]).returncode != 0:
            raise BuildError(f"pushing {ref} failed")

    def import_rootfs(self, tarball: Path, ref: str) -> None:
        if self.tool == "docker":
            if subprocess.run(["docker", "import", "--change", 'CMD ["bash"]', str(tarball), ref]).returncode:
                raise BuildError(f"docker import of {tarball} failed")
            return
        with tempfile.TemporaryDirectory() as context:
            shutil.copy(tarball, Path(context) / "rootfs.tar")
            (Path(context) / "Containerfile").write_text('FROM scratch\nADD rootfs.tar /\nCMD ["bash"]\n')
            done = subprocess.run(
                [
                    "buildah",
                    "build",
                    "--isolation",
                    "chroot",
                    "--format",
                    "docker",
                    "-t",
                    ref,
                    "-f",
                    str(Path(context) / "Containerfile"),
                    context,
                ]
            )
            if done.returncode != 0:
                raise BuildError(f"importing {tarball} failed")


def make_debian(builder: Builder, image: str) -> None:
    """``debian:<release>-slim`` made from Debian's packages, as slim as Debian's own images."""
    match = re.fullmatch(r"(?:docker\.io/)?(?:library/)?debian:([a-z]+)(-slim)?", image)
    if match is None:
        raise BuildError(f"{image} is not present, and only debian:<release>[-slim] can be made offline")
    release = match.group(1)
    if shutil.which("mmdebstrap") is None:
        raise BuildError(
            f"{image} is not present and cannot be pulled offline; install mmdebstrap "
            "(Debian: apt-get install mmdebstrap) to make it from Debian's packages"
        )
    print(f"build-images: making {image} from Debian's packages (mmdebstrap)", flush=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as work:
        tarball = Path(work) / "rootfs.tar"
        excluded = ["/usr/share/man/*", "/usr/share/doc/*", "/usr/share/locale/*", "/usr/share/info/*"]
        argv = [
            "mmdebstrap",
            "--variant=minbase",
            "--quiet",
            '--aptopt=Acquire::Languages "none"',
            *(f"--dpkgopt=path-exclude={path}" for path in excluded),
            "--dpkgopt=path-include=/usr/share/doc/*/copyright",
            # As Debian's slim images: no package lists left behind.
            '--customize-hook=rm -rf "$1"/var/lib/apt/lists/*',
            release,
            str(tarball),
            f"deb {DEBIAN_MIRROR} {release} main",
            f"deb {DEBIAN_MIRROR} {release}-updates main",
            f"deb {DEBIAN_MIRROR}-security {release}-security main",
        ]
        if subprocess.run(argv).returncode != 0:
            raise BuildError("mmdebstrap failed (its output is above)")
        builder.import_rootfs(tarball, full_name(image))
    print(f"build-images: {image} made in {time.monotonic() - started:.0f} s", flush=True)


def ca_bundle(given: str | None) -> Path | None:
    """The CA bundle pip inside the build needs behind a proxy that re-signs TLS: given, or the environment's."""
    for candidate in (
        given,
        os.environ.get("PIP_CERT"),
        os.environ.get("REQUESTS_CA_BUNDLE"),
        os.environ.get("SSL_CERT_FILE"),
    ):
        if candidate:
            path = Path(candidate)
            if not path.is_file():
                raise BuildError(f"the CA bundle {path} does not exist")
            return path
    return None


def _output(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bin/build-images", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--openface-stage",
        choices=sorted(STAGES),
        default="build",
        help="build: compile OpenFace from upstream (default); standin: the test stand-in",
    )
    parser.add_argument(
        "--offline",
        action="store_true",
        help="never pull; make the Debian base image from Debian's packages when it is missing",
    )
    parser.add_argument("--tag", default=None, help="the service image's tag (default: latest, or standin)")
    parser.add_argument("--registry", default="", help="prefix of both image names, e.g. myacr.azurecr.io")
    parser.add_argument("--push", action="store_true", help="push both images after building them")
    parser.add_argument(
        "--build-arg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="passed to both builds (e.g. DEBIAN_IMAGE, OPENFACE_MODELS_URL, BUILD_JOBS)",
    )
    parser.add_argument(
        "--ca-bundle",
        default=None,
        help="CA bundle for pip in the build (default: PIP_CERT, REQUESTS_CA_BUNDLE or SSL_CERT_FILE when set)",
    )
    parser.add_argument("--builder", choices=("auto", "docker", "buildah"), default="auto")
    parser.add_argument("--no-cache", action="store_true", help="rebuild every step")
    parser.add_argument("--base-only", action="store_true", help="build the base image only")
    args = parser.parse_args(argv)
    try:
        build_args = dict(item.split("=", 1) for item in args.build_arg)
    except ValueError:
        print("build-images: --build-arg takes NAME=VALUE", file=sys.stderr)
        return 2
    standin = args.openface_stage == "standin"
    prefix = f"{args.registry.rstrip('/')}/" if args.registry else ""
    base = f"{prefix}openface-base:{OPENFACE_VERSION}{'-standin' if standin else ''}"
    service = f"{prefix}openface-blob-service:{args.tag or ('standin' if standin else 'latest')}"
    try:
        builder = Builder.find(args.builder, args.offline, args.no_cache)
        debian = build_args.get("DEBIAN_IMAGE", default_debian_image())
        if args.offline and not builder.has_image(full_name(debian)):
            make_debian(builder, debian)
        secrets = {"ca": path} if (path := ca_bundle(args.ca_bundle)) else {}
        built = []
        steps = [
            (
                BASE_DOCKERFILE,
                base,
                {**build_args, "OPENFACE_STAGE": STAGES[args.openface_stage]},
                ROOT / "base-image" / "Dockerfile.dockerignore",
            )
        ]
        if not args.base_only:
            steps.append((SERVICE_DOCKERFILE, service, {**build_args, "BASE_IMAGE": base}, None))
        for dockerfile, ref, image_args, ignore in steps:
            print(f"build-images: building {ref} with {builder.tool}", flush=True)
            started = time.monotonic()
            builder.build(dockerfile, ref, image_args, secrets, ignore)
            built.append((ref, time.monotonic() - started))
        for ref, seconds in built:
            size, image_id = builder.size_and_id(ref)
            print(f"build-images: {ref}: built in {seconds:.0f} s, {size}, image {image_id.split(':')[-1][:12]}")
            if args.push:
                builder.push(ref)
                print(f"build-images: pushed {ref}")
    except BuildError as exc:
        print(f"build-images: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
