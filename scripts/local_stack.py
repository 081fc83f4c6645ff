"""Run backchat on this machine (`make run`): moto DynamoDB, `chalice local` and the page.

Run from the repository root as `python -m scripts.local_stack`. Ports come from API_PORT
(default 8000), WEB_PORT (8080) and DDB_PORT (8001); everything listens on 127.0.0.1 only.
Ctrl-C or SIGTERM stops every process the stack started and exits 0; if one of them dies on
its own, the others are stopped and the exit status is 1.

AUTH_MODE (none, apikey or cognito) chooses who may call; scripts/local_auth.py sets it up
(with apikey and no API_KEY_HASHES, a key for the local owner is made and printed once).

The moto server (scripts/embedded_dynamodb.py) keeps its data in BACKCHAT_DATA_DIR (default
.local/dynamodb/ in the repository, ignored by git): every write is journaled before it is
acknowledged, so sessions and events survive a restart, even after `kill -9`. The runs a
previous stack left `running` died with its API process: before the new API starts, their
leases are expired and the reaper ends them as `error`.
"""
from __future__ import annotations

import collections
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Callable, Iterable, Mapping, TextIO

from chalice.cli.factory import CLIFactory
from pynamodb.exceptions import PynamoDBException

from chalicelib import clock
from chalicelib.dynamo import CONDITION_FAILED
from chalicelib.errors import StoreUnavailable
from chalicelib.models import LEASE_SHARDS
from chalicelib.reaper import Reaper
from chalicelib.records import RUNNING
from chalicelib.service import new_id
from chalicelib.settings import Settings, SettingsError
from chalicelib.store import SessionStore
from scripts.dynamodb_journal import lock_holder
from scripts.local_auth import AuthSetupError, LocalAuth, local_auth, page_base
from scripts.migrate_local import migrate
from scripts.static_site import StaticSite

REPO_ROOT = Path(__file__).resolve().parent.parent
FRONTEND_DIR = REPO_ROOT / "frontend"
DATA_DIR_VARIABLE = "BACKCHAT_DATA_DIR"
DEFAULT_DATA_DIR = REPO_ROOT / ".local" / "dynamodb"
HOST = "127.0.0.1"
STAGE = "local"
STARTUP_TIMEOUT_SECONDS = 60.0
STOP_GRACE_SECONDS = 5.0
POLL_SECONDS = 0.1
OUTPUT_TAIL_LINES = 20
# Credentials moto accepts; real ones must never reach the local stack.
FAKE_AWS_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
# A profile named here would make boto3 look for it (and fail) or prefer it to the fake keys.
REMOVED_VARIABLES = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE")

# moto logs one line per DynamoDB call (several per poll); the successful ones are noise on
# the terminal. They are still kept in the output tail shown if moto dies.
ROUTINE_MOTO_REQUEST = re.compile(r'HTTP/\d(?:\.\d)?(?:\x1b\[[\d;]*m)*" [1-4]\d\d ')

Echo = Callable[[str, str], None]


class StackError(Exception):
    """The stack cannot start or keep running; the message says why and what to do."""


class StopRequested(Exception):
    """SIGINT or SIGTERM arrived: stop everything and exit 0."""


@dataclass(frozen=True)
class Ports:
    """The three loopback ports of the stack."""

    api: int
    web: int
    dynamodb: int

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Ports":
        """Read API_PORT, WEB_PORT and DDB_PORT; raise StackError naming a bad variable."""
        ports = cls(
            api=_port(env, "API_PORT", 8000),
            web=_port(env, "WEB_PORT", 8080),
            dynamodb=_port(env, "DDB_PORT", 8001),
        )
        if len({ports.api, ports.web, ports.dynamodb}) != 3:
            raise StackError(
                f"API_PORT ({ports.api}), WEB_PORT ({ports.web}) and DDB_PORT "
                f"({ports.dynamodb}) must be three different ports"
            )
        return ports

    def by_variable(self) -> dict[str, int]:
        """Return each port under the variable that sets it."""
        return {"DDB_PORT": self.dynamodb, "API_PORT": self.api, "WEB_PORT": self.web}

    @property
    def api_base(self) -> str:
        return f"http://{HOST}:{self.api}"

    @property
    def web_base(self) -> str:
        return f"http://{HOST}:{self.web}"

    @property
    def dynamodb_endpoint(self) -> str:
        return f"http://{HOST}:{self.dynamodb}"


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise StackError(f"{name} must be a port number from 1 to 65535, not {raw!r}")
    return int(raw)


