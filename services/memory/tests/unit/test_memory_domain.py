"""The memory aggregates: pure decisions."""

from datetime import UTC, datetime, timedelta
from functools import reduce

import pytest

from contracts.errors import DomainError
from contracts.memory import (
    DeleteWorkingEntry,
    ForgetLongTerm,
    LongTermFields,
    PromoteShortTerm,
    PutWorkingEntry,
    RememberLongTerm,
    Scope,
    ScopeKind,
    StoreShortTerm,
    UpdateLongTerm,
)
from memory.domain import entries as d

T0 = datetime(2026, 1, 1, tzinfo=UTC)
RUN = Scope(kind=ScopeKind.TEAM_RUN, id="run_1")


def test_working_entries_count_versions_and_refuse_stale_ones() -> None:
    state = d.Working()
    events = d.put_working(state, PutWorkingEntry(scope=RUN, key="k", value=1, expected_version=0))
    state = reduce(d.evolve_working, events, state)
    assert state.version == 1
    with pytest.raises(d.VersionConflict):
        d.put_working(state, PutWorkingEntry(scope=RUN, key="k", value=2, expected_version=0))
    state = reduce(d.evolve_working, d.put_working(state, PutWorkingEntry(scope=RUN, key="k", value=2)), state)
    assert state.version == 2, "without expected_version the write is last-writer-wins"
    with pytest.raises(d.MemoryNotFound):
        d.delete_working(d.Working(), DeleteWorkingEntry(scope=RUN, key="k"))
    state = reduce(d.evolve_working, d.delete_working(state, DeleteWorkingEntry(scope=RUN, key="k")), state)
    again = d.put_working(state, PutWorkingEntry(scope=RUN, key="k", value=3, expected_version=0))
    assert again, "a deleted key is absent again: expected_version 0 creates it"
    assert d.working_id(RUN, "a/b:c") != d.working_id(RUN, "a/b:d")
    assert len(d.working_id(RUN, "x" * 128)) == 40


def test_short_term_expires_and_promotes_once() -> None:
    command = StoreShortTerm(entry_id="s1", scope=RUN, content="note", ttl_s=60)
    state = reduce(d.evolve_short_term, d.store_short_term(d.ShortTerm(), command, T0), d.ShortTerm())
    assert state.alive(T0 + timedelta(seconds=59))
    assert not state.alive(T0 + timedelta(seconds=60))
    promote = PromoteShortTerm(entry_id="s1", long_term_id="l1")
    with pytest.raises(d.MemoryNotFound):
        d.promote(state, promote, T0 + timedelta(seconds=61))
    state = reduce(d.evolve_short_term, d.promote(state, promote, T0), state)
    with pytest.raises(DomainError):
        d.promote(state, promote, T0)
    with pytest.raises(d.InvalidScope):
        d.store_short_term(
            d.ShortTerm(),
            StoreShortTerm(entry_id="s2", scope=Scope(kind=ScopeKind.TEAM, id="t"), content="x", ttl_s=1),
            T0,
        )


def test_long_term_update_and_forget() -> None:
    fields = LongTermFields(content="Acme renews in March", tags=["acme"])
    state = reduce(
        d.evolve_long_term,
        d.remember_command(d.LongTerm(), RememberLongTerm(entry_id="l", fields=fields)),
        d.LongTerm(),
    )
    [updated] = d.update_long_term(state, UpdateLongTerm(entry_id="l", importance=0.9))
    state = d.evolve_long_term(state, updated)
    assert state.fields == LongTermFields(content="Acme renews in March", tags=["acme"], importance=0.9)
    assert d.update_long_term(state, UpdateLongTerm(entry_id="l")) == []
    state = reduce(d.evolve_long_term, d.forget(state, ForgetLongTerm(entry_id="l")), state)
    with pytest.raises(d.MemoryNotFound):
        d.forget(state, ForgetLongTerm(entry_id="l"))
