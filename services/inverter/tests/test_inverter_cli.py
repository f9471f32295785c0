"""`gridzero encode/decode soyosource` through the real entry point."""

from __future__ import annotations

import json

import pytest

from gridzero.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("watts", "frame"),
    [
        ("0", "24 56 00 21 00 00 80 08"),
        ("40", "24 56 00 21 00 28 80 E0"),
        ("600", "24 56 00 21 02 58 80 AE"),
    ],
)
def test_encode_demand_golden(capsys: pytest.CaptureFixture[str], watts: str, frame: str) -> None:
    assert run(capsys, "encode", "soyosource", "demand", watts) == (0, frame + "\n", "")


def test_encode_demand_address(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "encode", "soyosource", "demand", "600", "--address", "0x25")
    assert (code, out) == (0, "25 56 00 21 02 58 80 AE\n")


def test_encode_query(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "encode", "soyosource", "query") == (0, "24 00 00 00 00 00 00 00\n", "")


@pytest.mark.parametrize(
    "text",
    [
        ["24 56 00 21 02 58 80 AE"],
        ["24560021025880AE"],
        ["24", "56", "00", "21", "02", "58", "80", "AE"],
    ],
)
def test_decode_demand(capsys: pytest.CaptureFixture[str], text: list[str]) -> None:
    code, out, _ = run(capsys, "decode", "soyosource", *text)
    assert code == 0
    assert json.loads(out) == {"frame": "demand", "address": "0x24", "power_w": 600}


def test_decode_query(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "decode", "soyosource", "2400000000000000")
    assert json.loads(out) == {"frame": "status_query", "address": "0x24"}
    assert code == 0


def test_decode_status_reply(capsys: pytest.CaptureFixture[str]) -> None:
    # syssi soyosource_modbus.cpp "Soyosource info frame" comment
    code, out, _ = run(
        capsys, "decode", "soyosource", "23 01 01 00 00 02 3E 00 17 00 EF 64 02 9E B5"
    )
    assert code == 0
    doc = json.loads(out)
    assert doc["frame"] == "status_reply"
    assert doc["battery_voltage_v"] == 57.4
    assert doc["battery_current_a"] == 2.3
    assert doc["ac_voltage_v"] == 239.0
    assert doc["ac_frequency_hz"] == 50.0
    assert doc["temperature_c"] == 37.0
    assert doc["checksum"] == "0xB5"
    assert doc["checksum_verified"] is False


def test_decode_implausible_reply_and_override(capsys: pytest.CaptureFixture[str]) -> None:
    hot = "23 01 01 00 00 02 3E 00 17 00 EF 64 0C 1C B5"
    code, _, err = run(capsys, "decode", "soyosource", hot)
    assert code == 2
    assert "temperature 280 °C is above the plausible 200 °C" in err
    code, out, _ = run(capsys, "decode", "soyosource", "--no-plausibility", hot)
    assert code == 0
    assert json.loads(out)["temperature_c"] == 280.0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["encode", "soyosource", "demand", "-1"], "outside 0..65535"),
        (["encode", "soyosource", "demand", "70000"], "outside 0..65535"),
        (["encode", "soyosource", "demand", "1.5"], "not a whole number"),
        (["encode", "soyosource", "demand", "abc"], "not a whole number"),
        (["encode", "soyosource", "demand", "5", "--address", "0x100"], "outside 0x00..0xFF"),
        (["encode", "soyosource", "demand", "5", "--address", "zz"], "not a number"),
        (["encode", "soyosource"], "required"),
        (["encode", "soyosource", "frobnicate"], "invalid choice"),
        (["decode", "soyosource", "24 56 00 21 02 58 80 AF"], "checksum 0xaf, expected 0xae"),
        (["decode", "soyosource", "24 56 00"], "3 bytes, need 8"),
        (["decode", "soyosource", "zz"], "not hex"),
        (["decode", "soyosource", "245"], "odd number of digits"),
        (["decode", "soyosource"], "required"),
    ],
)
def test_bad_input_is_usage_error(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert message in err
