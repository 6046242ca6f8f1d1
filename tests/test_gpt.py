"""kdlite.data.text and kdlite.gpt: the shipped corpus, the block sampler, the GPT against a forward pass written out
here (explicit masked softmax in float64), sampling, and fit's per-token accuracy."""

import hashlib
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import kdlite
from kdlite.data import TextLoader, decode, encode, load_text
from kdlite.models import GPT

SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


# --- the corpus --------------------------------------------------------------------------------------------


def test_tinyshakespeare_ships_with_the_package():
    path = Path(kdlite.data.__file__).parent / "tinyshakespeare.txt"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA256
    pyproject = (Path(kdlite.__file__).parent.parent / "pyproject.toml").read_text()
    assert '"kdlite.data" = ["tinyshakespeare.txt"]' in pyproject  # installed with the package, not only in git


def test_load_text_splits_90_10_and_round_trips():
    train, val, vocab = load_text()
    text = (Path(kdlite.data.__file__).parent / "tinyshakespeare.txt").read_text(encoding="utf-8")
    assert len(text) == 1_115_394 and len(train) + len(val) == len(text)
    assert len(train) == int(0.9 * len(text))
    assert vocab == sorted(set(text)) and len(vocab) == 65
    assert train.dtype == val.dtype == torch.int64 and train.dim() == val.dim() == 1
    assert decode(train[:1000], vocab) == text[:1000] and decode(val[-500:], vocab) == text[-500:]
    assert [vocab.index(c) for c in text[:200]] == train[:200].tolist()  # the id is the index in the vocabulary


def test_text_errors():
    with pytest.raises(ValueError, match="tinyshakespeare"):
        load_text("shakespeare")
    with pytest.raises(ValueError, match="'z'.*not in vocab"):
        encode("abz", ["a", "b"])
    assert encode("abba", ["a", "b"]).tolist() == [0, 1, 1, 0]


# --- the block sampler -------------------------------------------------------------------------------------


def test_text_loader_blocks_are_shifted_slices_of_the_text():
    ids = torch.arange(1000) * 7 % 65  # a known sequence: x and y must be slices of it
    loader = TextLoader(ids, block_size=16, batch_size=5, steps=4, seed=3, device="cpu")
    batches = list(loader)
    assert len(loader) == len(batches) == 4
    for x, y in batches:
        assert x.shape == y.shape == (5, 16) and x.dtype == torch.int64
        for row_x, row_y in zip(x.tolist(), y.tolist(), strict=True):
            start = next(s for s in range(1000 - 16) if ids[s : s + 16].tolist() == row_x)
            assert row_y == ids[start + 1 : start + 17].tolist()


def test_text_loader_reaches_both_ends_and_is_reproducible():
    ids = torch.arange(12)
    x = torch.cat([x for x, _ in TextLoader(ids, 3, 64, 20, seed=0, device="cpu")])
    assert x[:, 0].min() == 0 and x[:, 0].max() == 12 - 3 - 1  # every start in 0 .. len - block - 1
    a = [x for x, _ in TextLoader(ids, 3, 4, 5, seed=1, device="cpu")]
    b = [x for x, _ in TextLoader(ids, 3, 4, 5, seed=1, device="cpu")]
    c = [x for x, _ in TextLoader(ids, 3, 4, 5, seed=2, device="cpu")]
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(a, c, strict=True))
    loader = TextLoader(ids, 3, 4, 5, seed=1, device="cpu")
    first, second = [x for x, _ in loader], [x for x, _ in loader]  # epochs continue the stream
    assert not all(torch.equal(p, q) for p, q in zip(first, second, strict=True))


@pytest.mark.parametrize("ids, block, words", [
    (torch.arange(10.0), 4, "integer token ids"),
    (torch.arange(10).view(2, 5), 2, "1-D"),
    (torch.arange(5), 5, "at least block_size"),
    ([1, 2, 3], 1, "torch.Tensor"),
])
def test_text_loader_errors(ids, block, words):
    with pytest.raises((TypeError, ValueError), match=words):
        TextLoader(ids, block, 2, 1, device="cpu")
    with pytest.raises(ValueError, match="steps"):
        TextLoader(torch.arange(10), 2, 2, 0)


