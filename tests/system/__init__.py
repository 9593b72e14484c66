"""Tests of whole processes: replicas killed and frozen, failover, chaos, the demo, the CLI,
the deployment files, the image's install and the lock."""
