"""Tokenizers: the HF-style `Tokenizer` API over the HF `tokenizers` engine, loading, saving and training.

tokenizer.py holds the API, families.py the per-family pipelines (BERT / GPT-2 / RoBERTa / ALBERT),
io.py the file formats, train.py the streaming trainers.
"""
from lmforge.tokenization.tokenizer import BatchEncoding, Tokenizer, check_model_vocab

__all__ = ["BatchEncoding", "Tokenizer", "check_model_vocab"]
