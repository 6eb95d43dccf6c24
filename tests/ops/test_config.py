"""Settings: defaults, parsing, the env file, and the one-line errors."""

from __future__ import annotations

import dataclasses
import os

import pytest

from tourno.config import (
    DEFAULT_DATABASE_URL,
    ConfigError,
    Settings,
    mask_password,
    read_env_file,
)

# -- defaults and parsing --------------------------------------------------------------


def test_defaults_when_nothing_is_set():
    s = Settings.from_mapping({})
    assert s == Settings()
    assert s.database_url == DEFAULT_DATABASE_URL == "sqlite:///tourno.db"
    assert s.queue_connection == "database"
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.imports == ()
    assert s.log_level == "info"
    assert s.heartbeat_interval == 5.0
    assert s.worker_stale_after == 30.0


def test_every_setting_is_parsed():
    s = Settings.from_mapping(
        {
            "TOURNO_DATABASE_URL": "  postgresql+pool://u:p@db.example:5433/tourno  ",
            "TOURNO_QUEUE_CONNECTION": " Database ",
            "TOURNO_REDIS_URL": "rediss://cache:6380/2",
            "TOURNO_IMPORTS": " app.jobs , other.mod,, ",
            "TOURNO_LOG_LEVEL": "WARNING",
            "TOURNO_HEARTBEAT_INTERVAL": "2.5",
            "TOURNO_WORKER_STALE_AFTER": "12",
            "PATH": "/usr/bin",
        }
    )
    assert s.database_url == "postgresql+pool://u:p@db.example:5433/tourno"
    assert s.queue_connection == "database"
    assert s.redis_url == "rediss://cache:6380/2"
    assert s.imports == ("app.jobs", "other.mod")
    assert s.log_level == "warning"
    assert s.heartbeat_interval == 2.5
    assert s.worker_stale_after == 12.0
    # Only TOURNO_* variables are remembered as the settings' source.
    assert "PATH" not in s.source
    assert s.source["TOURNO_LOG_LEVEL"] == "WARNING"


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///tourno.db",
        "sqlite:////var/lib/tourno/q.db",
        "postgres://u@h/db",
        "postgresql://u:p@h:5432/db",
        "postgres+pool://u@h/db",
        "postgresql+pool://u@h/db",
    ],
)
def test_accepted_database_urls(url):
    assert Settings.from_mapping({"TOURNO_DATABASE_URL": url}).database_url == url


def test_a_bad_port_message_masks_the_password():
    with pytest.raises(ConfigError) as info:
        Settings.from_mapping({"TOURNO_DATABASE_URL": "postgresql://u:hunter2@h:99999/db"})
    assert "hunter2" not in str(info.value)
    assert "u:***@h:99999" in str(info.value)


@pytest.mark.parametrize(
    "url",
    ["redis://h:6379/0", "redis://h/15", "redis://h", "rediss://u:p@h:6380/2", "unix:///run/redis.sock?db=3"],
)
def test_accepted_redis_urls(url):
    assert Settings.from_mapping({"TOURNO_REDIS_URL": url}).redis_url == url


@pytest.mark.parametrize("url", ["postgresql://u@[::1]:5432/db", "postgresql://u@h:1/db"])
def test_accepted_database_urls_with_ports(url):
    assert Settings.from_mapping({"TOURNO_DATABASE_URL": url}).database_url == url


def test_blank_values_mean_unset():
    s = Settings.from_mapping({"TOURNO_DATABASE_URL": "   ", "TOURNO_LOG_LEVEL": "", "TOURNO_IMPORTS": " "})
    assert s.database_url == DEFAULT_DATABASE_URL
    assert s.log_level == "info"
    assert s.imports == ()


