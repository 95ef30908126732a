"""Tables the CLI prints about the world."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Collection
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.progress import track
from rich.table import Table

from conf.schema import WorldConfig
from pipelines.table_cell import cell
from world.actions import ActionSpace
from world.corpus import load_oeis, render, sample_series, split_of
from world.exam import Question, iter_bank
from world.grader import analyze, grade
from world.user_data import read_sequences

if TYPE_CHECKING:
    from conf.describe import Setting
    from pipelines.best_of import BestOf
    from pipelines.curve import Point
    from pipelines.exam import ExamResult
    from pipelines.rl_metrics import Misordered
    from pipelines.rollouts import Agreement, KLSources
    from pipelines.runs import RunLine
    from pipelines.status import RunStatus
    from pipelines.trace import Trace

console = Console()


def build_bank_with_progress(world: WorldConfig) -> list[Question]:
    bank = iter_bank(world.seed, world.max_difficulty)
    return list(track(islice(bank, world.bank_size), total=world.bank_size, description="exam bank", console=console))


def print_world_stats(world: WorldConfig, documents: int) -> None:
    space = ActionSpace(digit_order=world.digit_order)
    oeis = load_oeis()
    splits = Counter(split_of(s.source) for s in oeis)
    rng = random.Random(world.seed)
    extra = read_sequences(Path(world.extra_sequences)) if world.extra_sequences else ()
    stream = sample_series("train", world.seed, world.oeis_weight, world.family_weights, extra, world.extra_weight)
    docs = [render(s, space, rng, world.query_rate, world.max_tokens) for s in islice(stream, documents)]
    token_counts = Counter(space.tokens[i] for doc in docs for i in doc)

    table = Table(title="pretraining corpus")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("action space", f"{space.size} tokens, digits {space.digit_order} first")
    table.add_row("OEIS sequences (train/val/test)", f"{splits['train']}/{splits['val']}/{splits['test']}")
    if extra:
        table.add_row(f"your sequences ({world.extra_sequences}, train only)", str(len(extra)))
    table.add_row(f"sampled documents (first {documents})", str(len(docs)))
    table.add_row("mean tokens per document", f"{sum(map(len, docs)) / max(len(docs), 1):.1f}")
    table.add_row("documents in question form", str(sum(space.query_id in d for d in docs)))
    table.add_row(
        "tokens never sampled", ", ".join(t for t in space.tokens if t != "<pad>" and not token_counts[t]) or "none"
    )
    console.print(table)

    bank = build_bank_with_progress(world)
    by_template = Counter(q.template for q in bank)
    by_split = Counter(q.split for q in bank)
    table = Table(title=f"exam bank (seed {world.seed})")
    table.add_column("template")
    table.add_column("questions", justify="right")
    table.add_column("difficulty", justify="right")
    difficulty = {q.template: q.difficulty for q in bank}
    for name, count in sorted(by_template.items()):
        table.add_row(name, str(count), str(difficulty[name]))
    table.add_row("total (train/eval)", f"{len(bank)} ({by_split['train']}/{by_split['eval']})", "")
    console.print(table)


CLASSICS = ([1, 2, 4, 8, 16], [2, 3, 5, 7, 11], [1, 1, 2, 3, 5, 8], [1, 4, 9, 16, 25], [1, 3, 6, 10, 15])


def print_sample_questions(world: WorldConfig) -> None:
    """The essay's game: the exam's answer, and how the grader scores the tempting others."""
    table = Table(title="the gold grader on classic questions")
    for col in ("prefix", "status", "exam answer", "rule", "31", "114514"):
        table.add_column(col)
    for prefix in CLASSICS:
        v = analyze(prefix)
        table.add_row(
            " ".join(map(str, prefix)),
            v.status,
            str(v.answer[0]) if v.answer else "-",
            v.rule or "-",
            str(grade(prefix, [31])),
            str(grade(prefix, [114514])),
        )
    console.print(table)


def print_settings(rows: list[Setting], title: str) -> None:
    """`tokenmdp config --docs`: a setting a row, the ones a preset or --set changed marked."""
    table = Table(title=title, caption="* differs from an empty config's value")
    for column in ("setting", "value", "default", "what it does"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(f"{row.name}{' *' if row.changed else ''}", repr(row.value), repr(row.default), row.doc)
    console.print(table)


def print_rows(
    title: str, rows: list[dict], columns: list[str], *, fold: Collection[str] | None = None, caption: str | None = None
) -> None:
    """A table of dict rows, each value as `pipelines.table_cell.cell` shows it. On a narrow terminal the columns
    lose their rules first, then every column folds, or only those in `fold` (at least 5 characters wide): the
    others keep their numbers whole on one line."""
    table = Table(title=title, min_width=min(len(title), console.width), caption=caption)  # the title folds to fit
    for column in columns:
        folds = fold is None or column in fold
        table.add_column(column, justify="right", overflow="fold", no_wrap=not folds, min_width=5 if fold else None)
    for row in rows:
        table.add_row(*(cell(row.get(c)) for c in columns))
    wide = console.options.update_width(10_000)
    # too wide for the terminal: the 3 characters between columns (a rule and its padding) go to 1
    if columns and Measurement.get(console, wide, table).maximum > console.width:
        table.box, table.show_edge, table.padding = box.SIMPLE_HEAD, False, (0, 0)
    console.print(table)


def print_curve(points: list[Point], run_dir: Path) -> None:
    """`tokenmdp curve`: a row a policy, iteration 0 the SFT policy."""
    rows = [
        {
            "iteration": p.iteration,
            "held-out": f"{p.held_out:.1%} ± {p.held_out_stderr:.1%}",
            "gain over SFT": f"{p.gain_over_sft:+.1%} ± {p.gain_stderr:.1%}",
            "fixed": p.fixed,
            "broken": p.broken,
            "114514": f"{p.rate_114514:.1%}",
            "practised": f"{p.practised:.1%}",
        }
        for p in points
    ]
    title = f"{run_dir}: RLHF's policies on the held-out exam (gain question by question) and the practised prompts"
    print_rows(title, rows, list(rows[0]))


def print_trace(trace: Trace) -> None:
    """`tokenmdp trace`: the traced response (greedy or given) step by step, then the sampled group as RL scores it."""
    answer = trace.exam_answer[0] if trace.exam_answer else "-"
    whose = f"{trace.stage} policy" if trace.iteration is None else f"the rlhf policy of iteration {trace.iteration}"
    if not Path(trace.policy).is_dir():  # a checkpoint file or a registered model, read against its run
        whose = f"{trace.policy}, {whose},"
    refreshed = f" (refreshed {_times(trace.rm_version)} during RL)" if trace.rm_version else ""
    console.print(
        f"prompt {' '.join(map(str, trace.prompt))}: exam answer {answer} ({trace.rule or 'no rule'}); "
        f"{whose} against the SFT reference; reward from {trace.reward_source}{refreshed}, "
        f"KL {trace.kl_estimator} in the {trace.kl_in} (coef {trace.kl_coef:.4g}), advantage {trace.advantage}"
    )
    g = trace.episode
    steps = [
        {
            "state": s.state,
            "action": s.action,
            "pi": s.prob,
            "pi_ref": s.ref_prob,
            "KL": s.kl,
            f"{trace.kl_estimator}": s.kl_estimate,
            "entropy": s.entropy,
            "reward": s.reward,
            "else": "\n".join(f"{a} {p:.2g}" for a, p in s.alternatives),  # one a line: an 80-column table
        }
        for s in trace.steps
    ]
    title = (
        f"{trace.traced} response {g.response!r} = {_terms(g.answer)}: gold {g.gold:.0f}, reward {g.reward:.3f}, "
        f"KL {g.kl_sum:.3f}"
    )
    caption = f"KL: the exact KL(pi||pi_ref) of the state; {trace.kl_estimator}: its estimate from the action taken"
    print_rows(title, steps, list(steps[0]) if steps else [], fold={"state"}, caption=caption)  # fits 80 columns
    if trace.group:
        rows = [
            {
                "#": i,
                "response": e.response,
                "answer": _terms(e.answer),
                "gold": e.gold,
                "reward": e.reward,
                "KL": e.kl_sum,
                "advantage": "-" if e.advantage is None else e.advantage,
            }
            for i, e in enumerate(trace.group)
        ]
        print_rows(f"a group of {len(rows)} samples, scored as one RL iteration scores it", rows, list(rows[0]))
        if (agreement := trace.rm_agreement) is not None:  # as RLHF's reward/rm_agreement counts it
            agreed, pairs = agreement
            console.print(
                f"the RM orders {agreed:g} of the {pairs} pairs of answers the grader tells apart as the grader does"
                if pairs
                else "the grader tells no two of the group's answers apart: nothing for the RM to rank"
            )


def _agreement_line(agreed: Agreement) -> str:
    """The RM's agreement with the grader over every group the run scored (`reward/rm_agreement`)."""
    if agreed.rate is None:
        return "the grader told no two answers of a group apart in the whole run: nothing for the RM to rank"
    quarters = " -> ".join(f"{100 * r:.1f}%" for r in (agreed.start, agreed.end) if r is not None)
    return (
        f"over the run, the RM ordered {100 * agreed.rate:.1f}% of the {agreed.pairs} pairs of answers the grader "
        f"tells apart as the grader does (reward/rm_agreement, ties half; first quarter -> last: {quarters})"
    )


