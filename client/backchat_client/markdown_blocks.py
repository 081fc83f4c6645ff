"""Split streamed markdown where a block is surely complete, so each block is rendered once."""
from __future__ import annotations

import re

_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")


def split_complete(text: str) -> tuple[str, str]:
    """Return (complete, rest): `complete` ends where the last finished block does.

    A block is finished once a blank line outside a code fence is followed by a line that
    starts at the margin: nothing after that can change how the text before it renders. An
    indented line after a blank one may still continue a list item, so it does not split.
    """
    cut = 0
    position = 0
    fence: str | None = None
    after_blank = False
    for line in text.splitlines(keepends=True):
        if after_blank and not line[:1].isspace():
            cut = position
        marker = _FENCE.match(line)
        if fence is None and marker:
            fence = marker.group(1)
        elif (fence is not None and marker and line.strip() == marker.group(1)
              and marker.group(1)[0] == fence[0] and len(marker.group(1)) >= len(fence)):
            fence = None
        after_blank = fence is None and not line.strip()
        position += len(line)
    return text[:cut], text[cut:]