@pytest.mark.parametrize(
    ("variable", "value", "shown"),
    [
        ("TOURNO_DATABASE_URL", "mysql://u@h/db", "'mysql://u@h/db'"),
        ("TOURNO_DATABASE_URL", "tourno.db", "'tourno.db'"),
        ("TOURNO_QUEUE_CONNECTION", "kafka", "'kafka'"),
        ("TOURNO_REDIS_URL", "http://cache:6379", "'http://cache:6379'"),
        # Ports out of range: urllib raises a bare ValueError at connect time.
        ("TOURNO_DATABASE_URL", "postgresql://u:pw@h:99999/db", "port must be a number from 1 to 65535"),
        ("TOURNO_DATABASE_URL", "postgresql://u@:::/db", "'postgresql://u@:::/db'"),
        ("TOURNO_DATABASE_URL", "postgresql://u@h:0/db", "port"),
        ("TOURNO_REDIS_URL", "redis://h:70000/0", "port must be a number from 1 to 65535"),
        # redis-py would silently use database 0.
        ("TOURNO_REDIS_URL", "redis://host:6379/abc", "got 'abc'"),
        ("TOURNO_REDIS_URL", "redis://host:6379/?db=x", "got 'x'"),
        ("TOURNO_IMPORTS", "app.jobs,not-a-module", "'not-a-module'"),
        ("TOURNO_IMPORTS", "app..jobs", "'app..jobs'"),
        ("TOURNO_LOG_LEVEL", "verbose", "'verbose'"),
        ("TOURNO_HEARTBEAT_INTERVAL", "abc", "'abc'"),
        ("TOURNO_HEARTBEAT_INTERVAL", "0", "'0'"),
        ("TOURNO_HEARTBEAT_INTERVAL", "-1", "'-1'"),
        ("TOURNO_WORKER_STALE_AFTER", "30s", "'30s'"),
        ("TOURNO_QUEUE_METRICS", "maybe", "'maybe'"),
        ("TOURNO_METRICS_RETENTION_DAYS", "0", "'0'"),
        ("TOURNO_METRICS_TOKEN", "short", "16 characters"),
    ],
)
def test_bad_value_is_one_line_naming_the_variable(variable, value, shown):
    with pytest.raises(ConfigError) as info:
        Settings.from_mapping({variable: value})
    message = str(info.value)
    assert message.startswith(f"{variable}: ")
    assert "\n" not in message
    assert shown in message


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TOURNO_HEARTBEAT_INTERVAL", "nan"),
        ("TOURNO_WORKER_STALE_AFTER", "nan"),
        ("TOURNO_WORKER_STALE_AFTER", "inf"),
    ],
)
def test_non_finite_seconds_are_refused(variable, value):
    with pytest.raises(ConfigError, match=f"^{variable}: "):
        Settings.from_mapping({variable: value})


# -- stale-after versus heartbeat ------------------------------------------------------------


def test_stale_after_exactly_twice_the_heartbeat_is_accepted():
    s = Settings.from_mapping({"TOURNO_HEARTBEAT_INTERVAL": "5", "TOURNO_WORKER_STALE_AFTER": "10"})
    assert (s.heartbeat_interval, s.worker_stale_after) == (5.0, 10.0)


@pytest.mark.parametrize(
    "env",
    [
        {"TOURNO_HEARTBEAT_INTERVAL": "5", "TOURNO_WORKER_STALE_AFTER": "9.9"},
        # Against the defaults: 20 s heartbeats with the default 30 s staleness.
        {"TOURNO_HEARTBEAT_INTERVAL": "20"},
        {"TOURNO_WORKER_STALE_AFTER": "9"},
    ],
)
def test_stale_after_below_twice_the_heartbeat_is_refused(env):
    with pytest.raises(ConfigError) as info:
        Settings.from_mapping(env)
    message = str(info.value)
    assert message.startswith("TOURNO_WORKER_STALE_AFTER: must be at least twice TOURNO_HEARTBEAT_INTERVAL")
    assert "\n" not in message


# -- the env file ----------------------------------------------------------------------------


