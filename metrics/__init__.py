"""Prometheus metrics and health probes shared by the replicas and the gateway (docs/metrics.md).

``metrics.events`` imports nothing of the project: providers, actors, the gateway and the
supervisor all import it, so it must not import any of them back.
"""
