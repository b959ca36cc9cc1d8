"""`leadscore explain --lead`: an imported CRM's own id first, else the integer lead id."""

from __future__ import annotations

import pandas as pd

from pipelines.score.explain import lead_id_of


def test_a_crm_id_maps_to_its_lead_and_a_plain_integer_is_the_lead_id() -> None:
    crm_ids = pd.Series(["00Q5e000001", "17"], index=[4, 9], name="crm_id")

    assert lead_id_of("00Q5e000001", crm_ids) == 4
    assert lead_id_of("17", crm_ids) == 9  # the CRM's own "17" is lead 9, not lead 17
    assert lead_id_of("17", None) == 17
    assert lead_id_of("no-such-id", crm_ids) is None
