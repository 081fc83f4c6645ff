"""The `backchat` command: start, follow, read, list and cancel runs from a terminal or a script."""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import os
import re
import sys
from typing import Any, Callable, Iterable, Iterator, Sequence

from backchat_client.client import DEFAULT_API, Client, __version__
from backchat_client.errors import ApiError, ConnectionFailed
from backchat_client.render import event_printer

EXIT_OK = 0
EXIT_RUN_ERROR = 1
EXIT_USAGE = 2
EXIT_RUN_CANCELLED = 3
EXIT_REFUSED = 4
EXIT_UNREACHABLE = 5
EXIT_INTERRUPTED = 130
EXIT_BY_STATUS = {"done": EXIT_OK, "error": EXIT_RUN_ERROR, "cancelled": EXIT_RUN_CANCELLED}

EXIT_CODES_HELP = """\
exit codes:
  0    done (for ask and follow: the run ended done)
  1    the run ended error
  2    bad command line
  3    the run ended cancelled
  4    the API refused the request (bad input, unknown id, no valid key, a turn still running)
  5    the API could not be reached or kept failing (after retrying for about 45 s)
  130  interrupted (Ctrl-C); a run that was being watched goes on
"""


class CommandError(Exception):
    """A command cannot do what was asked; the message says why, `exit_code` how to exit."""

    def __init__(self, message: str, exit_code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# Ids are URL-safe base64 and may start with "-", which argparse takes for an unknown option.
_DASHED_WORD = re.compile(r"-[A-Za-z0-9_][A-Za-z0-9_-]*")
_VALUE_OPTIONS = frozenset({"--api", "--api-key", "--model", "--title", "--conversation",
                            "--after", "--limit"})


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv` (default: the process's); return the exit code."""
    words = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(dashed_words_as_values(words))
    try:
        with retries_reported(), Client(args.api, args.api_key) as client:
            code: int = args.run(client, args)
            return code
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED
    except ApiError as error:
        _error(f"{error.message} (HTTP {error.status})")
        return EXIT_REFUSED if error.status < 500 else EXIT_UNREACHABLE
    except ConnectionFailed as error:
        _error(f"no usable answer from the API at {args.api}: {error}")
        return EXIT_UNREACHABLE
    except CommandError as error:
        _error(str(error))
        return error.exit_code
    except BrokenPipeError:
        # The reader took what it wanted (`| head`): stop quietly, and keep Python's exit flush
        # from failing on the closed pipe too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


@contextlib.contextmanager
def retries_reported() -> Iterator[None]:
    """Show the client's retry warnings on stderr, one line each, and no other library's logs.

    urllib3 logs a cut-off answer with a traceback; the client's own line says what happened.
    """
    reporter = logging.StreamHandler(sys.stderr)
    reporter.setFormatter(logging.Formatter("backchat: %(message)s"))
    quiet = logging.NullHandler()
    client_log, root = logging.getLogger("backchat_client"), logging.getLogger()
    client_log.addHandler(reporter)
    client_log.setLevel(logging.WARNING)
    client_log.propagate = False
    # With a handler on the root, Python no longer prints other loggers' warnings by itself.
    root.addHandler(quiet)
    try:
        yield
    finally:
        client_log.removeHandler(reporter)
        client_log.propagate = True
        root.removeHandler(quiet)


def dashed_words_as_values(words: Sequence[str]) -> list[str]:
    """Return the words with those that start with "-" but name no option read as values.

    The command has no short option but -h, so `-x...` is an id or a message: after an option
    that takes a value it becomes `--option=-x...`, elsewhere an operand moved behind "--".
    """
    if "--" in words:
        return list(words)
    kept: list[str] = []
    operands: list[str] = []
    for word in words:
        if not _DASHED_WORD.fullmatch(word) or word == "-h":
            kept.append(word)
        elif kept and kept[-1] in _VALUE_OPTIONS:
            kept[-1] = f"{kept[-1]}={word}"
        else:
            operands.append(word)
    return kept + (["--", *operands] if operands else [])


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the `backchat` command line."""
    parser = argparse.ArgumentParser(
        prog="backchat", epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_connection_options(_implied_api(), os.environ.get("BACKCHAT_API_KEY"))],
        description="Run chat turns on a backchat API and follow them; a run goes on when you "
                    "stop watching it.",
    )
    parser.add_argument("--version", action="version", version=f"backchat {__version__}")
    # Connection options are accepted after the command too (`backchat ask --api URL ...`).
    common = [_connection_options(argparse.SUPPRESS, argparse.SUPPRESS)]
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON, one object per line")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ask = commands.add_parser("ask", parents=[*common, as_json],
                              help="start a turn and print the answer as it streams")
    ask.add_argument("message", help="the message; - reads it from standard input")
    ask.add_argument("--model", help="the model, e.g. demo or openai:gpt-4o-mini")
    ask.add_argument("--title", help="the title of a new conversation")
    conversation = ask.add_mutually_exclusive_group()
    conversation.add_argument("--conversation", metavar="ID",
                              help="add the turn to conversation ID")
    conversation.add_argument("--continue", dest="continue_latest", action="store_true",
                              help="add the turn to the most recently active conversation")
    ask.add_argument("--no-wait", action="store_true",
                     help="print the session id (with --json: the start answer) and exit")
    ask.set_defaults(run=run_ask)

    follow = commands.add_parser("follow", parents=[*common, as_json],
                                 help="print a session's events until its run ends")
    follow.add_argument("session", help="the session id")
    follow.add_argument("--after", type=_seq, default=0, metavar="N",
                        help="start after event seq N (default 0: from the start)")
    follow.set_defaults(run=run_follow)

    cancel = commands.add_parser("cancel", parents=[*common, as_json], help="stop a run")
    cancel.add_argument("session", help="the session id")
    cancel.set_defaults(run=run_cancel)

    show = commands.add_parser("show", parents=[*common, as_json],
                               help="print a session and its answer")
    show.add_argument("session", help="the session id")
    show.set_defaults(run=run_show)

    listing = commands.add_parser("ls", parents=[*common, as_json],
                                  help="list your sessions, newest first")
    listing.add_argument("--limit", type=_count, default=20, metavar="N",
                         help="at most N sessions (default 20)")
    listing.set_defaults(run=run_ls)

    conversations = commands.add_parser("conversations", parents=[*common, as_json],
                                        help="list your conversations, most recently active first")
    conversations.add_argument("--limit", type=_count, default=20, metavar="N",
                               help="at most N conversations (default 20)")
    conversations.set_defaults(run=run_conversations)

    chat = commands.add_parser("chat", parents=common,
                               help="an interactive loop of turns in one conversation")
    chat.add_argument("--conversation", metavar="ID",
                      help="go on with conversation ID (default: start a new one)")
    chat.add_argument("--model", help="the model of every turn")
    chat.set_defaults(run=run_chat)
    return parser


def _connection_options(api: Any, api_key: Any) -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--api", metavar="URL", default=api,
                         help="the API's address, before /api "
                              f"(env BACKCHAT_API; default {DEFAULT_API})")
    options.add_argument("--api-key", metavar="KEY", default=api_key,
                         help="the API key (env BACKCHAT_API_KEY, which other users cannot see "
                              "in the process list)")
    return options


def _seq(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def run_ask(client: Client, args: argparse.Namespace) -> int:
    message = sys.stdin.read() if args.message == "-" else args.message
    conversation_id = latest_conversation(client) if args.continue_latest else args.conversation
    try:
        started = client.start(message, conversation_id=conversation_id, model=args.model,
                               title=args.title)
    except KeyboardInterrupt:
        raise CommandError("interrupted before the API answered; the turn may have started "
                           "(`backchat ls` shows it)", EXIT_INTERRUPTED) from None
    if args.no_wait:
        print(json.dumps(started, ensure_ascii=False) if args.json else started["sessionId"])
        return EXIT_OK
    return watch(client, args, started["sessionId"])


def latest_conversation(client: Client) -> str:
    """Return the id of the caller's most recently active conversation."""
    for conversation in client.conversations(page_size=1):
        return str(conversation["id"])
    raise CommandError("there is no conversation to continue yet; ask without --continue first")


def run_follow(client: Client, args: argparse.Namespace) -> int:
    return watch(client, args, args.session, after=args.after)


def watch(client: Client, args: argparse.Namespace, session_id: str, after: int = 0) -> int:
    """Print the session's events until its run ends; return the exit code of its end.

    Ctrl-C stops watching, not the run: it says how to pick the run up again.
    """
    printer = event_printer(getattr(args, "json", False), sys.stdout, sys.stderr)
    status = ""
    try:
        try:
            for event in client.events(session_id, after):
                printer.show(event)
                status = event["eventType"]
        finally:
            printer.close()
    except KeyboardInterrupt:
        _error(f"stopped watching; the run goes on (session {session_id}).\n"
               f"Pick it up with: {_follow_command(args, session_id)}")
        return EXIT_INTERRUPTED
    return EXIT_BY_STATUS.get(status, EXIT_RUN_ERROR)


def _follow_command(args: argparse.Namespace, session_id: str) -> str:
    api = "" if args.api == _implied_api() else f" --api {args.api}"
    return f"backchat{api} follow {session_id}"


def _implied_api() -> str:
    """Return the API address used when --api is not given."""
    return os.environ.get("BACKCHAT_API") or DEFAULT_API


def run_cancel(client: Client, args: argparse.Namespace) -> int:
    result = client.cancel(args.session)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    elif result["status"] == "running":
        print(f"Cancel requested: session {result['id']} stops within about a second.")
    else:
        print(f"Session {result['id']} had already ended: {result['status']}.")
    return EXIT_OK


def run_show(client: Client, args: argparse.Namespace) -> int:
    session = client.session(args.session)
    if args.json:
        print(json.dumps(session, ensure_ascii=False))
        return EXIT_OK
    tokens = f"{session.get('inputTokens')} in, {session.get('outputTokens')} out"
    fields = [("session", session.get("id")), ("status", session.get("status")),
              ("model", session.get("model")), ("title", session.get("title")),
              ("conversation", session.get("conversationId")),
              ("created", session.get("createdAt")), ("finished", session.get("finishedAt")),
              ("tokens", tokens), ("error", session.get("error"))]
    _print_table((name, str(value)) for name, value in fields if value is not None)
    if session.get("answer"):
        print(flush=True)
        printer = event_printer(False, sys.stdout, sys.stderr)
        printer.show({"eventType": "delta", "content": session["answer"]})
        printer.close()
    return EXIT_OK


def run_ls(client: Client, args: argparse.Namespace) -> int:
    sessions = itertools.islice(client.sessions(page_size=min(args.limit, 100)), args.limit)
    return _print_items(sessions, args.json, lambda s: (
        s["id"], s.get("status"), s.get("createdAt"), s.get("title")))


def run_conversations(client: Client, args: argparse.Namespace) -> int:
    conversations = itertools.islice(client.conversations(page_size=min(args.limit, 100)),
                                     args.limit)
    return _print_items(conversations, args.json, lambda c: (
        c["id"], c.get("updatedAt"), _turns(c.get("turnCount")), c.get("lastStatus"),
        c.get("title")))


def run_chat(client: Client, args: argparse.Namespace) -> int:
    conversation_id = args.conversation
    if conversation_id:
        conversation = client.conversation(conversation_id)
        _error(f"conversation {conversation.get('title')!r}, "
               f"{_turns(len(conversation['turns']))} so far; /exit or Ctrl-D ends")
    prompt = "you> " if sys.stdin.isatty() else ""
    code = EXIT_OK
    while True:
        try:
            message = input(prompt).strip()
        except EOFError:
            break
        if message in ("/exit", "/quit"):
            break
        if not message:
            continue
        started = client.start(message, conversation_id=conversation_id, model=args.model)
        conversation_id = started.get("conversationId") or conversation_id
        if not conversation_id:
            raise CommandError("the API did not say which conversation the turn belongs to; "
                               "it may be older than conversations")
        code = watch(client, args, started["sessionId"])
        if code == EXIT_INTERRUPTED:
            return code
    if conversation_id:
        _error(f"go on later with: backchat chat --conversation {conversation_id}")
    return code


def _turns(count: Any) -> str:
    return f"{count} turn" if count == 1 else f"{count} turns"


def _print_items(items: Iterable[dict[str, Any]], as_json: bool,
                 columns: Callable[[dict[str, Any]], tuple[Any, ...]]) -> int:
    if as_json:
        for item in items:
            print(json.dumps(item, ensure_ascii=False))
    else:
        _print_table(tuple("" if value is None else str(value) for value in columns(item))
                     for item in items)
    return EXIT_OK


def _print_table(rows: Iterable[tuple[str, ...]]) -> None:
    """Print rows as columns padded to their widest cell; the last column is not padded."""
    table = list(rows)
    if not table:
        return
    widths = [max(len(row[index]) for row in table) for index in range(len(table[0]) - 1)]
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)] + [row[-1]]
        print("  ".join(cells).rstrip())


def _error(message: str) -> None:
    sys.stdout.flush()
    print(f"backchat: {message}", file=sys.stderr, flush=True)
