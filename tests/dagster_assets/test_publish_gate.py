"""Write, check, publish: a candidate that fails a blocking check is never what readers see.

The project's own writers reject bad input before it reaches a table, so the blocking
checks are a guard against writer bugs. This test plays such a bug: an asset with the real
``text_lance`` key, checks and gate writes a version with a duplicate docid and a blank
text. The real downstream assets then run (or not) against it.
"""

from __future__ import annotations

from typing import Any

import lance
import pyarrow as pa
from dagster import MaterializeResult, asset, materialize
from helpers import upload_seed_example

from assets import ALL_ASSETS, multimodal_lance, training_json
from assets.gate import check_results, check_specs, gate_and_publish
from resources import LakeResource, ObjectStoreResource
from vlm_lake.checks import check_texts
from vlm_lake.lake import LakeLayout
from vlm_lake.tables import lance_io, publish
from vlm_lake.training.dataset import VLMDataset


@asset(name="text_lance", check_specs=check_specs("text_lance"))
def buggy_text_lance(context, lake: LakeResource, object_store: ObjectStoreResource):  # noqa: ANN001, ANN201
    """A writer with a bug: it duplicates a document and blanks another one's text."""
    layout = lake.layout()
    storage = object_store.storage_options(layout.texts)
    good = publish.open_published(layout.texts, storage).to_table()
    blank = pa.Table.from_pylist(
        [{**good.slice(1, 1).to_pylist()[0], "docid": "doc_blank", "text": "   "}],
        schema=good.schema,
    )
    bad = pa.concat_tables([good, good.slice(0, 1), blank])
    version = lance.write_dataset(
        bad, layout.texts, mode="overwrite", storage_options=storage or None
    ).version
    outcomes = check_texts(lance_io.open_dataset(layout.texts, storage, version))
    return MaterializeResult(
        metadata={
            "lance/version": version,
            **gate_and_publish(context, "text_lance", layout.texts, storage, version, outcomes),
        },
        check_results=check_results("text_lance", outcomes),
    )


def test_failed_blocking_check_is_not_published_and_stops_downstream(
    s3_resources: dict[str, Any], s3_store: Any, bucket: str
) -> None:
    upload_seed_example(s3_store.client, bucket)
    assert materialize(ALL_ASSETS, resources=s3_resources).success
    layout = LakeLayout.at(f"s3://{bucket}/lake")
    opts = s3_store.storage_options(layout.root)
    training_before = s3_store.read_bytes(layout.training_json)
    published_before = publish.published(layout.texts, opts).version

    result = materialize(
        [buggy_text_lance, multimodal_lance, training_json],
        resources=s3_resources,
        raise_on_error=False,
    )
    assert not result.success
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks["docid_unique"].passed
    assert checks["docid_unique"].metadata["observed"].value == 1
    assert checks["docid_unique"].metadata["duplicates"].value == [{"docid": "doc_001", "rows": 2}]
    assert not checks["text_not_empty"].passed
    assert checks["text_not_empty"].metadata["docids"].value == ["doc_blank"]
    assert checks["schema_as_contracted"].passed
    (mat,) = result.get_asset_materialization_events()
    assert mat.materialization.metadata["published"].value is False
    assert mat.materialization.metadata["lance/published_version"].value == published_before
    # downstream assets did not run; the published versions and the file are unchanged
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {"text_lance"}
    assert publish.published(layout.texts, opts).version == published_before
    assert lance_io.open_dataset(layout.texts, opts).count_rows() == 5  # the bad candidate
    published_texts = publish.open_published(layout.texts, opts).to_table()
    assert published_texts.num_rows == 3
    assert published_texts.column("docid").to_pylist() == ["doc_001", "doc_002", "doc_003"]
    assert len(VLMDataset(layout.multimodal, opts)) == 3
    assert s3_store.read_bytes(layout.training_json) == training_before

    # the next real run starts from the published version, not from the bad candidate
    assert materialize(ALL_ASSETS, resources=s3_resources).success
    texts = lance_io.open_dataset(layout.texts, opts)
    assert texts.count_rows() == 3
    assert publish.published(layout.texts, opts).version == texts.version
