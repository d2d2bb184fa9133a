#!/usr/bin/env python3
"""Validate the deployment files without a container engine or a cluster.

1. ``deploy/compose.yaml`` (PyYAML): every service has an image or a build whose
   context and Dockerfile exist, every ``depends_on`` target exists, every
   service has a healthcheck, bind-mounted files exist and named volumes are
   declared, the five app services set NATS_URL, MONGODB_URL, PLATFORM_ENV,
   HTTP_PORT and OTEL_SERVICE_NAME, run ``python -m <their module>`` and wait
   for healthy nats and mongo; only the gateway publishes a port; no
   ``${VAR}`` without a default.
2. ``deploy/k8s/base`` rendered by ``kubectl kustomize`` (subprocess, timeout):
   every document validates against the Kubernetes JSON schema of
   ``K8S_VERSION`` (``kubernetes-validate``, strict: unknown fields are
   errors); every Deployment container has readiness and liveness probes and
   runs ``python -m <service module>``; selectors match pod labels; every
   Service selects a workload; every HPA targets an existing workload; every
   app service has a Deployment and an HPA.
3. ``deploy/Dockerfile``: COPY/ADD sources exist in the build context (the repo
   root) and are not excluded by ``.dockerignore``; ``pip install`` paths are
   Python projects; the final stage runs as a non-root USER; each service
   module has a ``__main__.py`` under ``services/``; the two copies of
   ``nats.conf`` are identical and set ``sync_interval: always``.

Usage: ``python deploy/validate.py [--repo-root PATH]``. Exit code 0 when
nothing is wrong, 1 otherwise, one line per problem on stderr.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Final

import kubernetes_validate
import yaml

REPO_ROOT: Final = Path(__file__).resolve().parent.parent

# Compose/Kubernetes service name -> Python module run with ``python -m``.
APP_SERVICES: Final[Mapping[str, str]] = {
    "gateway": "gateway",
    "orchestrator": "orchestrator",
    "agent-runtime": "orchestrator.runtime",
    "workflow-engine": "workflow_engine",
    "memory": "memory",
    "neptune": "neptune",
}
SERVICE_MODULES: Final = frozenset(APP_SERVICES.values())
REQUIRED_APP_ENV: Final = ("NATS_URL", "MONGODB_URL", "PLATFORM_ENV", "HTTP_PORT")
INFRA_SERVICES: Final = ("nats", "mongo")
PUBLISHING_SERVICES: Final = frozenset({"gateway"})
DEPENDS_ON_CONDITIONS: Final = frozenset({"service_started", "service_healthy", "service_completed_successfully"})

K8S_VERSION: Final = "1.33.0"
KUSTOMIZE_TIMEOUT_S: Final = 120.0
WORKLOAD_KINDS: Final = frozenset({"Deployment", "StatefulSet", "DaemonSet"})
PYTHON_PROJECT_FILES: Final = ("pyproject.toml", "setup.py", "setup.cfg")

_INTERPOLATION: Final = re.compile(r"(?<!\$)\$(?:\{([^}]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
_BARE_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SYNC_ALWAYS: Final = re.compile(r"jetstream\s*\{[^}]*\bsync_interval\s*:\s*always\b", re.DOTALL)

YamlMap = dict[str, object]


# ---------------------------------------------------------------- helpers


def as_map(value: object) -> YamlMap | None:
    """Return ``value`` as a str-keyed mapping, or None if it is not a mapping."""
    if isinstance(value, dict):
        return {str(key): item for key, item in value.items()}
    return None


def as_list(value: object) -> list[object]:
    """Return ``value`` as a list (empty if it is not one)."""
    return list(value) if isinstance(value, list) else []


def as_maps(value: object) -> list[YamlMap]:
    """Return the mappings in the list ``value``."""
    return [item for item in map(as_map, as_list(value)) if item is not None]


def dig(data: object, *keys: str) -> object:
    """Follow ``keys`` through nested mappings; None where one is missing."""
    current: object = data
    for key in keys:
        mapping = as_map(current)
        if mapping is None:
            return None
        current = mapping.get(key)
    return current


def command_words(value: object) -> list[str]:
    """A compose/k8s command (string or list) as a list of words."""
    if isinstance(value, str):
        return shlex.split(value)
    return [str(word) for word in as_list(value)]


def python_module(words: Sequence[str]) -> str | None:
    """The module of ``python -m MODULE ...``, or None."""
    if len(words) >= 3 and Path(words[0]).name.startswith("python") and words[1] == "-m":
        return words[2]
    return None


def iter_strings(value: object) -> Iterator[str]:
    """Every string scalar (keys included) in a parsed YAML tree."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from iter_strings(key)
            yield from iter_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from iter_strings(item)


