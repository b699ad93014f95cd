"""The Kubernetes deployment (deploy/helm/values.yaml for Dagster's official chart), checked without a cluster.

A values file is only read by `helm upgrade`; a wrong module name, an env var nothing reads, a tag limit matching no
run or a setting that drifted from docker/dagster.yaml would surface in production. So it is checked here against
our code, the Docker image, the docker instance settings, Dagster's own instance config schema, and (when vendored)
the chart's values schema of the chart version matching our Dagster.
"""

import ast
import json
import os
import re
import socket
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime
from importlib import import_module
from pathlib import Path
from typing import Any

import dagster as dg
import jsonschema
import pytest
import referencing
import referencing.exceptions
import sqlalchemy as sa
import yaml

from ingestion_platform.defs.resources import build_resources
from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.tenants import SOURCE_TAG, partitions_start
from ingestion_platform_tests.test_docker import Stage, parse_cli, parse_dockerfile

ROOT = Path(__file__).resolve().parents[1]
VALUES_FILE = ROOT / "deploy" / "helm" / "values.yaml"
DOCKER = ROOT / "docker"
DEFS = ROOT / "ingestion_platform" / "defs"
# The chart's default for `dagsterHome`: the instance ConfigMap is mounted there in every Dagster pod.
CHART_DAGSTER_HOME = "/opt/dagster/dagster_home"
SCHEMA_ENV = "DAGSTER_HELM_VALUES_SCHEMA"
# Names that hold secrets: never a literal `value` in the values file.
SECRET_NAME = re.compile(r"URL$|PASSWORD|SECRET|TOKEN|KEY|JSON|CREDENTIALS", re.IGNORECASE)
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    loaded = yaml.safe_load(VALUES_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def deployment(values: dict[str, Any]) -> dict[str, Any]:
    section = values["dagster-user-deployments"]
    assert section["enabled"] and section["enableSubchart"], "the code location is deployed by this release"
    (only,) = section["deployments"]
    return only


@pytest.fixture(scope="module")
def runtime() -> Stage:
    return parse_dockerfile((DOCKER / "Dockerfile").read_text())[-1]


@pytest.fixture(scope="module")
def docker_instance() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "dagster.yaml").read_text())


def load_definitions() -> dg.Definitions:
    from ingestion_platform.definitions import defs

    return defs()


def env_items(deployment: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    env = deployment["env"]
    assert isinstance(env, list), "a list of EnvVars, so secrets can come from secretKeyRef"
    return {item["name"]: item for item in env}


# --- the code location -------------------------------------------------------------------------------------------


def test_user_deployment_serves_the_image_s_code_location(deployment: dict[str, Any], runtime: Stage) -> None:
    # The chart's user-deployment template runs exactly this, our arguments last.
    chart_argv = ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", str(deployment["port"]), "--fixed-server-id", "x"]
    _, grpc = parse_cli([*chart_argv, *deployment["dagsterApiGrpcArgs"]])
    _, image_cmd = parse_cli(runtime.cmd or [])
    root = yaml.safe_load((ROOT / "workspace.yaml").read_text())["load_from"][0]["python_module"]
    assert (grpc["module_name"], grpc["attribute"]) == (root["module_name"], root["attribute"])
    assert (grpc["module_name"], grpc["attribute"]) == (image_cmd["module_name"], image_cmd["attribute"])
    assert hasattr(import_module(grpc["module_name"]), grpc["attribute"])
    # The chart names the location after the deployment (a Kubernetes name); the server must register the same.
    assert DNS_LABEL.match(deployment["name"]), "the chart uses the name in Kubernetes object names"
    assert grpc["location_name"] == deployment["name"]
    assert grpc["port"] == image_cmd["port"], "the port the image exposes for its code server"


def test_image_and_user_match_the_dockerfile(
    values: dict[str, Any], deployment: dict[str, Any], runtime: Stage
) -> None:
    compose = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
    default_image = re.fullmatch(r"\$\{INGESTION_IMAGE:-([^:}]+):[^}]+\}", compose["x-image"]["image"])
    assert default_image, compose["x-image"]["image"]
    assert deployment["image"]["repository"] == default_image.group(1), "the image docker/Dockerfile builds"
    assert deployment["image"]["tag"] not in {None, "", "latest"}, "a fixed tag: run pods must run the server's code"
    uid, gid = (int(part) for part in (runtime.user or "").split(":"))
    security = deployment["podSecurityContext"]
    assert security["runAsNonRoot"] and (security["runAsUser"], security["runAsGroup"]) == (uid, gid)
    assert values.get("dagsterHome", CHART_DAGSTER_HOME) == runtime.env["DAGSTER_HOME"]


# --- environment -------------------------------------------------------------------------------------------------


def env_vars_our_code_names() -> set[str]:
    """Upper-case string constants in the package outside the sandbox: every variable our code reads is one."""
    names: set[str] = set()
    for path in (ROOT / "ingestion_platform").rglob("*.py"):
        if "sandbox" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and re.fullmatch(r"[A-Z][A-Z0-9_]+", node.value)
            ):
                names.add(node.value)
    return names


