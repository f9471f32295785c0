"""The shared NMC open-circuit-voltage curve (lib/gridzero/ocv.py)."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridzero.ocv import NMC_OCV_TABLE, mean_ocv_v, ocv_from_soc, soc_from_ocv


def test_table_is_strictly_increasing() -> None:
    for (s0, v0), (s1, v1) in pairwise(NMC_OCV_TABLE):
        assert s1 > s0
        assert v1 > v0


def test_end_points_and_clamping() -> None:
    assert ocv_from_soc(0.0) == 3.0
    assert ocv_from_soc(1.0) == 4.2
    assert soc_from_ocv(2.5) == 0.0
    assert soc_from_ocv(4.3) == 1.0
    assert ocv_from_soc(-0.1) == 3.0
    assert soc_from_ocv(3.77) == pytest.approx(0.5)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "3.7", None])
def test_bad_input(bad: object) -> None:
    with pytest.raises(ValueError, match="ocv:"):
        soc_from_ocv(bad)  # type: ignore[arg-type]


@settings(max_examples=200)
@given(st.floats(min_value=0.0, max_value=1.0))
def test_round_trip(soc: float) -> None:
    assert soc_from_ocv(ocv_from_soc(soc)) == pytest.approx(soc, abs=1e-9)


def test_mean_ocv() -> None:
    assert mean_ocv_v(0.5, 0.5) == pytest.approx(3.77)
    assert mean_ocv_v(0.5, 0.55) == pytest.approx((3.77 + 3.80) / 2)
    assert 3.6 < mean_ocv_v(0.0, 1.0) < 3.8
    assert mean_ocv_v(1.0, 0.0) == mean_ocv_v(0.0, 1.0)
