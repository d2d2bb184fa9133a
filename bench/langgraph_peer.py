"""The peer of bench/agent_runtime.py: LangGraph with its MongoDB checkpointer, as a process of its own.

    .venv-bench/bin/python bench/langgraph_peer.py --mongodb URL --db NAME

It runs in its own virtual environment (.venv-bench, from bench/requirements.txt with constraints.txt), so that
LangGraph's dependencies never enter the services' one. It compiles a graph of three instant nodes, a -> b -> c,
with langgraph-checkpoint-mongodb's MongoDBSaver, says ``{"ready": true}`` on stdout, then answers each request
line on stdin, ``{"size": N, "inflight": K, "durability": "async" | "sync"}``, by running N executions (each a new
thread id), K at a time, and printing ``{"elapsed": seconds, "errors": n}``.

The saver's async methods run its sync pymongo calls in the event loop's default executor (run_in_executor), so
that executor is sized to the in-flight level: with the default (cores + 4 threads) the checkpointer, not the
concurrency asked for, would bound it.
"""

import argparse
import asyncio
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import uuid4

from langgraph.checkpoint.mongodb import MongoDBSaver
from langgraph.graph import END, START, StateGraph
from pymongo import MongoClient
from typing_extensions import TypedDict

DONE = {"a": 1, "b": 1, "c": 1}


class State(TypedDict, total=False):
    a: int
    b: int
    c: int


async def a(state: State) -> State:
    return {"a": 1}


async def b(state: State) -> State:
    return {"b": 1}


async def c(state: State) -> State:
    return {"c": 1}


def compile_graph(saver: MongoDBSaver) -> Any:
    builder = StateGraph(State)
    for name, node in (("a", a), ("b", b), ("c", c)):
        builder.add_node(name, node)
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", "c")
    builder.add_edge("c", END)
    return builder.compile(checkpointer=saver)


async def run(graph: Any, size: int, inflight: int, durability: str) -> dict[str, Any]:
    gate = asyncio.Semaphore(inflight)
    errors = 0

    async def one() -> None:
        nonlocal errors
        async with gate:
            config = {"configurable": {"thread_id": uuid4().hex}}
            try:
                state = await graph.ainvoke({}, config, durability=durability)
            except Exception:  # noqa: BLE001 - counted and reported as an error of the peer
                errors += 1
                return
            if state != DONE:
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(size)))
    return {"elapsed": time.perf_counter() - started, "errors": errors}


async def serve(mongodb_url: str, db_name: str) -> None:
    client: MongoClient[Any] = MongoClient(mongodb_url)
    graph = compile_graph(MongoDBSaver(client, db_name=db_name))
    print(json.dumps({"ready": True}), flush=True)
    loop = asyncio.get_running_loop()
    stdin = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stdin")
    executors: dict[int, ThreadPoolExecutor] = {}
    while line := await loop.run_in_executor(stdin, sys.stdin.readline):
        request = json.loads(line)
        inflight = int(request["inflight"])
        if inflight not in executors:
            executors[inflight] = ThreadPoolExecutor(max_workers=inflight, thread_name_prefix="langgraph")
        loop.set_default_executor(executors[inflight])  # where the saver's async methods run its sync calls
        answer = await run(graph, int(request["size"]), inflight, str(request["durability"]))
        print(json.dumps(answer), flush=True)
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mongodb", required=True)
    parser.add_argument("--db", required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.mongodb, args.db))


if __name__ == "__main__":
    main()