def test_every_env_var_is_one_our_code_reads(deployment: dict[str, Any]) -> None:
    known = env_vars_our_code_names()
    assert {"WAREHOUSE_URL", "OBJECT_STORE_URL", "INGESTION_DEPLOYMENT"} <= known, "the scan finds the contract"
    unread = set(env_items(deployment)) - known
    assert not unread, f"set in values.yaml but read nowhere in ingestion_platform/: {sorted(unread)}"


def test_the_contract_variables_are_set_and_secrets_come_from_secrets(deployment: dict[str, Any]) -> None:
    env = env_items(deployment)
    assert env["INGESTION_DEPLOYMENT"]["value"] == "prod"
    assert env["OBJECT_STORE_URL"]["value"].split("://")[0] in {"gs", "s3"}, "an object store every pod reaches"
    assert env["WAREHOUSE_URL"]["valueFrom"]["secretKeyRef"]["name"]
    for name, item in env.items():
        if SECRET_NAME.search(name) and name != "OBJECT_STORE_URL":
            assert "value" not in item, f"{name} must come from a Secret, not from values.yaml"
    assert deployment["envSecrets"] and all(ref["name"] for ref in deployment["envSecrets"])
    text = VALUES_FILE.read_text()
    assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", text), "no credentials inside a URL"


