"""Following the workflow engine's executions that the orchestrator started (team runs, delegations).

The orchestrator runs its plans as executions of the workflow engine: it sends ExecuteWorkflow with an inline
definition and an ``origin`` over NATS, never importing the engine. Each owner names its executions with a prefix of
its own (``tr-`` for team runs, ``dg-`` for delegations); the engine's step and end events are delivered here by
durable consumers of the EVENTS stream and handed to the owner of the prefix. Every other execution is ignored.

Owners are called at least once per event (the consumers redeliver until the handler returns), in no order across
event types: an owner turns an event into a command on its own aggregate, keyed by the event's id, so a repeat
changes nothing, and its aggregate takes an execution's end whatever arrived before it.
"""

from collections.abc import Awaitable, Callable

from contracts import EventRecord
from contracts.workflows import (
    EXECUTION_AGGREGATE,
    ExecutionCancelled,
    ExecutionCompleted,
    ExecutionFailed,
    StepFailed,
    StepScheduled,
    StepSucceeded,
)
from servicekit.bus import Bus, ConsumerPolicy
from servicekit.projections import serve_events

Owner = Callable[[EventRecord], Awaitable[None]]
FOLLOWED = [
    cls.type_name
    for cls in (StepScheduled, StepSucceeded, StepFailed, ExecutionCompleted, ExecutionFailed, ExecutionCancelled)
]


class Followers:
    """Who follows which executions, by the prefix of their ids."""

    def __init__(self) -> None:
        self._owners: dict[str, Owner] = {}

    def follow(self, prefix: str, owner: Owner) -> None:
        if any(prefix.startswith(p) or p.startswith(prefix) for p in self._owners):
            raise ValueError(f"execution id prefix {prefix!r} overlaps another owner's")
        self._owners[prefix] = owner

    async def handle(self, record: EventRecord) -> None:
        for prefix, owner in self._owners.items():
            if record.aggregate_id.startswith(prefix):
                await owner(record)
                return


def serve_following(bus: Bus, service: str, followers: Followers, policy: ConsumerPolicy) -> None:
    serve_events(bus, service, EXECUTION_AGGREGATE, "following", followers.handle, policy, types=FOLLOWED)
