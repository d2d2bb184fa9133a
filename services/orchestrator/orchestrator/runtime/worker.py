"""The agent runtime's task handler: a task from the TASKS stream in, a RecordTaskResult command out.

For each delivery of a task (an attempt of an agent step): answer from the attempt's record if it has a result
already (counting the usage of the answer it came from, once); give up with ``timeout`` once its deadline has
passed; route it to an agent (back to the same agent and spec when it was routed before) and take one of the
agent's concurrency slots, or wait (``Defer``) while every capable agent is busy or paused, or fail at once with
``no_agent`` when the workspace has no agent that could ever take it; build the prompt (with what the memory
service recalls, asked over NATS); reserve the call's worst case against every budget that applies
(``budget_exceeded`` when one has not enough left); call the provider within the deadline under the attempt's call
lease, telling the broker the task is in progress meanwhile; check the output against the step's schema and what
MongoDB can store (``invalid_output``); record the result with the answer it came from on the attempt, count its
usage and settle the reservations, and only then send it. See ``ledger`` for why this calls a model at most once
per attempt except after a crash mid-call.

A first delivery, the common case, takes the shortest way: the agents and the workspace's cap come from the
``Directory`` (kept in the process), and the attempt's record is opened with its first call counted in one write,
made while the prompt's context is read; anything less simple (a redelivery, an attempt seen before, no free agent)
takes the full path, which reads the record first and the read models afresh.
"""

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4

from pydantic import ValidationError

from contracts import Actor
from contracts.agents import AgentSpec, ModelSetting
from contracts.memory import RecallForTask, RetrieveMemory, Scope, ScopeKind
from contracts.outputs import output_errors
from contracts.workflows import AgentTask, RecordTaskResult, result_command_id
from orchestrator.domain.routing import Candidate, Verdict, route
from orchestrator.providers import Providers
from orchestrator.providers.base import (
    ChatMessage,
    ModelError,
    ModelRequest,
    ModelResponse,
    Tool,
    Usage,
    estimate_prompt_tokens,
    worst_case_prompt_tokens,
)
from orchestrator.runtime.budgets import Budgets, Hold
from orchestrator.runtime.budgets import Scope as BudgetScope
from orchestrator.runtime.directory import Directory
from orchestrator.runtime.ledger import AttemptRecord, Attempts, UsageLedger
from orchestrator.runtime.prompt import build_messages
from orchestrator.runtime.slots import Slots
from orchestrator.runtime.team_context import MAX_SHARED_ENTRIES, RunContext, run_scope
from orchestrator.runtime.tools import MAX_TOOL_TURNS, RunTools
from orchestrator.settings import RuntimeSettings
from servicekit.bus import Bus, DeadLetter, Defer, PermanentFailure, deliveries, in_progress
from servicekit.commands import envelope_for, publish_command
from servicekit.eventstore import utcnow
from servicekit.queries import QueryFailed, ask

log = logging.getLogger(__name__)
Document = dict[str, Any]
HOLD_MARGIN = timedelta(seconds=60)  # a reservation outlives its task's deadline by this, then may be swept
DEFAULT_DEADLINE = timedelta(minutes=5)
LOAD_VIEW_S = 0.25  # a first delivery routes on the workspace's load read at most this long ago (and its own takes)
WAIT_MARGIN_S = 2.0  # a task that waits for a free agent gives up this long before its deadline (or a tenth of it)


def _wait(left_s: float) -> float:
    """How long a task waits for a free agent before its next try: a quarter second, growing by a quarter each
    delivery up to 30 s (so TASK_MAX_DELIVER deliveries outlast the longest step timeout), and never past a quarter
    of the time left."""
    return max(0.05, min(left_s / 4, 0.25 * 1.25 ** min(deliveries() - 1, 40), 30.0))


def _deadline(task: AgentTask, first_seen: datetime) -> datetime:
    """The task's deadline, or the default from when its attempt was first seen."""
    return datetime.fromisoformat(task.deadline) if task.deadline else first_seen + DEFAULT_DEADLINE


