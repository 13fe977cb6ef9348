"""sparsecore.llm.hooks against plain forward passes of a tiny random Llama (and a toy tuple-returning stack)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _tiny_lm import tiny_llama, tiny_tokenizer
from sparsecore.exceptions import InvalidArgumentError, ShapeMismatchError
from sparsecore.llm.hooks import capture, edit, resolve_module, select_tokens, token_mask
from torch import Tensor, nn


@pytest.fixture(scope="module")
def model() -> Any:
    return tiny_llama(n_layers=3)


@pytest.fixture(scope="module")
def ids() -> Tensor:
    return torch.randint(3, 100, (2, 7), generator=torch.Generator().manual_seed(1))


def _hooks(m: nn.Module) -> list[tuple[str, list[int], list[int]]]:
    """The ids of every forward (pre-)hook (transformers installs some of its own, e.g. for hidden states)."""
    return [(n, list(mod._forward_hooks), list(mod._forward_pre_hooks)) for n, mod in m.named_modules()]


@torch.no_grad()
def test_resolve_module_finds_a_layer_and_names_close_ones(model: Any) -> None:
    assert resolve_module(model, "model.layers.1") is model.model.layers[1]
    assert resolve_module(model, "") is model
    with pytest.raises(InvalidArgumentError, match=r"hook: .*'model\.layer\.1'.*'model\.layers\.1'"):
        resolve_module(model, "model.layer.1")
    with pytest.raises(InvalidArgumentError, match="hook: must be a module name"):
        resolve_module(model, 3)  # type: ignore[arg-type]


@torch.no_grad()
def test_capture_matches_hidden_states_and_leaves_the_model_unchanged(model: Any, ids: Tensor) -> None:
    clean = model(ids, output_hidden_states=True)
    before = _hooks(model)
    with capture(model, "model.layers.0", stop_after_last=False) as cap:
        out = cap(ids)
    assert torch.equal(cap["model.layers.0"], clean.hidden_states[1])
    assert torch.equal(out.logits, clean.logits)
    assert _hooks(model) == before
    assert torch.equal(model(ids).logits, clean.logits)


@torch.no_grad()
def test_hooks_are_removed_after_an_exception(model: Any, ids: Tensor) -> None:
    clean = model(ids).logits
    before = _hooks(model)

    def fail_inside_capture() -> None:
        with capture(model, ["model.layers.0", "model.layers.2"]) as cap:
            cap(ids)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_inside_capture()
    assert _hooks(model) == before

    def fail_inside_edit() -> None:
        with edit(model, "model.layers.1", lambda h: h * 0):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_inside_edit()
    assert _hooks(model) == before
    with (
        pytest.raises(ShapeMismatchError, match="fn: must keep the shape"),
        edit(model, "model.layers.1", lambda h: h[:, :1]),
    ):
        model(ids)
    assert _hooks(model) == before
    assert torch.equal(model(ids).logits, clean)


class _TupleLayer(nn.Module):
    """A decoder layer in the older transformers style: returns ``(hidden, attention_weights)``."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.lin = nn.Linear(d, d)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        out = h + torch.tanh(self.lin(h))
        return out, out.sum(-1)


class _TupleStack(nn.Module):
    def __init__(self, d: int = 8, n: int = 3) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_TupleLayer(d) for _ in range(n))

    def forward(self, h: Tensor) -> Tensor:
        for layer in self.layers:
            h = layer(h)[0]
        return h


@torch.no_grad()
def test_capture_and_edit_tuple_returning_layers() -> None:
    torch.manual_seed(0)
    stack = _TupleStack()
    before = _hooks(stack)
    x = torch.randn(2, 5, 8)
    h1 = stack.layers[1](stack.layers[0](x)[0])[0]
    with capture(stack, "layers.1") as cap:
        assert cap(x) is None  # stopped after layers.1
    assert torch.equal(cap["layers.1"], h1)
    # edit keeps the tuple: layer 2 then sees the edited tensor
    with edit(stack, "layers.0", lambda h: h + 1.0):
        edited = stack(x)
    assert torch.allclose(edited, stack.layers[2](stack.layers[1](stack.layers[0](x)[0] + 1.0)[0])[0])
    assert _hooks(stack) == before


@torch.no_grad()
def test_capture_of_a_model_output_takes_its_first_field(model: Any, ids: Tensor) -> None:
    with capture(model, "model") as cap:
        cap(ids)
    assert torch.equal(cap["model"], model.model(ids).last_hidden_state)


