"""Neptune's tools: each a typed argument model (exported as an OpenAI tool definition from the same model) and a
function that does it through the gateway's REST API with the turn's credential.

A tool answers with a short result the model can read and the person can see: a one-line ``summary``, the ids it
touched and links to follow them. Names resolve to ids from the workspace's live data (``resolve``): one match is
used, several are a question back listing them, never a guess. A refusal of the gateway (a 4xx with its code) is the
tool's error, given back as it is.
"""

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.workflows import AgentStep, WorkflowSpec
from neptune.gateway_client import Answer, GatewayClient

Result = dict[str, Any]
MAX_ITEMS = 20


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoArgs(Args):
    pass


class CreateTeamArgs(Args):
    department: str | None = Field(default=None, description="sales, marketing, support or operations (a template).")
    roles: list[str] = Field(default_factory=list, max_length=12, description="The members' roles, if not all.")
    name: str | None = Field(default=None, max_length=120)


class TeamArgs(Args):
    team: str = Field(min_length=1, max_length=200, description="The team's name or id.")


class RunTeamArgs(TeamArgs):
    objective: str = Field(min_length=1, max_length=4000)


class CreateWorkflowArgs(Args):
    description: str = Field(min_length=1, max_length=4000, description="What the workflow is for, or a template.")


class WorkflowArgs(Args):
    workflow: str = Field(min_length=1, max_length=200, description="The workflow's name or id.")


class ExecuteWorkflowArgs(WorkflowArgs):
    input: dict[str, Any] = Field(default_factory=dict)


class DelegateArgs(Args):
    task: str = Field(min_length=1, max_length=4000)
    agent: str = Field(min_length=1, max_length=200, description="The agent's name, role or id.")


class AvailabilityArgs(Args):
    capability: str | None = Field(default=None, max_length=100)


class RememberArgs(Args):
    fact: str = Field(min_length=1, max_length=10_000)
    team: str | None = Field(default=None, max_length=200, description="The team it is for, if any.")


class RecallArgs(Args):
    topic: str = Field(min_length=1, max_length=500)


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    result: Result
    question: str | None = None
    """Set when a name is ambiguous (or unknown): what to ask the person."""


@dataclass(frozen=True, slots=True)
class Found:
    item: dict[str, Any] | None = None
    question: str | None = None


def _words(text: str) -> set[str]:
    return {w.rstrip("s") for w in re.findall(r"[a-z0-9]+", text.casefold()) if w not in {"the", "a", "an", "my"}}


def resolve(name: str, items: list[dict[str, Any]], id_key: str, label: str, *extra: str) -> Found:
    """The item ``name`` means: by id, by exact name, else the best overlap of words with its name (and ``extra``
    fields); several equally good are a question listing them; none is a question listing what there is."""
    wanted = name.strip().casefold()
    by_id = [item for item in items if str(item.get(id_key, "")).casefold() == wanted]
    best = by_id or [item for item in items if str(item.get("name", "")).casefold() == wanted]
    if not best:
        words = _words(name)
        scored: list[tuple[float, dict[str, Any]]] = []
        for item in items:
            have = _words(" ".join(str(item.get(k) or "") for k in ("name", *extra)))
            if overlap := len(words & have):
                scored.append((overlap / max(1, len(words | have)), item))
        if not scored:
            known = ", ".join(f"{i.get('name')} ({i.get(id_key)})" for i in items[:MAX_ITEMS]) or "none yet"
            return Found(question=f"I found no {label} called {name!r}. The {label}s here: {known}.")
        top = max(score for score, _ in scored)
        best = [item for score, item in scored if score == top]
    if len(best) == 1:
        return Found(best[0])
    listed = "; ".join(f"{i.get('name')} ({i.get(id_key)})" for i in best[:MAX_ITEMS])
    return Found(question=f"Several {label}s match {name!r}: {listed}. Which one do you mean?")


def _error(answer: Answer, doing: str) -> Outcome:
    return Outcome(False, {"error": f"{doing} failed: {answer.problem}", "status": answer.status})


def _items(answer: Answer) -> list[dict[str, Any]]:
    body = answer.body
    found = body.get("items", []) if isinstance(body, dict) else body if isinstance(body, list) else []
    return [i for i in found if isinstance(i, dict)]


