"""Contracts shared by every service: the only module services import from one another."""

from contracts import (
    agents,
    budgets,
    delegations,
    health,
    mail,
    memory,
    neptune,
    public_events,
    team_runs,
    teams,
    workflows,
)
from contracts.envelope import Actor, Envelope, EventRecord, new_id
from contracts.errors import ErrorCode
from contracts.messages import Command, Event, Message, Query
from contracts.registry import REGISTRY, Registry, UnknownMessageType
from contracts.replies import CommandOutcome, OutcomeStatus, QueryReply
from contracts.subjects import Subjects

__all__ = [
    "REGISTRY",
    "Actor",
    "Command",
    "CommandOutcome",
    "Envelope",
    "ErrorCode",
    "Event",
    "EventRecord",
    "Message",
    "OutcomeStatus",
    "Query",
    "QueryReply",
    "Registry",
    "Subjects",
    "UnknownMessageType",
    "agents",
    "budgets",
    "delegations",
    "health",
    "mail",
    "memory",
    "neptune",
    "new_id",
    "public_events",
    "team_runs",
    "teams",
    "workflows",
]
