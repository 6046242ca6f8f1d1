"""Huffman coding (Huffman, 1952): the last stage of Deep Compression (chapter 7).

A prefix code gives symbol i a codeword of ℓ_i bits, no codeword the start of another. Huffman's algorithm finds the
lengths with the least total Σ_i n_i ℓ_i for counts n_i: take the two least frequent nodes, merge them into one whose
count is their sum, and repeat until one node is left; a symbol's length ℓ_i is the number of merges above it (its
depth in the tree). With p_i = n_i / Σ n, the average length L = Σ p_i ℓ_i of this optimal code satisfies

    H ≤ L < H + 1,        H = −Σ p_i log2 p_i   (the entropy of the counts).

Only the lengths matter for a size: the codewords themselves follow from them (a canonical code), and the code table
is not counted here.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import torch

from . import _checks as checks


def code_lengths(counts: Sequence[int] | torch.Tensor) -> list[int]:
    """The optimal prefix-code length ℓ_i of each symbol, for non-negative ``counts`` n_i (Huffman's algorithm).

    A symbol with count 0 gets length 0 (it is never coded); a single used symbol gets length 1. Ties are broken
    by symbol order, so the result is deterministic.
    """
    values = counts.tolist() if isinstance(counts, torch.Tensor) else list(counts)
    counts = [checks.integer(n, f"counts[{i}]", 0) for i, n in enumerate(values)]
    if not counts:
        raise ValueError("counts must hold at least one symbol's count; got an empty sequence")
    used = [i for i, n in enumerate(counts) if n > 0]
    parent = list(range(len(counts)))  # node ids: the symbols first, then one per merge
    heap = [(counts[i], i) for i in used]
    heapq.heapify(heap)
    while len(heap) > 1:
        (n_a, a), (n_b, b) = heapq.heappop(heap), heapq.heappop(heap)
        parent.append(len(parent))
        parent[a] = parent[b] = len(parent) - 1
        heapq.heappush(heap, (n_a + n_b, len(parent) - 1))
    depth = [0] * len(parent)
    for node in reversed(range(len(parent))):  # a parent's id is larger than its children's
        depth[node] = 0 if parent[node] == node else depth[parent[node]] + 1
    return [max(depth[i], 1) if n > 0 else 0 for i, n in enumerate(counts)]  # a lone symbol still needs 1 bit


def encoded_bits(symbols: torch.Tensor) -> int:
    """Bits of the 1-D integer tensor (or list) ``symbols`` Huffman-coded with the code built from its own counts:
    Σ_i n_i ℓ_i over the distinct values (the code table not counted)."""
    if not isinstance(symbols, torch.Tensor):  # a list or an array of symbols
        try:
            symbols = torch.as_tensor(symbols)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"symbols must be a 1-D tensor of integers; got {type(symbols).__name__}") from None
    symbols = checks.tensor(symbols, "symbols", floating=False, nonempty=True)
    if symbols.dim() != 1 or symbols.is_floating_point() or symbols.is_complex() or symbols.dtype == torch.bool:
        raise ValueError(f"symbols must be a 1-D tensor of integers; got shape {tuple(symbols.shape)}, {symbols.dtype}")
    _, counts = torch.unique(symbols, return_counts=True)
    return sum(n * length for n, length in zip(counts.tolist(), code_lengths(counts.tolist()), strict=True))
