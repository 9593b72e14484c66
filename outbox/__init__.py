"""Outbound writes: what applications ask us to write, and the pure rules for doing it
(docs/outbox.md).

- ``model``: the outbox's data (requests, sources, content, recorded outcomes);
- ``plan``: an account's pending items as provider work (stale skipping, merging, folding);
- ``retry``: what a failed write leads to (retry, dead letter, hold the account);
- ``rules``: idempotency keys, echoes, gone events, conflicts.

Pure: no I/O and no clock. The SQL edge is ``store.outbox``, the ways in ``operations.outbox``,
the writer the account actor's (``actors.account.outbound``).
"""
