"""The reward model: the SFT trunk plus a scalar head at `<eor>`, trained with Bradley-Terry.

Reads the on-policy preference pairs (`pipelines/preferences.py`), trains with the shared
supervised loop (resumable, logged to MLflow), and judges the model on held-out prompts:
accuracy against the noisy labels and against the noise-free gold grader, split into
pairs that differ in format and pairs where both answers are well-formed and only
correctness differs; beside it, the cross-prompt accuracy (a correct answer to prompt A
against a wrong one to prompt B), which Bradley-Terry never trained for.

    tokenmdp reward demo
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import torch

from algos.bradley_terry import bradley_terry_loss
from algos.stats import clustered_stderr
from conf.schema import Config
from models.checkpoint import load_checkpoint
from models.heads import ScalarModel, score_sequences
from pipelines import preferences, train_loop
from pipelines.data_files import data_to_read, digest_key
from pipelines.evaluate import eval_questions
from pipelines.preferences import Preferences, ScoredResponse
from pipelines.run_config import trained_checkpoint
from pipelines.tracking import flatten, stage_run
from world.actions import ActionSpace
from world.audit import CorpusStats, episode_problems
from world.grader import grade
from world.preferences import PreferencePair
from world.user_data import lines_and_problems, parse_pair_line, refuse_problems
from world.views import prompt_views

NORM_SAMPLE = 1024


def pair_batch(
    space: ActionSpace, pairs: Sequence[PreferencePair], rng: random.Random | None = None, views: int = 1,
    min_terms: int = 3,
) -> train_loop.Batch:  # fmt: skip
    """Rows 0..B-1 are prompt+chosen, rows B..2B-1 prompt+rejected (right-padded).

    With `views` > 1 and an `rng`, each pair is read through one view of its prompt drawn at
    random (`world.views`), the same view for both answers: a pair keeps one prompt.
    """
    chosen, rejected = [], []
    for pair in pairs:
        good, bad = pair.sequences()
        if rng is not None and views > 1:
            good_views, bad_views = (prompt_views(space, s, views, min_terms) for s in (good, bad))
            pick = rng.randrange(len(good_views))
            good, bad = good_views[pick], bad_views[pick]
        chosen.append(list(good))
        rejected.append(list(bad))
    return train_loop.collate(chosen + rejected, space.pad_id)


def rm_loss(rm: ScalarModel, batch: train_loop.Batch, margin: float = 0.0, label_smoothing: float = 0.0):
    """Bradley-Terry on a `pair_batch`: its first half chosen, second half rejected."""
    scores = rm.score(batch.tokens, batch.mask)
    half = scores.shape[0] // 2
    return bradley_terry_loss(scores[:half], scores[half:], margin, label_smoothing)


def cross_prompt_pairs(pool: Sequence[ScoredResponse], seed: int) -> list[tuple[ScoredResponse, ScoredResponse]]:
    """(correct answer to one prompt, wrong well-formed answer to another prompt) pairs."""
    rng = random.Random(seed)
    right = [s for s in pool if s.correct]
    wrong = [s for s in pool if s.well_formed and not s.correct]
    rng.shuffle(right)
    rng.shuffle(wrong)
    pairs = []
    for a in right:
        while wrong and wrong[-1].prompt == a.prompt:
            rng.shuffle(wrong)  # a rare collision: draw another
            if len({w.prompt for w in wrong}) == 1:
                break
        if wrong and wrong[-1].prompt != a.prompt:
            pairs.append((a, wrong.pop()))
    return pairs


def evaluate_rm(
    rm: ScalarModel, space: ActionSpace, prefs: Preferences, seed: int, views: int = 1, min_terms: int = 3
) -> dict[str, float]:
    """Held-out accuracies: against labels, against gold (by pair kind), and across prompts;
    scores averaged over `views` views of each prompt (`world.views`), as RL will read them."""
    score = partial(score_sequences, rm, space, views=views, min_terms=min_terms)
    pairs = prefs.heldout
    chosen = score([p.prompt + p.chosen for p in pairs])
    rejected = score([p.prompt + p.rejected for p in pairs])
    agrees_label = (chosen > rejected).tolist()
    agrees_gold = [a == p.gold_agrees for a, p in zip(agrees_label, pairs, strict=True)]
    metrics = {
        "rm/heldout_pairs": float(len(pairs)),
        "rm/label_accuracy": sum(agrees_label) / max(len(pairs), 1),
        "rm/gold_accuracy": sum(agrees_gold) / max(len(pairs), 1),
        # one prompt's pairs share its difficulty: the error counts prompts, not pairs
        "rm/gold_accuracy_stderr": clustered_stderr(agrees_gold, [p.prompt for p in pairs]),
    }
    for kind in ("format", "correctness"):
        hits = [ok for ok, p in zip(agrees_gold, pairs, strict=True) if p.kind == kind]
        metrics[f"rm/gold_accuracy_{kind}"] = sum(hits) / len(hits) if hits else float("nan")
        metrics[f"rm/heldout_pairs_{kind}"] = float(len(hits))
    cross = cross_prompt_pairs(prefs.heldout_responses, seed)
    if cross:
        good = score([a.prompt + a.response for a, _ in cross])
        bad = score([b.prompt + b.response for _, b in cross])
        metrics["rm/cross_prompt_accuracy"] = (good > bad).float().mean().item()
        metrics["rm/cross_prompt_pairs"] = float(len(cross))
    return metrics


def normalisation(rm: ScalarModel, space: ActionSpace, prefs: Preferences, cfg: Config) -> dict[str, float]:
    """Mean and std of raw scores (as RL reads them: `reward.views`) over on-policy responses, saved with the model."""
    sample = [r.prompt + r.response for r in prefs.heldout_responses[:NORM_SAMPLE]]
    scores = score_sequences(rm, space, sample, cfg.reward.views, cfg.reward.view_min_terms)
    return {"mean": scores.mean().item(), "std": max(scores.std().item(), 1e-6)} if len(scores) > 1 else {}


def training_views(cfg: Config) -> tuple[int, int]:
    """(views, min terms) training draws from: the ones the RM is read with, if `reward.train_views`."""
    return (cfg.reward.views if cfg.reward.train_views else 1), cfg.reward.view_min_terms


def configured_evaluation(rm: ScalarModel, space: ActionSpace, prefs: Preferences, cfg: Config) -> dict[str, float]:
    """`evaluate_rm` with the configured views (`reward.views`)."""
    return evaluate_rm(rm, space, prefs, cfg.seed, cfg.reward.views, cfg.reward.view_min_terms)


def new_reward_model(cfg: Config, space: ActionSpace, run_dir: Path) -> ScalarModel:
    """A fresh RM on the run's SFT trunk (with the likelihood feature when configured), seeded head."""
    sft_model, _, _ = load_checkpoint(trained_checkpoint(run_dir, "sft", needed_by="reward"), space)
    torch.manual_seed(cfg.seed)
    return ScalarModel(sft_model, space.query_id if cfg.reward.likelihood_feature else None)


