"""The `backchat` command line: options, exit codes and messages, over a fake client."""
from __future__ import annotations

from typing import Any, Iterator

import pytest

from backchat_client import ApiError, ConnectionFailed, DEFAULT_API
from backchat_client import cli


@pytest.fixture(autouse=True)
def no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BACKCHAT_API", raising=False)
    monkeypatch.delenv("BACKCHAT_API_KEY", raising=False)


class FakeClient:
    """Stands in for Client: plays scripted events or raises a scripted error."""

    events_script: list[Any] = []
    error: BaseException | None = None
    made: list[tuple[str, str | None]] = []

    def __init__(self, api_url: str, api_key: str | None = None) -> None:
        FakeClient.made.append((api_url, api_key))

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def session(self, session_id: str) -> dict[str, Any]:
        if self.error is not None:
            raise self.error
        return {"id": session_id, "status": "done", "answer": "hi"}

    def events(self, session_id: str, after: int = 0) -> Iterator[dict[str, Any]]:
        for item in self.events_script:
            if isinstance(item, BaseException):
                raise item
            yield item


@pytest.fixture
def fake_client(monkeypatch: pytest.MonkeyPatch) -> type[FakeClient]:
    FakeClient.events_script, FakeClient.error, FakeClient.made = [], None, []
    monkeypatch.setattr(cli, "Client", FakeClient)
    return FakeClient


def test_connection_options_come_from_the_environment_or_the_defaults(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    parser = cli.build_parser()
    assert (parser.parse_args(["ls"]).api, parser.parse_args(["ls"]).api_key) == (DEFAULT_API, None)

    monkeypatch.setenv("BACKCHAT_API", "http://env:1")
    monkeypatch.setenv("BACKCHAT_API_KEY", "env-key")
    args = cli.build_parser().parse_args(["ls"])
    assert (args.api, args.api_key) == ("http://env:1", "env-key")


@pytest.mark.parametrize("argv", [
    ["--api", "http://given:2", "--api-key", "k", "show", "s1"],
    ["show", "s1", "--api", "http://given:2", "--api-key", "k"],
])
def test_connection_options_go_before_or_after_the_command(argv: list[str]) -> None:
    args = cli.build_parser().parse_args(argv)

    assert (args.api, args.api_key, args.session) == ("http://given:2", "k", "s1")


@pytest.mark.parametrize("argv", [
    ["ask", "hi", "--conversation", "c1", "--continue"],
    ["follow", "s1", "--after", "-1"],
    ["ls", "--limit", "0"],
    ["frobnicate"],
    [],
])
def test_a_bad_command_line_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        cli.build_parser().parse_args(argv)

    assert raised.value.code == cli.EXIT_USAGE
    assert "usage: backchat" in capsys.readouterr().err


@pytest.mark.parametrize("error, code, message", [
    (ApiError(404, "NotFoundError", "Session s1 not found"), cli.EXIT_REFUSED,
     "backchat: Session s1 not found (HTTP 404)"),
    (ApiError(401, "UnauthorizedError", "The API key is not valid"), cli.EXIT_REFUSED,
     "backchat: The API key is not valid (HTTP 401)"),
    (ApiError(503, "ServiceUnavailableError", "store down"), cli.EXIT_UNREACHABLE,
     "backchat: store down (HTTP 503)"),
    (ConnectionFailed("GET /api/chat/session/s1: connection refused"), cli.EXIT_UNREACHABLE,
     f"backchat: no usable answer from the API at {DEFAULT_API}: "
     "GET /api/chat/session/s1: connection refused"),
])
def test_errors_are_one_readable_line_and_an_exit_code(
    fake_client: type[FakeClient], capsys: pytest.CaptureFixture[str],
    error: Exception, code: int, message: str,
) -> None:
    fake_client.error = error

    assert cli.main(["show", "s1"]) == code
    captured = capsys.readouterr()
    assert captured.err.strip() == message and captured.out == ""


@pytest.mark.parametrize("terminal, code", [
    ("done", cli.EXIT_OK), ("error", cli.EXIT_RUN_ERROR), ("cancelled", cli.EXIT_RUN_CANCELLED),
])
def test_follow_exits_with_the_runs_end(
    fake_client: type[FakeClient], capsys: pytest.CaptureFixture[str], terminal: str, code: int
) -> None:
    fake_client.events_script = [{"seq": 1, "eventType": "delta", "content": "text"},
                                 {"seq": 2, "eventType": terminal}]

    assert cli.main(["follow", "s1"]) == code
    assert capsys.readouterr().out == "text\n"


def test_ctrl_c_while_following_says_how_to_pick_the_run_up(
    fake_client: type[FakeClient], capsys: pytest.CaptureFixture[str]
) -> None:
    fake_client.events_script = [{"seq": 1, "eventType": "delta", "content": "par"},
                                 KeyboardInterrupt()]

    assert cli.main(["--api", "http://other:9", "follow", "s1"]) == cli.EXIT_INTERRUPTED
    captured = capsys.readouterr()
    assert captured.out == "par\n"
    assert "the run goes on (session s1)" in captured.err
    assert "backchat --api http://other:9 follow s1" in captured.err
    assert fake_client.made == [("http://other:9", None)]


@pytest.mark.parametrize("argv, session", [
    (["show", "-pRoOcC9-a1MehVvZ1SOGQ"], "-pRoOcC9-a1MehVvZ1SOGQ"),
    (["follow", "-_x", "--json", "--after", "2"], "-_x"),
    (["cancel", "--", "-a"], "-a"),
])
def test_a_session_id_may_start_with_a_dash(argv: list[str], session: str) -> None:
    args = cli.build_parser().parse_args(cli.dashed_words_as_values(argv))

    assert args.session == session


def test_option_values_and_messages_may_start_with_a_dash() -> None:
    argv = ["ask", "--conversation", "-c1", "--model", "-m", "-hello", "--json"]

    args = cli.build_parser().parse_args(cli.dashed_words_as_values(argv))

    assert (args.conversation, args.model, args.message, args.json) == ("-c1", "-m", "-hello", True)


def test_a_negative_seq_is_still_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["follow", "s1", "--after", "-1"])

    assert "must be 0 or more, not -1" in capsys.readouterr().err
