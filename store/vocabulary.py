"""The account vocabulary without any import: the command line offers the statuses as choices
before anything heavy is loaded; ``store.accounts`` stores them.

An account's ``provider`` is the name of its kind (``kinds.registry``); which kinds exist is
data (the ``account_kinds`` table ``migrate`` fills from the registry), not a literal here.
"""

from __future__ import annotations

from typing import Literal, get_args

Provider = str  # an account kind's name, e.g. "google"; account_kinds lists the known ones
Status = Literal["active", "needs_reauth", "quarantined", "disabled"]
STATUSES: tuple[Status, ...] = get_args(Status)
