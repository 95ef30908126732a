"""The table across RL seeds, by hand: each arm's spread, its difference from the first arm, its own columns' means."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from experiments.across_seeds import SHARED_COLUMNS, across_seeds
from experiments.rl_arms import summary_row
from experiments.runner import Arm, ArmResult


def result(arm: Arm, seed: int, gold: float, gain: float, kl: float) -> ArmResult:
    final = {"eval/gold_pass_rate": gold, "eval/gain_over_sft": gain, "rl/kl": kl}
    return ArmResult(arm, SimpleNamespace(rl_seed=seed), Path("."), final)


def test_each_arm_gets_its_spread_its_paired_difference_and_the_mean_of_its_own_columns():
    base, low = Arm("float32"), Arm("bfloat16")
    arms = [base, low, Arm("float32-seed1", repeats="float32"), Arm("bfloat16-seed1", repeats="bfloat16")]
    results = [result(arms[0], 0, 0.78, 0.02, 0.1), result(arms[1], 0, 0.76, 0.00, 0.3),
               result(arms[2], 1, 0.74, -0.02, 0.2), result(arms[3], 1, 0.76, 0.00, 0.5)]  # fmt: skip
    table = [  # the experiment's own rows, a row per arm and seed: a gap, a label, and a shared column
        {"arm": "float32", "KL": 0.1, "largest gap": 1e-4, "note": "x", "RL seed": 0},
        {"arm": "bfloat16", "KL": 0.3, "largest gap": 0.5, "note": "y", "RL seed": 0},
        {"arm": "float32-seed1", "KL": 0.2, "largest gap": 3e-4, "note": "x", "RL seed": 1},
        {"arm": "bfloat16-seed1", "KL": 0.5, "largest gap": 0.4, "note": "y", "RL seed": 1},
    ]
    first, second = across_seeds(results, table)
    assert (first["arm"], first["seeds"], second["arm"]) == ("float32", "0, 1", "bfloat16")
    assert first["gold pass (mean)"] == pytest.approx(0.76) and second["gold pass (mean)"] == pytest.approx(0.76)
    assert first["± sd over seeds"] == pytest.approx(0.04 / 2**0.5) and second["± sd over seeds"] == 0
    assert first["vs first arm"] is None and second["vs first arm"] == pytest.approx(0.0)
    assert second["± stderr"] == pytest.approx(0.02)  # differences -0.02 and +0.02: sd 0.04/sqrt(2), over sqrt(2)
    assert second["KL (mean)"] == pytest.approx(0.4)
    assert first["largest gap"] == pytest.approx(2e-4) and second["largest gap"] == pytest.approx(0.45)
    assert "note" not in first and "RL seed" not in first and "KL" not in first  # text, the seed, shared: left out
    assert across_seeds(results)[1].keys() == second.keys() - {"largest gap"}  # without a table: the shared ones


def test_the_shared_columns_are_every_rl_comparisons_summary_row():
    row = summary_row(result(Arm("a"), 0, 0.7, 0.01, 0.1))
    assert set(row) <= SHARED_COLUMNS
