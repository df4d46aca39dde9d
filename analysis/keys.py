"""API keys: how ``API_KEYS`` is read, how strong a key must be, and how logs name a key.

No Flask here: settings (every process) read keys through this module, and the
web's ``auth`` compares them.
"""

from __future__ import annotations

import hashlib

# 32 characters of a random key (``openssl rand -hex 24`` gives 48) are beyond guessing.
MIN_API_KEY_LENGTH = 32
FINGERPRINT_LENGTH = 8


def parse_api_keys(text: str) -> list[str]:
    """``API_KEYS``: comma-separated keys; ValueError names the first one that is too short."""
    keys = [key.strip() for key in text.split(",") if key.strip()]
    for number, key in enumerate(keys, 1):
        if len(key) < MIN_API_KEY_LENGTH:
            raise ValueError(
                f"key {number} has {len(key)} characters; every key needs at least "
                f"{MIN_API_KEY_LENGTH} (make one with: openssl rand -hex 24)"
            )
    return keys


def fingerprint(key: str) -> str:
    """A short, one-way name for a key, for logs: ``printf %s "$KEY" | sha256sum | cut -c1-8`` gives the same."""
    return hashlib.sha256(key.encode()).hexdigest()[:FINGERPRINT_LENGTH]
