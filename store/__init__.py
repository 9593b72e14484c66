"""PostgreSQL, and nothing else: the schema and every query the project runs.

- ``db``: asyncpg pools bound to a schema, SQL helpers; ``migrate`` and ``migrations/``: the
  forward-only schema;
- ``accounts``, ``credentials`` (encrypted with ``crypto``), ``preferences``: accounts;
- ``calendars``, ``events``, ``change_feed``, ``channels``: synced calendars, their events, the
  change rows, push channels (a replaced one retired for its grace);
- ``set_aside``: provider items a sync could not read or store, kept while their page went on;
- ``outbox``, ``bindings``: outbound write requests and which provider event stands for each;
- ``fencing``: shard epochs that make a former owner's late writes fail;
- ``maintenance``, ``audit``: the maintenance runs and the rows the audit reads.

Redis lives in ``cluster``; the embedded servers of tests and the demo in ``sandbox.embedded``.
"""