def ensure_port_free(variable: str, port: int) -> None:
    """Raise StackError naming the variable if nothing may listen on HOST:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the servers themselves do, so a port in TIME_WAIT does not count as taken.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError as error:
            raise StackError(
                f"{variable}={port}: cannot listen on {HOST}:{port} ({error.strerror}). "
                f"Stop whatever uses it, or choose another port, "
                f"e.g. `{variable}={port + 10} make run`."
            ) from None


def data_directory(env: Mapping[str, str]) -> tuple[Path, bool]:
    """Return where the DynamoDB data lives, and whether BACKCHAT_DATA_DIR chose it."""
    raw = env.get(DATA_DIR_VARIABLE, "").strip()
    if not raw:
        return DEFAULT_DATA_DIR, False
    return Path(raw).expanduser().resolve(), True


def end_interrupted_runs(settings: Settings) -> list[str]:
    """End as `error` every run still `running`; return their ids.

    Only for a stack that has not started its API yet: a local run lives in a thread of the
    API process, so every run found running was cut off when an earlier stack stopped. Its
    lease may still look valid (or, unclaimed, up to CLAIM_TIMEOUT_SECONDS away): expiring it
    lets the reaper end the run at once, through the same fenced write as any dead run.
    """
    store = SessionStore(settings)
    S = store.models.session
    expired_at = clock.now_ms() - 1
    try:
        for shard in range(LEASE_SHARDS):
            for found in S.leases_by_shard.query(f"s{shard:02d}"):
                try:
                    S(found.id).update(actions=[S.leaseUntil.set(expired_at),
                                                S.reapAt.set(expired_at)],
                                       condition=S.status == RUNNING)
                except PynamoDBException as error:
                    if error.cause_response_code != CONDITION_FAILED:  # it ended meanwhile
                        raise
    except PynamoDBException as error:
        raise StoreUnavailable(f"cannot read the running sessions: {error}") from None
    reaper = Reaper(store)
    ended: list[str] = []
    while batch := reaper.reap():
        ended += batch
    return ended


def stack_variables(base: Mapping[str, str], ports: Ports) -> dict[str, str]:
    """Return the variables the stack sets for itself and its children."""
    inherited = base.get("NO_PROXY") or base.get("no_proxy") or ""
    no_proxy = ",".join(filter(None, [inherited, HOST, "localhost"]))
    return {
        **FAKE_AWS_CREDENTIALS,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "DDB_ENDPOINT": ports.dynamodb_endpoint,
        "CORS_ORIGIN": ports.web_base,
        "BACKCHAT_STAGE": STAGE,
        # A proxy from the user's shell must not see loopback traffic (botocore honours it).
        "NO_PROXY": no_proxy,
        "no_proxy": no_proxy,
        # Children's output is piped; unbuffered, it shows up (and survives a crash) at once.
        "PYTHONUNBUFFERED": "1",
        # moto serves one request at a time: loaded by many runs at once it may take seconds
        # to answer, which is slowness, not an outage. A stopped one still gives a 503 in
        # well under a minute (the deployed defaults are 2 s and 4 s).
        "STORE_READ_TIMEOUT": base.get("STORE_READ_TIMEOUT", "10"),
        "STORE_ROUTE_BUDGET": base.get("STORE_ROUTE_BUDGET", "15"),
        # One process holds every run and long-poll, each a thread with a DynamoDB request
        # of its own at times: 200 sessions followed at once need ~400 connections. A smaller
        # pool closes the extras after each request, and their reconnects overflowed moto's
        # listen queue (connect timeouts, runs that could not claim their session).
        "MAX_POOL_CONNECTIONS": base.get("MAX_POOL_CONNECTIONS", "1000"),
    }


def stage_environment(env: Mapping[str, str], managed: Iterable[str]) -> dict[str, str]:
    """Return the environment `chalice local --stage local` will run the app with.

    Chalice lays the stage's `environment_variables` from .chalice/config.json over the
    process environment, so the tables are created with exactly the settings the API uses.
    A stage value that would override what the stack sets is refused: the API would talk to
    another database or origin than the one the stack prints.
    """
    try:
        config = CLIFactory(str(REPO_ROOT), environ=dict(env)).create_config_obj(
            chalice_stage_name=STAGE
        )
    except RuntimeError as error:
        raise StackError(f"cannot read .chalice/config.json: {error}") from None
    stage_variables = dict(config.environment_variables)
    conflicts = sorted(
        name for name in set(managed) & set(stage_variables)
        if stage_variables[name] != env.get(name)
    )
    if conflicts:
        raise StackError(
            f".chalice/config.json sets {', '.join(conflicts)} for stage {STAGE!r}, which would "
            "override the value the local stack sets; remove it from that stage"
        )
    return {**env, **stage_variables}


class ChildProcess:
    """A process the stack started, in its own process group; its output echoed, its tail kept."""

    def __init__(self, name: str, description: str, argv: list[str], env: Mapping[str, str],
                 echo: Echo, quiet: re.Pattern[str] | None = None) -> None:
        self.name = name
        self.description = description
        self._echo = echo
        self._quiet = quiet
        self._tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
        self.process = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Its own group, so Ctrl-C reaches only the supervisor, which stops the group.
            start_new_session=True,
        )
        self._reader = threading.Thread(
            target=self._copy_output, name=f"{name}-output", daemon=True
        )
        self._reader.start()

    def _copy_output(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            self._tail.append(line)
            if self._quiet is None or not self._quiet.search(line):
                self._echo(self.name, line)

    def exit_code(self) -> int | None:
        """Return the exit code, or None while it runs."""
        return self.process.poll()

    def last_output(self) -> list[str]:
        """Return its last lines of output (after it exited, all of them up to the end)."""
        self._reader.join(timeout=1.0)
        return list(self._tail)

    def signal_group(self, signum: int) -> None:
        """Send signum to its process group, if any member is left."""
        try:
            os.killpg(self.process.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def death_report(self) -> str:
        """Describe an unexpected exit: which process, its code and its last output."""
        lines = self.last_output()
        while lines and not lines[-1].strip():
            lines.pop()
        tail = "\n".join(f"    {line}" for line in lines or ["(no output)"])
        code = self.process.returncode
        how = (
            f"was killed by {signal.Signals(-code).name}" if code < 0
            else f"exited with code {code}"
        )
        return (
            f"the {self.description} (pid {self.process.pid}) {how} unexpectedly; "
            f"its last output:\n{tail}"
        )


def stop_processes(children: list[ChildProcess]) -> None:
    """SIGTERM every child's group, wait up to STOP_GRACE_SECONDS, SIGKILL what is left."""
    for child in children:
        child.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for child in children:
        try:
            child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    # Also reaches anything a child started in its group and left behind.
    for child in children:
        child.signal_group(signal.SIGKILL)
    for child in children:
        child.process.wait()
        child.last_output()


