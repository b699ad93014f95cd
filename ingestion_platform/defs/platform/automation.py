"""Declarative automation, running from the start in every deployment.

Automation conditions (`ga4/availability` after any event load; later sources' derived assets after their inputs)
are evaluated only by a running automation condition sensor. Dagster's implicit default sensor starts STOPPED, so
without this one nothing in `dev`, docker or production would ever fire until an operator found the toggle.
"""

import dagster as dg

automation_sensor = dg.AutomationConditionSensorDefinition(
    name="automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Evaluates every asset's automation condition (e.g. refresh `ga4/availability` after event loads).",
)
