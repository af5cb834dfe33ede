"""Text signals at ingest: length and MinHash, near-duplicate texts stay close."""

from __future__ import annotations

import json
from pathlib import Path

import lance
import numpy as np
from datasketch import MinHash

from vlm_lake.curation.clusters import cluster_texts
from vlm_lake.curation.text_signals import NUM_PERM, jaccard, minhash, shingles
from vlm_lake.ingest.texts import ingest_texts
from vlm_lake.store.object_store import ObjectStore

CAPTION = (
    "A grey cat sits on a wooden windowsill in the afternoon sun, looking at the birds "
    "in the garden below while a red car passes on the quiet street"
)
DOCS = [
    {"docid": "orig", "text": CAPTION},
    {"docid": "one_word", "text": CAPTION.replace("wooden", "painted")},
    {"docid": "other", "text": "Quarterly revenue rose by four percent on strong demand"},
]


def test_signatures_are_datasketch_minhash_of_the_word_shingles() -> None:
    reference = MinHash(num_perm=NUM_PERM)
    for shingle in shingles(CAPTION):
        reference.update(shingle)
    assert np.array_equal(minhash(CAPTION), reference.hashvalues.astype(np.uint32))
    assert shingles("Two Words") == [b"two words"] and shingles("") == [b""]


def test_ingest_stores_length_and_a_signature_near_duplicates_share(
    tmp_path: Path, local_store: ObjectStore
) -> None:
    source = tmp_path / "docs.json"
    source.write_text(json.dumps(DOCS), encoding="utf-8")
    uri = str(tmp_path / "texts.lance")
    ingest_texts(local_store, str(source), uri)
    rows = {r["docid"]: r for r in lance.dataset(uri).to_table().to_pylist()}
    assert {d: rows[d]["text_length"] for d in rows} == {d["docid"]: len(d["text"]) for d in DOCS}
    sig = {d: rows[d]["minhash"] for d in rows}
    assert all(len(s) == NUM_PERM for s in sig.values())
    # 29 words: one changed word changes 3 of 27 shingles (true Jaccard 24/30 = 0.8)
    assert jaccard(sig["orig"], sig["one_word"]) >= 0.6
    assert jaccard(sig["orig"], sig["other"]) <= 0.1


def test_near_duplicate_texts_cluster_and_the_first_is_kept() -> None:
    rng = np.random.default_rng(5)
    words = [f"w{i}" for i in range(2000)]
    texts = [" ".join(rng.choice(words, size=40)) for _ in range(300)]
    for i in range(0, 300, 10):  # row i + 1: row i with one word changed
        changed = texts[i].split()
        changed[17] = "changed"
        texts[i + 1] = " ".join(changed)
    texts += [CAPTION, CAPTION.replace("wooden", "painted"), DOCS[2]["text"]]
    clusters = cluster_texts(np.stack([minhash(t) for t in texts]))
    groups = [sorted(g.tolist()) for g in clusters.groups()]
    expected = [[i, i + 1] for i in range(0, 300, 10)] + [[300, 301]]
    assert sorted(groups) == expected
    assert all(clusters.cluster[b] == a for a, b in expected)  # the first row is kept
