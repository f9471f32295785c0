"""`gridzero decode/encode ads1115` through the top-level command."""

from __future__ import annotations

import json

import pytest

from gridzero.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_decode_100_amps(capsys: pytest.CaptureFixture[str]) -> None:
    # 100 A / 75 mV shunt at +-0.256 V (TI SBAS444 LSB table): 0x2580 = 9600 counts = 75 mV = 100 A on a 100 A / 75 mV shunt.
    code, out, _ = run(
        capsys, "decode", "ads1115", "--pga", "0.256", "--shunt", "100A/75mV", "0x2580"
    )
    assert code == 0
    data = json.loads(out)
    assert data["counts"] == 9600
    assert data["voltage_v"] == pytest.approx(0.075)
    assert data["current_a"] == pytest.approx(100.0)
    assert data["saturated"] is False


def test_decode_voltage_only_and_negative(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "decode", "ads1115", "--pga", "0.256", "0xDA80")
    assert code == 0
    data = json.loads(out)
    assert data["counts"] == -9600
    assert data["voltage_v"] == pytest.approx(-0.075)
    assert "current_a" not in data


def test_decode_smbus_word_swaps(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "decode", "ads1115", "--smbus-word", "--shunt", "100A/75mV", "0x8025"
    )
    assert code == 0
    assert json.loads(out)["current_a"] == pytest.approx(100.0)


def test_decode_saturated_gives_no_current(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "decode", "ads1115", "--shunt", "100A/75mV", "0x7FFF")
    assert code == 0
    data = json.loads(out)
    assert data["saturated"] is True
    assert data["current_a"] is None


def test_decode_config_word(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "decode", "ads1115", "--config", "0x8583")
    assert code == 0
    data = json.loads(out)
    assert data["fsr_v"] == 2.048
    assert data["mode"] == "single"
    assert data["data_rate_sps"] == 128
    assert data["fields"]["comp_que"] == 3


@pytest.mark.parametrize(
    ("args", "word"),
    [
        (["--pga", "0.256", "--rate", "128", "--mode", "single"], "0x8B83"),
        (["--pga", "0.256", "--rate", "8", "--mode", "single"], "0x8B03"),
        (["--pga", "0.256", "--rate", "128", "--mode", "continuous"], "0x0A83"),
    ],
)
def test_encode_config_golden(
    capsys: pytest.CaptureFixture[str], args: list[str], word: str
) -> None:
    # TI SBAS444 config register table words
    code, out, _ = run(capsys, "encode", "ads1115", "config", *args)
    assert code == 0
    assert out.strip() == word


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["decode", "ads1115", "--pga", "0.3", "0x2580"], "--pga '0.3'"),
        (["decode", "ads1115", "--pga", "abc", "0x2580"], "full-scale range must be one of"),
        (["decode", "ads1115", "0xZZ"], "is not hex"),
        (["decode", "ads1115", "0x25"], "has 1 bytes"),
        (["decode", "ads1115"], "give either a conversion value or --config"),
        (["decode", "ads1115", "--config", "0x8583", "0x2580"], "give either"),
        (["decode", "ads1115", "--shunt", "100/75", "0x2580"], "<amperes>A/<millivolts>mV"),
        (["decode", "ads1115", "--shunt", "0A/75mV", "0x2580"], "must be positive"),
        (["encode", "ads1115", "config", "--pga", "7"], "--pga '7'"),
        (["encode", "ads1115", "config", "--rate", "100"], "--rate 100"),
        (["encode", "ads1115", "config", "--mux", "9"], "--mux 9"),
        (["encode", "ads1115", "threshold"], "invalid choice"),
    ],
)
def test_bad_input_is_usage_error(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert message in err
