"""The chemistry's hard limits: the outer bounds of every hardware setting.

The VW Golf/Passat GTE modules hold 12 NMC cells in series. These constants are what no
setting may widen: start-up settings (the settings file or environment) are validated against
them, and runtime settings (MQTT, Home Assistant, the console) may only tighten the start-up
values further. They are never writable over MQTT.

Sources: NMC cell makers' datasheets agree on 4.20 V end of charge, charging between 0 and
45 °C and discharging between about −20 and 60 °C; the open-source VW module BMS firmware
(Tom de Bree's SimpBMS `VWBMSV2`) uses 4.20 V over-voltage, 65 °C over-temperature and a
0 °C cold-charge derate for the same modules. A cell below about 2.5 V has been deep
discharged: copper may have dissolved, and charging it at full current risks an internal
short, so it is charged again only gently and only after a person has looked at it.
"""

from __future__ import annotations

CELLS_PER_MODULE = 12

CELL_MAX_V = 4.20
"""End of charge: no setting may let a cell be charged above this."""

CELL_MIN_V = 2.80
"""The lowest under-voltage any setting may allow a cell to be discharged to."""

DEEP_DISCHARGE_V = 2.50
"""Below this a cell counts as deep discharged (latched; released only by a person)."""

FALLBACK_CELL_MAX_V = 4.00
"""The rectifier's stored fallback voltage is at most cells in series × this: the charger
falls back to it when nothing refreshes it, so it must stay well below full."""

CHARGE_MIN_C = 0.0
CHARGE_MAX_C = 45.0
"""Cell temperatures between which charging is allowed at all."""

DISCHARGE_MIN_C = -20.0
DISCHARGE_MAX_C = 60.0
"""Cell temperatures between which discharging is allowed at all."""


def pack_max_v(cells_in_series: int) -> float:
    """The highest voltage a pack of ``cells_in_series`` cells may be charged to."""
    return cells_in_series * CELL_MAX_V


def fallback_max_v(cells_in_series: int) -> float:
    """The highest stored fallback voltage for the rectifier of such a pack."""
    return cells_in_series * FALLBACK_CELL_MAX_V


# --- current limits (bms) ---------------------------------------------------------------------
# Per parallel string, in multiples of its capacity (C). NMC cell datasheets give 1 C as the
# highest standard charge current and allow several C of discharge; a home battery stays far
# below both. A deep-discharged cell, once a person has released it, is charged at no more
# than C/20 until it is back above the under-voltage limit (the usual gentle pre-charge).

MAX_CHARGE_C_RATE = 1.0
"""No charge current setting may exceed this × the pack's capacity (per parallel string)."""

MAX_DISCHARGE_C_RATE = 2.0
"""No discharge current setting may exceed this × the pack's capacity (per parallel string)."""

PRECHARGE_MAX_C_RATE = 0.05
"""The pre-charge current of cells between DEEP_DISCHARGE_V and CELL_MIN_V is at most C/20."""


# --- internal resistance (shunt's loaded-voltage SoC estimate) ---------------------------------
# A 25 Ah PHEV2 prismatic NMC cell, as in the GTE modules, has about 1-2 mOhm DC resistance new
# at 25 C; it rises with age and in the cold (2-3x near 0 C and at end of life). Below 0.5 mOhm
# no such cell exists; above 5 mOhm it is worn out or frozen and the estimate would be guesswork.

CELL_RESISTANCE_MIN_MOHM = 0.5
"""The lowest DC internal resistance any setting may assume for one cell."""

CELL_RESISTANCE_MAX_MOHM = 5.0
"""The highest DC internal resistance any setting may assume for one cell."""
