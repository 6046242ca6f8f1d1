"""Text for language models: a character-level corpus shipped with kdlite, and random blocks of it on the device.

Tiny Shakespeare (1 115 394 characters of Shakespeare's plays, from karpathy/char-rnn's
``data/tinyshakespeare/input.txt``; the text is in the public domain) ships inside the package, so it needs no
network. A character is a token: the vocabulary is the sorted set of characters of the text (65 of them), and
a token's id is its index there.

A language model learns to predict every next character of a block: the input is ``x = ids[s : s + T]`` and the
target ``y = ids[s + 1 : s + T + 1]``, for random block starts ``s``. :class:`TextLoader` draws them on the device,
a whole batch with one gather.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from .._checks import id_range, integer, tensor
from ..device import get_device
from ._checks import string, token_ids

TEXTS = {"tinyshakespeare": "tinyshakespeare.txt"}
"""The corpora shipped with kdlite: name -> file in this folder."""


def encode(text: str, vocab: Sequence[str]) -> torch.Tensor:
    """The ids of ``text``'s characters, ``vocab.index(c)`` for each character ``c``, as a 1-D int64 tensor."""
    text, index = string(text, "text"), {c: i for i, c in enumerate(vocab)}
    try:
        return torch.tensor([index[c] for c in text], dtype=torch.int64)
    except KeyError as e:
        raise ValueError(f"text has the character {e.args[0]!r}, which is not in vocab; expected only characters of "
                         f"the vocabulary ({len(index)} of them)") from None


def decode(ids: torch.Tensor, vocab: Sequence[str]) -> str:
    """The text whose character ids are ``ids`` (a 1-D tensor or list of ints): ``"".join(vocab[i] for i in ids)``."""
    ids = token_ids(ids, "ids").reshape(-1)
    id_range(ids, len(vocab), "ids", "len(vocab)")
    return "".join(vocab[i] for i in ids.tolist())


def load_text(name: str = "tinyshakespeare") -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``(train_ids, val_ids, vocab)`` of a corpus shipped with kdlite: its characters as 1-D int64 ids, the
    first 90% of the text for training and the last 10% for validation (as nanoGPT splits it), and the sorted
    vocabulary (a list of characters; 65 for Tiny Shakespeare). ``decode(ids, vocab)`` turns ids back into text.
    """
    if string(name, "name") not in TEXTS:
        raise ValueError(f"name must be one of {sorted(TEXTS)} (the texts shipped with kdlite); got {name!r}")
    text = (Path(__file__).parent / TEXTS[name]).read_text(encoding="utf-8")
    vocab = sorted(set(text))
    ids = encode(text, vocab)
    n = int(0.9 * len(ids))
    return ids[:n], ids[n:], vocab


class TextLoader:
    """``steps`` random batches ``(x, y)`` of blocks of ``ids``, each of shape ``(batch_size, block_size)``, with
    ``y`` the block shifted by one token: ``x[b, i] = ids[s_b + i]``, ``y[b, i] = ids[s_b + i + 1]``.

    The block starts ``s_b`` are drawn uniformly from ``0 .. len(ids) − block_size − 1`` by the loader's own
    ``torch.Generator`` seeded with ``seed``: the batches are reproducible, and each pass (each ``iter()``, an
    epoch of ``kdlite.fit``) continues the stream, so epochs see different blocks. ``ids`` is moved to ``device``
    (default ``kdlite.get_device()``) once; each batch is one gather there, of the index matrix
    ``s[:, None] + arange(block_size)``.

    ``kdlite.fit(model, TextLoader(...), epochs)`` trains a language model: ``fit``'s default step takes the
    cross-entropy over every token, and its accuracy is the fraction of tokens predicted right.
    """

    def __init__(self, ids: torch.Tensor, block_size: int, batch_size: int, steps: int, *, seed: int = 0,
                 device: torch.device | str | None = None):
        self.block_size, self.batch_size = integer(block_size, "block_size", 1), integer(batch_size, "batch_size", 1)
        self.steps, seed = integer(steps, "steps", 1), integer(seed, "seed", 0)
        _check_ids(tensor(ids, "ids", floating=False), self.block_size)
        self.device = torch.device(device) if device is not None else get_device()
        self.ids = ids.to(self.device, torch.int64)
        self.generator = torch.Generator().manual_seed(seed)
        self.offsets = torch.arange(self.block_size, device=self.device)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for _ in range(self.steps):
            starts = torch.randint(len(self.ids) - self.block_size, (self.batch_size,), generator=self.generator)
            index = starts.to(self.device)[:, None] + self.offsets  # (batch_size, block_size)
            yield self.ids[index], self.ids[index + 1]

    def __repr__(self) -> str:
        return (f"TextLoader({len(self.ids)} tokens, block_size={self.block_size}, batch_size={self.batch_size}, "
                f"steps={self.steps}, device={self.device})")


def _check_ids(ids: torch.Tensor, block_size: int) -> None:
    if (ids.dim() != 1 or ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool
            or len(ids) <= block_size):
        raise ValueError(f"ids must be a 1-D tensor of integer token ids, at least block_size + 1 = {block_size + 1} "
                         f"long (a block and its target); got shape {tuple(ids.shape)}, dtype {ids.dtype}")
