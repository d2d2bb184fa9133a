"""The agent runtime's task handler: a task from the TASKS stream in, a RecordTaskResult command out.

For each delivery of a task (an attempt of an agent step): answer from the attempt's record if it has a result
already; give up with ``timeout`` once its deadline has passed; route it to an agent and take one of the agent's
concurrency slots, or wait (``Defer``) while every capable agent is busy or paused, or fail at once with
``no_agent`` when the workspace has no agent that could ever take it; build the prompt (with what the memory
service recalls, asked over NATS); reserve the call's worst case against every budget that applies
(``budget_exceeded`` when one has not enough left); call the provider within the deadline, telling the broker the
task is in progress meanwhile; record its usage, settle the reservations, check the output against the step's
schema (``invalid_output``); record the result on the attempt, and only then send it. See ``ledger`` for why this
calls a model at most once per attempt except after a crash mid-call.
"""

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4

from pydantic import ValidationError

from contracts import Actor
from contracts.agents import AgentSpec
from contracts.memory import RetrieveMemory, Scope, ScopeKind
from contracts.outputs import output_errors
from contracts.workflows import AgentTask, RecordTaskResult, result_command_id
from orchestrator.domain.routing import Candidate, Verdict, route
from orchestrator.projections import AgentsProjection, WorkspaceBudgetsProjection
from orchestrator.providers import Providers
from orchestrator.providers.base import ModelError, ModelRequest, ModelResponse, Usage, estimate_prompt_tokens
from orchestrator.runtime.budgets import Budgets, Hold
from orchestrator.runtime.budgets import Scope as BudgetScope
from orchestrator.runtime.ledger import AttemptRecord, Attempts, UsageLedger
from orchestrator.runtime.prompt import build_messages
from orchestrator.runtime.slots import Slots
from orchestrator.settings import RuntimeSettings
from servicekit.bus import Bus, DeadLetter, Defer, PermanentFailure, in_progress
from servicekit.commands import envelope_for, publish_command
from servicekit.eventstore import utcnow
from servicekit.queries import QueryFailed, ask

log = logging.getLogger(__name__)
Document = dict[str, Any]
HOLD_MARGIN = timedelta(seconds=60)  # a reservation outlives its task's deadline by this, then may be swept
ESTIMATE_MARGIN = 1.25  # a model's own tokenizer may count more than the estimate: reserve more for it
DEFAULT_DEADLINE = timedelta(minutes=5)
WAIT_MARGIN_S = 2.0  # a task that waits for a free agent gives up this long before its deadline (or a tenth of it)


def cost_micros(prices: dict[str, tuple[float, float]], model: str, prompt: int, completion: int) -> int:
    """The cost of a call in millionths of a dollar: prices are USD per million tokens, so per token in micros."""
    per_prompt, per_completion = prices.get(model, (0.0, 0.0))
    return math.ceil(prompt * per_prompt + completion * per_completion)


