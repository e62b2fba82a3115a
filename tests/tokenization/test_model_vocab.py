"""Model / tokenizer mismatch: loading a model with a tokenizer larger than its embeddings fails with a message
suggesting resize_token_embeddings, in the Python helper and wherever lmforge loads the two together
(generate / fill-mask / fewshot / prompt via load_model_and_tokenizer; finetune's load_model)."""
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
    gpt, n = _checkpoint(tmp_path / "gpt", refdata, "gpt-tiny", "gpt2", "clm", ["newword", "otherword"])
    assert main(["generate", "--model", str(gpt), "--prompt", "hello", "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert f"the tokenizer has {n} tokens but the model's embeddings have only {n - 2} rows" in err
    assert f"resize_token_embeddings({n})" in err
    bert, n = _checkpoint(tmp_path / "bert", refdata, "bert-tiny", "bert-base-uncased", "mlm", ["lmforge"])
    assert main(["fill-mask", "--model", str(bert), "paris is the [MASK] of france ."]) == 2
    assert f"resize_token_embeddings({n})" in capsys.readouterr().err


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