ENV_FILE = """\
# Tourno settings for the VPS
   # an indented comment

export TOURNO_DATABASE_URL=postgresql://tourno:s3cret@127.0.0.1/tourno
TOURNO_LOG_LEVEL="debug"
TOURNO_IMPORTS = 'app.jobs, app.mail'
export   TOURNO_HEARTBEAT_INTERVAL=2
TOURNO_REDIS_URL="redis://cache:6379/1#not-a-comment"
OTHER_APP_SETTING=ignored by tourno
TOURNO_EMPTY=
"""


def test_read_env_file_handles_comments_export_and_quotes(tmp_path):
    path = tmp_path / "tourno.env"
    path.write_text(ENV_FILE)
    assert read_env_file(path) == {
        "TOURNO_DATABASE_URL": "postgresql://tourno:s3cret@127.0.0.1/tourno",
        "TOURNO_LOG_LEVEL": "debug",
        "TOURNO_IMPORTS": "app.jobs, app.mail",
        "TOURNO_HEARTBEAT_INTERVAL": "2",
        "TOURNO_REDIS_URL": "redis://cache:6379/1#not-a-comment",
        "OTHER_APP_SETTING": "ignored by tourno",
        "TOURNO_EMPTY": "",
    }


def test_settings_from_env_file(tmp_path):
    path = tmp_path / "tourno.env"
    path.write_text(ENV_FILE)
    s = Settings.from_env({"TOURNO_ENV_FILE": str(path)})
    assert s.database_url == "postgresql://tourno:s3cret@127.0.0.1/tourno"
    assert s.log_level == "debug"
    assert s.imports == ("app.jobs", "app.mail")
    assert s.heartbeat_interval == 2.0
    assert s.redis_url == "redis://cache:6379/1#not-a-comment"


def test_environment_wins_over_the_env_file(tmp_path):
    path = tmp_path / "tourno.env"
    path.write_text("TOURNO_LOG_LEVEL=error\nTOURNO_QUEUE_CONNECTION=redis\n")
    s = Settings.from_env({"TOURNO_ENV_FILE": str(path), "TOURNO_LOG_LEVEL": "debug"})
    assert s.log_level == "debug"  # from the environment
    assert s.queue_connection == "redis"  # from the file, the environment says nothing


def test_from_env_reads_the_process_environment(tmp_path, monkeypatch):
    for key in [k for k in os.environ if k.startswith("TOURNO_")]:
        monkeypatch.delenv(key)
    path = tmp_path / "tourno.env"
    path.write_text("TOURNO_LOG_LEVEL=error\nTOURNO_HEARTBEAT_INTERVAL=1\n")
    monkeypatch.setenv("TOURNO_ENV_FILE", str(path))
    monkeypatch.setenv("TOURNO_HEARTBEAT_INTERVAL", "3")
    s = Settings.from_env()
    assert s.log_level == "error"
    assert s.heartbeat_interval == 3.0


def test_bad_value_in_env_file_names_the_variable(tmp_path):
    path = tmp_path / "tourno.env"
    path.write_text("TOURNO_QUEUE_CONNECTION=kafka\n")
    with pytest.raises(ConfigError, match=r"^TOURNO_QUEUE_CONNECTION: .*'kafka'$"):
        Settings.from_env({"TOURNO_ENV_FILE": str(path)})


def test_missing_env_file_is_a_config_error(tmp_path):
    path = tmp_path / "nope.env"
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"TOURNO_ENV_FILE": str(path)})
    message = str(info.value)
    assert message.startswith("TOURNO_ENV_FILE: cannot read ")
    assert str(path) in message
    assert "No such file or directory" in message
    assert "\n" not in message


def test_directory_as_env_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"^TOURNO_ENV_FILE: cannot read .*Is a directory"):
        read_env_file(tmp_path)


