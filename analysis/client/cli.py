"""The command-line client: ``bin/analyse`` (``python -m analysis.client.cli``).

    bin/analyse submit FILE... [--container NAME] [--wild] [--media image|video] [--faces multi] [--outputs LIST]
    bin/analyse wait JOB_ID [--timeout SECONDS]
    bin/analyse download CONTAINER DIR
    bin/analyse analyse FILE... [--wild] [--media image|video] [--faces multi] [--outputs LIST] [--download DIR]

Settings come from the environment, named as the function app names them:
``SERVICE_URL``, ``SERVICE_API_KEY``, and the storage as a connection string
(``MediaStorage`` or ``AZURE_STORAGE_CONNECTION_STRING``) or an account URL
(``AZURE_STORAGE_ACCOUNT_URL``, signed in with ``DefaultAzureCredential``).
With none of them set it talks to the local pipeline of ``bin/local-run``:
the service on ``PORT`` (8000), and the key and storage connection it keeps
in ``.local-run/api-key`` and ``.local-run/connection-string``.

Exit codes: 0 every job done and no media failed; 1 a job or a media failed;
2 the request could not be made (a missing file, a setting, no service, a
wrong key), always said in one line.
"""

from __future__ import annotations

import argparse
import mimetypes
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from azure.core.exceptions import AzureError
from azure.storage.blob import BlobServiceClient
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from analysis.client.service import FINAL_STATES, ClientError, ServiceClient, download_results, upload
from analysis.names import InvalidName, parse_container_name
from analysis.storage import environment_options
from media_rules import SNIFF_BYTES, Media, judge

LOCAL_STATE = Path(__file__).resolve().parent.parent / ".local-run"
POLL_SECONDS = 0.5


class ClientSettings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", populate_by_name=True)

    service_url: str | None = None
    service_api_key: str | None = None
    media_storage: str | None = Field(None, validation_alias="MediaStorage")
    azure_storage_connection_string: str | None = None
    azure_storage_account_url: str | None = None
    # Where bin/local-run puts things, for a client with no settings.
    port: int = 8000
    local_run_dir: Path = LOCAL_STATE

    def service(self) -> ServiceClient:
        url = self.service_url or f"http://127.0.0.1:{self.port}"
        key = self.service_api_key or _read(self.local_run_dir / "api-key")
        if not key:
            raise ClientError(
                f"no API key: set SERVICE_API_KEY (or start bin/local-run, which keeps one in "
                f"{self.local_run_dir / 'api-key'})"
            )
        return ServiceClient(url, key)

    def storage(self) -> BlobServiceClient:
        connection = (
            self.media_storage
            or self.azure_storage_connection_string
            or _read(self.local_run_dir / "connection-string")
        )
        options = environment_options()
        if connection:
            return BlobServiceClient.from_connection_string(connection, **options)
        if self.azure_storage_account_url:
            from azure.identity import DefaultAzureCredential

            return BlobServiceClient(self.azure_storage_account_url, credential=DefaultAzureCredential(), **options)
        raise ClientError(
            "no storage: set AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_URL (or start "
            f"bin/local-run, which keeps its connection in {self.local_run_dir / 'connection-string'})"
        )


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


# -- the steps, also used by bin/local-run -----------------------------------


def media_of(files: list[Path]) -> Media:
    """The one media kind of the files, judged by their content as the service judges it."""
    kinds = {}
    for path in files:
        with path.open("rb") as handle:
            verdict = judge(path.name, mimetypes.guess_type(path.name)[0], handle.read(SNIFF_BYTES))
        if verdict.kind is None:
            raise ClientError(f"{path} is neither an image nor a video")
        kinds[verdict.kind] = path
    if len(kinds) > 1:
        raise ClientError("the files are images and videos: pass --media, or submit them separately")
    return next(iter(kinds))


def upload_files(
    blobs: BlobServiceClient, files: list[Path], container: str, wild: bool, options: dict[str, str] | None = None
) -> None:
    """Upload the files into the container (made if missing), with the metadata the trigger reads options from."""
    client = blobs.get_container_client(container)
    if not client.exists():
        client.create_container()
    for path in files:
        upload(blobs, path, container, {"media_type": "iw" if wild else "ip", **(options or {})})


def follow(
    service: ServiceClient, job_id: str, timeout: float, console: Console, check: Callable[[], None] = lambda: None
) -> dict:
    """The job once it is done, showing its states meanwhile: a live line on a terminal, a line per change elsewhere.

    ``check`` runs at every look (bin/local-run stops there if one of its processes died).
    """
    deadline = time.monotonic() + timeout
    job = service.job(job_id)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as progress:
        task = progress.add_task(_state(job), total=None)
        shown = None
        while True:
            state = _state(job)
            progress.update(task, description=state, **_bar(job))
            if state != shown and not console.is_terminal:
                console.print(state)
            shown = state
            if job["status"] in FINAL_STATES:
                return job
            if time.monotonic() > deadline:
                raise ClientError(f"job {job_id} is still {job['status']} after {timeout:g} s; wait again later")
            check()
            time.sleep(POLL_SECONDS)
            job = service.job(job_id)


