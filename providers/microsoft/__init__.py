"""Microsoft Graph (Outlook calendar): client, token refresh (msal), pure JSON mapping, the
delta cursor, webhook notifications and time zone names. The emulator is
``sandbox.emulators.microsoft``."""

from providers.capabilities import BudgetScope, Capabilities, ChannelScope, Identity

# One subscription per mailbox (``/me/events``), a budget per app and mailbox (providers.md B.3),
# refresh tokens that lapse when idle, and the grant names its scopes (the resource).
CAPABILITIES = Capabilities(
    channel_scope=ChannelScope.MAILBOX,
    budget_scope=BudgetScope.ACCOUNT,
    identity=Identity(claims=("preferred_username", "email"), subject_claims=("tid", "oid")),
    mailbox_calendar="primary",
    keepalive=True,
    scope_in_token_grant=True,
    redelivery_horizon_s=4 * 3600.0,  # Graph retries a notification for up to 4 hours
)
