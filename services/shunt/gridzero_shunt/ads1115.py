"""ADS1115 driver over smbus2's SMBus interface (or the register model).

Byte order: by default registers are moved with I2C *block* transfers, which
carry the bytes in wire order (MSB, LSB), so no swap is needed
(``transfer="block"``: write_i2c_block_data(addr, reg, [MSB, LSB]),
read_i2c_block_data(addr, reg, 2)). For adapters without I2C block support,
``transfer="word"`` uses SMBus word transfers and swaps the bytes, because SMBus
words are little-endian while the chip sends MSB first (adafruit/Adafruit_ADS1X15: MSB first).

Conversions: single-shot writes the config with OS = 1, waits one conversion
period (+10 % for the internal oscillator), then polls the OS bit until it
reads 1. Continuous mode checks the config register on every read so that a
chip that was reset (brown-out: back to single-shot power-down) is noticed and
reconfigured instead of returning a stale value forever.

Every bus failure (OSError: NACK, bus busy, timeout) becomes ``Ads1115Error``;
the driver stays usable and the next read tries again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from gridzero.codec import CodecError
from gridzero.errors import GridzeroError
from gridzero_shunt.codec import (
    ADDRESSES,
    REG_CONFIG,
    REG_CONVERSION,
    encode_config,
    lsb_v,
    shunt_config,
    signed16,
    swap_word,
)

Transfer = Literal["block", "word"]
_OS_BIT = 0x8000


class Ads1115Error(GridzeroError):
    """The ADS1115 could not be read or configured (I2C failure, wrong device, timeout)."""


class SMBusLike(Protocol):
    """The part of smbus2.SMBus the driver uses."""

    def read_i2c_block_data(
        self, i2c_addr: int, register: int, length: int, force: bool | None = None
    ) -> list[int]: ...

    def write_i2c_block_data(
        self, i2c_addr: int, register: int, data: Sequence[int], force: bool | None = None
    ) -> None: ...

    def read_word_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int: ...

    def write_word_data(
        self, i2c_addr: int, register: int, value: int, force: bool | None = None
    ) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Ads1115Settings:
    """How the chip is set up. Defaults: the shunt on AIN0-AIN1 at +-0.256 V."""

    address: int = 0x48
    fsr_v: float = 0.256
    data_rate_sps: int = 8
    single_shot: bool = False
    transfer: Transfer = "block"
    # How many OS polls after the nominal conversion time before giving up.
    max_polls: int = 10

    def __post_init__(self) -> None:
        if self.address not in ADDRESSES:
            allowed = ", ".join(f"{a:#04x}" for a in ADDRESSES)
            raise ValueError(f"ADS1115 address {self.address!r} is not one of {allowed}")
        if self.transfer not in ("block", "word"):
            raise ValueError(f"ADS1115 transfer {self.transfer!r} is not 'block' or 'word'")
        if self.max_polls < 1:
            raise ValueError(f"ADS1115 max_polls {self.max_polls!r} must be >= 1")
        try:
            self.config_word()
        except CodecError as exc:
            raise ValueError(str(exc)) from exc

    def config_word(self) -> int:
        """The config register value to write (OS = 1 starts a conversion in single-shot)."""
        return encode_config(
            shunt_config(self.fsr_v, self.data_rate_sps, single_shot=self.single_shot)
        )

    @property
    def conversion_s(self) -> float:
        return 1.0 / self.data_rate_sps

    @property
    def lsb_v(self) -> float:
        return lsb_v(self.fsr_v)


class Ads1115:
    """One ADS1115 measuring a differential input."""

    def __init__(
        self,
        bus: SMBusLike,
        settings: Ads1115Settings | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        where: str = "I2C",
    ) -> None:
        self._bus = bus
        self.settings = settings or Ads1115Settings()
        self._sleep = sleep
        self._where = where
        self._configured = False

    @property
    def name(self) -> str:
        return f"ADS1115 at {self.settings.address:#04x} on {self._where}"

    # --- register access ------------------------------------------------------------

    def read_register(self, pointer: int) -> int:
        """A register's 16-bit value, MSB = bit 15."""
        addr = self.settings.address
        try:
            if self.settings.transfer == "word":
                word = self._bus.read_word_data(addr, pointer)
                if not isinstance(word, int) or not 0 <= word <= 0xFFFF:
                    raise Ads1115Error(f"{self.name}: word read gave {word!r}, not 0..0xFFFF")
                return swap_word(word)
            data = self._bus.read_i2c_block_data(addr, pointer, 2)
        except OSError as exc:
            self._configured = False
            raise Ads1115Error(f"{self.name}: reading register {pointer} failed: {exc}") from exc
        if len(data) != 2 or any(not 0 <= b <= 0xFF for b in data):
            raise Ads1115Error(f"{self.name}: block read gave {data!r}, need 2 bytes")
        return (data[0] << 8) | data[1]

    def write_register(self, pointer: int, value: int) -> None:
        """Write a 16-bit register value (sent MSB first on the wire)."""
        addr = self.settings.address
        try:
            if self.settings.transfer == "word":
                self._bus.write_word_data(addr, pointer, swap_word(value))
            else:
                self._bus.write_i2c_block_data(addr, pointer, [value >> 8, value & 0xFF])
        except OSError as exc:
            self._configured = False
            raise Ads1115Error(
                f"{self.name}: writing {value:#06x} to register {pointer} failed: {exc}"
            ) from exc

    # --- conversions ------------------------------------------------------------------

    def start(self) -> None:
        """Configure the chip and check that it answers like an ADS1115.

        Raises Ads1115Error when nothing answers (missing device, wrong address) or
        the config does not read back.
        """
        word = self.settings.config_word()
        self.write_register(REG_CONFIG, word)
        self._check_config(self.read_register(REG_CONFIG), word)
        self._configured = True
        if not self.settings.single_shot:
            # The conversion register holds the old result until the first conversion
            # with the new config has finished.
            self._sleep(self.settings.conversion_s * 1.1 + 0.001)

    def _check_config(self, read_back: int, written: int) -> None:
        # OS reads differently from what was written (busy/idle), so it is not compared.
        if (read_back | _OS_BIT) != (written | _OS_BIT):
            self._configured = False
            raise Ads1115Error(
                f"{self.name}: config reads back {read_back:#06x} after writing {written:#06x}"
                " (device reset, or not an ADS1115?)"
            )

    def read_counts(self) -> int:
        """One conversion result in signed counts (may be a full-scale code)."""
        if not self._configured:
            self.start()
        if self.settings.single_shot:
            return self._read_single_shot()
        self._check_config(self.read_register(REG_CONFIG), self.settings.config_word())
        return signed16(self.read_register(REG_CONVERSION))

    def _read_single_shot(self) -> int:
        word = self.settings.config_word()
        self.write_register(REG_CONFIG, word)
        period_s = self.settings.conversion_s
        self._sleep(period_s * 1.1 + 0.0005)
        for _ in range(self.settings.max_polls):
            config = self.read_register(REG_CONFIG)
            self._check_config(config, word)
            if config & _OS_BIT:
                return signed16(self.read_register(REG_CONVERSION))
            self._sleep(period_s * 0.1 + 0.0005)
        raise Ads1115Error(
            f"{self.name}: conversion not ready after {self.settings.max_polls} polls"
            f" ({period_s * (1.1 + 0.1 * self.settings.max_polls):.3f} s)"
        )

    def read_voltage_v(self) -> float:
        """One conversion result in volts (AIN0 - AIN1)."""
        return self.read_counts() * self.settings.lsb_v

    def close(self) -> None:
        """Release the bus (an OSError while closing becomes Ads1115Error)."""
        try:
            self._bus.close()
        except OSError as exc:
            raise Ads1115Error(f"{self.name}: closing the bus failed: {exc}") from exc