class TaskWorker:
    def __init__(
        self,
        *,
        bus: Bus,
        agents: AgentsProjection,
        caps: WorkspaceBudgetsProjection,
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
        self._agents = agents
        self._caps = caps
        self._slots = slots
        self._budgets = budgets
        self._attempts = attempts
        self._usage = usage
        self._providers = providers
        self._settings = settings
        self._worker = worker_id
        self._clock = clock

    async def handle(self, body: bytes, headers: dict[str, str]) -> None:
        try:
            task = AgentTask.model_validate_json(body)
        except ValidationError as exc:
            raise PermanentFailure(f"malformed task: {exc.error_count()} errors") from exc
        now = self._clock()
        record = await self._attempts.open(task.workspace_id, task.key, now)
        if record.result is not None:
            await self._send(task, record.result)  # answered before: the broker drops the repeat
            return
        deadline = datetime.fromisoformat(task.deadline) if task.deadline else record.first_seen_at + DEFAULT_DEADLINE
        if now >= deadline:
            await self._release_calls(task, record.calls + 1, self._budget_ids(task))
            await self._finish(task, None, ok=False, kind="timeout", error="the deadline passed before an agent ran")
            return
        agent = await self._take_agent(task, record, now, deadline)
        if agent is None:
            return
        try:
            await self._run(task, record, agent, deadline)
        except Defer:
            raise  # another delivery of this attempt is at work, in the same slot (it is the attempt's): keep it
        except BaseException:
            await self._slots.release(task.workspace_id, agent.agent_id, task.key)
            raise
        await self._slots.release(task.workspace_id, agent.agent_id, task.key)

    async def give_up(self, letter: DeadLetter) -> None:
        """A task dead-lettered (it failed on every delivery): its step fails now instead of at its timeout."""
        try:
            task = AgentTask.model_validate_json(letter.body)
        except ValidationError:
            return  # not a task: nothing to answer
        record = await self._attempts.open(task.workspace_id, task.key, self._clock())
        await self._release_calls(task, record.calls + 1, self._budget_ids(task))
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
        candidates = await self._agents.candidates(ws, in_flight)
        if record.agent_id is not None:  # delivered before: keep the slot it may still hold
            held = [c for c in candidates if c.agent_id == record.agent_id]
            if held and await take(ws, held[0].agent_id, held[0].spec.concurrency_limit, task.key, self._worker, now):
                return held[0]
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
        left = (deadline - now).total_seconds()
        if left <= min(WAIT_MARGIN_S, (deadline - record.first_seen_at).total_seconds() / 10):
            wanted = task.agent_id or " / ".join(x for x in (task.role, task.capability) if x)
            error = f"no agent became available before the step's deadline ({wanted}: all busy or paused)"
            await self._finish(task, None, ok=False, kind="no_agent", error=error)
            return None
        raise Defer(max(0.05, min(1.0, left / 4)))

    # The call -------------------------------------------------------------------------------------------------

    async def _run(self, task: AgentTask, record: AttemptRecord, agent: Candidate, deadline: datetime) -> None:
        spec = agent.spec
        memories = await self._recall(task, spec)
        messages = build_messages(spec, task, memories)
        provider, model = self._providers.resolve(spec.model)
        estimate = estimate_prompt_tokens(messages)
        if provider != "local":
            estimate = math.ceil(estimate * ESTIMATE_MARGIN)
        max_out = spec.model.max_output_tokens
        prices = self._settings.model_prices
        hold = Hold(estimate + max_out, cost_micros(prices, model, estimate, max_out))
        ws = task.workspace_id
        holder = f"{self._worker}/{uuid4().hex[:12]}"
        lease = timedelta(seconds=self._settings.slot_lease_s)
        call = await self._attempts.calling(
            ws, task.key, agent.agent_id, agent.spec_version, holder, self._clock(), lease
        )
        if call is None:
            raise Defer(1.0)  # the same attempt is being worked on by another delivery: wait for its result
        scopes = await self._scopes(task, spec)
        await self._release_calls(task, call, [scope.budget_id for scope in scopes.values()])
        hold_key = f"{task.key}/{call}"
        short = await self._budgets.reserve(list(scopes.values()), hold_key, hold, deadline + HOLD_MARGIN)
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
            role=spec.role,
        )
        try:
            response = await self._call(task, agent, holder, provider, request)
        except ModelError as exc:
            await self._account(task, agent, call, scopes, (provider, model), exc.usage)
            await self._finish(task, agent, ok=False, kind=exc.kind, error=str(exc)[:2000])
            return
        await self._account(task, agent, call, scopes, (provider, model), response.usage)
        output, problems = self._output(task, response)
        if problems:
            await self._finish(task, agent, ok=False, kind="invalid_output", error="; ".join(problems))
            return
        await self._finish(task, agent, ok=True, output=output)

    async def _call(
        self, task: AgentTask, agent: Candidate, holder: str, provider: str, request: ModelRequest
    ) -> ModelResponse:
        model = self._providers.get(provider)
        keep_alive = asyncio.create_task(self._keep_alive(task, agent, holder))
        try:
            async with asyncio.timeout(request.timeout_s):
                return await model.complete(request)
        except TimeoutError:
            raise ModelError("the model did not answer before the task's deadline", kind="timeout") from None
        finally:
            keep_alive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keep_alive

    async def _keep_alive(self, task: AgentTask, agent: Candidate, holder: str) -> None:
        """While the model works: the broker keeps the task ours, the agent's slot and the call's lease stay held."""
        every = max(0.5, min(self._settings.command_ack_wait_s, self._settings.slot_lease_s) / 3)
        lease = timedelta(seconds=self._settings.slot_lease_s)
        while True:
            await asyncio.sleep(every)
            try:
                await in_progress()
                now = self._clock()
                await self._slots.renew(task.workspace_id, agent.agent_id, task.key, now)
                await self._attempts.renew(task.workspace_id, task.key, holder, now, lease)
            except Exception:  # the next beat tries again; the call goes on
                log.warning("could not renew task %s", task.key, exc_info=True)

    def _output(self, task: AgentTask, response: ModelResponse) -> tuple[Any, list[str]]:
        output = response.output
        if output is None:
            try:
                output = json.loads(response.text)
            except ValueError:
                output = None if task.output_schema is not None else {"summary": response.text}
        if task.output_schema is None:
            return output, []
        if output is None:
            return None, ["the answer is not JSON"]
        return output, output_errors(task.output_schema, output)

    async def _recall(self, task: AgentTask, spec: AgentSpec) -> list[str]:
        """What memory recalls for the agent and the execution; nothing (and a warning) if memory does not answer."""
        words = " ".join(x for x in (task.step_name, task.instructions, json.dumps(task.input)[:300]) if x)
        query = RetrieveMemory(
            query=words[:500] or spec.role,
            agent_id=task.agent_id,
            scopes=[Scope(kind=ScopeKind.EXECUTION, id=task.execution_id)],
            limit=5,
        )
        try:
            found = await ask(self._bus, task.workspace_id, query, self._settings.memory_timeout_s)
        except QueryFailed as exc:
            log.warning("memory recall for %s failed: %s", task.key, exc)
            return []
        return [str(item.get("content", "")) for item in found if isinstance(item, dict)]

    # Budgets and usage ----------------------------------------------------------------------------------------

    def _budget_ids(self, task: AgentTask) -> list[str]:
        """The budgets a task's calls may hold on: its agent's per-task one, its execution's, the workspace month's."""
        ws = task.workspace_id
        return [f"{ws}:task:{task.key}", f"{ws}:execution:{task.execution_id}", f"{ws}:month:{self._clock():%Y-%m}"]

    async def _scopes(self, task: AgentTask, spec: AgentSpec) -> dict[str, BudgetScope]:
        """The budgets that apply to the task's next call, by what they are."""
        ws = task.workspace_id
        task_id, execution_id, month_id = self._budget_ids(task)
        scopes: dict[str, BudgetScope] = {}
        for kind, budget_id, budget in (
            ("agent's per-task", task_id, spec.budget),
            ("execution's", execution_id, task.budget),
            ("workspace's monthly", month_id, await self._caps.cap(ws)),
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
        agent: Candidate,
        call: int,
        scopes: dict[str, BudgetScope],
        model: tuple[str, str],
        usage: Usage | None,
    ) -> None:
        """Record what the call cost and settle its reservations to it (released when its cost is unknown)."""
        hold_key = f"{task.key}/{call}"
        if usage is None:
            for scope in scopes.values():
                await self._budgets.release(scope.budget_id, hold_key)
            return
        provider, model_name = model
        micros = cost_micros(self._settings.model_prices, model_name, usage.prompt_tokens, usage.completion_tokens)
        await self._usage.record(
            {
                "_id": f"{task.workspace_id}:{hold_key}",
                "workspace_id": task.workspace_id,
                "agent_id": agent.agent_id,
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
            await self._budgets.settle(scope.budget_id, hold_key, usage.total_tokens, micros)

    # The answer -----------------------------------------------------------------------------------------------

    async def _finish(
        self,
        task: AgentTask,
        agent: Candidate | None,
        *,
        ok: bool,
        output: Any = None,
        kind: str = "error",
        error: str | None = None,
    ) -> None:
        result = RecordTaskResult(
            execution_id=task.execution_id,
            step_id=task.step_id,
            attempt=task.attempt,
            ok=ok,
            output=output if ok else None,
            error=None if ok else error,
            error_kind="error" if ok else kind,
        )
        document = result.model_dump(mode="json")
        document["agent_id"] = agent.agent_id if agent is not None else None
        await self._attempts.finish(task.workspace_id, task.key, document, self._clock())
        await self._send(task, document)

    async def _send(self, task: AgentTask, document: Document) -> None:
        result = RecordTaskResult.model_validate({k: v for k, v in document.items() if k != "agent_id"})
        envelope = envelope_for(
            result,
            workspace_id=task.workspace_id,
            command_id=result_command_id(task.key),
            actor=Actor(kind="agent", id=document.get("agent_id") or "runtime"),
        )
        await publish_command(self._bus, "workflow-engine", envelope)