def test_tenants_file_is_mounted_from_a_config_map(deployment: dict[str, Any]) -> None:
    tenants_file = Path(env_items(deployment)["INGESTION_TENANTS_FILE"]["value"])
    mounts = [m for m in deployment["volumeMounts"] if Path(m["mountPath"]) == tenants_file.parent]
    (mount,) = mounts
    assert mount.get("readOnly") and "subPath" not in mount, "a directory mount follows ConfigMap updates"
    (volume,) = [v for v in deployment["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"]


def test_definitions_load_under_the_pod_environment(
    deployment: dict[str, Any], runtime: Stage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the code server pod does at start: bind resources to env vars and load every definition, offline."""
    for name, value in runtime.env.items():
        if name != "PATH":
            monkeypatch.setenv(name, value)
    for name, item in env_items(deployment).items():
        # A Secret's value is unknown here; any URL of the right shape stands in for it.
        monkeypatch.setenv(name, item.get("value", "postgresql://user:secret@warehouse:5432/warehouse"))
    resources = build_resources()
    assert isinstance(resources["warehouse"], WarehouseResource)
    assert isinstance(resources["warehouse"].url, dg.EnvVar), "read when a run starts, from the pod's Secret"
    assert sa.make_url(resources["warehouse"].url.get_value() or "").drivername.startswith("postgresql")
    assert date.fromisoformat(partitions_start()) <= date.today()

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the code server must load definitions without network connections")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    loaded = load_definitions()
    monkeypatch.undo()
    assert {"warehouse", "tenants", "object_store", "bigquery"} <= set(loaded.resources or {})


# --- run launcher, queue and instance settings -------------------------------------------------------------------


def test_runs_launch_as_kubernetes_jobs_through_the_queue(values: dict[str, Any]) -> None:
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["dagsterDaemon"]["runCoordinator"] == {"enabled": True, "type": "QueuedRunCoordinator"}
    assert values["postgresql"]["enabled"] is False and values["postgresql"]["postgresqlHost"]
    assert "postgresqlPassword" not in values["postgresql"], "the password comes from global.postgresqlSecretName"
    assert values["global"]["postgresqlSecretName"] and values["generatePostgresqlPasswordSecret"] is False


def chart_instance_sections(values: Mapping[str, Any]) -> dict[str, Any]:
    """The dagster.yaml sections the chart renders from the values we set (its configmap-instance template)."""
    daemon, concurrency = values["dagsterDaemon"], values["concurrency"]
    monitoring, retries = daemon["runMonitoring"], daemon["runRetries"]
    assert concurrency["enabled"], "the chart renders `concurrency:` only when enabled"
    runs = concurrency["runs"]
    return {
        "run_monitoring": {
            "enabled": monitoring["enabled"],
            "start_timeout_seconds": monitoring["startTimeoutSeconds"],
            "poll_interval_seconds": monitoring["pollIntervalSeconds"],
            **({"max_runtime_seconds": monitoring["maxRuntimeSeconds"]} if "maxRuntimeSeconds" in monitoring else {}),
        },
        "run_retries": {
            "enabled": retries["enabled"],
            "max_retries": retries["maxRetries"],
            "retry_on_asset_or_op_failure": retries["retryOnAssetOrOpFailure"],
        },
        "concurrency": {
            "pools": {"default_limit": concurrency["pools"]["defaultLimit"]},
            "runs": {
                "max_concurrent_runs": runs["maxConcurrentRuns"],
                "tag_concurrency_limits": runs["tagConcurrencyLimits"],
            },
        },
        "telemetry": values["telemetry"],
    }


def test_instance_settings_mirror_docker(values: dict[str, Any], docker_instance: dict[str, Any]) -> None:
    """The platform behaves the same on one machine and on a cluster: timeouts, retries, pool limits."""
    chart = chart_instance_sections(values)
    assert chart["run_monitoring"] == docker_instance["run_monitoring"]
    assert chart["run_retries"] == docker_instance["run_retries"]
    assert chart["telemetry"] == docker_instance["telemetry"]
    assert chart["concurrency"]["pools"] == docker_instance["concurrency"]["pools"], "external systems' limits"
    assert (
        chart["concurrency"]["runs"]["max_concurrent_runs"]
        >= docker_instance["concurrency"]["runs"]["max_concurrent_runs"]
    ), "a cluster runs at least what one machine does"


def test_dagster_accepts_the_rendered_instance_settings(values: dict[str, Any], tmp_path: Path) -> None:
    """Dagster's own instance schema and run queue read our limits as meant (no chart needed)."""
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(chart_instance_sections(values)))
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None and queue.max_concurrent_runs == values["concurrency"]["runs"]["maxConcurrentRuns"]
        assert queue.tag_concurrency_limits == values["concurrency"]["runs"]["tagConcurrencyLimits"]
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 6
        assert instance.run_monitoring_enabled and instance.run_retries_max_retries == 1
    finally:
        instance.dispose()


# --- run tags ----------------------------------------------------------------------------------------------------


def _tag_key(node: ast.expr) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name) and node.id == "SOURCE_TAG":
        return SOURCE_TAG
    return None


def schedule_job_tags(path: Path, tree: ast.Module) -> list[Mapping[str, str]]:
    """The tags of the jobs that the schedules in this file run (`@dg.schedule(job=...)`)."""
    module = import_module(".".join(path.relative_to(ROOT).with_suffix("").parts))
    tags = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "dg.schedule":
            for keyword in node.keywords:
                if keyword.arg == "job" and isinstance(keyword.value, ast.Name):
                    tags.append(getattr(module, keyword.value.id).tags or {})
    return tags


