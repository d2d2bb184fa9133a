"""REST endpoints under /api/v1, one module per resource."""

from fastapi import APIRouter

from gateway.errors import PROBLEM_RESPONSES
from gateway.routes import (
    agents,
    commands,
    delegations,
    memory,
    messages,
    neptune,
    team_runs,
    teams,
    workflows,
    workspace,
)

router = APIRouter(prefix="/api/v1", responses=PROBLEM_RESPONSES)
for module in (workspace, agents, teams, team_runs, messages, delegations, workflows, memory, neptune, commands):
    router.include_router(module.router)