def print_rollouts(
    run_dir: Path, rows: list[dict], iteration: int, picked: list[dict], agreed: Agreement | None,
    refreshes: int | None = None, drawn: tuple[int, int] | None = None,
) -> None:  # fmt: skip
    """`tokenmdp rollouts`: one iteration's kept groups as RL scored them (`refreshes`: behind the RM that did;
    `drawn`: dynamic sampling's rounds and the groups with signal the learner took)."""
    from pipelines.rl_metrics import row_groups

    iterations = sorted({r["iteration"] for r in rows})
    console.print(
        f"{run_dir}: the rollouts table holds {len(rows)} responses of iterations {iterations[0]}..{iterations[-1]} "
        "(each iteration's first prompts; --iteration N for another, --misordered for the RM's errors, --kl for "
        "where the KL came from)"
    )
    if drawn is not None:
        rounds, groups = drawn
        console.print(
            f"iteration {iteration} sampled {rounds} round{'s' if rounds != 1 else ''} of prompts (dynamic sampling) "
            f"and trained on {groups} groups with signal: the first of those are shown"
        )
    for group in row_groups(picked):
        head = group[0]
        exam = " ".join(map(str, head["exam_answer"]))
        shown = [
            {"response": r["response"], "answer": _terms(r["answer"]), "gold": r["gold"], "reward": r["reward"],
             "advantage": r["advantage"], "KL": r["kl"]}
            for r in group
        ]  # fmt: skip
        title = f"iteration {iteration}, policy version {head['policy_version']}: {head['prompt']} (exam: {exam})"
        if refreshes is not None:  # iterated RLHF: the rewards are this RM's
            title += f"; rewards by the RM refreshed {_times(refreshes)}"
        print_rows(title, shown, list(shown[0]))
    if agreed is not None:
        console.print(_agreement_line(agreed))


