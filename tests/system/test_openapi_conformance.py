"""schemathesis over the OpenAPI the gateway serves, against the gateway on a real socket (uvicorn, as in
production) with the orchestrator, the workflow engine, memory, Neptune and a deterministic agent worker behind it.

Every check is on: no 5xx, responses match their schema, status codes and content types are documented, data the
schema allows is accepted and data it forbids is refused, auth is required. tests/system/schemathesis.toml holds
the few things a JSON Schema cannot say, each with its reason. The number of examples per operation is bounded
(ST_MAX_EXAMPLES, default 8) and the seed fixed (ST_SEED), so a run takes about the same time and finds the same
cases; set another seed to explore."""

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

from conftest import Infra, running_platform
from servicekit.testing import served
from tests.support.neptune_process import neptune_process

pytestmark = pytest.mark.system
HERE = Path(__file__).parent


@pytest.mark.timeout(600)
async def test_the_api_does_what_its_openapi_says(infra: Infra, env_name: str, tmp_path: Path) -> None:
    # Production's body limit; a query timeout that a loaded test machine does not reach (a 503 fails the run).
    async with running_platform(infra, env_name, memory=True, max_body_bytes=1_048_576, query_timeout_s=30) as platform:
        workspace = await platform.new_workspace()
        async with served(platform.gateway, platform.settings) as url, neptune_process(infra, env_name, url):
            command = [
                str(Path(sys.executable).parent / "schemathesis"),
                "--config-file",
                str(HERE / "schemathesis.toml"),
                "run",
                f"{url}/openapi.json",
                "--checks",
                "all",
                "--max-examples",
                os.environ.get("ST_MAX_EXAMPLES", "8"),
                "--seed",
                os.environ.get("ST_SEED", "20261202"),
                "--workers",
                "1",  # hypothesis's caches are not thread-safe (seen: a KeyError in its lambda-source cache)
                "--request-timeout",
                "30",
                "--report",
                "junit",
                "--report-dir",
                str(tmp_path),
            ]
            env = {
                **os.environ,
                "ST_API_KEY": workspace["api_key"],
                "SCHEMATHESIS_HOOKS": str(HERE / "schemathesis_hooks.py"),
                "NO_COLOR": "1",
                "HYPOTHESIS_STORAGE_DIRECTORY": str(tmp_path / "hypothesis"),
            }
            proc = await asyncio.create_subprocess_exec(
                *command, env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
            )
            output, _ = await proc.communicate()
    report = output.decode(errors="replace")
    assert proc.returncode == 0, report
    tested = re.search(r"Tested: (\d+)", report)
    assert tested is not None, report
    assert int(tested.group(1)) >= 40, "every operation but the import was tested"
