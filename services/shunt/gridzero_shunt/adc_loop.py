"""The ADC side of the shunt service: open the ADS1115 (or its model), retry, read counts.

``AdcLoop.read`` returns one conversion's counts or None (device missing, I2C error); the
service averages them. Errors are logged, a failed open once per distinct error, read errors
the first five times and then every 100th.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from gridzero_shunt.ads1115 import Ads1115, Ads1115Error, SMBusLike
from gridzero_shunt.ads1115_model import Ads1115Model
from gridzero_shunt.settings import ShuntSettings


class AdcLoop:
    """The ADS1115 behind the shunt: opened on demand, re-opened every ``retry_s``."""

    def __init__(
        self, settings: ShuntSettings, log: logging.Logger, clock: Callable[[], float]
    ) -> None:
        self.settings = settings
        self.log = log
        self.clock = clock
        self.model = (
            Ads1115Model(settings.address, clock=clock) if settings.i2c_bus == "sim" else None
        )
        self.adc: Ads1115 | None = None
        self.open_error = ""
        self.next_open_s = 0.0
        self.errors_logged = 0

    def _open(self) -> None:
        s = self.settings
        bus: SMBusLike
        if self.model is not None:
            bus, where = self.model, "simulated I2C"
        else:
            from smbus2 import SMBus  # noqa: PLC0415 - hardware only; tests run without it

            where = f"/dev/i2c-{s.i2c_bus}"
            try:
                bus = SMBus(s.i2c_bus)
            except OSError as exc:
                raise Ads1115Error(f"ADS1115: cannot open {where}: {exc}") from exc
        adc = Ads1115(bus, s.adc(), where=where)
        try:
            adc.start()
        except Ads1115Error:
            bus.close()
            raise
        self.adc = adc
        self.log.info("%s ready (%s)", adc.name, s.adc())

    def _ensure_open(self) -> Ads1115 | None:
        if self.adc is not None:
            return self.adc
        now = self.clock()
        if now < self.next_open_s:
            return None
        try:
            self._open()
            self.open_error = ""
        except Ads1115Error as exc:
            self.next_open_s = now + self.settings.retry_s
            if str(exc) != self.open_error:
                self.log.error(
                    "%s; sensor unavailable, retrying every %g s", exc, self.settings.retry_s
                )
            self.open_error = str(exc)
        return self.adc

    def read(self) -> int | None:
        """One conversion's counts, or None if the device is missing or the read failed."""
        adc = self._ensure_open()
        if adc is None:
            return None
        try:
            return adc.read_counts()
        except Ads1115Error as exc:
            self.errors_logged += 1
            if self.errors_logged <= 5 or self.errors_logged % 100 == 0:
                self.log.warning("read failed (%d so far): %s", self.errors_logged, exc)
            return None

    def close(self) -> None:
        if self.adc is not None:
            try:
                self.adc.close()
            except Ads1115Error as exc:
                self.log.warning("%s", exc)
            self.adc = None
