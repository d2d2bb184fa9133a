"""The retriever against the real MongoDB-compatible server, with a hand-written embeddings provider."""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from contracts.memory import RecallForTask, RetrieveMemory, Scope, ScopeKind, Tier
from memory import retrieval
from memory.retrieval import Retriever, Weights
from servicekit.testing import eventually

NOW = datetime(2026, 6, 1, tzinfo=UTC)
Document = dict[str, Any]


class KeywordEmbeddings:
    """A fake provider: one dimension per concept, so 'money' and 'budget' land close."""

    CONCEPTS = (("budget", "money", "cost", "price"), ("shipping", "delivery"), ("contract", "agreement"))

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [[float(any(word in text.lower() for word in concept)) for concept in self.CONCEPTS] for text in texts]


def row(entry_id: str, content: str, *, age_days: float = 0, importance: float = 0.5, **extra: Any) -> Document:
    stamp = NOW - timedelta(days=age_days)
    return {
        "_id": entry_id,
        "workspace_id": extra.pop("workspace_id", "ws1"),
        "tier": extra.pop("tier", Tier.LONG_TERM.value),
        "entry_id": entry_id,
        "content": content,
        "importance": importance,
        "deleted": False,
        "created_at": stamp,
        "updated_at": stamp,
        **extra,
    }


async def test_recency_importance_and_semantic_similarity_join_the_score(
    mongo: AsyncMongoClient[Document], env_name: str
) -> None:
    db = mongo[f"{env_name}_memory_unit"]
    await db["entries"].insert_many(
        [
            row("old", "budget review for Acme", age_days=300),
            row("new", "budget review for Acme", age_days=1),
            row("vip", "budget review for Acme", age_days=300, importance=1.0),
            row("money", "Acme money talk budget", age_days=5),
            row("other-ws", "budget review for Acme", workspace_id="ws2"),
            row(
                "expired",
                "budget review for Acme",
                tier=Tier.SHORT_TERM.value,
                scope_kind="execution",
                scope_id="e1",
                expires_at=NOW - timedelta(seconds=1),
            ),
        ]
    )
    plain = Retriever(db["entries"], db["stamps"], weights=Weights(half_life_days=30))
    scopes = [Scope(kind=ScopeKind.EXECUTION, id="e1")]
    results = await plain.retrieve("ws1", RetrieveMemory(query="budget review", scopes=scopes), NOW)
    ids = [r["entry_id"] for r in results]
    assert "other-ws" not in ids
    assert "expired" not in ids
    assert ids.index("new") < ids.index("old"), "recency breaks a tie in relevance"
    assert ids.index("vip") < ids.index("old"), "importance breaks a tie in relevance"
    assert "semantic" not in results[0]["why"]

    semantic = Retriever(db["entries"], db["stamps"], embeddings=KeywordEmbeddings())
    ranked = await semantic.retrieve("ws1", RetrieveMemory(query="acme cost"), NOW)
    assert all("semantic" in r["why"] for r in ranked)
    by_id = {r["entry_id"]: r for r in ranked}
    assert by_id["money"]["why"]["semantic"] > 0.5


async def test_a_stale_large_index_keeps_serving_without_leaking_deleted_entries(
    mongo: AsyncMongoClient[Document], env_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retrieval, "BACKGROUND_REBUILD_ROWS", 1)
    db = mongo[f"{env_name}_memory_stale"]
    await db["entries"].insert_many([row("keep", "renewal for Acme"), row("drop", "renewal for Globex")])
    retriever = Retriever(db["entries"], db["stamps"])
    query = RetrieveMemory(query="renewal")
    assert {r["entry_id"] for r in await retriever.retrieve("ws1", query, NOW)} == {"keep", "drop"}

    await db["entries"].update_one({"_id": "drop"}, {"$set": {"deleted": True}})
    await db["entries"].update_one({"_id": "keep"}, {"$set": {"content": "renewal for Acme in April"}})
    await db["entries"].insert_one(row("new", "renewal for Initech"))
    await db["stamps"].update_one({"_id": "ws1"}, {"$set": {"stamp": "moved"}}, upsert=True)

    stale = await retriever.retrieve("ws1", query, NOW)
    assert [(r["entry_id"], r["content"]) for r in stale] == [("keep", "renewal for Acme in April")]

    async def rebuilt() -> set[str] | None:
        found = {r["entry_id"] for r in await retriever.retrieve("ws1", query, NOW)}
        return found if "new" in found else None

    assert await eventually(rebuilt) == {"keep", "new"}


async def test_a_tasks_recall_lists_its_runs_shared_context_from_the_same_read(
    mongo: AsyncMongoClient[Document], env_name: str
) -> None:
    db = mongo[f"{env_name}_memory_task"]
    run: Document = {"scope_kind": "team_run", "scope_id": "r1"}
    execution: Document = {"scope_kind": "execution", "scope_id": "e1"}
    working = Tier.WORKING.value
    await db["entries"].insert_many(
        [
            row("s1", "s1 lead score 80", tier=working, key="s1", value={"score": 80}, age_days=2, **run),
            row("s2", "s2 proposal draft", tier=working, key="s2", value={"draft": "d"}, age_days=1, **run),
            row("gone", "gone proposal", tier=working, key="gone", value=1, **run, deleted=True),
            row("other-run", "proposal", tier=working, key="x", value=1, scope_kind="team_run", scope_id="r2"),
            row("other-ws", "proposal", tier=working, key="y", value=1, workspace_id="ws2", **run),
            row("note", "proposal note of the execution", tier=working, key="note", value="n", **execution),
            row("fact", "proposal pricing knowledge"),
        ]
    )
    retriever = Retriever(db["entries"], db["stamps"])
    shared = Scope(kind=ScopeKind.TEAM_RUN, id="r1")
    scopes = [Scope(kind=ScopeKind.EXECUTION, id="e1"), shared]
    asked = RecallForTask(query="proposal", scopes=scopes, shared=shared, limit=5)
    recalled, listed = await retriever.recall_for_task("ws1", asked, NOW)

    assert [r["key"] for r in listed] == ["s2", "s1"], "the run's live entries, newest first, nothing else"
    assert listed[0]["value"] == {"draft": "d"}
    plain = await retriever.retrieve("ws1", RetrieveMemory(query="proposal", scopes=scopes, limit=5), NOW)
    assert recalled == plain, "the recall is what RetrieveMemory answers"
    assert {r["entry_id"] for r in recalled} >= {"s2", "note", "fact"}

    # The shared scope is listed even when the recall itself does not ask for it (nor for working entries).
    narrow = RecallForTask(query="proposal", scopes=scopes[:1], tiers=[Tier.LONG_TERM], shared=shared)
    recalled, listed = await retriever.recall_for_task("ws1", narrow, NOW)
    assert [r["entry_id"] for r in recalled] == ["fact"]
    assert [r["key"] for r in listed] == ["s2", "s1"]
    limited = RecallForTask(query="proposal", scopes=scopes, shared=shared, shared_limit=1)
    assert [r["key"] for r in (await retriever.recall_for_task("ws1", limited, NOW))[1]] == ["s2"]
