"""`tokenmdp register`: a policy of the user's choosing as the next version of a registered model."""

import json

import mlflow
import torch
from typer.testing import CliRunner

from cli.main import app
from models.checkpoint import load_checkpoint, save_checkpoint
from pipelines.policy_source import resolve_model


def test_a_snapshot_and_a_stage_are_registered_with_where_they_came_from(sft_run, tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    policy, space, state = load_checkpoint(sft_run / "sft" / "checkpoint.pt")
    (sft_run / "config.json").write_text(json.dumps(state["config"]))
    snapshot = sft_run / "rlhf" / "snapshots" / "iteration-00003.pt"
    with torch.no_grad():
        next(policy.parameters()).add_(0.5)  # a policy of its own, told apart from SFT's below
    save_checkpoint(snapshot, model=policy, space=space, iteration=3, policy_version=3, config=state["config"],
                    corpus_stats=state["corpus_stats"])  # fmt: skip
    said = CliRunner().invoke(app, ["register", str(snapshot)])
    assert said.exit_code == 0, said.output
    done = json.loads(said.stdout.strip().splitlines()[-1])
    assert done == {"model_uri": "models:/tokenmdp-tiny/1", "source": str(snapshot.resolve()), "iteration": 3}
    fetched, _, _ = load_checkpoint(resolve_model(done["model_uri"], tracking_uri=uri)[0])
    assert all(torch.equal(fetched.state_dict()[k], v) for k, v in policy.state_dict().items())
    client = mlflow.MlflowClient(tracking_uri=uri)
    tags = client.get_model_version("tokenmdp-tiny", "1").tags
    assert tags == {"tokenmdp.registered_from": str(snapshot.resolve()), "tokenmdp.rl_iteration": "3"}
    run = client.get_run(client.get_model_version("tokenmdp-tiny", "1").run_id)
    assert run.info.run_name == "register" and run.data.tags["tokenmdp.rl_iteration"] == "3"

    sft = CliRunner().invoke(app, ["register", str(sft_run), "--stage", "sft", "--name", "tokenmdp-tiny-sft"])
    assert sft.exit_code == 0, sft.output
    assert json.loads(sft.stdout.strip().splitlines()[-1]) == {
        "model_uri": "models:/tokenmdp-tiny-sft/1", "source": f"{sft_run.resolve()}/sft", "iteration": None,
    }  # fmt: skip
    again = CliRunner().invoke(app, ["register", str(sft_run)])  # its final policy: SFT's, as it has no RLHF
    assert json.loads(again.stdout.strip().splitlines()[-1])["model_uri"] == "models:/tokenmdp-tiny/2"
    assert "tokenmdp.rl_iteration" not in client.get_model_version("tokenmdp-tiny", "2").tags
    # an alias is served as the version it points at now, so an answer says which one gave it
    client.set_registered_model_alias("tokenmdp-tiny", "champion", "1")
    assert resolve_model("models:/tokenmdp-tiny@champion", tracking_uri=uri)[1:] == ("tokenmdp-tiny", "1")
    client.set_registered_model_alias("tokenmdp-tiny", "champion", "2")
    checkpoint, name, version = resolve_model("models:/tokenmdp-tiny@champion", tracking_uri=uri)
    assert (name, version) == ("tokenmdp-tiny", "2") and "corpus_stats" in load_checkpoint(checkpoint)[2]
    assert resolve_model("models:/tokenmdp-tiny/latest", tracking_uri=uri)[1:] == ("tokenmdp-tiny", "2")


def test_register_refuses_what_is_not_a_policy_in_a_line(sft_run, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    for args, said in (
        ([str(tmp_path / "nothing.pt")], "no checkpoint at"),
        ([str(sft_run), "--stage", "reward"], "--stage names a policy's stage (sft, rlhf) in a run directory"),
        ([str(sft_run / "sft" / "checkpoint.pt"), "--stage", "sft"], "in a run directory"),
    ):
        result = CliRunner().invoke(app, ["register", *args])
        assert result.exit_code == 2 and said in " ".join(result.output.replace("│", " ").split()), result.output
    assert (
        not (tmp_path / "mlflow.db").exists()
        or not mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").search_registered_models()
    )  # nothing registered
