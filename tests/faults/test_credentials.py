"""Credentials never appear in logs, Dagster's records, reprs or error messages."""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lance
import pyarrow as pa
import pytest
from helpers import S3_KEY, S3_REGION, S3_SECRET, photo_variant, put, upload_seed_example
from s3_faults import FaultProxy

from resources import ObjectStoreResource
from vlm_lake.store.object_store import ObjectStore, StoreSettings
from vlm_lake.store.redact import MASK, mask_fields, redact, redact_options, register_secret
from vlm_lake.tables import lance_io

SESSION_TOKEN = "session-token-value-never-logged"
CREDENTIALS = (S3_SECRET, S3_KEY)


def _leaks(text: str) -> list[str]:
    return [c for c in (*CREDENTIALS, SESSION_TOKEN) if c in text]


def _error_text(exc: BaseException) -> str:
    """Everything an error shows: str, repr and the formatted chain with its causes."""
    return "\n".join([str(exc), repr(exc), *traceback.format_exception(exc)])


def _raised(call: Callable[[], Any]) -> BaseException:
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the test inspects whatever was raised
        return exc
    raise AssertionError(f"{call} raised nothing")


def _closed_port_endpoint() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens there afterwards


# -- reprs -----------------------------------------------------------------------------------


def test_settings_and_store_reprs_hide_secrets(proxy_settings: StoreSettings) -> None:
    settings = StoreSettings(
        endpoint_url="http://127.0.0.1:9000",
        access_key_id=S3_KEY,
        secret_access_key=S3_SECRET,
        session_token=SESSION_TOKEN,
    )
    store = ObjectStore(settings)
    for obj in (settings, proxy_settings, store):
        for text in (repr(obj), str(obj), f"{obj}"):
            assert S3_SECRET not in text
            assert SESSION_TOKEN not in text
    assert S3_KEY not in repr(store)


@pytest.mark.parametrize("from_env", [False, True])
def test_object_store_resource_repr_hides_credentials(
    from_env: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if from_env:
        from dagster import EnvVar

        monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_KEY)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
        monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
        key: Any = EnvVar("AWS_ACCESS_KEY_ID")
        secret: Any = EnvVar("AWS_SECRET_ACCESS_KEY")
        token: Any = EnvVar("AWS_SESSION_TOKEN")
    else:
        key, secret, token = S3_KEY, S3_SECRET, SESSION_TOKEN
    resource = ObjectStoreResource(
        endpoint_url="http://127.0.0.1:9000",
        region_name=S3_REGION,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        aws_session_token=token,
    )
    for text in (repr(resource), str(resource), f"{resource!r}"):
        assert _leaks(text) == [], text
    assert "endpoint_url='http://127.0.0.1:9000'" in repr(resource)  # the rest stays visible


# -- error messages --------------------------------------------------------------------------


def test_errors_from_boto3_and_lance_hide_credentials(
    faulty_s3: FaultProxy, proxy_store: ObjectStore, bucket: str
) -> None:
    put(proxy_store.client, bucket, "raw/a.jpg", photo_variant(5))
    faulty_s3.add_fault("internal", method="GET", path=r"/raw/a\.jpg$", times=100)
    faulty_s3.add_fault("internal", method="PUT", path=r"/broken\.lance/", times=1000)
    no_bucket = "s3://no-such-bucket-creds"
    dead = ObjectStore(
        StoreSettings(
            endpoint_url=_closed_port_endpoint(),
            region=S3_REGION,
            access_key_id=S3_KEY,
            secret_access_key=S3_SECRET,
            session_token=SESSION_TOKEN,
            max_attempts=1,
            connect_timeout=1,
            read_timeout=1,
        )
    )

    def lance_open(store: ObjectStore, uri: str) -> Callable[[], Any]:
        return lambda: lance_io.open_dataset(uri, store.storage_options(uri))

    def lance_write(store: ObjectStore, uri: str) -> Callable[[], Any]:
        table = pa.table({"x": [1, 2, 3]})
        return lambda: lance.write_dataset(table, uri, storage_options=store.storage_options(uri))

    calls: dict[str, Callable[[], Any]] = {
        "read missing key": lambda: proxy_store.read_bytes(f"s3://{bucket}/raw/missing.jpg"),
        "read missing bucket": lambda: proxy_store.read_bytes(f"{no_bucket}/x.jpg"),
        "list missing bucket": lambda: list(proxy_store.list(f"{no_bucket}/raw/")),
        "read after retries": lambda: proxy_store.read_bytes(f"s3://{bucket}/raw/a.jpg"),
        "write missing bucket": lambda: proxy_store.write_bytes(f"{no_bucket}/x.json", b"{}"),
        "read unreachable endpoint": lambda: dead.read_bytes(f"s3://{bucket}/raw/a.jpg"),
        "lance missing dataset": lance_open(proxy_store, f"s3://{bucket}/lake/missing.lance"),
        "lance missing bucket": lance_open(proxy_store, f"{no_bucket}/lake/x.lance"),
        "lance write after retries": lance_write(proxy_store, f"s3://{bucket}/lake/broken.lance"),
        "lance unreachable endpoint": lance_open(dead, f"s3://{bucket}/lake/x.lance"),
    }
    for name, call in calls.items():
        text = _error_text(_raised(call))
        assert _leaks(text) == [], f"{name} leaks a credential:\n{text}"


