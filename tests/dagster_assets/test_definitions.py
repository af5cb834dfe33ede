"""The code location: assets, lineage, kinds, executor, env wiring."""

from __future__ import annotations

from dagster import AssetKey, EnvVar

from dagster_project.definitions import defs
from dagster_project.settings import build_resources


def test_assets_and_lineage() -> None:
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {
        "image_lance",
        "rejected_images",
        "text_lance",
        "rejected_documents",
        "multimodal_lance",
        "training_json",
        "training_llamafactory",
        "image_features",
        "curation",
    }
    parents = {
        key: {p.to_user_string() for p in graph.get(AssetKey(key)).parent_keys} for key in keys
    }
    assert parents == {
        "image_lance": set(),
        "rejected_images": set(),
        "text_lance": set(),
        "rejected_documents": set(),
        "multimodal_lance": {"image_lance", "text_lance"},
        "training_json": {"multimodal_lance", "curation"},
        "training_llamafactory": {"multimodal_lance", "curation"},
        "image_features": {"image_lance"},
        "curation": {"image_lance", "text_lance"},
    }


def test_kinds_show_lance_spark_s3() -> None:
    graph = defs.resolve_asset_graph()
    kinds = {k.to_user_string(): set(graph.get(k).kinds) for k in graph.get_all_asset_keys()}
    assert {"lance", "s3"} <= kinds["image_lance"]
    assert {"lance", "spark"} <= kinds["multimodal_lance"]


def test_executor_is_in_process_so_spark_starts_once() -> None:
    job = defs.resolve_job_def("vlm_lake_job")
    assert job.executor_def.name == "in_process"


def test_secrets_come_from_env_vars_by_name(monkeypatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "super-secret-value")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("LAKE_URI", "s3://bucket/lake")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    res = build_resources()
    assert res["object_store"].aws_secret_access_key == EnvVar("AWS_SECRET_ACCESS_KEY")
    assert res["lake"].lake_uri == EnvVar("LAKE_URI")
    assert res["object_store"].endpoint_url is None
    assert "super-secret-value" not in repr(res)
    # resolved only when the resource is initialised for a run
    store = res["object_store"].process_config_and_initialize()
    assert store.settings().secret_access_key == "super-secret-value"
    assert "super-secret-value" not in repr(store.settings())


def test_embedded_default_needs_no_environment(monkeypatch) -> None:
    for name in ("RAW_IMAGES_URI", "RAW_TEXTS_URI", "LAKE_URI", "SPARK_MASTER", "SPARK_REMOTE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("RESNET50_WEIGHTS", "FEATURES_DEVICE", "FEATURES_PRECISION", "FEATURES_COMPILE"):
        monkeypatch.delenv(name, raising=False)
    resources = build_resources()
    lake = resources["lake"]
    assert lake.raw_images_uri.endswith("sample_data/lanceData")
    assert lake.raw_texts_uri.endswith("testdata.json")
    assert lake.lake_uri == "lake"
    model = resources["feature_model"]
    assert (model.weights_uri, model.device, model.precision) == (None, "auto", "auto")
    assert model.compile == "auto"


def test_weights_and_device_come_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("RESNET50_WEIGHTS", "s3://models/resnet50.pth")
    monkeypatch.setenv("FEATURES_DEVICE", "cpu")
    monkeypatch.setenv("FEATURES_COMPILE", "off")
    model = build_resources()["feature_model"]
    assert model.weights_uri == EnvVar("RESNET50_WEIGHTS")
    assert model.device == EnvVar("FEATURES_DEVICE")
    resolved = model.process_config_and_initialize()
    assert (resolved.weights_uri, resolved.device) == ("s3://models/resnet50.pth", "cpu")
    assert resolved.settings().compile == "off"


def test_checks_guarding_training_are_blocking() -> None:
    graph = defs.resolve_asset_graph()
    specs = {}
    for check_key in graph.asset_check_keys:
        spec = graph.get_check_spec(check_key)
        specs[(check_key.asset_key.to_user_string(), check_key.name)] = spec.blocking
    assert specs == {
        ("image_lance", "image_id_unique"): True,
        ("image_lance", "images_decode"): True,
        ("image_lance", "duplicate_images"): False,
        ("image_lance", "perceptual_duplicates"): False,
        ("text_lance", "docid_unique"): True,
        ("text_lance", "text_not_empty"): True,
        ("text_lance", "schema_as_contracted"): True,
        ("multimodal_lance", "one_row_per_document"): True,
        ("multimodal_lance", "dangling_references"): False,
        ("training_json", "parses"): True,
        ("training_json", "record_count_matches"): True,
        ("training_json", "images_decode"): True,
        ("training_json", "shards_match_manifest"): True,
        ("training_llamafactory", "record_count_matches"): True,
        ("training_llamafactory", "tokens_match_images"): True,
        ("training_llamafactory", "image_paths_exist"): True,
        ("training_llamafactory", "images_match_sha256"): True,
        ("image_features", "one_row_per_image"): True,
        ("image_features", "features_finite"): True,
        ("image_features", "single_model"): True,
        ("image_features", "near_duplicate_images"): False,
        ("curation", "image_signal_distribution"): False,
        ("curation", "text_signal_distribution"): False,
        ("training_json", "excluded_share"): True,
        ("training_llamafactory", "excluded_share"): True,
    }
