"""The tools an agent gets while it works on a team run, with a model that can call tools (the openai provider).

Each tool runs in the runtime, within the task's workspace and run: it reads or writes the run's shared context (its
working memory, scope ``team_run``), asks memory what it recalls (always through the memory service's commands and
queries over NATS), or sends a message to a teammate or a team (a PostMessage to the orchestrator). A tool never
raises into the model call: bad arguments or a failure come back to the model as ``{"error": ...}``, so it can
correct itself. What a tool writes is keyed by the attempt, the turn and the call's place in it, so a repeated
delivery of the same attempt writes nothing twice.

The model's turns are bounded (``MAX_TOOL_TURNS``); each turn is a model call of its own, reserved against the
task's budgets like the first and counted in its usage.
"""

import asyncio
import hashlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from contracts import Actor, Command, OutcomeStatus
from contracts.agents import GetAgent
from contracts.delegations import GetDelegation
from contracts.mail import MAX_BODY_CHARS, Addressee, GetThread, PostMessage
from contracts.memory import ListMemory, PutWorkingEntry, RetrieveMemory, Scope, ScopeKind, Tier
from contracts.teams import GetTeam
from contracts.workflows import AgentTask
from orchestrator.delegating import delegate_from_task
from orchestrator.providers.base import Tool, ToolCall
from orchestrator.runtime.team_context import run_scope
from servicekit.bus import Bus
from servicekit.commands import envelope_for, last_outcome, publish_command
from servicekit.queries import QueryFailed, ask

log = logging.getLogger(__name__)
MAX_TOOL_TURNS = 4
MAX_RESULT_CHARS = 6000
MAX_VALUE_BYTES = 16_000
KEY = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DELEGATE_WAIT_S = 10.0  # how long the tool waits for a delegation's result before answering with its id
SHARED_CONTEXT_TOOLS = frozenset({"read_shared_context", "write_shared_context"})  # a team run's only
Result = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Use:
    """One tool call to run: the task, the agent working on it, where it is in the attempt."""

    task: AgentTask
    agent_id: str
    call: int
    index: int
    arguments: dict[str, Any]

    @property
    def command_id(self) -> str:
        return f"tool-{self.task.key.replace(':', '-')}-{self.call}-{self.index}"

    def derived_id(self, prefix: str) -> str:
        """An id of what this call creates (a message, a thread), the same however often the attempt runs."""
        return f"{prefix}_{hashlib.sha256(self.command_id.encode()).hexdigest()[:24]}"


Handler = Callable[[Use], Awaitable[Result]]

READ = Tool(
    name="read_shared_context",
    description="Read the run's shared context: one entry by key, or every entry when no key is given.",
    parameters={
        "type": "object",
        "properties": {"key": {"type": "string", "description": "An entry's key; leave it out for all."}},
        "additionalProperties": False,
    },
)
WRITE = Tool(
    name="write_shared_context",
    description="Add or replace an entry of the run's shared context, which every member of the run reads.",
    parameters={
        "type": "object",
        "properties": {
            "key": {"type": "string", "description": "Letters, digits and _ . : - only, at most 128."},
            "value": {"description": "Any JSON value, at most 16 kB."},
        },
        "required": ["key", "value"],
        "additionalProperties": False,
    },
)
RECALL = Tool(
    name="retrieve_memory",
    description="Ask the workspace's memory what it knows about something (long-term knowledge and the run's context).",
    parameters={
        "type": "object",
        "properties": {"query": {"type": "string", "description": "What to look for, in a few words."}},
        "required": ["query"],
        "additionalProperties": False,
    },
)

SEND = Tool(
    name="send_message",
    description="Send a message to a teammate (agent_id) or a team (team_id): it reaches them in their next task. "
    "Give thread_id to answer in a thread; leave it out to start one.",
    parameters={
        "type": "object",
        "properties": {
            "agent_id": {"type": "string", "description": "The agent to write to."},
            "team_id": {"type": "string", "description": "Or the team, whose members all receive it."},
            "thread_id": {"type": "string", "description": "A thread to answer in."},
            "body": {"type": "string", "description": f"The message, at most {MAX_BODY_CHARS} characters."},
        },
        "required": ["body"],
        "additionalProperties": False,
    },
)

DELEGATE = Tool(
    name="delegate",
    description="Hand a sub-task to another agent: the one named (agent_id), or the least loaded free agent with a "
    "capability or role. Answers with its result if it comes within a few seconds, else with the delegation's id. "
    "Refused when it would loop back to an agent already in the chain of delegations or go too deep.",
    parameters={
        "type": "object",
        "properties": {
            "task": {"type": "string", "description": "What the other agent must do."},
            "agent_id": {"type": "string", "description": "The agent to hand it to."},
            "capability": {"type": "string", "description": "Or a capability the agent must have."},
            "role": {"type": "string", "description": "Or a role the agent must have."},
            "input": {"type": "object", "description": "Data the agent is given with the task."},
        },
        "required": ["task"],
        "additionalProperties": False,
    },
)


