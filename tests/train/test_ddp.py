"""DDP around every head the trainers use: a BERT body has a pooler that MLM / token / span losses never
read. Computing it anyway made those parameters "used without gradient", which DDP's
find_unused_parameters cannot detect: the second step died with "Expected to have finished reduction"."""
import os
import socket

import pytest
import torch
import torch.distributed as dist

from lmforge import Model, ModelConfig
from lmforge.train.distributed import may_leave_parameters_unused


@pytest.fixture
def one_process_group():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("head", ["mlm", "token-cls", "qa", "seq-cls", "pretraining"])
def test_ddp_trains_every_head_of_a_body_with_a_pooler(one_process_group, head):
    """With the unused-parameter search exactly where lmforge's wrapper turns it on (pooler-free heads)."""
    torch.manual_seed(0)
    config = ModelConfig.from_preset("bert-tiny", vocab_size=100, num_labels=3, hidden_dropout=0.0,
                                     attention_dropout=0.0, head=head)
    model = Model(config)
    assert model.body.pooler is not None
    search = may_leave_parameters_unused(model)
    assert search == (head in ("mlm", "token-cls", "qa"))
    ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=search)
    ids = torch.randint(5, 100, (2, 12))
    extra = {}
    if head in ("mlm", "token-cls"):
        labels = torch.full_like(ids, -100)
        labels[:, 3] = ids[:, 3] % 3
    elif head == "qa":
        labels = None
        extra = {"start_positions": torch.tensor([1, 2]), "end_positions": torch.tensor([3, 4])}
    elif head == "pretraining":
        labels = torch.full_like(ids, -100)
        labels[:, 3] = ids[:, 3]
        extra = {"next_sentence_label": torch.tensor([0, 1])}
    else:
        labels = torch.tensor([0, 2])
    for _ in range(3):  # the failure came at the second step
        out = ddp(ids, labels=labels, **extra) if labels is not None else ddp(ids, **extra)
        out.loss.backward()
    pooler_grad = model.body.pooler.dense.weight.grad
    if head in ("seq-cls", "pretraining"):
        assert pooler_grad is not None and pooler_grad.abs().sum() > 0
    else:
        assert pooler_grad is None
        assert out.get("pooler_output") is None
    # inference still returns the pooled output (embeddings, users' own heads)
    assert model.eval()(ids).pooler_output is not None


@pytest.mark.parametrize("head", ["clm", "seq-cls", "token-cls"])
def test_ddp_without_the_unused_parameter_search_on_a_body_without_a_pooler(one_process_group, head, recwarn):
    """A GPT body has no pooler: every parameter is read every step, so the wrapper leaves DDP's per-step
    search (and its "did not find any unused parameters" warning) off, and training steps still reduce."""
    torch.manual_seed(0)
    model = Model(ModelConfig.from_preset("gpt-mini", vocab_size=100, num_labels=3, hidden_dropout=0.0,
                                          attention_dropout=0.0, head=head))
    assert not may_leave_parameters_unused(model)
    ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=False)
    ids = torch.randint(5, 100, (2, 12))
    labels = {"clm": ids, "seq-cls": torch.tensor([0, 2]), "token-cls": ids % 3}[head]
    for _ in range(3):  # an unused parameter would fail the second step ("Expected to have finished reduction")
        ddp(ids, labels=labels).loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    assert not [w for w in recwarn if "unused parameters" in str(w.message)]
