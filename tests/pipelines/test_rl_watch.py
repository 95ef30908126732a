"""RLHF's over-optimisation watch: the history it resumes from MLflow, what it says and the tag it leaves."""

import json

import mlflow
import pytest

from conf.load import load_config
from pipelines.rl_watch import TAG, Watch, resumed_watch, warn, warning
from pipelines.status import watch_record
from pipelines.tracking import stage_run

GOLD = [0.1, 0.2, 0.3, 0.3, 0.2, 0.1, 0.0]  # iterations 1..7; trailing 5-means of full windows .22 .22 .18
PROXY = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]


def test_the_watch_resumes_its_history_warns_once_and_names_the_policy_to_take(tmp_path, capsys):
    rl = load_config("tiny", ["rl.watch_drop=0.1", "rl.watch_window=5"]).rl
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with stage_run(tmp_path / "rlhf", experiment="watch", run_name="rlhf", tracking_uri=uri) as run:
        for step, (gold, proxy) in enumerate(zip(GOLD, PROXY, strict=True), start=1):
            mlflow.log_metrics({"reward/gold": gold, "reward/proxy": proxy}, step=step)
        mlflow.log_metrics({"reward/gold": 0.9, "reward/proxy": 0.2}, step=3)  # logged again: the last write counts
        mlflow.log_metrics({"reward/gold": 1.0, "reward/proxy": 0.0}, step=8)  # past the checkpoint: redone
        client = mlflow.MlflowClient()
        watch = resumed_watch(rl, client, run.info.run_id, upto=7, stage_dir=tmp_path / "rlhf")
        assert watch.steps == [1, 2, 3, 4, 5, 6, 7] and watch.gold[2] == 0.9 and not watch.warned
        watch.gold[2] = 0.3  # the series above, to check the turn by hand
        turn = watch.observe(8, 0.0, 0.7)  # the 5-mean falls to .12: .1 below its peak at iteration 5
        assert turn is not None and watch.peak_iteration(turn) == 5
        assert watch.observe(9, 0.0, 0.8) is None  # said once
        snapshots = [tmp_path / "rlhf" / "snapshots" / f"iteration-{i:05d}.pt" for i in (3, 6)]
        warn(turn, watch, 8, tmp_path / "rlhf", snapshots)
        said = capsys.readouterr().err
        assert "rlhf iteration 8: over-optimisation: the gold reward (5-iteration mean) peaked at iteration 5" in said
        assert "(0.220) and is 0.120 now, while the RM's reward rose +0.300 since" in said
        assert f"take the policy kept at iteration 6 ({snapshots[1]})" in said
        assert warning(turn, watch, 8, [], snapshot_every=10).endswith("will be iteration 10's")  # none kept yet
        assert "the reward model's errors. RLHF stops here (rl.watch_stop). Raise rl.kl_coef" in warning(
            turn, watch, 8, [], stopping=True
        )  # fmt: skip
        assert warning(turn, watch, 8, []).endswith("keep snapshots (rl.snapshot_every) to take the policy of the peak")
        tag = json.loads(client.get_run(run.info.run_id).data.tags[TAG])
        assert tag == {"iteration": 8, "gold_peak_iteration": 5, "gold_at_peak": 0.22, "gold_now": 0.12,
                       "proxy_rise": 0.3, "stopped": False}  # fmt: skip
        again = resumed_watch(rl, client, run.info.run_id, upto=8, stage_dir=tmp_path / "rlhf")
        assert again.warned and again.observe(9, 0.0, 0.9) is None  # a resumed run does not say it again
    # the record stays in the run directory: what status and runs read, and what a run resumed against
    # another store (a new MLflow run, without the tag) knows it said
    assert watch_record(tmp_path) == tag
    with stage_run(tmp_path / "elsewhere", experiment="watch", run_name="rlhf", tracking_uri=uri) as fresh:
        assert resumed_watch(rl, mlflow.MlflowClient(), fresh.info.run_id, 8, tmp_path / "rlhf").warned
        assert not resumed_watch(rl, mlflow.MlflowClient(), fresh.info.run_id, 8, tmp_path / "elsewhere").warned
        # killed after the warning at 8 but before its checkpoint: resumed at 7, it redoes 8 and must warn there again
        assert not resumed_watch(rl, mlflow.MlflowClient(), fresh.info.run_id, 7, tmp_path / "rlhf").warned


def test_a_watch_turned_off_or_fed_the_gold_reward_never_warns():
    off = Watch(window=1, drop=None)
    assert [off.observe(i, g, p) for i, (g, p) in enumerate(zip([1.0, 0.0], [0.0, 1.0], strict=True))] == [None] * 2
    on = Watch(window=1, drop=0.01)  # rl.reward_source=gold: the proxy is the gold reward, so never rises as it falls
    assert all(on.observe(i, g, g) is None for i, g in enumerate([0.5, 0.9, 0.1, 0.0]))


def test_the_watch_settings_are_checked():
    from conf.load import ConfigError

    with pytest.raises(ConfigError, match="watch_drop"):
        load_config("tiny", ["rl.watch_drop=0"])
    assert load_config("tiny", ["rl.watch_drop=null"]).rl.watch_drop is None