def configured_loss(cfg: Config) -> Callable[[ScalarModel, train_loop.Batch], tuple]:
    """`rm_loss` with the configured margin and label smoothing (the stage and the learning curve)."""
    return partial(rm_loss, margin=cfg.reward.margin, label_smoothing=cfg.reward.label_smoothing)


def freeze_as_configured(rm: ScalarModel, cfg: Config) -> ScalarModel:
    """`reward.freeze_trunk`: only the head (and the likelihood weight) train."""
    rm.trunk.requires_grad_(not cfg.reward.freeze_trunk)
    return rm


def own_pairs(
    cfg: Config, space: ActionSpace, stats: CorpusStats, max_len: int, prefs: Preferences, text: str, source: str
) -> list[PreferencePair]:
    """Your preference pairs (`reward.extra_pairs`), each episode audited against pretraining and held to the
    context, and refused on a prompt whose pairs judge the RM or whose question judges the policies (training
    on those would inflate the figures they give). Every bad line at once, in order."""
    own, problems = lines_and_problems(text, parse_pair_line)
    judged_rm = {p.prompt for p in prefs.heldout} | {r.prompt for r in prefs.heldout_responses}
    held_out = {q.prefix for q in eval_questions(cfg)}
    pairs = []
    for item in own:
        prompt = tuple(space.encode_prompt(item.prefix))
        shown = f"line {item.line}: {' '.join(map(str, item.prefix))}"
        episodes = [prompt + tuple(space.encode_response(answer)) for answer in (item.better, item.worse)]
        for answer, episode in zip((item.better, item.worse), episodes, strict=True):
            said = f"{shown} -> {' '.join(map(str, answer))}"
            problems += episode_problems(said, space.decode_tokens(list(episode)), stats, max_len)
        if item.prefix in held_out:
            problems.append(f"{shown} is a question of the run's held-out exam: training on it inflates its pass rate")
        elif prompt in judged_rm:
            problems.append(f"{shown} is a prompt of the RM's held-out pairs: training on it inflates its accuracy")
        better, worse = (grade(list(item.prefix), list(a), n_terms=None) for a in (item.better, item.worse))
        pairs.append(
            PreferencePair(
                prompt,
                episodes[0][len(prompt) :],
                episodes[1][len(prompt) :],
                "correctness",
                gold_agrees=(better or 0) > (worse or 0),
            )
        )
    refuse_problems(source, problems if own or problems else ["no pairs"])
    return pairs


def sft_corpus_stats(run_dir: Path) -> tuple[CorpusStats, int]:
    """The pretraining corpus statistics the SFT policy carries, and its context: what your pairs are held to."""
    model, _, state = load_checkpoint(trained_checkpoint(run_dir, "sft", needed_by="reward"))
    return CorpusStats.from_dict(state["corpus_stats"]), model.cfg.max_len