async def _one(client: GatewayClient, path: str, name: str, id_key: str, label: str, *extra: str) -> Found | Outcome:
    listed = await client.get(path)
    if not listed.ok:
        return _error(listed, f"listing the {label}s")
    return resolve(name, _items(listed), id_key, label, *extra)


def _asked(found: Found) -> Outcome:
    return Outcome(False, {"question": found.question}, question=found.question)


async def _pick(client: GatewayClient, path: str, name: str, id_key: str, label: str, *extra: str) -> Result | Outcome:
    """The one item ``name`` means, or what to answer instead (the listing's error, a question)."""
    found = await _one(client, path, name, id_key, label, *extra)
    if isinstance(found, Outcome):
        return found
    return _asked(found) if found.item is None else found.item


async def list_agent_teams(client: GatewayClient, args: NoArgs) -> Outcome:
    listed = await client.get("/api/v1/teams")
    if not listed.ok:
        return _error(listed, "listing the teams")
    teams = [
        {"team_id": t["team_id"], "name": t["name"], "department": t.get("department"), "members": len(t["members"])}
        for t in _items(listed)
    ]
    names = ", ".join(f"{t['name']} ({t['members']} members)" for t in teams) or "no teams yet"
    return Outcome(True, {"summary": f"{len(teams)} team(s): {names}.", "teams": teams})


async def create_agent_team(client: GatewayClient, args: CreateTeamArgs) -> Outcome:
    if args.department is None:
        if not args.roles:
            return Outcome(False, {"error": "say which department (sales, marketing, support, operations) or roles"})
        return await _team_by_hand(client, args)
    templates = await client.get("/api/v1/team-templates")
    if not templates.ok:
        return _error(templates, "reading the team templates")
    template = next((t for t in _items(templates) if t.get("slug") == args.department), None)
    if template is None:
        return Outcome(False, {"error": f"there is no {args.department} team template"})
    request: dict[str, Any] = {"template": args.department}
    if args.name:
        request["name"] = args.name
    kept_note = ""
    if args.roles:
        members = template.get("members", [])
        wanted = [_words(r) for r in args.roles]
        keep = {m["key"] for m in members if any(w and w <= _words(f"{m['role']} {m['key']}") for w in wanted)}
        lead = next((m for m in members if m.get("lead")), None)
        if lead is not None and lead["key"] not in keep and keep:
            keep.add(lead["key"])  # a team needs its lead
            kept_note = f" (with {lead['role']} as its lead)"
        request["drop"] = [m["key"] for m in members if m["key"] not in keep]
        covered = [w for w in wanted if any(w <= _words(f"{m['role']} {m['key']}") for m in members)]
        extra = [r for r, w in zip(args.roles, wanted, strict=True) if w not in covered]
        request["add"] = [_member(role) for role in extra]
        if not keep and not extra:
            request.pop("drop")
    created = await client.post("/api/v1/teams", {"from_template": request})
    if not created.ok:
        return _error(created, "creating the team")
    team_id = created.body["resource_ids"]["team_id"]
    team = await client.get(f"/api/v1/teams/{team_id}")
    roles = [m["role"] for m in team.body.get("members", [])] if team.ok and isinstance(team.body, dict) else []
    summary = f"Created the {team.body.get('name', args.department) if team.ok else args.department} team{kept_note}"
    return Outcome(
        True,
        {
            "summary": f"{summary}: {', '.join(roles)}.",
            "team_id": team_id,
            "members": roles,
            "links": {"team": f"/api/v1/teams/{team_id}", "status": f"/api/v1/teams/{team_id}/status"},
        },
    )


def _member(role: str) -> dict[str, Any]:
    key = re.sub(r"[^a-z0-9]+", "-", role.casefold()).strip("-")[:40] or "member"
    return {"key": key, "name": role.title(), "role": role, "capabilities": [key]}


async def _team_by_hand(client: GatewayClient, args: CreateTeamArgs) -> Outcome:
    members = []
    for index, role in enumerate(args.roles):
        made = await client.post("/api/v1/agents", {"name": role.title(), "role": role})
        if not made.ok:
            return _error(made, f"creating the {role} agent")
        members.append({"agent_id": made.body["resource_ids"]["agent_id"], "role": role, "lead": index == 0})
    name = args.name or " & ".join(r.title() for r in args.roles)[:120]
    created = await client.post("/api/v1/teams", {"spec": {"name": name, "members": members}})
    if not created.ok:
        return _error(created, "creating the team")
    team_id = created.body["resource_ids"]["team_id"]
    return Outcome(
        True,
        {
            "summary": f"Created the team {name}: {', '.join(args.roles)} ({args.roles[0]} leads).",
            "team_id": team_id,
            "members": args.roles,
            "links": {"team": f"/api/v1/teams/{team_id}"},
        },
    )


