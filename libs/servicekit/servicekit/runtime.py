"""The composition root shared by every service: clients, event store, relay, bus and the HTTP app."""

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from faststream.nats import NatsBroker
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from starlette.middleware import Middleware
from starlette.types import ASGIApp

from servicekit.bus import Bus, ConsumerPolicy
from servicekit.eventstore import EventStore
from servicekit.http import HttpLimits, RequestMiddleware, protocol_class
from servicekit.mongo import connect_mongo, ping
from servicekit.relay import Relay
from servicekit.settings import ServiceSettings
from servicekit.telemetry import global_tracer_provider

log = logging.getLogger(__name__)
Document = dict[str, Any]


class Runtime:
    """Owns a service's connections. ``open`` connects; the service then registers its subscribers;
    ``start`` starts consuming (and the relay); ``stop`` drains and closes everything. A service that owns
    aggregates asks for ``event_store``: its event store and the relay that publishes it."""

    def __init__(
        self, settings: ServiceSettings, tracer_provider: TracerProvider | None = None, *, event_store: bool = False
    ) -> None:
        self.settings = settings
        self._with_store = event_store
        self.subjects = settings.subjects
        self.tracer_provider = tracer_provider or global_tracer_provider(settings)
        self.broker = NatsBroker(
            settings.nats_url,
            middlewares=(NatsTelemetryMiddleware(tracer_provider=self.tracer_provider),),
            connect_timeout=max(1, round(settings.nats_timeout_s)),
            # nats-py's drain waits until every subscription's queue is read empty, and one that nobody reads any
            # more never is (seen: a stop stuck there); past this it closes the connection anyway (its default,
            # 30 s, outlasted our stop's bound, which then left the connection open).
            drain_timeout=max(1, round(settings.nats_timeout_s)),
            graceful_timeout=settings.nats_timeout_s,
            max_reconnect_attempts=-1,
            logger=log,
            log_level=logging.DEBUG,  # one line per message is a debugging aid, not a production log
            apply_types=False,  # query handlers take the message itself (see queries.the_message)
        )
        self.bus = Bus(
            self.broker, self.subjects, settings.nats_timeout_s, self.tracer_provider.get_tracer("servicekit.bus")
        )
        self.policy = ConsumerPolicy(
            max_deliver=settings.command_max_deliver,
            ack_wait_s=settings.command_ack_wait_s,
            max_workers=settings.consumer_workers,
            # The server's cap on a durable's unacked messages, shared by every replica; each replica holds at most
            # its workers plus a buffer of 16, so this lets about eight replicas work at full speed.
            max_ack_pending=max(1024, 8 * settings.consumer_workers),
        )
        self._mongo: AsyncMongoClient[Document] | None = None
        self._store: EventStore | None = None
        self._relay: Relay | None = None
        self._on_start: list[Callable[[], None]] = []
        self._on_stop: list[Callable[[], Awaitable[None]]] = []
        self._checks: dict[str, Callable[[], Awaitable[bool]]] = {}

    def on_start(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` once consuming has started (e.g. to start a background loop)."""
        self._on_start.append(hook)

    def on_stop(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Await ``hook`` on shutdown, once consumers have stopped and before the relay and the connections close."""
        self._on_stop.append(hook)

    def check_ready(self, name: str, check: Callable[[], Awaitable[bool]]) -> None:
        """Make ``/readyz`` also ask ``check`` (beside NATS and MongoDB); it must bound its own time."""
        self._checks[name] = check

    @property
    def mongo(self) -> AsyncMongoClient[Document]:
        if self._mongo is None:
            raise RuntimeError("runtime not opened")
        return self._mongo

    @property
    def db(self) -> AsyncDatabase[Document]:
        return self.mongo[self.settings.database_name]

    @property
    def store(self) -> EventStore:
        """The service's event store (built by ``open``); its relay runs while the runtime does."""
        if self._store is None:
            raise RuntimeError("this runtime has no event store" if not self._with_store else "runtime not opened")
        return self._store

    @property
    def relay(self) -> Relay | None:
        return self._relay

    async def open(self) -> None:
        self._mongo = connect_mongo(self.settings.mongodb_url, self.settings.mongo_timeout_ms)
        await self.bus.connect()
        if self._with_store:
            self._store = EventStore(self.db)
            await self._store.ensure_indexes()
            self._relay = Relay(
                self._store,
                self.bus,
                poll_interval_s=self.settings.relay_poll_interval_s,
                tracer=self.tracer_provider.get_tracer("servicekit.relay"),
            )
            self._store.listener = self._relay
            await self._relay.register()

    async def start(self) -> None:
        await self.broker.start()
        await self.bus.start_consumers()
        if self._relay is not None:
            self._relay.start()
        for hook in self._on_start:
            hook()

    async def stop(self) -> None:
        """Shut down step by step; each step is bounded, so a stuck one cannot hold the process. Consumers stop
        first, so that nothing appends once the relay (which publishes and acts on every append) has stopped."""
        bound = 3 * self.settings.nats_timeout_s
        grace = self.settings.shutdown_grace_s
        steps: list[tuple[str, Callable[[], Awaitable[None]], float]] = [
            ("consumers", lambda: self.bus.stop_consumers(grace), bound + grace)
        ]
        steps += [("hook", hook, bound) for hook in reversed(self._on_stop)]
        if self._relay is not None:
            steps.append(("relay", self._relay.stop, bound))
        steps.append(("broker", self.broker.stop, bound))
        if self._mongo is not None:
            steps.append(("mongodb", self._mongo.close, bound))
        for name, step, limit in steps:
            task = asyncio.ensure_future(step())
            done, _ = await asyncio.wait({task}, timeout=limit)  # not wait_for: it would wait for the cancellation
            if not done:
                task.cancel()
                log.warning("shutdown step %s took over %.0fs; going on without it", name, limit)
            elif not task.cancelled() and task.exception() is not None:
                log.warning("shutdown step %s failed: %r", name, task.exception())
        self._mongo = None

    async def ready(self) -> dict[str, bool]:
        """Every check by name, asked at once: NATS, MongoDB and those added with ``check_ready``."""
        timeout = self.settings.nats_timeout_s
        checks: dict[str, Awaitable[bool]] = {"nats": self.broker.ping(timeout), "mongodb": ping(self.mongo)}
        checks.update((name, check()) for name, check in self._checks.items())
        results = await asyncio.gather(*checks.values())
        return dict(zip(checks, results, strict=True))


Setup = Callable[[Runtime, FastAPI], Awaitable[None]]


def health_router(runtime_of: Callable[[], Runtime]) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz", summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz",
        summary="NATS, MongoDB and the services this one depends on answer",
        response_model=None,
        responses={503: {"description": "Something it depends on does not answer; `failing` names it"}},
    )
    async def readyz() -> JSONResponse:
        checks = await runtime_of().ready()
        failing = [name for name, ok in checks.items() if not ok]
        return JSONResponse(
            {"status": "unavailable" if failing else "ready", "checks": checks, "failing": failing},
            status_code=503 if failing else 200,
        )

    return router


def create_app(
    settings: ServiceSettings,
    setup: Setup | None = None,
    *,
    routers: Sequence[APIRouter] = (),
    middleware: Sequence[Middleware] = (),
    title: str | None = None,
    tracer_provider: TracerProvider | None = None,
    event_store: bool = False,
    **fastapi_kwargs: Any,
) -> FastAPI:
    """An HTTP app with /healthz and /readyz whose lifespan opens the runtime, lets ``setup`` register the
    service's subscribers and state, then starts consuming. ``middleware`` runs inside servicekit.http's
    RequestMiddleware, which is always the outermost (request ids, and a problem document for any exception)."""
    holder: dict[str, Runtime] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(settings, tracer_provider, event_store=event_store)
        holder["runtime"] = runtime
        app.state.runtime = runtime
        await runtime.open()
        try:
            if setup is not None:
                await setup(runtime, app)
            await runtime.start()
            yield
        finally:
            await runtime.stop()

    app = FastAPI(
        title=title or settings.service_name,
        lifespan=lifespan,
        middleware=[Middleware(RequestMiddleware), *middleware],
        **fastapi_kwargs,
    )
    app.include_router(health_router(lambda: holder["runtime"]))
    for router in routers:
        app.include_router(router)
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=tracer_provider or global_tracer_provider(settings),
        excluded_urls="healthz,readyz",
        exclude_spans=["receive", "send"],  # one server span per request is what a trace needs
    )
    return app


def server_config(app: ASGIApp, settings: ServiceSettings) -> uvicorn.Config:
    """uvicorn's configuration of a service: its h11 implementation (chosen, not whatever happens to be installed)
    held to the settings' transport limits (see servicekit.http)."""
    limits = HttpLimits(
        max_header_bytes=settings.http_max_header_bytes,
        max_headers=settings.http_max_headers,
        header_timeout_s=settings.http_header_timeout_s,
        discard_bytes=settings.http_discard_bytes,
    )
    return uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        http=protocol_class(limits),
        h11_max_incomplete_event_size=settings.http_max_header_bytes,
        log_level=settings.log_level.lower(),
        access_log=settings.access_log,
    )


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    """Run the service until SIGINT/SIGTERM, then shut down through the lifespan."""
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = uvicorn.Server(server_config(app, settings))
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(3)  # uvicorn's exit status for a failed start-up
