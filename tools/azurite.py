"""The Azurite storage emulator, for local runs and tests only: started from node_modules
(bin/setup installs it), with its fixed development account. Nothing of this ships in the image.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXECUTABLE = ROOT / "node_modules" / ".bin" / "azurite"
# Azurite's fixed, public development account: a key for the emulator, never for Azure.
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def connection_string(blob_port: int, queue_port: int, table_port: int, host: str = "127.0.0.1") -> str:
    endpoint = f"http://{host}:{{}}/{ACCOUNT}"
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint={endpoint.format(blob_port)};QueueEndpoint={endpoint.format(queue_port)};"
        f"TableEndpoint={endpoint.format(table_port)};"
    )


def command(blob_port: int, queue_port: int, table_port: int, location: Path | None = None) -> list[str]:
    """Azurite on loopback; in memory unless ``location`` keeps its data."""
    storage = ["--location", str(location)] if location else ["--inMemoryPersistence"]
    # No telemetry: it is nobody else's business, and without a network it holds up every stop by ~15 s.
    return [
        str(EXECUTABLE),
        "--silent",
        "--skipApiVersionCheck",
        "--loose",
        "--disableTelemetry",
        *storage,
        "--blobHost",
        "127.0.0.1",
        "--queueHost",
        "127.0.0.1",
        "--tableHost",
        "127.0.0.1",
        "--blobPort",
        str(blob_port),
        "--queuePort",
        str(queue_port),
        "--tablePort",
        str(table_port),
    ]
