"""Google push notifications: ``X-Goog-*`` headers as one unverified ``Notification``.

Invariants:
- header names are matched case-insensitively; the body is ignored (Google sends none and a
  notification carries no change details, providers.md A.4);
- a request without a channel id or resource state, or with a non-integer message number,
  raises ``InvalidNotification``; authenticity is ``verify_notification``'s job, not ours;
- ``sync`` (the channel's first message) is ``SYNC``; ``exists``, ``not_exists`` and any state
  Google may add later are ``CHANGED``: the worst a spurious CHANGED costs is one
  incremental sync, while dropping a real one would lose a change until the fallback poll.
"""

from __future__ import annotations

from collections.abc import Mapping

from providers.errors import InvalidNotification
from providers.models import Notification, NotificationKind

CHANNEL_ID = "x-goog-channel-id"
CHANNEL_TOKEN = "x-goog-channel-token"
RESOURCE_ID = "x-goog-resource-id"
RESOURCE_STATE = "x-goog-resource-state"
MESSAGE_NUMBER = "x-goog-message-number"


MESSAGE_NUMBER_MAX_DIGITS = 20  # a 64-bit number; Google's grow by one per message


def parse_notifications(headers: Mapping[str, str], body: bytes = b"") -> list[Notification]:
    """The one notification a Google push request carries; InvalidNotification if malformed."""
    del body  # Google push requests have an empty body by design
    lowered = {name.lower(): value for name, value in headers.items()}
    channel_id = lowered.get(CHANNEL_ID, "").strip()
    state = lowered.get(RESOURCE_STATE, "").strip().lower()
    if not channel_id:
        raise InvalidNotification("missing X-Goog-Channel-ID")
    if not state:
        raise InvalidNotification("missing X-Goog-Resource-State")
    number_text = lowered.get(MESSAGE_NUMBER)
    message_number: int | None = None
    if number_text is not None:
        text = number_text.strip()
        # int() alone would also take "+1" or "1_0"; isdigit() alone takes "²".
        if not (text.isascii() and text.isdigit()):
            raise InvalidNotification("X-Goog-Message-Number is not an integer")
        if len(text) > MESSAGE_NUMBER_MAX_DIGITS:  # int() refuses past 4,300 digits anyway
            raise InvalidNotification("X-Goog-Message-Number is too long")
        message_number = int(text)
    kind = NotificationKind.SYNC if state == "sync" else NotificationKind.CHANGED
    return [
        Notification(
            kind=kind,
            channel_id=channel_id,
            resource_id=lowered.get(RESOURCE_ID) or None,
            message_number=message_number,
            token=lowered.get(CHANNEL_TOKEN),
        )
    ]
