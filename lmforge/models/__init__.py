"""Models: the one Transformer body (transformer.py), heads (heads.py), Model = body + head (model.py),
HF checkpoint conversion (hf/)."""
