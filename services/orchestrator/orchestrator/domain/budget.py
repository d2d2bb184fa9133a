"""The workspace's monthly budget cap: one stream per workspace. Pure."""

from contracts import Event
from contracts.budgets import Budget, SetWorkspaceBudget, WorkspaceBudgetSet

AGGREGATE = "workspacebudget"
STREAM_ID = "monthly"


def evolve(state: Budget | None, event: Event) -> Budget | None:
    return event.budget if isinstance(event, WorkspaceBudgetSet) else state


def decide_set(state: Budget | None, command: SetWorkspaceBudget) -> list[Event]:
    return [] if state == command.budget else [WorkspaceBudgetSet(budget=command.budget)]
