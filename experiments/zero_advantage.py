"""Groups with no advantage: train on them, drop them, or sample more prompts until the batch is full of signal.

Under a group baseline a prompt whose G answers earned one reward has no advantage (on the demo about two
prompts in three: the SFT policy often writes one answer G times). The arms: `keep` trains on every group (the
default: the silent ones add only their KL term and dilute the token mean), `drop` leaves them out
(`rl.drop_zero_advantage_groups`), `refill` samples up to three more rounds of prompts until the batch holds
`prompts_per_iteration` groups with signal (`rl.dynamic_sampling_rounds`, DAPO's dynamic sampling), paying for it in
sampling time, which the plot shows against wall seconds. Same SFT policy, reward model and seeds in every arm.
"""

from __future__ import annotations

from pathlib import Path
from statistics import mean

from experiments.rl_arms import over_iterations, rl_experiment, wall_clock_report
from experiments.runner import Arm, ArmResult

METRICS = ("eval/gold_pass_rate", "reward/gold", "rl/kl")  # held-out, what was sampled, KL
ARMS = (
    Arm("keep"),
    Arm("drop", ("rl.drop_zero_advantage_groups=true",)),
    Arm("refill", ("rl.dynamic_sampling_rounds=3",)),
)


def report(results: list[ArmResult], out: Path, client) -> tuple[list[dict], Path]:
    def columns(r: ArmResult) -> dict:
        return {
            "silent groups": over_iterations(client, r, "rl/zero_advantage_groups", mean),  # of every group sampled
            "responses trained": over_iterations(client, r, "rl/trained_responses", mean),
            "sampling rounds": over_iterations(client, r, "rl/sample_rounds", mean, absent=1.0),  # dynamic sampling's
        }

    return wall_clock_report(results, client, out / "zero_advantage.png", METRICS, columns)


EXPERIMENT = rl_experiment(
    name="zero-advantage",
    question="what do groups without advantage cost: train on them, drop them, or sample until the batch has none?",
    changes=("rl.drop_zero_advantage_groups", "rl.dynamic_sampling_rounds"),
    arms=ARMS,
    report=report,
)