def load_yaml_mapping(path: Path) -> tuple[YamlMap | None, list[str]]:
    """Parse a YAML file whose top level must be a mapping."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        return None, [f"{path}: cannot read: {exc}"]
    except yaml.YAMLError as exc:
        return None, [f"{path}: invalid YAML: {exc}"]
    mapping = as_map(data)
    if mapping is None:
        return None, [f"{path}: top level is not a mapping"]
    return mapping, []


# ---------------------------------------------------------------- compose


def compose_environment(service: YamlMap) -> dict[str, str | None]:
    """A service's ``environment`` (mapping or list form) as a dict."""
    raw = service.get("environment")
    mapping = as_map(raw)
    if mapping is not None:
        return {key: None if value is None else str(value) for key, value in mapping.items()}
    env: dict[str, str | None] = {}
    for item in as_list(raw):
        key, sep, value = str(item).partition("=")
        env[key] = value if sep else None
    return env


def compose_depends_on(service: YamlMap) -> dict[str, str]:
    """A service's ``depends_on`` (list or mapping form) as target -> condition."""
    raw = service.get("depends_on")
    mapping = as_map(raw)
    if mapping is None:
        return {str(target): "service_started" for target in as_list(raw)}
    return {target: str(dig(spec, "condition") or "service_started") for target, spec in mapping.items()}


def check_compose_build(where: str, build: object, base_dir: Path) -> list[str]:
    """The build context and Dockerfile referenced by ``build`` exist."""
    spec = as_map(build)
    if spec is None:
        spec = {"context": build}
    context = base_dir / str(spec.get("context") or ".")
    if not context.is_dir():
        return [f"{where}: build context {context} is not a directory"]
    dockerfile = context / str(spec.get("dockerfile") or "Dockerfile")
    if not dockerfile.is_file():
        return [f"{where}: Dockerfile {dockerfile} does not exist"]
    return []


def check_compose_healthcheck(where: str, service: YamlMap) -> list[str]:
    """A healthcheck with a test is present and not disabled."""
    healthcheck = as_map(service.get("healthcheck"))
    if healthcheck is None:
        return [f"{where}: no healthcheck"]
    test = healthcheck.get("test")
    words = command_words(test) if isinstance(test, list) else [str(test or "")]
    if healthcheck.get("disable") is True or not words or words[0] in ("", "NONE"):
        return [f"{where}: healthcheck is disabled or has no test"]
    if isinstance(test, list) and words[0] not in ("CMD", "CMD-SHELL"):
        return [f"{where}: healthcheck test list must start with CMD or CMD-SHELL"]
    return []


def check_compose_depends_on(where: str, service: YamlMap, services: Mapping[str, object]) -> list[str]:
    """Every ``depends_on`` target is a service and every condition is known."""
    problems = []
    for target, condition in compose_depends_on(service).items():
        if target not in services:
            problems.append(f"{where}: depends_on target {target!r} is not a defined service")
        if condition not in DEPENDS_ON_CONDITIONS:
            problems.append(f"{where}: depends_on {target!r} has unknown condition {condition!r}")
    return problems


