"""Metric definitions and readiness probes, at the bottom of the layers (docs/metrics.md).

- ``events``: every event metric (counters, histograms), incremented where its event happens;
- ``health``: the readiness probes (``/readyz``) of the replicas, the gateway and the API.

Gauges of current state read actors and Postgres, so they live with the process
(``supervisor.metric_collectors``, ``supervisor.outbox_figures``). Nothing here imports the
project: every layer may import it.
"""
