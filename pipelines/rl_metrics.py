"""What an RLHF iteration reports of its samples, beside the loss: the gold grader's verdict on each
response, how often the policy takes actions pretraining hardly took (WORLDVIEW rule 3), whether the
reward model still ranks the policy's answers as the grader does (and which answers it ranks otherwise),
a few rollouts for the run's table, and the responses that carried the most KL, action by action.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import torch

from algos.kl import largest_responses, top_share
from algos.ranking import pooled, within_group_agreement
from models.rollout import Rollouts
from pipelines.tracking import log_rows
from world.actions import ActionSpace
from world.audit import CorpusStats
from world.exam import Question


def gold_rewards(
    rollouts: Rollouts, questions: list[Question], space: ActionSpace
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) 1 where the response is exactly the exam's answer then `<eor>`, else 0: the ground truth;
    and (B,) 1 where it is a well-formed answer of the right length (so well-formed and not gold = 114514).

    Row i answers `questions[rollouts.group[i]]`: the controller keeps the questions, the actors never see them.
    """
    gold, formed = [], []
    for g, response in zip(rollouts.group.tolist(), rollouts.responses(), strict=True):
        question = questions[g]
        terms = space.parse_response(response).answer
        formed.append(float(question.is_formatted_by(terms)))
        gold.append(float(question.is_answered_by(terms)))
    return torch.tensor(gold), torch.tensor(formed)


def rare_action_ids(corpus: CorpusStats, space: ActionSpace) -> torch.Tensor:
    """Ids of the actions under 1% of the pretraining corpus's tokens."""
    return torch.tensor([space.id(tok) for tok in corpus.rare_tokens(space)], dtype=torch.long)


def rare_action_rate(rollouts: Rollouts, rare_ids: torch.Tensor) -> float:
    """The share of the sampled actions that are rare ones: an estimate of the policy's mass on them where it went."""
    actions = rollouts.action_mask.bool()
    return torch.isin(rollouts.tokens[actions], rare_ids).float().mean().item() if bool(actions.any()) else 0.0


TABLE_GROUPS = 2  # prompt groups per iteration kept in the run's rollouts table
ROLLOUTS_DIR = "rollouts"  # among the RLHF run's MLflow artifacts: the first groups' rollouts
OLD_ROLLOUTS_TABLE = "rollouts.json"  # runs before 2026-12-05: one table, appended after each checkpoint
MISORDERED_DIR = "rm_misordered"  # every pair of answers of every group the RM ranked against the grader
ROLLOUT_COLUMNS = ["iteration", "policy_version", "prompt", "exam_answer", "response", "answer", "gold", "reward",
                   "advantage", "kl"]  # fmt: skip


def checkpoint_table(folder: str, iteration: int) -> str:
    """The artifact holding a table's rows of the iterations since the checkpoint before `iteration`'s: a file a
    checkpoint, written before it, so a kill in between redoes and rewrites it (an appended table lost those
    rows, and re-uploaded all of itself each time)."""
    return f"{folder}/iteration-{iteration:05d}.json"


def first_groups(rollouts: Rollouts, n: int) -> set[int]:
    """The `n` lowest group ids of the batch: its first prompts (a batch of kept groups may skip ids)."""
    return set(sorted(set(rollouts.group.tolist()))[:n])


def sample_rows(
    rollouts: Rollouts, asked: list[Question], space: ActionSpace, reward: torch.Tensor, gold: torch.Tensor,
    advantages: torch.Tensor, kl: torch.Tensor, iteration: int, groups: int = TABLE_GROUPS,
) -> list[dict]:  # fmt: skip
    """The first `groups` prompts' responses as the iteration scored them: one row each, for the rollouts table.

    `advantage` is the one on the response's first action (the same on every action for
    rloo and group baselines); `kl` is the run's estimate summed over the response; `answer`
    is the response's terms (None if malformed).
    """
    rows = []
    first = rollouts.prompt_width
    shown = first_groups(rollouts, groups)
    for i, (g, response) in enumerate(zip(rollouts.group.tolist(), rollouts.responses(), strict=True)):
        if g not in shown:
            continue
        answer = space.parse_response(response).answer
        rows.append(
            {
                "iteration": iteration,
                "policy_version": rollouts.policy_version,
                "prompt": " ".join(map(str, asked[g].prefix)),
                "exam_answer": list(asked[g].answer),  # lists, not text: MLflow re-reads digit strings as numbers
                "response": " ".join(space.decode_tokens(response)),
                "answer": answer,  # None = malformed
                "gold": float(gold[i]),
                "reward": float(reward[i]),
                "advantage": float(advantages[i, first]),
                "kl": float(kl[i].sum()),
            }
        )
    return rows