# --- the model ---------------------------------------------------------------------------------------------


def reference_forward(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """The GPT's forward pass written out: the attention as an explicit masked softmax, one head at a time."""
    b, t = idx.shape
    x = model.tok_emb.weight[idx] + model.pos_emb.weight[:t]
    for block in model.blocks:
        a = F.layer_norm(x, x.shape[-1:], block.ln1.weight, block.ln1.bias, block.ln1.eps)
        q, k, v = (a @ block.attn.qkv.weight.T + block.attn.qkv.bias).chunk(3, dim=-1)
        h, c = block.attn.n_head, x.shape[-1]
        d = c // h
        heads = []
        for i in range(h):
            qi, ki, vi = (z[..., i * d : (i + 1) * d] for z in (q, k, v))
            scores = qi @ ki.transpose(1, 2) / math.sqrt(d)
            future = torch.ones(t, t, dtype=torch.bool).triu(1)  # position j > i is masked
            heads.append(torch.softmax(scores.masked_fill(future, -math.inf), dim=-1) @ vi)
        x = x + torch.cat(heads, dim=-1) @ block.attn.proj.weight.T + block.attn.proj.bias
        a = F.layer_norm(x, x.shape[-1:], block.ln2.weight, block.ln2.bias, block.ln2.eps)
        up, down = block.mlp[0], block.mlp[2]
        hidden = a @ up.weight.T + up.bias
        hidden = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2)))  # exact GELU
        x = x + hidden @ down.weight.T + down.bias
    x = F.layer_norm(x, x.shape[-1:], model.ln_f.weight, model.ln_f.bias, model.ln_f.eps)
    return x @ model.head.weight.T


