"""The account vocabulary (provider names, account statuses) without any import: the command
line offers them as choices before anything heavy is loaded; ``store.accounts`` stores them."""

from __future__ import annotations

from typing import Literal, get_args

Provider = Literal["google", "microsoft"]
Status = Literal["active", "needs_reauth", "quarantined", "disabled"]
PROVIDERS: tuple[Provider, ...] = get_args(Provider)
STATUSES: tuple[Status, ...] = get_args(Status)
