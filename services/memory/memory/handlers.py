"""Command handlers of the memory service."""

import asyncio
from collections.abc import Callable
from datetime import datetime

from contracts.memory import (
    ClearShortTerm,
    DeleteShortTerm,
    DeleteWorkingEntry,
    ForgetLongTerm,
    ImportLongTerm,
    LongTermFields,
    PromoteShortTerm,
    PutWorkingEntry,
    RememberLongTerm,
    StoreShortTerm,
    UpdateLongTerm,
)
from memory.domain import entries as d
from memory.projections import EntriesProjection
from servicekit.commands import CommandContext, CommandRouter
from servicekit.eventstore import StreamRef, load_state

Clock = Callable[[], datetime]
IMPORT_CONCURRENCY = 64


def build_router(clock: Clock, entries: EntriesProjection) -> CommandRouter:
    router = CommandRouter()

    def short(ctx: CommandContext, entry_id: str) -> StreamRef:
        return StreamRef(ctx.workspace_id, d.SHORT_TERM, entry_id)

    def long(ctx: CommandContext, entry_id: str) -> StreamRef:
        return StreamRef(ctx.workspace_id, d.LONG_TERM, entry_id)

    @router.register(StoreShortTerm)
    async def store_short(command: StoreShortTerm, ctx: CommandContext) -> dict[str, str]:
        now = clock()
        await ctx.execute(
            short(ctx, command.entry_id),
            d.ShortTerm(),
            d.evolve_short_term,
            lambda s: d.store_short_term(s, command, now),
            new_stream=True,
        )
        return {"entry_id": command.entry_id}

    @router.register(DeleteShortTerm)
    async def delete_short(command: DeleteShortTerm, ctx: CommandContext) -> dict[str, str]:
        now = clock()
        await ctx.execute(
            short(ctx, command.entry_id),
            d.ShortTerm(),
            d.evolve_short_term,
            lambda s: d.delete_short_term(s, command.entry_id, now),
        )
        return {"entry_id": command.entry_id}

    @router.register(ClearShortTerm)
    async def clear_short(command: ClearShortTerm, ctx: CommandContext) -> dict[str, str]:
        ids = await entries.short_term_ids(ctx.workspace_id, command.scope)
        for entry_id in ids:
            await ctx.execute(
                short(ctx, entry_id), d.ShortTerm(), d.evolve_short_term, lambda s: d.clear_short_term(s, "scope ended")
            )
        return {"cleared": str(len(ids))}

    @router.register(PromoteShortTerm)
    async def promote(command: PromoteShortTerm, ctx: CommandContext) -> dict[str, str]:
        now = clock()
        stream = short(ctx, command.entry_id)
        # The promotion first: the short-term stream's version lets one promoter win, and only the winner writes
        # the long-term entry. If anything fails after it, a redelivery (the same command) writes that entry.
        await ctx.execute(stream, d.ShortTerm(), d.evolve_short_term, lambda s: d.promote(s, command, now))
        loaded = await load_state(ctx.store, stream, d.ShortTerm(), d.evolve_short_term, ctx.cache)
        fields = d.promoted_fields(loaded.state, command)
        await ctx.execute(
            long(ctx, command.long_term_id),
            d.LongTerm(),
            d.evolve_long_term,
            lambda s: d.remember(s, command.long_term_id, fields, promoted_from=command.entry_id),
            new_stream=True,
        )
        return {"entry_id": command.long_term_id}

    @router.register(PutWorkingEntry)
    async def put_working(command: PutWorkingEntry, ctx: CommandContext) -> dict[str, str]:
        stream = StreamRef(ctx.workspace_id, d.WORKING, d.working_id(command.scope, command.key))
        # A key is usually written once (a team run's step outputs, a fact stored from chat): tried as a new
        # stream first, read only if it exists already.
        version = await ctx.execute(
            stream, d.Working(), d.evolve_working, lambda s: d.put_working(s, command), new_stream=True
        )
        return {"key": command.key, "version": str(version)}

    @router.register(DeleteWorkingEntry)
    async def delete_working(command: DeleteWorkingEntry, ctx: CommandContext) -> dict[str, str]:
        stream = StreamRef(ctx.workspace_id, d.WORKING, d.working_id(command.scope, command.key))
        await ctx.execute(stream, d.Working(), d.evolve_working, lambda s: d.delete_working(s, command))
        return {"key": command.key}

    @router.register(RememberLongTerm)
    async def remember(command: RememberLongTerm, ctx: CommandContext) -> dict[str, str]:
        await ctx.execute(
            long(ctx, command.entry_id),
            d.LongTerm(),
            d.evolve_long_term,
            lambda s: d.remember_command(s, command),
            new_stream=True,
        )
        return {"entry_id": command.entry_id}

    @router.register(ImportLongTerm)
    async def import_many(command: ImportLongTerm, ctx: CommandContext) -> dict[str, str]:
        async def one(entry_id: str, fields: LongTermFields) -> None:
            await ctx.execute(
                long(ctx, entry_id),
                d.LongTerm(),
                d.evolve_long_term,
                lambda s: d.remember(s, entry_id, fields),
                new_stream=True,
            )

        for start in range(0, len(command.entries), IMPORT_CONCURRENCY):  # appended together (group commit)
            await asyncio.gather(*(one(*entry) for entry in command.entries[start : start + IMPORT_CONCURRENCY]))
        return {"imported": str(len(command.entries))}

    @router.register(UpdateLongTerm)
    async def update(command: UpdateLongTerm, ctx: CommandContext) -> dict[str, str]:
        await ctx.execute(
            long(ctx, command.entry_id), d.LongTerm(), d.evolve_long_term, lambda s: d.update_long_term(s, command)
        )
        return {"entry_id": command.entry_id}

    @router.register(ForgetLongTerm)
    async def forget(command: ForgetLongTerm, ctx: CommandContext) -> dict[str, str]:
        await ctx.execute(long(ctx, command.entry_id), d.LongTerm(), d.evolve_long_term, lambda s: d.forget(s, command))
        return {"entry_id": command.entry_id}

    return router