def run_requests_by_source() -> dict[str, list[dict[str, str | None]]]:
    """The tags each RunRequest under defs/ starts its run with (literal values; None when computed), by source.

    A schedule's runs also get its job's tags; a sensor's runs target an asset selection, so only the request's.
    """
    found: dict[str, list[dict[str, str | None]]] = {}
    for path in sorted(DEFS.rglob("*.py")):
        source = path.relative_to(DEFS).parts[0]
        tree = ast.parse(path.read_text())
        calls = [
            node
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and ast.unparse(node.func) in {"dg.RunRequest", "RunRequest"}
        ]
        if not calls:
            continue
        job_tags = schedule_job_tags(path, tree)
        for call in calls:
            tags: dict[str, str | None] = {}
            for keyword in call.keywords:
                if keyword.arg == "tags" and isinstance(keyword.value, ast.Dict):
                    for key, value in zip(keyword.value.keys, keyword.value.values, strict=True):
                        name = _tag_key(key) if key is not None else None
                        if name is not None:
                            literal = value.value if isinstance(value, ast.Constant) else None
                            tags[name] = literal if isinstance(literal, str) else None
            inherited = [t for t in job_tags if SOURCE_TAG in t]
            if SOURCE_TAG not in tags and len(inherited) == 1:
                tags[SOURCE_TAG] = inherited[0][SOURCE_TAG]
            found.setdefault(source, []).append(tags)
    return found


@pytest.fixture(scope="module")
def loaded_defs() -> dg.Definitions:
    return load_definitions()


def job_source_tags(defs: dg.Definitions) -> dict[str, str | None]:
    repository = defs.get_repository_def()
    return {job.name: (job.tags or {}).get(SOURCE_TAG) for job in repository.get_all_jobs()}


def test_every_requested_run_names_its_source_and_tenant() -> None:
    requests = run_requests_by_source()
    assert {"ga4", "sftp", "brightdata", "recsys", "commerce", "netsuite"} <= set(requests)
    for source, tagged in requests.items():
        for tags in tagged:
            assert tags.get(SOURCE_TAG) == source, f"defs/{source}: a RunRequest whose run has no {SOURCE_TAG} tag"
            assert "tenant" in tags, f"defs/{source}: a RunRequest without a `tenant` tag"


def test_tag_limits_name_tags_our_runs_carry(values: dict[str, Any], loaded_defs: dg.Definitions) -> None:
    carried = {tags.get(SOURCE_TAG) for requests in run_requests_by_source().values() for tags in requests}
    carried |= set(job_source_tags(loaded_defs).values())
    tagged = {source for source in carried if source is not None}
    limits = values["concurrency"]["runs"]["tagConcurrencyLimits"]
    by_source = [limit["value"] for limit in limits if limit["key"] == SOURCE_TAG]
    assert {limit["key"] for limit in limits} <= {SOURCE_TAG, "tenant"}, "only tags our runs carry"
    assert sorted(by_source) == sorted(tagged), "one limit per source whose runs are tagged, no more"
    (per_tenant,) = [limit for limit in limits if limit["key"] == "tenant"]
    assert per_tenant["value"] == {"applyLimitPerUniqueValue": True}
    assert all(0 < limit["limit"] <= values["concurrency"]["runs"]["maxConcurrentRuns"] for limit in limits)


def test_a_scheduled_ga4_run_is_tagged_with_its_source_and_tenant(loaded_defs: dg.Definitions) -> None:
    """What the daemon starts: the job's tags (source, the 30-minute timeout) under each request's tags."""
    schedule = loaded_defs.resolve_schedule_def("ga4_daily_schedule")
    job = loaded_defs.resolve_job_def(schedule.job_name)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", ["acme"])
        context = dg.build_schedule_context(
            instance=instance, scheduled_execution_time=datetime(2026, 11, 20, 9, tzinfo=UTC)
        )
        result = schedule.evaluate_tick(context)
    assert result.run_requests
    for request in result.run_requests:
        tags = {**job.tags, **request.tags}
        assert tags[SOURCE_TAG] == "ga4" and tags["tenant"] == "acme" and tags["dagster/max_runtime"] == "1800"


# --- the chart's values schema -----------------------------------------------------------------------------------


def chart_dir() -> Path:
    explicit = os.environ.get(SCHEMA_ENV)
    if explicit:
        return Path(explicit).parent
    return ROOT.parent / "shared" / "helm" / f"dagster-{dg.__version__}"