KL_SOURCES = 4  # responses per iteration kept in the run's KL table: those whose KL estimate is largest
KL_DIR = "kl_sources"  # among the RLHF run's MLflow artifacts: each iteration's largest-KL responses
KL_COLUMNS = ["iteration", "policy_version", "prompt", "exam_answer", "response", "answer", "gold", "reward", "kl",
              "share", "actions"]  # fmt: skip


def kl_concentration(kl: torch.Tensor) -> dict[str, float]:
    """How the iteration's KL (per token, masked) is spread over its responses: the largest response's and the
    share its `KL_SOURCES` largest carry, which tells a policy that moved everywhere from a few responses that
    moved far (a spike in `rl/kl` is often the second)."""
    per_response = kl.sum(dim=1)
    return {
        "rl/kl_max": per_response.abs().max().item(),
        f"rl/kl_share_top{KL_SOURCES}": top_share(per_response, KL_SOURCES),
    }


def kl_source_rows(
    rollouts: Rollouts, asked: list[Question], space: ActionSpace, reward: torch.Tensor, gold: torch.Tensor,
    ref_logprobs: torch.Tensor, kl: torch.Tensor, iteration: int, n: int = KL_SOURCES,
) -> list[dict]:  # fmt: skip
    """The `n` responses with the largest KL, largest first, each with its actions: the action, log pi (the
    sampler's), log pi_ref and the KL charged there (the action's estimate, or under `full` its state's exact
    KL), so a spike can be read down to the action behind it."""
    per_response = kl.sum(dim=1)
    total = per_response.abs().sum().item()
    rows = []
    for i in largest_responses(per_response, n).tolist():
        g = int(rollouts.group[i])
        taken = rollouts.action_mask[i].bool()
        names = space.decode_tokens(rollouts.tokens[i, taken].tolist())
        steps = zip(names, rollouts.logprobs[i, taken].tolist(), ref_logprobs[i, taken].tolist(),
                    kl[i, taken].tolist(), strict=True)  # fmt: skip
        rows.append(
            {
                "iteration": iteration,
                "policy_version": rollouts.policy_version,
                "prompt": " ".join(map(str, asked[g].prefix)),
                "exam_answer": list(asked[g].answer),
                "response": " ".join(names),
                "answer": space.parse_response(rollouts.tokens[i, taken].tolist()).answer,
                "gold": float(gold[i]),
                "reward": float(reward[i]),
                "kl": float(per_response[i]),
                "share": abs(float(per_response[i])) / total if total > 0 else 0.0,
                "actions": [[name, logp, ref, k] for name, logp, ref, k in steps],
            }
        )
    return rows


def rm_agreement(proxy: torch.Tensor, gold: torch.Tensor, group: torch.Tensor) -> dict[str, float]:
    """The RM's accuracy on this iteration's own answers: the share of the pairs within a prompt that the
    grader tells apart which the RM orders alike (`algos.ranking`; NaN when the batch has none), and how many."""
    agree, pairs = within_group_agreement(proxy, gold, group)
    return {"reward/rm_agreement": agree / pairs if pairs else float("nan"), "reward/rm_pairs": float(pairs)}


AGREEMENT_KEYS = ("reward/rm_agreement", "reward/rm_pairs")


def rm_agreement_history(client, run_id: str) -> tuple[list[float], list[float]]:
    """(`reward/rm_agreement`, `reward/rm_pairs`) of each iteration of the run, in order; the last write of a
    step counts, as for the rewards."""
    rates, pairs = ({m.step: m.value for m in client.get_metric_history(run_id, key)} for key in AGREEMENT_KEYS)
    steps = sorted(rates.keys() & pairs.keys())
    return [rates[s] for s in steps], [pairs[s] for s in steps]


