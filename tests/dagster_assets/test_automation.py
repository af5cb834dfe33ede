"""Automation conditions: a hand-made ingest propagates downstream, a failed check stops it."""

from __future__ import annotations

from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    evaluate_automation_conditions,
)

from dagster_project.definitions import defs
from vlm_lake.checks import SPECS

DOWNSTREAM = (
    "multimodal_lance",
    "training_json",
    "training_llamafactory",
    "image_features",
    "curation",
)
EXPORTS = ("training_json", "training_llamafactory")


def _requested(result: Any) -> set[str]:
    return {name for name in DOWNSTREAM if result.get_num_requested(AssetKey(name))}


def _materialize(instance: DagsterInstance, *keys: str) -> None:
    """Record a materialization of each asset and a pass of each of its checks, as a run does."""
    for key in keys:
        instance.report_runless_asset_event(AssetMaterialization(key))
        for spec in SPECS.get(key, ()):
            instance.report_runless_asset_event(
                AssetCheckEvaluation(
                    asset_key=AssetKey(key),
                    check_name=spec.name,
                    passed=True,
                    blocking=spec.blocking,
                )
            )


def _after_a_full_run(instance: DagsterInstance) -> Any:
    """Every asset materialized once (as by ``make run``); returns the evaluation's cursor."""
    first = evaluate_automation_conditions(defs=defs, instance=instance)
    assert first.total_requested == 0  # nothing materialized yet: nothing to follow
    _materialize(instance, "image_lance", "rejected_images", "text_lance", "rejected_documents")
    _materialize(instance, *DOWNSTREAM)
    settled = evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    assert settled.total_requested == 0  # one run built everything: nothing to follow
    return settled.cursor


def test_an_ingest_made_by_hand_propagates_to_everything_downstream() -> None:
    with DagsterInstance.ephemeral() as instance:
        cursor = _after_a_full_run(instance)
        _materialize(instance, "text_lance", "rejected_documents")
        result = evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        assert _requested(result) == {"multimodal_lance", "curation", *EXPORTS}
        _materialize(instance, "multimodal_lance", "curation", *EXPORTS)
        again = evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
        assert again.total_requested == 0  # done: no second run


def test_new_images_request_the_join_and_the_features() -> None:
    with DagsterInstance.ephemeral() as instance:
        cursor = _after_a_full_run(instance)
        _materialize(instance, "image_lance", "rejected_images")
        result = evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        assert _requested(result) == {"multimodal_lance", *EXPORTS, "image_features", "curation"}


def test_the_sensor_run_that_built_everything_leaves_nothing_to_follow() -> None:
    """new_uploads_sensor's run materializes the ingest and its downstream together."""
    with DagsterInstance.ephemeral() as instance:
        cursor = _after_a_full_run(instance)
        _materialize(instance, "text_lance", "rejected_documents", "multimodal_lance")
        _materialize(instance, "curation", *EXPORTS)
        result = evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        assert result.total_requested == 0


def test_a_failed_blocking_check_is_never_built_on() -> None:
    with DagsterInstance.ephemeral() as instance:
        cursor = _after_a_full_run(instance)
        _materialize(instance, "text_lance", "rejected_documents")
        instance.report_runless_asset_event(
            AssetCheckEvaluation(
                asset_key=AssetKey("text_lance"),
                check_name="docid_unique",
                passed=False,
                blocking=True,
            )
        )
        result = evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        assert result.total_requested == 0
        assert (
            AssetCheckKey(AssetKey("text_lance"), "docid_unique")
            in defs.resolve_asset_graph().asset_check_keys
        )


def test_training_json_has_a_freshness_policy() -> None:
    node = defs.resolve_asset_graph().get(AssetKey("training_json"))
    policy = node.freshness_policy
    assert policy is not None
    assert policy.fail_window.to_timedelta().days == 2
    assert policy.warn_window.to_timedelta().days == 1
