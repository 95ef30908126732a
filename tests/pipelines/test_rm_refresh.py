"""Iterated RLHF: the labeler's pairs from the policy's own answers, and an RM that learns them during RL."""

import json
import shutil

import mlflow
import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from conf.load import ConfigError, load_config
from models.checkpoint import load_checkpoint, save_policy
from models.rollout import Rollouts
from pipelines import reward, rlhf
from pipelines.rl_actors import load_scorers, start_actors
from pipelines.rm_refresh import IteratedRM, label_rollouts, labelled_groups
from pipelines.trace import trace
from pipelines.workflow import rlhf_over_iterations
from world.actions import ActionSpace
from world.exam import Question
from world.grader import SimulatedLabeler

SPACE = ActionSpace()
DOUBLING = Question((1, 2, 4, 8, 16), (32,), "geometric", 1)
EVENS = Question((2, 4, 6, 8), (10,), "arithmetic", 1)


def rollouts_of(groups: list[tuple[Question, list[list[int]]]]) -> Rollouts:
    """Rows of the given response token ids, each group's prompt left-padded to one width, as a sampler lays them."""
    prompts = [SPACE.encode_prompt(q.prefix) for q, _ in groups]
    width = max(map(len, prompts))
    rows, group_ids = [], []
    for g, ((_, responses), prompt) in enumerate(zip(groups, prompts, strict=True)):
        for response in responses:
            rows.append(([SPACE.pad_id] * (width - len(prompt)) + prompt, response))
            group_ids.append(g)
    length = width + max(len(r) for _, r in rows)
    tokens = torch.full((len(rows), length), SPACE.pad_id)
    action_mask = torch.zeros_like(tokens)
    for i, (prompt, response) in enumerate(rows):
        tokens[i, : width + len(response)] = torch.tensor(prompt + response)
        action_mask[i, width : width + len(response)] = 1
    return Rollouts(
        tokens, (tokens != SPACE.pad_id).long(), action_mask, torch.zeros(tokens.shape), torch.tensor(group_ids),
        torch.ones(len(rows), dtype=torch.bool), policy_version=3, prompt_width=width,
    )  # fmt: skip


def test_the_labeler_pairs_the_answers_of_each_labelled_group_on_its_own_prompt():
    right, wrong = SPACE.encode_response([32]), SPACE.encode_response([31])
    unfinished = SPACE.encode_terms([32])  # no <eor>: malformed, graded 0 like a wrong answer
    rollouts = rollouts_of(
        [(DOUBLING, [right, wrong, right, unfinished]), (EVENS, [SPACE.encode_response([n]) for n in (10, 12, 10, 9)])]
    )
    pairs, counts = label_rollouts(rollouts, [DOUBLING, EVENS], SPACE, SimulatedLabeler(0.0), share=0.5)
    # one group of two: 6 comparisons; the two rights are identical, the two zeros (31, unfinished) tie
    assert counts["candidates"] == 6 and counts["dropped_identical"] == 1 and counts["dropped_no_preference"] == 1
    assert len(pairs) == 4 and {p.prompt for p in pairs} == {tuple(SPACE.encode_prompt(DOUBLING.prefix))}
    assert all(p.chosen == tuple(right) and p.gold_agrees for p in pairs)
    assert sorted(p.kind for p in pairs) == ["correctness", "correctness", "format", "format"]
    pairs, counts = label_rollouts(rollouts, [DOUBLING, EVENS], SPACE, SimulatedLabeler(0.0), share=1.0)
    assert counts["candidates"] == 12 and len(pairs) == 4 + 4  # 10 beats 12 and 9 (twice each)
    flipped, _ = label_rollouts(rollouts, [DOUBLING, EVENS], SPACE, SimulatedLabeler(0.5, seed=1), share=1.0)
    assert 0 < sum(not p.gold_agrees for p in flipped) < len(flipped)  # the noisy labeler flips some


def test_at_least_one_group_is_labelled():
    assert labelled_groups(64, 0.25) == 16 and labelled_groups(3, 0.01) == 1 and labelled_groups(3, 0.5) == 2


def test_refreshing_a_reward_the_grader_gives_or_landing_after_the_next_refresh_is_a_config_error():
    with pytest.raises(ConfigError, match=r"rm_refresh\.every=2 refreshes the reward model"):
        load_config("tiny", ["rl.rm_refresh.every=2", "rl.reward_source=gold"])
    with pytest.raises(ConfigError, match="lag must be < every"):
        load_config("tiny", ["rl.rm_refresh.every=2", "rl.rm_refresh.lag=2"])


