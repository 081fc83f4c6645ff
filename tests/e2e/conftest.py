"""Fixtures that run the real `python -m scripts.local_stack` on free loopback ports."""
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
from typing import Callable, Iterator, Mapping

import pytest
import requests

from scripts.loopback import HOST, free_ports, new_http

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_SECONDS = 60.0
# The last line of the banner the stack prints once it is up (scripts/local_stack.py).
BANNER_END = "Ctrl-C stops everything."
# The stack gives its children 5 s after SIGTERM before SIGKILL; this leaves it room.
STOP_TIMEOUT_SECONDS = 20.0


@dataclass(frozen=True)
class ProcessIdentity:
    """A process as /proc shows it: its pid and start time, so a reused pid is not it."""

    pid: int
    start_time: str

    def is_alive(self) -> bool:
        """Return True if this very process still runs (a zombie has exited: not alive)."""
        stat = _read_stat(self.pid)
        return stat is not None and stat.start_time == self.start_time and stat.state != "Z"


@dataclass(frozen=True)
class _Stat:
    state: str
    ppid: int
    start_time: str


def _read_stat(pid: int) -> _Stat | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces or ")".
    fields = raw[raw.rindex(")") + 2:].split()
    return _Stat(state=fields[0], ppid=int(fields[1]), start_time=fields[19])


def process_tree(root: int) -> list[ProcessIdentity]:
    """Return root and all its descendants (by parent pid), read from /proc."""
    stats: dict[int, _Stat] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _read_stat(int(entry.name))) is not None:
            stats[int(entry.name)] = stat
    tree = [root] if root in stats else []
    for pid in tree:
        tree.extend(child for child, stat in stats.items() if stat.ppid == pid)
    return [ProcessIdentity(pid, stats[pid].start_time) for pid in tree]


@dataclass
class StackOutput:
    """Everything the stack printed, collected by a thread so its pipe never fills up."""

    lines: list[str] = field(default_factory=list)

    def follow(self, process: subprocess.Popen[bytes]) -> threading.Thread:
        def copy() -> None:
            assert process.stdout is not None
            for raw in process.stdout:
                self.lines.append(raw.decode("utf-8", errors="replace").rstrip("\n"))

        reader = threading.Thread(target=copy, name="stack-output", daemon=True)
        reader.start()
        return reader

    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass
