"""ADS1115 registers as tables (pure): config word <-> fields, conversion bytes <-> counts.

Facts: TI ADS1113/4/5 datasheet SBAS444 (config register table, §9.5.1.1 address) and
adafruit/Adafruit_ADS1X15 (Adafruit_ADS1X15.h). Every register travels MSB first on the wire
([pointer, MSB, LSB]); SMBus *word* transfers are little-endian, so a word read
returns the bytes swapped (``swap_word``).

The config layout is applied to the 16-bit register value serialised
little-endian, so each ``Field.bit`` is the datasheet's bit number.
"""

from __future__ import annotations

from dataclasses import dataclass

from gridzero.codec import (
    DecodeError,
    EncodeError,
    Field,
    Kind,
    Order,
    decode_fields,
    encode_fields,
)

# Register pointers (TI SBAS444 register map).
REG_CONVERSION = 0x00
REG_CONFIG = 0x01
REG_LO_THRESH = 0x02
REG_HI_THRESH = 0x03
REGISTERS = (REG_CONVERSION, REG_CONFIG, REG_LO_THRESH, REG_HI_THRESH)

# Power-on reset values (TI SBAS444 register map).
RESET_CONVERSION = 0x0000
RESET_CONFIG = 0x8583
RESET_LO_THRESH = 0x8000
RESET_HI_THRESH = 0x7FFF

ADDRESSES = (0x48, 0x49, 0x4A, 0x4B)  # ADDR pin to GND, VDD, SDA, SCL (TI SBAS444 §9.5.1.1)

COUNTS_MAX = 0x7FFF  # positive full scale; the ADC clips here (TI SBAS444 data format)
COUNTS_MIN = -0x8000  # negative full scale

# PGA code -> full-scale range in volts; codes 5, 6, 7 are all +-0.256 V (TI SBAS444 config register table).
PGA_FSR_V: dict[int, float] = {
    0: 6.144,
    1: 4.096,
    2: 2.048,
    3: 1.024,
    4: 0.512,
    5: 0.256,
    6: 0.256,
    7: 0.256,
}
FSR_CHOICES_V = (6.144, 4.096, 2.048, 1.024, 0.512, 0.256)

# DR code -> samples per second (TI SBAS444 config register table).
DR_SPS: dict[int, int] = {0: 8, 1: 16, 2: 32, 3: 64, 4: 128, 5: 250, 6: 475, 7: 860}
RATE_CHOICES_SPS = tuple(DR_SPS.values())

MUX_NAMES: dict[int, str] = {
    0: "AIN0-AIN1",
    1: "AIN0-AIN3",
    2: "AIN1-AIN3",
    3: "AIN2-AIN3",
    4: "AIN0-GND",
    5: "AIN1-GND",
    6: "AIN2-GND",
    7: "AIN3-GND",
}
COMP_QUE_NAMES: dict[int, str] = {0: "after 1", 1: "after 2", 2: "after 4", 3: "off"}

_LE = Order.LITTLE
CONFIG_LAYOUT: tuple[Field, ...] = (
    Field("os", 15, 1, order=_LE),
    Field("mux", 12, 3, order=_LE),
    Field("pga", 9, 3, order=_LE),
    Field("mode", 8, 1, order=_LE),  # 0 continuous, 1 single-shot / power-down
    Field("dr", 5, 3, order=_LE),
    Field("comp_mode", 4, 1, order=_LE),
    Field("comp_pol", 3, 1, order=_LE),
    Field("comp_lat", 2, 1, order=_LE),
    Field("comp_que", 0, 2, order=_LE),
)

# The conversion register read as it arrives on the wire: MSB first, two's complement.
CONVERSION_LAYOUT: tuple[Field, ...] = (
    Field("counts", 0, 16, Kind.SINT, Order.BIG, unit="counts"),
)


def lsb_v(fsr_v: float) -> float:
    """Volts per count at a full-scale range (FSR / 32768; TI SBAS444 data format)."""
    return fsr_v / 32768.0


def pga_code(fsr_v: float) -> int:
    """The PGA code for a full-scale range, e.g. 0.256 -> 5."""
    for code, value in PGA_FSR_V.items():
        if abs(value - abs(fsr_v)) < 1e-9:
            return code
    allowed = ", ".join(f"{v:g}" for v in FSR_CHOICES_V)
    raise EncodeError(f"ADS1115 PGA: full-scale range {fsr_v!r} V is not one of {allowed} V")


