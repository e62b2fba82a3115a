"""Per-family tokenizer pipelines: what makes a `tokenizers` engine behave as BERT, GPT-2, RoBERTa or ALBERT.

lmforge does not implement WordPiece / BPE / Unigram itself: the HF `tokenizers` library (Rust) is the
engine. What lives here is the configuration each original model used (normalizer, pre-tokenizer,
decoder, special tokens and the template that puts them around one text or a pair), written so
that HF transformers rebuilds exactly the same pipeline from our saved files.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tokenizers import AddedToken, Tokenizer as Engine, decoders, normalizers, pre_tokenizers, processors

# Names of the special-token attributes (HF order). `additional_special_tokens` is kept apart.
SPECIAL_NAMES: tuple[str, ...] = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")


@dataclass(frozen=True)
class Family:
    """One model family's tokenizer conventions."""

    name: str
    kind: str  # "wordpiece" | "bpe" | "unigram": the engine model
    # special-token attribute -> token text; in training order first (their ids are 0, 1, ...)
    specials: dict[str, str]
    training_order: tuple[str, ...]  # token texts, id order when trained from scratch
    hf_class: str  # tokenizer_class written to tokenizer_config.json for AutoTokenizer
    model_input_names: tuple[str, ...]
    # tokens matched with lstrip (RoBERTa's "<mask>" eats the space before it, as in the original)
    lstrip: frozenset[str] = field(default_factory=frozenset)


FAMILIES: dict[str, Family] = {
    "bert": Family(
        name="bert", kind="wordpiece",
        specials={"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"},
        training_order=("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"),
        hf_class="BertTokenizer", model_input_names=("input_ids", "token_type_ids", "attention_mask")),
    "gpt2": Family(
        name="gpt2", kind="bpe",
        specials={"bos": "<|endoftext|>", "eos": "<|endoftext|>", "unk": "<|endoftext|>"},
        training_order=("<|endoftext|>",),
        hf_class="GPT2Tokenizer", model_input_names=("input_ids", "attention_mask")),
    "roberta": Family(
        name="roberta", kind="bpe",
        specials={"bos": "<s>", "eos": "</s>", "unk": "<unk>", "sep": "</s>", "pad": "<pad>", "cls": "<s>",
                  "mask": "<mask>"},
        training_order=("<s>", "<pad>", "</s>", "<unk>", "<mask>"),  # the original fairseq dictionary order
        hf_class="RobertaTokenizer", model_input_names=("input_ids", "attention_mask"),
        lstrip=frozenset({"<mask>"})),
    "albert": Family(
        name="albert", kind="unigram",
        specials={"bos": "[CLS]", "eos": "[SEP]", "unk": "<unk>", "sep": "[SEP]", "pad": "<pad>", "cls": "[CLS]",
                  "mask": "[MASK]"},
        # HF's AlbertTokenizer hard-codes unk_id=1, as in the original spiece.model
        training_order=("<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"),
        hf_class="AlbertTokenizer", model_input_names=("input_ids", "token_type_ids", "attention_mask")),
}

# the family a kind trains as unless told otherwise
DEFAULT_FAMILY: dict[str, str] = {"wordpiece": "bert", "bpe": "gpt2", "unigram": "albert"}

# HF tokenizer_class (with or without "Fast") -> family
HF_CLASS_TO_FAMILY: dict[str, str] = {
    "BertTokenizer": "bert", "DistilBertTokenizer": "bert", "ElectraTokenizer": "bert",
    "GPT2Tokenizer": "gpt2", "OpenAIGPTTokenizer": "gpt2",
    "RobertaTokenizer": "roberta", "AlbertTokenizer": "albert",
}


def added_token(family: Family, text: str) -> AddedToken:
    """A special token as the original tokenizers register it: matched on raw text, never split."""
    return AddedToken(text, special=True, normalized=False, lstrip=text in family.lstrip)


def set_pipeline(engine: Engine, family: Family, *, lowercase: bool) -> None:
    """Normalizer, pre-tokenizer and decoder of ``family`` (the model and its vocabulary stay)."""
    if family.name == "bert":
        # clean control chars, split CJK ideographs, strip accents exactly when lowercasing (BERT uncased)
        engine.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase)
        engine.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        engine.decoder = decoders.WordPiece(prefix="##")
    elif family.kind == "bpe":
        engine.normalizer = None
        engine.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        engine.decoder = decoders.ByteLevel()
    else:  # albert: SentencePiece-style ▁ marker; same normalizers as HF's AlbertTokenizer rebuilds
        steps = [normalizers.Replace("``", '"'), normalizers.Replace("''", '"')]
        if lowercase:  # keep_accents = not lowercase, as BERT ties accent stripping to lowercasing
            steps += [normalizers.NFKD(), normalizers.StripAccents(), normalizers.Lowercase()]
        engine.normalizer = normalizers.Sequence(steps)
        engine.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")])
        engine.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")


def post_processor(engine: Engine, family: Family, specials: dict[str, str | None]) -> Any:
    """The template around one text / a pair, with the current cls/sep tokens and their ids."""
    if family.name == "gpt2":
        # GPT-2 adds nothing; type ids 0 then 1 for pairs (HF's GPT2Tokenizer template)
        return processors.TemplateProcessing(single="$A:0", pair="$A:0 $B:1", special_tokens=[])
    cls, sep = specials.get("cls"), specials.get("sep")
    if cls is None or sep is None or engine.token_to_id(cls) is None or engine.token_to_id(sep) is None:
        return processors.TemplateProcessing(single="$A:0", pair="$A:0 $B:1", special_tokens=[])
    cls_id, sep_id = engine.token_to_id(cls), engine.token_to_id(sep)
    if family.name == "roberta":  # <s> A </s></s> B </s>, all type id 0
        return processors.RobertaProcessing((sep, sep_id), (cls, cls_id), trim_offsets=True, add_prefix_space=False)
    return processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, cls_id), (sep, sep_id)])
