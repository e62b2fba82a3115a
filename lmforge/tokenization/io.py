"""Reading and writing tokenizer directories in the formats HF transformers and the original releases use.

Read: HF ``tokenizer.json`` (used as is), BERT ``vocab.txt`` (+ ``tokenizer_config.json`` do_lower_case),
GPT-2 / RoBERTa ``vocab.json`` + ``merges.txt``, lmforge's own save (tokenizer.json + config).
Write: ``tokenizer.json`` + the family's classic files + ``tokenizer_config.json`` (with
``tokenizer_class`` and the added tokens) + ``special_tokens_map.json``, so ``AutoTokenizer`` loads it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokenizers import Tokenizer as Engine, models

from lmforge.errors import TokenizerError, suggest
from lmforge.tokenization.families import FAMILIES, HF_CLASS_TO_FAMILY, SPECIAL_NAMES, post_processor, set_pipeline

if TYPE_CHECKING:  # pragma: no cover
    from lmforge.tokenization.tokenizer import Tokenizer

EXPECTED = "tokenizer.json, vocab.txt (BERT WordPiece) or vocab.json + merges.txt (GPT-2 / RoBERTa BPE)"
_LIMIT = int(1e29)  # model_max_length values above this mean "no limit" (HF writes 1e30)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TokenizerError(f"{path} is not valid JSON ({err}); fix or delete it") from None
    if not isinstance(data, dict):
        raise TokenizerError(f"{path} should hold a JSON object")
    return data


def _token_text(value: Any) -> str | None:
    """A special token as HF writes it: a string or {"content": ...}."""
    if isinstance(value, dict):
        return value.get("content")
    return None if value is None else str(value)


def _family_from(cfg: dict[str, Any], engine: Engine | None, directory: Path) -> str:
    if cfg.get("lmforge_family") in FAMILIES:
        return cfg["lmforge_family"]
    hf_class = str(cfg.get("tokenizer_class") or "").removesuffix("Fast")
    if hf_class in HF_CLASS_TO_FAMILY:
        return HF_CLASS_TO_FAMILY[hf_class]
    if engine is not None:
        model = type(engine.model).__name__
        vocab = engine.get_vocab()
        if model == "WordPiece":
            return "bert"
        if model == "BPE":
            return "roberta" if "<s>" in vocab and "</s>" in vocab else "gpt2"
        if model == "Unigram":
            return "albert"
        raise TokenizerError(f"{directory}/tokenizer.json uses a {model} model; lmforge reads WordPiece, BPE "
                             "and Unigram tokenizers")
    return "bert" if (directory / "vocab.txt").is_file() else "gpt2"


def _lowercase_from_vocab(vocab: list[str]) -> bool:
    """Guess do_lower_case for a bare vocab.txt: a cased vocabulary holds capitalised words."""
    words = [t for t in vocab if t[:1].isalpha() and not t.startswith("[")]
    upper = sum(t[0].isupper() for t in words)
    return upper < 0.01 * max(len(words), 1)


def load(cls: type["Tokenizer"], directory: Path, *, family: str | None) -> "Tokenizer":
    if family is not None and family not in FAMILIES:
        raise TokenizerError(f"unknown tokenizer family {family!r}; one of {', '.join(FAMILIES)}."
                             + suggest(family, FAMILIES))
    if not directory.is_dir():
        raise TokenizerError(f"tokenizer directory {directory} does not exist; pass a directory holding {EXPECTED}")
    names = ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt")
    if not any((directory / n).is_file() for n in names) and (directory / "tokenizer").is_dir():
        directory = directory / "tokenizer"  # a shard directory keeps its tokenizer in a subfolder
    if not any((directory / n).is_file() for n in names):
        raise TokenizerError(f"no tokenizer files in {directory}: expected {EXPECTED}")
    cfg = _read_json(directory / "tokenizer_config.json")
    smap = _read_json(directory / "special_tokens_map.json")
    lowercase: bool | None = cfg.get("do_lower_case", cfg.get("lowercase"))

    engine: Engine | None = None
    rebuild = False  # classic files: lmforge sets the family's pipeline; a tokenizer.json is used as is
    if (directory / "tokenizer.json").is_file():
        try:
            engine = Engine.from_file(str(directory / "tokenizer.json"))
        except Exception as err:  # the engine raises plain Exception on bad files
            raise TokenizerError(f"{directory / 'tokenizer.json'} cannot be read ({err}); re-save the tokenizer "
                                 f"or remove the file to fall back to the classic vocabulary files") from None
        engine.no_truncation()
        engine.no_padding()
        family = family or _family_from(cfg, engine, directory)
    else:
        family = family or _family_from(cfg, None, directory)
        fam = FAMILIES[family]
        rebuild = True
        if fam.kind == "wordpiece":
            engine, vocab_lines = _load_wordpiece(directory)
            if lowercase is None:
                lowercase = _lowercase_from_vocab(vocab_lines)
        elif fam.kind == "bpe":
            engine = _load_bpe(directory)
        else:
            raise TokenizerError(f"{directory} has no tokenizer.json; a {family} (Unigram) tokenizer is read from "
                                 "tokenizer.json (lmforge's and HF's save)")
        set_pipeline(engine, fam, lowercase=bool(lowercase))

    fam = FAMILIES[family]
    specials: dict[str, str | None] = dict(fam.specials)
    for name in SPECIAL_NAMES:
        key = f"{name}_token"
        for source in (smap, cfg):
            if key in source:
                specials[name] = _token_text(source[key])
    additional = [t for v in (cfg.get("additional_special_tokens") or smap.get("additional_special_tokens")
                              or cfg.get("extra_special_tokens") or []) if (t := _token_text(v))]
    max_len = cfg.get("model_max_length")
    tok = cls(engine, family=family, lowercase=lowercase, special_tokens=specials,
              additional_special_tokens=additional,
              model_max_length=int(max_len) if isinstance(max_len, (int, float)) and max_len < _LIMIT else None)
    if rebuild:
        tok.backend.post_processor = post_processor(tok.backend, fam, specials)
    return tok


def _load_wordpiece(directory: Path) -> tuple[Engine, list[str]]:
    path = directory / "vocab.txt"
    if not path.is_file():
        raise TokenizerError(f"missing vocabulary file {path}: a BERT WordPiece tokenizer needs vocab.txt "
                             "(one token per line) or a tokenizer.json")
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as err:
        raise TokenizerError(f"{path} is not UTF-8 text ({err})") from None
    if lines and lines[-1] == "":
        lines.pop()
    lines = [line.rstrip("\r") for line in lines]
    if not lines:
        raise TokenizerError(f"{path} is empty; a WordPiece vocabulary has one token per line")
    vocab: dict[str, int] = {}
    for i, token in enumerate(lines):
        vocab.setdefault(token, i)
    unk = "[UNK]" if "[UNK]" in vocab else None
    if unk is None:
        raise TokenizerError(f"{path} has no [UNK] token; a BERT vocabulary needs [PAD] [UNK] [CLS] [SEP] [MASK]")
    return Engine(models.WordPiece(vocab, unk_token=unk, max_input_chars_per_word=100)), lines


def _load_bpe(directory: Path) -> Engine:
    vocab, merges = directory / "vocab.json", directory / "merges.txt"
    missing = [p.name for p in (vocab, merges) if not p.is_file()]
    if missing:
        raise TokenizerError(f"missing {' and '.join(missing)} in {directory}: a byte-level BPE tokenizer "
                             "(GPT-2 / RoBERTa) needs vocab.json and merges.txt, or a tokenizer.json")
    try:
        model = models.BPE.from_file(str(vocab), str(merges), dropout=None, continuing_subword_prefix="",
                                     end_of_word_suffix="", fuse_unk=False)
    except Exception as err:
        raise TokenizerError(f"cannot read {vocab.name} + {merges.name} in {directory} ({err})") from None
    return Engine(model)


def save(tok: "Tokenizer", directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    fam = FAMILIES[tok.family]
    written = [directory / "tokenizer.json"]
    tok.backend.save(str(written[0]))
    if fam.kind in ("wordpiece", "bpe") and type(tok.backend.model).__name__ in ("WordPiece", "BPE"):
        # vocab.txt, or vocab.json + merges.txt: the base vocabulary only, as the original releases
        written += [Path(p) for p in tok.backend.model.save(str(directory))]
    added = {str(i): {"content": t.content, "lstrip": t.lstrip, "normalized": t.normalized, "rstrip": t.rstrip,
                      "single_word": t.single_word, "special": t.special}
             for i, t in sorted(tok.backend.get_added_tokens_decoder().items())}
    config: dict[str, Any] = {
        "tokenizer_class": fam.hf_class,
        "lmforge_family": tok.family,
        "lmforge_kind": tok.kind,
        **tok.special_tokens_map,
        "added_tokens_decoder": added,
        "clean_up_tokenization_spaces": fam.kind == "wordpiece",
        "model_input_names": list(fam.model_input_names),  # HF's AlbertTokenizer lists no token_type_ids
    }
    if tok.lowercase is not None:
        config["do_lower_case"] = bool(tok.lowercase)
        if fam.name == "albert":
            config["keep_accents"] = not tok.lowercase
    if fam.kind == "bpe":
        config["add_prefix_space"] = False
    if tok.model_max_length < _LIMIT:
        config["model_max_length"] = tok.model_max_length
    for name, data in (("tokenizer_config.json", config), ("special_tokens_map.json", tok.special_tokens_map)):
        path = directory / name
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(path)
    return written
