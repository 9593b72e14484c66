"""The stateless webhook gateway: verifies provider notifications and appends them to the shard
streams (docs/streams.md).

- ``app``: the aiohttp application (routes, verification against stored channels, appends);
- ``verify``: pure verification of a parsed notification against its channel row;
- ``limits``: request body limits;
- ``ops``: ``/healthz``, ``/readyz`` and ``/metrics``, served on the ops port, never beside the
  webhooks.

The process around it is ``supervisor.gateway_process``; the stream layout is ``cluster.keys``.
"""