class ShutdownSignals:
    """Record SIGINT/SIGTERM; the stack checks the record between short waits.

    The handler only stores the signal number: raising from it could land inside Popen or
    a lock and leave a child started but unrecorded.
    """

    def __init__(self) -> None:
        self.received: int | None = None

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._record)

    def ignore(self) -> None:
        """Ignore further signals while stopping, so the stop itself is not interrupted."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum

    def pause(self, seconds: float) -> None:
        """Sleep, then raise StopRequested if a signal arrived."""
        time.sleep(seconds)
        if self.received is not None:
            raise StopRequested()


class LocalStack:
    """The moto server, `chalice local` and the page server, started and stopped together."""

    def __init__(self, ports: Ports, base_env: Mapping[str, str], signals: ShutdownSignals,
                 echo: Echo) -> None:
        self.ports = ports
        self._variables = stack_variables(base_env, ports)
        self.env = {
            name: value for name, value in base_env.items() if name not in REMOVED_VARIABLES
        }
        self.env.update(self._variables)
        self._signals = signals
        self._echo = echo
        self._children: list[ChildProcess] = []
        self._site: StaticSite | None = None
        self._site_thread: threading.Thread | None = None
        # Where moto keeps the data; None: in memory only (the default directory was busy).
        self.data_dir: Path | None = None
        self._data_note = ""
        self.auth: LocalAuth | None = None

    def start(self) -> None:
        """Start everything in order and return once the API answers its health check."""
        for variable, port in self.ports.by_variable().items():
            ensure_port_free(variable, port)
        self._choose_data_dir()
        self._configure_auth()
        app_env = stage_environment(self.env, self._variables.keys())
        self._start_dynamodb()
        self._create_tables(app_env)
        self._end_interrupted_runs(app_env)
        self._start_site()
        self._start_api()
        self._wait_for_api()

    def supervise(self) -> None:
        """Return when a signal arrives (StopRequested); raise StackError if a part dies."""
        while True:
            self._check_running()
            self._signals.pause(POLL_SECONDS * 2)

    def stop(self) -> None:
        """Stop every process and the page server; safe to call after a partial start."""
        stop_processes(self._children)
        if self._site is not None and self._site_thread is not None:
            self._site.shutdown()
            self._site.server_close()
            self._site_thread.join(timeout=STOP_GRACE_SECONDS)

    def banner(self) -> str:
        page = page_base(self.auth.page_host, self.ports.web) if self.auth else self.ports.web_base
        notice = f"{self.auth.notice}\n" if self.auth and self.auth.notice else ""
        return (
            "backchat is running:\n"
            f"  page: {page}/\n"
            f"  api:  {self.ports.api_base}/api\n"
            f"  dynamodb (moto): {self.ports.dynamodb_endpoint}\n"
            f"  data: {self._data_note}\n"
            f"{notice}"
            "Ctrl-C stops everything."
        )

    def _configure_auth(self) -> None:
        """Set AUTH_MODE (and the key digests) for the API; the page's origin follows the mode."""
        try:
            self.auth = local_auth(self.env, self.ports.api_base, self.ports.web, self.data_dir)
        except AuthSetupError as error:
            raise StackError(str(error)) from None
        # Cognito mode opens the page as localhost: the API must allow that origin instead.
        variables = {**self.auth.variables,
                     "CORS_ORIGIN": page_base(self.auth.page_host, self.ports.web)}
        self._variables.update(variables)
        self.env.update(variables)

    def _choose_data_dir(self) -> None:
        path, chosen = data_directory(self.env)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StackError(
                f"{DATA_DIR_VARIABLE}={path}: cannot create the data directory "
                f"({error.strerror}); choose another with {DATA_DIR_VARIABLE}=..."
            ) from None
        holder = lock_holder(path)
        if holder is None:
            self.data_dir = path
            self._data_note = f"{path} (kept across restarts; delete it to start empty)"
        elif chosen:
            raise StackError(
                f"{DATA_DIR_VARIABLE}={path} is in use by another backchat stack "
                f"(pid {holder or 'unknown'}); stop that stack or choose another directory"
            )
        else:
            # A second stack on other ports must not fail for the default's sake, nor share it.
            self._data_note = (
                f"in memory only: {path} is in use by another backchat stack "
                f"(pid {holder or 'unknown'}); set {DATA_DIR_VARIABLE} to keep this stack's data"
            )

    def _start_dynamodb(self) -> None:
        # moto with the atomic DynamoDB backend: conditional writes and transactions from
        # concurrent runs must behave as in real DynamoDB (see scripts/embedded_dynamodb.py).
        argv = [
            sys.executable, "-m", "scripts.embedded_dynamodb",
            "-H", HOST, "-p", str(self.ports.dynamodb),
        ]
        if self.data_dir is not None:
            argv += ["--data-dir", str(self.data_dir)]
        self._children.append(
            ChildProcess("moto", "DynamoDB server (moto)", argv, self.env, self._echo,
                         quiet=ROUTINE_MOTO_REQUEST)
        )
        self._wait_until(
            lambda: _http_status(self.ports.dynamodb_endpoint + "/moto-api/") is not None,
            f"the moto server did not answer on {self.ports.dynamodb_endpoint}",
        )

    def _create_tables(self, app_env: Mapping[str, str]) -> None:
        """Create the tables (or add what tables of an earlier version lack) and migrate the
        data an earlier version kept (scripts/migrate_local.py)."""
        try:
            store = SessionStore(Settings.from_env(app_env))
            store.create_tables()
            report = migrate(store.models, new_id)
        except (SettingsError, StoreUnavailable) as error:
            raise StackError(f"cannot create the tables in moto: {error}") from None
        except PynamoDBException as error:
            raise StackError(f"cannot bring the kept data up to this version: {error}. "
                             f"Move {self.data_dir} aside to start empty.") from None
        if report is not None:
            self._echo("data", report.describe())

    def _end_interrupted_runs(self, app_env: Mapping[str, str]) -> None:
        try:
            ended = end_interrupted_runs(Settings.from_env(app_env))
        except (SettingsError, StoreUnavailable) as error:
            raise StackError(f"cannot end the runs the last stop cut off: {error}") from None
        if ended:
            self._echo("data", f"ended {len(ended)} run(s) cut off when the stack last stopped "
                               "(status error)")

    def _start_site(self) -> None:
        try:
            self._site = StaticSite(
                (HOST, self.ports.web),
                FRONTEND_DIR,
                api_base=self.ports.api_base,
                log=lambda line: self._echo("web", line),
                user_pool=self.auth.user_pool if self.auth else None,
            )
        except OSError as error:
            raise StackError(
                f"WEB_PORT={self.ports.web}: cannot listen on {HOST}:{self.ports.web} "
                f"({error.strerror})"
            ) from None
        # A thread, not a process: it binds in the supervisor, so a busy port is reported
        # right here, and there is no further process to signal, reap or leave behind.
        self._site_thread = threading.Thread(
            target=self._site.serve_forever, name="static-site", daemon=True
        )
        self._site_thread.start()

    def _start_api(self) -> None:
        # chalice with a larger listen backlog (see scripts/chalice_local.py).
        argv = [
            sys.executable, "-m", "scripts.chalice_local", "local", "--stage", STAGE,
            "--host", HOST, "--port", str(self.ports.api), "--no-autoreload",
        ]
        self._children.append(
            ChildProcess("api", "API server (chalice local)", argv, self.env, self._echo)
        )

    def _wait_for_api(self) -> None:
        health = self.ports.api_base + "/api/health"
        self._wait_until(
            lambda: _http_status(health) == 200,
            f"GET {health} did not answer 200",
        )

    def _wait_until(self, ready: Callable[[], bool], failure: str) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while not ready():
            self._check_running()
            if time.monotonic() > deadline:
                raise StackError(f"{failure} within {STARTUP_TIMEOUT_SECONDS:.0f} s")
            self._signals.pause(POLL_SECONDS)

    def _check_running(self) -> None:
        for child in self._children:
            if child.exit_code() is not None:
                raise StackError(child.death_report())
        if self._site_thread is not None and not self._site_thread.is_alive():
            raise StackError("the page server thread stopped unexpectedly")