class RunTools:
    """The tools of a team run's tasks, and their execution."""

    def __init__(self, bus: Bus, timeout_s: float) -> None:
        self._bus = bus
        self._timeout_s = timeout_s
        self._handlers: dict[str, tuple[Tool, Handler]] = {
            READ.name: (READ, self._read),
            WRITE.name: (WRITE, self._write),
            RECALL.name: (RECALL, self._recall),
            SEND.name: (SEND, self._send_message),
            DELEGATE.name: (DELEGATE, self._delegate),
        }

    def add(self, tool: Tool, handler: Handler) -> None:
        """Another tool for the runs' tasks (messaging, delegation), run the same way."""
        self._handlers[tool.name] = (tool, handler)

    def offered(self, task: AgentTask) -> list[Tool]:
        """The tools a task may call: all of them in a team run; in a delegation, all but the run's shared context;
        none for a plain workflow's task."""
        if task.origin is None:
            return []
        shared = run_scope(task) is not None
        return [tool for tool, _ in self._handlers.values() if shared or tool.name not in SHARED_CONTEXT_TOOLS]

    async def run(self, task: AgentTask, agent_id: str, call: int, calls: list[ToolCall]) -> list[str]:
        """The result of each tool call, as the JSON text the model is given back."""
        results = []
        for index, tool_call in enumerate(calls):
            known = self._handlers.get(tool_call.name)
            if known is not None and known[0] not in self.offered(task):
                known = None  # a tool this task was not offered is not there for it
            use = Use(task, agent_id, call, index, tool_call.arguments)
            if known is None:
                result: Result = {"error": f"there is no tool {tool_call.name[:80]!r}"}
            else:
                try:
                    result = await known[1](use)
                except Exception as exc:  # a tool's failure is the model's to handle, not the task's
                    log.warning("tool %s of %s failed", tool_call.name, task.key, exc_info=True)
                    result = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            text = json.dumps(result, ensure_ascii=False, default=str)
            results.append(text if len(text) <= MAX_RESULT_CHARS else text[:MAX_RESULT_CHARS] + " ...(truncated)")
        return results

    async def _ask(
        self, use: Use, query: ListMemory | RetrieveMemory | GetAgent | GetTeam | GetThread | GetDelegation
    ) -> Any:
        try:
            return await ask(self._bus, use.task.workspace_id, query, self._timeout_s)
        except QueryFailed as exc:
            return {"error": f"{type(query).__name__} was not answered: {exc}"}

    async def _read(self, use: Use) -> Result:
        scope = run_scope(use.task)
        assert scope is not None
        key = use.arguments.get("key")
        if key is not None and (not isinstance(key, str) or not KEY.match(key)):
            return {"error": "key: letters, digits and _ . : - only, 1 to 128 of them"}
        rows = await self._ask(use, ListMemory(tier=Tier.WORKING, scope=scope, key=key, limit=50))
        if isinstance(rows, dict):
            return rows
        entries = {str(r["key"]): r.get("value") for r in rows if isinstance(r, dict) and "key" in r}
        if key is not None and key not in entries:
            return {"error": f"the shared context has no entry {key!r}", "keys": []}
        return {"entries": entries}

    async def _write(self, use: Use) -> Result:
        scope = run_scope(use.task)
        assert scope is not None
        key, value = use.arguments.get("key"), use.arguments.get("value")
        if not isinstance(key, str) or not KEY.match(key):
            return {"error": "key: letters, digits and _ . : - only, 1 to 128 of them"}
        if "value" not in use.arguments:
            return {"error": "value is required"}
        if len(json.dumps(value, default=str).encode()) > MAX_VALUE_BYTES:
            return {"error": f"value: at most {MAX_VALUE_BYTES} bytes of JSON"}
        await self._publish(use, "memory", PutWorkingEntry(scope=scope, key=key, value=value))
        return {"written": key}

    async def _publish(self, use: Use, service: str, command: Command) -> None:
        actor = Actor(kind="agent", id=use.agent_id)
        envelope = envelope_for(command, workspace_id=use.task.workspace_id, command_id=use.command_id, actor=actor)
        await publish_command(self._bus, service, envelope)

    async def _send_message(self, use: Use) -> Result:
        args = use.arguments
        body, thread_id = args.get("body"), args.get("thread_id")
        agent_id, team_id = args.get("agent_id"), args.get("team_id")
        if not isinstance(body, str) or not body.strip() or len(body) > MAX_BODY_CHARS:
            return {"error": f"body: the message's text, 1 to {MAX_BODY_CHARS} characters"}
        if (agent_id is None) == (team_id is None) and thread_id is None:
            return {"error": "give agent_id or team_id (or thread_id to answer in a thread)"}
        named = [v for v in (agent_id, team_id, thread_id) if v is not None]
        if not all(isinstance(v, str) and ID.match(v) for v in named):
            return {"error": "ids: letters, digits, _ and - only, 1 to 64 of them"}
        if agent_id is not None and team_id is not None:
            return {"error": "give agent_id or team_id, not both"}
        # what the orchestrator would refuse, asked first: an agent's command gets no answer when it is refused
        checks: list[tuple[GetAgent | GetTeam | GetThread, str]] = []
        if agent_id is not None:
            checks.append((GetAgent(agent_id=agent_id), f"agent {agent_id} cannot be written to: not found or retired"))
        if team_id is not None:
            checks.append((GetTeam(team_id=team_id), f"there is no team {team_id}"))
        if thread_id is not None:
            checks.append((GetThread(thread_id=thread_id), f"there is no thread {thread_id}"))
        for query, refusal in checks:
            found = await self._ask(use, query)
            if isinstance(found, dict) and ("error" in found or found.get("retired")):
                return {"error": refusal}
        to = None if agent_id is None and team_id is None else Addressee(agent_id=agent_id, team_id=team_id)
        new_thread = thread_id is None
        thread = thread_id if isinstance(thread_id, str) else use.derived_id("th")
        origin = use.task.origin
        command = PostMessage(
            thread_id=thread,
            message_id=use.derived_id("msg"),
            new_thread=new_thread,
            to=to,
            body=body,
            from_agent_id=use.agent_id,
            run_id=origin.id if origin else None,
        )
        await self._publish(use, "orchestrator", command)
        return {"sent": command.message_id, "thread_id": thread}

    async def _recall(self, use: Use) -> Result:
        query = use.arguments.get("query")
        if not isinstance(query, str) or not query.strip():
            return {"error": "query: a few words to look for"}
        scopes = [Scope(kind=ScopeKind.EXECUTION, id=use.task.execution_id)]
        run = run_scope(use.task)
        if run is not None:
            scopes.append(run)
        found = await self._ask(use, RetrieveMemory(query=query[:500], agent_id=use.agent_id, scopes=scopes, limit=5))
        if isinstance(found, dict):
            return found
        return {"found": [str(item.get("content", ""))[:1000] for item in found if isinstance(item, dict)]}

    async def _delegate(self, use: Use) -> Result:
        args, task, origin = use.arguments, use.task, use.task.origin
        text = args.get("task")
        if not isinstance(text, str) or not text.strip():
            return {"error": "task: what the other agent must do"}
        run_id = None if origin is None else origin.id if origin.kind == "team_run" else origin.budget_run_id
        left_s = (datetime.fromisoformat(task.deadline) - datetime.now(UTC)).total_seconds()
        delegation_id = use.derived_id("dg")
        try:
            await delegate_from_task(
                self._bus,
                task,
                use.agent_id,
                delegation_id=delegation_id,
                command_id=use.command_id,
                task_text=text,
                to_agent_id=args.get("agent_id"),
                capability=args.get("capability"),
                role=args.get("role"),
                input=args.get("input") if isinstance(args.get("input"), dict) else {},
                budget=task.budget,  # within the run's budget: its calls hold on the run's (run_id)
                deadline_s=max(1, min(600, int(left_s))),
                run_id=run_id,
            )
        except ValidationError as exc:
            return {"error": "; ".join(str(e["msg"]) for e in exc.errors())[:500]}
        return await self._delegation_result(use, delegation_id, min(DELEGATE_WAIT_S, max(0.0, left_s / 2)))

    async def _delegation_result(self, use: Use, delegation_id: str, wait_s: float) -> Result:
        """The delegation's result when it ends within ``wait_s``; its refusal (a loop, too deep, no free agent)
        as an error; else where it stands."""
        until = time.monotonic() + wait_s
        while True:
            found = await self._ask(use, GetDelegation(delegation_id=delegation_id))
            if isinstance(found, dict) and found.get("status") in {"succeeded", "failed"}:
                keep = ("delegation_id", "agent_id", "status", "output", "error", "error_kind")
                return {k: found.get(k) for k in keep if found.get(k) is not None}
            if not (isinstance(found, dict) and "status" in found):
                refused = await last_outcome(self._bus, use.task.workspace_id, use.command_id)
                if refused is not None and refused.status is OutcomeStatus.REJECTED:
                    return {"error": refused.error_message or "refused", "code": refused.error_code}
            if time.monotonic() >= until:
                status = found.get("status") if isinstance(found, dict) else None
                return {"delegation_id": delegation_id, "status": status or "requested"}
            await asyncio.sleep(0.25)
