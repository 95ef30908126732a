"""Next-token loss over actions only: the action mask says which tokens are the policy's.

In pretraining every real token after `<bos>` is an action; in SFT only the response
(through `<eor>`) is, the prompt is the state. Pure torch: no Ray, no I/O.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_next_token_loss(
    logits: torch.Tensor, tokens: torch.Tensor, action_mask: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Token-mean cross-entropy of the actions.

    logits (B, T, V) from the states tokens[:, :T]; tokens (B, T); action_mask (B, T) with
    1 where tokens[:, t] is an action (predicted from position t-1). Column 0 is never an
    action. Returns (loss, metrics) with detached metrics.
    """
    pred = logits[:, :-1]  # (B, T-1, V): the distribution in state tokens[:, :t+1]
    target = tokens[:, 1:]  # (B, T-1): the action taken there
    mask = action_mask[:, 1:].to(pred.dtype)
    nll = F.cross_entropy(pred.reshape(-1, pred.shape[-1]), target.reshape(-1), reduction="none").view_as(mask)
    n_actions = mask.sum().clamp(min=1)
    loss = (nll * mask).sum() / n_actions
    correct = (pred.argmax(-1) == target).to(pred.dtype)
    metrics = {
        "loss/lm": loss.detach(),
        "lm/token_accuracy": ((correct * mask).sum() / n_actions).detach(),
        "lm/actions": mask.sum().detach(),
    }
    return loss, metrics


def sft_loss(
    logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, action_mask: torch.Tensor, state_weight: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The actions' loss plus `state_weight` times the next-token loss on the prompt's own tokens.

    The shown series is itself a run of "what comes next" questions, so predicting its
    terms trains the same skill on the same forward pass, at no extra compute. That term
    is a world-model loss on the states, kept apart: the action mask still says which
    tokens are the policy's, and `loss/lm` reports the actions' loss alone. `mask` marks the
    real tokens that may be targets: in rows packed with several documents, each document's
    first token (`<bos>`) is 0 there (`Batch.target_mask`): the token before it is another
    document's.
    """
    loss, metrics = masked_next_token_loss(logits, tokens, action_mask)
    if state_weight == 0:
        return loss, metrics
    state_mask = mask * (1 - action_mask)  # column 0 is never a target of the shifted loss
    state_loss, _ = masked_next_token_loss(logits, tokens, state_mask)
    metrics["loss/state"] = state_loss.detach()
    return loss + state_weight * state_loss, metrics


def sft_token_weights(mask: torch.Tensor, action_mask: torch.Tensor, state_weight: float) -> torch.Tensor:
    """(B, T) weights w such that -sum(w * log pi(token_t | tokens_<t)) is `sft_loss` of the batch.

    PPO-ptx (InstructGPT) adds SFT's loss on SFT's own data to each RL step. The RL batch carries per-action
    log-probs, not logits, and its rows are split across learners, so the two token means are written as one
    weighted sum whose denominators count the whole batch: each learner's share then sums to the global loss.
    Column 0 is never a target, as in `masked_next_token_loss`.
    """
    actions = action_mask.float().clone()
    actions[:, 0] = 0
    weights = actions / actions.sum().clamp(min=1)
    if state_weight == 0:
        return weights
    states = mask.float() * (1 - action_mask.float())
    states[:, 0] = 0
    return weights + state_weight * states / states.sum().clamp(min=1)