def test_object_store_errors_mask_passwords_in_urls() -> None:
    # An endpoint URL with a password in it (user:password@host) is echoed by botocore's
    # connection errors: the object store's error masks it and does not chain botocore's.
    endpoint = _closed_port_endpoint().replace("//", "//url-user:url-password-only-here@")
    store = ObjectStore(
        StoreSettings(
            endpoint_url=endpoint,
            region=S3_REGION,
            access_key_id=S3_KEY,
            secret_access_key=S3_SECRET,
            max_attempts=1,
            read_timeout=1,
        )
    )
    error = _raised(lambda: store.read_bytes("s3://some-bucket/x.jpg"))
    assert "url-password-only-here" not in _error_text(error)
    assert f"//{MASK}@127.0.0.1" in str(error)
    assert error.__cause__ is None
    assert _leaks(_error_text(error)) == []


def test_redaction_helpers() -> None:
    register_secret("a-registered-value-42")
    register_secret("abc")  # too short to be a credential: never masked
    assert redact("x a-registered-value-42 y abc") == f"x {MASK} y abc"
    assert redact("see http://user:pw@host:9/b and s3://b/k@v") == (
        f"see http://{MASK}@host:9/b and s3://b/k@v"
    )
    opts = {"aws_secret_access_key": "s", "aws_session_token": "", "aws_region": "r"}
    assert redact_options(opts) == {
        "aws_secret_access_key": MASK,
        "aws_session_token": "",
        "aws_region": "r",
    }
    pairs = [("aws_secret_access_key", "s"), ("aws_session_token", None), ("region_name", "r")]
    assert list(mask_fields(pairs, ["aws_secret_access_key", "aws_session_token"])) == [
        ("aws_secret_access_key", MASK),
        ("aws_session_token", None),
        ("region_name", "r"),
    ]


# -- logs ------------------------------------------------------------------------------------


def test_debug_logs_of_s3_and_lance_work_hide_credentials(
    caplog: pytest.LogCaptureFixture,
    faulty_s3: FaultProxy,
    proxy_store: ObjectStore,
    bucket: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    put(proxy_store.client, bucket, "raw/b.jpg", photo_variant(6))
    faulty_s3.add_fault("truncate", method="GET", path=r"/raw/b\.jpg$", times=1)  # a warning
    faulty_s3.add_fault("slowdown", method="PUT", path=r"/t\.lance/data/", times=1)
    assert proxy_store.read_bytes(f"s3://{bucket}/raw/b.jpg") == photo_variant(6)
    uri = f"s3://{bucket}/lake/t.lance"
    lance.write_dataset(pa.table({"x": [1]}), uri, storage_options=proxy_store.storage_options(uri))
    lance_io.open_dataset(uri, proxy_store.storage_options(uri)).to_table()
    # py4j logs every command it sends to the JVM at DEBUG, Spark data source options
    # (the storage options, secret included) among them; botocore logs the signed headers.
    logging.getLogger("py4j.clientserver").debug(
        "Command to send: %s", f"c\no55\noption\nsstorage.aws_secret_access_key\ns{S3_SECRET}\ne"
    )

    messages = [r.getMessage() for r in caplog.records]
    assert any("re-downloading" in m for m in messages)  # the retry was logged ...
    assert any(r.name.startswith("botocore") for r in caplog.records)  # ... DEBUG was on
    assert any(m.startswith("Command to send") and MASK in m for m in messages)
    leaking = [
        f"{r.name}: {r.getMessage()[:300]}" for r in caplog.records if _leaks(r.getMessage())
    ]
    assert leaking == []


def test_dagster_run_records_and_logs_hide_credentials(
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    s3_endpoint: str,
    s3_store: ObjectStore,
    bucket: str,
    spark: Any,
) -> None:
    """The production wiring (``build_resources`` from AWS_* variables), one full run."""
    from dagster import instance_for_test, materialize
    from dagster._serdes import serialize_value

    from assets import ALL_ASSETS
    from dagster_project.settings import build_resources

    upload_seed_example(s3_store.client, bucket)
    env = {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_REGION": S3_REGION,
        "AWS_ACCESS_KEY_ID": S3_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "RAW_IMAGES_URI": f"s3://{bucket}/lanceData/",
        "RAW_TEXTS_URI": f"s3://{bucket}/Lance/data/testdata.json",
        "LAKE_URI": f"s3://{bucket}/lake",
        "SPARK_MASTER": "local[2]",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.DEBUG)
    home = tmp_path / "instance"
    home.mkdir()

    with instance_for_test(temp_dir=str(home)) as instance:
        result = materialize(ALL_ASSETS, resources=build_resources(), instance=instance)
        assert result.success
        run = instance.get_run_by_id(result.run_id)
        assert run is not None
        texts = {
            "events": "\n".join(repr(e) for e in result.all_events),
            "event log": "\n".join(serialize_value(e) for e in instance.all_logs(result.run_id)),
            "run": serialize_value(run),
            "job snapshot": serialize_value(instance.get_job_snapshot(run.job_snapshot_id)),
            "plan snapshot": serialize_value(
                instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
            ),
        }
    metadata = [
        f"{key}={value!r}"
        for event in result.all_events
        if event.is_step_materialization
        for key, value in event.step_materialization_data.materialization.metadata.items()
    ]
    assert any(m.startswith("dagster/uri=") for m in metadata)  # metadata was there to scan
    texts["metadata"] = "\n".join(metadata)
    texts["logs"] = "\n".join(f"{r.name}: {r.getMessage()}" for r in caplog.records)
    for path in home.rglob("*"):  # the instance's storage on disk, raw
        if path.is_file():
            texts[str(path)] = path.read_bytes().decode("latin-1")

    assert any(r.name.startswith("py4j") for r in caplog.records)  # DEBUG reached Spark's client
    for where, text in texts.items():
        found = _leaks(text)
        assert found == [], f"{where} contains {found}: ...{_context(text, found[0])}..."


def _context(text: str, needle: str) -> str:
    match = re.search(re.escape(needle), text)
    assert match is not None
    return text[max(0, match.start() - 200) : match.end() + 50]
