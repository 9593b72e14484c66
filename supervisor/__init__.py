"""The process: the top of the layers, imported by nothing (docs/architecture.md).

- ``cli``, ``operator_commands``, ``outbox_commands``, ``doctor``: the ``integration-worker``
  commands;
- ``services``: where Postgres and Redis are (configured URLs, or the sandbox's embedded ones);
- ``replica``, ``accounts_runtime``, ``resilient``, ``outbox_wakeups``: a replica's composition
  and its background loops; ``gateway_process`` and ``api_process``: the other two processes;
- ``ops_server``, ``metric_collectors``, ``outbox_figures``: ``/healthz``, ``/readyz``,
  ``/metrics`` and the gauges computed at scrape time;
- ``monitor``, ``monitor_accounts``, ``monitor_shards``, ``actor_table``: aiomonitor commands;
- ``maintenance``, ``maintenance_jobs``, ``maintenance_schedule``, ``maintenance_audit``: the
  cluster-wide maintenance under its lease.
"""