async def run_agent_team(client: GatewayClient, args: RunTeamArgs) -> Outcome:
    found = await _pick(client, "/api/v1/teams", args.team, "team_id", "team", "department")
    if isinstance(found, Outcome):
        return found
    team = found
    started = await client.post(f"/api/v1/teams/{team['team_id']}/runs", {"objective": args.objective})
    if not started.ok:
        return _error(started, f"running the {team['name']} team")
    run_id = started.body["resource_ids"]["run_id"]
    return Outcome(
        True,
        {
            "summary": f"Started the {team['name']} team on: {args.objective}",
            "run_id": run_id,
            "team_id": team["team_id"],
            "links": {"run": f"/api/v1/team-runs/{run_id}", "live": f"/api/v1/team-runs/{run_id}/events"},
        },
    )


async def get_team_status(client: GatewayClient, args: TeamArgs) -> Outcome:
    found = await _pick(client, "/api/v1/teams", args.team, "team_id", "team", "department")
    if isinstance(found, Outcome):
        return found
    team_id = found["team_id"]
    status = await client.get(f"/api/v1/teams/{team_id}/status")
    if not status.ok:
        return _error(status, "reading the team's status")
    body = status.body
    members = ", ".join(f"{m.get('name') or m['agent_id']}: {m['status']}" for m in body["members"])
    active = len(body.get("active_runs", []))
    return Outcome(
        True,
        {
            "summary": f"{found['name']}: {members}; {active} run(s) going.",
            "team_id": team_id,
            "members": body["members"],
            "active_runs": body.get("active_runs", []),
            "recent_runs": body.get("recent_runs", [])[:5],
            "links": {"status": f"/api/v1/teams/{team_id}/status"},
        },
    )


async def create_workflow(client: GatewayClient, args: CreateWorkflowArgs) -> Outcome:
    """From the template the description fits best (offline; with a model, Neptune writes a definition)."""
    listed = await client.get("/api/v1/workflow-templates")
    if not listed.ok:
        return _error(listed, "reading the workflow templates")
    templates = [{**t, "name": t.get("name") or t.get("slug")} for t in _items(listed)]
    fits = resolve(args.description, templates, "slug", "workflow template", "slug", "description")
    if fits.item is None:
        return _asked(fits)
    found, slug = fits.item, fits.item["slug"]
    created = await client.post("/api/v1/workflows", {"template": slug})
    if not created.ok:
        return _error(created, f"creating the {slug} workflow")
    workflow_id = created.body["resource_ids"]["workflow_id"]
    staffed = [a.get("role") for a in created.body.get("staffed_agents", []) if isinstance(a, dict)]
    also = f"; created the agents it needed: {', '.join(map(str, staffed))}" if staffed else ""
    return Outcome(
        True,
        {
            "summary": f"Set up the {found['name']} workflow from the {slug} template{also}.",
            "workflow_id": workflow_id,
            "links": {"workflow": f"/api/v1/workflows/{workflow_id}"},
        },
    )


async def _workflow(client: GatewayClient, name: str) -> Result | Outcome:
    return await _pick(client, "/api/v1/workflows", name, "workflow_id", "workflow", "description")


async def execute_workflow(client: GatewayClient, args: ExecuteWorkflowArgs) -> Outcome:
    found = await _workflow(client, args.workflow)
    if isinstance(found, Outcome):
        return found
    workflow_id = found["workflow_id"]
    started = await client.post(f"/api/v1/workflows/{workflow_id}/executions", {"input": args.input})
    if not started.ok:
        return _error(started, f"starting {found['name']}")
    execution_id = started.body["resource_ids"]["execution_id"]
    return Outcome(
        True,
        {
            "summary": f"Started {found['name']}.",
            "execution_id": execution_id,
            "links": {
                "execution": f"/api/v1/workflows/executions/{execution_id}",
                "live": f"/api/v1/workflows/executions/{execution_id}/events",
            },
        },
    )


