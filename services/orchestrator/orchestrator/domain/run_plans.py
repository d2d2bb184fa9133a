"""The inline definitions a team run gives the workflow engine: the lead's plan, the plan's steps, the lead's summary.

Pure: built from the run's state. The lead plans against an output schema whose ``member`` is an enum of the run's
member ids, so a model names members only from the closed list (the runtime refuses any other answer as
``invalid_output`` and the step is retried); the orchestrator checks the plan again before it runs anything. Each
work step is given a typed handoff in its input (``kind: team_step``: objective, task, produces, the previous
member's output, the run's input); the summary is given the plan's table, not a chat history.
"""

from typing import Any

from contracts.team_runs import TeamRunStarted
from contracts.workflows import AgentStep, RetryPolicy, Step, WorkflowSpec
from orchestrator.domain.team_run import TeamRun, table

PLAN_TIMEOUT_S = 300.0
STEP_TIMEOUT_S = 600.0
SUMMARY_MAX_TOKENS = 300
RETRIED = RetryPolicy(max_attempts=2, backoff_s=0.5, retry_on=["invalid_output", "model_error", "timeout", "error"])

PLAN_INSTRUCTIONS = (
    "You lead this team. Plan how its members reach the objective: an ordered list of steps, each for one member "
    "(named by its agent_id from the members list, nobody else), saying what it must do and what it must produce. "
    "Use as few steps as the objective needs; each member's output is handed to the next step."
)
SUMMARY_INSTRUCTIONS = (
    "The run is over. Summarise for the person who asked what was done, from the table of the plan's steps and "
    "their outputs, in a few sentences; say plainly what was not done and why. Do not plan more work."
)


def _title(prefix: str, objective: str) -> str:
    return f"{prefix}: {objective.strip()[:150]}"


def plan_schema(member_ids: list[str], max_steps: int) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "steps": {
                "type": "array",
                "minItems": 1,
                "maxItems": max_steps,
                "items": {
                    "type": "object",
                    "properties": {
                        "member": {"type": "string", "enum": member_ids},
                        "task": {"type": "string", "minLength": 1, "maxLength": 2000},
                        "produces": {"type": "string", "maxLength": 500},
                    },
                    "required": ["member", "task", "produces"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["steps"],
        "additionalProperties": False,
    }


SUMMARY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"summary": {"type": "string", "minLength": 1, "maxLength": 4000}},
    "required": ["summary"],
    "additionalProperties": False,
}


def plan_spec(started: TeamRunStarted) -> WorkflowSpec:
    members = [
        {"agent_id": m.agent_id, "name": m.name, "role": m.role, "capabilities": m.capabilities, "lead": m.lead}
        for m in started.members
    ]
    step = AgentStep(
        id="plan",
        kind="agent",
        name="The lead's plan",
        agent_id=started.lead,
        instructions=PLAN_INSTRUCTIONS,
        input={
            "kind": "team_plan",
            "objective": started.objective,
            "members": members,
            "max_steps": started.max_steps,
            "input": "$input",
        },
        output_schema=plan_schema([m.agent_id for m in started.members], started.max_steps),
        timeout_s=PLAN_TIMEOUT_S,
        retry=RETRIED,
    )
    return WorkflowSpec(name=_title("Plan", started.objective), start="plan", steps=[step])


def work_spec(state: TeamRun) -> WorkflowSpec:
    started = state.started
    assert started is not None
    assert state.plan
    steps: list[Step] = []
    for index, planned in enumerate(state.plan):
        following = state.plan[index + 1].id if index + 1 < len(state.plan) else None
        previous = f"$steps.{state.plan[index - 1].id}.output" if index else None
        steps.append(
            AgentStep(
                id=planned.id,
                kind="agent",
                name=planned.task[:200],
                agent_id=planned.agent_id,
                instructions=f"Objective of the run: {started.objective}\n\nYour task: {planned.task}"
                + (f"\n\nProduce: {planned.produces}" if planned.produces else ""),
                input={
                    "kind": "team_step",
                    "objective": started.objective,
                    "task": planned.task,
                    "produces": planned.produces,
                    "previous": previous,
                    "input": "$input",
                },
                timeout_s=STEP_TIMEOUT_S,
                retry=RETRIED,
                next=following,
            )
        )
    return WorkflowSpec(name=_title("Team run", started.objective), start=state.plan[0].id, steps=steps)


def summary_spec(state: TeamRun) -> WorkflowSpec:
    started = state.started
    assert started is not None
    step = AgentStep(
        id="summary",
        kind="agent",
        name="The lead's summary",
        agent_id=started.lead,
        instructions=SUMMARY_INSTRUCTIONS,
        input={
            "kind": "team_summary",
            "objective": started.objective,
            "outcome": state.outcome or "completed",
            "error": state.error,
            "steps": table(state),
        },
        output_schema=SUMMARY_SCHEMA,
        max_output_tokens=SUMMARY_MAX_TOKENS,
        timeout_s=PLAN_TIMEOUT_S,
    )
    return WorkflowSpec(name=_title("Summary", started.objective), start="summary", steps=[step])
