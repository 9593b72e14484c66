"""Test and benchmark harnesses: ``pipeline`` (emulators, gateway and a replica in one process)
and ``cluster`` (real replica and gateway processes, for failover and crash tests)."""