def check_compose_volume(where: str, volume: object, base_dir: Path, declared: set[str]) -> list[str]:
    """A bind-mount source exists; a named volume is declared at top level."""
    spec = as_map(volume)
    if spec is not None:
        kind, source = str(spec.get("type", "volume")), str(spec.get("source") or "")
    else:
        parts = str(volume).split(":")
        source = parts[0] if len(parts) > 1 else ""
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
    if kind == "bind":
        path = Path(source).expanduser()
        if not (base_dir / path).exists():
            return [f"{where}: mounted file {base_dir / path} does not exist"]
    elif kind == "volume" and source and source not in declared:
        return [f"{where}: named volume {source!r} is not declared under top-level volumes"]
    return []


def check_compose_service(
    name: str,
    service: YamlMap,
    services: Mapping[str, object],
    base_dir: Path,
    declared: set[str],
) -> list[str]:
    """Checks that apply to every compose service."""
    where = f"compose: service {name!r}"
    problems: list[str] = []
    if "image" not in service and "build" not in service:
        problems.append(f"{where}: has neither image nor build")
    if "build" in service:
        problems += check_compose_build(where, service["build"], base_dir)
    problems += check_compose_healthcheck(where, service)
    problems += check_compose_depends_on(where, service, services)
    for volume in as_list(service.get("volumes")):
        problems += check_compose_volume(where, volume, base_dir, declared)
    if service.get("ports") and name not in PUBLISHING_SERVICES:
        problems.append(f"{where}: publishes ports; only {sorted(PUBLISHING_SERVICES)} may")
    return problems


def check_compose_app_service(name: str, service: YamlMap) -> list[str]:
    """Checks for the five platform services."""
    where = f"compose: service {name!r}"
    problems: list[str] = []
    env = compose_environment(service)
    for var in (*REQUIRED_APP_ENV, "OTEL_SERVICE_NAME"):
        if not env.get(var):
            problems.append(f"{where}: environment variable {var} is not set")
    if env.get("OTEL_SERVICE_NAME") not in (None, "", name):
        problems.append(f"{where}: OTEL_SERVICE_NAME is {env['OTEL_SERVICE_NAME']!r}, expected {name!r}")
    module = python_module(command_words(service.get("command")))
    if module != APP_SERVICES[name]:
        problems.append(f"{where}: command must be 'python -m {APP_SERVICES[name]}' (it runs module {module!r})")
    depends_on = compose_depends_on(service)
    for infra in INFRA_SERVICES:
        if depends_on.get(infra) != "service_healthy":
            problems.append(f"{where}: must depend on {infra!r} with condition service_healthy")
    return problems


def check_compose_interpolation(data: object) -> list[str]:
    """No ``$VAR``/``${VAR}`` without a default (compose warns and substitutes '')."""
    problems = []
    for text in iter_strings(data):
        for match in _INTERPOLATION.finditer(text):
            braced, bare = match.group(1), match.group(2)
            if bare is not None or (braced is not None and _BARE_NAME.fullmatch(braced)):
                problems.append(
                    f"compose: {match.group(0)!r} has no default; write ${{NAME:-default}} (or $$ for a literal $)"
                )
    return problems


def check_compose(compose_path: Path) -> list[str]:
    """All compose checks for one file; paths resolve relative to its folder."""
    data, problems = load_yaml_mapping(compose_path)
    if data is None:
        return problems
    services = as_map(data.get("services"))
    if not services:
        return [f"compose: {compose_path} defines no services"]
    declared = set(as_map(data.get("volumes")) or {})
    base_dir = compose_path.parent
    for name, raw in services.items():
        service = as_map(raw)
        if service is None:
            problems.append(f"compose: service {name!r} is not a mapping")
            continue
        problems += check_compose_service(name, service, services, base_dir, declared)
        if name in APP_SERVICES:
            problems += check_compose_app_service(name, service)
    for name in (*INFRA_SERVICES, *APP_SERVICES):
        if name not in services:
            problems.append(f"compose: service {name!r} is missing")
    return problems + check_compose_interpolation(data)


# ---------------------------------------------------------------- kubernetes


def find_kubectl() -> str | None:
    """$KUBECTL, else kubectl on PATH, else one next to this Python (a venv's bin)."""
    explicit = os.environ.get("KUBECTL")
    if explicit:
        return explicit
    found = shutil.which("kubectl")
    if found:
        return found
    beside = Path(sys.executable).parent / "kubectl"
    return str(beside) if beside.is_file() else None


