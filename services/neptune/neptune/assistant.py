"""A turn of the conversation: the message read (the offline intent parser), the tool it asks for called through the
gateway, the answer written from the tool's result.

Each step is told to ``emit`` as it happens (a tool call with its arguments, its result, the answer), which the
service streams to the person. What the parser does not understand is answered with what Neptune can do.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from contracts.neptune import ToolUse, TurnEvent
from neptune.domain.intents import Intent, IntentKind, parse
from neptune.gateway_client import GatewayClient
from neptune.tools import TOOLS

Emit = Callable[[TurnEvent], Awaitable[None]]

HELP = (
    'I can run the platform for you. Try: "Create a sales team with lead qualifier and proposal writer", '
    '"List my teams", "Run the marketing team to create this week\'s social content", '
    '"Set up a workflow for handling support tickets", "What\'s the status of the support ticket workflow?", '
    '"Which agents are available?", "Delegate <task> to <agent>", "Remember that <fact> for the <team>", '
    '"What do we know about <topic>?", "Pause (or resume, cancel) the <workflow>".'
)

TOOL_OF: dict[IntentKind, str] = {
    IntentKind.CREATE_TEAM: "create_agent_team",
    IntentKind.LIST_TEAMS: "list_agent_teams",
    IntentKind.RUN_TEAM: "run_agent_team",
    IntentKind.TEAM_STATUS: "get_team_status",
    IntentKind.CREATE_WORKFLOW: "create_workflow",
    IntentKind.WORKFLOW_STATUS: "get_workflow_status",
    IntentKind.AVAILABILITY: "check_agent_availability",
    IntentKind.DELEGATE: "delegate_to_agent",
    IntentKind.REMEMBER: "store_shared_context",
    IntentKind.RECALL: "retrieve_agent_memory",
    IntentKind.PAUSE_EXECUTION: "pause_execution",
    IntentKind.RESUME_EXECUTION: "resume_execution",
    IntentKind.CANCEL_EXECUTION: "cancel_execution",
}


@dataclass(frozen=True, slots=True)
class TurnResult:
    intent: str
    tools: list[ToolUse]
    answer: str
    usage: dict[str, Any] = field(default_factory=dict)


def arguments_of(intent: Intent) -> dict[str, Any]:
    """The tool's arguments from the intent's slots (names as the person said them)."""
    slots = {k: v for k, v in intent.slots.items() if v not in (None, "", [])}
    if intent.kind is IntentKind.CREATE_WORKFLOW:
        return {"description": slots.get("description") or "workflow"}
    return slots


async def offline_turn(client: GatewayClient, content: str, emit: Emit) -> TurnResult:
    intent = parse(content)
    tool = TOOL_OF.get(intent.kind)
    if tool is None:
        await emit(TurnEvent(type="message", data={"content": HELP}))
        return TurnResult(intent.kind.value, [], HELP)
    use = await call_tool(client, tool, arguments_of(intent), "call_1", emit)
    answer = str(use.result.get("question") or use.result.get("summary") or use.result.get("error") or "Done.")
    await emit(TurnEvent(type="message", data={"content": answer}))
    return TurnResult(intent.kind.value, [use], answer)


async def call_tool(client: GatewayClient, name: str, arguments: dict[str, Any], call_id: str, emit: Emit) -> ToolUse:
    """One tool call, its arguments validated by the tool's model first; a refusal is its result, not a crash."""
    await emit(TurnEvent(type="tool_call", data={"call_id": call_id, "name": name, "arguments": arguments}))
    spec = TOOLS.get(name)
    ok, result = False, {"error": f"there is no tool {name!r}"}
    if spec is not None:
        try:
            args = spec.args.model_validate(arguments)
        except ValidationError as exc:
            result = {"error": "bad arguments: " + "; ".join(f"{e['loc']}: {e['msg']}" for e in exc.errors())[:500]}
        else:
            outcome = await spec.run(client, args)
            ok, result = outcome.ok, outcome.result
    await emit(TurnEvent(type="tool_result", data={"call_id": call_id, "name": name, "ok": ok, "result": result}))
    return ToolUse(call_id=call_id, name=name, arguments=arguments, ok=ok, result=result)
