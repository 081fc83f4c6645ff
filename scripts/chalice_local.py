"""`chalice local` with a listen backlog that takes a burst of new connections.

chalice's ThreadedHTTPServer keeps socketserver's backlog of 5: two dozen clients connecting
at once overflow it, and some of them get "connection reset by peer" (seen with 24 sessions
started together). Takes the arguments of the `chalice` command:
`python -m scripts.chalice_local local --stage local --port 8000`.
"""
from __future__ import annotations

import sys

from chalice import local
from chalice.cli import main as chalice_main

LISTEN_BACKLOG = 128


def main() -> int:
    """Run chalice's command line with the larger backlog."""
    local.ThreadedHTTPServer.request_queue_size = LISTEN_BACKLOG
    return chalice_main()


if __name__ == "__main__":
    sys.exit(main())