def test_gpt_matches_a_written_out_forward_pass():
    torch.manual_seed(0)
    model = GPT(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=12).double().eval()
    for p in model.parameters():  # away from the init's zeros, so every term matters
        p.data += 0.1 * torch.randn_like(p)
    idx = torch.randint(0, 11, (3, 8))
    logits = model(idx)
    assert logits.shape == (3, 8, 11) and logits.dtype == torch.float64
    torch.testing.assert_close(logits, reference_forward(model, idx), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(model(idx[:, :5]), logits[:, :5])  # causal: no position sees the future


def test_gpt_head_is_a_plain_linear_and_errors():
    model = GPT(5, 4, 1, 1, 8)
    assert isinstance(model.head, torch.nn.Linear) and model.head.weight is not model.tok_emb.weight
    assert model(torch.zeros(2, 4, dtype=torch.int32)).shape == (2, 4, 5)
    with pytest.raises(ValueError, match="block_size is 4"):
        model(torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="integer dtype"):
        model(torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"shape \(B, T\)"):
        model(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="n_embd must be divisible by n_head"):
        GPT(5, 4, 1, 3, 8)
    with pytest.raises(ValueError, match="dropout"):
        GPT(5, 4, 1, 1, 8, dropout=1.0)


def test_generate_continues_the_prompt_and_crops_the_context():
    torch.manual_seed(0)
    model = GPT(7, 4, 1, 2, 8)
    model.train()
    prompt = torch.randint(0, 7, (2, 6))  # longer than block_size: cropped to the last 4 tokens
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    out = model.generate(prompt, 9, generator=g())
    assert out.shape == (2, 15) and torch.equal(out[:, :6], prompt)
    assert ((out >= 0) & (out < 7)).all()
    assert torch.equal(out, model.generate(prompt, 9, generator=g()))  # reproducible
    assert model.training  # the mode it had
    assert torch.equal(model.generate(prompt, 0), prompt)


def test_generate_top_k_1_is_greedy():
    torch.manual_seed(1)
    model = GPT(9, 5, 2, 2, 8).eval()
    for p in model.parameters():
        p.data += 0.3 * torch.randn_like(p)
    idx = torch.randint(0, 9, (3, 2))
    greedy = idx
    for _ in range(8):  # written out: the argmax of the last position, the context cropped to 5 tokens
        greedy = torch.cat([greedy, model(greedy[:, -5:])[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(model.generate(idx, 8, top_k=1), greedy)
    assert torch.equal(model.generate(idx, 8, temperature=1e-3), greedy)
    for bad in (dict(temperature=0.0), dict(top_k=0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            model.generate(idx, 1, **bad)


# --- training with fit -------------------------------------------------------------------------------------


def test_fit_trains_a_tiny_gpt_with_per_token_accuracy():
    ids = torch.tensor([0, 1, 2, 3, 4, 5] * 50)  # a text a model can learn: each token predicts the next
    torch.manual_seed(0)
    model = GPT(6, 8, 1, 2, 16)
    before = kdlite.evaluate(model, TextLoader(ids, 8, 16, 4, seed=9, device="cpu"))
    history = kdlite.fit(model, TextLoader(ids, 8, 16, 30, device="cpu"), 3, lr=3e-3, progress=False)
    assert all(0 <= a <= 1 for a in history["train_accuracy"])
    after = kdlite.evaluate(model, TextLoader(ids, 8, 16, 4, seed=9, device="cpu"))
    assert after["n"] == 4 * 16 * 8  # every token counts
    assert after["loss"] < before["loss"] / 4 and after["accuracy"] > 0.95


def test_fit_and_evaluate_count_every_token():
    """With a learning rate of 0 the model does not change, so fit's train_loss and train_accuracy must be the
    per-token cross-entropy and accuracy over its batches, computed here from the model's logits."""
    torch.manual_seed(0)
    ids = torch.randint(0, 10, (500,))
    model = GPT(10, 6, 1, 1, 8)
    for p in model.parameters():
        p.data += 0.5 * torch.randn_like(p)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    history = kdlite.fit(model, TextLoader(ids, 6, 4, 5, seed=7, device="cpu"), 1, optimizer=opt, progress=False)
    with torch.no_grad():
        batches = list(TextLoader(ids, 6, 4, 5, seed=7, device="cpu"))
        logits = torch.cat([model(x) for x, _ in batches]).reshape(-1, 10)
        y = torch.cat([y for _, y in batches]).reshape(-1)
    correct = sum(int(a == b) for a, b in zip(logits.argmax(-1).tolist(), y.tolist(), strict=True))
    assert history["train_accuracy"][0] == pytest.approx(correct / len(y))
    assert history["train_loss"][0] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    ev = kdlite.evaluate(model, batches)
    assert ev["accuracy"] == pytest.approx(correct / len(y)) and ev["n"] == len(y)
    assert ev["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)


def test_generate_top_k_keeps_exactly_k_tokens_even_among_ties():
    model = GPT(10, 4, 1, 1, 8)
    with torch.no_grad():
        model.head.weight.zero_()  # every logit equal: ten tokens tied for first place
    seen = set(model.generate(torch.zeros((64, 1), dtype=torch.long), 1, top_k=3,
                              generator=torch.Generator().manual_seed(0))[:, 1].tolist())
    assert len(seen) <= 3, seen


@pytest.mark.parametrize("bad", [[[3, 12, 1]], [[-1, 2]]])
def test_token_ids_outside_the_vocabulary_are_refused(bad):
    model, idx = GPT(12, 8, 1, 2, 8), torch.tensor(bad)
    for call in (lambda: model(idx), lambda: model.generate(idx, 2)):
        with pytest.raises(ValueError, match=r"idx must hold ids from 0 to vocab_size − 1 = 11; got ids from"):
            call()
    with pytest.raises(ValueError, match=r"ids must hold ids from 0 to len\(vocab\) − 1 = 11; got ids from"):
        decode(idx, list("abcdefghijkl"))


def test_init_is_gpt2s_with_scaled_residual_projections():
    torch.manual_seed(0)
    n_layer = 8
    model = GPT(65, 32, n_layer, 4, 256)
    std = lambda w: w.detach().double().std().item()  # noqa: E731
    assert std(model.blocks[0].attn.qkv.weight) == pytest.approx(0.02, rel=0.02)
    for block in model.blocks:
        for proj in (block.attn.proj, block.mlp[2]):
            assert std(proj.weight) == pytest.approx(0.02 / (2 * n_layer) ** 0.5, rel=0.03)
            assert not proj.bias.any()