async def _latest_execution(client: GatewayClient, name: str) -> tuple[dict[str, Any] | None, Outcome | None]:
    found = await _workflow(client, name)
    if isinstance(found, Outcome):
        return None, found
    listed = await client.get("/api/v1/workflows/executions", {"workflow_id": found["workflow_id"], "limit": 50})
    if not listed.ok:
        return None, _error(listed, "listing the executions")
    runs = sorted(_items(listed), key=lambda e: str(e.get("created_at") or e.get("started_at") or ""))
    if not runs:
        return None, Outcome(True, {"summary": f"{found['name']} has not run yet.", **_ids(found)})
    return {**runs[-1], "workflow_name": found["name"]}, None


def _ids(workflow: dict[str, Any]) -> Result:
    return {"workflow_id": workflow["workflow_id"]}


async def get_workflow_status(client: GatewayClient, args: WorkflowArgs) -> Outcome:
    latest, answered = await _latest_execution(client, args.workflow)
    if latest is None:
        assert answered is not None
        return answered
    execution_id = latest["execution_id"]
    detail = await client.get(f"/api/v1/workflows/executions/{execution_id}")
    if not detail.ok:
        return _error(detail, "reading the execution")
    steps = detail.body.get("steps", [])
    done = sum(1 for s in steps if s.get("status") == "succeeded")
    waiting = [s["id"] for s in steps if s.get("status") == "waiting" and s.get("kind") == "approval"]
    also = f"; waiting for approval at {', '.join(waiting)}" if waiting else ""
    return Outcome(
        True,
        {
            "summary": f"{latest['workflow_name']}: its latest run is {detail.body['status']}, "
            f"{done} of {len(steps)} steps done{also}.",
            "execution_id": execution_id,
            "status": detail.body["status"],
            "links": {"execution": f"/api/v1/workflows/executions/{execution_id}"},
        },
    )


def _control(action: str) -> Callable[[GatewayClient, WorkflowArgs], Awaitable[Outcome]]:
    async def control(client: GatewayClient, args: WorkflowArgs) -> Outcome:
        latest, answered = await _latest_execution(client, args.workflow)
        if latest is None:
            assert answered is not None
            return answered
        execution_id = latest["execution_id"]
        done = await client.post(f"/api/v1/workflows/executions/{execution_id}/{action}", {})
        if not done.ok:
            return _error(done, f"{action} of {latest['workflow_name']}")
        past = {"pause": "Paused", "resume": "Resumed", "cancel": "Cancelled", "retry": "Retried"}[action]
        return Outcome(
            True,
            {
                "summary": f"{past} the latest run of {latest['workflow_name']}.",
                "execution_id": execution_id,
                "links": {"execution": f"/api/v1/workflows/executions/{execution_id}"},
            },
        )

    return control


async def delegate_to_agent(client: GatewayClient, args: DelegateArgs) -> Outcome:
    found = await _pick(client, "/api/v1/agents", args.agent, "agent_id", "agent", "role")
    if isinstance(found, Outcome):
        return found
    agent = found
    made = await client.post("/api/v1/delegations", {"task": args.task, "agent_id": agent["agent_id"]})
    if not made.ok:
        return _error(made, f"delegating to {agent['name']}")
    delegation_id = made.body["resource_ids"]["delegation_id"]
    return Outcome(
        True,
        {
            "summary": f"Delegated to {agent['name']}: {args.task}",
            "delegation_id": delegation_id,
            "agent_id": agent["agent_id"],
            "links": {"delegation": f"/api/v1/delegations/{delegation_id}"},
        },
    )


async def check_agent_availability(client: GatewayClient, args: AvailabilityArgs) -> Outcome:
    found = await client.get("/api/v1/agents/availability", {"capability": args.capability})
    if not found.ok:
        return _error(found, "reading availability")
    agents = _items(found)
    if not agents and args.capability:  # the word may be a role rather than a capability
        by_role = await client.get("/api/v1/agents/availability", {"role": args.capability})
        agents = _items(by_role) if by_role.ok else []
    free = [a for a in agents if a.get("status") == "available"]
    listed = ", ".join(f"{a['name']} ({a['role']}, {a['in_flight']}/{a['limit']})" for a in free[:MAX_ITEMS])
    scope = f" for {args.capability}" if args.capability else ""
    return Outcome(
        True,
        {
            "summary": f"{len(free)} of {len(agents)} agent(s){scope} available" + (f": {listed}." if listed else "."),
            "agents": agents[:MAX_ITEMS],
        },
    )


