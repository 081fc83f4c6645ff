"""Who is calling: the owner id every session read and write is checked against."""
from __future__ import annotations

from typing import Mapping

from chalicelib.settings import Settings


def owner_of_request(headers: Mapping[str, str], settings: Settings) -> str:
    """Return the caller's owner id; with auth mode `none` everyone is the one local owner."""
    return settings.local_owner
