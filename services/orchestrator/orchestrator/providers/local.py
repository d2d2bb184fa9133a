"""The ``local`` provider: a deterministic, offline stand-in for a model. It is not a model.

It exists so that the platform runs every template end to end with no network and no key, and so that tests are
reproducible. It reads the task's input from the prompt (the ``## Input`` block the runtime writes), derives a
well-formed answer for the agent's role from it (a score for a lead qualifier, priority and sentiment for triage, a
draft for a writer...), fills any output schema the step declares, and reports token counts estimated from the
text (``estimate_tokens``). The same input always gives the same answer; different inputs take different branches.
"""

import hashlib
import json
import re
from typing import Any

from orchestrator.providers.base import (
    CHARS_PER_TOKEN,
    ModelRequest,
    ModelResponse,
    Usage,
    estimate_prompt_tokens,
    estimate_tokens,
)

MAX_ITEMS = 20  # what the stand-in writes at most: an array's items, a string's characters
MAX_TEXT = 2000
INPUT_BLOCK = re.compile(r"## Input\n```json\n(.*?)\n```", re.DOTALL)

HOT_WORDS = ("enterprise", "budget approved", "ready to buy", "demo", "urgent", "decision maker", "contract", "pilot")
COLD_WORDS = ("student", "just browsing", "no budget", "not interested", "someday", "newsletter", "personal")
URGENT_WORDS = ("urgent", "outage", "down", "asap", "cannot", "can't", "critical", "immediately", "broken", "security")
LOW_WORDS = ("question", "how do i", "feature request", "suggestion", "when will", "curious")
ANGRY_WORDS = ("angry", "furious", "terrible", "worst", "unacceptable", "refund", "!!!", "ridiculous", "third time")


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _words(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False).casefold()


def _count(text: str, words: tuple[str, ...]) -> int:
    return sum(text.count(word) for word in words)


def _numbers(value: Any) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    return []


def _qualify(data: Any, text: str, seed: int) -> dict[str, Any]:
    hot, cold = _count(text, HOT_WORDS), _count(text, COLD_WORDS)
    size = max(_numbers(data), default=0.0)
    score = 35 + seed % 15 + 18 * hot - 20 * cold + (20 if size >= 100 else 10 if size >= 20 else 0)
    score = max(0, min(100, score))
    reasons = [f"{hot} buying signal(s)", f"{cold} cold signal(s)"] + ([f"size {size:g}"] if size else [])
    return {"score": score, "reasons": reasons, "summary": f"Lead scored {score}/100 ({', '.join(reasons)})."}


def _triage(text: str) -> dict[str, Any]:
    priority = "urgent" if _count(text, URGENT_WORDS) else "low" if _count(text, LOW_WORDS) else "normal"
    sentiment = "angry" if _count(text, ANGRY_WORDS) else "calm"
    return {"priority": priority, "sentiment": sentiment, "summary": f"Priority {priority}, customer {sentiment}."}


def _write(role: str, data: Any, text: str, seed: int) -> dict[str, Any]:
    detail = len(text)
    quality = round(0.5 + min(0.45, detail / 400) - (seed % 10) / 100, 2)
    topic = next((v for v in _strings(data) if v), "the request")
    draft = f"{role.capitalize()} draft about {topic[:200]}: an opening, three key points and a clear next step."
    return {"draft": draft, "quality": max(0.0, min(1.0, quality)), "summary": f"Drafted ({len(draft)} characters)."}


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


WORD = re.compile(r"[a-z]{4,}")


def _stems(text: str) -> set[str]:
    return {word[:5] for word in WORD.findall(text.casefold())}


def _produces(role: str) -> str:
    name = role.casefold()
    if "qualif" in name or "scor" in name:
        return "a score from 0 to 100 with the reasons"
    if "triage" in name or "classif" in name:
        return "the priority and the customer's sentiment"
    if any(w in name for w in ("writ", "copy", "content", "social", "proposal", "strateg")):
        return "a draft ready for review"
    return "a short report of what was done"


def _plan(data: dict[str, Any]) -> dict[str, Any]:
    """A team lead's plan, from the members' roles and the objective's words: the members whose role or
    capabilities the objective mentions, in the team's order; every member, in order, when it mentions fewer than
    two of them."""
    objective = str(data.get("objective", ""))
    members = [m for m in data.get("members", []) if isinstance(m, dict) and m.get("agent_id")]
    words = _stems(objective)

    def mentioned(member: dict[str, Any]) -> bool:
        about = " ".join([str(member.get("role", ""))] + [str(c) for c in member.get("capabilities", [])])
        return bool(_stems(about) & words)

    chosen = [m for m in members if mentioned(m)]
    if len(chosen) < 2:
        chosen = members
    chosen = chosen[: max(1, int(data.get("max_steps", len(chosen)) or 1))]
    steps = [
        {
            "member": m["agent_id"],
            "task": f"{objective.strip()[:300]} - as the team's {m.get('role', 'member')}",
            "produces": _produces(str(m.get("role", ""))),
        }
        for m in chosen
    ]
    return {"steps": steps, "summary": f"A plan of {len(steps)} step(s)."}