@torch.no_grad()
def test_stop_after_last_skips_later_layers(model: Any, ids: Tensor) -> None:
    before = _hooks(model)
    calls = {"model.layers.1": 0, "model.layers.2": 0, "lm_head": 0}
    handles = [
        resolve_module(model, n).register_forward_hook(lambda *_a, n=n: calls.__setitem__(n, calls[n] + 1))
        for n in calls
    ]
    try:
        with capture(model, ["model.layers.1", "model.layers.0"]) as cap:
            assert cap(ids) is None
        assert set(cap.outputs) == {"model.layers.0", "model.layers.1"}
        assert calls == {"model.layers.1": 1, "model.layers.2": 0, "lm_head": 0}
        # calling the model directly: the with block swallows the stop, skipping the rest of the block
        reached = False
        with capture(model, "model.layers.0"):
            model(ids)
            reached = True
        assert not reached
        assert calls == {"model.layers.1": 1, "model.layers.2": 0, "lm_head": 0}
        with capture(model, "model.layers.0", stop_after_last=False) as cap:
            assert cap(ids) is not None
        assert calls == {"model.layers.1": 2, "model.layers.2": 1, "lm_head": 1}
    finally:
        for h in handles:
            h.remove()
    assert _hooks(model) == before


@torch.no_grad()
def test_edit_with_identity_is_a_no_op_and_other_edits_are_not(model: Any, ids: Tensor) -> None:
    clean = model(ids).logits
    with edit(model, "model.layers.1", lambda h: h):
        assert torch.equal(model(ids).logits, clean)
    with edit(model, "model.layers.1", lambda h: h + 3.0):
        assert not torch.allclose(model(ids).logits, clean)
    assert torch.equal(model(ids).logits, clean)


@torch.no_grad()
def test_edit_applies_at_every_generate_step(model: Any, ids: Tensor) -> None:
    prompt = ids[:1]
    plain = model.generate(prompt, max_new_tokens=4, do_sample=False, pad_token_id=0)
    before = _hooks(model)
    direction = torch.randn(32, generator=torch.Generator().manual_seed(3)) * 4.0
    seen: list[int] = []

    def steer(h: Tensor) -> Tensor:
        seen.append(h.shape[1])
        return h + direction

    n_new = 4
    with edit(model, "model.layers.1", steer):
        out = model.generate(prompt, max_new_tokens=n_new, do_sample=False, pad_token_id=0)
    assert seen == [prompt.shape[1]] + [1] * (n_new - 1)  # prefill, then each decode step with the KV cache
    # the same greedy decoding without a cache, steering the whole sequence each step
    seq = prompt
    with edit(model, "model.layers.1", lambda h: h + direction):
        for _ in range(n_new):
            nxt = model(seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
    assert torch.equal(out[:, : seq.shape[1]], seq)
    assert not torch.equal(plain, out)  # the steering changed the continuation
    assert _hooks(model) == before


def test_token_mask_drops_padding_and_first_tokens_for_both_padding_sides() -> None:
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
    left = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0]])
    assert token_mask(right).tolist() == (right == 1).tolist()
    assert token_mask(right, drop_first=True).tolist() == [[0, 1, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
    assert token_mask(left, drop_first=True).tolist() == [[0, 0, 1, 1], [0, 0, 0, 1], [0, 0, 0, 0]]
    hidden = torch.arange(3 * 4 * 2, dtype=torch.float32).reshape(3, 4, 2)
    got = select_tokens(hidden, left, drop_first=True)
    assert torch.equal(got, torch.stack([hidden[0, 2], hidden[0, 3], hidden[1, 3]]))
    with pytest.raises(ShapeMismatchError):
        select_tokens(hidden, left[:, :3])


@torch.no_grad()
def test_padded_capture_equals_unpadded_runs(model: Any) -> None:
    tok = tiny_tokenizer()
    texts = ["the cat run fast", "a dog"]
    enc = tok(texts, padding=True, return_tensors="pt")
    with capture(model, "model.layers.1") as cap:
        cap(**enc)
        rows = cap.tokens("model.layers.1", enc["attention_mask"], drop_first=True)
    want = []
    for t in texts:
        one = tok([t], return_tensors="pt")
        with capture(model, "model.layers.1") as c1:
            c1(**one)
        want.append(c1["model.layers.1"][0, 1:])
    assert rows.shape == (4 + 2, 32)  # BOS dropped, padding dropped
    assert torch.allclose(rows, torch.cat(want), atol=1e-5)
