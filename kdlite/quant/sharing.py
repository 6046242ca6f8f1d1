"""Weight sharing (Deep Compression): a layer's weights replaced by 2^b shared values found by k-means."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from .. import _checks as checks
from ..masks import PRUNABLE, copy_model


@torch.no_grad()
def kmeans_quantize(weight: torch.Tensor, bits: int, iters: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """Deep Compression's weight sharing (Han et al. 2016): 1-D k-means with k = 2^b clusters.

    Centroids start evenly spaced between min(W) and max(W) (Han et al.'s linear initialisation); then Lloyd's
    iterations: label_i = argmin_k |w_i − c_k|, c_k = mean of its weights (an empty cluster keeps its
    centroid), until no label changes or ``iters`` rounds. Deterministic. Returns ``(centroids (2^b,),
    labels)`` with ``labels`` int64 of ``weight``'s shape: W ≈ centroids[labels].
    """
    weight, bits = checks.tensor(weight, "weight", nonempty=True), checks.bits(bits)
    iters = checks.integer(iters, "iters", 1)
    checks.finite(weight, "weight")
    w = weight.detach().reshape(-1).double()
    centroids = torch.linspace(w.min().item(), w.max().item(), 2**bits, dtype=torch.float64, device=w.device)
    labels = None
    for _ in range(iters):
        centroids = centroids.sort().values
        new = torch.bucketize(w, (centroids[1:] + centroids[:-1]) / 2)  # nearest centroid in 1-D
        if labels is not None and torch.equal(new, labels):
            break
        labels = new
        counts = torch.bincount(labels, minlength=centroids.numel())
        sums = torch.bincount(labels, weights=w, minlength=centroids.numel())
        centroids = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)
    return centroids.to(weight.dtype), labels.reshape(weight.shape)


class SharedWeight(nn.Module):
    """A parametrization W = centroids[labels]: training it fine-tunes the centroids, each by the sum of the
    gradients of the weights that share it, ∂L/∂c_k = Σ_{i: label_i = k} ∂L/∂W_i (one ``index_add_`` in
    ``Lookup.backward``, eight times faster than autograd's own backward of indexing on a CPU).
    A label −1 marks a pruned weight: it stays 0 and takes no centroid (Deep Compression shares the survivors)."""

    class Lookup(torch.autograd.Function):
        """W_i = c[label_i], and 0 where label_i = −1."""

        @staticmethod
        def forward(ctx, centroids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            ctx.save_for_backward(labels)
            ctx.k = centroids.numel()
            return torch.cat([centroids.new_zeros(1), centroids])[labels + 1]  # slot 0 holds the pruned weights' 0

        @staticmethod
        def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
            (labels,) = ctx.saved_tensors
            sums = grad.new_zeros(ctx.k + 1).index_add_(0, labels.reshape(-1) + 1, grad.reshape(-1))
            return sums[1:], None  # ∂L/∂c_k = Σ_{i: label_i = k} ∂L/∂W_i; slot 0 (pruned) is dropped

    def __init__(self, centroids: torch.Tensor, labels: torch.Tensor):
        super().__init__()
        self.centroids = nn.Parameter(centroids.clone())
        self.register_buffer("labels", labels.clone())

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        return SharedWeight.Lookup.apply(self.centroids, self.labels)


def share_weights(model: nn.Module, bits: int, iters: int = 50) -> nn.Module:
    """A copy of ``model`` whose Linear and Conv weights (``kdlite.masks.PRUNABLE``) are k-means shared
    (``kmeans_quantize`` per layer, over the layer's non-zero weights: pruned weights stay 0) through a
    :class:`SharedWeight` parametrization; ``kdlite.fit(model, ...)`` then fine-tunes the centroids.
    ``torch.nn.utils.parametrize.remove_parametrizations(layer, "weight")`` bakes them in."""
    bits = checks.bits(bits)
    model = copy_model(checks.layers_of(model, PRUNABLE, "share_weights", "Linear and Conv"))
    for name, m in model.named_modules():
        if isinstance(m, PRUNABLE):
            w = m.weight.detach()
            checks.finite(w, f"the weight of layer {name!r}")
            kept, labels = w != 0, torch.full(w.shape, -1, dtype=torch.long, device=w.device)
            if not bool(kept.any()):  # a layer pruned away has nothing to share
                continue
            centroids, labels[kept] = kmeans_quantize(w[kept], bits, iters)
            parametrize.register_parametrization(m, "weight", SharedWeight(centroids, labels), unsafe=True)
            m.parametrizations.weight.original.requires_grad_(False)
    return model
