"""Composition root of the orchestrator: agents, teams and the workspaces' budget caps (commands, read models, queries).
The agent runtime that runs tasks is its own process of this package (``orchestrator.runtime``)."""

from collections.abc import Callable
from datetime import datetime, timedelta

from fastapi import FastAPI

from orchestrator.delegation_projection import DelegationsProjection
from orchestrator.delegations import DelegationReactor, register_delegations
from orchestrator.domain import delegation, team_run
from orchestrator.following import Followers, serve_following
from orchestrator.handlers import build_router
from orchestrator.mail import InboxReactor, register_mail
from orchestrator.mail_projection import ThreadsProjection, register_mail_queries
from orchestrator.projections import AgentsProjection, TeamsProjection, WorkspaceBudgetsProjection
from orchestrator.queries import build_queries, register_delegation_queries
from orchestrator.run_projection import TeamRunsProjection
from orchestrator.runtime.budgets import Budgets
from orchestrator.runtime.ledger import UsageLedger
from orchestrator.runtime.slots import Slots
from orchestrator.runtime.workers import Workers
from orchestrator.settings import OrchestratorSettings
from orchestrator.team_runs import TeamRunReactor, register_team_runs
from servicekit.commands import serve_commands
from servicekit.eventstore import utcnow
from servicekit.projections import serve_projection
from servicekit.queries import serve_queries
from servicekit.runtime import Runtime, create_app

SERVICE = "orchestrator"


def build_app(settings: OrchestratorSettings, clock: Callable[[], datetime] = utcnow) -> FastAPI:
    async def setup(runtime: Runtime, app: FastAPI) -> None:
        db = runtime.db
        agents = AgentsProjection(db["agents"])
        teams = TeamsProjection(db["teams"])
        runs = TeamRunsProjection(db["team_runs"])
        caps = WorkspaceBudgetsProjection(db["workspace_budgets"])
        threads = ThreadsProjection(db["threads"], db["messages"])
        slots, usage = Slots(db["slots"]), UsageLedger(db["usage"])
        for part in (agents, teams, runs, threads, slots, usage):
            await part.ensure_indexes()
        router = build_router(agents)
        register_team_runs(router, clock)
        register_mail(router, clock)
        serve_commands(runtime.bus, SERVICE, router, runtime.store, runtime.policy)
        serve_projection(runtime.bus, SERVICE, agents, runtime.store, runtime.policy)
        serve_projection(runtime.bus, SERVICE, teams, runtime.store, runtime.policy)
        serve_projection(runtime.bus, SERVICE, caps, runtime.store, runtime.policy)
        serve_projection(runtime.bus, SERVICE, runs, runtime.store, runtime.policy)
        serve_projection(runtime.bus, SERVICE, threads, runtime.store, runtime.policy)
        queries = build_queries(
            agents,
            teams,
            caps,
            slots,
            Workers(db["workers"]),
            Budgets(db["budgets"]),
            usage,
            runs,
            offline_after=timedelta(seconds=settings.agent_offline_after_s),
            clock=clock,
        )
        register_mail_queries(queries, threads)
        serve_queries(runtime.bus, SERVICE, queries, workers=runtime.settings.query_workers)
        if runtime.relay is None:
            raise RuntimeError("the orchestrator needs its event store and relay")
        reactor = TeamRunReactor(runtime.store, runtime.bus, router)
        runtime.relay.add_reactor(reactor.react)
        runtime.relay.add_reactor(InboxReactor(runtime.bus).react)
        followers = Followers()  # the executions the orchestrator's plans run as, by owner
        followers.follow(team_run.EXECUTION_PREFIX, reactor.follow)
        # Delegations: a task to one agent, run as a one-step execution of the engine (``dg-`` executions).
        delegations = DelegationsProjection(db["delegations"])
        await delegations.ensure_indexes()
        offline_after = timedelta(seconds=settings.agent_offline_after_s)
        register_delegations(
            router,
            agents,
            slots,
            Workers(db["workers"]),
            max_depth=settings.delegation_max_depth,
            offline_after=offline_after,
            clock=clock,
        )
        serve_projection(runtime.bus, SERVICE, delegations, runtime.store, runtime.policy)
        register_delegation_queries(queries, delegations, usage)
        delegating = DelegationReactor(runtime.store, runtime.bus, router)
        runtime.relay.add_reactor(delegating.react)
        followers.follow(delegation.EXECUTION_PREFIX, delegating.follow)
        serve_following(runtime.bus, SERVICE, followers, runtime.policy)

    return create_app(settings, setup, title="orchestrator", event_store=True)
