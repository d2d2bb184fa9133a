"""Ranking memory for an agent: BM25 relevance (the bm25s library), recency and importance, and semantic
similarity when an embeddings provider is configured. Never crosses workspaces, never returns expired entries.

Long-term entries of a workspace are searched through a BM25 index kept in memory per workspace and rebuilt when
the workspace's stamp changes (every long-term write moves it, in whichever replica applied it); a large index
keeps answering while its successor is built in the background. Short-term and
working entries of the requested scopes are few; they are scored with an index built for the query.
"""

import asyncio
import logging
import math
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import bm25s
import numpy as np
from pymongo.asynchronous.collection import AsyncCollection

from contracts.memory import RecallForTask, RetrieveMemory, Scope, Tier
from servicekit.batching import ReadCoalescer

log = logging.getLogger(__name__)
Document = dict[str, Any]
TOKEN = re.compile(r"[A-Za-z0-9]+")
INDEX_CACHE_SIZE = 64
BACKGROUND_REBUILD_ROWS = 2000
CANDIDATES = 50


class Embeddings(Protocol):
    """An embeddings provider (OpenAI-compatible in production, a fake in unit tests)."""

    async def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


@dataclass(frozen=True, slots=True)
class Weights:
    relevance: float = 0.7
    recency: float = 0.2
    importance: float = 0.1
    semantic: float = 0.4
    half_life_days: float = 30.0


def tokens(text: str) -> list[str]:
    return [t for t in (w.lower() for w in TOKEN.findall(text)) if t not in STOPWORDS]


@dataclass(frozen=True, slots=True)
class Ranked:
    """A candidate's score and its components."""

    row: Document
    score: float
    relevance: float
    recency: float
    importance: float
    similarity: float | None


@dataclass
class WorkspaceIndex:
    stamp: str
    rows: list[Document]
    bm25: bm25s.BM25 | None


def _index(rows: list[Document]) -> bm25s.BM25 | None:
    corpus = [tokens(r["content"]) for r in rows]
    if not any(corpus):
        return None
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenization.Tokenized(*_ids(corpus)), show_progress=False)
    return retriever


def _ids(corpus: list[list[str]]) -> tuple[list[list[int]], dict[str, int]]:
    vocab: dict[str, int] = {}
    ids = [[vocab.setdefault(t, len(vocab)) for t in doc] for doc in corpus]
    return ids, vocab


def _search(
    retriever: bm25s.BM25 | None, rows: list[Document], query: list[str], k: int
) -> list[tuple[Document, float]]:
    if retriever is None or not rows or not query:
        return []
    vocab: dict[str, int] = retriever.vocab_dict
    known = [vocab[t] for t in query if t in vocab]
    if not known:
        return []
    scores = np.asarray(retriever.get_scores(known))
    k = min(k, len(rows))
    top = np.argpartition(-scores, k - 1)[:k]
    return [(rows[i], float(scores[i])) for i in top if scores[i] > 0]