def render_kustomize(base_dir: Path, kubectl: str | None = None) -> tuple[list[YamlMap], list[str]]:
    """Run ``kubectl kustomize base_dir`` and parse the documents it prints."""
    binary = kubectl or find_kubectl()
    if binary is None:
        return [], ["kustomize: kubectl not found (set $KUBECTL or put kubectl on PATH)"]
    try:
        result = subprocess.run(
            [binary, "kustomize", str(base_dir)],
            capture_output=True,
            text=True,
            timeout=KUSTOMIZE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [], [f"kustomize: running {binary} failed: {exc}"]
    if result.returncode != 0:
        stderr = result.stderr.strip()
        return [], [f"kustomize: kubectl kustomize {base_dir} failed: {stderr}"]
    try:
        raw_docs = list(yaml.safe_load_all(result.stdout))
    except yaml.YAMLError as exc:
        return [], [f"kustomize: output is not valid YAML: {exc}"]
    docs = [doc for doc in map(as_map, raw_docs) if doc is not None]
    if not docs:
        return [], [f"kustomize: {base_dir} rendered no documents"]
    return docs, []


def describe(doc: YamlMap) -> str:
    """``Kind/name`` of a Kubernetes object."""
    return f"{doc.get('kind')}/{dig(doc, 'metadata', 'name')}"


def check_schema(doc: YamlMap) -> list[str]:
    """Validate one object against the strict Kubernetes JSON schema."""
    where = f"k8s: {describe(doc)}"
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(part) for part in exc.absolute_path) or "<root>"
        return [f"{where}: schema (k8s {K8S_VERSION}) violation at {path}: {exc.message}"]
    except (
        kubernetes_validate.SchemaNotFoundError,
        kubernetes_validate.InvalidSchemaError,
    ) as exc:
        return [f"{where}: {exc.message}"]
    except (KeyError, TypeError) as exc:
        return [f"{where}: not a Kubernetes object ({exc!r})"]
    return []


def pod_spec(doc: YamlMap) -> YamlMap:
    """The pod spec of a workload (empty if absent)."""
    return as_map(dig(doc, "spec", "template", "spec")) or {}


def check_deployment(doc: YamlMap) -> list[str]:
    """Probes and the service module of every container of a Deployment."""
    name = str(dig(doc, "metadata", "name"))
    where = f"k8s: {describe(doc)}"
    problems: list[str] = []
    containers = as_maps(pod_spec(doc).get("containers"))
    if not containers:
        return [f"{where}: has no containers"]
    for container in containers:
        cwhere = f"{where} container {container.get('name')!r}"
        for probe in ("readinessProbe", "livenessProbe"):
            if not as_map(container.get(probe)):
                problems.append(f"{cwhere}: no {probe}")
        words = command_words(container.get("command")) + command_words(container.get("args"))
        module = python_module(words)
        if module not in SERVICE_MODULES:
            problems.append(f"{cwhere}: command {words} does not run a service module {sorted(SERVICE_MODULES)}")
        elif name in APP_SERVICES and module != APP_SERVICES[name]:
            problems.append(f"{cwhere}: runs module {module!r}, expected {APP_SERVICES[name]!r}")
    return problems


def labels_match(selector: Mapping[str, object], labels: Mapping[str, object]) -> bool:
    """Whether every selector key/value pair is among ``labels``."""
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def check_workload_selector(doc: YamlMap) -> list[str]:
    """``spec.selector.matchLabels`` matches the pod template's labels."""
    selector = as_map(dig(doc, "spec", "selector", "matchLabels")) or {}
    labels = as_map(dig(doc, "spec", "template", "metadata", "labels")) or {}
    if not labels_match(selector, labels):
        return [f"k8s: {describe(doc)}: selector {selector} != pod labels {labels}"]
    return []


