"""Engine-free checks of deploy/ (compose, kustomize, Dockerfile): deploy/validate.py.

The positive tests assert that the real files have no problems; the negative
tests break a temporary copy and assert that the validator notices.
"""

from __future__ import annotations

import copy
import importlib
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

if TYPE_CHECKING:
    import validate
else:  # deploy/ is not a package: load deploy/validate.py as module "validate"
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy"))
    validate = importlib.import_module("validate")

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_DIR = REPO_ROOT / "deploy"


def _tmp_deploy(tmp_path: Path) -> Path:
    """A copy of deploy/ under tmp_path (which then stands for the repo root)."""
    target = tmp_path / "deploy"
    shutil.copytree(DEPLOY_DIR, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def _load_compose(path: Path) -> dict[str, object]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _services(data: dict[str, object]) -> dict[str, dict[str, object]]:
    services = data["services"]
    assert isinstance(services, dict)
    return services


def _rendered() -> list[validate.YamlMap]:
    docs, problems = validate.render_kustomize(DEPLOY_DIR / "k8s" / "base")
    assert problems == []
    return docs


def _first_container(docs: list[validate.YamlMap], kind: str) -> dict[str, object]:
    doc = next(doc for doc in docs if doc.get("kind") == kind)
    containers = validate.pod_spec(doc)["containers"]
    assert isinstance(containers, list)
    container = containers[0]
    assert isinstance(container, dict)
    return container


# ---------------------------------------------------------------- the real files


def test_compose_has_no_problems() -> None:
    assert validate.check_compose(DEPLOY_DIR / "compose.yaml") == []


def test_kustomize_renders_schema_valid_manifests() -> None:
    assert validate.check_kustomize(DEPLOY_DIR / "k8s" / "base") == []


def test_kustomize_renders_expected_objects() -> None:
    kinds = Counter(str(doc.get("kind")) for doc in _rendered())
    assert kinds["Deployment"] == len(validate.APP_SERVICES)
    assert kinds["HorizontalPodAutoscaler"] == len(validate.APP_SERVICES)
    assert kinds["StatefulSet"] == 2
    assert kinds["Namespace"] == 1


def test_dockerfile_copy_sources_exist() -> None:
    assert validate.check_dockerfile(DEPLOY_DIR / "Dockerfile", REPO_ROOT) == []


def test_service_modules_exist() -> None:
    assert validate.check_service_modules(REPO_ROOT) == []


def test_nats_config_copies_agree() -> None:
    assert validate.check_nats_config(REPO_ROOT) == []


def test_script_exits_zero() -> None:
    result = subprocess.run(
        [sys.executable, str(DEPLOY_DIR / "validate.py")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------- broken copies


def test_compose_missing_depends_on_target_is_reported(tmp_path: Path) -> None:
    compose = _tmp_deploy(tmp_path) / "compose.yaml"
    data = _load_compose(compose)
    _services(data)["orchestrator"]["depends_on"] = {
        "nats": {"condition": "service_healthy"},
        "mongo": {"condition": "service_healthy"},
        "natz": {"condition": "service_healthy"},
    }
    compose.write_text(yaml.safe_dump(data), encoding="utf-8")

    expected = "compose: service 'orchestrator': depends_on target 'natz' is not"
    assert validate.check_compose(compose) == [f"{expected} a defined service"]


def test_compose_missing_env_healthcheck_and_mount_are_reported(
    tmp_path: Path,
) -> None:
    deploy = _tmp_deploy(tmp_path)
    compose = deploy / "compose.yaml"
    data = _load_compose(compose)
    services = _services(data)
    environment = services["memory"]["environment"]
    assert isinstance(environment, dict)
    del environment["NATS_URL"]
    del services["nats"]["healthcheck"]
    services["neptune"]["ports"] = ["8001:8000"]
    compose.write_text(yaml.safe_dump(data), encoding="utf-8")
    (deploy / "nats" / "nats.conf").unlink()

    problems = "\n".join(validate.check_compose(compose))

    assert "'memory': environment variable NATS_URL is not set" in problems
    assert "'nats': no healthcheck" in problems
    assert "'neptune': publishes ports" in problems
    assert "nats.conf does not exist" in problems


def test_compose_unknown_dockerfile_is_reported(tmp_path: Path) -> None:
    deploy = _tmp_deploy(tmp_path)
    (deploy / "Dockerfile").unlink()

    problems = validate.check_compose(deploy / "compose.yaml")

    assert len(problems) == len(validate.APP_SERVICES)
    assert all("Dockerfile" in problem for problem in problems)


def test_k8s_missing_probe_bad_module_and_schema_error_are_reported() -> None:
    docs = copy.deepcopy(_rendered())
    container = _first_container(docs, "Deployment")
    del container["livenessProbe"]
    container["command"] = ["python", "-m", "no_such_service"]
    container["ports"] = [{"containerPort": "8000"}]

    problems = "\n".join(validate.check_k8s_documents(docs))

    assert "no livenessProbe" in problems
    assert "does not run a service module" in problems
    assert "schema (k8s" in problems
    assert "is not of type 'integer'" in problems


def test_k8s_strict_schema_rejects_unknown_fields() -> None:
    docs = copy.deepcopy(_rendered())
    _first_container(docs, "StatefulSet")["readinesProbe"] = {}

    problems = validate.check_k8s_documents(docs)

    assert len(problems) == 1
    assert "readinesProbe" in problems[0]


def test_k8s_dangling_hpa_and_missing_deployment_are_reported() -> None:
    docs = [
        doc
        for doc in copy.deepcopy(_rendered())
        if (doc.get("kind"), validate.dig(doc, "metadata", "name")) != ("Deployment", "memory")
    ]

    problems = "\n".join(validate.check_k8s_documents(docs))

    assert "no Deployment for app service 'memory'" in problems
    assert "scaleTargetRef Deployment/memory does not exist" in problems
    assert "Service/memory: selector" in problems


def test_kustomize_failure_is_reported(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - missing.yaml\n", encoding="utf-8")

    problems = validate.check_kustomize(tmp_path)

    assert len(problems) == 1
    assert problems[0].startswith("kustomize:")


def test_dockerfile_missing_source_ignored_source_and_root_user(
    tmp_path: Path,
) -> None:
    (tmp_path / "present.txt").write_text("x", encoding="utf-8")
    (tmp_path / "secret").mkdir()
    (tmp_path / ".dockerignore").write_text("secret\n", encoding="utf-8")
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "FROM python:3.11-slim AS build\n"
        "COPY present.txt \\\n"
        "     missing.txt /app/\n"
        "COPY secret/ /app/secret/\n"
        "FROM python:3.11-slim\n"
        "COPY --from=build /app /app\n"
        "USER root\n",
        encoding="utf-8",
    )

    problems = validate.check_dockerfile(dockerfile, tmp_path)

    assert problems == [
        f"Dockerfile: COPY source 'missing.txt' does not exist in {tmp_path}",
        "Dockerfile: COPY source 'secret/' is excluded by .dockerignore",
        "Dockerfile: the final stage does not run as a non-root USER",
    ]


@pytest.mark.parametrize(
    ("value", "ok"),
    [("${OPENAI_MODEL:-}", True), ("$$HOME", True), ("${OPENAI_MODEL}", False)],
)
def test_compose_interpolation_needs_defaults(value: str, ok: bool) -> None:
    assert (validate.check_compose_interpolation({"x": value}) == []) is ok


def test_main_exits_nonzero_on_broken_repo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    compose = _tmp_deploy(tmp_path) / "compose.yaml"
    data = _load_compose(compose)
    del _services(data)["mongo"]
    compose.write_text(yaml.safe_dump(data), encoding="utf-8")

    assert validate.main(["--repo-root", str(tmp_path)]) == 1
    stderr = capsys.readouterr().err
    assert "depends_on target 'mongo' is not a defined service" in stderr