def _state(job: dict) -> str:
    attempt = f", attempt {job['attempts']}" if job["status"] == "running" and job.get("attempts") else ""
    retry = f" ({job['error']})" if job["status"] == "queued" and job.get("error") else ""
    return f"job {job['job_id']}: {job['status']}{attempt}{retry}{_progress(job.get('progress'))}"


def _bar(job: dict) -> dict:
    """The bar's share: media done plus each running video's percent; a pulse until the worker says."""
    progress = job.get("progress")
    if job["status"] in FINAL_STATES:
        return {"total": 1, "completed": 1}
    if not progress or not progress["media_total"]:
        return {"total": None}
    running = sum(percent / 100 for percent in progress["percent"].values() if percent < 100)
    return {"total": progress["media_total"], "completed": progress["media_done"] + running}


def _progress(progress: dict | None) -> str:
    """``, 1/3 media done, clip.mp4 40%``: what the worker last wrote while the job runs."""
    if not progress:
        return ""
    videos = "".join(f", {name} {percent}%" for name, percent in progress["percent"].items() if percent < 100)
    return f", {progress['media_done']}/{progress['media_total']} media done{videos}"


def report(job: dict, console: Console) -> bool:
    """Print each media's outcome; True when the job and all its media came through."""
    table = Table(title=f"job {job['job_id']} {job['status']}" + (f": {job['error']}" if job.get("error") else ""))
    for column in ("blob", "status", "reason"):
        table.add_column(column)
    failed = job["status"] == "failed"
    for result in job.get("results") or []:
        failed |= result["status"] == "failed"
        table.add_row(result["blob"], result["status"], result.get("reason") or "")
    console.print(table)
    return not failed


# -- the commands --------------------------------------------------------------


def submit(args: argparse.Namespace, settings: ClientSettings, out: Console) -> tuple[str, str]:
    missing = [str(path) for path in args.files if not path.is_file()]
    if missing:
        raise ClientError(f"no such file: {', '.join(missing)}")
    media = Media(args.media) if args.media else media_of(args.files)
    container = parse_container_name(args.container) if args.container else str(uuid.uuid4())
    service = settings.service()
    options = {name: value for name, value in (("faces", args.faces), ("outputs", args.outputs)) if value}
    upload_files(settings.storage(), args.files, container, args.wild, options)
    job = service.analyse(media.value, "iw" if args.wild else "ip", container, options)
    out.print(f"container {container}: job {job['job_id']} {job['status']}", highlight=False)
    return container, job["job_id"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bin/analyse", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("submit", "analyse"):
        command = commands.add_parser(
            name,
            help="upload files to a new container and analyse them"
            + (", then wait and download the results" if name == "analyse" else ""),
        )
        command.add_argument("files", nargs="+", type=Path, metavar="FILE")
        command.add_argument("--container", help="upload into this container (default: a new UUID one)")
        command.add_argument("--wild", action="store_true", help="in-the-wild capture (OpenFace's -wild)")
        command.add_argument("--media", choices=[m.value for m in Media], help="default: judged from the files")
        command.add_argument(
            "--faces", choices=["single", "multi"], help="multi: follow every face of a video (default: single)"
        )
        command.add_argument(
            "--outputs", metavar="LIST", help="OpenFace outputs besides the CSV: a comma list of aligned, hog, tracked"
        )
        if name == "analyse":
            command.add_argument(
                "--download",
                type=Path,
                metavar="DIR",
                help="where the results go (default: a folder named after the container)",
            )
            command.add_argument("--timeout", type=float, default=3600)
    wait = commands.add_parser("wait", help="follow a job until it is done and show each media's outcome")
    wait.add_argument("job_id")
    wait.add_argument("--timeout", type=float, default=3600, help="seconds (default 3600)")
    download = commands.add_parser("download", help="copy a container's processed/ into a folder")
    download.add_argument("container")
    download.add_argument("dest", type=Path, metavar="DIR")
    args = parser.parse_args(argv)

    out, err = Console(highlight=False, soft_wrap=True), Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        settings = ClientSettings()
        return run(args, settings, out, err)
    except (ClientError, InvalidName) as error:
        err.print(f"analyse: {error}", markup=False)
        return 2
    except AzureError as error:
        first = (str(error).strip().splitlines() or [""])[0]
        err.print(f"analyse: storage: {type(error).__name__}: {first}", markup=False)
        return 2
    except KeyboardInterrupt:
        return 130


def run(args: argparse.Namespace, settings: ClientSettings, out: Console, err: Console) -> int:
    if args.command == "download":
        files = download_results(settings.storage(), parse_container_name(args.container), args.dest)
        out.print(f"{len(files)} file(s) in {args.dest}")
        return 0
    if args.command == "wait":
        job = follow(settings.service(), args.job_id, args.timeout, err)
        return 0 if report(job, out) else 1
    container, job_id = submit(args, settings, out)
    if args.command == "submit":
        return 0
    job = follow(settings.service(), job_id, args.timeout, err)
    ok = report(job, out)
    dest = args.download or Path(container)
    files = download_results(settings.storage(), container, dest)
    out.print(f"{len(files)} file(s) in {dest}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
