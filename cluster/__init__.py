"""The cluster's shared state in Redis: what replicas, the gateway and the API coordinate through.

- ``keys``: every key, stream and stream field, named once;
- ``streams``: notification stream entries and the gateway's one XADD edge;
- ``inbox``: a replica's consumer of its shards' notification streams (ack after commit);
- ``leases``, ``lease_state``, ``assignment``, ``shard_keeper``: shard ownership (leases and
  membership in Redis, the pure lease timing and assignment rules, the keeper loop);
- ``maintenance_lease``: the one cluster-wide maintenance lease;
- ``rate_limit``: shared token buckets for the providers' quotas; ``throttle_witness``: which
  accounts were throttled lately, and whether that slows a shared budget;
- ``change_relay``: publishes the change feed's committed rows to the changes stream.

Below it: ``store`` (PostgreSQL), ``providers``, ``actors``, ``config``; nothing here imports the
account actor, the gateway, the API or the process (docs/architecture.md).
"""
