"""`gridzero decode/encode vw-module` through the real entry point."""

from __future__ import annotations

import json

import pytest

from gridzero.cli import main


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_decode_cells(capsys: pytest.CaptureFixture[str]) -> None:
    # Golden frame from test_bms_codec: cells 3700, 3701, 4095, 3000 mV (Tom-evnut/VW-bms BMSModule.cpp, VWtest.dbc).
    code, out, _ = _run(capsys, "decode", "vw-module", "1B0#5AC3A88D7AC1D007")
    assert code == 0
    frame = json.loads(out)
    assert frame["type"] == "cells"
    assert frame["module"] == 1
    assert frame["cells_v"] == [3.7, 3.701, 4.095, 3.0]


def test_decode_temperatures_both_variants(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "decode", "vw-module", "1A555403#827B010900000000")
    assert code == 0
    frame = json.loads(out)
    assert frame["temperatures_c"] == [25.0, 21.5]
    assert frame["balancing_cells"] == [1, 9, 12]
    code, out, _ = _run(
        capsys, "decode", "vw-module", "--temp-variant", "tom", "1A555403#8200010986F00000"
    )
    assert json.loads(out)["temperatures_c"] == [22.0, 24.0, None]


def test_decode_poll_and_balance(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(
        capsys, "decode", "vw-module", "0BA#4501280000000030", "1A55541E#0800000008000000"
    )
    assert code == 0
    poll, balance = (json.loads(line) for line in out.splitlines())
    assert poll["kind"] == "request"
    assert balance["module"] == 3
    assert balance["scheme"] == "gen1-module3"
    assert balance["cells_on"] == [1, 5]


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ("123#0000000000000000", "unknown standard CAN ID 0x123"),
        ("1B4#00", "cell voltage frame 0x1B4: 1 data bytes, need 8"),
        ("1B4:00", "not in the form <ID>#<hexdata>"),
        ("1B4#0G", "is not hex"),
        ("000000BA#0000000000000000", "unknown extended CAN ID 0xBA"),
    ],
)
def test_decode_bad_input_is_usage_error(
    capsys: pytest.CaptureFixture[str], frame: str, message: str
) -> None:
    code, out, err = _run(capsys, "decode", "vw-module", frame)
    assert code == 2
    assert out == ""
    assert message in err


def test_encode_balance(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(
        capsys, "encode", "vw-module", "balance", "--module", "1", "--cells", "1,5,9"
    )
    assert code == 0
    assert out.splitlines() == ["1A55540A#0800000008000000", "1A55540B#08000000FEFEFEFE"]
    code, out, _ = _run(
        capsys, "encode", "vw-module", "balance", "--module", "3", "--cells", "2", "--gen1-module3"
    )
    assert out.splitlines()[0].startswith("1A55541E#")


def test_encode_poll(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "encode", "vw-module", "poll")
    assert code == 0
    assert out.splitlines() == ["0BA#0000000000000000", "0BA#4501280000000030"]


def test_encode_cells_decodes_back(capsys: pytest.CaptureFixture[str]) -> None:
    mv = ",".join(str(3900 + i) for i in range(12))
    code, out, _ = _run(capsys, "encode", "vw-module", "cells", "--module", "2", "--mv", mv)
    assert code == 0
    lines = out.splitlines()
    assert [line.split("#")[0] for line in lines] == ["1B4", "1B5", "1B6"]
    code, out, _ = _run(capsys, "decode", "vw-module", *lines)
    cells = [c for line in out.splitlines() for c in json.loads(line)["cells_mv"]]
    assert cells == [3900 + i for i in range(12)]


def test_encode_temps(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(
        capsys,
        "encode",
        "vw-module",
        "temps",
        "--module",
        "3",
        "--temps",
        "25,21.5",
        "--balance",
        "1,9,12",
    )
    assert code == 0
    assert out.strip() == "1A555403#827B010900000000"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["balance", "--module", "9", "--cells", "1"], "module 9 has no balancing ID"),
        (["balance", "--module", "1", "--cells", "13"], "outside 1..12"),
        (["balance", "--module", "1", "--cells", "a"], "not a comma-separated list"),
        (["cells", "--module", "1", "--mv", "900"], "outside"),
        (["temps", "--module", "1", "--temps", "hot"], "'hot' is not a number"),
        (["frobnicate"], "invalid choice"),
        ([], "required"),
    ],
)
def test_encode_bad_input_is_usage_error(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _, err = _run(capsys, "encode", "vw-module", *argv)
    assert code == 2
    assert message in err
