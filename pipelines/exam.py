"""Your own exam, posed to a run's policies: each question answered greedily, graded by your key.

    tokenmdp exam runs/demo my_exam.txt                 # the SFT and the final (RLHF) policy
    tokenmdp exam runs/demo my_exam.txt --stage rlhf --json
    tokenmdp exam models:/tokenmdp-demo/2 my_exam.txt   # a registered policy (or a checkpoint file)

The file's format is `world/user_data.py`'s (a question a line, `-> answer` for your key,
the gold grader's answer otherwise). Before any policy reads it, the exam passes the checks
every datum after pretraining passes (WORLDVIEW rule 3): each question with its answer, in
the run's spelling, through the action-space audit against the run's pretraining corpus,
and within the policy's context (a policy checkpoint carries the corpus's statistics for
this, so a registered policy needs no run directory). The results are the evaluation's own (gold pass, format
and 114514 rates, per gold-grader template), each policy's log-probability of each graded
answer, and with both policies RLHF's gain over SFT counted question by question. Nothing in
the run directory is written.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from algos.stats import fixed_and_broken, paired_difference
from models.checkpoint import load_checkpoint
from models.gpt import GPT
from models.rollout import action_logprobs
from pipelines.evaluate import answer_questions, score, verdicts
from pipelines.policy_source import Policy, named_policy, stage_policy
from pipelines.run_config import POLICY_STAGES, RunDirError
from world.actions import ActionSpace
from world.audit import CorpusStats, episode_problems
from world.exam import Question
from world.user_data import ExamQuestion, refuse_problems


@dataclass(frozen=True)
class Answered:
    """One question of the exam with each policy's answer (None: malformed) and verdict."""

    line: int
    prefix: list[int]
    answer: list[int]  # what the question is graded against: the key's, else the gold grader's
    keyed: bool
    grader_answer: list[int] | None
    disagrees: bool  # the key names another next term than the gold grader
    rule: str | None
    answers: dict[str, list[int] | None]
    passed: dict[str, bool]
    answer_logprob: dict[str, float]  # log pi(answer, <eor> | question), teacher-forced: how sure, right or wrong


@dataclass(frozen=True)
class ExamResult:
    posed_to: str  # the run directory, registered model or checkpoint file the policies came from
    stages: list[str]  # the policies' names: a run directory's stages, else the model's URI or file
    questions: list[Answered]
    metrics: dict[str, float]  # "<stage>/gold_pass_rate" etc.; "rlhf/gain_over_sft" etc. with both stages

    @property
    def disagreements(self) -> list[Answered]:
        """Questions whose key names another next term than the gold grader."""
        return [q for q in self.questions if q.disagrees]

    def to_json(self) -> str:
        return json.dumps(asdict(self))


@torch.no_grad()
def answer_logprobs(policy: GPT, space: ActionSpace, questions: list[Question]) -> list[float]:
    """log pi(answer then <eor> | question) of each question's graded answer, teacher-forced.

    A greedy verdict flips only when the right answer becomes the likeliest; its log-probability shows
    a policy moving toward it (or away) before that.
    """
    policy.eval()
    out = []
    for q in questions:
        prompt = space.encode_prompt(q.prefix)
        tokens = torch.tensor([prompt + space.encode_response(q.answer)])
        out.append(float(action_logprobs(policy, tokens, torch.ones_like(tokens))[0, len(prompt) :].sum()))
    return out


def audit_corpus(policies: list[Policy]) -> CorpusStats:
    """The pretraining corpus's statistics as a policy's checkpoint carries them, else as its run's pretraining
    checkpoint does (an RLHF policy trained before its checkpoint carried them)."""
    for policy in policies:
        if "corpus_stats" in policy.state:
            return CorpusStats.from_dict(policy.state["corpus_stats"])
    run_dir = policies[0].run_dir
    if run_dir is None:
        raise RunDirError(
            f"the audit needs the pretraining corpus's statistics, and {policies[0].name} was written before RLHF "
            "checkpoints carried them: pose the exam to its run directory"
        )
    for stage in ("sft", "pretrain"):
        path = run_dir / stage / "checkpoint.pt"
        if path.is_file():
            return CorpusStats.from_dict(load_checkpoint(path, policies[0].space)[2]["corpus_stats"])
    raise RunDirError(f"{run_dir} holds neither an SFT nor a pretraining checkpoint: the audit needs its corpus")