async def store_shared_context(client: GatewayClient, args: RememberArgs) -> Outcome:
    tags: list[str] = []
    team_name = ""
    if args.team:
        found = await _pick(client, "/api/v1/teams", args.team, "team_id", "team", "department")
        if isinstance(found, Outcome):
            return found
        tags, team_name = [found["team_id"]], f" for {found['name']}"
    stored = await client.post("/api/v1/memory/long-term", {"content": args.fact, "tags": tags})
    if not stored.ok:
        return _error(stored, "storing it")
    entry_id = stored.body["resource_ids"].get("entry_id") or next(iter(stored.body["resource_ids"].values()), "")
    return Outcome(True, {"summary": f"Noted{team_name}: {args.fact}", "entry_id": entry_id, "tags": tags})


async def retrieve_agent_memory(client: GatewayClient, args: RecallArgs) -> Outcome:
    found = await client.post("/api/v1/memory/retrieve", {"query": args.topic, "limit": 5})
    if not found.ok:
        return _error(found, "asking memory")
    items = _items(found)
    if not items:
        return Outcome(True, {"summary": f"Nothing is known about {args.topic} yet.", "found": []})
    lines = [str(i.get("content", ""))[:300] for i in items]
    return Outcome(True, {"summary": "What memory holds: " + " | ".join(lines), "found": lines})


class CoordinateArgs(Args):
    teams: list[str] = Field(min_length=2, max_length=5, description="The teams' names or ids; the first leads.")
    objective: str = Field(min_length=1, max_length=4000)


class DecideArgs(WorkflowArgs):
    approved: bool
    comment: str = Field(default="", max_length=2000)


class UsageArgs(Args):
    group_by: Literal["agent", "execution", "model", "day"] | None = Field(default=None, description="How to split it.")


async def coordinate_agents(client: GatewayClient, args: CoordinateArgs) -> Outcome:
    chosen: list[Result] = []
    for name in args.teams:
        found = await _pick(client, "/api/v1/teams", name, "team_id", "team", "department")
        if isinstance(found, Outcome):
            return found
        chosen.append(found)
    body = {"team_ids": [t["team_id"] for t in chosen], "objective": args.objective}
    started = await client.post("/api/v1/coordinations", body)
    if not started.ok:
        return _error(started, "starting the coordination")
    run_id = started.body["resource_ids"]["run_id"]
    names = " and ".join(str(t["name"]) for t in chosen)
    return Outcome(
        True,
        {
            "summary": f"{names} are working together on: {args.objective} ({chosen[0]['name']} leads).",
            "run_id": run_id,
            "links": {"run": f"/api/v1/coordinations/{run_id}", "live": f"/api/v1/team-runs/{run_id}/events"},
        },
    )


async def decide_approval(client: GatewayClient, args: DecideArgs) -> Outcome:
    latest, answered = await _latest_execution(client, args.workflow)
    if latest is None:
        assert answered is not None
        return answered
    execution_id = latest["execution_id"]
    detail = await client.get(f"/api/v1/workflows/executions/{execution_id}")
    steps = detail.body.get("steps", []) if detail.ok and isinstance(detail.body, dict) else []
    waiting = [s["id"] for s in steps if s.get("kind") == "approval" and s.get("status") == "waiting"]
    if not waiting:
        return Outcome(False, {"error": f"the latest run of {latest['workflow_name']} waits for no approval"})
    step_id = waiting[0]
    decision = {"approved": args.approved, "comment": args.comment}
    done = await client.post(f"/api/v1/workflows/executions/{execution_id}/approvals/{step_id}", decision)
    if not done.ok:
        return _error(done, "deciding the approval")
    verb = "Approved" if args.approved else "Rejected"
    return Outcome(
        True,
        {
            "summary": f"{verb} {step_id} of {latest['workflow_name']}.",
            "execution_id": execution_id,
            "step_id": step_id,
            "links": {"execution": f"/api/v1/workflows/executions/{execution_id}"},
        },
    )


