"""Service settings: init kwargs > ``IW_*`` env vars > TOML file (``IW_CONFIG_FILE``) > defaults.

Invariants: a bad configuration surfaces only as `ConfigError`, whose message names env vars and
never contains an input value; secret fields are `SecretStr` and never show in reprs.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import socket
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings.exceptions import SettingsError

__all__ = ["ENV_PREFIX", "ConfigError", "Settings", "load_settings"]

ENV_PREFIX = "IW_"
CONFIG_FILE_ENV = f"{ENV_PREFIX}CONFIG_FILE"

_SCHEMA_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# Key ids are stored next to ciphertexts, so keep them short and boring.
_KEY_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_AES_KEY_BYTES = 32
_MIN_STATE_SECRET_LEN = 32
_SHA256_HEX_RE = re.compile(r"[0-9a-fA-F]{64}")
_SETTINGS_ERROR_FIELD_RE = re.compile(r'field "([A-Za-z0-9_]+)"')


class ConfigError(Exception):
    """The configuration is invalid; the message is safe to print and to log."""


def _default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _decode_aes_key(text: str) -> bytes:
    """Decode urlsafe base64 strictly (padding optional); raise ValueError unless 32 bytes."""
    padded = text.strip() + "=" * (-len(text.strip()) % 4)
    try:
        raw = base64.b64decode(padded, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not valid urlsafe base64") from None
    if len(raw) != _AES_KEY_BYTES:
        raise ValueError(f"must decode to exactly {_AES_KEY_BYTES} bytes, got {len(raw)}")
    return raw


def _is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (a loopback address or ``localhost``)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


class Settings(BaseSettings):
    """All runtime configuration of one worker replica."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        # ``IW_PUBLIC_BASE_URL=`` (as compose files and manifests write an unused one) means
        # unset, not the empty string.
        env_ignore_empty=True,
        extra="forbid",
        hide_input_in_errors=True,
    )

    database_url: SecretStr | None = None
    redis_url: SecretStr | None = None
    db_schema: str = "integration_worker"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"
    encryption_keys: dict[str, SecretStr] = Field(default_factory=dict)
    # validate_default so the "keys given but no active id" rule runs when the id is omitted.
    encryption_key_id: str | None = Field(default=None, validate_default=True)
    replica_id: str = Field(default_factory=_default_replica_id, min_length=1, max_length=200)
    shard_count: int = Field(default=256, ge=1, le=65536)
    monitor_enabled: bool = True
    # aiomonitor is an unauthenticated Python console: listening beyond loopback needs this.
    monitor_allow_remote: bool = False
    monitor_host: str = Field(default="127.0.0.1", validate_default=True)
    monitor_port: int = Field(default=20101, ge=0, le=65535)  # aiomonitor's telnet port
    monitor_webui_port: int = Field(default=20102, ge=0, le=65535)  # aiomonitor's defaults
    monitor_console_port: int = Field(default=20103, ge=0, le=65535)
    # The replica's ops server: /healthz, /readyz, /metrics (docs/metrics.md); 0: any free port.
    ops_enabled: bool = True
    ops_host: str = "127.0.0.1"
    ops_port: int = Field(default=9108, ge=0, le=65535)
    mailbox_capacity: int = Field(default=1000, ge=1)
    restart_max: int = Field(default=5, ge=0)
    restart_period_s: float = Field(default=60.0, gt=0)
    restart_backoff_initial_s: float = Field(default=0.5, ge=0)
    restart_backoff_max_s: float = Field(default=30.0, ge=0)
    shutdown_timeout_s: float = Field(default=10.0, gt=0)
    embedded_dir: Path | None = None
    google_api_base_url: str = "https://www.googleapis.com/calendar/v3/"
    google_token_uri: str = "https://oauth2.googleapis.com/token"
    google_client_id: str | None = None
    google_client_secret: SecretStr | None = None
    microsoft_authority: str = "https://login.microsoftonline.com/common"
    microsoft_graph_base_url: str = "https://graph.microsoft.com/v1.0/"
    microsoft_graph_beta_base_url: str = "https://graph.microsoft.com/beta/"
    microsoft_client_id: str | None = None
    microsoft_client_secret: SecretStr | None = None
    microsoft_scopes: list[str] = Field(
        default_factory=lambda: ["https://graph.microsoft.com/Calendars.ReadWrite"]
    )
    # Non-primary calendars sync through calendarView delta, which Graph documents only in beta.
    microsoft_sync_other_calendars: bool = False
    # OAuth connect flow (docs/oauth-connect.md), off by default: GET /oauth/{provider}/start and
    # /callback sign a user in at the provider and create the account. Our public base URL (the
    # provider redirects to <base>/oauth/<provider>/callback, registered with the provider),
    # the HMAC key of the state cookie (required when enabled, at least 32 characters), how
    # long a started flow may take, and where the browser goes on success (None: JSON answer).
    oauth_connect_enabled: bool = False
    oauth_redirect_base_url: str | None = Field(default=None, validate_default=True)
    oauth_state_secret: SecretStr | None = Field(default=None, validate_default=True)
    # Shared with the host application: it signs the start tokens that alone may start the
    # flow, and we sign the results handed back (connect/start_token.py).
    oauth_start_secret: SecretStr | None = Field(default=None, validate_default=True)
    oauth_state_max_age_s: float = Field(default=600.0, gt=0)
    oauth_success_redirect_url: str | None = None
    google_auth_uri: str = "https://accounts.google.com/o/oauth2/v2/auth"
    # openid + email: the id_token's verified email names the account.
    google_connect_scopes: list[str] = Field(
        default_factory=lambda: ["openid", "email", "https://www.googleapis.com/auth/calendar"]
    )
    # Extra CA certificates to trust (a test identity server / Graph emulator); system CAs stay.
    ca_bundle: Path | None = None
    gateway_host: str = "127.0.0.1"  # the webhook gateway's listen address (behind a TLS proxy)
    gateway_port: int = Field(default=8080, ge=0, le=65535)
    gateway_max_body_bytes: int = Field(default=1 << 20, ge=1)  # larger bodies are refused (413)
    # The gateway as the providers reach it (HTTPS in production); None: no push, polling only.
    public_base_url: str | None = None
    # The admin HTTP API (``integration-worker api``, docs/admin-api.md): its listen address
    # and the hex SHA-256 of each accepted bearer token (``integration-worker api hash-token``
    # makes one), so no token is ever written in configuration. Empty: the API refuses to start.
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8082, ge=0, le=65535)
    api_token_hashes: list[str] = Field(default_factory=list)
    # The providers' request quotas, shared by every replica (token buckets in Redis): Google's
    # per project per minute, Graph's per app per mailbox per 10 minutes. Raise them only
    # where the provider raised them for the project (or for an emulator).
    google_requests_per_minute: int = Field(default=10_000, ge=1)
    microsoft_requests_per_10_minutes: int = Field(default=10_000, ge=1)
    # The internet-facing listeners (gateway, admin API): a request's headers, and its body,
    # must each arrive within this long; at most this many connections, and this many request
    # bodies being read at once (past it: 503, which providers retry).
    http_request_timeout_s: float = Field(default=10.0, gt=0)
    http_max_connections: int = Field(default=1024, ge=1)
    http_max_bodies_in_flight: int = Field(default=64, ge=1)
    # A provider's Retry-After is obeyed, within bounds: one answer blocks the shared budget of
    # every account for at most this long, and delays one account's retry at most this long
    # (an answer asking for a year would otherwise stop a whole provider for a year).
    rate_penalty_max_s: float = Field(default=60.0, gt=0)
    retry_after_max_s: float = Field(default=3600.0, gt=0)
    # A budget shared by accounts (Google's per project) slows everyone only when this many
    # distinct accounts were throttled within the window: one account's per-user quota is its
    # own business. The block lasts the Retry-After, or the penalty when none came.
    # How long a replaced push channel stays accepted by the gateway (late messages sent on it);
    # unset: each kind's redelivery horizon (Google 15 min, Graph 4 h).
    push_retired_grace_s: float | None = Field(default=None, gt=0)
    # A calendar its provider refuses to watch is polled at this cadence (push tells nothing).
    sync_unwatched_poll_s: float = Field(default=6 * 3600.0, gt=0)
    rate_shared_quorum: int = Field(default=3, ge=1)
    rate_shared_window_s: float = Field(default=60.0, gt=0)
    rate_shared_penalty_s: float = Field(default=10.0, gt=0)
    # Shard leases in Redis: a replica that has not renewed its lease for this long loses the
    # shard to another (it stops the shard's actors well before, see docs/shards.md).
    lease_ttl_s: float = Field(default=10.0, gt=0)
    # Syncs running at once in a replica (more wait their turn), so a takeover's hundreds of
    # first syncs queue instead of slowing each other and the lease keeper down.
    sync_concurrency: int = Field(default=64, ge=1)
    # Connections to Redis for the actors' traffic; more callers wait for a free one.
    redis_max_connections: int = Field(default=32, ge=1)
    # Actor start-ups after taking shards: this many at once, then this many per second.
    actor_start_burst: int = Field(default=200, ge=1)
    actor_start_rate_per_s: float = Field(default=1000.0, gt=0)
    # The sync window (days before and after now) and how often it is re-based by a full sync.
    sync_window_back_days: int = Field(default=30, ge=0)
    sync_window_ahead_days: int = Field(default=365, ge=1)
    sync_rebase_days: int = Field(default=7, ge=1)
    # The safety-net incremental sync of every account (jittered), covering lost notifications.
    sync_poll_s: float = Field(default=900.0, gt=0)
    # Backoff after a throttled or failed sync: first delay and cap.
    sync_retry_initial_s: float = Field(default=5.0, gt=0)
    sync_retry_max_s: float = Field(default=900.0, gt=0)
    # Outbox (docs/outbox.md): failed attempts of one item before it becomes a dead letter; how
    # long done and skipped items are kept; the due-items poll covering a missed notification.
    outbox_max_attempts: int = Field(default=10, ge=1)
    outbox_retention_days: int = Field(default=30, ge=1)
    outbox_poll_s: float = Field(default=60.0, gt=0)
    # Cluster-wide maintenance (docs/maintenance.md): the replica holding the maintenance lease
    # runs the daily cleanup and the hourly audit. Off: this replica never takes the lease.
    maintenance_enabled: bool = True
    # The lease's TTL (renewed at a third of it, like the shard leases), and how long a replica
    # that just took it waits before running a job (lets a starting replica settle).
    maintenance_lease_ttl_s: float = Field(default=30.0, gt=0)
    maintenance_start_delay_s: float = Field(default=60.0, ge=0)
    # The audit: a calendar not synced within this many sync_poll_s periods is stale (the
    # poll is jittered, so 1 would flag healthy accounts); a push channel lapsing sooner than
    # this margin counts as missing.
    maintenance_stale_factor: float = Field(default=2.0, gt=1)
    maintenance_channel_margin_s: float = Field(default=3600.0, ge=0)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Insert the optional TOML file below env vars; dotenv and secret dirs are not used."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = os.environ.get(CONFIG_FILE_ENV)
        if path:
            sources.append(_toml_source(settings_cls, Path(path)))
        return tuple(sources)

    @field_validator("db_schema")
    @classmethod
    def _check_schema(cls, value: str) -> str:
        if not _SCHEMA_RE.fullmatch(value):
            raise ValueError("must be a lowercase SQL identifier matching ^[a-z_][a-z0-9_]{0,62}$")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower_format(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("encryption_keys")
    @classmethod
    def _check_keys(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for key_id, secret in value.items():
            if not _KEY_ID_RE.fullmatch(key_id):
                raise ValueError("key ids must match [A-Za-z0-9_.-]{1,64}")
            try:
                _decode_aes_key(secret.get_secret_value())
            except ValueError as exc:
                # Name the key id (not secret) but never the key material.
                raise ValueError(f"key {key_id!r} {exc}") from None
        return value

    @field_validator("monitor_host")
    @classmethod
    def _check_monitor_host(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("monitor_allow_remote") or _is_loopback(value):
            return value
        raise ValueError(
            "aiomonitor has no authentication and runs code: it listens on loopback only"
            f" unless {ENV_PREFIX}MONITOR_ALLOW_REMOTE=true"
        )

    @field_validator("encryption_key_id")
    @classmethod
    def _check_active_key(cls, value: str | None, info: ValidationInfo) -> str | None:
        if "encryption_keys" not in info.data:
            return value  # keys already failed validation; that error is the useful one
        keys: dict[str, SecretStr] = info.data["encryption_keys"]
        if value is None:
            if keys:
                raise ValueError(f"required when {ENV_PREFIX}ENCRYPTION_KEYS is set")
            return None
        if value not in keys:
            raise ValueError(f"{value!r} is not a key of {ENV_PREFIX}ENCRYPTION_KEYS")
        return value

    @field_validator("oauth_state_secret", "oauth_start_secret")
    @classmethod
    def _check_oauth_connect(
        cls, value: SecretStr | None, info: ValidationInfo
    ) -> SecretStr | None:
        if not info.data.get("oauth_connect_enabled"):
            return value
        if value is None or len(value.get_secret_value()) < _MIN_STATE_SECRET_LEN:
            raise ValueError(
                f"at least {_MIN_STATE_SECRET_LEN} characters required when "
                f"{ENV_PREFIX}OAUTH_CONNECT_ENABLED is set"
            )
        return value

    @field_validator("oauth_redirect_base_url")
    @classmethod
    def _check_redirect_base(cls, value: str | None, info: ValidationInfo) -> str | None:
        if not info.data.get("oauth_connect_enabled"):
            return value
        if value is None or urlsplit(value).scheme not in ("http", "https"):
            raise ValueError(
                f"an http(s) URL required when {ENV_PREFIX}OAUTH_CONNECT_ENABLED is set"
            )
        return value.rstrip("/")

    @field_validator("api_token_hashes")
    @classmethod
    def _check_token_hashes(cls, value: list[str]) -> list[str]:
        for digest in value:
            if not _SHA256_HEX_RE.fullmatch(digest):
                raise ValueError("each entry must be a hex SHA-256 (64 hex digits)")
        return [digest.lower() for digest in value]

    @field_validator("restart_backoff_max_s")
    @classmethod
    def _check_backoff(cls, value: float, info: ValidationInfo) -> float:
        initial = info.data.get("restart_backoff_initial_s")
        if initial is not None and value < initial:
            raise ValueError(f"must be >= {ENV_PREFIX}RESTART_BACKOFF_INITIAL_S")
        return value

    def keyring_material(self) -> tuple[str, dict[str, bytes]]:
        """Return (active key id, decoded 32-byte keys); ConfigError when no key is configured."""
        if not self.encryption_keys or self.encryption_key_id is None:
            raise ConfigError(
                f"invalid configuration: {ENV_PREFIX}ENCRYPTION_KEYS: no encryption key configured"
            )
        keys = {k: _decode_aes_key(v.get_secret_value()) for k, v in self.encryption_keys.items()}
        return self.encryption_key_id, keys

    def secret_values(self) -> list[str]:
        """Every configured secret string, for registration with the log redactor."""
        values: list[str] = [v.get_secret_value() for v in self.encryption_keys.values()]
        for secret in (
            self.google_client_secret,
            self.microsoft_client_secret,
            self.oauth_state_secret,
            self.oauth_start_secret,
        ):
            if secret is not None:
                values.append(secret.get_secret_value())
        for url in (self.database_url, self.redis_url):
            if url is None:
                continue
            text = url.get_secret_value()
            values.append(text)
            password = _url_password(text)
            if password:
                values.extend(dict.fromkeys((password, unquote(password))))
        return values


def _url_password(url: str) -> str | None:
    """The raw (still percent-encoded) password of a URL, if any."""
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return None
    userinfo, sep, _ = netloc.rpartition("@")
    if not sep or ":" not in userinfo:
        return None
    return userinfo.split(":", 1)[1] or None


def _toml_source(settings_cls: type[BaseSettings], path: Path) -> TomlConfigSettingsSource:
    # pydantic-settings silently skips missing files; an explicitly named one must exist.
    if not path.is_file():
        raise ConfigError(f"invalid configuration: {CONFIG_FILE_ENV}: no such file: {path}")
    try:
        return TomlConfigSettingsSource(settings_cls, toml_file=path)
    except OSError as exc:
        raise ConfigError(
            f"invalid configuration: {CONFIG_FILE_ENV}: cannot read {path}: {exc.strerror}"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        # The decoder's message carries only a position, never file content.
        raise ConfigError(f"invalid configuration: {CONFIG_FILE_ENV}: {path}: {exc}") from None


def _env_name(loc: tuple[int | str, ...]) -> str:
    """Map an error location to the env var name users would set, e.g. ``IW_SHARD_COUNT``."""
    if not loc:
        return "settings"
    head = str(loc[0])
    if head not in Settings.model_fields:
        return f"unknown setting {head!r}"
    name = f"{ENV_PREFIX}{head.upper()}"
    rest = "".join(f"[{part}]" for part in loc[1:])
    return name + rest


def _describe(error: ValidationError) -> str:
    """One line listing each bad field; built from loc/msg only, so inputs never leak."""
    parts = []
    for item in error.errors(include_url=False, include_input=False, include_context=False):
        msg = str(item["msg"]).removeprefix("Value error, ")
        parts.append(f"{_env_name(tuple(item['loc']))}: {msg}")
    return "invalid configuration: " + "; ".join(parts)


def load_settings(**overrides: Any) -> Settings:
    """Build `Settings` from all sources; any problem becomes a single-line `ConfigError`."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        # "from None": the chained ValidationError would print input values in tracebacks.
        raise ConfigError(_describe(exc)) from None
    except SettingsError as exc:
        match = _SETTINGS_ERROR_FIELD_RE.search(str(exc))
        where = _env_name((match.group(1),)) if match else "settings"
        raise ConfigError(f"invalid configuration: {where}: value is not valid JSON") from None
