"""Vocabulary codes: the positions `pd.Categorical(values, levels).codes` gives, for every way a text column
arrives (object with None or NaN, Arrow-backed strings from the ADBC reader, unknown values)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.crm import vocab


@pytest.mark.parametrize("dtype", [object, "string[pyarrow]", "str"])
def test_codes_are_the_categorical_codes(dtype: object) -> None:
    rng = np.random.default_rng(0)
    pool = [*vocab.ACTIVITY_TYPES, "Email_Open", "email_open ", "", "phone_call"]
    values = [pool[i] for i in rng.integers(0, len(pool), 500)]
    values[::17] = [None] * len(values[::17])
    series = pd.Series(values, dtype=dtype)  # type: ignore[call-overload]

    got = vocab.codes(series, vocab.ACTIVITY_TYPES)

    known = series.where(series.isin(vocab.ACTIVITY_TYPES))  # unknown values are missing, as codes say
    expected = pd.Categorical(known, categories=vocab.ACTIVITY_TYPES).codes
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == np.int64
    assert (got == -1).sum() > 0 and (got >= 0).sum() > 0


def test_codes_of_nothing_is_empty() -> None:
    assert vocab.codes(pd.Series([], dtype=object), vocab.STAGES).tolist() == []
