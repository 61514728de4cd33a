"""compose.yaml, .env.example and the Dockerfiles agree with each other and with Settings.

The compose file is validated by Compose itself (`docker compose config`, or
Debian's `docker-compose`), and the resolved result is checked for the things a
deployment relies on: a durable broker, a bucket made at start, a GPU reservation
with one generation at a time, a CPU worker only under its profile.
"""

from __future__ import annotations

import ast
import fnmatch
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
SETTINGS = ROOT / "app" / "settings.py"
WORKER_SETTINGS = ROOT / "worker" / "celery_app.py"

REEL_VARIABLE = re.compile(r"\bREEL_[A-Z0-9_]+\b")
# `REEL_X=value` or `# REEL_X=value` (a documented setting left at its default or unset).
ENV_LINE = re.compile(r"^\s*(#\s*)?(REEL_[A-Z0-9_]+)=(.*)$")


def class_fields(path: Path, is_wanted) -> set[str]:
    """Annotated field names of the classes in `path` that `is_wanted(class_node)` picks."""
    fields = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ClassDef) and is_wanted(node):
            fields |= {
                statement.target.id
                for statement in node.body
                if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)
                and statement.target.id != "model_config"
            }
    return fields


def settings_fields() -> set[str]:
    """Every REEL_ setting: the fields of app/settings.py's Settings, read from its source,
    plus those of the worker's subclass of it (knobs only a worker reads, same prefix)."""
    fields = class_fields(SETTINGS, lambda node: node.name == "Settings")
    assert fields, "app/settings.py has no class Settings with fields"
    if WORKER_SETTINGS.exists():
        fields |= class_fields(
            WORKER_SETTINGS, lambda node: any(getattr(base, "id", None) == "Settings" for base in node.bases)
        )
    return fields


def env_example_entries() -> dict[str, tuple[str, bool]]:
    """{REEL_NAME: (value, commented)} from .env.example."""
    entries = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = ENV_LINE.match(line)
        if match:
            entries[match.group(2)] = (match.group(3), bool(match.group(1)))
    return entries


