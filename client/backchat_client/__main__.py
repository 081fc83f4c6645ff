"""`python -m backchat_client` is the `backchat` command."""
from __future__ import annotations

import sys

from backchat_client.cli import main

sys.exit(main())
