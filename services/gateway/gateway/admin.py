"""Administration from the command line: ``python -m gateway.admin create-workspace NAME``."""

import argparse
import asyncio
import json

from gateway.settings import GatewaySettings
from gateway.workspaces import WorkspaceStore
from servicekit.mongo import connect_mongo


async def create_workspace(settings: GatewaySettings, name: str) -> dict[str, str]:
    client = connect_mongo(settings.mongodb_url, settings.mongo_timeout_ms)
    try:
        store = WorkspaceStore(client[settings.database_name])
        await store.ensure_indexes()
        created = await store.create(name)
    finally:
        await client.close()
    return {"workspace_id": created.workspace_id, "name": created.name, "api_key": created.api_key}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway.admin")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create-workspace", help="create a workspace and print its first API key")
    create.add_argument("name")
    args = parser.parse_args(argv)
    if args.command == "create-workspace":
        print(json.dumps(asyncio.run(create_workspace(GatewaySettings(), args.name))))


if __name__ == "__main__":
    main()