def check_references(docs: Sequence[YamlMap]) -> list[str]:
    """Services select a workload; HPAs target a workload; app services are complete."""
    workloads = [doc for doc in docs if doc.get("kind") in WORKLOAD_KINDS]
    pod_labels = [as_map(dig(doc, "spec", "template", "metadata", "labels")) or {} for doc in workloads]
    names = {(str(doc.get("kind")), str(dig(doc, "metadata", "name"))) for doc in workloads}
    problems: list[str] = []
    hpa_targets: set[str] = set()
    for doc in docs:
        if doc.get("kind") == "Service":
            selector = as_map(dig(doc, "spec", "selector")) or {}
            if not any(labels_match(selector, labels) for labels in pod_labels):
                problems.append(f"k8s: {describe(doc)}: selector {selector} matches no workload")
        elif doc.get("kind") == "HorizontalPodAutoscaler":
            target = (
                str(dig(doc, "spec", "scaleTargetRef", "kind")),
                str(dig(doc, "spec", "scaleTargetRef", "name")),
            )
            hpa_targets.add(target[1])
            if target not in names:
                problems.append(f"k8s: {describe(doc)}: scaleTargetRef {target[0]}/{target[1]} does not exist")
    for service in APP_SERVICES:
        if ("Deployment", service) not in names:
            problems.append(f"k8s: no Deployment for app service {service!r}")
        if service not in hpa_targets:
            problems.append(f"k8s: no HorizontalPodAutoscaler for app service {service!r}")
    return problems


def check_k8s_documents(docs: Sequence[YamlMap]) -> list[str]:
    """All checks on already-rendered Kubernetes objects."""
    problems: list[str] = []
    for doc in docs:
        problems += check_schema(doc)
        if doc.get("kind") in WORKLOAD_KINDS:
            problems += check_workload_selector(doc)
        if doc.get("kind") == "Deployment":
            problems += check_deployment(doc)
    return problems + check_references(docs)


def check_kustomize(base_dir: Path, kubectl: str | None = None) -> list[str]:
    """Render the kustomization and check what it renders."""
    docs, problems = render_kustomize(base_dir, kubectl)
    return problems or check_k8s_documents(docs)


# ---------------------------------------------------------------- Dockerfile


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    if pending.strip():
        keyword, _, args = pending.strip().partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    return instructions


def copy_sources(args: str) -> list[str]:
    """Sources of a COPY/ADD taken from the build context ([] for --from=stage)."""
    words = [str(word) for word in json.loads(args)] if args.startswith("[") else shlex.split(args)
    flags = [word for word in words if word.startswith("--")]
    if any(flag.startswith("--from") for flag in flags):
        return []
    paths = [word for word in words if not word.startswith("--")]
    return [path for path in paths[:-1] if not path.startswith("<<")]


def dockerignore_patterns(context: Path) -> list[str]:
    """The patterns of ``context/.dockerignore`` (none if it is absent)."""
    path = context / ".dockerignore"
    if not path.is_file():
        return []
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def is_dockerignored(relative: str, patterns: Sequence[str]) -> bool:
    """Approximates Docker: the last pattern matching the path or a parent wins."""
    parts = Path(relative).parts
    candidates = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    ignored = False
    for raw in patterns:
        negated = raw.startswith("!")
        pattern = raw.lstrip("!").strip("/").removeprefix("./")
        variants = {pattern, pattern.removeprefix("**/")}
        if any(fnmatch.fnmatchcase(path, variant) for path in candidates for variant in variants):
            ignored = not negated
    return ignored


def check_copy_source(source: str, context: Path, patterns: Sequence[str]) -> list[str]:
    """One COPY source exists inside the context and is not .dockerignored."""
    relative = source.removeprefix("./").rstrip("/") or "."
    if Path(relative).is_absolute() or ".." in Path(relative).parts:
        return [f"Dockerfile: COPY source {source!r} is outside the build context"]
    if not (any(context.glob(relative)) if any(c in relative for c in "*?[") else (context / relative).exists()):
        return [f"Dockerfile: COPY source {source!r} does not exist in {context}"]
    if relative != "." and is_dockerignored(relative, patterns):
        return [f"Dockerfile: COPY source {source!r} is excluded by .dockerignore"]
    return []


