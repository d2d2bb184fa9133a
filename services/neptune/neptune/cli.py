"""``neptune``, the terminal client of Neptune: ``neptune chat`` talks to a running platform through the gateway,
``neptune conversations`` lists the workspace's conversations, ``neptune show`` prints one.

The key comes from ``--api-key`` or ``AGENT_PLATFORM_API_KEY``, the gateway from ``--url`` or ``AGENT_PLATFORM_URL``.
``chat`` continues the conversation last used with that gateway and key (kept in a state file, see
``neptune.terminal.state``) unless given ``--conversation`` or ``--new``. Exit codes: 0 done, 2 usage, 3 the
gateway refused (``code: detail`` on stderr: a bad key, an unknown conversation, an invalid message), 4 the turn
ended with an error event, 5 the gateway could not be reached or did not answer in time.
"""

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click
import httpx
from rich.console import Console
from rich.text import Text

from neptune.terminal.api import ClientError, NeptuneApi, Refused, TurnFailed, Unreachable, connect
from neptune.terminal.render import JsonRenderer, Renderer, TerminalRenderer, tool_call_line, tool_result_line
from neptune.terminal.state import LastConversations, state_path

DEFAULT_URL = "http://localhost:8000"
MAX_TITLE_CHARS = 80
EXIT_WORDS = {"exit", "quit"}
F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Wiring:
    """What the commands are built with: the HTTP transport (a fake one in tests) and the environment."""

    transport: httpx.BaseTransport | None = None
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))


@dataclass
class Target:
    api: NeptuneApi
    memory: LastConversations
    slot: str


def report(err: Console, exc: ClientError) -> None:
    err.print(Text.assemble((f"{exc.code}: ", "bold red"), exc.detail))


class Group(click.Group):
    """Ends a command that failed talking to the gateway with its ``code: detail`` on stderr and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ClientError as exc:
            report(_consoles()[1], exc)
            ctx.exit(exc.exit_code)


def _gateway_options(command: F) -> F:
    command = click.option(
        "--api-key",
        envvar="AGENT_PLATFORM_API_KEY",
        show_envvar=True,
        help="The workspace's API key (make up prints it).",
    )(command)
    return click.option(
        "--url",
        envvar="AGENT_PLATFORM_URL",
        default=DEFAULT_URL,
        show_default=True,
        show_envvar=True,
        help="The gateway.",
    )(command)


def _target(ctx: click.Context, url: str, api_key: str | None) -> Target:
    if not api_key:
        raise click.UsageError("no API key: pass --api-key or set AGENT_PLATFORM_API_KEY", ctx)
    wiring: Wiring = ctx.find_object(Wiring) or Wiring()
    client = ctx.with_resource(connect(url, api_key, wiring.transport))
    memory = LastConversations(state_path(wiring.environ))
    return Target(NeptuneApi(client), memory, LastConversations.slot(url, api_key))


def _consoles() -> tuple[Console, Console]:
    return Console(soft_wrap=True, highlight=False), Console(stderr=True, soft_wrap=True, highlight=False)


@click.group(cls=Group)
def cli() -> None:
    """Talk to Neptune, the platform's assistant, through the gateway.

    Exit codes: 2 usage, 3 the gateway refused (a bad key, an unknown conversation, an invalid message), 4 the turn
    ended with an error, 5 the gateway could not be reached or did not answer in time.
    """


class Chat:
    """One conversation's turns: started on the first message when there is none, remembered once used."""

    def __init__(self, target: Target, renderer: Renderer, conversation_id: str | None, title: str | None) -> None:
        self._target, self._renderer, self._title = target, renderer, title
        self.conversation_id = conversation_id
        self._remembered = False  # continued from the state file rather than named by the caller

    @classmethod
    def open(
        cls, target: Target, renderer: Renderer, conversation_id: str | None, *, new: bool, title: str | None
    ) -> "Chat":
        chat = cls(target, renderer, conversation_id, title)
        if conversation_id is None and not new:
            chat.conversation_id = target.memory.get(target.slot)
            chat._remembered = chat.conversation_id is not None
        if chat.conversation_id is not None:
            renderer.conversation(chat.conversation_id, new=False)
        return chat

    def say(self, content: str) -> None:
        """Send one message and show its turn; ``TurnFailed`` when the turn ends with an error event."""
        try:
            self._turn(content)
        except Refused as exc:
            if exc.code != "conversation_not_found" or not self._remembered:
                raise
            self._target.memory.forget(self._target.slot)  # the remembered one is gone (e.g. a fresh environment)
            self.conversation_id, self._remembered = None, False
            self._turn(content)

    def _turn(self, content: str) -> None:
        if self.conversation_id is None:
            title = self._title if self._title is not None else content[:MAX_TITLE_CHARS]
            self.conversation_id = self._target.api.start(title)
            self._target.memory.remember(self._target.slot, self.conversation_id)
            self._renderer.conversation(self.conversation_id, new=True)
        events = self._target.api.say(self.conversation_id, content)
        for number, event in enumerate(events):
            if number == 0:
                self._target.memory.remember(self._target.slot, self.conversation_id)
            self._renderer.event(event)
            if event.kind == "message":
                return
            if event.kind == "error":
                raise TurnFailed(str(event.data.get("code")), str(event.data.get("detail", "")))
        raise Unreachable("stream_ended", "the gateway's stream ended before Neptune's answer")


