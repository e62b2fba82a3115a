"""Pre-training objectives: each builds examples from shards, collates a batch and computes its loss.

``OBJECTIVES`` maps a name (``clm``, ``mlm``, ``mlm+nsp``, ``mlm+sop``) to its class; loss functions
shared with the model heads live in ``losses.py``.
"""
