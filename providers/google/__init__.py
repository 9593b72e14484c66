"""Google Calendar API v3: client, OAuth refresh (google-auth), pure JSON mapping, the sync
cursor and push notifications. The emulator is ``sandbox.emulators.google``."""

from providers.capabilities import BudgetScope, Capabilities, ChannelScope, Identity

# Watch channels per calendar (providers.md A), one request budget per project (A.5), and the
# email of the id_token only when Google verified it.
CAPABILITIES = Capabilities(
    channel_scope=ChannelScope.CALENDAR,
    budget_scope=BudgetScope.APP,
    identity=Identity(
        claims=("email",),
        verified_by="email_verified",
        subject_claims=("sub",),
        issuers=("https://accounts.google.com", "accounts.google.com"),  # OIDC docs: both
    ),
    redelivery_horizon_s=15 * 60.0,  # Google documents none: the 15-minute safety poll's span
)