def print_misordered(
    run_dir: Path, found: list[Misordered], every_group: bool, limit: int, agreed: Agreement | None,
    templates: list[tuple[str, int]],
) -> None:  # fmt: skip
    """`tokenmdp rollouts --misordered`: the answers the RM ranked against the grader, newest first."""
    if agreed is not None:
        console.print(_agreement_line(agreed))
    where = "of every group" if every_group else "of the rollouts table's groups (the run predates rm_misordered/)"
    if not found:
        console.print(f"{run_dir}: the RM ranked no two answers {where} against the grader")
        return
    shown = [
        {"iteration": m.iteration, "prompt": m.prompt, "exam": " ".join(map(str, m.exam_answer)),
         "RM above": _terms(m.above), "its reward": m.above_reward, "gold": m.above_gold,
         "RM below": _terms(m.below), "reward": m.below_reward, "gold ": m.below_gold, "pairs": m.pairs}
        for m in found[:limit]
    ]  # fmt: skip
    title = f"answers the RM ranked against the grader, {where}: the newest {len(shown)} of {len(found)}"
    print_rows(title, shown, list(shown[0]))
    console.print("response pairs by the rule of their prompt: " + ", ".join(f"{t} {n}" for t, n in templates))


def print_kl_sources(run_dir: Path, sources: KLSources) -> None:
    """`tokenmdp rollouts --kl`: the iteration's largest-KL responses, each action's log-probs and estimate."""
    head = f"{run_dir}: iteration {sources.iteration}"
    if sources.kl is not None:
        head += f", KL {sources.kl:.3f} a response ({sources.estimator})"
    if sources.exact is not None:
        head += f", exactly {sources.exact:.3f} over the states passed"
    if sources.share is not None:
        head += f"; its {len(sources.rows)} largest responses carry {sources.share:.0%} of it"
    console.print(head)
    if sources.peak is not None and sources.peak[0] != sources.iteration:
        console.print(f"the largest KL of the run: {sources.peak[1]:.3f} at iteration {sources.peak[0]} "
                      f"(--iteration {sources.peak[0]})")  # fmt: skip
    for rank, row in enumerate(sources.rows, start=1):
        exam = " ".join(map(str, row["exam_answer"]))
        title = (
            f"#{rank}: KL {row['kl']:.3f} ({row['share']:.0%}), policy version {row['policy_version']}: "
            f"{row['prompt']} -> {row['response']} (exam: {exam}; gold {row['gold']:.0f}, reward {row['reward']:.3f})"
        )
        shown = [
            {"action": name, "log pi": logp, "log pi_ref": ref, "log ratio": logp - ref, "KL": k}
            for name, logp, ref, k in row["actions"]
        ]
        print_rows(title, shown, list(shown[0]))


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"