class RunningStack:
    """A started local stack: its addresses, its process and what it printed."""

    api_url: str
    web_url: str
    ddb_url: str
    api_port: int
    process: subprocess.Popen[bytes]
    output: StackOutput
    _reader: threading.Thread
    # The stack and its children once it was up, for the leftovers check and cleanup.
    started_processes: list[ProcessIdentity] = field(default_factory=list)
    # A data directory made for this stack alone: removed once it has stopped.
    own_data_dir: Path | None = None

    def banner(self) -> str:
        """Return the stack's output up to its banner, which it prints just after health answers."""
        deadline = time.monotonic() + 10
        while BANNER_END not in (text := self.output.text()):
            assert time.monotonic() < deadline, f"no banner from the stack; output:\n{text}"
            time.sleep(0.05)
        return text

    def process_tree(self) -> list[ProcessIdentity]:
        """Return the stack's process and every process below it."""
        return process_tree(self.process.pid)

    def leftovers(self) -> list[ProcessIdentity]:
        """Return the processes of the started stack that still run."""
        return [process for process in self.started_processes if process.is_alive()]

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Send signum to the stack and return its exit status; fail if it does not exit."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(
                f"the local stack did not exit within {STOP_TIMEOUT_SECONDS:.0f} s of "
                f"{signal.Signals(signum).name}; output:\n{self.output.text()}"
            )
        self._reader.join(timeout=5.0)
        self._remove_own_data()
        return code

    def _remove_own_data(self) -> None:
        if self.own_data_dir is not None and not self.leftovers():
            shutil.rmtree(self.own_data_dir, ignore_errors=True)
            self.own_data_dir = None

    def kill(self) -> None:
        """SIGKILL the stack and every process of it still running (cleanup after a failure)."""
        known = {p.pid: p for p in [*self.started_processes, *self.process_tree()]}
        for process in known.values():
            if process.is_alive():
                try:
                    os.kill(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.process.wait()
        self._remove_own_data()


def start_stack(extra_env: Mapping[str, str] | None = None,
                ports: tuple[int, int, int] | None = None) -> RunningStack:
    """Start `python -m scripts.local_stack`; return once /api/health is 200.

    `extra_env` goes over the environment (AUTH_MODE=apikey, a BACKCHAT_DATA_DIR to restart
    on ...); `ports` (api, web, dynamodb) restarts a stack where a page still points, else free ports.
    """
    api_port, web_port, ddb_port = ports or free_ports(3)
    env = {
        **os.environ,
        "API_PORT": str(api_port),
        "WEB_PORT": str(web_port),
        "DDB_PORT": str(ddb_port),
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }
    # Each test stack keeps its data apart from the developer's .local/ (and from each other),
    # unless a test chose a directory to restart a stack on.
    own_data_dir = None
    if "BACKCHAT_DATA_DIR" not in env:
        own_data_dir = Path(tempfile.mkdtemp(prefix="backchat-e2e-"))
        env["BACKCHAT_DATA_DIR"] = str(own_data_dir)
    process = subprocess.Popen(
        [sys.executable, "-m", "scripts.local_stack"],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        # Its own group: a Ctrl-C on pytest does not also reach the stack mid-teardown.
        start_new_session=True,
    )
    output = StackOutput()
    stack = RunningStack(
        api_url=f"http://{HOST}:{api_port}",
        web_url=f"http://{HOST}:{web_port}",
        ddb_url=f"http://{HOST}:{ddb_port}",
        api_port=api_port,
        process=process,
        output=output,
        _reader=output.follow(process),
        own_data_dir=own_data_dir,
    )
    try:
        _wait_for_health(stack)
    except BaseException:
        stack.kill()
        raise
    stack.started_processes = stack.process_tree()
    return stack


def _wait_for_health(stack: RunningStack) -> None:
    health = f"{stack.api_url}/api/health"
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    with new_http() as http:
        while True:
            if stack.process.poll() is not None:
                stack._reader.join(timeout=5.0)
                pytest.fail(
                    f"the local stack exited with {stack.process.returncode} before "
                    f"{health} answered; output:\n{stack.output.text()}"
                )
            try:
                if http.get(health, timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{health} did not answer 200 within {STARTUP_TIMEOUT_SECONDS:.0f} s; "
                    f"the stack's output:\n{stack.output.text()}"
                )
            time.sleep(0.2)


def stop_cleanly(stack: RunningStack) -> None:
    """SIGTERM the stack; fail unless it exits 0 and leaves no process behind."""
    code = stack.stop(signal.SIGTERM)
    leftovers = stack.leftovers()
    if leftovers:
        stack.kill()
    assert code == 0, f"the local stack exited with {code}; output:\n{stack.output.text()}"
    assert leftovers == [], f"still running after the stack stopped: {leftovers}"


@pytest.fixture(scope="session")
def local_stack() -> Iterator[RunningStack]:
    """The real local stack, shared by the session; it must stop cleanly on SIGTERM."""
    stack = start_stack()
    yield stack
    stop_cleanly(stack)


@pytest.fixture
def launch_stack() -> Iterator[Callable[..., RunningStack]]:
    """Start extra stacks (start_stack's arguments) that are killed after the test if still up."""
    started: list[RunningStack] = []

    def launch(extra_env: Mapping[str, str] | None = None,
               ports: tuple[int, int, int] | None = None) -> RunningStack:
        stack = start_stack(extra_env, ports)
        started.append(stack)
        return stack

    yield launch
    for stack in started:
        if stack.process.poll() is None or stack.leftovers():
            stack.kill()


@pytest.fixture
def http() -> Iterator[requests.Session]:
    """A requests session for the stack's loopback addresses."""
    with new_http() as session:
        yield session
