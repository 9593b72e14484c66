"""Redaction of secrets from log events: pure functions, no I/O, no logging setup.

Invariants:
- `redact_event` never raises and never mutates the caller's objects; if redaction itself fails
  the event is replaced by a fixed placeholder.
- Secret keys: a key is normalised (camelCase -> snake_case, lowercase, "-" -> "_"); it names a
  secret if it contains one of `SECRET_KEY_PARTS`, unless it ends in one of `SAFE_KEY_SUFFIXES`
  (metadata such as ``token_expires_at``, ``tokens_count``, ``credential_id``). The whole value
  under a secret key becomes "[REDACTED]"; None and booleans are kept (they only say absent or
  present). Every other string is still scrubbed for secret-shaped text and registered secrets.
- Registered secrets are found by cutting text into token-like runs and looking each run up in a
  set, so the cost is linear in the text, not in the number of secrets. A registered secret is
  found where it stands as a whole token: bounded by spaces, quotes, "=", ":", "&", "/",
  brackets and the like (edge punctuation such as a trailing "." or "=" padding is ignored).
- Two kinds of registration: *pinned* secrets (the configuration's, API tokens: few, known at
  start) are never evicted and may hold any characters; *learned* secrets (tokens met at run
  time: credentials, grants) are token-shaped only (anything else is ignored, so no text a
  client sends can grow the per-line cost) and the oldest is evicted past ``_MAX_SECRETS``. A
  flood of learned values can therefore never push a configured secret out.
- Keys of an event are never rewritten by value (a registered word must not turn every key that
  spells it into "[REDACTED]"); a secret-named key hides its value.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from datetime import date, datetime, time
from functools import lru_cache
from typing import Any
from uuid import UUID

from pydantic import SecretBytes, SecretStr
from structlog.types import EventDict, WrappedLogger

__all__ = [
    "REDACTED",
    "SAFE_KEY_SUFFIXES",
    "SECRET_KEY_PARTS",
    "clear_registered_secrets",
    "is_secret_key",
    "redact_event",
    "redact_text",
    "redact_value",
    "register_secret",
    "register_secrets",
    "registry_size",
]

REDACTED = "[REDACTED]"

SECRET_KEY_PARTS = (
    "token",  # also access_token, refresh_token, id_token
    "secret",  # also client_secret
    "password",
    "passwd",
    "passphrase",
    "authorization",
    "api_key",
    "apikey",
    "refresh",
    "cookie",
    "private_key",
    "credential",
    "encryption_key",
    "clientstate",
    "client_state",
)
SAFE_KEY_SUFFIXES = (
    "_at",
    "_expires",
    "_expiry",
    "_expires_in",
    "_ttl",
    "_count",
    "_id",
    "_ids",
    "_type",
    "_uri",
    "_url",
    "_endpoint",
    "_len",
    "_length",
    "_version",
    "_s",
    "_ms",
    "_seconds",
    # Pagination/sync cursors (Google nextSyncToken, Graph skiptoken): opaque but not credentials.
    "sync_token",
    "page_token",
    "delta_token",
    "skip_token",
    "skiptoken",
    "deltatoken",
)
# Names that are secret only as URL/form/text parameters, not as structured event keys.
_SECRET_PARAMS = frozenset({"code_verifier", "assertion", "client_assertion", "signature", "sig"})
# Secret only when long enough: "code=" is an OAuth authorization code when long (short values
# are status codes); "state=" is the connect flow's state (43 characters) when long, an actor's
# or an item's state ("idle", "dead_letter") when short.
_WEAK_SECRET_PARAMS = {"code": 8, "state": 32}

_MIN_SECRET_LEN = 8
_MAX_SECRETS = 100_000
_MAX_LEARNED_LEN = 8192  # provider tokens are a few KiB at most
_MAX_ODD_SECRETS = 256
_MAX_DEPTH = 16
# orjson rejects integers outside 64 bits.
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1

# --------------------------------------------------------------------------- key rule

_CAMEL_RE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


@lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """True when the whole value under ``key`` must be hidden (rule in the module docstring)."""
    norm = _CAMEL_RE.sub("_", key).lower().replace("-", "_")
    if not any(part in norm for part in SECRET_KEY_PARTS):
        return False
    return not norm.endswith(SAFE_KEY_SUFFIXES)


def _is_secret_param(key: str, value: str) -> bool:
    """Key rule for ``key=value`` pairs found inside free text."""
    if value in ("null", "None", "true", "false", "True", "False", REDACTED):
        return False
    if is_secret_key(key):
        return True
    norm = key.lower().replace("-", "_")
    if norm in _SECRET_PARAMS:
        return True
    weak = _WEAK_SECRET_PARAMS.get(norm)
    return weak is not None and len(value) >= weak


# --------------------------------------------------------------------------- text patterns

_T = r"A-Za-z0-9\-_.~+/!*$"  # characters of opaque tokens (base64url, MSA "!*$" included)

_HEADER_RE = re.compile(
    r"(?im)\b(proxy-authorization|authorization|set-cookie|cookie|x-api-key|api-key"
    r"|x-goog-api-key)(\s*:\s*)(?=\S)[^\r\n]+"
)
_URL_USERINFO_RE = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s:/?#@'\"<>]*):[^\s/?#'\"<>]+@")
_BEARER_RE = re.compile(rf"(?i)\b(bearer)(\s+)[{_T}]+=*")
_BASIC_RE = re.compile(r"(?i)\b(basic)(\s+)[A-Za-z0-9+/]{8,}={0,2}")
# (needle, pattern): the cheap substring test skips the regex for most strings.
_SHAPES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (needle, re.compile(pattern))
    for needle, pattern in (
        (
            "eyJ",
            r"\beyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]*(?:\.[A-Za-z0-9_\-]*){0,2}",
        ),
        ("ya29.", rf"\bya29\.[{_T}]+"),  # Google access token
        ("1//", r"\b1//[A-Za-z0-9_\-]{10,}"),  # Google refresh token
        ("4/0", r"(?<![\w/])4/0[A-Za-z0-9_\-]{10,}"),  # Google authorization code
        ("M.", rf"\bM\.(?:C\d+|R\d)_[{_T}]+=*"),  # Microsoft account refresh token
        (".A", rf"\b[01]\.A[{_T}]{{40,}}=*"),  # Entra ID opaque refresh token
        ("Ew", r"\bEw[A-Za-z0-9+/!*$_\-]{60,}=*"),  # Microsoft account access token
    )
)
# Lowercased substrings that must occur for a secret-named key=value pair to be possible.
_KV_TRIGGERS = (*SECRET_KEY_PARTS, *_SECRET_PARAMS, *_WEAK_SECRET_PARAMS)
# A key, bare or quoted (also \"escaped\" as in JSON inside JSON), then ":" or "=".
_KEY_RE = re.compile(r"""(?<![\w\-])(\\?["']|)([A-Za-z_][\w\-]{0,63})\1(\s*[:=]\s*)""")
# The value after it: quoted (an unterminated quote runs to the end), escaped-quoted, or bare.
_VALUE_RE = re.compile(
    r"""(?P<q>["'])(?:\\.|(?!(?P=q))[^\\])*(?:(?P=q)|$)"""
    r"""|(?P<eq>\\["'])(?:(?!(?P=eq)).)*(?:(?P=eq)|$)"""
    r"""|[^\s,;&{}\[\]()'"<>\\]+""",
    re.DOTALL,
)
# Registered secrets are compared by "core": a token-like run without its edge punctuation.
# Cores are extracted once per text by a regex (C speed) and looked up in a set.
_NS = r"A-Za-z0-9\-_.~+!*$"  # token characters except "/"
# Scanning left to right, each match is the whole core of one run: it starts at the run's first
# alphanumeric and the greedy middle backtracks to the run's last alphanumeric.
_CORE_RE = re.compile(rf"[A-Za-z0-9](?:[{_NS}]*[A-Za-z0-9])?")
_CORE_SLASH_RE = re.compile(rf"[A-Za-z0-9](?:[{_NS}/]*[A-Za-z0-9])?")
_PLAIN_SECRET_RE = re.compile(rf"[{_NS}/=]+")
_EDGE_CHARS = "-_.~+!*$/="


def _redact_kv(text: str) -> str:
    """Hide values of secret-named ``key: value`` / ``key=value`` pairs, nested ones included."""
    out: list[str] = []
    pos = 0
    while (key_match := _KEY_RE.search(text, pos)) is not None:
        value_match = _VALUE_RE.match(text, key_match.end())
        if value_match is None:
            out.append(text[pos : key_match.end()])
            pos = key_match.end()
            continue
        raw = value_match.group()
        quote = value_match.group("q") or value_match.group("eq") or ""
        inner = raw[len(quote) :]
        if quote and inner.endswith(quote):
            inner = inner[: -len(quote)]
        if _is_secret_param(key_match.group(2), inner):
            out.append(text[pos : key_match.end()])
            out.append(f"{quote}{REDACTED}{quote}")
            pos = value_match.end()
        else:
            # Resume right after the separator so pairs nested in the value are checked too.
            out.append(text[pos : key_match.end()])
            pos = key_match.end()
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)


