"""Fine-tuning's speed-ups keep what a user gets: evaluation batches sorted by length give every example
its own prediction in input order, features come from the cache only when nothing featurize reads has
changed (tokenizer, max length, task options, examples), and `--disable` switches each speed-up off."""
from __future__ import annotations

import json

import pytest
import torch

from lmforge import Model, ModelConfig
from lmforge.cli import main
from lmforge.recipes.finetune import predict
from lmforge.tasks import featurize_all, get_task
from lmforge.tasks.cache import cached_featurize_all

SST_HEADER = "sentence\tlabel"


def _stsb_pairs(bert_tok):
    """11 STS-B pairs of different lengths and a 1-layer bert-tiny regressor (raw scores: nothing rounds them)."""
    task = get_task("glue-stsb")
    words = "a fine film that nobody saw and everyone talked about for years".split()
    examples = [{"id": str(i), "source": f"x:{i}", "text": " ".join(words[: 1 + (7 * i) % len(words)]),
                 "text_pair": " ".join(words[: 1 + (3 * i) % 5]), "label": 0.0} for i in range(11)]
    features, _ = featurize_all(task, examples, bert_tok, max_length=32)
    torch.manual_seed(0)
    model = Model(ModelConfig.from_preset("bert-tiny", head="seq-cls", num_labels=1, vocab_size=len(bert_tok),
                                          num_layers=1)).eval()
    return task, examples, features, model


def test_sorted_evaluation_restores_the_input_order(bert_tok) -> None:
    task, examples, features, model = _stsb_pairs(bert_tok)
    got = predict(model, task, examples, features, pad_id=0, batch_size=4)  # sorted batches, padding-free
    model.body.padding_free = False
    alone = [predict(model, task, [ex], [dict(f, example_index=0)], pad_id=0, batch_size=1)[0]
             for ex, f in zip(examples, features)]  # each example on its own: no padding, no sorting
    assert len({len(f["input_ids"]) for f in features}) > 3  # the lengths really differ
    torch.testing.assert_close(torch.tensor(got), torch.tensor(alone), atol=1e-5, rtol=1e-5)


