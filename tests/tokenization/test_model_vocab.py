"""Model / tokenizer mismatch: loading a model with a tokenizer larger than its embeddings fails with a message
suggesting resize_token_embeddings in Python, and the model's own tokenizer on the command line, wherever lmforge
loads the two together (generate / fill-mask / fewshot / prompt via load_model_and_tokenizer; finetune's
load_model)."""
from __future__ import annotations

import pytest

from lmforge import Model
from lmforge.cli import main
from lmforge.errors import TokenizerError
from lmforge.tokenization.tokenizer import Tokenizer

SMALL = dict(num_layers=1, hidden_size=32, num_heads=2, intermediate_size=64)


def _checkpoint(tmp_path, refdata, preset, vocab, head, extra_tokens):
    tok = Tokenizer.from_pretrained(refdata / "tokenizers" / vocab)
    model = Model.from_preset(preset, head=head, vocab_size=len(tok), **SMALL)
    if extra_tokens:
        assert tok.add_tokens(extra_tokens) == len(extra_tokens)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    return tmp_path, len(tok)


def test_generate_and_fill_mask_refuse_a_larger_tokenizer(tmp_path, refdata, capsys):
    # the command line gets the command-line fix (the model's own tokenizer), never a Python method to call
    gpt, n = _checkpoint(tmp_path / "gpt", refdata, "gpt-tiny", "gpt2", "clm", ["newword", "otherword"])
    assert main(["generate", "--model", str(gpt), "--prompt", "hello", "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert f"the tokenizer has {n} tokens but the model's embeddings have only {n - 2} rows" in err
    assert f"it is not the tokenizer the model was trained with; put the tokenizer the model was trained with in {gpt}" \
        in err and "resize_token_embeddings" not in err
    bert, n = _checkpoint(tmp_path / "bert", refdata, "bert-tiny", "bert-base-uncased", "mlm", ["lmforge"])
    assert main(["fill-mask", "--model", str(bert), "paris is the [MASK] of france ."]) == 2
    err = capsys.readouterr().err
    assert f"put the tokenizer the model was trained with in {bert}" in err and "resize_token_embeddings" not in err
    # finetune: the flag that fixes it
    assert main(["finetune", "--model", str(bert), "--task", "glue-sst2", "--data", str(refdata / "glue" / "SST-2"),
                 "--train-split", "dev", "--out", str(tmp_path / "ft")]) == 2
    err = capsys.readouterr().err
    assert "pass that one with --tokenizer DIR, or leave --tokenizer out to use the model directory's" in err
    assert "resize_token_embeddings" not in err


def test_matching_tokenizer_loads(tmp_path, refdata):
    from lmforge.recipes.loading import load_model_and_tokenizer

    gpt, n = _checkpoint(tmp_path / "gpt", refdata, "gpt-tiny", "gpt2", "clm", [])
    model, tok = load_model_and_tokenizer(str(gpt))
    assert model.config.vocab_size == len(tok) == n


def test_finetune_load_model_suggests_resize_for_an_encoder(tmp_path, refdata):
    from lmforge.recipes.finetune import load_model
    from lmforge.tasks import get_task

    bert, n = _checkpoint(tmp_path / "bert", refdata, "bert-tiny", "bert-base-uncased", "mlm", ["lmforge"])
    with pytest.raises(TokenizerError, match=rf"resize_token_embeddings\({n}\)"):
        load_model(str(bert), get_task("glue-sst2"), Tokenizer.from_pretrained(bert), log=lambda _: None)
