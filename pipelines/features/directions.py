"""The business direction of features whose effect on readiness is known, declared once for the whole pipeline.

+1 means "more of it (or the flag set) can only make a lead more likely to convert", -1 "only less likely", 0 "no
prior". The declaration is used twice: as LightGBM monotone constraints (`pipelines.modeling.monotone_directions`),
so the model cannot learn that an unsubscribe raises a score, and by the reasons (`pipelines.registry.reasons`),
which leave out any reason whose SHAP sign contradicts it ("unsubscribed once" in favour, "no demo requests" in
favour, "no unsubscribes" against). Directions are about counts and 0/1 flags, whose zero means "absent"; ordinal
or categorical features have none.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from pipelines.crm import vocab

#: Activity types that signal disinterest or a dead address: more of them never raises a score.
NEGATIVE_ACTIVITIES: Final[tuple[str, ...]] = ("unsubscribe", "email_bounce")
#: Every other activity type is engagement: more of it never lowers a score (the lead's own counts).
POSITIVE_ACTIVITIES: Final[tuple[str, ...]] = tuple(a for a in vocab.ACTIVITY_TYPES if a not in NEGATIVE_ACTIVITIES)
#: Signals that a lead is junk or unreachable (0/1 flags and their count): present never raises a score.
BOGUS_SIGNALS: Final[tuple[str, ...]] = (
    "name_missing",
    "name_placeholder",
    "name_repeated",
    "name_too_short",
    "name_has_digit",
    "email_missing",
    "email_invalid",
    "email_test_domain",
    "email_placeholder_mailbox",
    "phone_missing",
    "phone_invalid",
    "title_placeholder",
    "bogus_signal_count",
    "title_missing",
)
#: Ideal-customer-profile flags: a match never lowers a score (the profile is the business's own definition).
ICP_FLAGS: Final[tuple[str, ...]] = ("icp_industry", "icp_size", "icp_region", "icp_match")
#: Named features with a direction (counts by activity type are matched by pattern below).
DIRECTIONS: Final[dict[str, int]] = {
    **{name: -1 for name in BOGUS_SIGNALS},
    **{name: +1 for name in ICP_FLAGS},
    "distinct_content_all": +1,
}
#: The lead's own activity counts per type and window: n_<type>_<window>, and n_activities_<window> (any type).
_OWN_COUNT: Final = re.compile(r"^n_(?P<what>.+)_(?P<window>\d+d|all)$")
#: Colleagues' pricing-page visits and demo requests: the account is shopping. The account's decayed intent and
#: engagement, and how many of its contacts engaged or showed intent within a window (the buying committee), too.
_ACCOUNT_INTENT: Final = re.compile(
    r"^account_(?:other_high_intent_(?:\d+d|all)|(?:intent|engagement)_decay_[\d.]+d|(?:engaged|intent)_contacts_\d+d)$"
)


def feature_direction(name: str, family: str, kind: str = "numeric") -> int:
    """The declared direction of one feature: +1, -1 or 0 (none declared; categoricals never have one)."""
    if kind != "numeric":
        return 0
    if name in DIRECTIONS:
        return DIRECTIONS[name]
    if family == "engagement" and (match := _OWN_COUNT.match(name)):
        what = match["what"]
        if what in NEGATIVE_ACTIVITIES:
            return -1
        if what in POSITIVE_ACTIVITIES or what == "activities":
            return +1
    if family == "account" and _ACCOUNT_INTENT.match(name):
        return +1
    return 0


#: Recency and recent-activity features: a new engagement event shortens the days since the last signal and raises
#: the recent count and the velocity, so these carry monotone constraints too (days since a negative signal, the
#: days in the current stage and the activity before the velocity window have no direction). They are constraints
#: only, not reason filters: a continuous recency has no "absent" zero for `contradicts` to read.
_RECENCY: Final = re.compile(r"^days_since_(?P<what>.+)$")
#: Days since the account's latest intent or engagement (pipelines.features.readiness): the account-wide recency.
_ACCOUNT_RECENCY: Final = re.compile(r"^days_since_account_(?:intent|engagement)$")


def monotone_direction(name: str, family: str, kind: str = "numeric") -> int:
    """The LightGBM monotone constraint of one feature: its declared direction, and for recency (-1) and recent
    activity and velocity (+1) the direction a new engagement event moves them."""
    declared = feature_direction(name, family, kind)
    if declared or kind != "numeric":
        return declared
    if family == "recency" and (match := _RECENCY.match(name)) and match["what"] not in NEGATIVE_ACTIVITIES:
        return -1
    if family == "account" and _ACCOUNT_RECENCY.match(name):
        return -1
    if family == "velocity" and not name.startswith("n_activities_prior_"):
        return +1
    return 0


def feature_directions(names: Sequence[str], families: Sequence[str], kinds: Sequence[str]) -> list[int]:
    """`feature_direction` of each feature, in order."""
    return [feature_direction(n, f, k) for n, f, k in zip(names, families, kinds, strict=True)]


def contradicts(direction: int, value: float, sign: int) -> bool:
    """Whether a reason pushing the score in `sign` (+1 up, -1 down) contradicts the declared `direction`.

    The feature's zero is "absent" (no unsubscribes, flag not set): a present signal may only push in its direction
    and an absent one only against it. A missing value has no direction to contradict (the caller decides).
    """
    if direction == 0:
        return False
    present = value > 0
    return sign != (direction if present else -direction)
