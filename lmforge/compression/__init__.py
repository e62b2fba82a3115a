"""Compression for inference: int8 / bf16 quantization (``quantize.py``; the kernels live in
``lmforge.nn.quantized``), structured and magnitude pruning (``prune.py``), quality on held-out text
(``quality.py``), measurements beside the original (``measure.py``) and the before / after report
(``report.py``). ``lmforge.recipes.compress`` strings them together; ``lmforge compress`` is its CLI."""