def test_feature_cache_hits_and_invalidation(bert_tok, tmp_path, monkeypatch) -> None:
    from lmforge import Tokenizer

    task = get_task("glue-sst2")
    examples = [{"id": str(i), "source": "x", "text": f"a film number {i} that was fine", "text_pair": None,
                 "label": i % 2} for i in range(6)]
    first, cut, hit = cached_featurize_all(task, examples, bert_tok, max_length=32, cache_dir=tmp_path)
    assert not hit and list(tmp_path.glob("glue-sst2-*.json"))
    calls = []
    real = type(task).featurize
    monkeypatch.setattr(type(task), "featurize", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    again, cut2, hit = cached_featurize_all(task, examples, bert_tok, max_length=32, cache_dir=tmp_path)
    assert hit and not calls and again == first and cut2 == cut  # read back, featurize not called

    _, _, hit = cached_featurize_all(task, examples, bert_tok, max_length=16, cache_dir=tmp_path)
    assert not hit and calls  # another max length: featurized again
    bert_tok.save_pretrained(tmp_path / "tok")
    changed = Tokenizer.from_pretrained(tmp_path / "tok")
    changed.add_tokens(["filmography"])  # another vocabulary: another key
    calls.clear()
    _, _, hit = cached_featurize_all(task, examples, changed, max_length=32, cache_dir=tmp_path)
    assert not hit and calls
    _, _, hit = cached_featurize_all(task, [dict(e, text=e["text"] + "!") for e in examples], bert_tok,
                                     max_length=32, cache_dir=tmp_path)
    assert not hit  # other examples
    _, _, hit = cached_featurize_all(task, examples, bert_tok,
                                     max_length=32, cache_dir=tmp_path)
    assert hit


def test_squad_windows_survive_the_cache(refdata, bert_tok, tmp_path) -> None:
    task = get_task("squad-v2", doc_stride=32)
    examples = task.read(refdata / "squad", "dev")
    want, _ = featurize_all(task, examples, bert_tok, max_length=96)
    cached_featurize_all(task, examples, bert_tok, max_length=96, cache_dir=tmp_path)
    got, _, hit = cached_featurize_all(task, examples, bert_tok, max_length=96, cache_dir=tmp_path)
    assert hit and got == want  # offsets come back as tuples
    _, _, hit = cached_featurize_all(get_task("squad-v2", doc_stride=16), examples, bert_tok, max_length=96,
                                     cache_dir=tmp_path)
    assert not hit  # a task option changed


def test_finetune_uses_the_cache_and_disable_switches_speedups_off(tiny_encoder, tmp_path, monkeypatch, capsys):
    rows = [f"{' '.join(['good'] * (1 + k % 9))} film\t{k % 2}" for k in range(40)]
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.tsv").write_text("\n".join([SST_HEADER, *rows]) + "\n")
    (data / "dev.tsv").write_text("\n".join([SST_HEADER, *rows[:10]]) + "\n")
    cache = tmp_path / "cache"
    monkeypatch.setenv("LMFORGE_CACHE", str(cache))
    args = ["finetune", "--model", str(tiny_encoder), "--task", "glue-sst2", "--data", str(data), "--epochs", "1",
            "--batch-size", "8", "--lr", "1e-3", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert len(list((cache / "features").glob("*.json"))) == 2  # train and dev
    assert main([*args, "--out", str(tmp_path / "b")]) == 0  # from the cache: the same run
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in "ab")
    assert a == b
    assert main([*args, "--out", str(tmp_path / "c"), "--disable", "group-by-length", "padding-free",
                 "feature-cache", "cls-only", "sparse-rows"]) == 0
    saved = json.loads((tmp_path / "c" / "trainer_state.json").read_text())["run"]
    assert saved["group_by_length"] is False and saved["padding_free"] is False and saved["cls_only"] is False
    assert saved["sparse_rows"] is False
    with pytest.raises(SystemExit) as stop:  # a usage error: argparse's exit 2
        main([*args, "--out", str(tmp_path / "d"), "--disable", "fast"])
    assert stop.value.code == 2
    assert "invalid choice: 'fast'" in capsys.readouterr().err


@pytest.mark.parametrize("which", ["encoder", "decoder"])
def test_sparse_rows_train_as_the_dense_table(tiny_encoder, tiny_decoder, tmp_path, monkeypatch, which):
    """`sparse-rows` (on by default on CPU): the word table's gradient arrives as its rows and SparseRows' gathered
    AdamW steps run; the fine-tuned weights equal `--disable sparse-rows`' up to float rounding (the clipping norm
    sums the rows in another order), and the model's table is dense again afterwards. A decoder whose LM head
    shares the table (GPT-1's auxiliary loss) keeps the dense gradient: the head's would make it dense anyway."""
    from safetensors.torch import load_file

    import lmforge.recipes.finetune as ft
    from lmforge.train.optim import SparseRows

    data = _sst_dir(tmp_path)
    gathered, models = [], []
    real_after, real_load = SparseRows._after_step, ft.load_model
    monkeypatch.setattr(SparseRows, "_after_step", lambda self, *a: gathered.append(len(self.held)) or
                        real_after(self, *a))
    monkeypatch.setattr(ft, "load_model", lambda *a, **k: models.append(real_load(*a, **k)) or models[-1])
    model = tiny_encoder if which == "encoder" else tiny_decoder
    for name, on in (("sparse", True), ("dense", False)):
        ft.finetune(ft.FinetuneConfig(model=str(model), task="glue-sst2", data=str(data), out=str(tmp_path / name),
                                      epochs=2, batch_size=8, lr=1e-3, device="cpu", progress=False, sparse_rows=on),
                    log=lambda m: None)
        assert models[-1][0].get_input_embeddings().sparse is False
    steps = len(gathered) // 2
    if which == "encoder":
        assert sum(gathered[:steps]) == steps - 1 and sum(gathered[steps:]) == 0  # the first step is dense
    else:
        assert sum(gathered) == 0
    a, b = (load_file(tmp_path / name / "model.safetensors") for name in ("sparse", "dense"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)
    moved = load_file(model / "model.safetensors")
    assert any(not torch.equal(a[k], moved[k]) for k in a if k in moved)  # training did change the weights


def _sst_dir(tmp_path, n: int = 40):
    rows = [f"{' '.join(['good'] * (1 + k % 9))} {'bad ' * (k % 3)}film\t{k % 2}" for k in range(n)]
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.tsv").write_text("\n".join([SST_HEADER, *rows]) + "\n")
    (data / "dev.tsv").write_text("\n".join([SST_HEADER, *rows[:12]]) + "\n")
    return data


def test_outputs_come_from_the_best_evaluation_without_scoring_it_again(tiny_encoder, tmp_path, monkeypatch):
    """metrics.json / predictions.tsv are the best epoch's evaluation, reused: what a fresh evaluation of the
    saved model gives, with one evaluation pass per epoch and none more. A run under autocast scores again."""
    import lmforge.recipes.finetune as ft

    data = _sst_dir(tmp_path)
    calls: list[int] = []
    real = ft.evaluate
    monkeypatch.setattr(ft, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    scores = ft.finetune(ft.FinetuneConfig(model=str(tiny_encoder), task="glue-sst2", data=str(data), out=str(out),
                                           epochs=3, lr=5e-3, batch_size=8, seed=3, progress=False, device="cpu"),
                         log=lambda m: None)
    assert len(calls) == 3  # one per epoch: the end reused the best one's outputs
    best = json.loads((out / "best" / "best.json").read_text())
    assert best["value"] == scores["accuracy"]
    again = ft.evaluate_dir(str(out), task=None, data=str(data), split="dev", out=str(tmp_path / "again"),
                            device="cpu", log=lambda m: None)
    assert again == scores == json.loads((out / "metrics.json").read_text())
    assert (tmp_path / "again" / "predictions.tsv").read_text() == (out / "predictions.tsv").read_text()

    calls.clear()
    ft.finetune(ft.FinetuneConfig(model=str(tiny_encoder), task="glue-sst2", data=str(data), out=str(tmp_path / "bf"),
                                  epochs=1, lr=5e-3, batch_size=8, seed=3, progress=False, device="cpu",
                                  precision="bf16"), log=lambda m: None)
    assert len(calls) == 2  # evaluated under autocast during training: the outputs are scored again


def test_evaluation_batches_capped_in_positions() -> None:
    """``_batches``: every feature once, ascending length, at most batch_size features and max_tokens padded
    positions a batch (a longer single feature alone); a multiple-choice feature counts a row per choice."""
    from lmforge.recipes.finetune import _batches

    lengths = [5, 40, 12, 40, 3, 33, 18, 7, 40, 25, 9, 30]
    feats = [{"input_ids": [1] * n} for n in lengths]
    for batch_size, cap in [(4, None), (4, 64), (64, 64), (3, 10), (64, 1)]:
        batches = _batches(feats, batch_size, cap)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(len(feats)))
        assert [lengths[i] for i in flat] == sorted(lengths)
        for b in batches:
            assert len(b) <= batch_size
            assert cap is None or len(b) == 1 or len(b) * max(lengths[i] for i in b) <= cap, (batch_size, cap, b)
    # 3 5 7 9 12 (5 x 12 = 60 positions) | 18 25 (2 x 25) | 30 | 33 (2 x 33 > 64) | 40 | 40 | 40
    assert [len(b) for b in _batches(feats, 64, 64)] == [5, 2, 1, 1, 1, 1, 1]
    choices = [{"input_ids": [[1] * n] * 4} for n in (10, 10, 10)]  # 4 rows of 10: 40 positions each
    assert [len(b) for b in _batches(choices, 64, 80)] == [2, 1]


def test_capped_evaluation_forwards_give_the_same_predictions(bert_tok, monkeypatch) -> None:
    import lmforge.recipes.finetune as ft

    task, examples, features, model = _stsb_pairs(bert_tok)
    calls = []
    model.register_forward_hook(lambda m, a, k, out: calls.append(1), with_kwargs=True)
    whole = predict(model, task, examples, features, pad_id=0, batch_size=64)
    assert len(calls) == 1  # bert-tiny at 16 MiB: every example in one forward
    # 30 positions a forward: bert-tiny's widest activation is F = 512 numbers (3H = 384) of 4 bytes a position
    monkeypatch.setattr(ft, "EVAL_CHUNK_BYTES", 30 * 512 * 4)
    calls.clear()
    capped = predict(model, task, examples, features, pad_id=0, batch_size=64)
    assert len(calls) > 3
    torch.testing.assert_close(torch.tensor(capped), torch.tensor(whole), atol=1e-5, rtol=1e-5)