async def show_usage(client: GatewayClient, args: UsageArgs) -> Outcome:
    found = await client.get("/api/v1/usage", {"group_by": args.group_by})
    if not found.ok:
        return _error(found, "reading usage")
    total = found.body.get("total", {})
    budget = found.body.get("budget")
    left = ""
    if isinstance(budget, dict) and budget.get("tokens"):
        left = f"; {budget['tokens'] - budget.get('used_tokens', 0)} tokens left of this month's {budget['tokens']}"
    summary = (
        f"{total.get('calls', 0)} model calls, {total.get('total_tokens', 0)} tokens, "
        f"${total.get('cost_usd', 0.0):.4f}{left}."
    )
    return Outcome(True, {"summary": summary, "total": total, "groups": found.body.get("groups", {}), "budget": budget})


class ProposeWorkflowArgs(Args):
    spec: WorkflowSpec = Field(description="The definition, in the engine's own schema (only its step kinds).")
    sample_input: dict[str, Any] = Field(default_factory=dict, description="An input to try it on.")


class SaveWorkflowArgs(Args):
    proposal_id: str = Field(pattern=r"^wfp_[0-9a-f]{16}$", description="What propose_workflow answered.")


DRY_RUN_WAIT_S = 20.0


def proposal_id(spec: dict[str, Any]) -> str:
    return "wfp_" + hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


async def propose_workflow(client: GatewayClient, args: ProposeWorkflowArgs) -> Outcome:
    """A definition checked and tried, never saved: the engine validates it, a dry run on the deterministic provider
    shows the path the sample input takes, and the steps that no agent of the workspace can take are named."""
    spec = args.spec.model_dump(mode="json", exclude_none=True)
    listed = await client.get("/api/v1/agents", {"limit": 500})
    agents = [a for a in _items(listed) if not a.get("retired")] if listed.ok else []
    missing = [
        step.id
        for step in args.spec.steps
        if isinstance(step, AgentStep)
        and not any(
            (step.agent_id is None or a["agent_id"] == step.agent_id)
            and (step.role is None or a.get("role") == step.role)
            and (step.capability is None or step.capability in a.get("capabilities", []))
            for a in agents
        )
    ]
    tried = await client.post("/api/v1/workflows/dry-runs", {"spec": spec, "input": args.sample_input})
    if not tried.ok:
        return _error(tried, "checking the definition")  # the engine's own validation: nothing is saved
    execution_id = tried.body["resource_ids"].get("execution_id") or tried.body["links"]["resource"].rsplit("/", 1)[-1]
    run = await _settled(client, execution_id)
    steps = run.get("steps", []) if run else []
    path = [f"{s['id']}: {s['status']}" for s in steps if s.get("status") not in {"pending", None}]
    ident = proposal_id(spec)
    shown = ", ".join(f"{s.id} ({s.kind})" for s in args.spec.steps)
    return Outcome(
        True,
        {
            "summary": f"Proposed {args.spec.name}: {shown}. On the sample input: {'; '.join(path) or 'no step ran'}"
            + (f". No agent can take {', '.join(missing)} yet" if missing else "")
            + ". Not saved: ask the person to confirm, then call save_workflow.",
            "proposal_id": ident,
            "steps": [{"id": s.id, "kind": s.kind, "name": s.name} for s in args.spec.steps],
            "path": path,
            "dry_run_status": run.get("status") if run else "unknown",
            "missing_agents": missing,
            "links": {"dry_run": f"/api/v1/workflows/executions/{execution_id}"},
        },
    )


async def _settled(client: GatewayClient, execution_id: str) -> dict[str, Any] | None:
    """The dry run once it has ended or waits (for an approval, a delay), within DRY_RUN_WAIT_S."""
    until = time.monotonic() + DRY_RUN_WAIT_S
    found: dict[str, Any] | None = None
    while time.monotonic() < until:
        answer = await client.get(f"/api/v1/workflows/executions/{execution_id}")
        if answer.ok and isinstance(answer.body, dict):
            found = answer.body
            steps = found.get("steps", [])
            if found.get("status") != "running" or any(
                s.get("status") == "waiting" and s.get("kind") in {"approval", "delay"} for s in steps
            ):
                return found
        await asyncio.sleep(0.2)
    return found


