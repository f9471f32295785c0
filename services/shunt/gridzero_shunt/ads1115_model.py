"""A register-level ADS1115 behind the smbus2.SMBus methods the driver uses (pure).

The driver in ``ads1115.py`` runs unchanged against this model, in tests and in
the simulator. It models (TI SBAS444, adafruit/Adafruit_ADS1X15):

- the four registers with their reset values 0x0000 / 0x8583 / 0x8000 / 0x7FFF;
- MSB-first register transfers: I2C block reads/writes carry [MSB, LSB]; SMBus
  word reads/writes are little-endian, so a word carries the bytes swapped;
- single-shot: writing OS = 1 with MODE = 1 starts one conversion that ends
  1/DR later; OS reads 0 while converting and 1 when idle;
- continuous: a conversion ends every 1/DR after the config write; OS reads 0
  (the device is always converting); the conversion register keeps its old value
  until the first conversion with the new config ends;
- the differential input voltage (AIN0 - AIN1) as a settable value, converted
  with the configured PGA and clipped to 0x7FFF / 0x8000; other MUX settings read 0 V;
- a missing device (``present = False``: every transfer fails with a NACK) and
  injected I2C errors (``fail_next``).

Time comes from a settable clock function (seconds); nothing here reads a real clock.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence

from gridzero_shunt.codec import (
    COUNTS_MAX,
    COUNTS_MIN,
    REG_CONFIG,
    REG_CONVERSION,
    REG_HI_THRESH,
    REG_LO_THRESH,
    REGISTERS,
    RESET_CONFIG,
    RESET_CONVERSION,
    RESET_HI_THRESH,
    RESET_LO_THRESH,
    decode_config,
    lsb_v,
    swap_word,
)

_ERRNO_TEXT = {
    errno.EREMOTEIO: "Remote I/O error",  # how Linux i2c-dev reports a NACK
    errno.ENXIO: "No such device or address",
    errno.EIO: "Input/output error",
    errno.EAGAIN: "Resource temporarily unavailable",  # bus busy / arbitration lost
    errno.ETIMEDOUT: "Connection timed out",
    errno.EBADF: "Bad file descriptor",
}


def i2c_error(err_no: int) -> OSError:
    """The OSError smbus2 raises for an I2C failure with this errno."""
    return OSError(err_no, _ERRNO_TEXT.get(err_no, f"I2C error {err_no}"))


class Ads1115Model:
    """One ADS1115 on a simulated I2C bus; duck-types the used part of smbus2.SMBus."""

    def __init__(
        self, address: int = 0x48, *, clock: Callable[[], float], input_v: float = 0.0
    ) -> None:
        self.address = address
        self.clock = clock
        self.input_v = input_v
        self.present = True
        self.closed = False
        self.transfers = 0
        self._fail: list[int] = []
        self._regs: dict[int, int] = {}
        self._conversion_end_s: float | None = None
        self._continuous_start_s: float | None = None
        self.power_cycle()

    # --- test and simulator controls -------------------------------------------------

    def power_cycle(self) -> None:
        """Back to the power-on reset state (single-shot, power-down)."""
        self._regs = {
            REG_CONVERSION: RESET_CONVERSION,
            REG_CONFIG: RESET_CONFIG,
            REG_LO_THRESH: RESET_LO_THRESH,
            REG_HI_THRESH: RESET_HI_THRESH,
        }
        self._conversion_end_s = None
        self._continuous_start_s = None

    def fail_next(self, count: int = 1, err_no: int = errno.EREMOTEIO) -> None:
        """Make the next ``count`` transfers fail with ``OSError(err_no)``."""
        self._fail.extend([err_no] * count)

    def register(self, pointer: int) -> int:
        """A register's current value (after bringing conversions up to date)."""
        self._advance()
        return self._regs[pointer]

    def counts_for(self, volts: float) -> int:
        """The code the ADC gives for ``volts`` with the current PGA (clipped)."""
        config = decode_config(self._regs[REG_CONFIG])
        if config.mux != 0:
            volts = 0.0
        counts = round(volts / lsb_v(config.fsr_v))
        return max(COUNTS_MIN, min(COUNTS_MAX, counts))

    # --- smbus2.SMBus methods ----------------------------------------------------------

    def read_i2c_block_data(
        self, i2c_addr: int, register: int, length: int, force: bool | None = None
    ) -> list[int]:
        self._begin(i2c_addr, register, force)
        if length not in (1, 2):
            raise ValueError(f"ADS1115 model: block read of {length} bytes; registers are 2 bytes")
        value = self._read(register)
        return [value >> 8, value & 0xFF][:length]

    def write_i2c_block_data(
        self, i2c_addr: int, register: int, data: Sequence[int], force: bool | None = None
    ) -> None:
        self._begin(i2c_addr, register, force)
        if len(data) != 2 or any(not 0 <= b <= 0xFF for b in data):
            raise ValueError(f"ADS1115 model: block write {list(data)!r}; need [MSB, LSB]")
        self._write(register, (data[0] << 8) | data[1])

    def read_word_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int:
        self._begin(i2c_addr, register, force)
        # The chip sends MSB first; SMBus takes the first byte as the low byte.
        return swap_word(self._read(register))

    def write_word_data(
        self, i2c_addr: int, register: int, value: int, force: bool | None = None
    ) -> None:
        self._begin(i2c_addr, register, force)
        if not 0 <= value <= 0xFFFF:
            raise ValueError(f"ADS1115 model: word {value!r} is outside 0..0xFFFF")
        self._write(register, swap_word(value))

    def close(self) -> None:
        self.closed = True

    # --- internals ----------------------------------------------------------------------

    def _begin(self, i2c_addr: int, register: int, force: bool | None) -> None:
        # ``force`` (smbus2: bypass the kernel's address lock) means nothing to the model.
        del force
        if self.closed:
            raise i2c_error(errno.EBADF)
        self.transfers += 1
        if self._fail:
            raise i2c_error(self._fail.pop(0))
        if not self.present or i2c_addr != self.address:
            raise i2c_error(errno.EREMOTEIO)
        if register not in REGISTERS:
            # Pointer bits 7:2 must be 0; the chip NACKs anything else.
            raise i2c_error(errno.EREMOTEIO)

    def _conversion_s(self) -> float:
        return 1.0 / decode_config(self._regs[REG_CONFIG]).data_rate_sps

    def _advance(self) -> None:
        now = self.clock()
        config = self._regs[REG_CONFIG]
        if self._continuous_start_s is not None:
            if now >= self._continuous_start_s + self._conversion_s():
                self._regs[REG_CONVERSION] = self.counts_for(self.input_v) & 0xFFFF
            return
        if self._conversion_end_s is not None and now >= self._conversion_end_s:
            self._regs[REG_CONVERSION] = self.counts_for(self.input_v) & 0xFFFF
            self._regs[REG_CONFIG] = config | 0x8000  # idle again: OS reads 1
            self._conversion_end_s = None

    def _read(self, register: int) -> int:
        self._advance()
        return self._regs[register]

    def _write(self, register: int, value: int) -> None:
        self._advance()
        if register == REG_CONVERSION:
            return  # read-only: the write is acknowledged and ignored
        if register != REG_CONFIG:
            self._regs[register] = value
            return
        now = self.clock()
        single_shot = bool(value & 0x0100)
        if single_shot:
            self._continuous_start_s = None
            converting = self._conversion_end_s is not None
            if value & 0x8000 and not converting:
                self._conversion_end_s = now + 1.0 / decode_config(value).data_rate_sps
                converting = True
            # OS reads 0 while a conversion runs, 1 when idle; writing OS = 1 mid-conversion
            # has no effect.
            self._regs[REG_CONFIG] = (value & 0x7FFF) if converting else (value | 0x8000)
            return
        self._conversion_end_s = None
        self._continuous_start_s = now
        self._regs[REG_CONFIG] = value & 0x7FFF  # always converting: OS reads 0
