"""Administration from the command line: ``python -m gateway.admin create-workspace NAME``.

With MONGODB_URL set it uses that server. Without it, it uses the MongoDB of the ``make up`` that runs in this
checkout for PLATFORM_ENV (the launcher writes its URLs to ``.data/stack-<env>.json``), and otherwise the default
URL. A server it cannot reach ends it with a message saying what it tried, not a stack trace.
"""

import argparse
import asyncio
import json
import re
import sys
from pathlib import Path

from pymongo.errors import PyMongoError

from gateway.settings import GatewaySettings
from gateway.workspaces import WorkspaceStore
from servicekit.devstack import redacted, running_stack, running_stacks
from servicekit.mongo import connect_mongo


class AdminError(Exception):
    """A failure the command explains to its user in one message."""


async def create_workspace(settings: GatewaySettings, name: str) -> dict[str, str]:
    client = connect_mongo(settings.mongodb_url, settings.mongo_timeout_ms)
    try:
        store = WorkspaceStore(client[settings.database_name])
        await store.ensure_indexes()
        created = await store.create(name)
    finally:
        await client.close()
    return {"workspace_id": created.workspace_id, "name": created.name, "api_key": created.api_key}


def admin_settings(checkout: Path) -> tuple[GatewaySettings, str]:
    """The settings to use, and where their MongoDB URL came from (said when it cannot be reached)."""
    settings = GatewaySettings()
    env = settings.platform_env
    if "mongodb_url" in settings.model_fields_set:
        return settings, "given by MONGODB_URL"
    stack = running_stack(checkout, env)
    if stack is not None:
        update: dict[str, str] = {"mongodb_url": stack.mongodb_url}
        if "nats_url" not in settings.model_fields_set:
            update["nats_url"] = stack.nats_url
        return settings.model_copy(update=update), f"that of the `make up` running for PLATFORM_ENV={env!r}"
    others = sorted({s.platform_env for s in running_stacks(checkout)})
    if others:
        hint = f"`make up` runs here for PLATFORM_ENV={', '.join(map(repr, others))}: set PLATFORM_ENV to use it"
    else:
        hint = f"no `make up` runs in this checkout for PLATFORM_ENV={env!r}: start one, or set MONGODB_URL"
    return settings, f"the default, as MONGODB_URL is unset; {hint}"


def run(name: str, checkout: Path) -> dict[str, str]:
    settings, origin = admin_settings(checkout)
    try:
        return asyncio.run(create_workspace(settings, name))
    except PyMongoError as exc:
        # The driver's message names the server and why (refused, timed out, authentication failed).
        reason = re.split(r", Timeout:| \(configured timeouts", str(exc))[0][:300]
        raise AdminError(f"cannot reach MongoDB at {redacted(settings.mongodb_url)} ({origin}).\n  {reason}") from exc


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway.admin")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create-workspace", help="create a workspace and print its first API key")
    create.add_argument("name")
    args = parser.parse_args(argv)
    if args.command == "create-workspace":
        try:
            print(json.dumps(run(args.name, Path.cwd())))
        except AdminError as exc:
            print(f"gateway.admin: {exc}", file=sys.stderr)
            raise SystemExit(1) from None


if __name__ == "__main__":
    main()
