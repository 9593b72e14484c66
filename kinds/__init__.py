"""Account kinds: what each ``accounts.provider`` value means to the rest of the system.

- ``registry``: the ``AccountKind`` entry (client factory, actor spec, capabilities, request
  budget, identity, outbox operations) and the ``KindRegistry`` holding them;
- ``shipped``: ``default_registry()``, the kinds this build ships;
- ``calendar``: the calendar kinds (Google Calendar, Outlook through Microsoft Graph), whose
  accounts run the calendar account actor (``actors.account``).

``default_registry()`` is what a replica, the connect flow and ``migrate`` use; a test or an
embedding process may build its own registry with more kinds. Adding a kind is one package (its
client under ``providers/``, its actor under ``actors/``) plus one registry entry:
docs/adding-a-provider.md.
"""

from kinds.registry import AccountKind, KindRegistry, OutboxOperation
from kinds.shipped import default_registry

__all__ = ["AccountKind", "KindRegistry", "OutboxOperation", "default_registry"]
