"""The household generator: deterministic per seed, varied, valid, every appliance drawn; and
`gridzero bench --households` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gridzero.errors import UsageError
from gridzero_tools.bench.cli import main
from gridzero_tools.bench.households import APPLIANCES, MAX_LOAD_W, generate, write_household
from gridzero_tools.bench.population import distribution, report, target_counts
from gridzero_tools.sim.params import load_plant
from gridzero_tools.sim.profile import load_profile


def test_same_seed_same_households_other_seed_other_ones() -> None:
    a = generate(4, 1, 600.0)
    b = generate(4, 1, 600.0)
    c = generate(4, 2, 600.0)
    assert [(h.profile, h.plant, h.features) for h in a] == [
        (h.profile, h.plant, h.features) for h in b
    ]
    for x, y in zip(a, c, strict=True):
        assert x.profile.load_w != y.profile.load_w
    # Household i does not depend on how many are asked for.
    assert generate(2, 1, 600.0)[1].profile == a[1].profile


def test_profiles_are_valid_1_s_rows_and_varied() -> None:
    households = generate(20, 1, 900.0)
    for hh in households:
        p = hh.profile
        assert len(p.t_s) == 901
        assert all(b - a == 1.0 for a, b in zip(p.t_s, p.t_s[1:], strict=False))
        assert all(0.0 <= x <= MAX_LOAD_W for x in p.load_w)
        assert all(0.0 <= x <= 20000.0 for x in p.pv_w)
    assert len({hh.plant.meter.period_s for hh in households}) > 1
    assert len({round(max(hh.profile.load_w)) for hh in households}) == len(households)


def test_every_appliance_kind_appears_over_100_households() -> None:
    seen = {f for hh in generate(100, 1, 600.0) for f in hh.features}
    assert set(APPLIANCES) <= seen
    assert {"clear sky", "broken sky", "overcast sky", "winter", "summer"} <= seen


def test_written_files_replay_the_same_household(tmp_path: Path) -> None:
    hh = generate(1, 3, 300.0)[0]
    csv_path, yaml_path = write_household(hh, tmp_path)
    assert load_plant(yaml_path) == hh.plant
    profile = load_profile(csv_path)
    assert profile.load_w == hh.profile.load_w
    assert profile.pv_w == hh.profile.pv_w


def test_bad_counts_and_durations_are_refused() -> None:
    with pytest.raises(UsageError, match="--households 0"):
        generate(0, 1)
    with pytest.raises(UsageError, match="duration 10 s"):
        generate(1, 1, 10.0)
    with pytest.raises(UsageError, match="--households draws its own"):
        main(["--households", "2", "--profile", "load-steps"])


def test_cli_households_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "hh"
    code = main(
        [
            "--households", "3", "--duration", "600", "--seed", "1", "--no-progress",
            "--controllers", "gridzero,housebatt,oracle", "--households-out", str(out), "--json",
        ]
    )  # fmt: skip
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    cases = doc["cases"]
    assert len(cases) == 3
    assert doc["households"]["measure"] == "excess_over_meter_oracle_wh"
    names = {row["controller"] for row in doc["households"]["distribution"]}
    assert {"gridzero", "housebatt"} <= names
    for case in cases:
        assert case["features"]
        assert Path(case["files"]["profile"]).exists()
        assert load_plant(case["files"]["plant"]).name == case["plant"]
        assert {r["controller"] for r in case["controllers"]} >= {"gridzero", "oracle-meter"}
    # The table form names the worst household and how to replay it.
    main(["--households", "1", "--duration", "120", "--controllers", "gridzero",
          "--households-out", str(out), "--no-progress"])  # fmt: skip
    text = capsys.readouterr().out
    assert "worst household" in text
    assert "replay: gridzero bench --profile" in text


def test_the_distribution_carries_the_most_rectifier_starts_in_one_household() -> None:
    def case(name: str, starts: int) -> dict[str, object]:
        rows = [
            {"controller": "gridzero", "abs_grid_wh": 10.0, "charger_starts": starts},
            {"controller": "oracle-meter", "abs_grid_wh": 9.0, "charger_starts": 2 * starts},
        ]
        return {"profile": name, "controllers": rows}

    docs = [case("hh-a", 3), case("hh-b", 7), case("hh-c", 0)]
    by = {s.controller: s for s in distribution(docs, "abs_grid_wh")}
    assert by["gridzero"].most_charger_starts == 7
    assert by["oracle-meter"].most_charger_starts == 14
    assert by["gridzero"].as_dict()["most_charger_starts"] == 7
    text = report(docs, "abs_grid_wh", 1.0, 1)
    assert "starts" in text.splitlines()[1]


def test_within_half_is_counted_as_written_and_with_the_baseline_floored_at_the_oracle() -> None:
    def case(gridzero: float, housebatt: float, opendtu_violations: int = 0) -> dict[str, object]:
        rows = [
            {"controller": "gridzero", "abs_grid_wh": 100.0 + gridzero},
            {"controller": "housebatt", "abs_grid_wh": 100.0 + housebatt},
            {"controller": "opendtu", "abs_grid_wh": 90.0, "violations_total": opendtu_violations},
            {"controller": "oracle-meter", "abs_grid_wh": 100.0},
        ]
        return {"profile": "hh", "controllers": rows}

    docs = [
        case(1.0, 4.0, opendtu_violations=3),  # within half either way
        case(0.0, -2.0, opendtu_violations=1),  # level with the oracle, a baseline beats it
        case(-1.5, -2.0, opendtu_violations=1),  # beats the oracle by more than half the lead
        case(-1.0, -2.0, opendtu_violations=1),  # exactly half: met
        case(3.0, 4.0, opendtu_violations=2),  # more than half
    ]
    counts = target_counts(docs)
    assert counts["households_compared"] == 5
    assert counts["gridzero_within_half_of_best_baseline_as_written"] == 3
    assert counts["gridzero_within_half_of_best_baseline"] == 4
    assert counts["gridzero_worse_than_a_baseline"] == 3