def check_pip_install(args: str, context: Path) -> list[str]:
    """``./path`` projects and ``-c``/``-r`` files of a ``pip install`` exist.

    Assumes (as deploy/Dockerfile does) that COPY keeps context-relative paths
    under the WORKDIR where pip runs.
    """
    if "pip install" not in args:
        return []
    problems: list[str] = []
    words = shlex.split(args)
    for previous, word in zip(["", *words], words, strict=False):
        if previous in ("-c", "-r", "--constraint", "--requirement") and not (context / word).is_file():
            problems.append(f"Dockerfile: pip file {word!r} does not exist in {context}")
        elif word.startswith("./") and not any((context / word / name).is_file() for name in PYTHON_PROJECT_FILES):
            problems.append(f"Dockerfile: pip install {word!r} is not a Python project in {context}")
    return problems


def check_final_user(instructions: Sequence[tuple[str, str]]) -> list[str]:
    """The last stage switches to a non-root USER."""
    last_from = max(
        (i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"),
        default=-1,
    )
    users = [args for keyword, args in instructions[last_from + 1 :] if keyword == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        return ["Dockerfile: the final stage does not run as a non-root USER"]
    return []


def check_dockerfile(dockerfile: Path, context: Path) -> list[str]:
    """COPY sources, pip install paths and the runtime user of a Dockerfile."""
    try:
        instructions = dockerfile_instructions(dockerfile.read_text(encoding="utf-8"))
    except OSError as exc:
        return [f"Dockerfile: cannot read {dockerfile}: {exc}"]
    patterns = dockerignore_patterns(context)
    problems: list[str] = []
    for keyword, args in instructions:
        if keyword in ("COPY", "ADD"):
            for source in copy_sources(args):
                problems += check_copy_source(source, context, patterns)
        elif keyword == "RUN":
            problems += check_pip_install(args, context)
    return problems + check_final_user(instructions)


def check_service_modules(repo_root: Path) -> list[str]:
    """Every service module has a ``__main__.py`` somewhere under services/."""
    services_dir = repo_root / "services"
    return [
        f"sources: no {module}/__main__.py under {services_dir} (needed for 'python -m {module}')"
        for module in sorted(SERVICE_MODULES)
        if not any(services_dir.glob(f"**/{module.replace('.', '/')}/__main__.py"))
    ]


def check_nats_config(repo_root: Path) -> list[str]:
    """The compose and k8s copies of nats.conf agree and fsync every write."""
    compose_conf = repo_root / "deploy" / "nats" / "nats.conf"
    k8s_conf = repo_root / "deploy" / "k8s" / "base" / "nats.conf"
    try:
        texts = [
            compose_conf.read_text(encoding="utf-8"),
            k8s_conf.read_text(encoding="utf-8"),
        ]
    except OSError as exc:
        return [f"nats: cannot read config: {exc}"]
    problems = [] if texts[0] == texts[1] else [f"nats: {compose_conf} and {k8s_conf} differ"]
    if not _SYNC_ALWAYS.search(texts[0]):
        problems.append(f"nats: {compose_conf} does not set jetstream {{ sync_interval: always }}")
    return problems


# ---------------------------------------------------------------- entry point


def check_all(repo_root: Path = REPO_ROOT, kubectl: str | None = None) -> list[str]:
    """Every check, for the deploy/ folder of ``repo_root``."""
    deploy = repo_root / "deploy"
    return [
        *check_compose(deploy / "compose.yaml"),
        *check_kustomize(deploy / "k8s" / "base", kubectl),
        *check_dockerfile(deploy / "Dockerfile", repo_root),
        *check_service_modules(repo_root),
        *check_nats_config(repo_root),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--repo-root",
        type=Path,
        default=REPO_ROOT,
        help="repository root (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    problems = check_all(args.repo_root.resolve())
    for problem in problems:
        print(f"ERROR: {problem}", file=sys.stderr)
    if problems:
        print(f"deploy validation failed: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print("deploy validation OK: compose, kustomize (k8s schema), Dockerfile")
    return 0


if __name__ == "__main__":
    sys.exit(main())
