"""The read model of team runs and coordinations: one row per run, with its plan as a table of steps (member,
task, status, attempt, output, timings), its handoffs with their sizes, its executions and its summary."""

from typing import Any

from pymongo import ASCENDING, DESCENDING

from contracts import EventRecord
from contracts.team_runs import (
    HandoffRecorded,
    MemberStepFailed,
    MemberStepScheduled,
    MemberStepSucceeded,
    PlanRejected,
    TeamRunCancelled,
    TeamRunEnded,
    TeamRunPlanned,
    TeamRunStarted,
    TeamRunStatus,
    TeamRunSummarizing,
)
from orchestrator.domain import team_run
from servicekit.eventstore import decode
from servicekit.projections import RowProjection

Document = dict[str, Any]


def _index(step_id: str) -> int:
    return int(step_id.removeprefix("s")) - 1  # plan steps are s1..sN, in order


class TeamRunsProjection(RowProjection):
    aggregate = team_run.AGGREGATE
    name = "team_runs"

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("workspace_id", ASCENDING), ("run_id", ASCENDING)], unique=True)
        await self.collection.create_index(
            [("workspace_id", ASCENDING), ("team_ids", ASCENDING), ("created_at", DESCENDING)]
        )
        await self.collection.create_index([("workspace_id", ASCENDING), ("created_at", DESCENDING)])

    async def apply(self, record: EventRecord) -> bool:  # noqa: PLR0912 - one case per event
        event = decode(record)
        at = record.occurred_at.isoformat()
        run_id = record.aggregate_id
        match event:
            case TeamRunStarted():
                row = {
                    "run_id": run_id,
                    "kind": event.kind,
                    "team_ids": event.team_ids,
                    "objective": event.objective,
                    "input": event.input,
                    "budget": None if event.budget is None else event.budget.model_dump(mode="json"),
                    "max_steps": event.max_steps,
                    "members": [m.model_dump(mode="json") for m in event.members],
                    "lead": event.lead,
                    "status": TeamRunStatus.PLANNING.value,
                    "plan": [],
                    "handoffs": [],
                    "executions": {"plan": event.execution_id},
                    "summary": None,
                    "summary_by": None,
                    "error": None,
                    "created_at": at,
                    "updated_at": at,
                    "ended_at": None,
                }
                return await self.insert_row(record, row)
            case TeamRunPlanned(plan=plan, execution_id=execution_id):
                steps = [
                    {
                        **s.model_dump(mode="json"),
                        "status": "pending",
                        "attempt": 0,
                        "output": None,
                        "error": None,
                        "error_kind": None,
                        "scheduled_at": None,
                        "finished_at": None,
                    }
                    for s in plan
                ]
                changes: Document = {
                    "plan": steps,
                    "status": TeamRunStatus.RUNNING.value,
                    "executions.work": execution_id,
                }
            case PlanRejected(error=error):
                changes = {"error": error}
            case MemberStepScheduled(step_id=step_id, attempt=attempt):
                i = _index(step_id)
                changes = {f"plan.{i}.status": "scheduled", f"plan.{i}.attempt": attempt, f"plan.{i}.scheduled_at": at}
            case MemberStepSucceeded(step_id=step_id, attempt=attempt, output=output):
                i = _index(step_id)
                changes = {
                    f"plan.{i}.status": "succeeded",
                    f"plan.{i}.attempt": attempt,
                    f"plan.{i}.output": output,
                    f"plan.{i}.error": None,
                    f"plan.{i}.finished_at": at,
                }
            case MemberStepFailed(step_id=step_id, attempt=attempt, error=error, error_kind=kind):
                i = _index(step_id)
                changes = {
                    f"plan.{i}.status": "failed",
                    f"plan.{i}.attempt": attempt,
                    f"plan.{i}.error": error,
                    f"plan.{i}.error_kind": kind,
                    f"plan.{i}.finished_at": at,
                }
            case HandoffRecorded():
                handoff = {**event.model_dump(mode="json", exclude={"event_id"}), "at": at}
                result = await self.collection.update_one(
                    {"_id": record.stream_id, "version": record.version - 1},
                    {"$push": {"handoffs": handoff}, "$set": {"updated_at": at, "version": record.version}},
                )
                return result.modified_count == 1
            case TeamRunSummarizing(execution_id=execution_id, error=error):
                changes = {"status": TeamRunStatus.SUMMARIZING.value, "executions.summary": execution_id}
                if error:
                    changes["error"] = error
            case TeamRunEnded(status=status, summary=summary, summary_by=summary_by, error=error):
                changes = {"status": status, "summary": summary, "summary_by": summary_by, "ended_at": at}
                if error:
                    changes["error"] = error
            case TeamRunCancelled(reason=reason):
                changes = {"status": TeamRunStatus.CANCELLED.value, "error": reason, "ended_at": at}
            case _:
                changes = {}
        changes["updated_at"] = at
        return await self.update_row(record, changes)

    async def get(self, workspace_id: str, run_id: str) -> Document | None:
        return await self.collection.find_one({"workspace_id": workspace_id, "run_id": run_id}, {"_id": 0})

    async def list(
        self, workspace_id: str, team_id: str | None, kind: str | None, status: str | None, limit: int
    ) -> list[Document]:
        query: Document = {"workspace_id": workspace_id}
        if team_id is not None:
            query["team_ids"] = team_id
        if kind is not None:
            query["kind"] = kind
        if status is not None:
            query["status"] = status
        projection = {"_id": 0, "handoffs": 0, "input": 0}
        cursor = self.collection.find(query, projection, sort=[("created_at", DESCENDING)], limit=limit)
        return [doc async for doc in cursor]
