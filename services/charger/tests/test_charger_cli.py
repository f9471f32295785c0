"""`gridzero decode r48` and `gridzero encode r48` through the real entry point."""

from __future__ import annotations

import json

import pytest

from gridzero.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["voltage", "52.5"], ["0607FF83#03F0002142520000"]),  # issue 5 golden
        (["voltage", "48", "--offline"], ["0607FF83#03F0002442400000"]),
        (["current", "62.5", "--rated", "62.5"], ["0607FF83#03F000223F9AE148"]),
        (
            ["current", "6.25", "--rated", "62.5", "--fraction-at-rated", "1.0", "--offline"],
            ["0607FF83#03F000193DCCCCCD"],
        ),
        (["voltage", "56", "--offline", "--cells", "14"], ["0607FF83#03F0002442600000"]),
        (["fraction", "0.5"], ["0607FF83#03F000223F000000"]),
        (["dc-off"], ["06080783#00F0818000000000"]),
        (["dc-on"], ["06080783#00F0018000000000"]),
        (["dc-on", "--fan-full"], ["06080783#00F0118000000000"]),
        (["read", "output-voltage"], ["06000783#01F0000100000000"]),
        (["read", "status"], ["06000783#01F0004000000000"]),
        (["read", "all"], ["06000783#00F0008000000000"]),
        (["ac-input-limit", "10"], ["0607FF83#03F0001A41200000"]),
        (["walk-in", "10"], ["0607FF83#03F0003200010000", "0607FF83#03F0002941200000"]),
        (["walk-in", "off"], ["0607FF83#03F0003200000000"]),
    ],
)
def test_encode(capsys: pytest.CaptureFixture[str], argv: list[str], expected: list[str]) -> None:
    code, out, _ = run(capsys, "encode", "r48", *argv)
    assert code == 0
    assert out.split() == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["voltage", "58.6"], "58.6 V is outside 41..58.5 V"),
        (["voltage", "nan"], "not a finite number"),
        (["voltage", "inf", "--offline"], "not a finite number"),
        # the stored fallback is bounded by the cells (default one 12S module): 48 V at most
        (["voltage", "48.1", "--offline"], "48.1 V is outside 41..48 V (12 cells x 4 V"),
        (["voltage", "50.5", "--cells", "12"], "50.5 V is outside 41..50.4 V"),
        (
            ["current", "62.5", "--rated", "62.5", "--offline"],
            "the stored fallback current is the least",
        ),
        (["voltage", "abc"], "'abc' is not a number"),
        (["voltage"], "required"),
        (["current", "80"], "80 A is outside 5.17..62.50 A"),
        (["current", "2"], "outside"),
        (["current", "30", "--rated", "0"], "must be > 0"),
        (["fraction", "1.5"], "1.5 is outside 0.1..1.21"),
        (["read", "bogus"], "unknown quantity 'bogus'"),
        (["walk-in", "soon"], "neither a number"),
        (["walk-in", "500"], "outside"),
        (["frobnicate"], "invalid choice"),
        ([], "say what to encode"),
    ],
)
def test_encode_bad_input_exits_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, "encode", "r48", *argv)
    assert code == 2
    assert out == ""
    assert message in err


def test_decode_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "decode", "r48", "0607FF83#03F0002142520000")
    assert code == 0
    assert json.loads(out) == {
        "id": "0607FF83",
        "type": "SetPoint",
        "register": "0x21",
        "name": "online_voltage",
        "value": 52.5,
        "unit": "V",
    }


def test_decode_several_frames_one_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "decode",
        "r48",
        "060F8003#41F0000142520000",
        "060F8003#41F0004080000000",
        "060F8003#43F3002400000000",
        "06080783#00F0818000000000",
    )
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0]["quantity"] == "output_voltage"
    assert lines[0]["value"] == 52.5
    assert lines[1]["active"] == ["over_voltage"]
    assert (lines[2]["type"], lines[2]["error"]) == ("ErrorReply", "invalid_data")
    assert lines[3]["dc_off"] is True


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ("12345678#41F0000142520000", "not an R48 ID"),
        ("060F8003#41F00001", "4 data bytes, need 8"),
        ("060F8003#41F000017FC00000", "not a finite number"),
        ("060F8003-41F0", "not in the form <ID>#<hexdata>"),
        ("060F8003#XYZW", "not hex"),
    ],
)
def test_decode_bad_input_exits_2(
    capsys: pytest.CaptureFixture[str], frame: str, message: str
) -> None:
    code, out, err = run(capsys, "decode", "r48", frame)
    assert code == 2
    assert out == ""
    assert message in err


def test_decode_without_frames_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "decode", "r48")
    assert code == 2
    assert "required" in err
