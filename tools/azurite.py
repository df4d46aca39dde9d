"""Starting the Azurite storage emulator from node_modules (bin/setup installs it).

Its development account lives with the client (analysis/client.py), which also talks to it.
"""

from __future__ import annotations

from pathlib import Path

from analysis.client import AZURITE_ACCOUNT as ACCOUNT
from analysis.client import azurite_connection_string as connection_string

__all__ = ["ACCOUNT", "EXECUTABLE", "ROOT", "command", "connection_string"]

ROOT = Path(__file__).resolve().parent.parent
EXECUTABLE = ROOT / "node_modules" / ".bin" / "azurite"


def command(blob_port: int, queue_port: int, table_port: int, location: Path | None = None) -> list[str]:
    """Azurite on loopback; in memory unless ``location`` keeps its data."""
    storage = ["--location", str(location)] if location else ["--inMemoryPersistence"]
    # No telemetry: it is nobody else's business, and without a network it holds up every stop by ~15 s.
    return [str(EXECUTABLE), "--silent", "--skipApiVersionCheck", "--loose", "--disableTelemetry", *storage,
            "--blobHost", "127.0.0.1", "--queueHost", "127.0.0.1", "--tableHost", "127.0.0.1",
            "--blobPort", str(blob_port), "--queuePort", str(queue_port), "--tablePort", str(table_port)]
