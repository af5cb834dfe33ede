"""How the downstream assets follow their inputs, and how fresh the training data must be.

``new_uploads_sensor`` requests a run of the changed source's ingest and everything
downstream. The downstream assets also carry :data:`FOLLOW_UPSTREAM`, so an ingest started
any other way (a click on Materialize, the CLI, a schedule) propagates too: Dagster's
automation sensor requests each downstream asset once its inputs updated, none is in
progress, and every blocking check on them passed (a candidate that failed its checks is
never built on). ``training_json`` carries :data:`TRAINING_FRESHNESS`, shown in the UI.
"""

from __future__ import annotations

from datetime import timedelta

from dagster import AutomationCondition, FreshnessPolicy

#: Eager, but never on top of inputs whose blocking checks failed.
FOLLOW_UPSTREAM = (
    AutomationCondition.eager() & AutomationCondition.all_deps_blocking_checks_passed()
).with_label("eager, after the inputs' blocking checks passed")

#: The training file is stale (warn) after 1 day without a materialization, failing after 2.
TRAINING_FRESHNESS = FreshnessPolicy.time_window(
    fail_window=timedelta(days=2), warn_window=timedelta(days=1)
)
