"""GA4 events from each tenant's BigQuery export into `ga4.<event_name>`."""
