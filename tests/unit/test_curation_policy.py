"""A curation policy over real photos made into hard cases: exactly the expected exclusions.

The images and texts are ingested by the real ingest (local engine) and published; the
policy run writes ``curation.lance``; the training export leaves those rows out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lance
import pyarrow as pa
import pytest
from helpers import hard_case_documents, hard_case_images, write_json, write_published

from vlm_lake.curation.exclusion_set import load_exclusions
from vlm_lake.curation.policy import CurationPolicy
from vlm_lake.curation.table import build_curation
from vlm_lake.ingest.images import ImageIngestOptions, ingest_images
from vlm_lake.ingest.text_options import TextIngestOptions
from vlm_lake.ingest.texts import ingest_texts
from vlm_lake.store.object_store import ObjectStore
from vlm_lake.tables import publish
from vlm_lake.tables.contracts import multimodal_schema
from vlm_lake.training.sharded_export import export_sharded

TEXTS = hard_case_documents()
CAPTION = TEXTS[0]["text"]
POLICY = CurationPolicy(
    min_blur=50,
    max_flat_share=0.95,
    min_luma_mean=0.1,
    min_short_side=64,
    image_duplicates="perceptual",
    min_text_length=10,
    drop_near_duplicate_texts=True,
    max_excluded_share=0.9,
)


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("curation")
    folder = root / "raw"
    folder.mkdir()
    cases = hard_case_images()
    cases["copy_of_original"] = cases["original"]  # byte-identical: an exact duplicate
    for name, data in cases.items():
        (folder / f"{name}.jpg").write_bytes(data)
    store = ObjectStore()
    uris = {k: str(root / f"{k}.lance") for k in ("images", "texts", "curation", "multimodal")}
    ingest_images(store, str(folder), uris["images"], ImageIngestOptions(engine="local"))
    ingest_texts(
        store,
        str(write_json(root / "docs.json", TEXTS)),
        uris["texts"],
        TextIngestOptions(engine="local"),
    )
    for key in ("images", "texts"):
        publish.publish(uris[key], lance.dataset(uris[key]).version)
    slots = {f"image_id{k}": [d.get(f"image_id{k}") for d in TEXTS] for k in (1, 2)}
    images = {k: [cases.get(i) if i else None for i in v] for k, v in slots.items()}
    table = pa.table(
        {
            "docid": [d["docid"] for d in TEXTS],
            "text": [d["text"] for d in TEXTS],
            **slots,
            "image1": images["image_id1"],
            "image2": images["image_id2"],
        },
        schema=multimodal_schema(2),
    )
    write_published(table, uris["multimodal"])
    uris["root"] = str(root)
    return uris


def _rows(uri: str) -> dict[tuple[str, str, str], dict[str, Any]]:
    rows = lance.dataset(uri).to_table().to_pylist()
    return {(r["kind"], r["id"], r["rule"]): r for r in rows}


def test_default_policy_excludes_nothing(lake: dict[str, str], tmp_path: Path) -> None:
    uri = str(tmp_path / "curation.lance")
    run = build_curation(lake["images"], lake["texts"], uri, None, CurationPolicy())
    assert lance.dataset(uri).count_rows() == 0
    assert (run.excluded_images, run.excluded_documents) == (0, 0)
    assert run.totals["images"] == 11 and run.totals["documents"] == 4


def test_policy_excludes_exactly_the_hard_cases_with_reasons(lake: dict[str, str]) -> None:
    run = build_curation(lake["images"], lake["texts"], lake["curation"], None, POLICY)
    rows = _rows(lake["curation"])
    signal_rules = {(i, r) for k, i, r in rows if k == "image" and "duplicate" not in r}
    assert signal_rules == {
        ("flat_grey", "min_blur"),
        ("almost_black", "min_blur"),
        ("tiny", "min_blur"),
        ("blurred", "min_blur"),
        ("flat_grey", "max_flat_share"),
        ("almost_black", "max_flat_share"),
        ("almost_black", "min_luma_mean"),
        ("tiny", "min_short_side"),
    }
    assert rows[("image", "tiny", "min_short_side")] | {"detail": None} == {
        "kind": "image",
        "id": "tiny",
        "rule": "min_short_side",
        "value": 16.0,
        "threshold": 64.0,
        "detail": None,
    }
    assert rows[("image", "almost_black", "min_luma_mean")]["value"] < 0.02
    # one cluster: the photo and its 8 copies; the kept one passes every signal rule and is
    # the first of the largest (451x300) in row order
    dups = {i: row for (k, i, rule), row in rows.items() if k == "image" and "duplicate" in rule}
    kept = {r["detail"] for r in dups.values()}
    assert kept == {"duplicate of copy_of_original (cluster of 9)"}
    assert dups["original"]["rule"] == "exact_duplicate" and dups["original"]["value"] == 0
    perceptual = {
        "requality",
        "resized",
        "cropped",
        "exif_rotated",
        "tiny",
        "blurred",
        "almost_black",
    }
    assert {i for i, r in dups.items() if r["rule"] == "perceptual_duplicate"} == perceptual
    assert all(0 <= dups[i]["value"] <= 6 and dups[i]["threshold"] == 6 for i in perceptual)
    assert "other_photo" not in {i for _, i, _ in rows}  # 30 bits away: kept
    assert run.excluded_images == 9  # every copy of the photo but one, and the grey image
    # documents: the one-word change, and the 3-character text
    docs = {(i, rule): row for (k, i, rule), row in rows.items() if k == "document"}
    assert set(docs) == {("caption_again", "near_duplicate_text"), ("short", "min_text_length")}
    near = docs[("caption_again", "near_duplicate_text")]
    assert 0.7 <= near["value"] < 1 and near["detail"] == "near-duplicate of caption (cluster of 2)"
    assert docs[("short", "min_text_length")]["value"] == 3
    assert run.by_rule["image/perceptual_duplicate"] == 7


def test_export_leaves_out_the_excluded_rows(lake: dict[str, str]) -> None:
    build_curation(lake["images"], lake["texts"], lake["curation"], None, POLICY)
    publish.publish(lake["curation"], lance.dataset(lake["curation"]).version)
    exclusions = load_exclusions(lake["curation"], None)
    assert exclusions.documents == {"caption_again", "short"}
    store = ObjectStore()
    out = str(Path(lake["root"]) / "training_data.json")
    run = export_sharded(store, lake["multimodal"], out, engine="local", exclusions=exclusions)
    records = json.loads(Path(run.candidate).read_text())
    cases = hard_case_images()
    # "caption" keeps its text and other_photo; "original" (an exact duplicate) is left out
    assert [r["instruction"] for r in records] == [CAPTION, TEXTS[3]["text"]]
    assert records[0]["input"] == [cases["other_photo"].hex()]
    assert records[1]["input"] == []  # the grey image is excluded; the document is kept
    assert (run.manifest.excluded_documents, run.manifest.excluded_images) == (2, 2)
    assert run.manifest.curation["curation_version"] == exclusions.version
    # without exclusions the same export holds every document and image
    plain = export_sharded(store, lake["multimodal"], out, engine="local")
    assert len(json.loads(Path(plain.candidate).read_text())) == 4
    assert plain.manifest.excluded_documents == 0


def test_policy_values_are_checked() -> None:
    with pytest.raises(ValueError, match="image_duplicates='near'"):
        CurationPolicy(image_duplicates="near")
    with pytest.raises(ValueError, match="max_aspect_ratio=0.5"):
        CurationPolicy(max_aspect_ratio=0.5)
    # int32 columns and a number of bits: whole numbers only (Lance cannot compare 63.5)
    with pytest.raises(ValueError, match="min_short_side=63.5: must be a whole number"):
        CurationPolicy(min_short_side=63.5)
    with pytest.raises(ValueError, match="max_text_length=3000000000"):
        CurationPolicy(max_text_length=3_000_000_000)
    with pytest.raises(ValueError, match="phash_max_bits=True"):
        CurationPolicy(phash_max_bits=True)
    assert CurationPolicy(min_short_side=64.0).min_short_side == 64
    with pytest.raises(ValueError, match=r"unknown curation policy fields \['min_blurr'\]"):
        CurationPolicy.from_dict({"min_blurr": 3})
    assert not CurationPolicy().excludes_anything and POLICY.excludes_anything
    assert CurationPolicy.from_dict(json.loads(POLICY.to_json())) == POLICY


def test_export_whose_first_shards_are_all_excluded_still_parses(lake: dict[str, str]) -> None:
    from vlm_lake.checks.curation import excluded_share
    from vlm_lake.checks.training_json import EXCLUDED_SHARE
    from vlm_lake.checks.training_shards import check_training_export
    from vlm_lake.curation.exclusion_set import Exclusions

    store = ObjectStore()
    out = str(Path(lake["root"]) / "one_per_shard" / "training_data.json")
    drop = Exclusions(documents=frozenset({"caption", "caption_again"}), digest="d", version=1)
    run = export_sharded(
        store, lake["multimodal"], out, engine="local", target_bytes=1, exclusions=drop
    )
    shards = run.manifest.shards
    assert [s.records for s in shards] == [0, 0, 1, 1]  # one document per shard
    assert [s.head for s in shards] == [True, False, True, False]  # the third opens the file
    records = json.loads(Path(run.candidate).read_text())
    assert [r["instruction"] for r in records] == ["cat", TEXTS[3]["text"]]
    outcomes = check_training_export(store, run.candidate, run.manifest, run.manifest.records)
    assert all(o.passed for o in outcomes), outcomes
    share = excluded_share(EXCLUDED_SHARE, run.manifest, 0.4)
    assert not share.passed and share.observed == {"documents": 0.5, "images": 0.0}
    assert excluded_share(EXCLUDED_SHARE, run.manifest, 0.5).passed
    again = export_sharded(
        store, lake["multimodal"], out, engine="local", target_bytes=1, exclusions=drop
    )
    assert again.written == 0 and again.reused == 4  # the head shard too is reused
    assert Path(again.candidate).read_bytes() == Path(run.candidate).read_bytes()


def test_semantic_duplicates_come_from_the_vector_index(
    lake: dict[str, str], tmp_path: Path
) -> None:
    import numpy as np

    from vlm_lake.features.index_duplicates import index_pairs
    from vlm_lake.tables.contracts import FEATURE_DIM, FEATURES_SCHEMA

    ids = sorted(hard_case_images())
    rng = np.random.default_rng(7)
    vectors = {i: rng.standard_normal(FEATURE_DIM).astype(np.float32) for i in ids}
    # the grey picture "looks like" the other photo to the model: cosine about 0.995
    vectors["flat_grey"] = vectors["other_photo"] + 0.1 * rng.standard_normal(FEATURE_DIM).astype(
        np.float32
    )
    features = str(tmp_path / "image_features.lance")
    table = pa.table(
        {
            "image_id": ids,
            "image_sha256": ["-"] * len(ids),
            "features": [vectors[i].tolist() for i in ids],
            "model": ["test"] * len(ids),
            "weights": ["test"] * len(ids),
            "precision": ["fp32"] * len(ids),
        },
        schema=FEATURES_SCHEMA,
    )
    write_published(table, features)
    pairs = index_pairs(lance.dataset(features), threshold=0.97)
    assert [(a, b) for a, b, _ in pairs] == [("flat_grey", "other_photo")]
    policy = CurationPolicy(image_duplicates="semantic")
    uri = str(tmp_path / "curation.lance")
    build_curation(lake["images"], lake["texts"], uri, None, policy, lambda: pairs)
    rows = _rows(uri)
    semantic = [r for (_, _, rule), r in rows.items() if rule == "semantic_duplicate"]
    # other_photo (451x300) outranks the grey 200x150 image and is kept
    assert [(r["id"], r["detail"]) for r in semantic] == [
        ("flat_grey", "duplicate of other_photo (cluster of 2)")
    ]
    assert semantic[0]["value"] == pytest.approx(pairs[0][2]) and semantic[0]["threshold"] == 0.97
    assert {r for _, _, r in rows} == {
        "exact_duplicate",
        "perceptual_duplicate",
        "semantic_duplicate",
    }


@pytest.mark.parametrize(
    ("field", "threshold"),
    [
        # (max_bright_share: no hard case has a near-white pixel; the same "above" filter)
        ("min_blur", 50.0),
        ("max_flat_share", 0.5),
        ("min_luma_mean", 0.3),
        ("max_luma_mean", 0.45),
        ("max_dark_share", 0.5),
        ("min_short_side", 150),
        ("max_aspect_ratio", 1.4),
    ],
)
def test_each_image_rule_selects_what_its_column_says(
    lake: dict[str, str], tmp_path: Path, field: str, threshold: float
) -> None:
    from vlm_lake.curation.policy import IMAGE_RULES

    column, below = IMAGE_RULES[field]
    table = lance.dataset(lake["images"]).to_table(columns=["image_id", "width", "height", column])
    expected = set()
    for row in table.to_pylist():
        value = row[column]
        if field == "max_aspect_ratio":  # from the pixel sizes, either orientation
            value = max(row["width"] / row["height"], row["height"] / row["width"])
        if (value < threshold) if below else (value > threshold):
            expected.add(row["image_id"])
    assert expected and expected != set(table.column("image_id").to_pylist()), field
    uri = str(tmp_path / "curation.lance")
    build_curation(lake["images"], lake["texts"], uri, None, CurationPolicy(**{field: threshold}))
    rows = lance.dataset(uri).to_table().to_pylist()
    assert {r["id"] for r in rows} == expected and {r["rule"] for r in rows} == {field}
    assert all(r["threshold"] == threshold for r in rows)


def test_a_rerun_with_the_same_policy_and_inputs_commits_nothing(
    lake: dict[str, str], tmp_path: Path
) -> None:
    uri = str(tmp_path / "curation.lance")
    first = build_curation(lake["images"], lake["texts"], uri, None, POLICY)
    publish.publish(uri, first.version)
    again = build_curation(lake["images"], lake["texts"], uri, None, POLICY)
    assert again.version == first.version == lance.dataset(uri).version
    other = build_curation(lake["images"], lake["texts"], uri, None, CurationPolicy(min_blur=50))
    assert other.version == first.version + 1  # another policy: a new version


def test_vlmdataset_leaves_out_what_the_curation_excludes(lake: dict[str, str]) -> None:
    from vlm_lake.training.dataset import VLMDataset

    run = build_curation(lake["images"], lake["texts"], lake["curation"], None, POLICY)
    publish.publish(lake["curation"], run.version)
    everything = VLMDataset(lake["multimodal"])
    curated = VLMDataset(lake["multimodal"], curation_uri=lake["curation"])
    assert (len(everything), len(curated)) == (4, 2)
    texts, images = zip(*curated.__getitems__([0, 1]), strict=True)
    assert list(texts) == [CAPTION, TEXTS[3]["text"]]
    present = [[bool(img.abs().sum()) for img in doc] for doc in images]
    # caption: "original" (an exact duplicate) zeroed, other_photo kept; grey: zeroed
    assert present == [[False, True], [False, False]]
    _, full = everything.__getitems__([0])[0]
    assert bool((images[0][1] == full[1]).all())  # the kept image, pixel for pixel
    again = VLMDataset.from_manifest(json.loads(json.dumps(curated.manifest())))
    assert len(again) == 2 and again.exclusions == curated.exclusions


def test_curation_policy_variable_is_json_or_a_file(tmp_path: Path) -> None:
    from vlm_lake.curation.policy import parse_policy

    read = ObjectStore().read_bytes
    assert parse_policy(None, read) == CurationPolicy() == parse_policy("  ", read)
    assert parse_policy('{"min_blur": 50}', read) == CurationPolicy(min_blur=50)
    path = tmp_path / "policy.json"
    path.write_text(POLICY.to_json())
    assert parse_policy(str(path), read) == POLICY
    assert POLICY.with_overrides({"min_blur": None, "image_duplicates": "none"}) == CurationPolicy(
        **(POLICY.to_dict() | {"image_duplicates": "none"})
    )
    with pytest.raises(ValueError, match="CURATION_POLICY is not JSON"):
        parse_policy("{min_blur: 50}", read)
    with pytest.raises(ValueError, match=r"CURATION_POLICY: min_blur=-1"):
        parse_policy('{"min_blur": -1}', read)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="must hold a JSON object"):
        parse_policy(str(path), read)


def test_null_and_high_bit_hashes_keep_every_bit(tmp_path: Path) -> None:
    """A null phash (signals off) must not turn the column into floats (bits lost)."""
    from vlm_lake.tables.contracts import IMAGE_SCHEMA

    far = -(2**63) + 0x0FFF_F0FF_FF00  # many bits from the first two
    # 10 bits apart (as float64 they would round to 1 bit apart), a null, 1 bit apart
    hashes = [2**62, 2**62 + 1023, None, far, far ^ 1]
    n = len(hashes)
    table = pa.table(
        {
            "image_id": [f"i{k}" for k in range(n)],
            "image_data": [b"x"] * n,
            "source_uri": ["-"] * n,
            "source_etag": ["-"] * n,
            "sha256": [f"s{k}" for k in range(n)],
            "size_bytes": [1] * n,
            "format": ["jpeg"] * n,
            "width": [10] * n,
            "height": [10] * n,
            "phash": hashes,
        },
    )
    table = table.append_column("blur", pa.array([None] * n, pa.float32())).select(
        [f.name for f in IMAGE_SCHEMA if f.name in table.column_names + ["blur"]]
    )
    images = str(tmp_path / "images.lance")
    write_published(table, images)
    texts = str(tmp_path / "texts.lance")
    write_published(pa.table({"docid": ["d"], "text_length": [1], "minhash": [None]}), texts)
    uri = str(tmp_path / "curation.lance")
    build_curation(images, texts, uri, None, CurationPolicy(image_duplicates="perceptual"))
    rows = lance.dataset(uri).to_table().to_pylist()
    # only the last two (1 bit apart) are duplicates; i0 and i1 are 10 bits apart
    assert [(r["id"], r["rule"], r["value"]) for r in rows] == [("i4", "perceptual_duplicate", 1.0)]


def test_new_exclusions_rewrite_only_the_shards_whose_rows_they_touch(
    lake: dict[str, str], tmp_path: Path
) -> None:
    from vlm_lake.curation.exclusion_set import Exclusions

    store = ObjectStore()
    out = str(tmp_path / "training_data.json")

    def export(documents: set[str], images: set[str], digest: str) -> Any:
        drop = Exclusions(frozenset(images), frozenset(documents), digest, version=1)
        return export_sharded(
            store, lake["multimodal"], out, engine="local", target_bytes=1, exclusions=drop
        )

    first = export({"short"}, set(), "a")
    assert (first.written, first.reused) == (4, 0)  # one document per shard
    # one more excluded image, named by the grey document only: its shard alone is new
    second = export({"short"}, {"flat_grey"}, "b")
    assert (second.written, second.reused) == (1, 3)
    records = json.loads(Path(second.candidate).read_text())
    assert [len(r["input"]) for r in records] == [2, 1, 0]  # caption, caption_again, grey
    # an exclusion no row has changes nothing
    third = export({"short", "no-such-doc"}, {"flat_grey", "no-such-image"}, "c")
    assert (third.written, third.reused) == (0, 4)
    assert Path(third.candidate).read_bytes() == Path(second.candidate).read_bytes()


def test_spark_tasks_apply_the_exclusions_alike(
    spark: Any, lake: dict[str, str], tmp_path: Path
) -> None:
    from vlm_lake.curation.exclusion_set import Exclusions

    store = ObjectStore()
    drop = Exclusions(frozenset({"flat_grey"}), frozenset({"caption"}), "x", version=1)
    outs = {}
    for engine in ("local", "spark"):
        out = str(tmp_path / engine / "training_data.json")
        run = export_sharded(
            store,
            lake["multimodal"],
            out,
            spark=lambda: spark,
            engine=engine,
            target_bytes=1,
            exclusions=drop,
        )
        assert run.engine == engine and (run.written, run.reused) == (4, 0)
        outs[engine] = Path(run.candidate).read_bytes()
    assert outs["spark"] == outs["local"]
    assert [r["instruction"] for r in json.loads(outs["spark"])][0] == TEXTS[1]["text"]
