"""Graph webhook requests: batched change and lifecycle notifications, and the handshake.

Invariants:
- a notification request is JSON ``{"value": [...]}`` (providers.md B.2); anything else, or an
  item without ``subscriptionId``, raises ``InvalidNotification``; authenticity (clientState)
  is ``verify_notification``'s job, so every item keeps its ``clientState`` as ``token``;
- change notifications (created/updated/deleted) are ``CHANGED``; lifecycle events map to
  ``REAUTHORIZE`` (reauthorizationRequired), ``REMOVED`` (subscriptionRemoved) and ``RESYNC``
  (missed); a lifecycle event Graph adds later is ``CHANGED``: the worst a spurious CHANGED
  costs is one incremental sync, and the docs warn new lifecycle types may appear;
- change and lifecycle notifications may share one URL: the ``lifecycleEvent`` key tells
  them apart, so the client may point ``lifecycleNotificationUrl`` at the same address;
- the validation handshake answer is the *decoded* ``validationToken`` (an encoded echo
  fails validation).
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qs

import orjson

from providers.errors import InvalidNotification
from providers.models import Notification, NotificationKind

VALIDATION_TOKEN = "validationToken"

LIFECYCLE_KINDS: Mapping[str, NotificationKind] = {
    "reauthorizationrequired": NotificationKind.REAUTHORIZE,
    "subscriptionremoved": NotificationKind.REMOVED,
    "missed": NotificationKind.RESYNC,
}


def validation_token(query: Mapping[str, str] | str) -> str | None:
    """The decoded ``validationToken`` to echo as ``text/plain`` (200), or None when the
    request is not a handshake; ``query`` is a parsed mapping (already decoded, as
    aiohttp's ``request.query``) or the raw query string."""
    if isinstance(query, str):
        values = parse_qs(query.lstrip("?"), keep_blank_values=True).get(VALIDATION_TOKEN)
        token = values[0] if values else None
    else:
        token = query.get(VALIDATION_TOKEN)
    return token or None


def _item(entry: object) -> Notification:
    if not isinstance(entry, Mapping):
        raise InvalidNotification("notification is not a JSON object")
    subscription_id = entry.get("subscriptionId")
    if not isinstance(subscription_id, str) or not subscription_id:
        raise InvalidNotification("notification without subscriptionId")
    client_state = entry.get("clientState")
    if client_state is not None and not isinstance(client_state, str):
        raise InvalidNotification("notification clientState is not a string")
    lifecycle = entry.get("lifecycleEvent")
    if lifecycle is None:
        kind = NotificationKind.CHANGED
    elif isinstance(lifecycle, str):
        kind = LIFECYCLE_KINDS.get(lifecycle.lower(), NotificationKind.CHANGED)
    else:
        raise InvalidNotification("lifecycleEvent is not a string")
    return Notification(kind=kind, channel_id=subscription_id, resource_id=None, token=client_state)


def parse_notifications(headers: Mapping[str, str], body: bytes) -> list[Notification]:
    """Every notification of one Graph POST, in order; InvalidNotification if malformed."""
    del headers  # Graph puts everything in the body; Content-Type varies (charset)
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidNotification("notification body is not JSON") from None
    if not isinstance(parsed, Mapping):
        raise InvalidNotification("notification body is not a JSON object")
    entries = parsed.get("value")
    if not isinstance(entries, list):
        raise InvalidNotification("notification body has no value list")
    return [_item(entry) for entry in entries]
