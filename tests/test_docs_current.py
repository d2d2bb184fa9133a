"""The generated references in docs/ match the code (regenerate with `make docs`)."""

from pathlib import Path

from contracts.schema_export import export
from gateway.openapi import write


def _same_tree(generated: Path, committed: Path) -> None:
    names = sorted(p.name for p in generated.iterdir())
    assert names == sorted(p.name for p in committed.iterdir()), "run `make docs`"
    for name in names:
        assert (generated / name).read_text() == (committed / name).read_text(), f"{name} is stale: run `make docs`"


def test_api_reference_is_generated_from_the_code(tmp_path: Path, repo_root: Path) -> None:
    write(tmp_path)
    _same_tree(tmp_path, repo_root / "docs" / "api")


def test_message_schemas_are_generated_from_the_contracts(tmp_path: Path, repo_root: Path) -> None:
    export(tmp_path)
    _same_tree(tmp_path, repo_root / "docs" / "schemas")
