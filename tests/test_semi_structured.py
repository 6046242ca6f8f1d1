"""N:M (2:4) sparsity: kdlite.masks.semi_structured_mask against a loop over groups, and kdlite.prune.prune_2_4."""

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import kdlite
from kdlite.masks import mask_of, semi_structured_mask
from kdlite.models import CNN, MLP
from kdlite.prune import magnitude_prune, prune_2_4


def mask_loop(w, n, m):
    """Keep the n largest |w| of every m consecutive weights of a row, ties to the first, one group at a time."""
    rows = w.reshape(w.shape[0], -1).tolist()
    out = []
    for row in rows:
        kept = []
        for start in range(0, len(row), m):
            group = row[start : start + m]
            order = sorted(range(m), key=lambda i: (-abs(group[i]), i))
            kept += [i in order[:n] for i in range(m)]
        out.append(kept)
    return torch.tensor(out).reshape(w.shape)


@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (3, 4), (2, 8), (1, 1)])
def test_semi_structured_mask_matches_a_loop(n, m):
    w = torch.randn(6, 16, generator=torch.Generator().manual_seed(n * 10 + m))
    mask = semi_structured_mask(w, n, m)
    assert mask.dtype == torch.bool and mask.shape == w.shape
    assert torch.equal(mask, mask_loop(w, n, m))
    assert (mask.reshape(6, -1, m).sum(-1) == n).all()  # exactly n kept per group of m


def test_ties_conv_weights_and_errors():
    w = torch.tensor([[1.0, -1.0, 1.0, 0.5, 0.0, 0.0, 0.0, 0.0]])
    assert semi_structured_mask(w).tolist() == [[True, True, False, False, True, True, False, False]]
    conv = torch.randn(4, 2, 2, 2)  # rows of in · kh · kw = 8 inputs
    assert torch.equal(semi_structured_mask(conv), mask_loop(conv, 2, 4))
    with pytest.raises(ValueError, match="have 6 inputs, which is not divisible by m=4"):
        semi_structured_mask(torch.randn(3, 6))
    with pytest.raises(ValueError, match="n must be an int from 1 to m = 4"):
        semi_structured_mask(torch.randn(3, 8), 5, 4)
    with pytest.raises(ValueError, match="at least 2 dimension"):
        semi_structured_mask(torch.randn(8))
    with pytest.raises(ValueError, match="NaN"):
        semi_structured_mask(torch.full((2, 4), float("nan")))


def test_prune_2_4_prunes_every_linear_in_place_and_returns_the_masks():
    torch.manual_seed(0)
    model = CNN(1, 8, widths=(4, 8))
    model.classifier = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8))
    dense = {name: layer.weight.detach().clone() for name, layer in model.named_modules()
             if isinstance(layer, nn.Linear)}
    masks = prune_2_4(model)
    assert set(masks) == set(dense)  # the Linear layers only, by default
    for name, mask in masks.items():
        layer = dict(model.named_modules())[name]
        assert torch.equal(mask, mask_loop(dense[name], 2, 4))
        assert torch.equal(layer.weight, dense[name] * mask)  # W = W_orig ⊙ M
        assert mask_of(layer) is not None and mask is not mask_of(layer).mask  # a copy
    assert kdlite.prune.sparsity(model)["classifier.0"] == 0.5


def test_masks_survive_training_and_pruned_weights_are_never_revived():
    torch.manual_seed(0)
    model = MLP(16, [32], 8)
    first = magnitude_prune(model, 0.8)  # most groups already have fewer than 2 weights left
    masks = prune_2_4(model)
    for name, mask in masks.items():
        assert not (mask & ~first[name]).any()  # nothing pruned comes back
        assert (mask.reshape(mask.shape[0], -1, 4).sum(-1) <= 2).all()
    g = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(64, 16, generator=g), torch.randint(0, 8, (64,), generator=g))
    kdlite.fit(model, data, 2, progress=False)
    for name, mask in masks.items():
        w = dict(model.named_modules())[name].weight
        assert (w[~mask] == 0).all() and (w[mask] != 0).all()


def test_listed_modules_and_layer_names_in_errors():
    torch.manual_seed(0)
    model = CNN(1, 8, widths=(4, 8))
    masks = prune_2_4(model, modules=["features.1.0"])  # a conv of 4 · 3 · 3 = 36 inputs a row
    assert list(masks) == ["features.1.0"]
    with pytest.raises(ValueError, match="layer 'features.0.0': the rows of weight .* have 9 inputs"):
        prune_2_4(model, modules=["features.0.0"])
    with pytest.raises(ValueError, match="has no Linear layers"):
        prune_2_4(nn.Sequential(nn.Conv2d(1, 4, 3)))


def test_a_gpt_prunes_to_half_its_linear_weights():
    torch.manual_seed(0)
    model = kdlite.models.GPT(16, 8, 2, 2, 16)
    masks = prune_2_4(model)
    assert len(masks) == 2 * 4 + 1  # per block qkv, proj and the MLP's two layers; the head
    assert all(mask.float().mean() == 0.5 for mask in masks.values())
    assert model(torch.zeros(1, 8, dtype=torch.long)).shape == (1, 8, 16)
