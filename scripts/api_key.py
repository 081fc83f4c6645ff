"""API keys for apikey auth: make one, and keep the local stack's as digests in a key file.

    python -m scripts.api_key alice

prints a new key (give it to alice) and its API_KEY_HASHES entry (put it in the stage's config,
SSM, or a line of the local stack's key file). Only the digest is ever stored.
"""
from __future__ import annotations

import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from chalicelib.auth import hash_api_key, parse_key_hashes

KEY_PREFIX = "bc_"
KEY_FILE_HEADER = """\
# API keys of the local stack (AUTH_MODE=apikey make run): one owner:sha256-hex per line.
# Only digests are kept, never the keys. For a new key, delete this file and restart (the old
# key stops working); for another owner, add the entry `python -m scripts.api_key NAME` prints.
"""


def new_api_key() -> str:
    """Return a new random key (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_entry(owner: str, key: str) -> str:
    """Return the API_KEY_HASHES entry for a key: owner:sha256-hex."""
    if not owner or ":" in owner or "," in owner:
        raise ValueError(f"an owner needs a name without ':' or ',', not {owner!r}")
    return f"{owner}:{hash_api_key(key)}"


@dataclass(frozen=True)
class LocalKeys:
    """The local stack's accepted keys as an API_KEY_HASHES value, and a key made just now."""

    hashes: str
    # Set only when this call made the key: it cannot be read back from the file later.
    new_key: str | None


def local_keys(path: Path | None, owner: str) -> LocalKeys:
    """Return the key digests kept at path; if it holds none, make a key for owner and keep its digest.

    With no path (a stack whose data is in memory only) the new key is kept nowhere. Raise
    ValueError naming the file and the entry if an entry is not owner:sha256-hex.
    """
    entries = _entries(path) if path is not None and path.exists() else []
    if entries:
        hashes = ",".join(entries)
        try:
            parse_key_hashes(hashes)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None
        return LocalKeys(hashes, None)
    key = new_api_key()
    entry = hash_entry(owner, key)
    if path is not None:
        _write_private(path, KEY_FILE_HEADER + entry + "\n")
    return LocalKeys(entry, key)


def _entries(path: Path) -> list[str]:
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _write_private(path: Path, text: str) -> None:
    """Write text to path, readable by its owner only, replacing it whole or not at all."""
    partial = path.with_name(path.name + ".tmp")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)


def main(argv: list[str]) -> int:
    key = new_api_key()
    try:
        [owner] = argv
        entry = hash_entry(owner, key)
    except ValueError:
        print("usage: python -m scripts.api_key OWNER   (no ':' or ',' in OWNER)", file=sys.stderr)
        return 2
    print(f"key (give to {owner}, shown once): {key}")
    print(f"API_KEY_HASHES entry: {entry}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
