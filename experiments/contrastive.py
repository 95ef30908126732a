"""Policy gradient vs "positive SFT minus negative SFT" on the same kind of on-policy samples.

The library's arm weights each action by its advantage (RLOO: reward minus the mean of
the other responses to the same prompt), so a group with no good response moves nothing.
The contrastive arm (WORLDVIEW rule 6 broken on purpose, here only) labels each response
+1 if its reward is above its group's median and -1 otherwise, then raises the
log-likelihood of the +1 responses and lowers it for the rest: no baseline, no clip, and
an all-wrong group is pushed down as a whole. Same SFT policy, RM, prompts, seeds, KL.
"""

from __future__ import annotations

from pathlib import Path

import torch

from actors.learner import PolicyGradientLearner, kl_term
from algos.advantages import per_token
from algos.policy_loss import Denominators, aggregate
from experiments.plots import curves
from experiments.rl_arms import register_variant, rl_experiment, summary_row
from experiments.runner import Arm, ArmResult, metric_history
from pipelines.rl_actors import Variant


def median_labels(rewards: torch.Tensor, group: torch.Tensor, action_mask: torch.Tensor) -> torch.Tensor:
    """+1 on every action of a response above its group's median reward, -1 on the rest."""
    labels = torch.full_like(rewards, -1.0)
    for g in group.unique():
        rows = group == g
        labels[rows & (rewards > rewards[rows].median())] = 1.0
    return per_token(labels, action_mask)


class PositiveNegativeSFTLearner(PolicyGradientLearner):
    """-log p on positive responses, +log p on negative ones (token mean), plus the same KL term."""

    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out) -> torch.Tensor:
        rl: dict = config.learner_config_dict
        logp, mask = fwd_out["action_logprobs"], batch["action_mask"].float()
        den = Denominators(float(batch["den_actions"][0]), float(batch["den_sequences"][0]), 1.0)
        contrastive = -batch["advantages"] * logp  # advantages carry the +-1 labels
        kl = kl_term(rl, fwd_out, batch)
        n = mask.sum().clamp(min=1)
        self.metrics.log_dict(
            {
                "loss/policy": aggregate(contrastive, mask, "token-mean", den).detach(),
                "rl/entropy": ((fwd_out["entropy"] * mask).sum() / n).detach(),
                "rl/kl_learner": ((kl * mask).sum() / n).detach(),
            },
            key=module_id,
            window=1,
        )
        return aggregate(contrastive + rl["kl_coef"] * kl, mask, "token-mean", den) * max(int(rl["world_size"]), 1)


CONTRASTIVE = register_variant(
    Variant("positive-negative-sft", learner_class=PositiveNegativeSFTLearner, advantages=median_labels)
)


def report(results: list[ArmResult], out: Path, client) -> tuple[list[dict], Path]:
    rows, series = [], {}
    for r in results:
        rl_dir = r.run_dir / "rlhf"
        series[r.arm.name] = {k: metric_history(client, rl_dir, k) for k in ("reward/gold", "rl/entropy", "rl/kl")}
        rows.append(summary_row(r) | {"entropy": r.final.get("rl/entropy", float("nan"))})
    return rows, curves(series, out / "contrastive.png", ("reward/gold", "rl/entropy", "rl/kl"))


EXPERIMENT = rl_experiment(
    name="contrastive",
    question="advantage-weighted policy gradient vs raising above-median and lowering below-median responses",
    changes=("variant",),
    arms=(Arm("policy-gradient"), Arm("positive-negative-sft", variant=CONTRASTIVE.name)),
    report=report,
)