def main(
    cfg: Config, run_dir: Path, tracking_uri: str | None = None, stop_at: int | None = None,
    train_pairs: Callable[[Preferences], Sequence] | None = None,
) -> dict[str, float]:  # fmt: skip
    """Collect pairs (once), train the RM into `run_dir/reward`; returns the final held-out metrics.

    `train_pairs` maps the collected preferences to other training pairs (anything with
    `sequences()`): only experiments use it; held-out evaluation stays on the collected pairs.
    """
    stage_dir = run_dir / "reward"
    torch.set_num_threads(cfg.reward.threads)
    space = ActionSpace(digit_order=cfg.world.digit_order)
    prefs = preferences.main(cfg, run_dir)
    training = train_pairs(prefs) if train_pairs else prefs.train
    rm = new_reward_model(cfg, space, run_dir)
    extra, extra_digest = data_to_read(
        "reward.extra_pairs", cfg.reward.extra_pairs, stage_dir / "checkpoint.pt", cfg.reward.steps,
        lambda text, path: own_pairs(cfg, space, *sft_corpus_stats(run_dir), prefs, text, str(path)),
    )  # fmt: skip
    mine = round(cfg.reward.extra_share * cfg.reward.batch_size) if extra else 0  # none: the batches as before

    def batch_at(step: int) -> train_loop.Batch:
        rng = random.Random(train_loop.step_seed("reward", cfg.seed, step))
        drawn = rng.choices(training, k=cfg.reward.batch_size - mine) + (rng.choices(extra, k=mine) if extra else [])
        return pair_batch(space, drawn, rng, *training_views(cfg))

    stage = train_loop.Stage(
        name="reward",
        checkpoint=stage_dir / "checkpoint.pt",
        optim=cfg.reward,
        space=space,
        batch_at=batch_at,
        evaluate=lambda m: configured_evaluation(m, space, prefs, cfg),
        loss=configured_loss(cfg),
        progress_metric="loss/bt",
        prepare=lambda model: freeze_as_configured(model, cfg),
        extra_state=lambda model: {
            "reward_norm": normalisation(model, space, prefs, cfg),
            "reward_views": {"views": cfg.reward.views, "min_terms": cfg.reward.view_min_terms},  # how to read it
            "config": cfg.model_dump(),
            digest_key("reward.extra_pairs"): extra_digest,
        },
    )
    with stage_run(stage_dir, experiment=cfg.name, run_name="reward", tracking_uri=tracking_uri) as run:
        import mlflow

        if not stage.checkpoint.is_file():
            params = flatten(cfg.model_dump(include={"reward"})) | {"world.label_noise": cfg.world.label_noise}
            mlflow.log_params(params)
            mlflow.log_metrics({f"data/{k}": float(v) for k, v in prefs.counts.items()})
            if extra:  # yours: how many, which version, and how many the gold grader would order otherwise
                mlflow.log_params({"data/extra_pairs": len(extra), "data/extra_pairs_sha256": extra_digest})
                mlflow.log_metric("data/extra_pairs_gold_disagrees", sum(not p.gold_agrees for p in extra))
        _, final, _ = train_loop.run(stage, rm, stop_at=stop_at)
        mlflow.log_artifact(str(stage.checkpoint), artifact_path="checkpoint")
    return {**final, "run_id": run.info.run_id}


def learning_curve(cfg: Config, run_dir: Path, sizes: Sequence[int], tracking_uri: str | None = None) -> list[dict]:
    """Held-out accuracy of reward models trained on the first n pairs, for each n: how it grows with data.

    Each point trains a fresh RM from the SFT trunk with the same optimiser settings, without
    checkpoints; the points are logged as one MLflow run (`reward-curve`, step = pairs).
    """
    torch.set_num_threads(cfg.reward.threads)
    space = ActionSpace(digit_order=cfg.world.digit_order)
    prefs = preferences.main(cfg, run_dir)
    loss = configured_loss(cfg)
    points = []
    for n in sizes:
        subset = prefs.train[: min(n, len(prefs.train))]
        rm = freeze_as_configured(new_reward_model(cfg, space, run_dir), cfg)
        optimizer, schedule = train_loop.make_optimizer(rm, cfg.reward)
        for step in range(cfg.reward.steps):
            rng = random.Random(train_loop.step_seed("reward-curve", cfg.seed, n, step))
            batch = pair_batch(space, rng.choices(subset, k=cfg.reward.batch_size), rng, *training_views(cfg))
            train_loop.train_step(rm, optimizer, schedule, batch, cfg.reward.grad_clip, loss)
        points.append({"pairs": len(subset), **configured_evaluation(rm, space, prefs, cfg)})
    with stage_run(run_dir / "reward_curve", experiment=cfg.name, run_name="reward-curve", tracking_uri=tracking_uri):
        from pipelines.tracking import log_metrics_batch

        log_metrics_batch([(p["pairs"], {k: v for k, v in p.items() if k != "pairs"}) for p in points])
    return points
