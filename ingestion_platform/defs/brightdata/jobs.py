"""Triggering crawls: `brightdata_trigger` (Launchpad: one page, typed config) and its daily schedule (every tenant's
configured targets). A trigger only starts BrightData's work; `brightdata_progress` takes it from there."""

from datetime import timedelta

import dagster as dg

from ingestion_platform.defs.brightdata import crawls
from ingestion_platform.defs.brightdata.crawls import CrawlRequest
from ingestion_platform.resources.brightdata import BrightDataResource
from ingestion_platform.resources.tenants import TenantsResource
from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.retry import per_tenant
from ingestion_platform.tenants import SOURCE_TAG, BrightDataSettings


class CrawlConfig(dg.Config):
    """Leave `url` empty to crawl every target configured for the tenant in tenants.yaml."""

    tenant: str
    dataset_id: str | None = None  # default: the target's, else the tenant's dataset
    platform: str | None = None
    competitor: str | None = None
    brand: str | None = None
    category: str | None = None
    url: str | None = None
    start_date: str | None = None  # YYYY-MM-DD, passed to BrightData as given
    end_date: str | None = None
    include_profile_data: bool = True
    num_of_posts: int = 10


def requests_for(config: CrawlConfig, settings: BrightDataSettings) -> list[CrawlRequest]:
    if config.url:
        labels = {n: getattr(config, n) for n in ("platform", "competitor", "brand", "category")}
        missing = [name for name, value in labels.items() if not value]
        if missing:
            raise dg.Failure(f"a crawl of {config.url} needs {', '.join(missing)} to file its posts under")
        return [
            CrawlRequest(
                tenant_id=config.tenant,
                dataset_id=config.dataset_id or settings.dataset_id,
                url=config.url,
                num_of_posts=config.num_of_posts,
                include_profile_data=config.include_profile_data,
                **labels,
                start_date=config.start_date,
                end_date=config.end_date,
            )
        ]
    if not settings.targets:
        raise dg.Failure(f"tenant {config.tenant!r} has no brightdata targets in tenants.yaml; give a url")
    return [
        CrawlRequest(
            tenant_id=config.tenant,
            dataset_id=config.dataset_id or target.dataset_id or settings.dataset_id,
            platform=target.platform,
            competitor=target.competitor,
            brand=target.brand,
            category=target.category,
            url=target.url,
            num_of_posts=target.num_of_posts,
            include_profile_data=target.include_profile_data,
            start_date=config.start_date,
            end_date=config.end_date,
        )
        for target in settings.targets
    ]


@dg.op(
    description="Triggers BrightData crawls and records each in social.crawl_metadata (queued if refused with 429).",
    tags={"source": "brightdata"},
)
def trigger_crawls(
    context: dg.OpExecutionContext,
    config: CrawlConfig,
    brightdata: BrightDataResource,
    warehouse: WarehouseResource,
    tenants: TenantsResource,
) -> None:
    def trigger(tenant_id: str, settings: BrightDataSettings) -> None:
        with brightdata.client(settings.api_key_env) as client:
            for request in requests_for(config, settings):
                crawl = crawls.trigger(client, warehouse, request)
                context.log.info(
                    f"{tenant_id}: {request.competitor}/{request.brand} {request.url}: crawl {crawl.crawl_id} "
                    f"{crawl.status}" + (f" as snapshot {crawl.snapshot_id}" if crawl.snapshot_id else "")
                )

    per_tenant({config.tenant: tenants.registry().get(config.tenant).brightdata()}, trigger, context.log)


@dg.job(name="brightdata_trigger", tags={SOURCE_TAG: "brightdata"}, description="Trigger BrightData crawls.")
def brightdata_trigger() -> None:
    trigger_crawls()


@dg.schedule(
    name="brightdata_daily_crawls",
    job=brightdata_trigger,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Crawls every tenant's configured pages for yesterday's posts, one run per tenant.",
)
def brightdata_daily_crawls(
    context: dg.ScheduleEvaluationContext, tenants: TenantsResource
) -> list[dg.RunRequest] | dg.SkipReason:
    registry = tenants.registry()
    day = (context.scheduled_execution_time - timedelta(days=1)).date().isoformat()
    runs = []
    for tenant_id in registry.ids:
        if "brightdata" not in registry.get(tenant_id).sources:
            continue
        config = CrawlConfig(tenant=tenant_id, start_date=day, end_date=day)
        runs.append(
            dg.RunRequest(
                run_key=f"{tenant_id}:{day}",
                run_config=dg.RunConfig(ops={"trigger_crawls": config}),
                tags={"tenant": tenant_id},
            )
        )
    return runs or dg.SkipReason("no tenant has brightdata settings")