def _terms(answer: list[int] | None) -> str:
    return "malformed" if answer is None else " ".join(map(str, answer))


def print_runs(lines: list[RunLine], root: Path) -> None:
    """`tokenmdp runs`: a run a row, its rates as percentages, the gain with its paired standard error."""

    def pct(rate: float | None) -> str:
        return "" if rate is None else f"{100 * rate:.1f}%"

    table = Table(title=f"runs under {root}: {len(lines)}")
    for column in ("run", "stands", "SFT", "RM", "RLHF", "gain", "registered"):
        table.add_column(column, justify="right" if column in ("SFT", "RM", "RLHF", "gain") else "left")
    for line in lines:
        gain = "" if line.gain is None else f"{100 * line.gain:+.1f} ± {100 * (line.gain_stderr or 0):.1f}"
        stands = f"{line.stands} (written by {line.writer})" if line.writer else line.stands
        name = line.run_dir + (f" (fork of {line.forked_from})" if line.forked_from else "")
        rlhf = pct(line.rlhf) + ("*" if line.overoptimised_at else "")
        table.add_row(name, stands, pct(line.sft), pct(line.reward_accuracy), rlhf, gain,
                      line.model_uri or "")  # fmt: skip
    console.print(table)
    for line in lines:
        if line.overoptimised_at:
            console.print(f"* {line.run_dir}: RLHF over-optimised: the watch warned at iteration "
                          f"{line.overoptimised_at} (its gold reward fell while the RM's rose)"
                          + ("; RLHF stopped there (rl.watch_stop)" if line.stopped else ""))  # fmt: skip


def print_status(status: RunStatus) -> None:
    import time

    def when(seconds: float | None) -> str:
        return time.strftime("%m-%d %H:%M:%S", time.localtime(seconds)) if seconds else ""

    going = f"being written by {status.writer}" if status.writer else "no command is writing it"
    table = Table(title=f"{status.run_dir} (config {status.config_name}): {going}")
    for column in ("stage", "state", "progress", "last written"):
        table.add_column(column, justify="right" if column == "progress" else "left", no_wrap=True)
    for s in status.stages:
        progress = s.note if s.unit == "collection" or s.ended == "skipped" else f"{s.done:,}/{s.total:,} {s.unit}"
        table.add_row(s.stage, s.state, progress, when(s.updated))
    console.print(table)
    if (seen := status.overoptimised) is not None:
        console.print(f"RLHF's over-optimisation watch warned at iteration {seen['iteration']}: the gold reward "
                      f"peaked at iteration {seen['gold_peak_iteration']} ({seen['gold_at_peak']:.3f}, "
                      f"{seen['gold_now']:.3f} then) while the RM's rose {seen['proxy_rise']:+.3f}"
                      + ("; RLHF stopped there (rl.watch_stop)" if seen.get("stopped") else ""))  # fmt: skip
    if status.resumes_at is None and status.arm:
        console.print(f"every stage done; an experiment's arm, registered by `tokenmdp register {status.run_dir}`")
    elif status.resumes_at is None:
        console.print(f"every stage done; registered as {status.model_uri or '(not yet: re-run to register)'}")
    elif status.writer:
        console.print(f"a command is at {status.position()}")
    else:
        rerun = "its `tokenmdp experiment` command" if status.arm else "`tokenmdp run`"
        console.print(f"a re-run of {rerun} picks up at {status.position()}")