LOCAL_SETTING = ModelSetting(provider="local")  # a dry run's steps: the deterministic provider, whatever the agent's


def cost_micros(prices: dict[str, tuple[float, float]], model: str, prompt: int, completion: int) -> int:
    """The cost of a call in millionths of a dollar: prices are USD per million tokens, so per token in micros."""
    per_prompt, per_completion = prices.get(model, (0.0, 0.0))
    return math.ceil(prompt * per_prompt + completion * per_completion)


class TaskWorker:
    def __init__(
        self,
        *,
        bus: Bus,
        directory: Directory,
        slots: Slots,
        budgets: Budgets,
        attempts: Attempts,
        usage: UsageLedger,
        providers: Providers,
        settings: RuntimeSettings,
        worker_id: str,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._bus = bus
        self._directory = directory
        self._slots = slots
        self._budgets = budgets
        self._attempts = attempts
        self._usage = usage
        self._providers = providers
        self._settings = settings
        self._worker = worker_id
        self._clock = clock
        self._runs = RunContext(bus, settings.memory_timeout_s)
        self._tools = RunTools(bus, settings.memory_timeout_s)

    async def handle(self, body: bytes, headers: dict[str, str]) -> None:
        try:
            task = AgentTask.model_validate_json(body)
        except ValidationError as exc:
            raise PermanentFailure(f"malformed task: {exc.error_count()} errors") from exc
        ws, now = task.workspace_id, self._clock()
        if deliveries() == 1 and await self._first_delivery(task, now):
            return
        record = await self._attempts.open(ws, task.key, now)
        if record.result is not None:
            await self._account_recorded(task, record)
            await self._slots.release(ws, task.key)
            await self._send(task, record.result)  # answered before: the broker drops the repeat
            return
        deadline = _deadline(task, record.first_seen_at)
        if record.answer is not None and record.agent_spec is not None:  # the model answered; what followed failed
            await self._conclude(task, AgentSpec.model_validate(record.agent_spec), record.answer)
            await self._slots.release(ws, task.key)
            return
        if now >= deadline:
            await self._slots.release(ws, task.key)
            await self._release_calls(task, record.calls + 1, self._budget_ids(task))
            await self._finish(task, None, ok=False, kind="timeout", error="the deadline passed before an agent ran")
            return
        agent = await self._take_agent(task, record, now, deadline)
        if agent is None:
            return
        await self._in_slot(task, self._run(task, agent, deadline))

    async def _in_slot(self, task: AgentTask, work: Awaitable[bool]) -> bool:
        """Run ``work`` in the agent slot the task took; the slot is freed after it, unless it is handed on: to
        another delivery of the attempt (Defer) or to the full path (``work`` answers False)."""
        try:
            done = await work
        except Defer:
            raise  # another delivery of this attempt is at work, in the same slot (it is the attempt's): keep it
        except BaseException:
            await self._slots.release(task.workspace_id, task.key)
            raise
        if done:
            await self._slots.release(task.workspace_id, task.key)
        return done

    async def _first_delivery(self, task: AgentTask, now: datetime) -> bool:
        """The common case in as few round trips as it takes: a task delivered for the first time is routed (on
        the directory's agents), takes a slot, and opens its attempt record with its first call counted in one
        write while the prompt's context is read. False (the full path follows, in the slot it may have taken)
        when it is not that simple: no free agent, an attempt seen before, a deadline passed."""
        ws = task.workspace_id
        deadline = _deadline(task, now)  # first seen now
        if now >= deadline:
            return False
        loads = await self._slots.recent_in_flight(ws, now, LOAD_VIEW_S)
        candidates = await self._directory.candidates(ws, loads)
        verdict = route(candidates, task.agent_id, task.role, task.capability)
        for agent in verdict.choices if verdict.verdict is not Verdict.NO_AGENT else ():
            if await self._slots.acquire(ws, agent.agent_id, agent.spec.concurrency_limit, task.key, self._worker, now):
                return await self._in_slot(task, self._first_call(task, agent, deadline, now))
        return False

    async def _first_call(self, task: AgentTask, agent: Candidate, deadline: datetime, now: datetime) -> bool:
        scopes = await self._scopes(task, agent.spec)
        if self._unpriced_model(task, agent, scopes) is not None:
            return False  # the full path opens the record first, and records the refusal on it
        ws, holder, spec_doc = task.workspace_id, self._holder(), agent.spec.model_dump(mode="json")
        begun, read = await asyncio.gather(
            self._attempts.begin(ws, task.key, agent.agent_id, spec_doc, holder, now, self._lease()),
            self._context(task, agent),
            return_exceptions=True,
        )
        if isinstance(begun, BaseException):
            raise begun
        if isinstance(read, BaseException):
            if begun is not None:  # no call was made: the next delivery need not wait for the lease to run out
                await self._attempts.drop_lease(ws, task.key, holder)
            raise read
        if begun is None:
            return False
        await self._converse(task, agent, deadline, scopes, read, begun, holder)
        return True

    async def give_up(self, letter: DeadLetter) -> None:
        """A task dead-lettered: its step fails now instead of at its timeout. One that waited for a busy agent
        on every delivery is ``no_agent``; one that failed on every delivery, ``runtime_error``."""
        try:
            task = AgentTask.model_validate_json(letter.body)
        except ValidationError:
            return  # not a task: nothing to answer
        record = await self._attempts.open(task.workspace_id, task.key, self._clock())
        await self._account_recorded(task, record)  # a call answered: counted before its holds are released
        await self._slots.release(task.workspace_id, task.key)
        await self._release_calls(task, record.calls + 1, self._budget_ids(task))
        if letter.reason == "deferred too often":
            await self._finish(task, None, ok=False, kind="no_agent", error="no agent became available in time")
        else:
            await self._finish(task, None, ok=False, kind="runtime_error", error="the agent runtime could not run it")
        log.error("task %s dead-lettered: %s", task.key, letter.reason)

    # Routing --------------------------------------------------------------------------------------------------

    async def _take_agent(
        self, task: AgentTask, record: AttemptRecord, now: datetime, deadline: datetime
    ) -> Candidate | None:
        """The agent whose slot the task took; None when it was answered (``no_agent``); Defer to wait."""
        ws = task.workspace_id
        take = self._slots.acquire
        in_flight = await self._slots.in_flight(ws, now)
        candidates = await self._directory.candidates(ws, in_flight, fresh=True)
        left = (deadline - now).total_seconds()
        if record.agent_id is not None:  # routed before: back to the same agent and spec, in the slot it may hold
            held = next((c for c in candidates if c.agent_id == record.agent_id), None)
            if held is not None:
                if record.agent_spec is not None:
                    held = replace(held, spec=AgentSpec.model_validate(record.agent_spec))
                if await take(ws, held.agent_id, held.spec.concurrency_limit, task.key, self._worker, now):
                    return held
                raise Defer(_wait(left))
        verdict = route(candidates, task.agent_id, task.role, task.capability)
        if verdict.verdict is Verdict.NO_AGENT:
            if now - record.first_seen_at < timedelta(seconds=self._settings.no_agent_grace_s):
                raise Defer(0.5)  # an agent created a moment ago may not be in the read model yet
            wanted = task.agent_id or " / ".join(x for x in (task.role, task.capability) if x)
            error = f"no agent of the workspace can take it ({wanted})"
            await self._finish(task, None, ok=False, kind="no_agent", error=error)
            return None
        for choice in verdict.choices:
            if await take(ws, choice.agent_id, choice.spec.concurrency_limit, task.key, self._worker, now):
                return choice
        # Every capable agent is busy or paused: wait, up to (nearly) the deadline, then say why it did not run.
        if left <= min(WAIT_MARGIN_S, (deadline - record.first_seen_at).total_seconds() / 10):
            wanted = task.agent_id or " / ".join(x for x in (task.role, task.capability) if x)
            error = f"no agent became available before the step's deadline ({wanted}: all busy or paused)"
            await self._finish(task, None, ok=False, kind="no_agent", error=error)
            return None
        raise Defer(_wait(left))

    # The call -------------------------------------------------------------------------------------------------

    async def _run(self, task: AgentTask, agent: Candidate, deadline: datetime) -> bool:
        spec, ws = agent.spec, task.workspace_id
        scopes = await self._scopes(task, spec)
        if await self._unpriced(task, agent, scopes):
            return True
        context = await self._context(task, agent)
        holder = self._holder()
        spec_doc = spec.model_dump(mode="json")
        call = await self._attempts.calling(
            ws, task.key, agent.agent_id, spec_doc, holder, self._clock(), self._lease()
        )
        if call is None:  # another delivery of this attempt holds its call, or has just finished it
            again = await self._attempts.open(ws, task.key, self._clock())
            if again.result is not None:
                await self._account_recorded(task, again)  # in case the delivery that recorded it died before
                await self._send(task, again.result)
                return True
            if again.answer is not None:
                await self._conclude(task, spec, again.answer)
                return True
            raise Defer(1.0)
        await self._converse(task, agent, deadline, scopes, context, call, holder)
        return True

    def _holder(self) -> str:
        """Who holds an attempt's call lease: one handling of one delivery."""
        return f"{self._worker}/{uuid4().hex[:12]}"

    def _lease(self) -> timedelta:
        return timedelta(seconds=self._settings.slot_lease_s)

    async def _context(self, task: AgentTask, agent: Candidate) -> list[ChatMessage]:
        """The prompt: the agent's and the step's instructions with what memory recalls, the run's shared context
        and the messages the agent received (two reads over NATS, each bounded: at once); the handoff recorded."""
        (memories, shared), received = await asyncio.gather(
            self._recall(task, agent.spec, agent.agent_id),
            self._runs.received(task, agent.agent_id),
        )
        messages = build_messages(agent.spec, task, memories, shared, received)
        await self._runs.record_handoff(task, agent.agent_id, sorted(shared), [m["message_id"] for m in received])
        return messages

    def _model(self, task: AgentTask, spec: AgentSpec) -> tuple[str, str]:
        dry_run = task.origin is not None and task.origin.kind == "dry_run"
        return self._providers.resolve(LOCAL_SETTING if dry_run else spec.model)

    def _unpriced_model(self, task: AgentTask, agent: Candidate, scopes: dict[str, BudgetScope]) -> str | None:
        """The model, when a budget in money applies and the model has no price (so the budget cannot be kept)."""
        provider, model = self._model(task, agent.spec)
        if provider == "local" or model in self._settings.model_prices:
            return None
        return None if all(s.micros is None for s in scopes.values()) else model

    async def _unpriced(self, task: AgentTask, agent: Candidate, scopes: dict[str, BudgetScope]) -> bool:
        """A budget in money on a model with no price cannot be kept: the step fails (True) with no call made."""
        model = self._unpriced_model(task, agent, scopes)
        if model is None:
            return False
        error = f"model {model} has no price in MODEL_PRICES, so a budget in money cannot be kept"
        await self._finish(task, agent, ok=False, kind="budget_exceeded", error=error)
        return True

    async def _converse(
        self,
        task: AgentTask,
        agent: Candidate,
        deadline: datetime,
        scopes: dict[str, BudgetScope],
        messages: list[ChatMessage],
        call: int,
        holder: str,
    ) -> None:
        """The model calls of the attempt from call number ``call`` (counted, its lease held by ``holder``), to the
        result recorded and sent."""
        spec, ws = agent.spec, task.workspace_id
        provider, model = self._model(task, spec)
        tools = [] if provider == "local" else self._tools.offered(task)

        def prompt_size(sent: list[ChatMessage], offered: list[Tool]) -> int:
            if provider == "local":
                return estimate_prompt_tokens(sent)  # what the local provider will count itself
            return worst_case_prompt_tokens(sent, task.output_schema, offered)

        max_out = min(spec.model.max_output_tokens, task.max_output_tokens or spec.model.max_output_tokens)
        prices = self._settings.model_prices
        lease = self._lease()
        await self._release_calls(task, call, [scope.budget_id for scope in scopes.values()])
        turn = 0
        while True:  # one model call per turn; a turn with tool calls gets their results and another turn
            offered = tools if turn < MAX_TOOL_TURNS else []  # the last turn must answer
            prompt_tokens = prompt_size(messages, offered)
            hold = Hold(prompt_tokens + max_out, cost_micros(prices, model, prompt_tokens, max_out))
            short = await self._budgets.reserve(
                list(scopes.values()), f"{task.key}/{call}", hold, deadline + HOLD_MARGIN
            )
            if short is not None:
                kind = next(name for name, scope in scopes.items() if scope == short)
                error = f"the call needs up to {hold.tokens} tokens, more than the {kind} budget has left"
                await self._finish(task, agent, ok=False, kind="budget_exceeded", error=error)
                return
            timeout_s = min(self._settings.max_call_s, (deadline - self._clock()).total_seconds())
            request = ModelRequest(
                model=model,
                messages=messages,
                max_output_tokens=max_out,
                timeout_s=max(0.001, timeout_s),
                temperature=spec.model.temperature,
                output_schema=task.output_schema,
                tools=offered,
                role=spec.role,
            )
            try:
                response = await self._call(task, holder, provider, request)
            except ModelError as exc:
                usage = exc.usage
                if usage is None and exc.kind == "timeout" and provider != "local":
                    usage = Usage(prompt_tokens, max_out, estimated=True)  # it may have been billed: its worst case
                await self._account(task, agent.agent_id, call, scopes, (provider, model), usage)
                await self._finish(task, agent, ok=False, kind=exc.kind, error=str(exc)[:2000])
                return
            if not (response.tool_calls and offered):
                break
            await self._account(task, agent.agent_id, call, scopes, (provider, model), response.usage)
            results = await self._tools.run(task, agent.agent_id, call, response.tool_calls)
            messages = [
                *messages,
                ChatMessage("assistant", response.text, tool_calls=response.tool_calls),
                *(
                    ChatMessage("tool", text, tool_call_id=c.id)
                    for c, text in zip(response.tool_calls, results, strict=True)
                ),
            ]
            following = await self._attempts.next_call(ws, task.key, holder, self._clock(), lease)
            if following is None:
                raise Defer(1.0)  # the call lease was lost: another handling of the attempt goes on with it
            call, turn = following, turn + 1
        answer = {
            "call": call,
            "agent_id": agent.agent_id,
            "provider": provider,
            "model": model,
            "text": response.text.encode("utf-8", "replace").decode("utf-8"),
            "output": response.output if not unstorable(response.output) else None,
            "prompt_tokens": response.usage.prompt_tokens,
            "completion_tokens": response.usage.completion_tokens,
            "estimated": response.usage.estimated,
        }
        # The result and what its answer cost in one write; then its usage (a redelivery counts it from the record
        # if this worker dies in between) and, for a team run member, the recorded output shared (confirmed by
        # memory, so its write is done before the engine hands the result on); then the send.
        verdict = self._verdict(task, answer)
        usage_only = {k: v for k, v in answer.items() if k not in {"text", "output"}}  # the result holds the output
        stored = await self._record_result(task, agent.agent_id, verdict, usage_only)
        share = stored.get("ok") is True and run_scope(task) is not None
        await asyncio.gather(
            self._account(task, agent.agent_id, call, scopes, (provider, model), response.usage),
            self._runs.share_output(task, agent.agent_id, stored.get("output")) if share else asyncio.sleep(0),
        )
        await self._send(task, stored, shared=share)

    async def _conclude(self, task: AgentTask, spec: AgentSpec, answer: Document) -> None:
        """What a model's answer kept without its result comes to (a record an earlier runtime left so): its usage
        counted and settled, its output checked, the result."""
        await self._account_answer(task, spec, answer)
        stored = await self._record_result(task, str(answer["agent_id"]), self._verdict(task, answer))
        await self._send(task, stored)

    async def _account_recorded(self, task: AgentTask, record: AttemptRecord) -> None:
        """Count the usage of the answer the record keeps, if any (keyed by its call: once, however often)."""
        if record.answer is not None and record.agent_spec is not None:
            await self._account_answer(task, AgentSpec.model_validate(record.agent_spec), record.answer)

    async def _account_answer(self, task: AgentTask, spec: AgentSpec, answer: Document) -> None:
        usage = Usage(int(answer["prompt_tokens"]), int(answer["completion_tokens"]), bool(answer["estimated"]))
        scopes = await self._scopes(task, spec)
        model = (str(answer["provider"]), str(answer["model"]))
        await self._account(task, str(answer["agent_id"]), int(answer["call"]), scopes, model, usage)

    def _verdict(self, task: AgentTask, answer: Document) -> RecordTaskResult:
        """The step's result from the model's answer: its output, or ``invalid_output`` saying what is wrong."""
        output, problems = self._output(task, answer.get("output"), str(answer["text"]))
        if problems:
            return self._result(task, ok=False, kind="invalid_output", error="; ".join(problems)[:2000])
        return self._result(task, ok=True, output=output)

    async def _call(self, task: AgentTask, holder: str, provider: str, request: ModelRequest) -> ModelResponse:
        model = self._providers.get(provider)
        keep_alive = asyncio.create_task(self._keep_alive(task, holder))
        try:
            async with asyncio.timeout(request.timeout_s):
                return await model.complete(request)
        except TimeoutError:
            raise ModelError("the model did not answer before the task's deadline", kind="timeout") from None
        finally:
            keep_alive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keep_alive

    async def _keep_alive(self, task: AgentTask, holder: str) -> None:
        """While the model works: the broker keeps the task ours, the agent's slot and the call's lease stay held."""
        every = max(0.5, min(self._settings.command_ack_wait_s, self._settings.slot_lease_s) / 3)
        lease = timedelta(seconds=self._settings.slot_lease_s)
        while True:
            await asyncio.sleep(every)
            try:
                await in_progress()
                now = self._clock()
                await self._slots.renew(task.workspace_id, task.key, now)
                await self._attempts.renew(task.workspace_id, task.key, holder, now, lease)
            except Exception:  # the next beat tries again; the call goes on
                log.warning("could not renew task %s", task.key, exc_info=True)

    def _output(self, task: AgentTask, parsed: Any, text: str) -> tuple[Any, list[str]]:
        """The step's output and what is wrong with it: not JSON where a schema asks for it, not following the
        schema, or not storable (what MongoDB refuses in a document)."""
        output = parsed
        if output is None:
            try:
                output = json.loads(text)
            except ValueError:
                if task.output_schema is not None:
                    return None, ["the answer is not JSON"]
                output = {"summary": text}
        problems = unstorable(output)
        if problems or task.output_schema is None:
            return output, problems
        try:
            return output, output_errors(task.output_schema, output)
        except (RecursionError, ValueError, LookupError) as exc:  # a schema the checks on save let through
            return output, [f"the answer could not be checked against the schema ({type(exc).__name__})"]

    async def _recall(self, task: AgentTask, spec: AgentSpec, agent_id: str) -> tuple[list[str], dict[str, Any]]:
        """What memory recalls for the agent and the execution, and for a team run's member the run's shared
        context by key (one query either way); nothing (and a warning) if memory does not answer."""
        words = " ".join(x for x in (task.step_name, task.instructions, json.dumps(task.input)[:300]) if x)
        scopes = [Scope(kind=ScopeKind.EXECUTION, id=task.execution_id)]
        run = run_scope(task)
        asked = RetrieveMemory(query=words[:500] or spec.role, agent_id=agent_id, scopes=scopes, limit=5)
        query = (
            asked
            if run is None
            else RecallForTask(
                **{**asked.model_dump(), "scopes": [*scopes, run]}, shared=run, shared_limit=MAX_SHARED_ENTRIES
            )
        )
        try:
            found = await ask(self._bus, task.workspace_id, query, self._settings.memory_timeout_s)
        except QueryFailed as exc:
            log.warning("memory recall for %s failed: %s", task.key, exc)
            return [], {}
        recalled, rows = (found, []) if run is None else (found.get("recalled", []), found.get("shared", []))
        memories = [str(item.get("content", "")) for item in recalled if isinstance(item, dict)]
        return memories, {str(row["key"]): row.get("value") for row in rows if isinstance(row, dict) and "key" in row}

    # Budgets and usage ----------------------------------------------------------------------------------------

    def _budget_ids(self, task: AgentTask) -> list[str]:
        """The budgets a task's calls may hold on: its agent's per-task one, its execution's (a team run's, shared by
        the executions of the run, and by the delegations made during it: each gives its own limit, so the lead's
        summary keeps a reserve the others cannot take), the workspace month's."""
        ws, origin = task.workspace_id, task.origin
        run = None if origin is None else origin.id if origin.kind == "team_run" else origin.budget_run_id
        shared = f"{ws}:team_run:{run}" if run else f"{ws}:execution:{task.execution_id}"
        return [f"{ws}:task:{task.key}", shared, f"{ws}:month:{self._clock():%Y-%m}"]

    async def _scopes(self, task: AgentTask, spec: AgentSpec) -> dict[str, BudgetScope]:
        """The budgets that apply to the task's next call, by what they are."""
        ws = task.workspace_id
        task_id, execution_id, month_id = self._budget_ids(task)
        scopes: dict[str, BudgetScope] = {}
        for kind, budget_id, budget in (
            ("agent's per-task", task_id, spec.budget),
            ("execution's", execution_id, task.budget),
            ("workspace's monthly", month_id, await self._directory.cap(ws)),
        ):
            if budget is not None:
                scopes[kind] = BudgetScope(budget_id, ws, budget.tokens, budget.cost_micros)
        return scopes

    async def _release_calls(self, task: AgentTask, call: int, budget_ids: list[str]) -> None:
        """Settle or release what the calls before ``call`` of this attempt still hold (a worker died after
        reserving): to the usage recorded for the call, or to nothing when none was."""
        for earlier in range(1, call):
            hold_key = f"{task.key}/{earlier}"
            row = await self._usage.recorded(f"{task.workspace_id}:{hold_key}")
            tokens = 0 if row is None else int(row["prompt_tokens"]) + int(row["completion_tokens"])
            micros = 0 if row is None else int(row["cost_micros"])
            for budget_id in budget_ids:
                await self._budgets.settle(budget_id, hold_key, tokens, micros)

    async def _account(
        self,
        task: AgentTask,
        agent_id: str,
        call: int,
        scopes: dict[str, BudgetScope],
        model: tuple[str, str],
        usage: Usage | None,
    ) -> None:
        """Record what the call cost and settle its reservations to it (released when its cost is unknown). The
        usage row is keyed by the call, so a call is counted once, however often this runs for it."""
        hold_key = f"{task.key}/{call}"
        if usage is None:
            for scope in scopes.values():
                await self._budgets.release(scope.budget_id, hold_key)
            return
        provider, model_name = model
        micros = cost_micros(self._settings.model_prices, model_name, usage.prompt_tokens, usage.completion_tokens)
        first = await self._usage.record(
            {
                "_id": f"{task.workspace_id}:{hold_key}",
                "workspace_id": task.workspace_id,
                "agent_id": agent_id,
                "execution_id": task.execution_id,
                "step_id": task.step_id,
                "attempt": task.attempt,
                "task": task.key,
                "call": call,
                "provider": provider,
                "model": model_name,
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "cost_micros": micros,
                "estimated": usage.estimated,
                "at": self._clock(),
            }
        )
        for scope in scopes.values():
            await self._budgets.settle(scope.budget_id, hold_key, usage.total_tokens, micros, counted=first)

    # The answer -----------------------------------------------------------------------------------------------

    async def _finish(
        self,
        task: AgentTask,
        agent: Candidate | str | None,
        *,
        ok: bool,
        output: Any = None,
        kind: str = "error",
        error: str | None = None,
    ) -> None:
        """Record the attempt's result, then send the one recorded (an earlier one stays, if there is one)."""
        agent_id = agent.agent_id if isinstance(agent, Candidate) else agent
        result = self._result(task, ok=ok, output=output, kind=kind, error=error)
        await self._send(task, await self._record_result(task, agent_id, result))

    @staticmethod
    def _result(
        task: AgentTask, *, ok: bool, output: Any = None, kind: str = "error", error: str | None = None
    ) -> RecordTaskResult:
        return RecordTaskResult(
            execution_id=task.execution_id,
            step_id=task.step_id,
            attempt=task.attempt,
            ok=ok,
            output=output if ok else None,
            error=None if ok else error,
            error_kind="error" if ok else kind,
        )

    async def _record_result(
        self, task: AgentTask, agent_id: str | None, result: RecordTaskResult, answer: Document | None = None
    ) -> Document:
        """Write the result on the attempt record (with the answer it came from); the result recorded first."""
        document = result.model_dump(mode="json")
        document["agent_id"] = agent_id
        return await self._attempts.finish(task.workspace_id, task.key, document, self._clock(), answer)

    async def _send(self, task: AgentTask, document: Document, *, shared: bool = False) -> None:
        """Send the attempt's recorded result; a team run member's output is added to the run's shared context
        first, unless it was ``shared`` already (both de-duplicated by the attempt, whose recorded result is the
        only one ever shared, so a repeat sends nothing new)."""
        result = RecordTaskResult.model_validate({k: v for k, v in document.items() if k != "agent_id"})
        if result.ok and not shared:
            await self._runs.share_output(task, document.get("agent_id") or "runtime", result.output)
        envelope = envelope_for(
            result,
            workspace_id=task.workspace_id,
            command_id=result_command_id(task.key),
            actor=Actor(kind="agent", id=document.get("agent_id") or "runtime"),
        )
        await publish_command(self._bus, "workflow-engine", envelope)


def unstorable(value: Any, max_depth: int = 64) -> list[str]:
    """What in a model's output a MongoDB document cannot hold (the gateway's rules for request bodies): integers
    beyond 64 bits, keys that start with ``$`` or hold NUL, strings with lone surrogates, nesting beyond
    ``max_depth``. Empty when it can be stored."""
    problems: list[str] = []
    stack: list[tuple[Any, str, int]] = [(value, "$", 0)]
    while stack and len(problems) < 5:
        item, path, depth = stack.pop()
        if depth > max_depth:
            problems.append(f"{path}: nested deeper than {max_depth}")
        elif isinstance(item, bool) or item is None or isinstance(item, float):
            continue
        elif isinstance(item, int):
            if not -(2**63) <= item < 2**63:
                problems.append(f"{path}: an integer beyond 64 bits")
        elif isinstance(item, str):
            if not _encodable(item):
                problems.append(f"{path}: a string that is not valid Unicode")
        elif isinstance(item, dict):
            for key, sub in item.items():
                if not isinstance(key, str) or key.startswith("$") or "\x00" in key or not _encodable(key):
                    problems.append(f"{path}: a key MongoDB cannot store ({str(key)[:40]!r})")
                else:
                    stack.append((sub, f"{path}.{key}", depth + 1))
        elif isinstance(item, list):
            stack.extend((sub, f"{path}[{i}]", depth + 1) for i, sub in enumerate(item))
    return problems


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