def exam_problems(exam: list[ExamQuestion], space: ActionSpace, stats: CorpusStats, max_len: int) -> list[str]:
    """Each question, with its answer and `<eor>`, audited against pretraining and within the context, by line."""
    problems = []
    for item in exam:
        q = item.question
        episode = space.encode_prompt(q.prefix) + space.encode_response(q.answer)
        problems += episode_problems(f"line {item.line}: the question with its answer", space.decode_tokens(episode),
                                     stats, max_len)  # fmt: skip
    return problems


def check_exam(exam: list[ExamQuestion], space: ActionSpace, stats: CorpusStats, max_len: int, source: str) -> None:
    """`exam_problems`, all at once, as a DataFileError."""
    refuse_problems(source, exam_problems(exam, space, stats, max_len))


def exam_policies(source: str | Path, stages: list[str] | None = None) -> list[Policy]:
    """A run directory's policies (`stages`; default each it holds), or the one a registry URI or file names."""
    run_dir = Path(source)
    if not run_dir.is_dir():
        if stages:
            raise RunDirError(f"--stage picks a run directory's policies; {source} is one policy")
        return [named_policy(str(source))]
    chosen = stages or [s for s in POLICY_STAGES if (run_dir / s / "checkpoint.pt").is_file()]
    return [stage_policy(run_dir, stage) for stage in chosen or ["sft"]]


def pose_exam(policies: list[Policy], exam: list[ExamQuestion], source: str = "exam") -> ExamResult:
    """Each policy's greedy answers to the exam, graded."""
    cfg, space = policies[0].cfg, policies[0].space  # one run's or one policy's: the same world
    max_len = min(p.model.cfg.max_len for p in policies)
    check_exam(exam, space, audit_corpus(policies), max_len, source)

    questions = [item.question for item in exam]
    longest_prompt = max(len(space.encode_prompt(q.prefix)) for q in questions)
    longest_answer = max(len(space.encode_response(q.answer)) for q in questions)
    # room for the longest answer, within the context of the longest prompt (rows are left-padded to it)
    budget = min(max(cfg.evaluate.max_new_tokens, longest_answer), max_len - longest_prompt)
    answers, passed, logprobs, metrics = {}, {}, {}, {}
    for stage, policy in ((p.name, p.model) for p in policies):
        answers[stage] = answer_questions(
            policy, space, questions, max_new_tokens=budget, batch_size=cfg.evaluate.batch_size
        )
        passed[stage] = verdicts(questions, answers[stage])
        metrics |= score(questions, answers[stage], prefix=f"{stage}/")
        logprobs[stage] = answer_logprobs(policy, space, questions)
        metrics[f"{stage}/answer_logprob"] = sum(logprobs[stage]) / len(questions)
    if "sft" in passed and "rlhf" in passed:
        gain, stderr = paired_difference(passed["sft"], passed["rlhf"])
        fixed, broken = fixed_and_broken(passed["sft"], passed["rlhf"])
        metrics |= {
            "rlhf/gain_over_sft": gain,
            "rlhf/gain_over_sft_stderr": stderr,
            "rlhf/fixed_over_sft": float(fixed),
            "rlhf/broken_over_sft": float(broken),
            "rlhf/answer_logprob_over_sft": metrics["rlhf/answer_logprob"] - metrics["sft/answer_logprob"],
            "rlhf/answer_more_likely": float(
                sum(after > before for before, after in zip(logprobs["sft"], logprobs["rlhf"], strict=True))
            ),
        }
    answered = [
        Answered(
            line=item.line,
            prefix=list(item.question.prefix),
            answer=list(item.question.answer),
            keyed=item.keyed,
            grader_answer=list(item.grader_answer) if item.grader_answer else None,
            disagrees=item.disagrees,
            rule=item.rule,
            answers={stage: answers[stage][i] for stage in answers},
            passed={stage: passed[stage][i] for stage in answers},
            answer_logprob={stage: logprobs[stage][i] for stage in answers},
        )
        for i, item in enumerate(exam)
    ]
    posed_to = policies[0].run_dir or policies[0].name
    return ExamResult(str(posed_to), list(answers), answered, metrics)