# --------------------------------------------------------------------------- registered secrets


class _SecretRegistry:
    """Bounded, thread-safe set of known secret values (insertion-ordered dicts act as LRU sets)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Read without the lock: dict membership tests are atomic in CPython.
        self.cores: dict[str, None] = {}  # learned: an LRU set
        self.pinned: set[str] = set()  # configured: never evicted
        self.has_slash = False  # some core contains "/", so slash-joined runs need a look too
        self._odd: dict[str, None] = {}
        self._odd_pattern: re.Pattern[str] | None = None
        self._odd_dirty = False

    @staticmethod
    def _remember(store: dict[str, None], value: str, cap: int) -> None:
        store.pop(value, None)
        store[value] = None
        while len(store) > cap:
            del store[next(iter(store))]

    def add(self, value: str, *, pinned: bool) -> None:
        value = value.strip()
        core = value.strip(_EDGE_CHARS)
        if len(core) < _MIN_SECRET_LEN:
            return
        plain = _PLAIN_SECRET_RE.fullmatch(value) is not None and "=" not in core
        if not pinned and (not plain or len(core) > _MAX_LEARNED_LEN):
            return  # not token-shaped: no secret we learn looks like this
        with self._lock:
            if plain and pinned:
                self.pinned.add(core)
            elif plain:
                self._remember(self.cores, core, _MAX_SECRETS)
            else:
                # Rare (configured passwords with punctuation): one alternation regex.
                self._remember(self._odd, value, _MAX_ODD_SECRETS)
                self._odd_dirty = True
            self.has_slash = self.has_slash or (plain and "/" in core)

    def known(self, core: str) -> bool:
        return core in self.pinned or core in self.cores

    def any_known(self, cores: list[str]) -> bool:
        return not (self.pinned.isdisjoint(cores) and self.cores.keys().isdisjoint(cores))

    def clear(self) -> None:
        with self._lock:
            self.cores.clear()
            self.pinned.clear()
            self.has_slash = False
            self._odd.clear()
            self._odd_pattern = None
            self._odd_dirty = False

    def odd_pattern(self) -> re.Pattern[str] | None:
        if self._odd_dirty:
            with self._lock:
                ordered = sorted(self._odd, key=len, reverse=True)
                # An empty alternation would match everywhere, hence the None.
                alternation = "|".join(map(re.escape, ordered))
                self._odd_pattern = re.compile(alternation) if ordered else None
                self._odd_dirty = False
        return self._odd_pattern


_registry = _SecretRegistry()


def register_secret(value: str, *, pinned: bool = False) -> None:
    """Make ``value`` unloggable from now on; values shorter than 8 characters are ignored.

    ``pinned``: a configured secret, never evicted, any characters; otherwise a secret met at
    run time, kept only when token-shaped (see the module docstring)."""
    _registry.add(value, pinned=pinned)


def register_secrets(values: Iterable[str], *, pinned: bool = False) -> None:
    """Register several secrets (see `register_secret`)."""
    for value in values:
        _registry.add(value, pinned=pinned)


def registry_size() -> int:
    """How many secrets are registered (pinned, learned and odd ones), for tests and metrics."""
    return len(_registry.pinned) + len(_registry.cores) + len(_registry._odd)


def clear_registered_secrets() -> None:
    """Forget all registered secrets (for tests)."""
    _registry.clear()


def _hide_core(match: re.Match[str]) -> str:
    core = match.group()
    return REDACTED if _registry.known(core) else core


def _redact_registered(text: str) -> str:
    registry = _registry
    # The common case (no hit) stays in C: findall plus set-disjointness tests.
    if (registry.cores or registry.pinned) and registry.any_known(_CORE_RE.findall(text)):
        text = _CORE_RE.sub(_hide_core, text)
    if registry.has_slash and "/" in text and registry.any_known(_CORE_SLASH_RE.findall(text)):
        text = _CORE_SLASH_RE.sub(_hide_core, text)
    pattern = _registry.odd_pattern()
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    return text


# --------------------------------------------------------------------------- redaction


def redact_text(text: str) -> str:
    """Hide secret-shaped substrings and registered secrets in ``text``."""
    if len(text) < _MIN_SECRET_LEN:
        return text
    # Substring pre-checks keep the common case (nothing secret-like) to a few C-level scans.
    low = text.lower().replace("-", "_")
    if "authorization" in low or "cookie" in low or "api_key" in low:
        text = _HEADER_RE.sub(rf"\1\2{REDACTED}", text)
    if "://" in text and "@" in text:
        text = _URL_USERINFO_RE.sub(rf"\1:{REDACTED}@", text)
    if "bearer" in low:
        text = _BEARER_RE.sub(rf"\1\2{REDACTED}", text)
    if "basic" in low:
        text = _BASIC_RE.sub(rf"\1\2{REDACTED}", text)
    if ("=" in text or ":" in text) and any(word in low for word in _KV_TRIGGERS):
        text = _redact_kv(text)
    for needle, pattern in _SHAPES:
        if needle in text:
            text = pattern.sub(REDACTED, text)
    return _redact_registered(text)


def redact_value(value: object, _depth: int = 0) -> object:
    """A JSON-friendly copy of ``value`` with every secret hidden; containers are copied."""
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        return value if _INT_MIN <= value <= _INT_MAX else str(value)
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, SecretStr | SecretBytes):
        return REDACTED
    if _depth >= _MAX_DEPTH:
        return "[TRUNCATED]"
    if isinstance(value, Mapping):
        return _redact_mapping(value, _depth + 1)
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(item, _depth + 1) for item in value]
    if isinstance(value, datetime | date | time | UUID):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return redact_text(bytes(value).decode("utf-8", "replace"))
    try:
        text = (
            f"{type(value).__name__}: {value}" if isinstance(value, BaseException) else repr(value)
        )
    except Exception:
        return "[UNREPRESENTABLE]"
    return redact_text(text)


def _redact_mapping(mapping: Mapping[Any, object], depth: int) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in mapping.items():
        name = key if isinstance(key, str) else str(key)
        # The key as it is: keys are our code's names, and rewriting them by value would let a
        # registered word blank every key that spells it.
        if is_secret_key(name) and value is not None and not isinstance(value, bool):
            out[name] = REDACTED
        else:
            out[name] = redact_value(value, depth)
    return out


def redact_event(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: return a redacted copy of the event; never raises."""
    try:
        return _redact_mapping(event_dict, 0)
    except Exception:
        safe: EventDict = {"event": "[REDACTION FAILED]"}
        for key in ("timestamp", "level", "logger"):
            if isinstance(event_dict.get(key), str):
                safe[key] = event_dict[key]
        return safe
