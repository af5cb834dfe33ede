"""Which settings a session gets for each kind of master (no Spark started here)."""

from __future__ import annotations

import logging

import pytest

from vlm_lake.spark.session import LOCAL_DEFAULTS, redact_remote, session_settings
from vlm_lake.store import redact


@pytest.mark.parametrize("master", ["local[*]", "local[2]", "local"])
def test_local_master_gets_the_loopback_defaults_whatever_the_environment(master):
    assert session_settings(master, environ={}) == LOCAL_DEFAULTS
    assert session_settings(master, environ={"SPARK_LOCAL_IP": "10.1.2.3"}) == LOCAL_DEFAULTS


@pytest.mark.parametrize("master", ["spark://127.0.0.1:7077", "k8s://https://10.0.0.1:6443"])
def test_cluster_master_binds_the_driver_to_spark_local_ip(master):
    settings = session_settings(master, environ={"SPARK_LOCAL_IP": "127.0.0.1"})
    assert settings == {
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.ui.showConsoleProgress": "false",
    }


@pytest.mark.parametrize("environ", [{}, {"SPARK_LOCAL_IP": ""}, {"SPARK_LOCAL_IP": "  "}])
def test_cluster_master_without_spark_local_ip_keeps_spark_defaults(environ):
    # A real cluster: Spark picks the driver's address, the UI stays on as the cluster has it.
    assert session_settings("spark://spark-master:7077", environ=environ) == {
        "spark.ui.showConsoleProgress": "false"
    }


def test_user_settings_win_over_the_defaults():
    conf = {"spark.driver.host": "driver.example.internal", "spark.ui.showConsoleProgress": "true"}
    settings = session_settings("spark://m:7077", conf, environ={"SPARK_LOCAL_IP": "10.0.0.7"})
    assert settings["spark.driver.host"] == "driver.example.internal"
    assert settings["spark.driver.bindAddress"] == "10.0.0.7"
    assert settings["spark.ui.showConsoleProgress"] == "true"
    local = session_settings("local[2]", {"spark.sql.shuffle.partitions": "4"}, environ={})
    assert local["spark.sql.shuffle.partitions"] == "4"
    assert local["spark.driver.host"] == "127.0.0.1"


def test_environment_defaults_to_the_process_environment(monkeypatch):
    monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
    assert session_settings("spark://m:7077")["spark.driver.bindAddress"] == "127.0.0.1"
    monkeypatch.delenv("SPARK_LOCAL_IP")
    assert "spark.driver.bindAddress" not in session_settings("spark://m:7077")


def test_connect_url_is_logged_without_its_token():
    url = "sc://adb-1.azuredatabricks.net:443/;token=dapi-test-0123456789;x-databricks-cluster-id=0101-x"
    assert redact_remote(url) == (
        "sc://adb-1.azuredatabricks.net:443/;token=***;x-databricks-cluster-id=0101-x"
    )
    assert redact.redact("later: dapi-test-0123456789") == "later: ***"  # registered too
    assert redact_remote("sc://127.0.0.1:15002") == "sc://127.0.0.1:15002"
    assert redact_remote("sc://h:1/;user_id=me;x-password=hunter2-long") == (
        "sc://h:1/;user_id=me;x-password=***"
    )


def test_a_masked_connect_token_stays_out_of_later_log_records(caplog):
    redact_remote("sc://h:443/;token=dapi-later-record-987654")
    with caplog.at_level(logging.INFO, logger="vlm_lake.test"):
        logging.getLogger("vlm_lake.test").info("grpc said %s", "dapi-later-record-987654")
    assert "grpc said ***" in caplog.text
    assert "dapi-later-record-987654" not in caplog.text
