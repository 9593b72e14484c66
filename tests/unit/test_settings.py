"""Settings: sources and their precedence, validation, and secret-free error messages."""

from __future__ import annotations

import base64
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from config import ConfigError, Settings, load_settings

KEY_A = base64.urlsafe_b64encode(bytes(range(32))).decode()
KEY_B = base64.urlsafe_b64encode(bytes(range(100, 132))).decode()
DB_PASSWORD = "Pg-Passw0rd-Do-Not-Leak"
DB_URL = f"postgresql://app:{DB_PASSWORD}@db.internal:5432/calendar"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Isolate each test from IW_* variables of the developer's shell."""
    for name in list(os.environ):
        if name.upper().startswith("IW_"):
            monkeypatch.delenv(name)
    yield


def config_error(**overrides: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(**overrides)
    message = str(info.value)
    assert "\n" not in message
    # The ValidationError (which carries inputs) must not ride along in tracebacks.
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__
    return message


def test_defaults() -> None:
    settings = load_settings()
    assert settings.database_url is None
    assert settings.redis_url is None
    assert settings.db_schema == "integration_worker"
    assert settings.log_level == "INFO"
    assert settings.log_format == "json"
    assert settings.encryption_keys == {}
    assert settings.encryption_key_id is None
    assert settings.replica_id == f"{socket.gethostname()}-{os.getpid()}"
    assert settings.shard_count == 256
    assert (settings.monitor_enabled, settings.monitor_host, settings.monitor_port) == (
        True,
        "127.0.0.1",
        20101,
    )
    assert (settings.monitor_webui_port, settings.monitor_console_port) == (20102, 20103)
    assert settings.mailbox_capacity == 1000
    assert settings.restart_max == 5
    assert settings.restart_period_s == 60.0
    assert settings.restart_backoff_initial_s == 0.5
    assert settings.restart_backoff_max_s == 30.0
    assert settings.shutdown_timeout_s == 10.0
    assert settings.embedded_dir is None


def test_env_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("IW_DATABASE_URL", DB_URL)
    monkeypatch.setenv("IW_SHARD_COUNT", "16")
    monkeypatch.setenv("IW_LOG_LEVEL", "debug")
    monkeypatch.setenv("IW_LOG_FORMAT", "console")
    monkeypatch.setenv("IW_MONITOR_ENABLED", "false")
    monkeypatch.setenv("IW_EMBEDDED_DIR", str(tmp_path))
    monkeypatch.setenv("IW_ENCRYPTION_KEYS", f'{{"k1": "{KEY_A}", "k2": "{KEY_B}"}}')
    monkeypatch.setenv("IW_ENCRYPTION_KEY_ID", "k2")
    monkeypatch.setenv("SHARD_COUNT", "3")  # no prefix: ignored

    settings = load_settings()

    assert settings.database_url is not None
    assert settings.database_url.get_secret_value() == DB_URL
    assert settings.shard_count == 16
    assert settings.log_level == "DEBUG"
    assert settings.log_format == "console"
    assert settings.monitor_enabled is False
    assert settings.embedded_dir == tmp_path
    assert settings.keyring_material() == (
        "k2",
        {"k1": bytes(range(32)), "k2": bytes(range(100, 132))},
    )


def test_toml_file_with_env_and_kwargs_precedence(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config_file = tmp_path / "worker.toml"
    config_file.write_text(
        "\n".join(
            [
                'db_schema = "tenant_a"',
                "shard_count = 8",
                "mailbox_capacity = 50",
                "restart_max = 2",
                'encryption_key_id = "k1"',
                "[encryption_keys]",
                f'k1 = "{KEY_A}"',
            ]
        )
    )
    monkeypatch.setenv("IW_CONFIG_FILE", str(config_file))
    monkeypatch.setenv("IW_SHARD_COUNT", "32")
    monkeypatch.setenv("IW_MAILBOX_CAPACITY", "70")

    settings = load_settings(mailbox_capacity=90)

    assert settings.db_schema == "tenant_a"  # file over default
    assert settings.restart_max == 2
    assert settings.shard_count == 32  # env over file
    assert settings.mailbox_capacity == 90  # init kwargs over env
    assert settings.keyring_material() == ("k1", {"k1": bytes(range(32))})


def test_missing_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("IW_CONFIG_FILE", str(tmp_path / "absent.toml"))
    assert config_error().startswith("invalid configuration: IW_CONFIG_FILE: no such file")


def test_malformed_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config_file = tmp_path / "bad.toml"
    config_file.write_text(f'database_url = "{DB_URL}\nshard_count = ')
    monkeypatch.setenv("IW_CONFIG_FILE", str(config_file))
    message = config_error()
    assert message.startswith("invalid configuration: IW_CONFIG_FILE:")
    assert DB_PASSWORD not in message


def test_unknown_key_in_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config_file = tmp_path / "typo.toml"
    config_file.write_text("shard_cuont = 4\n")
    monkeypatch.setenv("IW_CONFIG_FILE", str(config_file))
    assert "unknown setting 'shard_cuont'" in config_error()


@pytest.mark.parametrize(
    ("env", "value", "expected"),
    [
        (
            "IW_SHARD_COUNT",
            "0",
            "invalid configuration: IW_SHARD_COUNT: Input should be greater than or equal to 1",
        ),
        ("IW_SHARD_COUNT", "65537", "IW_SHARD_COUNT: Input should be less than or equal to 65536"),
        ("IW_SHARD_COUNT", "many", "IW_SHARD_COUNT: Input should be a valid integer"),
        ("IW_MAILBOX_CAPACITY", "0", "IW_MAILBOX_CAPACITY: Input should be greater than or equal"),
        ("IW_MONITOR_PORT", "70000", "IW_MONITOR_PORT: Input should be less than or equal"),
        ("IW_LOG_LEVEL", "verbose", "IW_LOG_LEVEL: Input should be 'DEBUG', 'INFO'"),
        ("IW_LOG_FORMAT", "xml", "IW_LOG_FORMAT: Input should be 'json' or 'console'"),
        ("IW_RESTART_PERIOD_S", "0", "IW_RESTART_PERIOD_S: Input should be greater than 0"),
        ("IW_RESTART_BACKOFF_MAX_S", "0.1", "IW_RESTART_BACKOFF_MAX_S: must be >="),
        ("IW_ENCRYPTION_KEYS", "{not json", "IW_ENCRYPTION_KEYS: value is not valid JSON"),
    ],
)
def test_invalid_values_name_the_env_var(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(env, value)
    assert expected in config_error()


def test_several_errors_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IW_SHARD_COUNT", "0")
    monkeypatch.setenv("IW_DB_SCHEMA", "Bad")
    message = config_error()
    assert "IW_SHARD_COUNT:" in message
    assert "IW_DB_SCHEMA:" in message


@pytest.mark.parametrize("schema", ["integration_worker", "_private", "a", "s" + "x" * 62])
def test_schema_identifier_accepted(schema: str) -> None:
    assert load_settings(db_schema=schema).db_schema == schema


@pytest.mark.parametrize(
    "schema", ["Public", "1abc", "a-b", "", "x" * 64, 'x"; drop table y; --', "naïve"]
)
def test_schema_identifier_rejected(schema: str) -> None:
    assert "IW_DB_SCHEMA: must be a lowercase SQL identifier" in config_error(db_schema=schema)


def test_bad_base64_key_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    bad_key = "not*base64*at-all-but-very-secret-material"
    monkeypatch.setenv("IW_ENCRYPTION_KEYS", f'{{"k1": "{bad_key}"}}')
    monkeypatch.setenv("IW_ENCRYPTION_KEY_ID", "k1")
    message = config_error()
    assert (
        message == "invalid configuration: IW_ENCRYPTION_KEYS: key 'k1' is not valid urlsafe base64"
    )
    assert bad_key not in message
    assert "secret-material" not in message


def test_wrong_length_key_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    short_key = base64.urlsafe_b64encode(b"sixteen byte key").decode()
    monkeypatch.setenv("IW_ENCRYPTION_KEYS", f'{{"k1": "{short_key}"}}')
    monkeypatch.setenv("IW_ENCRYPTION_KEY_ID", "k1")
    message = config_error()
    assert "IW_ENCRYPTION_KEYS" in message
    assert "must decode to exactly 32 bytes, got 16" in message
    assert short_key not in message
    assert short_key.rstrip("=") not in message


def test_unpadded_key_is_accepted() -> None:
    settings = load_settings(encryption_keys={"k1": KEY_A.rstrip("=")}, encryption_key_id="k1")
    assert settings.keyring_material()[1]["k1"] == bytes(range(32))


def test_keys_without_active_id() -> None:
    message = config_error(encryption_keys={"k1": KEY_A})
    assert "IW_ENCRYPTION_KEY_ID: required when IW_ENCRYPTION_KEYS is set" in message
    assert KEY_A not in message


def test_active_id_not_among_keys() -> None:
    message = config_error(encryption_keys={"k1": KEY_A}, encryption_key_id="k9")
    assert "IW_ENCRYPTION_KEY_ID: 'k9' is not a key of IW_ENCRYPTION_KEYS" in message


def test_active_id_without_keys() -> None:
    assert "IW_ENCRYPTION_KEY_ID" in config_error(encryption_key_id="k1")


def test_keyring_material_without_keys() -> None:
    with pytest.raises(ConfigError, match="no encryption key configured"):
        load_settings().keyring_material()


def test_secrets_hidden_in_repr() -> None:
    settings = load_settings(
        database_url=DB_URL,
        redis_url="redis://:Redis-Secret-Value@cache:6379/0",
        encryption_keys={"k1": KEY_A},
        encryption_key_id="k1",
    )
    for text in (repr(settings), str(settings), repr(settings.model_dump())):
        assert DB_PASSWORD not in text
        assert "Redis-Secret-Value" not in text
        assert KEY_A not in text


def test_secret_values_for_redactor() -> None:
    settings: Settings = load_settings(
        database_url="postgresql://app:p%40ss-w0rd-long@db/x",
        encryption_keys={"k1": KEY_A},
        encryption_key_id="k1",
    )
    values = settings.secret_values()
    assert KEY_A in values
    assert "p%40ss-w0rd-long" in values
    assert "p@ss-w0rd-long" in values


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "monitor.internal"])
def test_the_monitor_listens_beyond_loopback_only_when_allowed(host: str) -> None:
    # Before: IW_MONITOR_HOST=0.0.0.0 was taken silently (an unauthenticated Python console).
    with pytest.raises(ConfigError) as refused:
        load_settings(monitor_host=host)
    assert "IW_MONITOR_HOST" in str(refused.value) and "MONITOR_ALLOW_REMOTE" in str(refused.value)
    assert load_settings(monitor_host=host, monitor_allow_remote=True).monitor_host == host
    for local in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert load_settings(monitor_host=local).monitor_host == local
