"""The `backchat` command installed in .venv, against the real local stack."""
from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from backchat_client import Client

pytestmark = pytest.mark.e2e

BACKCHAT = Path(sys.executable).with_name("backchat")
QUICK = "[demo tokens=20 rate=400]"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def cli_env(api_url: str) -> dict[str, str]:
    env = {**os.environ, "BACKCHAT_API": api_url, "PYTHONUNBUFFERED": "1"}
    env.pop("BACKCHAT_API_KEY", None)
    return env


def run_cli(api_url: str, *args: str, stdin: str = "",
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the installed `backchat` with its output piped; return what it printed."""
    assert BACKCHAT.exists(), f"{BACKCHAT} is missing: `make .venv/.installed` installs client/"
    return subprocess.run([str(BACKCHAT), *args], input=stdin, capture_output=True, text=True,
                          encoding="utf-8", timeout=timeout, env=cli_env(api_url))


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def assert_complete_log(events: list[dict[str, Any]], terminal: str = "done") -> None:
    """Assert seqs run 1..N without a gap or repeat and only the last event is terminal."""
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    kinds = [e["eventType"] for e in events]
    assert kinds[-1] == terminal
    assert not {"done", "error", "cancelled"} & set(kinds[:-1])
    assert len({e["sessionId"] for e in events}) == 1


def deltas(events: list[dict[str, Any]]) -> str:
    return "".join(e.get("content", "") for e in events if e["eventType"] == "delta")


def printed(answer: str) -> str:
    """Return what the plain output shows for an answer: the text, ending with a newline."""
    return answer if answer.endswith("\n") else answer + "\n"


@pytest.fixture
def api(local_stack) -> Iterator[Client]:
    with Client(local_stack.api_url) as client:
        yield client


def newest_session_id(api_url: str) -> str:
    listed = run_cli(api_url, "ls", "--limit", "1", "--json")
    assert listed.returncode == 0, listed.stderr
    return json_lines(listed.stdout)[0]["id"]


def test_ask_prints_the_answer_and_puts_the_steps_on_stderr(local_stack, api: Client) -> None:
    result = run_cli(local_stack.api_url, "ask", f"what is 17*23? {QUICK}")

    assert result.returncode == 0, result.stderr
    session = api.session(newest_session_id(local_stack.api_url))
    assert session["status"] == "done"
    assert result.stdout == printed(session["answer"])
    assert "391" in result.stdout
    assert '→ calculator {"expression": "17*23"}' in result.stderr
    assert "← 391" in result.stderr


def test_ask_json_prints_every_event_once_from_1_to_the_terminal_one(
    local_stack, api: Client
) -> None:
    result = run_cli(local_stack.api_url, "ask", "--json",
                     "Привет, 世界 👋🏽 e\u0301 [demo tokens=120 rate=300]")

    assert result.returncode == 0, result.stderr
    events = json_lines(result.stdout)
    assert_complete_log(events)
    assert result.stderr == ""
    session = api.session(events[0]["sessionId"])
    assert deltas(events) == session["answer"]
    assert "Привет, 世界 👋🏽 e\u0301" in session["answer"]


def test_ask_reads_the_message_from_stdin(local_stack, api: Client) -> None:
    result = run_cli(local_stack.api_url, "ask", "--json", "-", stdin=f"from a pipe {QUICK}\n")

    assert result.returncode == 0, result.stderr
    events = json_lines(result.stdout)
    assert deltas(events).startswith("> from a pipe")


def test_ask_no_wait_prints_the_session_id_and_follow_prints_the_answer(
    local_stack, api: Client
) -> None:
    started = run_cli(local_stack.api_url, "ask", "--no-wait", f"later {QUICK}")
    assert started.returncode == 0, started.stderr
    session_id = started.stdout.strip()

    followed = run_cli(local_stack.api_url, "follow", session_id)

    assert followed.returncode == 0, followed.stderr
    assert followed.stdout == printed(api.session(session_id)["answer"])


def test_ask_no_wait_json_prints_the_start_answer(local_stack) -> None:
    result = run_cli(local_stack.api_url, "ask", "--no-wait", "--json", f"hi {QUICK}")

    assert result.returncode == 0, result.stderr
    (started,) = json_lines(result.stdout)
    assert started["status"] == "running" and started["model"] == "demo"
    assert started["sessionId"]


def test_follow_after_n_prints_only_the_later_events(local_stack, api: Client) -> None:
    session_id = api.start(f"what is 2+2? {QUICK}")["sessionId"]
    everything = list(api.events(session_id))

    result = run_cli(local_stack.api_url, "follow", session_id, "--after", "2", "--json")

    assert result.returncode == 0, result.stderr
    assert json_lines(result.stdout) == everything[2:]


def test_a_failed_run_exits_1_with_its_error_on_stderr(local_stack, api: Client) -> None:
    result = run_cli(local_stack.api_url, "ask", "fail [demo tokens=60 rate=400 fail_after=10]")

    assert result.returncode == 1
    session = api.session(newest_session_id(local_stack.api_url))
    assert session["status"] == "error"
    assert f"error: {session['error']}" in result.stderr
    assert result.stdout == printed(session["answer"])


def test_cancel_stops_a_run_and_following_it_exits_3(local_stack, api: Client) -> None:
    session_id = api.start("long [demo tokens=2000 rate=50]")["sessionId"]

    cancelled = run_cli(local_stack.api_url, "cancel", session_id)
    followed = run_cli(local_stack.api_url, "follow", "--json", session_id)
    again = run_cli(local_stack.api_url, "cancel", "--json", session_id)

    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout == (
        f"Cancel requested: session {session_id} stops within about a second.\n")
    assert followed.returncode == 3
    assert_complete_log(json_lines(followed.stdout), terminal="cancelled")
    assert again.returncode == 0
    assert json_lines(again.stdout) == [{"id": session_id, "status": "cancelled"}]


def test_show_prints_the_session_and_its_answer(local_stack, api: Client) -> None:
    session_id = api.start(f"show me {QUICK}")["sessionId"]
    answer = api.answer(session_id)

    plain = run_cli(local_stack.api_url, "show", session_id)
    as_json = run_cli(local_stack.api_url, "show", "--json", session_id)

    assert plain.returncode == 0 and as_json.returncode == 0
    assert json_lines(as_json.stdout) == [api.session(session_id)]
    table, _, shown_answer = plain.stdout.partition("\n\n")
    fields = dict(line.split(None, 1) for line in table.splitlines())
    assert (fields["session"], fields["status"], fields["model"]) == (session_id, "done", "demo")
    assert re.fullmatch(r"\d+ in, \d+ out", fields["tokens"])
    assert shown_answer == printed(answer)


def test_ls_lists_the_sessions_newest_first(local_stack, api: Client) -> None:
    older = api.start(f"older {QUICK}")["sessionId"]
    newer = api.start(f"newer {QUICK}")["sessionId"]

    as_json = run_cli(local_stack.api_url, "ls", "--json", "--limit", "2")
    plain = run_cli(local_stack.api_url, "ls", "--limit", "2")

    assert [s["id"] for s in json_lines(as_json.stdout)] == [newer, older]
    assert [line.split()[0] for line in plain.stdout.splitlines()] == [newer, older]
    assert plain.returncode == 0 and as_json.returncode == 0


@pytest.mark.parametrize("command", [["show", "nosuch"], ["follow", "nosuch"],
                                     ["cancel", "nosuch"]])
def test_an_unknown_session_exits_4_with_one_readable_line(local_stack, command: list[str]) -> None:
    result = run_cli(local_stack.api_url, *command)

    assert result.returncode == 4
    assert result.stderr == "backchat: Session nosuch not found (HTTP 404)\n"
    assert result.stdout == ""


def test_bad_input_exits_4_naming_the_field(local_stack) -> None:
    result = run_cli(local_stack.api_url, "ask", "   ")

    assert result.returncode == 4
    assert result.stderr.startswith("backchat: message")
    assert "(HTTP 400)" in result.stderr and "Traceback" not in result.stderr


def test_ctrl_c_during_ask_leaves_the_run_going_and_follow_prints_the_whole_answer(
    local_stack, api: Client
) -> None:
    process = subprocess.Popen(
        [str(BACKCHAT), "ask", "interrupted [demo tokens=100 rate=50]"], text=True,
        encoding="utf-8", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=cli_env(local_stack.api_url),
    )
    try:
        # Interrupt once the answer has begun to arrive: the command is watching the run.
        assert process.stdout is not None and process.stdout.read(1)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()

    assert process.returncode == 130
    match = re.search(r"the run goes on \(session ([\w-]+)\)", err)
    assert match, err
    session_id = match.group(1)
    assert f"Pick it up with: backchat follow {session_id}" in err
    assert api.session(session_id)["status"] == "running"

    followed = run_cli(local_stack.api_url, "follow", session_id)

    assert followed.returncode == 0, followed.stderr
    session = api.session(session_id)
    assert session["status"] == "done"
    assert followed.stdout == printed(session["answer"])


def test_ask_on_a_terminal_renders_the_markdown(local_stack, api: Client) -> None:
    controller, terminal = pty.openpty()
    process = subprocess.Popen([str(BACKCHAT), "ask", f"what is 6*7? {QUICK}"], stdin=terminal,
                               stdout=terminal, stderr=terminal, env=cli_env(local_stack.api_url))
    os.close(terminal)
    shown = read_terminal(controller, process)

    assert process.returncode == 0
    answer = api.session(newest_session_id(local_stack.api_url))["answer"]
    assert "**42**" in answer and "`6*7`" in answer
    text = ANSI.sub("", shown)
    assert "The calculator says 6*7 = 42." in text
    assert "**" not in text and "`" not in text
    assert "\x1b[1m42" in shown


def read_terminal(controller: int, process: subprocess.Popen[bytes]) -> str:
    """Return everything a program wrote to its pseudo-terminal, until it exits."""
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        process.wait(timeout=60)
        # Once the program has exited, reading the rest ends with EIO.
        reader.join(timeout=10)
    finally:
        process.kill()
        os.close(controller)
    return b"".join(chunks).decode("utf-8", errors="replace")
