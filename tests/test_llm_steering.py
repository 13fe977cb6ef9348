"""sparsecore.llm.SafetySteering (Jailbreak Antidote) on a tiny random Llama and on synthetic states."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _tiny_lm import texts, tiny_llama, tiny_tokenizer
from hypothesis import given, settings
from hypothesis import strategies as st
from sparsecore.exceptions import IndexFormatError, InvalidArgumentError, ShapeMismatchError
from sparsecore.llm import (
    SafetySteering,
    decoder_layers,
    edit,
    linear_layers,
    n_kept,
    paired_direction,
    safety_pairs,
)
from torch import Tensor, nn

PLANT_LAYER = 2


@pytest.fixture(scope="module")
def model() -> Any:
    return tiny_llama(n_layers=4)


@pytest.fixture(scope="module")
def tok() -> Any:
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def planted() -> Tensor:
    g = torch.Generator().manual_seed(7)
    v: Tensor = torch.randn(32, generator=g)
    return v / float(v.norm())


@pytest.fixture(scope="module")
def steer(model: Any, tok: Any, planted: Tensor) -> SafetySteering:
    """Fitted while a large shift along ``planted`` is added to layer 2's output for the harmful prompts only.

    The harmful and harmless prompts are independent random sentences, so without the shift no layer separates
    the pairs reliably; with it, layer 2 and (through the residual stream) layer 3 separate all of them.
    """
    harmful, harmless = texts(12, seed=3, lo=3, hi=9), texts(12, seed=4, lo=3, hi=9)
    marked = {tuple(tok(t)["input_ids"]) for t in harmful}
    seen: dict[str, Tensor] = {}
    handle = model.register_forward_pre_hook(
        lambda _m, _a, kw: seen.__setitem__("ids", kw["input_ids"]), with_kwargs=True
    )

    def plant(h: Tensor) -> Tensor:
        rows = [tuple(i for i in row.tolist() if i != tok.pad_token_id) in marked for row in seen["ids"]]
        flag = torch.tensor(rows, dtype=h.dtype)
        out: Tensor = h + 40.0 * flag[:, None, None] * planted
        return out

    try:
        with edit(model, f"model.layers.{PLANT_LAYER}", plant):
            return SafetySteering.fit(model, tok, harmful, harmless, top_layers=0.5, batch_size=5)
    finally:
        handle.remove()


@pytest.fixture(scope="module")
def ids(tok: Any) -> Tensor:
    out: Tensor = tok(["the cat run to the old house"], return_tensors="pt")["input_ids"]
    return out


def _hooks(m: nn.Module) -> list[tuple[str, list[int], list[int]]]:
    return [(n, list(mod._forward_hooks), list(mod._forward_pre_hooks)) for n, mod in m.named_modules()]


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 12), st.integers(2, 10), st.integers(0, 2**31 - 1), st.floats(-3.0, 3.0))
def test_paired_direction_is_the_signed_top_singular_vector(n: int, d: int, seed: int, shift: float) -> None:
    rng = np.random.default_rng(seed)
    harmless = rng.normal(size=(n, d))
    harmful = harmless + rng.normal(size=(n, d)) + shift * rng.normal(size=d)
    got = paired_direction(harmful, harmless)
    diffs = harmful - harmless
    vt = np.linalg.svd(diffs)[2]
    assert abs(abs(got.direction @ vt[0]) - 1.0) < 1e-9
    proj = diffs @ got.direction
    assert proj.mean() >= 0
    assert got.accuracy == np.mean(proj > 0)
    assert np.isclose(np.linalg.norm(got.direction), 1.0)


def test_paired_direction_finds_a_planted_shift_with_its_sign() -> None:
    rng = np.random.default_rng(0)
    v = rng.normal(size=16)
    v /= np.linalg.norm(v)
    harmless = rng.normal(size=(30, 16))
    harmful = harmless + 0.1 * rng.normal(size=(30, 16)) - 5.0 * v  # harmful sits at -v: the sign must flip
    got = paired_direction(harmful, harmless)
    assert got.direction @ -v > 0.99
    assert got.accuracy == 1.0
    with pytest.raises(ShapeMismatchError, match="harmless"):
        paired_direction(harmful, harmless[:3])


def test_fit_finds_the_planted_layers_and_direction(steer: SafetySteering, planted: Tensor) -> None:
    assert steer.layers == [f"model.layers.{i}" for i in range(4)]
    # the shift enters at layer 2 and rides the residual stream into layer 3: both separate every pair
    assert sorted(steer.kept) == ["model.layers.2", "model.layers.3"]
    assert steer.accuracy[2] == 1.0
    assert steer.accuracy[3] == 1.0
    assert max(steer.accuracy[0], steer.accuracy[1]) < 1.0  # chosen by accuracy, not by the tie-breaker
    cos = float(steer.directions[PLANT_LAYER] @ planted)
    assert cos > 0.99  # right direction, right sign (harmful projects higher)
    assert torch.allclose(steer.directions.norm(dim=1), torch.ones(4))


@pytest.mark.parametrize("side", ["right", "left"])
def test_fit_is_padding_aware(model: Any, side: str) -> None:
    tok = tiny_tokenizer()
    tok.padding_side = side
    harmful, harmless = texts(6, seed=11), texts(6, seed=12)
    one = SafetySteering.fit(model, tok, harmful, harmless, batch_size=1)
    batched = SafetySteering.fit(model, tok, harmful, harmless, batch_size=6)
    assert torch.allclose(one.directions, batched.directions, atol=1e-4)
    assert np.array_equal(one.accuracy, batched.accuracy)
    assert one.kept == batched.kept
    assert tok.padding_side == side  # restored


class _Block(nn.Module):
    def __init__(self, experts: int = 0) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.experts = nn.ModuleList(nn.Linear(4, 4) for _ in range(experts))


class _Stacked(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.trunk = nn.ModuleList(_Block(experts=8) for _ in range(3))


def test_decoder_layers_finds_the_stack(model: Any) -> None:
    assert decoder_layers(model) == [f"model.layers.{i}" for i in range(4)]
    assert decoder_layers(_Stacked()) == ["trunk.0", "trunk.1", "trunk.2"]  # the outer list, not the experts
    assert decoder_layers(nn.ModuleList(_Block() for _ in range(2))) == ["0", "1"]
    assert linear_layers(model, ["model.layers.0"])[:2] == [
        "model.layers.0.self_attn.q_proj",
        "model.layers.0.self_attn.k_proj",
    ]
    with pytest.raises(InvalidArgumentError, match="model: Sequential has no decoder layers"):
        decoder_layers(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))


@settings(max_examples=40, deadline=None)
@given(st.floats(1e-6, 1.0), st.sampled_from(["abs_max", "random"]), st.integers(0, 1000))
def test_sparse_direction_keeps_exactly_the_fraction(sparsity: float, selector: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    steer = SafetySteering(["a", "b"], rng.normal(size=(2, 50)), [1.0, 0.5], [1.0, 1.0], top_layers=0.5)
    vec = steer.sparse_direction("a", sparsity, selector=selector, seed=seed)
    k = n_kept(sparsity, 50)
    assert k == max(1, min(50, int(np.floor(sparsity * 50 + 0.5))))
    assert int(vec.count_nonzero()) == k
    full = steer.directions[0]
    kept = vec != 0
    assert torch.equal(vec[kept], full[kept])  # the direction's own values
    if selector == "abs_max" and bool((~kept).any()):
        assert full[kept].abs().min() >= full[~kept].abs().max()
    assert steer.kept == ["a"]


def test_random_selector_is_reproducible_and_differs_from_abs_max(steer: SafetySteering) -> None:
    layer = steer.kept[0]
    a = steer.sparse_direction(layer, 0.25, selector="random", seed=1)
    b = steer.sparse_direction(layer, 0.25, selector="random", seed=1)
    c = steer.sparse_direction(layer, 0.25, selector="random", seed=2)
    top = steer.sparse_direction(layer, 0.25)
    assert torch.equal(a, b)
    assert not torch.equal(a != 0, c != 0)
    assert int((a != 0).sum()) == int((top != 0).sum()) == 8
    assert not torch.equal(a != 0, top != 0)


@torch.no_grad()
def test_apply_adds_the_sparse_vector_to_the_kept_layers_and_restores(
    model: Any, steer: SafetySteering, ids: Tensor
) -> None:
    clean = model(ids).logits
    before = _hooks(model)
    with steer.apply(model, 4.0, 0.1) as s:
        steered = model(ids).logits
        for name in steer.kept:
            assert int(s.vector(name).count_nonzero()) == n_kept(0.1, 32) == 3
    # the same thing by hand
    with (
        edit(model, steer.kept[0], lambda h: h + 4.0 * steer.sparse_direction(steer.kept[0], 0.1)),
        edit(model, steer.kept[1], lambda h: h + 4.0 * steer.sparse_direction(steer.kept[1], 0.1)),
    ):
        manual = model(ids).logits
    assert torch.equal(steered, manual)
    assert not torch.allclose(steered, clean)
    assert torch.equal(model(ids).logits, clean)
    assert _hooks(model) == before
    with steer.apply(model, 0.0):
        assert torch.equal(model(ids).logits, clean)  # alpha = 0 adds exact zeros


@torch.no_grad()
def test_alpha_and_sparsity_change_at_run_time(model: Any, steer: SafetySteering, ids: Tensor) -> None:
    with steer.apply(model, 1.0, 0.05) as s:
        first = model(ids).logits
        s.set(alpha=6.0, sparsity=0.5)
        second = model(ids).logits
        assert (s.alpha, s.sparsity) == (6.0, 0.5)
        assert int(s.vector(steer.kept[0]).count_nonzero()) == 16
        s.set(selector="random", seed=3)
        third = model(ids).logits
        with pytest.raises(InvalidArgumentError, match=r"sparsity: must be a finite number in \(0, 1\], got 1.5"):
            s.set(sparsity=1.5, alpha=2.0)
        assert (s.alpha, s.sparsity) == (6.0, 0.5)  # a refused change changes nothing
    with steer.apply(model, 6.0, 0.5) as again:
        assert torch.equal(model(ids).logits, second)
        assert not torch.equal(first, second)
        again.set(selector="random", seed=3)
        assert torch.equal(model(ids).logits, third)


@torch.no_grad()
def test_hooks_are_removed_after_an_exception(model: Any, steer: SafetySteering, ids: Tensor) -> None:
    clean = model(ids).logits
    before = _hooks(model)

    def fail_inside() -> None:
        with steer.apply(model, 5.0):
            model(ids)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_inside()
    assert _hooks(model) == before
    assert torch.equal(model(ids).logits, clean)


@torch.no_grad()
def test_generate_with_steering(model: Any, steer: SafetySteering, ids: Tensor) -> None:
    plain = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
    calls: list[int] = []

    def record(h: Tensor) -> Tensor:
        calls.append(h.shape[1])
        return h

    with steer.apply(model, 30.0, 0.5), edit(model, steer.kept[0], record):
        out = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert out.shape == plain.shape
    assert calls == [ids.shape[1], 1, 1, 1]  # prefill, then every decode step
    assert torch.equal(model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0), plain)


def test_shift_at_the_first_kept_layer_is_alpha_times_the_kept_energy(
    model: Any, tok: Any, steer: SafetySteering
) -> None:
    """Nothing upstream of the first kept layer is steered, so its state moves by exactly alpha * d_sparse."""
    first = min(steer.kept, key=lambda n: int(n.rsplit(".", 1)[1]))
    prompts = texts(5, seed=9)
    for sparsity, selector in ((1.0, "abs_max"), (0.1, "abs_max"), (0.1, "random")):
        d = steer.sparse_direction(first, sparsity, selector=selector, seed=2)
        got = steer.shift(model, tok, prompts, 3.0, sparsity, selector=selector, seed=2, layer=first, batch_size=2)
        assert got == pytest.approx(3.0 * float(d.double().pow(2).sum()), rel=1e-4)
    assert steer.shift(model, tok, prompts, 0.0, layer=first) == 0.0
    # the default layer is the last one, downstream of every kept layer: a positive alpha moves it
    assert steer.shift(model, tok, prompts, 3.0, 1.0) != 0.0
    with pytest.raises(InvalidArgumentError, match="layer: must be one of the fitted layers"):
        steer.shift(model, tok, prompts, 1.0, layer="model.layers.9")


def test_save_and_load_round_trip(steer: SafetySteering, tmp_path: Path) -> None:
    path = tmp_path / "steer.spc"
    steer.save(path)
    back = SafetySteering.load(path)
    assert back.layers == steer.layers
    assert back.kept == steer.kept
    assert back.top_layers == steer.top_layers
    assert torch.equal(back.directions, steer.directions)
    assert np.array_equal(back.accuracy, steer.accuracy)
    (tmp_path / "junk").write_bytes(b"not a container" * 10)
    with pytest.raises(IndexFormatError):
        SafetySteering.load(tmp_path / "junk")


def test_bad_arguments_get_typed_errors(model: Any, tok: Any, steer: SafetySteering, ids: Tensor) -> None:
    h, s = texts(3, seed=1), texts(3, seed=2)
    with pytest.raises(InvalidArgumentError, match=r"top_layers: must be a finite number in \(0, 1\], got 0"):
        SafetySteering.fit(model, tok, h, s, top_layers=0)
    with pytest.raises(ShapeMismatchError, match="harmless: must pair up"):
        SafetySteering.fit(model, tok, h, s[:2])
    with pytest.raises(InvalidArgumentError, match=r"hook: .*'model\.layer\.1'"):
        SafetySteering.fit(model, tok, h, s, layers=["model.layer.1"])
    with pytest.raises(InvalidArgumentError, match="has no decoder layers"):
        SafetySteering.fit(nn.Sequential(nn.Linear(4, 4)), tok, h, s)
    for bad in (0.0, 1.5, -0.1, float("nan")):
        with pytest.raises(InvalidArgumentError, match="sparsity: must be a finite number in"):
            steer.apply(model, 1.0, bad).__enter__()
    with pytest.raises(InvalidArgumentError, match="selector: must be one of"):
        steer.apply(model, 1.0, selector="top").__enter__()
    with pytest.raises(InvalidArgumentError, match="layer: must be one of the fitted layers"):
        steer.sparse_direction("model.layers.9")
    # directions of another width: refused at the first forward, hooks gone afterwards
    narrow = SafetySteering(steer.layers, torch.randn(4, 16), steer.accuracy, steer.separation)
    with pytest.raises(ShapeMismatchError, match="16"), torch.no_grad(), narrow.apply(model, 1.0):
        model(ids)
    assert all(not mod._forward_hooks for mod in model.model.layers)


def test_shipped_pairs() -> None:
    harmful, harmless = safety_pairs()
    assert len(harmful) == len(harmless) == 40
    assert len(set(harmful)) == 40
    assert len(set(harmless)) == 40
    assert all(a != b and a and b for a, b in zip(harmful, harmless, strict=True))


def test_layers_rank_by_accuracy_then_separation() -> None:
    dirs = np.eye(4)
    steer = SafetySteering(["a", "b", "c", "d"], dirs, [0.5, 1.0, 1.0, 0.9], [9.0, 1.0, 2.0, 9.0], top_layers=0.5)
    assert steer.kept == ["c", "b"]
    assert SafetySteering(["a", "b", "c", "d"], dirs, [0.5, 1.0, 1.0, 0.9], [9.0, 1.0, 2.0, 9.0]).kept == ["c", "b"]
    assert SafetySteering(["a", "b", "c", "d"], dirs, [0.5, 1.0, 1.0, 0.9], [0.0] * 4, top_layers=0.75).kept == [
        "b",
        "c",
        "d",
    ]
    assert SafetySteering(["a"], dirs[:1], [0.0], [0.0], top_layers=0.01).kept == ["a"]  # at least one layer
    with pytest.raises(ShapeMismatchError, match="one per layer"):
        SafetySteering(["a", "b"], dirs, [1.0, 1.0], [1.0, 1.0])
    with pytest.raises(InvalidArgumentError, match="layers: must be a non-empty sequence of distinct"):
        SafetySteering(["a", "a"], dirs[:2], [1.0, 1.0], [1.0, 1.0])
