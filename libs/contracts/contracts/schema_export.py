"""Write the JSON Schema of every message to a folder: ``python -m contracts.schema_export docs/schemas``."""

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from contracts import REGISTRY
from contracts.envelope import Envelope, EventRecord
from contracts.public_events import PUBLIC_EVENTS, PublicEventMessage
from contracts.replies import CommandOutcome, QueryReply

ENVELOPES: tuple[type[BaseModel], ...] = (Envelope, EventRecord, CommandOutcome, QueryReply, PublicEventMessage)


def export(target: Path) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    for stale in target.glob("*.json"):
        stale.unlink()
    written: list[Path] = []
    for cls in ENVELOPES:
        written.append(_write(target / f"{cls.__name__}.json", cls.model_json_schema()))
    for msg in REGISTRY:
        if not msg.__module__.startswith("contracts."):
            continue  # registered by a service or a test, not part of the published contracts
        kind = next(base.__name__.lower() for base in msg.__mro__[1:] if base.__name__ in {"Command", "Event", "Query"})
        schema = msg.model_json_schema()
        schema["x-message-kind"] = kind
        schema["x-type-name"] = msg.type_name
        schema["x-schema-version"] = msg.schema_version
        written.append(_write(target / f"{kind}.{msg.type_name}.json", schema))
    for public in PUBLIC_EVENTS:  # what clients see of an execution (the SSE stream): the data of each type
        schema = public.model_json_schema()
        schema["x-public-type"] = public.type_name
        written.append(_write(target / f"public.{public.type_name}.json", schema))
    return written


def _write(path: Path, schema: dict[str, object]) -> Path:
    path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
    return path


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/schemas")
    for p in export(out):
        print(p)