class Retriever:
    def __init__(
        self,
        rows: AsyncCollection[Document],
        stamps: AsyncCollection[Document],
        *,
        weights: Weights | None = None,
        embeddings: Embeddings | None = None,
    ) -> None:
        self._rows = rows
        self._stamps = stamps
        self._weights = weights or Weights()
        self._embeddings = embeddings
        self._indexes: OrderedDict[str, WorkspaceIndex] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        self._rebuilding: dict[str, asyncio.Task[WorkspaceIndex]] = {}
        self._stamp_reads: ReadCoalescer[str, Document | None] = ReadCoalescer()  # one read for queries asked at once

    async def retrieve(self, workspace_id: str, query: RetrieveMemory, now: datetime | None = None) -> list[Document]:
        recalled, _ = await self._retrieve(workspace_id, query, now or datetime.now(UTC), None)
        return recalled

    async def recall_for_task(
        self, workspace_id: str, query: RecallForTask, now: datetime | None = None
    ) -> tuple[list[Document], list[Document]]:
        """What ``retrieve`` answers, and the live working entries of ``query.shared``, newest first: both from the
        one read of the scoped rows."""
        return await self._retrieve(workspace_id, query, now or datetime.now(UTC), query.shared, query.shared_limit)

    async def _retrieve(
        self, workspace_id: str, query: RetrieveMemory, now: datetime, shared: Scope | None, shared_limit: int = 0
    ) -> tuple[list[Document], list[Document]]:
        words = tokens(query.query)
        found: list[tuple[Document, float]] = []
        if Tier.LONG_TERM in query.tiers:
            index, current = await self._long_term(workspace_id)
            hits = _search(index.bm25, index.rows, words, CANDIDATES)
            found += hits if current else await self._current(hits)
        tiers: list[Tier] = [t for t in query.tiers if t is not Tier.LONG_TERM]
        if shared is None:
            scoped, listed = await self._scoped(workspace_id, query.scopes, tiers, now), []
        else:
            scopes = query.scopes if shared in query.scopes else [*query.scopes, shared]
            read: list[Tier] = [*tiers, Tier.WORKING] if Tier.WORKING not in tiers else tiers
            rows = await self._scoped(workspace_id, scopes, read, now)
            scoped = [r for r in rows if r["tier"] in {t.value for t in tiers} and _within(r, query.scopes)]
            listed = [r for r in rows if r["tier"] == Tier.WORKING.value and _within(r, [shared])]
            listed.sort(key=lambda r: _aware(r["updated_at"]), reverse=True)
            listed = listed[:shared_limit]
        found += _search(_index(scoped), scoped, words, CANDIDATES)
        semantic = await self._semantic(query.query, [row for row, _ in found])
        best = max((score for _, score in found), default=1.0) or 1.0
        ranked = [
            self._rank(row, score / best, similarity, now)
            for (row, score), similarity in zip(found, semantic, strict=True)
            if row.get("expires_at") is None or _aware(row["expires_at"]) > now
        ]
        ranked.sort(key=lambda r: (-r.score, r.row["entry_id"]))
        # Only what is returned is explained (its matched terms need its content tokenised again).
        return [self._result(r, words) for r in ranked[: query.limit]], listed

    def _rank(self, row: Document, relevance: float, similarity: float | None, now: datetime) -> Ranked:
        w = self._weights
        age_days = max(0.0, (now - _aware(row["updated_at"])).total_seconds() / 86_400)
        recency = math.exp(-math.log(2) * age_days / w.half_life_days)
        importance = float(row.get("importance", 0.5))
        score = w.relevance * relevance + w.recency * recency + w.importance * importance
        if similarity is not None:
            score += w.semantic * similarity
        return Ranked(row, round(score, 6), relevance, recency, importance, similarity)

    def _result(self, ranked: Ranked, words: list[str]) -> Document:
        row, importance, similarity = ranked.row, ranked.importance, ranked.similarity
        present = set(tokens(row["content"]))
        matched = sorted({t for t in words if t in present})
        why = {
            "matched_terms": matched,
            "relevance": round(ranked.relevance, 4),
            "recency": round(ranked.recency, 4),
            "importance": importance,
        }
        if similarity is not None:
            why["semantic"] = round(similarity, 4)
        return {
            "tier": row["tier"],
            "entry_id": row["entry_id"],
            "score": ranked.score,
            "why": why,
            "content": row["content"],
            "scope": {"kind": row["scope_kind"], "id": row["scope_id"]} if row.get("scope_kind") else None,
            "key": row.get("key"),
            "tags": row.get("tags", []),
            "source": row.get("source"),
            "importance": importance,
            "updated_at": _aware(row["updated_at"]).isoformat(),
        }

    async def _long_term(self, workspace_id: str) -> tuple[WorkspaceIndex, bool]:
        """The workspace's index and whether it is current. A large index that fell behind keeps serving while a
        fresh one is built in the background (its hits are then re-read, so no deleted or edited entry leaks)."""
        stamp_doc = await self._stamp_reads.read(workspace_id, lambda: self._stamps.find_one({"_id": workspace_id}))
        stamp = stamp_doc["stamp"] if stamp_doc else ""
        cached = self._indexes.get(workspace_id)
        if cached is not None and cached.stamp == stamp:
            self._indexes.move_to_end(workspace_id)
            return cached, True
        if cached is not None and len(cached.rows) >= BACKGROUND_REBUILD_ROWS:
            if workspace_id not in self._rebuilding:
                task = asyncio.create_task(self._build(workspace_id, stamp))
                self._rebuilding[workspace_id] = task
                task.add_done_callback(lambda _: self._rebuilding.pop(workspace_id, None))
            return cached, False
        return await self._build(workspace_id, stamp), True

    async def _build(self, workspace_id: str, stamp: str) -> WorkspaceIndex:
        async with self._locks.setdefault(workspace_id, asyncio.Lock()):
            cached = self._indexes.get(workspace_id)
            if cached is not None and cached.stamp == stamp:
                return cached
            cursor = self._rows.find(
                {"workspace_id": workspace_id, "tier": Tier.LONG_TERM.value, "deleted": False}, {"embedding": 0}
            )
            rows = await cursor.to_list(None)
            built = WorkspaceIndex(stamp, rows, await asyncio.to_thread(_index, rows))
            self._indexes[workspace_id] = built
            while len(self._indexes) > INDEX_CACHE_SIZE:
                self._indexes.popitem(last=False)
            return built

    async def _current(self, hits: list[tuple[Document, float]]) -> list[tuple[Document, float]]:
        """Hits of a stale index, re-read: entries deleted since drop out, edited ones show their new content."""
        if not hits:
            return hits
        fresh = {
            row["_id"]: row
            async for row in self._rows.find({"_id": {"$in": [r["_id"] for r, _ in hits]}, "deleted": False})
        }
        return [(fresh[row["_id"]], score) for row, score in hits if row["_id"] in fresh]

    async def _scoped(self, workspace_id: str, scopes: list[Scope], tiers: list[Tier], now: datetime) -> list[Document]:
        if not scopes or not tiers:
            return []
        cursor = self._rows.find(
            {
                "workspace_id": workspace_id,
                "tier": {"$in": [t.value for t in tiers]},
                "deleted": False,
                "$or": [{"scope_kind": s.kind.value, "scope_id": s.id} for s in scopes],
            },
        )
        rows = await cursor.to_list(None)
        return [r for r in rows if r.get("expires_at") is None or _aware(r["expires_at"]) > now]

    async def _semantic(self, query: str, rows: list[Document]) -> list[float | None]:
        if self._embeddings is None or not rows:
            return [None] * len(rows)
        try:
            vectors = await self._embeddings.embed([query, *(r["content"] for r in rows)])
        except Exception:
            log.warning("embeddings provider failed; ranking without semantic similarity", exc_info=True)
            return [None] * len(rows)
        q = np.asarray(vectors[0])
        out: list[float | None] = []
        for vector in vectors[1:]:
            v = np.asarray(vector)
            norm = float(np.linalg.norm(q) * np.linalg.norm(v)) or 1.0
            out.append(max(0.0, float(q @ v) / norm))
        return out


def _within(row: Document, scopes: list[Scope]) -> bool:
    return any(row.get("scope_kind") == s.kind.value and row.get("scope_id") == s.id for s in scopes)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "have",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "that",
        "the",
        "this",
        "to",
        "was",
        "were",
        "will",
        "with",
    ]
)
