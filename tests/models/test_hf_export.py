"""The policy exported as a Hugging Face GPT-2: the same logits, the same greedy answers, no file overwritten."""

import json

import pytest
import torch
import transformers  # the `hf` extra, which `dev` installs: CI runs these
from typer.testing import CliRunner

from cli.main import app
from conf.load import load_config
from models import hf_export
from models.checkpoint import load_checkpoint
from models.gpt import positions_from_mask
from models.hf_export import ExportMismatch, OccupiedDirectory, export
from models.sampling import generate, left_pad


@pytest.fixture
def policy(tiny_sft_run):
    model, space, _ = load_checkpoint(tiny_sft_run / "sft" / "checkpoint.pt")
    return model.eval(), space


def test_the_exported_gpt2_computes_the_policys_logits_and_greedy_answers(policy, tmp_path):
    model, space = policy
    done = export(model, space, tmp_path / "hf")
    assert done["largest_logit_difference"] <= hf_export.TOLERANCE
    assert {p.name for p in (tmp_path / "hf").iterdir()} == hf_export.EXPORT_FILES
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    prompts = [space.encode_prompt(t) for t in ([4, 8, 12], [1, 1, 2, 3, 5, 8], [-3, 9, -27, 81, -243, 729, 10])]
    tokens, mask = left_pad(prompts, space.pad_id)
    with torch.no_grad():
        ours = model(tokens, mask)
        theirs = hf(input_ids=tokens, attention_mask=mask, position_ids=positions_from_mask(mask)).logits
        drawn = hf.generate(input_ids=tokens, attention_mask=mask, max_new_tokens=6, do_sample=False)
    assert torch.allclose(ours[mask.bool()], theirs[mask.bool()], atol=1e-5)
    greedy = generate(model, prompts, max_new_tokens=6, eor_id=space.eor_id, pad_id=space.pad_id, temperature=0.0)
    for row, answer in enumerate(greedy.tokens.tolist()):  # transformers pads after <eor> as we do
        assert drawn[row, tokens.shape[1] :].tolist()[: len(answer)] == answer
    assert json.loads((tmp_path / "hf" / hf_export.ACTION_SPACE_FILE).read_text()) == space.to_dict()
    export(model, space, tmp_path / "hf")  # an earlier export is written over


def test_an_export_whose_weights_are_mapped_wrong_is_refused(policy, tmp_path, monkeypatch):
    model, space = policy
    right = hf_export.gpt2_state_dict

    def untransposed(m):  # GPT-2's Conv1D wants (in, out): the square attention projection would load as is
        weights = right(m)
        return weights | {"transformer.h.0.attn.c_proj.weight": weights["transformer.h.0.attn.c_proj.weight"].T}

    monkeypatch.setattr(hf_export, "gpt2_state_dict", untransposed)
    with pytest.raises(ExportMismatch, match="logits differ"):
        export(model, space, tmp_path / "hf")


def test_export_refuses_a_directory_it_would_write_over_and_says_how_to_load_it(sft_run, tmp_path):
    (sft_run / "config.json").write_text(json.dumps(load_config("tiny").model_dump()))  # GPT-2's would replace it
    before = {p: p.read_bytes() for p in sft_run.rglob("*") if p.is_file()}
    with pytest.raises(OccupiedDirectory, match="choose a new or empty --out"):
        export(*load_checkpoint(sft_run / "sft" / "checkpoint.pt")[:2], sft_run)
    refused = CliRunner().invoke(app, ["export", str(sft_run), "--out", str(sft_run)])
    assert refused.exit_code == 2 and "holds files an export does not write" in " ".join(
        refused.output.replace("│", " ").split()
    )
    wrong_stage = CliRunner().invoke(app, ["export", str(sft_run), "--stage", "reward", "--out", str(tmp_path / "x")])
    assert wrong_stage.exit_code == 2 and "names a policy's stage (sft, rlhf)" in " ".join(
        wrong_stage.output.replace("│", " ").split()
    )
    assert {p: p.read_bytes() for p in sft_run.rglob("*") if p.is_file()} == before  # nothing written, nothing lost
    assert not (tmp_path / "x").exists()
    done = CliRunner().invoke(app, ["export", str(sft_run), "--stage", "sft", "--out", str(tmp_path / "hf")])
    assert done.exit_code == 0, done.output
    said = json.loads(done.stdout.strip().splitlines()[-1])
    assert said["policy"] == "sft" and said["largest_logit_difference"] <= hf_export.TOLERANCE
    assert "GPT2LMHeadModel.from_pretrained" in done.stdout


def test_export_without_transformers_says_which_extra_to_install(tiny_sft_run, tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "transformers", None)  # import transformers now fails
    result = CliRunner().invoke(app, ["export", str(tiny_sft_run), "--out", str(tmp_path / "hf")])
    assert result.exit_code == 2 and "pip install -e '.[hf]'" in result.output
    assert not (tmp_path / "hf").exists()
