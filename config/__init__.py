"""Configuration: typed settings (`load_settings`) and redacting structured logging."""

from config.logs import bind_log_context, configure_logging, log_context
from config.redact import REDACTED, redact_text, redact_value, register_secret, register_secrets
from config.settings import ConfigError, Settings, load_settings

__all__ = [
    "REDACTED",
    "ConfigError",
    "Settings",
    "bind_log_context",
    "configure_logging",
    "load_settings",
    "log_context",
    "redact_text",
    "redact_value",
    "register_secret",
    "register_secrets",
]
