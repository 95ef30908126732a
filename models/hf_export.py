"""The policy as a Hugging Face `transformers` GPT-2, so it can leave this project and be checked there.

The GPT here is GPT-2's architecture (pre-LN blocks, learned positions, exact GELU here where GPT-2 has its tanh
approximation, tied embeddings), so the export is a renaming of the weights: GPT-2 keeps its linears as `Conv1D`,
whose weight is the transpose of `nn.Linear`'s. Positions count from each row's first real token, which
`transformers.generate` does by itself from the attention mask; a plain forward of a left-padded batch needs
`position_ids` (the mask's cumulative sum less one). The action space goes beside the weights
(`action_space.json`): the demo spells each term least-significant digit first, which no text tokenizer knows.
`transformers` is the optional `hf` extra.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from models.gpt import GPT, positions_from_mask
from models.sampling import left_pad
from world.actions import ActionSpace

ACTION_SPACE_FILE = "action_space.json"
EXPORT_FILES = {"config.json", "generation_config.json", "model.safetensors", ACTION_SPACE_FILE}  # what it writes
TOLERANCE = 1e-4  # the largest difference in a logit the export accepts between the two frameworks
PROBES = ([1, 2, 4, 8, 16], [3, 6, 9], [5, 10, 15, 20, 25, 30], [-7, 7, -7], [2, 3, 5, 7, 11, 13])


class ExportMismatch(RuntimeError):
    """The exported model does not compute the policy's logits."""


class OccupiedDirectory(ValueError):
    """The export's directory holds files an export did not write: writing there could overwrite them."""


def require_export_directory(out: Path) -> None:
    """`out` may be new, empty or an earlier export (written over); anything else is refused before a file is
    written, so `--out runs/demo` cannot replace a run's `config.json` with GPT-2's."""
    if not out.exists():
        return
    if not out.is_dir():
        raise OccupiedDirectory(f"{out} is a file, not a directory for the export")
    if foreign := sorted(p.name for p in out.iterdir() if p.name not in EXPORT_FILES):
        raise OccupiedDirectory(
            f"{out} holds files an export does not write ({', '.join(foreign[:5])}): choose a new or empty --out"
        )


def gpt2_config(model: GPT, space: ActionSpace) -> dict:
    """`transformers.GPT2Config`'s arguments for `model`: its shape, no dropout, the exact GELU, its special actions."""
    c = model.cfg
    return {
        "vocab_size": c.vocab_size, "n_positions": c.max_len, "n_embd": c.d_model, "n_layer": c.n_layer,
        "n_head": c.n_head, "n_inner": 4 * c.d_model, "activation_function": "gelu", "layer_norm_epsilon": 1e-5,
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "tie_word_embeddings": True,
        "bos_token_id": space.bos_id, "eos_token_id": space.eor_id, "pad_token_id": space.pad_id,
    }  # fmt: skip


def gpt2_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """The policy's weights under GPT-2's names (`lm_head` is tied to the token embedding, so not among them)."""
    weights = {
        "transformer.wte.weight": model.tok_emb.weight,
        "transformer.wpe.weight": model.pos_emb.weight,
        "transformer.ln_f.weight": model.ln_f.weight,
        "transformer.ln_f.bias": model.ln_f.bias,
    }
    for i, block in enumerate(model.blocks):
        up, _, down = block.mlp
        linears = {"attn.c_attn": block.attn.qkv, "attn.c_proj": block.attn.proj, "mlp.c_fc": up, "mlp.c_proj": down}
        for name, norm in (("ln_1", block.ln1), ("ln_2", block.ln2)):
            weights |= {f"transformer.h.{i}.{name}.weight": norm.weight, f"transformer.h.{i}.{name}.bias": norm.bias}
        for name, linear in linears.items():  # Conv1D: (in, out)
            weights |= {
                f"transformer.h.{i}.{name}.weight": linear.weight.T,
                f"transformer.h.{i}.{name}.bias": linear.bias,
            }
    return {name: tensor.detach().float().contiguous().clone() for name, tensor in weights.items()}


def export(model: GPT, space: ActionSpace, out: Path) -> dict:
    """Write `model` to `out` as a `transformers` GPT-2 (`save_pretrained`: config, safetensors weights, generation
    config) with its action space, then load it back with `transformers` and hold its logits on a few left-padded
    prompts to the policy's; `ExportMismatch` where they differ by more than TOLERANCE."""
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar for loading 52 tensors back
    require_export_directory(out)
    hf = GPT2LMHeadModel(GPT2Config(**gpt2_config(model, space)))
    missing, unexpected = hf.load_state_dict(gpt2_state_dict(model), strict=False)
    if set(missing) - {"lm_head.weight"} or unexpected:
        raise ExportMismatch(f"GPT-2's weights do not match the policy's: missing {missing}, unexpected {unexpected}")
    hf.tie_weights()
    out.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(out)
    (out / ACTION_SPACE_FILE).write_text(json.dumps(space.to_dict(), indent=2))
    difference = largest_logit_difference(model, GPT2LMHeadModel.from_pretrained(out), space)
    if not difference <= TOLERANCE:
        raise ExportMismatch(f"the exported model's logits differ from the policy's by {difference:.3g}")
    return {"out": str(out), "largest_logit_difference": difference, "params": model.num_params()}


def largest_logit_difference(model: GPT, hf, space: ActionSpace) -> float:
    """The largest |logit| difference between the policy and a `transformers` model over the real tokens of
    left-padded probe prompts (positions counted from each row's first real token, as the policy counts them)."""
    tokens, mask = left_pad([space.encode_prompt(terms) for terms in PROBES], space.pad_id)
    model.eval()
    hf.eval()
    with torch.no_grad():
        ours = model.float()(tokens, mask)
        theirs = hf(input_ids=tokens, attention_mask=mask, position_ids=positions_from_mask(mask)).logits
    real = mask.bool()
    return float((ours[real] - theirs[real]).abs().max())