def dr_code(rate_sps: int | float) -> int:
    """The DR code for a data rate in samples per second, e.g. 128 -> 4."""
    for code, value in DR_SPS.items():
        if value == rate_sps:
            return code
    allowed = ", ".join(str(v) for v in RATE_CHOICES_SPS)
    raise EncodeError(f"ADS1115 data rate: {rate_sps!r} SPS is not one of {allowed} SPS")


@dataclass(frozen=True, slots=True)
class Config:
    """The config register as raw field codes (round-trips every 16-bit word exactly)."""

    os: int = 1
    mux: int = 0
    pga: int = 2
    mode: int = 1
    dr: int = 4
    comp_mode: int = 0
    comp_pol: int = 0
    comp_lat: int = 0
    comp_que: int = 3

    @property
    def fsr_v(self) -> float:
        return PGA_FSR_V[self.pga]

    @property
    def data_rate_sps(self) -> int:
        return DR_SPS[self.dr]

    @property
    def single_shot(self) -> bool:
        return self.mode == 1

    @property
    def mux_name(self) -> str:
        return MUX_NAMES[self.mux]

    def describe(self) -> dict[str, object]:
        """A JSON-friendly description with physical meanings."""
        return {
            "os": self.os,
            "mux": self.mux_name,
            "fsr_v": self.fsr_v,
            "mode": "single" if self.single_shot else "continuous",
            "data_rate_sps": self.data_rate_sps,
            "comp_mode": "window" if self.comp_mode else "traditional",
            "comp_pol": "active_high" if self.comp_pol else "active_low",
            "comp_lat": bool(self.comp_lat),
            "comp_que": COMP_QUE_NAMES[self.comp_que],
        }


def _check_word(word: int, place: str) -> None:
    if isinstance(word, bool) or not isinstance(word, int) or not 0 <= word <= 0xFFFF:
        raise DecodeError(f"{place}: {word!r} is not a 16-bit register value 0x0000..0xFFFF")


def decode_config(word: int) -> Config:
    """The config register value (as an integer, MSB = bit 15) as fields."""
    _check_word(word, "ADS1115 config register")
    values = decode_fields(CONFIG_LAYOUT, word.to_bytes(2, "little"))
    return Config(**{name: int(v) for name, v in values.items() if v is not None})


def encode_config(config: Config) -> int:
    """The 16-bit config register value for ``config``."""
    fields = {f.name: getattr(config, f.name) for f in CONFIG_LAYOUT}
    return int.from_bytes(encode_fields(CONFIG_LAYOUT, fields), "little")


def shunt_config(
    fsr_v: float = 0.256, data_rate_sps: int = 128, *, single_shot: bool = True, mux: int = 0
) -> Config:
    """The config for the shunt: comparator off, OS = 1 in single-shot (start a conversion)."""
    if mux not in MUX_NAMES:
        raise EncodeError(f"ADS1115 MUX: code {mux!r} is outside 0..7")
    return Config(
        os=1 if single_shot else 0,
        mux=mux,
        pga=pga_code(fsr_v),
        mode=1 if single_shot else 0,
        dr=dr_code(data_rate_sps),
    )


def decode_conversion(data: bytes) -> int:
    """Signed counts from the conversion register's two bytes as read (MSB first)."""
    if len(data) != 2:
        raise DecodeError(f"ADS1115 conversion register: {len(data)} bytes, need 2 (MSB, LSB)")
    counts = decode_fields(CONVERSION_LAYOUT, data)["counts"]
    assert isinstance(counts, int)
    return counts


def encode_conversion(counts: int) -> bytes:
    """The two bytes (MSB first) the chip sends for ``counts``."""
    return encode_fields(CONVERSION_LAYOUT, {"counts": counts})


def word_to_bytes(word: int) -> bytes:
    """A register value as it travels on the wire: MSB, LSB."""
    _check_word(word, "ADS1115 register")
    return word.to_bytes(2, "big")


def bytes_to_word(data: bytes) -> int:
    """A register value from its wire bytes (MSB, LSB)."""
    if len(data) != 2:
        raise DecodeError(f"ADS1115 register: {len(data)} bytes, need 2 (MSB, LSB)")
    return int.from_bytes(data, "big")


def swap_word(word: int) -> int:
    """Swap the two bytes of an SMBus word (SMBus words are little-endian; the chip is not)."""
    _check_word(word, "SMBus word")
    return ((word & 0xFF) << 8) | (word >> 8)


def signed16(word: int) -> int:
    """Two's complement of a 16-bit register value."""
    _check_word(word, "ADS1115 conversion register")
    return word - 0x10000 if word & 0x8000 else word


def is_saturated(counts: int) -> bool:
    """True when the ADC sits at a full-scale code: the input is at or beyond the range."""
    return counts >= COUNTS_MAX or counts <= COUNTS_MIN