def _summarize(data: dict[str, Any]) -> dict[str, Any]:
    rows = [r for r in data.get("steps", []) if isinstance(r, dict)]
    done = [r for r in rows if r.get("status") == "succeeded"]
    outcome = str(data.get("outcome", "completed")).replace("_", " ")
    lines = [f"Objective: {str(data.get('objective', ''))[:200]}. Outcome: {outcome}."]
    lines.append(f"{len(done)} of {len(rows)} planned step(s) done.")
    for row in done:
        output = row.get("output")
        said = output.get("summary") if isinstance(output, dict) else None
        lines.append(f"{row.get('member')}: {str(said or row.get('task', ''))[:160]}")
    missing = [str(r.get("step")) for r in rows if r.get("status") != "succeeded"]
    if missing:
        lines.append(f"Not done: {', '.join(missing)}" + (f" ({data['error']})." if data.get("error") else "."))
    return {"summary": " ".join(lines)}


def answer_for(role: str, data: Any) -> dict[str, Any]:
    """What the local provider answers an agent of ``role`` given the task input ``data``: a team lead's plan or
    summary when the input asks for one, else the role's kind of answer."""
    if isinstance(data, dict) and data.get("kind") == "team_plan":
        return _plan(data)
    if isinstance(data, dict) and data.get("kind") == "team_summary":
        return _summarize(data)
    text = _words(data)
    seed = _digest(role.casefold() + "|" + text)
    name = role.casefold()
    if "qualif" in name or "scor" in name:
        return _qualify(data, text, seed)
    if "triage" in name or "classif" in name:
        return _triage(text)
    if any(w in name for w in ("writ", "copy", "content", "social", "editor", "proposal", "market", "strateg")):
        return _write(role, data, text, seed)
    first = next((s for s in _strings(data) if s), "")
    return {
        "summary": f"{role.capitalize() or 'Agent'} handled the task" + (f": {first[:200]}" if first else "."),
        "done": True,
    }


def _fill(schema: dict[str, Any], known: dict[str, Any], seed: int, name: str = "") -> Any:
    """A value that conforms to ``schema``, taken from ``known`` where it fits, else derived from ``seed``."""
    if name in known and _fits(schema, known[name]):
        return known[name]
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        options = schema["enum"]
        return options[seed % len(options)]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return _fill(schema[key][0], known, seed, name)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        props: dict[str, Any] = schema.get("properties", {})
        return {key: _fill(sub, known, seed + i, key) for i, (key, sub) in enumerate(props.items())}
    if kind == "array":
        count = min(max(int(schema.get("minItems", 1)), 1), MAX_ITEMS)
        count = min(count, int(schema.get("maxItems", count)))
        return [_fill(schema.get("items", {}), known, seed + i) for i in range(count)]
    if kind in {"integer", "number"}:
        low = float(schema.get("minimum", schema.get("exclusiveMinimum", 0)))
        high = float(schema.get("maximum", schema.get("exclusiveMaximum", low + 100)))
        value = low + (seed % 1000) / 1000 * (high - low)
        return int(value) if kind == "integer" else round(value, 2)
    if kind == "boolean":
        return seed % 2 == 0
    if kind == "null":
        return None
    text = str(known.get("summary", "ok"))
    low_len = min(int(schema.get("minLength", 0)), MAX_TEXT)
    high_len = int(schema.get("maxLength", MAX_TEXT))
    return (text + " " * low_len)[: max(low_len, min(high_len, len(text)))]


def _fits(schema: dict[str, Any], value: Any) -> bool:
    kinds = schema.get("type")
    if kinds is None:
        return "enum" not in schema or value in schema["enum"]
    types = {"string": str, "integer": int, "number": int | float, "boolean": bool, "object": dict, "array": list}
    allowed = kinds if isinstance(kinds, list) else [kinds]
    ok = any(
        k in types and isinstance(value, types[k]) and not (k != "boolean" and isinstance(value, bool)) for k in allowed
    )
    return ok and ("enum" not in schema or value in schema["enum"])


class LocalProvider:
    """Deterministic and offline; the default when no model is configured. A stand-in for a model, not a model."""

    name = "local"

    async def complete(self, request: ModelRequest) -> ModelResponse:
        prompt = "\n".join(m.content for m in request.messages if m.role == "user")
        found = INPUT_BLOCK.search(prompt)
        data: Any = prompt
        if found:
            try:
                data = json.loads(found.group(1))
            except ValueError:  # a truncated input block: read its text
                data = found.group(1)
        known = answer_for(request.role, data)
        output = known if request.output_schema is None else _fill(request.output_schema, known, _digest(prompt))
        text = json.dumps(output, ensure_ascii=False)
        while estimate_tokens(text) > request.max_output_tokens and isinstance(output, dict) and output.get("summary"):
            output = {**output, "summary": output["summary"][: len(output["summary"]) // 2]}
            text = json.dumps(output, ensure_ascii=False)
        if estimate_tokens(text) > request.max_output_tokens:  # as a model stops at its limit: the answer is cut
            text, output = text[: request.max_output_tokens * CHARS_PER_TOKEN], None
        usage = Usage(estimate_prompt_tokens(request.messages, request.tools), estimate_tokens(text))
        return ModelResponse(text=text, usage=usage, model=request.model, output=output)

    async def close(self) -> None:
        return None