def test_env_file_that_is_not_utf8_is_a_config_error(tmp_path):
    path = tmp_path / "latin1.env"
    path.write_bytes("TOURNO_LOG_LEVEL=info # café\n".encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"TOURNO_ENV_FILE": str(path)})
    message = str(info.value)
    assert message.startswith("TOURNO_ENV_FILE: ")
    assert str(path) in message
    assert "UTF-8" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("content", "lineno", "shown"),
    [
        ("TOURNO_LOG_LEVEL=info\njust some words\n", 2, "just some words"),
        ("# header\n\n=value\n", 3, "=value"),
        ("TOURNO-LOG-LEVEL=info\n", 1, "TOURNO-LOG-LEVEL=info"),
        ("export\n", 1, "export"),
    ],
)
def test_malformed_env_file_line_is_named(tmp_path, content, lineno, shown):
    path = tmp_path / "tourno.env"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"TOURNO_ENV_FILE": str(path)})
    message = str(info.value)
    assert message.startswith("TOURNO_ENV_FILE: ")
    assert str(path) in message
    assert f"line {lineno} " in message
    assert repr(shown) in message
    assert "\n" not in message


# -- passwords ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://u:secret@h/db", "postgresql://u:***@h/db"),
        (
            "postgres+pool://tourno:p@ss:w0rd@db.example:5432/tourno",
            "postgres+pool://tourno:***@db.example:5432/tourno",
        ),
        ("redis://:secret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgresql://h/db", "postgresql://h/db"),
        ("sqlite:///var/lib/tourno.db", "sqlite:///var/lib/tourno.db"),
        ("not a url", "not a url"),
    ],
)
def test_mask_password(url, masked):
    assert mask_password(url) == masked


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        # playhouse.db_url passes query parameters to the driver, a password too.
        (
            "postgresql://u@h/db?sslmode=require&password=secret",
            "postgresql://u@h/db?sslmode=require&password=***",
        ),
        ("postgresql://h/db?PASSWORD=secret&x", "postgresql://h/db?PASSWORD=***&x"),
        # An "@" in the query is not the end of the credentials.
        (
            "postgresql://u:secret@h/db?application_name=a@b",
            "postgresql://u:***@h/db?application_name=a@b",
        ),
    ],
)
def test_mask_password_in_query_string(url, masked):
    assert mask_password(url) == masked


def test_describe_masks_every_url():
    s = Settings.from_mapping(
        {
            "TOURNO_DATABASE_URL": "postgresql://u:dbsecret@h/db",
            "TOURNO_REDIS_URL": "redis://:redissecret@cache:6379/0",
            "TOURNO_IMPORTS": "a.b,c",
        }
    )
    rows = dict(s.describe())
    expected = {
        "TOURNO_DATABASE_URL": "postgresql://u:***@h/db",
        "TOURNO_QUEUE_CONNECTION": "database",
        "TOURNO_REDIS_URL": "redis://:***@cache:6379/0",
        "TOURNO_IMPORTS": "a.b,c",
        "TOURNO_LOG_LEVEL": "info",
        "TOURNO_HEARTBEAT_INTERVAL": "5.0",
        "TOURNO_WORKER_STALE_AFTER": "30.0",
    }
    assert {name: rows[name] for name in expected} == expected
    # One row per setting, none left out.
    assert set(rows) == {
        "TOURNO_" + f.name.upper() for f in dataclasses.fields(Settings) if f.name != "source"
    }
    assert "secret" not in repr(s.describe())


@pytest.mark.parametrize(
    ("raw", "on"), [("1", True), ("on", True), ("TRUE", True), ("0", False), ("off", False)]
)
def test_queue_metrics_switch(raw, on):
    assert Settings.from_mapping({"TOURNO_QUEUE_METRICS": raw}).queue_metrics is on


def test_metrics_settings_and_the_token_is_masked():
    token = "a-metrics-token-0123456789"
    s = Settings.from_mapping({"TOURNO_METRICS_RETENTION_DAYS": "0.5", "TOURNO_METRICS_TOKEN": f" {token} "})
    assert (s.metrics_retention_days, s.metrics_token) == (0.5, token)
    assert dict(s.describe())["TOURNO_METRICS_TOKEN"] == "***"
    assert token not in repr(s.describe())


def test_every_setting_has_exactly_one_parser():
    from dataclasses import fields

    from tourno.config import PARSERS

    assert {k.lower() for k in PARSERS} == {f.name for f in fields(Settings)} - {"source"}