async def save_workflow(client: GatewayClient, args: SaveWorkflowArgs) -> Outcome:
    """Save a definition proposed in an earlier turn: the person has seen it and answered since."""
    proposed = next(
        (
            use
            for use in reversed(client.earlier)
            if use.name == "propose_workflow" and use.ok and use.result.get("proposal_id") == args.proposal_id
        ),
        None,
    )
    if proposed is None:
        return Outcome(
            False,
            {
                "error": "no such proposal in an earlier turn: propose the workflow, show it, and save it once the "
                "person has confirmed (a proposal is never saved in the turn that made it)"
            },
        )
    spec = proposed.arguments["spec"]
    created = await client.post("/api/v1/workflows", {"spec": spec})
    if not created.ok:
        return _error(created, "saving the workflow")
    workflow_id = created.body["resource_ids"]["workflow_id"]
    return Outcome(
        True,
        {
            "summary": f"Saved the workflow {spec.get('name', '')}.",
            "workflow_id": workflow_id,
            "links": {"workflow": f"/api/v1/workflows/{workflow_id}"},
        },
    )


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    args: type[Args]
    run: Callable[[GatewayClient, Any], Awaitable[Outcome]]
    parameters: dict[str, Any] = field(default_factory=dict)


def _spec(
    name: str, description: str, args: type[Args], run: Callable[[GatewayClient, Any], Awaitable[Outcome]]
) -> ToolSpec:
    return ToolSpec(name, description, args, run, args.model_json_schema())


TOOLS: dict[str, ToolSpec] = {
    spec.name: spec
    for spec in (
        _spec("list_agent_teams", "List the workspace's teams.", NoArgs, list_agent_teams),
        _spec(
            "create_agent_team",
            "Create a team from a department template, optionally with only some roles.",
            CreateTeamArgs,
            create_agent_team,
        ),
        _spec("run_agent_team", "Run a team on a plain-language objective.", RunTeamArgs, run_agent_team),
        _spec("get_team_status", "A team's members, their availability and its runs.", TeamArgs, get_team_status),
        _spec(
            "create_workflow",
            "Set up a workflow from a description (the template that fits it).",
            CreateWorkflowArgs,
            create_workflow,
        ),
        _spec("execute_workflow", "Start a workflow.", ExecuteWorkflowArgs, execute_workflow),
        _spec("get_workflow_status", "Where a workflow's latest run stands.", WorkflowArgs, get_workflow_status),
        _spec("pause_execution", "Pause a workflow's latest run.", WorkflowArgs, _control("pause")),
        _spec("resume_execution", "Resume a workflow's latest run.", WorkflowArgs, _control("resume")),
        _spec("cancel_execution", "Cancel a workflow's latest run.", WorkflowArgs, _control("cancel")),
        _spec(
            "retry_execution",
            "Retry a workflow's failed latest run from its failed steps.",
            WorkflowArgs,
            _control("retry"),
        ),
        _spec(
            "decide_approval",
            "Approve or reject the step a workflow's latest run waits on.",
            DecideArgs,
            decide_approval,
        ),
        _spec(
            "coordinate_agents", "Several teams on one objective, the first leading.", CoordinateArgs, coordinate_agents
        ),
        _spec(
            "propose_workflow",
            "Check and dry-run a workflow definition written from a description; never saves it.",
            ProposeWorkflowArgs,
            propose_workflow,
        ),
        _spec(
            "save_workflow",
            "Save a workflow proposed in an earlier turn, once the person confirmed it.",
            SaveWorkflowArgs,
            save_workflow,
        ),
        _spec("show_usage", "Model usage and cost, and the monthly budget left.", UsageArgs, show_usage),
        _spec("delegate_to_agent", "Hand a task to an agent.", DelegateArgs, delegate_to_agent),
        _spec(
            "check_agent_availability",
            "Which agents are available (for a capability).",
            AvailabilityArgs,
            check_agent_availability,
        ),
        _spec("store_shared_context", "Remember a fact (for a team).", RememberArgs, store_shared_context),
        _spec("retrieve_agent_memory", "What memory holds about a topic.", RecallArgs, retrieve_agent_memory),
    )
}


def openai_tools() -> list[dict[str, Any]]:
    """The tools as OpenAI function definitions, from the same models that validate their arguments."""
    return [
        {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
        for t in TOOLS.values()
    ]
