"""kdlite.huffman against a brute-force optimal prefix code and the entropy bound, and the Deep Compression size
against a count by hand (issue #12)."""

import itertools
import math

import pytest
import torch
from torch import nn

from kdlite import huffman, measure, quant


def brute_force_total(counts):
    """The least Σ n_i ℓ_i over all length vectors of a prefix code (Kraft: Σ 2^-ℓ_i ≤ 1), used symbols only."""
    used = [n for n in counts if n > 0]
    if len(used) == 1:
        return used[0]
    best = math.inf
    for lengths in itertools.product(range(1, len(used)), repeat=len(used)):
        if sum(2.0**-ell for ell in lengths) <= 1:
            best = min(best, sum(n * ell for n, ell in zip(used, lengths, strict=True)))
    return best


@pytest.mark.parametrize("seed", range(40))
def test_code_lengths_are_optimal_and_within_a_bit_of_the_entropy(seed):
    g = torch.Generator().manual_seed(seed)
    k = int(torch.randint(1, 6, (1,), generator=g))
    counts = torch.randint(0, 20, (k,), generator=g).tolist()
    if sum(counts) == 0:
        counts[0] = 3
    lengths = huffman.code_lengths(counts)
    assert sum(n * ell for n, ell in zip(counts, lengths, strict=True)) == brute_force_total(counts)
    assert all(ell == 0 for n, ell in zip(counts, lengths, strict=True) if n == 0)
    assert sum(2.0**-ell for n, ell in zip(counts, lengths, strict=True) if n) <= 1  # a prefix code exists
    total = sum(counts)
    p = [n / total for n in counts if n]
    entropy = -sum(q * math.log2(q) for q in p)
    average = sum(n * ell for n, ell in zip(counts, lengths, strict=True)) / total
    if len(p) > 1:
        assert entropy - 1e-12 <= average < entropy + 1


def test_special_cases_and_large_alphabets():
    assert huffman.code_lengths([7]) == [1] and huffman.code_lengths([0, 5, 0]) == [0, 1, 0]
    assert huffman.code_lengths([1, 1, 1, 1]) == [2, 2, 2, 2]
    assert huffman.code_lengths(torch.tensor([5, 0, 1, 1, 2])) == [1, 0, 3, 3, 2]
    fib = [1, 1, 2, 3, 5, 8, 13, 21, 34, 55]  # the most skewed tree: depths 9, 9, 8, ..., 1
    assert huffman.code_lengths(fib) == [9, 9, 8, 7, 6, 5, 4, 3, 2, 1]
    big = huffman.code_lengths([2**i for i in range(60)] + [1] * 5000)  # quick, not quadratic
    assert len(big) == 5060 and min(big) >= 1


def test_encoded_bits_is_the_sum_of_the_lengths_of_the_symbols():
    x = torch.tensor([3, 3, 3, 3, 3, -1, 7, 7, 0])
    counts = {3: 5, -1: 1, 7: 2, 0: 1}
    assert huffman.encoded_bits(x) == brute_force_total(list(counts.values()))
    assert huffman.encoded_bits(torch.tensor([4, 4, 4])) == 3


@pytest.mark.parametrize("bad, words", [([], "at least one"), ([3, -1], r"counts\[1\]"), ([1.5], r"counts\[0\]"),
                                        ([True], r"counts\[0\]")])
def test_code_lengths_bad_counts(bad, words):
    with pytest.raises(ValueError, match=words):
        huffman.code_lengths(bad)


def test_encoded_bits_bad_symbols():
    with pytest.raises(ValueError, match="symbols must not be empty"):
        huffman.encoded_bits(torch.tensor([], dtype=torch.long))
    with pytest.raises(ValueError, match="1-D tensor of integers; got shape \\(2,\\), torch.float32"):
        huffman.encoded_bits(torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="1-D tensor of integers"):
        huffman.encoded_bits(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="1-D tensor of integers"):
        huffman.encoded_bits([1.5, 2.0])
    with pytest.raises(ValueError, match="1-D tensor of integers; got str"):
        huffman.encoded_bits("abc")
    assert huffman.encoded_bits([1, 1, 2]) == 3  # a list of ints is a list of symbols


def tiny_layer():
    """Linear(20, 2) with three non-zero weights, at row-major positions 1, 19 and 38."""
    lin = nn.Linear(20, 2)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[0, 1], lin.weight[0, 19], lin.weight[1, 18] = 1.0, -2.0, 0.5
    return lin


def test_deep_compression_size_defaults_are_the_dense_float32_model():
    model = nn.Sequential(nn.Linear(10, 5), nn.ReLU(), nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    r = measure.deep_compression_size(model)
    assert r["ratio"] == 1.0 and r["bytes"] == r["dense_bytes"] == 4 * (10 * 5 + 5 + 3 * 4 * 9 + 4)


def test_deep_compression_size_by_hand():
    # gaps 2, 18, 19 with 3-bit indices (gaps up to 8): 0 + 2 + 2 fillers, so 7 stored entries
    r = measure.deep_compression_size(tiny_layer(), weight_bits=2, index_bits=3)["layers"][""]
    assert (r["nonzero"], r["fillers"]) == (3, 4)
    assert r["value_bits"] == 7 * 2 and r["index_bits"] == 7 * 3 and r["codebook_bits"] == 4 * 32
    assert r["bias_bits"] == 2 * 32 and r["bytes"] == (14 + 21 + 128 + 64) / 8 and r["dense_bytes"] == 42 * 4
    # Huffman: values {filler: 4, three centroids: 1 each} -> 4·1 + 2 + 3 + 3 = 12 bits;
    # gaps {8: 4 (the fillers), 2: 2, 3: 1} -> 4·1 + 2·2 + 2 = 10 bits
    h = measure.deep_compression_size(tiny_layer(), weight_bits=2, index_bits=3, huffman=True)["layers"][""]
    assert (h["value_bits"], h["index_bits"]) == (12, 10)
    # no indices: all 40 weights stored, 32 bits each (weight_bits None) or 2 bits each
    assert measure.deep_compression_size(tiny_layer())["layers"][""]["value_bits"] == 40 * 32
    assert measure.deep_compression_size(tiny_layer(), weight_bits=2)["layers"][""]["value_bits"] == 40 * 2


def test_deep_compression_size_uses_a_shared_layers_own_centroids():
    shared = quant.share_weights(nn.Sequential(nn.Linear(50, 30)), 2)
    r = measure.deep_compression_size(shared, weight_bits=2, huffman=True)
    labels = shared[0].parametrizations.weight[0].labels.reshape(-1)
    assert r["layers"]["0"]["value_bits"] == huffman.encoded_bits(labels)
    dense_bits = 32 * (1500 + 30)
    assert r["bytes"] * 8 == r["layers"]["0"]["value_bits"] + 4 * 32 + 30 * 32  # indices + codebook + biases
    assert dense_bits / (2 * 1500 + 4 * 32 + 30 * 32) <= r["ratio"]  # Huffman never needs more than 2 bits here


def test_deep_compression_size_bad_arguments():
    with pytest.raises(ValueError, match="weight_bits must be an int from 2 to 16"):
        measure.deep_compression_size(tiny_layer(), weight_bits=40)
    with pytest.raises(ValueError, match="index_bits must be an int from 1 to 32"):
        measure.deep_compression_size(tiny_layer(), index_bits=0)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        measure.deep_compression_size("model")
