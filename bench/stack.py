"""Start and stop the real local stack (`python -m scripts.local_stack`) for a benchmark.

As tests/e2e/conftest.py does: free loopback ports, the stack in its own process group,
its output collected by a thread, /api/health polled until it answers. Extra environment
variables (FLUSH_MODE, ...) reach the app: the stack passes its environment
through to `chalice local`, except for what .chalice/config.json sets for every stage.
Each stack keeps its DynamoDB data in a temporary directory, removed when it stops.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import requests

from scripts.loopback import HOST, free_ports, new_http

REPO_ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 20.0
# A bench stack's environment: a running cap above any phase's load.
STACK_ENV = {"MAX_RUNNING_PER_OWNER": "100000"}
# Often enough that the start-up time measured is not rounded up by much.
HEALTH_POLL_SECONDS = 0.05


class StackFailed(Exception):
    """The local stack did not come up, or did not stop."""


@dataclass
class Stack:
    """A running local stack: its addresses and process."""

    name: str
    api_url: str
    ddb_url: str
    process: subprocess.Popen[bytes]
    data_dir: str
    lines: list[str] = field(default_factory=list)
    started_seconds: float = 0.0

    def output(self) -> str:
        return "\n".join(self.lines[-40:])

    def stop(self) -> None:
        """SIGTERM the stack (it stops its children) and wait; SIGKILL its group if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise StackFailed(f"the {self.name} stack did not stop on SIGTERM") from None
        finally:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def start_stack(name: str, extra_env: Mapping[str, str] | None = None,
                data_dir: str | None = None) -> Stack:
    """Start `python -m scripts.local_stack` on free ports; return once /api/health is 200.

    The stack keeps its data in data_dir (a prepared directory, removed when the stack stops)
    or else in an empty temporary one; `Stack.started_seconds` is how long health took.
    """
    api_port, web_port, ddb_port = free_ports(3)
    # A data directory of its own: the bench leaves `make run`'s data alone.
    data_dir = data_dir or tempfile.mkdtemp(prefix=f"backchat-bench-{name}-")
    env = {
        **os.environ,
        **(extra_env or {}),
        "API_PORT": str(api_port),
        "WEB_PORT": str(web_port),
        "DDB_PORT": str(ddb_port),
        "BACKCHAT_DATA_DIR": data_dir,
        "PYTHONUNBUFFERED": "1",
    }
    began = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "scripts.local_stack"],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    stack = Stack(name, f"http://{HOST}:{api_port}", f"http://{HOST}:{ddb_port}", process,
                  data_dir)

    def copy_output() -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            stack.lines.append(raw.decode("utf-8", errors="replace").rstrip("\n"))

    threading.Thread(target=copy_output, name=f"{name}-output", daemon=True).start()
    try:
        _wait_for_health(stack)
    except BaseException:
        stack.stop()
        raise
    stack.started_seconds = time.monotonic() - began
    return stack


def _wait_for_health(stack: Stack) -> None:
    health = f"{stack.api_url}/api/health"
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    with new_http() as http:
        while True:
            if stack.process.poll() is not None:
                raise StackFailed(f"the {stack.name} stack exited with "
                                  f"{stack.process.returncode}:\n{stack.output()}")
            try:
                if http.get(health, timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise StackFailed(f"{health} did not answer within "
                                  f"{STARTUP_TIMEOUT_SECONDS:.0f} s:\n{stack.output()}")
            time.sleep(HEALTH_POLL_SECONDS)