@cli.command()
@click.argument("message", nargs=-1)
@click.option("--conversation", "conversation_id", metavar="ID", help="Continue this conversation.")
@click.option("--new", is_flag=True, help="Start a new conversation rather than continue the last one.")
@click.option("--title", help="The new conversation's title (default: the first message).")
@click.option("--json", "as_json", is_flag=True, help="Print each event as a JSON line.")
@_gateway_options
@click.pass_context
def chat(
    ctx: click.Context,
    message: tuple[str, ...],
    conversation_id: str | None,
    new: bool,
    title: str | None,
    as_json: bool,
    url: str,
    api_key: str | None,
) -> None:
    """Say MESSAGE to Neptune and show its answer as it streams; without MESSAGE, read one message a line
    ("exit" or Ctrl-D ends; Ctrl-C stops waiting for the turn's answer)."""
    if new and conversation_id:
        raise click.UsageError("--new and --conversation exclude each other", ctx)
    target = _target(ctx, url, api_key)
    out, err = _consoles()
    renderer: Renderer = JsonRenderer(sys.stdout) if as_json else TerminalRenderer(out, err)
    session = Chat.open(target, renderer, conversation_id, new=new, title=title)
    if message:
        session.say(" ".join(message))
        return
    while True:
        try:
            line = out.input(Text("you> ", "bold")).strip()
        except EOFError:
            out.print()
            return
        if line.casefold() in EXIT_WORDS:
            return
        if not line:
            continue
        try:
            session.say(line)
        except KeyboardInterrupt:  # Ctrl-C stops listening to this turn (Neptune still records it), not the chat
            err.print(Text("(interrupted: `neptune show` has the turn once it is done)", "dim"))
        except ClientError as exc:
            if not exc.recoverable:
                raise
            report(err, exc)  # the conversation goes on


@cli.command()
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 500))
@click.option("--json", "as_json", is_flag=True, help="Print each conversation as a JSON line.")
@_gateway_options
@click.pass_context
def conversations(ctx: click.Context, limit: int, as_json: bool, url: str, api_key: str | None) -> None:
    """The workspace's conversations, latest first; * marks the one chat continues."""
    target = _target(ctx, url, api_key)
    last = target.memory.get(target.slot)
    out = _consoles()[0]
    for item in target.api.conversations(limit):
        if as_json:
            click.echo(json.dumps(item, ensure_ascii=False))
            continue
        mark = "*" if item.get("conversation_id") == last else " "
        line = f"{mark} {item.get('conversation_id')}  {item.get('turn_count', 0):>3} turns  "
        out.print(Text.assemble(line, (str(item.get("updated_at", ""))[:19], "dim"), f"  {item.get('title', '')}"))


@cli.command()
@click.argument("conversation_id", metavar="[ID]", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the conversation as JSON.")
@_gateway_options
@click.pass_context
def show(ctx: click.Context, conversation_id: str | None, as_json: bool, url: str, api_key: str | None) -> None:
    """A conversation's turns: each message, its tool calls with their results, and the answer (default: the one
    chat continues)."""
    target = _target(ctx, url, api_key)
    conversation_id = conversation_id or target.memory.get(target.slot)
    if conversation_id is None:
        raise click.UsageError("no conversation yet: give its ID", ctx)
    view = target.api.conversation(conversation_id)
    if as_json:
        click.echo(json.dumps(view, ensure_ascii=False, indent=2))
        return
    out = _consoles()[0]
    out.print(Text(f"{view.get('conversation_id')}  {view.get('title', '')}", "bold"))
    for turn in view.get("turns", []):
        out.print(Text.assemble(("you> ", "bold"), str(turn.get("content", ""))))
        for use in turn.get("tools", []):
            out.print(tool_call_line(str(use.get("name")), use.get("arguments") or {}))
            out.print(tool_result_line(use.get("ok") is True, use.get("result") or {}))
        out.print(Text(str(turn.get("answer", ""))))


def main() -> None:
    cli(obj=Wiring())