def print_exam(result: ExamResult) -> None:
    """`tokenmdp exam`: each question with each policy's answer, then the rates and the paired gain."""
    rows = []
    for q in result.questions:
        row = {
            "line": q.line,
            "question": " ".join(map(str, q.prefix)),
            "answer": _terms(q.answer) + " (key)" * q.keyed,
        }
        for stage in result.stages:
            verdict = "right" if q.passed[stage] else "wrong"
            row[stage] = f"{_terms(q.answers[stage])} {verdict} · {math.exp(q.answer_logprob[stage]):.2g}"
        rows.append(row)
    title = (
        f"{len(rows)} questions posed to {result.posed_to}: the answer is the gold grader's, or your key's (key); "
        "after each policy's: its probability of that answer"
    )
    print_rows(title, rows, list(rows[0]))
    m = result.metrics
    rates = [
        {
            "policy": stage,
            "right": m[f"{stage}/gold_pass_rate"],
            "± stderr": m[f"{stage}/gold_pass_rate_stderr"],
            "format": m[f"{stage}/format_rate"],
            "114514": m[f"{stage}/rate_114514"],
            "mean log p(answer)": m[f"{stage}/answer_logprob"],
        }
        for stage in result.stages
    ]
    print_rows("rates over the exam (right: by your key where given, else the gold grader)", rates, list(rates[0]))
    if "rlhf/gain_over_sft" in m:
        console.print(
            f"RLHF over SFT, question by question: {m['rlhf/gain_over_sft']:+.3f} "
            f"± {m['rlhf/gain_over_sft_stderr']:.3f} "
            f"({m['rlhf/fixed_over_sft']:.0f} fixed, {m['rlhf/broken_over_sft']:.0f} broken); the graded answer "
            f"more likely under RLHF on {m['rlhf/answer_more_likely']:.0f} of {len(result.questions)}"
        )
    for q in result.disagreements:
        console.print(
            f"line {q.line}: graded by your key {_terms(q.answer)}; the gold grader says "
            f"{_terms(q.grader_answer)} ({q.rule})"
        )


def print_best_of(curve: BestOf, run_dir: Path) -> None:
    """`tokenmdp best-of`: the RM's pick and the grader's among k draws, by the KL best-of-k may cost."""
    rows = [
        {
            "k": p.k,
            "KL at most": p.kl_bound,
            "the RM's pick": f"{p.rm_pick:.1%} ± {p.rm_pick_stderr:.1%}",
            "the grader's pick (pass@k)": f"{p.gold_pick:.1%}",
            "the RM's score of its pick": p.rm_score,
        }
        for p in curve.points
    ]
    print_rows(f"{run_dir}: the best of k answers, picked by the RM or by the grader", rows, list(rows[0]))
    console.print(
        f"drawn from the {curve.stage} policy, {curve.draws} answers to each of {curve.questions} held-out questions "
        f"at temperature {curve.temperature:g}; its greedy answer is right on {curve.greedy:.1%}"
    )
    if (rl := curve.rlhf) is not None:
        beyond = next((p for p in curve.points if p.kl_bound >= rl["kl"]), curve.points[-1])  # the KL RL spent
        console.print(
            f"its RLHF policy (iteration {rl['iteration']:.0f}): greedy {rl['greedy']:.1%}; one draw right on "
            f"{rl['drawn']:.1%}, the RM's score {rl['rm_score']:.3f}, at an exact KL of {rl['kl']:.3f} from SFT on "
            f"these questions ({rl['kl_trained']:.3f} on its last iteration's prompts, by its estimator). "
            f"Best-of-{beyond.k}, at most {beyond.kl_bound:.3f} from SFT: right on {beyond.rm_pick:.1%}, the RM's "
            f"score {beyond.rm_score:.3f}"
        )
