"""Data: corpus readers (readers.py), tokenized memory-mapped shards (shards.py), the toy language (toyland/)."""