def helm_merge(base: Any, override: Any) -> Any:
    """Helm's coalescing of user values over chart defaults: maps merge by key, a null deletes, the rest replaces."""
    if not (isinstance(base, dict) and isinstance(override, dict)):
        return override
    merged = dict(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = helm_merge(base.get(key), value)
    return merged


# Kubernetes' own object schemas (resources, probes, volumes), which charts may refer to by URL.
KUBERNETES_SCHEMAS = re.compile(
    r"^https://([^/]*kubernetesjsonschema\.dev|raw\.githubusercontent\.com/yannh/kubernetes-json-schema)/"
)


def offline(schema: Any) -> Any:
    """The schema without its `$ref`s to Kubernetes' schemas by URL, which Helm fetches at install and tests cannot:
    those objects (resources, probes, volumes) go unconstrained here and the API server checks them at install;
    Dagster's part of the schema is checked in full. A chart version that embeds the definitions needs nothing."""
    if isinstance(schema, dict):
        return {
            key: offline(value)
            for key, value in schema.items()
            if not (key == "$ref" and isinstance(value, str) and KUBERNETES_SCHEMAS.match(value))
        }
    if isinstance(schema, list):
        return [offline(item) for item in schema]
    return schema


def offline_registry() -> referencing.Registry[Any]:
    def retrieve(uri: str) -> referencing.Resource[Any]:
        raise referencing.exceptions.NoSuchResource(f"{uri}: the schema refers outside itself; tests use no network")

    # The documented keyword of referencing's attrs class, whose field is `_retrieve` to type checkers.
    return referencing.Registry(retrieve=retrieve)  # type: ignore[call-arg]


def validation_errors(schema: Mapping[str, Any], instance: Any) -> list[str]:
    validator_class = jsonschema.validators.validator_for(schema)
    validator = validator_class(offline(schema), registry=offline_registry())
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))
    ]


@pytest.fixture(scope="module")
def chart() -> Iterator[Path]:
    directory = chart_dir()
    schema, defaults = directory / "values.schema.json", directory / "values.yaml"
    if not (schema.is_file() and defaults.is_file()):
        pytest.skip(
            f"the Dagster Helm chart {dg.__version__} (our Dagster's version) is not vendored: need {schema} and "
            f"{defaults} (Helm validates the chart's defaults merged with ours). Get them with "
            f"`helm pull dagster/dagster --version {dg.__version__} --untar` (then rename the `dagster/` folder it "
            f"makes to {directory.name}), or set {SCHEMA_ENV} to a chart's values.schema.json"
        )
    yield directory


def test_values_validate_against_the_chart_schema(values: dict[str, Any], chart: Path) -> None:
    schema = json.loads((chart / "values.schema.json").read_text())
    merged = helm_merge(yaml.safe_load((chart / "values.yaml").read_text()), values)
    errors = validation_errors(schema, merged)
    assert not errors, "\n".join(errors)


def test_user_deployment_validates_against_the_subchart_schema(values: dict[str, Any], chart: Path) -> None:
    subchart = chart / "charts" / "dagster-user-deployments"
    if not (subchart / "values.schema.json").is_file():
        pytest.skip(f"{subchart}/values.schema.json is not vendored")
    schema = json.loads((subchart / "values.schema.json").read_text())
    merged = helm_merge(yaml.safe_load((subchart / "values.yaml").read_text()), values["dagster-user-deployments"])
    errors = validation_errors(schema, merged)
    assert not errors, "\n".join(errors)


def test_schema_validation_catches_a_wrong_value(values: dict[str, Any], chart: Path) -> None:
    """The check can fail: a misspelt run launcher type is refused by the same schema."""
    schema = json.loads((chart / "values.schema.json").read_text())
    broken = helm_merge(yaml.safe_load((chart / "values.yaml").read_text()), values)
    broken["runLauncher"] = {**broken["runLauncher"], "type": "K8SRunLauncher"}
    assert any(error.startswith("runLauncher") for error in validation_errors(schema, broken))
