"""One Transformer layer: attention + MLP, each with a residual and a LayerNorm placed after the residual
(post-LN: BERT, GPT-1) or before the sublayer (pre-LN: GPT-2/3)."""
from __future__ import annotations

import torch
from torch import nn

from lmforge.config import ModelConfig
from lmforge.nn.activations import Activation
from lmforge.nn.attention import ATTENTION_KINDS, AttentionMask
from lmforge.nn.attention.dense import KV
from lmforge.nn.attention.cpu_fastpath import gather_rows
from lmforge.nn.dropout import Dropout


class MLP(nn.Module):
    def __init__(self, config: ModelConfig, *, ffn_size: int | None = None) -> None:
        super().__init__()
        width = config.ffn_size if ffn_size is None else ffn_size  # narrower after neuron pruning
        self.fc1 = nn.Linear(config.hidden_size, width)
        self.act = Activation(config.activation)
        self.fc2 = nn.Linear(width, config.hidden_size)
        self.chunk_size = config.ff_chunk_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.chunk_size and x.size(-2) > self.chunk_size:
            return self.chunked(x)
        return self.fc2(self.act(self.fc1(x)))  # (B, T, F) inside

    def chunked(self, x: torch.Tensor) -> torch.Tensor:
        """Reformer's chunked feed-forward: positions are independent in the MLP, so ``ff_chunk_size`` of them at
        a time give the same output with a (B, chunk, F) intermediate instead of (B, T, F). The saving is in
        what is alive at once: inference and the no-grad forward of reversible stacks; under autograd every
        chunk's activations are kept for backward all the same."""
        out = torch.empty_like(x)
        for start in range(0, x.size(-2), self.chunk_size):
            part = x[..., start:start + self.chunk_size, :]
            out[..., start:start + self.chunk_size, :] = self.fc2(self.act(self.fc1(part)))
        return out


class Block(nn.Module):
    def __init__(self, config: ModelConfig, *, layer: int = 0) -> None:
        """``layer``: the stored layer's index, which picks its attention kind (``attention_pattern``) and
        seeds what a kind draws per layer (BigBird's random blocks)."""
        super().__init__()
        self.pre_norm = config.norm_placement == "pre"
        kind = config.layer_attention_kind(layer)
        field = "attention_pattern" if config.attention_pattern else "attention_kind"
        self.attn = ATTENTION_KINDS.lookup(kind, field)(config, layer=layer)
        self.attn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = MLP(config, ffn_size=config.ffn_in_layer(layer))
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout)  # dropout(a, residual=x) = x + dropout(a), one kernel

    def forward(self, x: torch.Tensor, *, mask: AttentionMask, past: KV | None = None, use_cache: bool = False,
                output_attentions: bool = False, query_index: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, KV | None, torch.Tensor | None]:
        """``query_index`` (B, M): compute only the outputs at those positions -> (B, M, H) (every
        position still serves as a key / value); no cache or attention maps then."""
        if self.pre_norm:
            a, present, probs = self.attn(self.attn_norm(x), mask=mask, past=past, use_cache=use_cache,
                                          output_attentions=output_attentions, query_index=query_index)
            if query_index is not None:
                x = gather_rows(x, query_index)  # (B, M, H)
            x = self.dropout(a, residual=x)
            x = self.dropout(self.mlp(self.mlp_norm(x)), residual=x)
        else:
            a, present, probs = self.attn(x, mask=mask, past=past, use_cache=use_cache,
                                          output_attentions=output_attentions, query_index=query_index)
            if query_index is not None:
                x = gather_rows(x, query_index)  # (B, M, H)
            x = self.attn_norm(self.dropout(a, residual=x))
            x = self.mlp_norm(self.dropout(self.mlp(x), residual=x))
        return x, present, probs

    # ---- the two sublayers of a reversible block (lmforge/nn/reversible.py): pre-LN, no residual of their own
    def attention_branch(self, x: torch.Tensor, residual: torch.Tensor | None = None, *, mask: AttentionMask,
                         past: KV | None = None, use_cache: bool = False, output_attentions: bool = False,
                         ) -> tuple[torch.Tensor, KV | None, torch.Tensor | None]:
        """residual + dropout(attention(LN(x))) (no residual: the branch alone), the cache entry, the maps."""
        a, present, probs = self.attn(self.attn_norm(x), mask=mask, past=past, use_cache=use_cache,
                                      output_attentions=output_attentions)
        return self.dropout(a, residual=residual), present, probs

    def mlp_branch(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """residual + dropout(mlp(LN(x)))."""
        return self.dropout(self.mlp(self.mlp_norm(x)), residual=residual)
