"""The actor runtime kernel: lightweight supervised actors with coalescing mailboxes.

- ``actor``: the base class (lifecycle hooks, the services the runtime offers an actor);
- ``cell``: the slot one child lives in (mailbox, deadlines, state, counters);
- ``spec``: how a supervisor builds and restarts a kind of child;
- ``supervisor``: one-for-one supervision of many independent actors;
- ``policy``, ``circuit``, ``restart_gate``: pure restart decisions, the restart circuit, and
  holding crashed children while it is open;
- ``deadlines``, ``wakeups``: one heap of wake-up times and one loop timer for every child;
- ``registry``: the children in start order, with read-only snapshots;
- ``errors``: what the runtime raises to its callers;
- ``account``: the calendar account actor, a layer of its own above ``store`` and ``cluster``.

The kernel knows nothing of accounts, providers, Postgres or Redis (docs/architecture.md).
"""
