"""Use cases the CLI, the admin API and the connect flow share, above the stores they use.

- ``accounts``: connect (add), look up, describe, export and remove an account;
- ``outbox``: validate and enqueue outbound writes (upsert, cancel, rebuild) for the host
  application's Python API, the CLI and the admin API;
- ``set_aside``: ask for a full round of the calendars holding items a sync set aside.

Below it: ``actors.account``, ``cluster``, ``store``, ``outbox`` (pure rules), ``providers``;
above it: ``gateway``, ``connect``, ``admin`` and the process (docs/architecture.md).
"""
