"""Embeddings: RoBERTa's position numbering skips padding as HF's does."""
from __future__ import annotations

import torch

from lmforge import Model

V = 50


def test_roberta_positions_skip_padding():
    model = Model.from_preset("roberta-base", vocab_size=V, num_layers=1, hidden_size=32, num_heads=2,
                              intermediate_size=64).eval()
    ids = torch.tensor([[0, 5, 6, 2, 1, 1]])
    pos = model.body.embeddings.position_ids(ids, 0)
    assert pos.tolist() == [[2, 3, 4, 5, 1, 1]]  # HF create_position_ids_from_input_ids
    assert model.config.max_length == 512


def test_sinusoidal_table_follows_vaswani_and_is_not_saved():
    from lmforge.nn.embeddings import sinusoidal_table

    table = sinusoidal_table(50, 16)
    for pos, i in ((0, 0), (7, 3), (49, 7)):
        angle = torch.tensor(pos / 10000 ** (2 * i / 16))
        torch.testing.assert_close(table[pos, 2 * i], torch.sin(angle))
        torch.testing.assert_close(table[pos, 2 * i + 1], torch.cos(angle))
    model = Model.from_preset("bert-tiny", vocab_size=V, position_kind="sinusoidal")
    assert not any("position" in k for k in model.state_dict() if k.startswith("body.embeddings"))