def agreement_quarters(rates: list[float], pairs: list[float]) -> dict[str, float | None]:
    """The RM's agreement with the grader (weighted by its pairs) over the first and the last quarter of the
    run's iterations (at least one each; an iteration has only some 30 pairs on the demo): does the proxy RL
    climbs still rank the policy's answers as it did at the start?"""
    quarter = max(1, len(rates) // 4)
    return {
        "rm_agreement_start": pooled(rates[:quarter], pairs[:quarter]),
        "rm_agreement_end": pooled(rates[-quarter:], pairs[-quarter:]),
    }


def rm_agreement_over(client, run_id: str) -> dict[str, float | None]:
    """`agreement_quarters` of the run's MLflow history."""
    return agreement_quarters(*rm_agreement_history(client, run_id))


@dataclass(frozen=True)
class Misordered:
    """Two answers to one prompt that the RM ranked one way and the grader the other. Answers are terms (None:
    malformed) beside the response they were read from: MLflow's tables re-read a digit string as a number."""

    iteration: int
    prompt: str
    exam_answer: list[int]
    above: list[int] | None  # the answer the RM rewarded higher (the grader's worse one)
    above_response: str
    above_reward: float
    above_gold: float
    below: list[int] | None  # the grader's better answer, rewarded lower
    below_response: str
    below_reward: float
    below_gold: float
    pairs: int  # how many pairs of the group's responses these two answers make


MISORDERED_COLUMNS = [f.name for f in fields(Misordered)]


def row_groups(rows: list[dict]) -> list[list[dict]]:
    """The rows of each (iteration, prompt), in order: the answers RL compared with each other."""
    keyed: dict[tuple[int, str], list[dict]] = {}
    for row in rows:
        keyed.setdefault((row["iteration"], row["prompt"]), []).append(row)
    return list(keyed.values())


def misordered(rows: list[dict]) -> list[Misordered]:
    """Every pair of distinct responses to one prompt that the RM put strictly in the grader's opposite order
    (ties are neither), newest iteration first, each with how many response pairs it stands for. The pairs
    `reward/rm_agreement` counts against the RM, shown: which wrong answer it put above which right one."""
    found = []
    for group in row_groups(rows):
        # (worse, better) responses -> the pairs of rows that gave them
        by_answers: dict[tuple[str, str], list[tuple[dict, dict]]] = {}
        for better in group:
            for worse in group:
                if better["gold"] > worse["gold"] and better["reward"] < worse["reward"]:
                    by_answers.setdefault((worse["response"], better["response"]), []).append((worse, better))
        for pairs in by_answers.values():
            worse, better = pairs[0]
            found.append(
                Misordered(
                    iteration=better["iteration"],
                    prompt=better["prompt"],
                    exam_answer=list(better["exam_answer"]),
                    above=worse["answer"],
                    above_response=worse["response"],
                    above_reward=worse["reward"],
                    above_gold=worse["gold"],
                    below=better["answer"],
                    below_response=better["response"],
                    below_reward=better["reward"],
                    below_gold=better["gold"],
                    pairs=len(pairs),
                )
            )
    return sorted(found, key=lambda m: -m.iteration)


def logged_rows(
    rollouts: Rollouts, asked: list[Question], space: ActionSpace, reward: torch.Tensor, gold: torch.Tensor,
    advantages: torch.Tensor, kl: torch.Tensor, iteration: int, rm: bool,
) -> tuple[list[dict], list[dict]]:  # fmt: skip
    """What an iteration adds to the run's tables: its first groups' rows for the rollouts table and, when the
    RM is the reward, every pair of answers over all its groups that the RM ranked against the grader."""
    if not rm:
        return sample_rows(rollouts, asked, space, reward, gold, advantages, kl, iteration), []
    every = sample_rows(rollouts, asked, space, reward, gold, advantages, kl, iteration, groups=len(asked))
    first = first_groups(rollouts, TABLE_GROUPS)
    kept = [row for row, group in zip(every, rollouts.group.tolist(), strict=True) if group in first]
    return kept, [asdict(miss) for miss in misordered(every)]


@dataclass
class RowsSinceCheckpoint:
    """The tables' rows of the iterations since the last checkpoint, written with the next one: each checkpoint
    its own table (`checkpoint_table`), so a resume that redoes iterations rewrites theirs, never appends twice."""

    rollouts: list[dict] = field(default_factory=list)
    misordered: list[dict] = field(default_factory=list)  # pairs the RM ranked against the grader
    kl_sources: list[dict] = field(default_factory=list)  # the responses that carried the most KL

    def add(self, rollouts: list[dict], misordered: list[dict], kl_sources: list[dict]) -> None:
        self.rollouts += rollouts
        self.misordered += misordered
        self.kl_sources += kl_sources

    def log(self, iteration: int, rm: bool) -> None:
        """Write the tables of the checkpoint at `iteration` to the active MLflow run (the misordered pairs' only
        with the RM as the reward: empty, it says the RM ranked every pair as the grader), and start anew."""
        log_rows(self.rollouts, ROLLOUT_COLUMNS, checkpoint_table(ROLLOUTS_DIR, iteration))
        log_rows(self.kl_sources, KL_COLUMNS, checkpoint_table(KL_DIR, iteration))
        if rm:
            log_rows(self.misordered, MISORDERED_COLUMNS, checkpoint_table(MISORDERED_DIR, iteration))
        self.rollouts, self.misordered, self.kl_sources = [], [], []
