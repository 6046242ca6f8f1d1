"""A small GPT: a causal, decoder-only transformer language model (Radford et al., 2018 and 2019).

The model reads token ids ``idx`` of shape (B, T) and returns logits (B, T, V), where row ``t`` scores the token that
follows ``idx[:, : t + 1]``::

    h_0 = E_tok[idx] + E_pos[0 .. T − 1]
    h_l = h'_l + MLP(LN(h'_l)),   h'_l = h_{l−1} + Attention(LN(h_{l−1}))      (pre-LayerNorm blocks, l = 1 .. L)
    logits = W_head · LN(h_L)

Attention is causal (position ``t`` sees positions ``≤ t`` only), computed by ``F.scaled_dot_product_attention``;
the MLP is ``Linear(C, 4C) → GELU → Linear(4C, C)``. Every weight matrix is a plain ``nn.Linear`` (the head's weight
is *not* tied to the token embedding), so pruning and quantization treat each like any other layer.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from . import _checks as checks
from .device import eval_mode


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which each position attends to itself and the positions before it::

        Attention(x) = W_o · concat_h softmax(Q_h K_hᵀ / √d + M) V_h,    M_ij = −∞ for j > i, else 0

    with ``Q, K, V = W_qkv · x`` split into ``n_head`` heads of size ``d = n_embd / n_head``.
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0):
        super().__init__()
        self.n_head, self.dropout = n_head, dropout
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=-1)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))  # (B, H, T, d)
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(b, t, c)))


class Block(nn.Module):
    """One transformer block with pre-LayerNorm residuals: ``x + attn(LN(x))``, then ``x + mlp(LN(x))``."""

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0):
        super().__init__()
        self.ln1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout)
        self.ln2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd),
                                 nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """A GPT language model of ``n_layer`` blocks, ``n_head`` heads and width ``n_embd`` over a vocabulary of
    ``vocab_size`` tokens, for contexts of up to ``block_size`` tokens.

    ``model(idx)`` maps ids (B, T), T ≤ block_size, to logits (B, T, vocab_size); ``model.generate(idx, n)``
    continues ``idx`` by ``n`` sampled tokens. Weights start as in GPT-2: normal with standard deviation 0.02,
    biases zero, and the two projections that add to the residual stream in each block (``attn.proj`` and the
    MLP's second ``Linear``) scaled down by ``1/√(2 · n_layer)``, one factor per residual branch.
    ``GPT(65, 128, 4, 4, 128)`` is a character-level Tiny Shakespeare model of 0.8 M parameters.
    Ids outside ``0 .. vocab_size − 1`` raise a ValueError in ``generate`` and in a forward pass on the CPU (on CUDA
    the forward pass does not check: the check would wait for the GPU at every training step).
    """

    def __init__(self, vocab_size: int, block_size: int, n_layer: int, n_head: int, n_embd: int,
                 dropout: float = 0.0):
        super().__init__()
        vocab_size = checks.integer(vocab_size, "vocab_size", 1)
        block_size = checks.integer(block_size, "block_size", 1)
        n_layer, n_head = checks.integer(n_layer, "n_layer", 1), checks.integer(n_head, "n_head", 1)
        n_embd, dropout = checks.integer(n_embd, "n_embd", 1), checks.fraction(dropout, "dropout", "of units to drop")
        _check_heads(n_embd, n_head)
        self.block_size = block_size
        self.tok_emb = nn.Embedding(vocab_size, n_embd)
        self.pos_emb = nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*[Block(n_embd, n_head, dropout) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)
        self.apply(_gpt2_init)
        for block in self.blocks:  # 2 · n_layer residual branches: their sum keeps its size as n_layer grows
            for proj in (block.attn.proj, block.mlp[2]):
                nn.init.normal_(proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        on_cuda = getattr(idx, "is_cuda", False)  # no range check (a device sync) on CUDA
        _check_idx(idx, self.block_size, None if on_cuda else self.tok_emb.num_embeddings)
        positions = torch.arange(idx.shape[1], device=idx.device)
        x = self.drop(self.tok_emb(idx.long()) + self.pos_emb(positions))
        return self.head(self.ln_f(self.blocks(x)))

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """``idx`` (B, T) followed by ``max_new_tokens`` tokens sampled one at a time, (B, T + max_new_tokens).

        Each new token is drawn from ``softmax(logits / temperature)`` of the last position, given the last
        ``block_size`` tokens so far; ``top_k`` keeps only the k most likely tokens. Sampling uses ``generator``
        (a ``torch.Generator`` on ``idx``'s device) for reproducible text. Runs in eval mode, without gradients,
        and leaves the model's train/eval mode as it found it.
        """
        _check_idx(idx, None, self.tok_emb.num_embeddings)
        max_new_tokens = checks.integer(max_new_tokens, "max_new_tokens", 0)
        temperature = checks.temperature(temperature)
        top_k, generator = None if top_k is None else checks.integer(top_k, "top_k", 1), checks.generator(generator)
        with eval_mode(self):
            for _ in range(max_new_tokens):
                logits = self(idx[:, -self.block_size :])[:, -1, :].float() / temperature
                if top_k is not None and top_k < logits.shape[-1]:  # exactly top_k kept, even among ties
                    top = logits.topk(top_k, dim=-1)
                    logits = torch.full_like(logits, -float("inf")).scatter(-1, top.indices, top.values)
                with _nonfinite_logits():
                    next_token = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)
                idx = torch.cat([idx, next_token], dim=1)
        return idx


def _gpt2_init(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


@contextlib.contextmanager
def _nonfinite_logits() -> Iterator[None]:
    """torch's "probability tensor contains either inf, nan or element < 0" said of the model that caused it."""
    try:
        yield
    except RuntimeError as e:
        if "probability tensor" not in str(e):
            raise
        raise ValueError("generate: the model's logits are NaN or inf, so there is nothing to sample from; expected "
                         "finite logits (are its weights still finite? a diverged training run leaves NaN)") from None


def _check_heads(n_embd: int, n_head: int) -> None:
    if n_embd % n_head:
        raise ValueError(f"n_embd must be divisible by n_head (each head gets n_embd / n_head dimensions); got "
                         f"n_embd={n_embd}, n_head={n_head}")


def _check_idx(idx, block_size: int | None, vocab_size: int | None = None) -> None:
    """Token ids (B, T) of an integer dtype, T ≥ 1, (unless ``block_size`` is None) T ≤ block_size and (unless
    ``vocab_size`` is None: on CUDA, where the check would wait for the GPU at every step) 0 ≤ id < vocab_size."""
    checks.tensor(idx, "idx", floating=False)
    integer_ids = not (idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool)
    if idx.dim() != 2 or idx.shape[1] == 0 or not integer_ids:
        raise ValueError(f"idx must be token ids of shape (B, T), T ≥ 1, of an integer dtype; got shape "
                         f"{tuple(idx.shape)}, dtype {idx.dtype}")
    if block_size is not None and idx.shape[1] > block_size:
        raise ValueError(f"idx has {idx.shape[1]} tokens per row; the model's block_size is {block_size} (crop the "
                         f"context to its last {block_size} tokens, as generate does)")
    if vocab_size is not None:
        checks.id_range(idx, vocab_size, "idx", "vocab_size")
