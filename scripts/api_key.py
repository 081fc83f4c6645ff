"""Make an API key for apikey auth: prints the key (give it to the user) and the
API_KEY_HASHES entry (put it in the stage's config or SSM). Only the hash is ever stored.

    python -m scripts.api_key alice
"""
from __future__ import annotations

import secrets
import sys

from chalicelib.auth import hash_api_key


def main(argv: list[str]) -> int:
    if len(argv) != 1 or ":" in argv[0] or "," in argv[0]:
        print("usage: python -m scripts.api_key OWNER   (no ':' or ',' in OWNER)", file=sys.stderr)
        return 2
    key = "bc_" + secrets.token_urlsafe(32)
    print(f"key (give to {argv[0]}, shown once): {key}")
    print(f"API_KEY_HASHES entry: {argv[0]}:{hash_api_key(key)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
