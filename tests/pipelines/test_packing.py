"""Packed batches: several documents per row, each one seeing only itself, the loss unchanged."""

import pytest
import torch

from algos.lm import sft_loss
from models.gpt import GPT, GPTConfig, positions_in_documents
from pipelines.train_loop import collate, pack


def test_positions_restart_at_each_document():
    documents = torch.tensor([[1, 1, 1, 2, 2, 0], [1, 1, 2, 2, 2, 3]])
    assert positions_in_documents(documents).tolist() == [[0, 1, 2, 0, 1, 0], [0, 1, 0, 1, 2, 0]]


def test_pack_fills_rows_longest_first_and_marks_documents_and_actions():
    docs = [[1, 10, 11], [1, 20], [1, 30, 31, 32]]
    batch = pack(docs, pad_id=0, width=5, first_action=[2, 1, 3])
    # longest first: [4 tokens] opens row 0, [3] does not fit its last slot and opens row 1, [2] joins row 1
    assert batch.tokens.tolist() == [[1, 30, 31, 32, 0], [1, 10, 11, 1, 20]]
    assert batch.documents.tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 2, 2]]
    assert batch.mask.tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    assert batch.action_mask.tolist() == [[0, 0, 0, 1, 0], [0, 0, 1, 0, 1]]
    # a document's first token is no target: the token before it is another document's
    assert batch.target_mask().tolist() == [[0, 1, 1, 1, 0], [0, 1, 1, 0, 1]]
    assert sorted(batch.rows()) == sorted(docs)


def test_a_document_longer_than_the_row_is_refused():
    with pytest.raises(ValueError, match="does not fit a packed row of 3"):
        pack([[1, 2, 3, 4]], pad_id=0, width=3)


def test_packed_rows_give_each_document_the_logits_loss_and_gradient_it_gets_alone():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=12, n_layer=2, n_head=2, d_model=16, max_len=16))
    docs = [[1, *torch.randint(2, 12, (n,)).tolist()] for n in (6, 3, 9, 2, 4, 5)]
    first_action = [len(d) - 2 for d in docs]
    padded, packed = collate(docs, 0, first_action), pack(docs, 0, 16, first_action)
    assert packed.tokens.shape[0] < padded.tokens.shape[0]  # fewer rows: that is the point

    def loss_and_grads(batch):
        model.zero_grad()
        logits = model(batch.tokens, batch.mask, batch.documents)
        loss, _ = sft_loss(logits, batch.tokens, batch.target_mask(), batch.action_mask, state_weight=2.0)
        loss.backward()
        return logits, loss, [p.grad.clone() for p in model.parameters()]

    padded_logits, padded_loss, padded_grads = loss_and_grads(padded)
    packed_logits, packed_loss, packed_grads = loss_and_grads(packed)
    torch.testing.assert_close(packed_loss, padded_loss)
    for a, b in zip(packed_grads, padded_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
    # the logits of every document, found in its packed row, are the ones it gets alone
    for index, doc in enumerate(docs):
        row, start = _find(packed.tokens.tolist(), packed.documents.tolist(), doc)
        torch.testing.assert_close(
            packed_logits[row, start : start + len(doc)], padded_logits[index, : len(doc)], atol=1e-5, rtol=1e-4
        )


def _find(rows, numbers, doc):
    for r, (tokens, ids) in enumerate(zip(rows, numbers, strict=True)):
        for number in set(ids) - {0}:
            start = ids.index(number)
            if tokens[start : start + len(doc)] == doc and ids.count(number) == len(doc):
                return r, start
    raise AssertionError(f"{doc} not in the packed rows")