def compose_command() -> list[str] | None:
    """`docker compose` (the v2 plugin) or `docker-compose` (v1, Debian's package), whichever validates here."""
    candidates = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose"])
    for command in candidates:
        probe = subprocess.run([*command, "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return command
    return None


class Compose:
    """`compose -f FILE [ARGS] config` in a project directory holding .env.example as its .env."""

    def __init__(self, command: list[str], project: Path):
        self.command = command
        self.project = project

    def config(self, *args: str, file: Path | None = None) -> subprocess.CompletedProcess:
        file = file or self.project / "compose.yaml"
        return subprocess.run(
            [*self.command, "--project-directory", str(self.project), "-f", str(file), *args, "config"],
            capture_output=True, text=True, cwd=self.project,
        )


@pytest.fixture(scope="module")
def compose(tmp_path_factory) -> Compose:
    command = compose_command()
    if command is None:
        pytest.skip(
            "neither `docker compose` nor `docker-compose` is installed: "
            "install Debian's docker-compose (apt-get install docker-compose) to validate compose.yaml"
        )
    project = tmp_path_factory.mktemp("compose")
    shutil.copy(COMPOSE, project / "compose.yaml")
    shutil.copy(ENV_EXAMPLE, project / ".env")
    return Compose(command, project)


@pytest.fixture(scope="module")
def resolved(compose) -> dict:
    result = compose.config()
    assert result.returncode == 0, f"compose.yaml does not validate:\n{result.stderr}"
    return yaml.safe_load(result.stdout)


def test_compose_validates_and_rejects_a_broken_file(compose, resolved):
    assert {"valkey", "minio", "minio-init", "api", "proxy", "worker", "worker-ops", "flower"} <= set(resolved["services"])
    # The validator is not a rubber stamp: a service with an unknown key fails, naming it.
    broken = compose.project / "broken.yaml"
    broken.write_text(COMPOSE.read_text().replace("  api:\n", "  api:\n    replicaz: 2\n", 1))
    result = compose.config(file=broken)
    assert result.returncode != 0
    assert "replicaz" in result.stderr


def test_broker_is_durable_and_checked(resolved):
    valkey = resolved["services"]["valkey"]
    assert "--appendonly" in valkey["command"]
    assert valkey["command"][valkey["command"].index("--appendonly") + 1] == "yes"
    assert "healthcheck" in valkey and valkey["healthcheck"]["test"]
    # Compose v2 prints volumes in the long form, v1 in the short one.
    targets = [volume["target"] if isinstance(volume, dict) else volume.split(":")[1] for volume in valkey["volumes"]]
    assert "/data" in targets


def test_bucket_is_created_before_the_service_starts(resolved):
    services = resolved["services"]
    init = services["minio-init"]
    script = " ".join(init["entrypoint"] + init["command"])
    assert "mc mb --ignore-existing" in script
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
        assert services[name]["depends_on"]["valkey"]["condition"] == "service_healthy"


def test_api_and_workers_share_redis_and_s3(resolved):
    services = resolved["services"]
    for name in ("api", "worker", "worker-ops"):
        environment = services[name]["environment"]
        assert environment["REEL_REDIS_URL"] == "redis://valkey:6379/0", name
        assert environment["REEL_STORAGE"] == "s3", name
        assert environment["REEL_S3_ENDPOINT_URL"] == "http://minio:9000", name
        assert environment["AWS_ACCESS_KEY_ID"] and environment["AWS_SECRET_ACCESS_KEY"], name
    assert services["api"]["deploy"]["replicas"] >= 2
    assert services["api"]["build"]["dockerfile"] == "docker/api.Dockerfile"
    assert "api" in " ".join(services["proxy"]["command"])


def test_gpu_worker_reserves_a_gpu_and_runs_one_job_at_a_time(resolved):
    worker = resolved["services"]["worker"]
    assert worker["build"]["dockerfile"] == "docker/worker.Dockerfile"
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in device["capabilities"] for device in devices)
    command = worker["command"]
    assert command[command.index("--concurrency") + 1] == "1"
    assert command[command.index("--queues") + 1] == "generate"
    assert worker["restart"] in {"always", "unless-stopped", "on-failure"}
    assert worker["environment"]["REEL_DEVICE"] == "cuda"
    # Webhooks never wait behind a generation on the GPU worker.
    ops_queues = resolved["services"]["worker-ops"]["command"]
    assert "webhooks" in ops_queues[ops_queues.index("--queues") + 1]
    assert "deploy" not in resolved["services"]["worker-ops"] or "resources" not in resolved["services"]["worker-ops"]["deploy"]


def test_cpu_worker_only_under_its_profile(compose, resolved):
    # Compose v2 leaves profiled services out of a plain `config`; v1 prints them with their profiles.
    if "worker-cpu" in resolved["services"]:
        assert resolved["services"]["worker-cpu"]["profiles"] == ["cpu"]
    assert all("profiles" not in service for name, service in resolved["services"].items() if name != "worker-cpu")
    with_cpu = compose.config("--profile", "cpu")
    assert with_cpu.returncode == 0, with_cpu.stderr
    worker_cpu = yaml.safe_load(with_cpu.stdout)["services"]["worker-cpu"]
    assert worker_cpu["profiles"] == ["cpu"]
    assert worker_cpu["environment"]["REEL_DEVICE"] == "cpu"
    assert "devices" not in str(worker_cpu.get("deploy", {}))


def test_every_reel_variable_is_a_settings_field():
    fields = settings_fields()
    used = set(REEL_VARIABLE.findall(COMPOSE.read_text())) | set(REEL_VARIABLE.findall(ENV_EXAMPLE.read_text()))
    unknown = sorted(name for name in used if name.removeprefix("REEL_").lower() not in fields)
    assert not unknown, f"not fields of Settings (a typo, or a setting that was renamed): {unknown}"


def test_env_example_documents_every_setting():
    documented = {name.removeprefix("REEL_").lower() for name in env_example_entries()}
    missing = sorted(f"REEL_{name.upper()}" for name in settings_fields() - documented)
    assert not missing, f".env.example does not mention: {missing}"


def test_env_example_values_are_valid_settings(monkeypatch):
    from worker.celery_app import WorkerSettings

    for name in list(os.environ):
        if name.startswith("REEL_"):
            monkeypatch.delenv(name)
    for name, (value, _commented) in env_example_entries().items():
        monkeypatch.setenv(name, value)
    settings = WorkerSettings()  # Settings plus the worker's own fields
    assert settings.storage == "s3"
    assert settings.s3_endpoint_url == "http://minio:9000"
    assert settings.visibility_timeout_seconds == 3600


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path.split("/")[0], pattern) for pattern in patterns)


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    text = path.read_text().replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


@pytest.mark.parametrize("name", ["api.Dockerfile", "worker.Dockerfile"])
def test_dockerfiles_copy_what_exists_and_run_unprivileged(name):
    instructions = dockerfile_instructions(ROOT / "docker" / name)
    patterns = dockerignore_patterns()
    for keyword, rest in instructions:
        if keyword == "COPY":
            sources = rest.split()[:-1]
            for source in sources:
                assert (ROOT / source).exists(), f"{name} copies {source}, which is not in the repository"
                assert not ignored(source.rstrip("/"), patterns), f"{name} copies {source}, which .dockerignore drops"
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users and users[-1] not in {"root", "0"}, f"{name} must end as a non-root user"
    assert instructions[-1][0] == "CMD"


def test_api_image_has_no_torch():
    text = (ROOT / "docker" / "api.Dockerfile").read_text()
    instructions = dockerfile_instructions(ROOT / "docker" / "api.Dockerfile")
    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    copies = [rest.split()[0] for keyword, rest in instructions if keyword == "COPY"]
    assert "torch" not in runs and "[model" not in runs and "optional-dependencies" not in runs
    assert not any(source.startswith(("model", "worker", "weights")) for source in copies), copies
    assert "reel" in text and "api" in instructions[-1][1]


def test_worker_image_pins_torch_and_carries_the_weights():
    instructions = dockerfile_instructions(ROOT / "docker" / "worker.Dockerfile")
    arguments = dict(rest.split("=", 1) for keyword, rest in instructions if keyword == "ARG" and "=" in rest)
    assert arguments["TORCH_VERSION"] == "2.13.0"
    copies = [rest.split()[0] for keyword, rest in instructions if keyword == "COPY"]
    assert "weights/" in copies and "model/" in copies and "worker/" in copies
    assert "worker" in instructions[-1][1]
