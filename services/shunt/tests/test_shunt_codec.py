"""ADS1115 register codec: golden words with provenance, byte order, fuzz."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridzero.codec import CodecError, DecodeError, EncodeError
from gridzero_shunt.codec import (
    RESET_CONFIG,
    Config,
    bytes_to_word,
    decode_config,
    decode_conversion,
    dr_code,
    encode_config,
    encode_conversion,
    is_saturated,
    lsb_v,
    pga_code,
    shunt_config,
    signed16,
    swap_word,
    word_to_bytes,
)

# Config words for the shunt, computed from the TI SBAS444 config register table
# and TI SBAS444 register map (reset value).
GOLDEN_CONFIGS = [
    # word, single_shot, rate, fsr, provenance
    (
        0x8B03,
        True,
        8,
        0.256,
        "TI SBAS444 config register table: single-shot, AIN0-AIN1, +-0.256 V, 8 SPS, comparator off",
    ),
    (0x8B83, True, 128, 0.256, "TI SBAS444 config register table: same at 128 SPS"),
    (0x0A83, False, 128, 0.256, "TI SBAS444 config register table: continuous 128 SPS"),
]


@pytest.mark.parametrize(("word", "single", "rate", "fsr", "source"), GOLDEN_CONFIGS)
def test_golden_config_words_encode_and_decode(
    word: int, single: bool, rate: int, fsr: float, source: str
) -> None:
    assert encode_config(shunt_config(fsr, rate, single_shot=single)) == word, source
    config = decode_config(word)
    assert config.single_shot is single
    assert config.data_rate_sps == rate
    assert config.fsr_v == fsr
    assert config.mux_name == "AIN0-AIN1"
    assert config.comp_que == 3


def test_reset_config_word_is_the_datasheet_default() -> None:
    # TI SBAS444 register map: config resets to 0x8583 = OS 1, AIN0-AIN1, +-2.048 V, single-shot, 128 SPS.
    config = decode_config(RESET_CONFIG)
    assert config == Config()
    assert config.describe() == {
        "os": 1,
        "mux": "AIN0-AIN1",
        "fsr_v": 2.048,
        "mode": "single",
        "data_rate_sps": 128,
        "comp_mode": "traditional",
        "comp_pol": "active_low",
        "comp_lat": False,
        "comp_que": "off",
    }


def test_golden_conversion_100_amps() -> None:
    # 100 A / 75 mV shunt at +-0.256 V (TI SBAS444 LSB table): 75 mV at +-0.256 V = 9600 counts = 0x2580 (100 A on a 100 A / 75 mV shunt).
    assert decode_conversion(bytes([0x25, 0x80])) == 9600
    assert 9600 * lsb_v(0.256) == pytest.approx(0.075)
    assert encode_conversion(9600) == b"\x25\x80"


def test_conversion_sign_and_full_scale_codes() -> None:
    # TI SBAS444 data format: two's complement, +FS 0x7FFF, -FS 0x8000.
    assert decode_conversion(b"\x7f\xff") == 32767
    assert decode_conversion(b"\x80\x00") == -32768
    assert decode_conversion(b"\xff\xff") == -1
    assert decode_conversion(b"\xda\x80") == -9600
    assert is_saturated(32767)
    assert is_saturated(-32768)
    assert not is_saturated(32766)
    assert not is_saturated(-32767)


def test_byte_order_helpers() -> None:
    assert word_to_bytes(0x8B83) == b"\x8b\x83"
    assert bytes_to_word(b"\x8b\x83") == 0x8B83
    # An SMBus word read of 0x2580 on the wire arrives as 0x8025.
    assert swap_word(0x8025) == 0x2580
    assert signed16(0xDA80) == -9600
    assert (
        signed16(0x8000) == -32768
    )  # not -32767 (the "subtract 65535" bug of a widely copied smbus example)


def test_lsb_sizes_match_the_datasheet_table() -> None:
    # TI SBAS444 data format: LSB per range.
    expected = {
        6.144: 187.5e-6,
        4.096: 125e-6,
        2.048: 62.5e-6,
        1.024: 31.25e-6,
        0.512: 15.625e-6,
        0.256: 7.8125e-6,
    }
    for fsr, lsb in expected.items():
        assert lsb_v(fsr) == pytest.approx(lsb)


def test_pga_codes_5_6_7_all_read_as_0256() -> None:
    for code in (5, 6, 7):
        assert decode_config(0x8003 | code << 9).fsr_v == 0.256


@pytest.mark.parametrize("bad", [0.3, 0.0, 5.0, float("nan")])
def test_impossible_pga_is_refused(bad: float) -> None:
    with pytest.raises(EncodeError, match="full-scale range"):
        pga_code(bad)


def test_impossible_rate_is_refused() -> None:
    with pytest.raises(EncodeError, match="100 SPS is not one of 8, 16"):
        dr_code(100)


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x01\x02\x03"])
def test_conversion_length_is_checked(data: bytes) -> None:
    with pytest.raises(DecodeError, match=f"{len(data)} bytes, need 2"):
        decode_conversion(data)


@pytest.mark.parametrize("word", [-1, 0x10000, True, 1.5])
def test_config_word_range_is_checked(word: object) -> None:
    with pytest.raises(DecodeError, match="16-bit"):
        decode_config(word)  # type: ignore[arg-type]


@settings(max_examples=200)
@given(st.integers(min_value=0, max_value=0xFFFF))
def test_every_config_word_round_trips(word: int) -> None:
    assert encode_config(decode_config(word)) == word


@settings(max_examples=200)
@given(st.integers())
def test_fuzz_config_decoder_gives_value_or_codec_error(word: int) -> None:
    try:
        config = decode_config(word)
    except CodecError:
        return
    assert 0 <= word <= 0xFFFF
    assert config.fsr_v > 0


@settings(max_examples=200)
@given(st.binary(max_size=4))
def test_fuzz_conversion_decoder_gives_value_or_codec_error(data: bytes) -> None:
    try:
        counts = decode_conversion(data)
    except CodecError:
        return
    assert -32768 <= counts <= 32767
    assert encode_conversion(counts) == data


@settings(max_examples=200)
@given(st.integers(min_value=0, max_value=0xFFFF))
def test_swap_is_an_involution_and_matches_bytes(word: int) -> None:
    assert swap_word(swap_word(word)) == word
    assert word_to_bytes(swap_word(word)) == word_to_bytes(word)[::-1]
