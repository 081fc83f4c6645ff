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
    """Run chalice's command line with the larger backlog and TCP_NODELAY."""
    local.ThreadedHTTPServer.request_queue_size = LISTEN_BACKLOG
    # The handler sends a response's headers and body in two writes; with Nagle's algorithm
    # the body waits for the client's delayed ACK, about 40 ms on every keep-alive request
    # (GET /api/health: 58 ms with keep-alive, 16 ms with a new connection; see bench/).
    local.ChaliceRequestHandler.disable_nagle_algorithm = True
    return chalice_main()


if __name__ == "__main__":
    sys.exit(main())
