"""The live demo (``integration-worker demo``): the real pipeline end to end in one process,
with simulated people, injected faults, a live view and a final convergence check.

Modules, one job each: ``people`` and ``emulators`` (users, seeding and edits in each emulator),
``seeding`` (demo accounts in Postgres), ``workload`` (the people's pace), ``schedule`` (the pure
fault schedule), ``faults`` (injecting it), ``journal`` (edit-to-commit lags), ``status`` (the
figures), ``view`` (rich panel or plain lines), ``compare`` (database vs emulators), ``stage``
(gateway and waits), ``finish`` (settle, compare, report) and ``run`` (orchestration).
"""

from sandbox.demo.finish import DemoSummary
from sandbox.demo.run import DEFAULT_EVENTS, run_demo

__all__ = ["DEFAULT_EVENTS", "DemoSummary", "run_demo"]