_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http_status(url: str) -> int | None:
    """Return the HTTP status of GET url, or None if nothing answered."""
    try:
        with _NO_PROXY_OPENER.open(url, timeout=2.0) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, OSError):
        return None


_print_lock = threading.Lock()


def echo_line(name: str, line: str) -> None:
    """Print one line of a part's output, prefixed with the part's name."""
    with _print_lock:
        print(f"{name:<4} | {line}", flush=True)


def say(text: str, stream: TextIO | None = None) -> None:
    """Print the stack's own message (to stdout unless another stream is given)."""
    with _print_lock:
        print(text, file=stream or sys.stdout, flush=True)


def main() -> int:
    """Run the stack until a signal or a failure; return the exit status."""
    signals = ShutdownSignals()
    signals.install()
    try:
        ports = Ports.from_env(os.environ)
    except StackError as error:
        say(f"backchat: {error}", sys.stderr)
        return 2
    stack = LocalStack(ports, os.environ, signals, echo_line)
    # The tables are created from this process too: its boto3 must see the same fake AWS.
    os.environ.clear()
    os.environ.update(stack.env)
    failure: str | None = None
    try:
        stack.start()
        say(stack.banner())
        stack.supervise()
    except StopRequested:
        say("backchat: stopping...")
    except StackError as error:
        failure = str(error)
    finally:
        signals.ignore()
        stack.stop()
    if failure is not None:
        say(f"backchat: {failure}", sys.stderr)
        return 1
    say("backchat: stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
