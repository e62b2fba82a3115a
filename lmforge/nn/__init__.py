"""Building blocks of the one Transformer body, with no family branching: embeddings, attention kinds,
the pre-/post-LN block and its MLP, activations."""