# lag 0: each refresh lands as it ends (at 2 and 4); a run stopped at 3, between refreshes, resumes.
# lag 1: the refresh of 2 trains while iteration 3 samples and lands at 3; the run stops at the checkpoint of 2
# with it in flight, which the checkpoint keeps (waited for, not landed); the refresh of 4 lands at 5.
LAGS = {
    0: (["rl.checkpoint_every=1"], 3, {2: 1.0, 4: 2.0}),
    1: (["rl.rm_refresh.lag=1", "rl.iterations=5", "rl.checkpoint_every=2"], 2, {3: 1.0, 5: 2.0}),
}


@pytest.mark.slow
@pytest.mark.parametrize("lag", sorted(LAGS))
def test_a_refreshed_rm_reaches_the_scorers_and_a_resumed_run_goes_on_with_it(
    sft_run, tmp_path, ray_local, monkeypatch, capsys, lag
):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    refresh = ["rl.rm_refresh.every=2", "rl.rm_refresh.steps=5", "rl.rm_refresh.label_share=0.5"]
    short_rm = ["reward.steps=10", "reward.eval_every=10", "reward.checkpoint_every=10"]
    settings, stop_at, landed = LAGS[lag]
    cfg = load_config("tiny", [*short_rm, *refresh, *settings])
    reward.main(cfg, sft_run, tracking_uri=uri)
    straight_dir = tmp_path / "straight"
    for stage in ("pretrain", "sft", "preferences", "reward"):
        shutil.copytree(sft_run / stage, straight_dir / stage)
    rlhf.main(cfg, sft_run, tracking_uri=uri, stop_at=stop_at)
    if lag:
        _, _, stopped = load_checkpoint(sft_run / "rlhf" / "checkpoint.pt")
        assert stopped["reward_model"] is None and stopped["rm_refresh"]["pending"]["lands"] == 3
        # and the resumed run loses its trainer in the refresh of 4: every actor starts again from the checkpoint
        # of 2, the refresh it kept lands at 3 again, and the run still ends as the straight one
        observe, kills = IteratedRM.observe, []

        def killing_the_trainer_in_the_refresh_of_4(self, rollouts, asked, iteration, judge):
            seen = observe(self, rollouts, asked, iteration, judge)
            if iteration == 4 and not kills:
                kills.append(self.trainer)
                ray_local.kill(self.trainer)
            return seen

        monkeypatch.setattr(IteratedRM, "observe", killing_the_trainer_in_the_refresh_of_4)
    final = rlhf.main(cfg, sft_run, tracking_uri=uri)
    if lag:
        assert kills and "every actor starts again from iteration 2 (restart 1 of 2)" in capsys.readouterr().err
        monkeypatch.setattr(IteratedRM, "observe", observe)
    rlhf.main(cfg, straight_dir, tracking_uri=uri)
    _, _, state = load_checkpoint(sft_run / "rlhf" / "checkpoint.pt")
    _, _, straight = load_checkpoint(straight_dir / "rlhf" / "checkpoint.pt")
    refreshed, labelled = state["reward_model"], state["rm_refresh"]
    assert refreshed["version"] == 2 and labelled["pool"] and labelled["pending"] is None
    assert all(torch.equal(refreshed["model"][k], straight["reward_model"]["model"][k]) for k in refreshed["model"])
    assert labelled["pool"] == straight["rm_refresh"]["pool"]  # the stopped run labelled as the straight one
    trained, _, _ = load_checkpoint(sft_run / "reward" / "checkpoint.pt")
    assert any(not torch.equal(v, refreshed["model"][k]) for k, v in trained.state_dict().items()), "RM unchanged"
    # each labelled group is half of the iteration's prompts (label_share 0.5): C(4, 2) comparisons each
    per_iteration = cfg.rl.prompts_per_iteration // 2 * 6
    assert labelled["labels"] == per_iteration * cfg.rl.iterations
    client = mlflow.MlflowClient(tracking_uri=uri)
    versions = {m.step: m.value for m in client.get_metric_history(final["run_id"], "rm/version")}
    assert versions == landed
    scored_by = {m.step: m.value for m in client.get_metric_history(final["run_id"], "reward/rm_version")}
    assert scored_by == {i: float(sum(i > at for at in landed)) for i in range(1, cfg.rl.iterations + 1)}
    # the iterations redone after the restart were logged before the checkpoint that failed: not logged again
    gold_steps = sorted(m.step for m in client.get_metric_history(final["run_id"], "reward/gold"))
    assert gold_steps == list(range(1, cfg.rl.iterations + 1))
    waited = client.get_metric_history(final["run_id"], "time/rm_refresh")
    assert sorted(m.step for m in waited) == sorted(landed)
    labels = {m.step: m.value for m in client.get_metric_history(final["run_id"], "rm_refresh/labels")}
    assert labels == {i: per_iteration * i for i in range(1, cfg.rl.iterations + 1)}
    metrics = client.get_run(final["run_id"]).data.metrics
    assert "rm/gold_accuracy" in metrics  # the refreshed RM judged on held-out pairs
    over = rlhf_over_iterations(final["run_id"], uri, cfg.rl.watch_window)  # as `tokenmdp run` sums the run up
    assert (over["rm_refreshes"], over["rm_refresh_labels"]) == (2, per_iteration * cfg.rl.iterations)
    if lag:
        return  # the rest reads the final RM alike
    # the weights reach every scorer replica: they then score as the refreshed RM does, not as the trained one
    two = load_config("tiny", [*short_rm, *refresh, "rl.actors.reward.replicas=2", "rl.actors.reward.num_cpus=0.25"])
    policy, space, _ = load_checkpoint(sft_run / "sft" / "checkpoint.pt")
    actors = start_actors(two, sft_run, space, policy)
    try:
        right = SPACE.encode_response([32])
        probe = rollouts_of([(DOUBLING, [right, SPACE.encode_response([31])])] * 2)
        before = [ray_local.get(s.score.remote(probe)) for s in actors.scorers]
        load_scorers(actors, {"model": refreshed["model"], "norm": refreshed["norm"], "version": 2})
        after = [ray_local.get(s.score.remote(probe)) for s in actors.scorers]
    finally:
        actors.stop()
    from actors.reward_scorer import RewardScorerImpl

    local = RewardScorerImpl(str(sft_run / "reward" / "checkpoint.pt"))
    local.load_refreshed({"model": refreshed["model"], "norm": refreshed["norm"], "version": 2})
    for scored in after:
        assert torch.allclose(scored, local.score(probe), atol=1e-5)
    assert not torch.allclose(before[0], after[0])
    # `trace` scores the final policy's answers with the RM it last trained against, as does a registered copy
    (sft_run / "config.json").write_text(json.dumps(cfg.model_dump()))  # as `tokenmdp rlhf` writes it
    # `tokenmdp rollouts` says which refresh of the RM gave the rewards of the iteration shown
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    shown = CliRunner().invoke(app, ["rollouts", str(sft_run), "--iteration", "3", "--json"])
    assert shown.exit_code == 0 and json.loads(shown.stdout)["rm_version"] == 1, shown.output
    assert "Downloading artifacts" not in shown.output  # no MLflow progress bar a table file
    shown = CliRunner().invoke(app, ["rollouts", str(sft_run), "--iteration", "2"])
    assert "rewards by the RM refreshed 0 times" in " ".join(shown.stdout.split()), shown.output
    traced = trace(sft_run, list(DOUBLING.prefix), answer=[32], group=0)
    assert traced.rm_version == 2
    assert traced.episode.reward == pytest.approx(local.score_texts([list(DOUBLING.prefix)], [right])[0], abs=1e-5)
    kept = sft_run / "exported" / "policy.pt"  # a copy lying in its run's folder, as a download into it
    policy, space, _ = load_checkpoint(sft_run / "rlhf" / "checkpoint.pt")
    save_policy(kept, model=policy, space=space, state=state)
    assert trace(kept, list(DOUBLING.prefix), answer=[32], group=0).episode.reward == traced.episode.reward


def test_a_refresh_without_the_reward_stages_pairs_says_what_to_run(sft_run):
    from models.checkpoint import save_checkpoint
    from models.heads import ScalarModel
    from pipelines.rm_refresh import trainer_inputs
    from pipelines.run_config import MissingStage

    with pytest.raises(MissingStage, match=r"rl\.rm_refresh needs the reward stage"):
        trainer_inputs(sft_run)
    policy, space, _ = load_checkpoint(sft_run / "sft" / "checkpoint.pt")
    save_checkpoint(sft_run / "reward" / "checkpoint.pt", model=ScalarModel(policy), space=space)
    with pytest.raises(MissingStage, match="replays the reward stage's preference pairs") as caught:
        trainer_inputs(sft_run)
    assert "tokenmdp preferences" in str(caught.value) and "rl.rm_refresh.every=0" in str(caught.value)
