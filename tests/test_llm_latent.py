"""sparsecore.llm.latent_steering with sparsecore.sae models on a tiny random Llama and a toy module."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _tiny_lm import RefTopKSAE, tiny_llama
from hypothesis import given, settings
from hypothesis import strategies as st
from sparsecore.exceptions import DTypeError, InvalidArgumentError, ShapeMismatchError
from sparsecore.llm import capture, edit, latent_steering
from sparsecore.sae import JumpReLUSAE, SparseAutoencoder, TopKSAE
from torch import Tensor, nn

HOOK = "model.layers.1"


@pytest.fixture(scope="module")
def model() -> Any:
    return tiny_llama(n_layers=3)


@pytest.fixture(scope="module")
def ids() -> Tensor:
    return torch.randint(3, 100, (2, 6), generator=torch.Generator().manual_seed(4))


def _topk(scale: float = 2.5) -> TopKSAE:
    sae = TopKSAE(32, 64, 8, seed=0)
    sae.act_scale.fill_(scale)
    return sae


def _jumprelu() -> JumpReLUSAE:
    sae = JumpReLUSAE(32, 64, seed=1, init_threshold=0.001)
    sae.act_scale.fill_(0.5)
    return sae


def _hooks(m: nn.Module) -> list[tuple[str, list[int]]]:
    return [(n, list(mod._forward_hooks)) for n, mod in m.named_modules()]


@torch.no_grad()
def test_add_equals_a_manual_hook(model: Any, ids: Tensor) -> None:
    sae = _topk()
    clean = model(ids).logits
    with latent_steering(model, sae, HOOK, {5: 3.0}):
        steered = model(ids).logits
    with edit(model, HOOK, lambda h: h + 3.0 * sae.W_dec[5] / 2.5):
        manual = model(ids).logits
    assert torch.equal(steered, manual)
    assert not torch.allclose(steered, clean)
    with latent_steering(model, sae, HOOK, {5: 3.0, 17: -2.0}):
        two = model(ids).logits
    with edit(model, HOOK, lambda h: h + (3.0 * sae.W_dec[5] - 2.0 * sae.W_dec[17]) / 2.5):
        assert torch.allclose(two, model(ids).logits, atol=1e-5)
    assert torch.equal(model(ids).logits, clean)


@pytest.mark.parametrize("make", [_topk, _jumprelu])
@torch.no_grad()
def test_clamp_to_current_values_and_empty_edits_are_no_ops(model: Any, make: Any) -> None:
    sae: SparseAutoencoder = make()
    one = torch.tensor([[1, 40]])
    clean = model(one).logits
    # a prompt of one token: clamping every latent to its own value changes nothing, bit for bit
    single = torch.tensor([[40]])
    single_clean = model(single).logits
    with capture(model, HOOK) as cap:
        cap(single)
    own = sae.encode(cap[HOOK])[0, 0]
    assert bool((own != 0).any())
    edits = {i: float(own[i]) for i in range(64)}
    with latent_steering(model, sae, HOOK, edits, mode="clamp"):
        assert torch.equal(model(single).logits, single_clean)
    # a latent that never fires, clamped to 0 on a longer prompt
    with capture(model, HOOK) as cap:
        cap(one)
    all_codes = sae.encode(cap[HOOK]).reshape(-1, 64)
    silent = int((all_codes != 0).sum(0).argmin())
    assert bool((all_codes[:, silent] == 0).all())
    for mode in ("clamp", "add"):
        with latent_steering(model, sae, HOOK, {}, mode=mode):
            assert torch.equal(model(one).logits, clean)
    with latent_steering(model, sae, HOOK, {silent: 0.0}, mode="clamp"):
        assert torch.equal(model(one).logits, clean)
    with latent_steering(model, sae, HOOK, {silent: 0.0}, mode="add"):
        assert torch.equal(model(one).logits, clean)
    with latent_steering(model, sae, HOOK, {silent: 5.0}, mode="clamp"):
        assert not torch.allclose(model(one).logits, clean)


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(32, 32)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.lin(x) * 2.0
        return out


@settings(max_examples=20, deadline=None)
@given(
    st.lists(st.integers(1, 3), min_size=1, max_size=3),
    st.dictionaries(st.integers(0, 63), st.floats(-4, 4), max_size=4),
    st.sampled_from([torch.float32, torch.bfloat16]),
)
@torch.no_grad()
def test_clamp_splices_the_edited_reconstruction_with_the_error(
    lead: list[int], edits: dict[int, float], dtype: torch.dtype
) -> None:
    torch.manual_seed(0)
    toy = _Toy().to(dtype)
    sae = _topk(1.7)
    x = torch.randn(*lead, 32).to(dtype)
    out = toy.lin(x)
    with latent_steering(toy, sae, "lin", edits, mode="clamp"):
        got = toy(x)
    assert got.dtype == dtype
    assert got.shape == x.shape
    codes = sae.encode(out.float())
    edited = codes.clone()
    for i, v in edits.items():
        edited[..., i] = v
    want = (sae.decode(edited) + (out.float() - sae.decode(codes))) * 2.0
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    assert torch.allclose(got.float(), want.to(dtype).float(), atol=tol, rtol=tol)
    if not edits:
        assert torch.equal(got, toy(x))


@torch.no_grad()
def test_bfloat16_model(ids: Tensor) -> None:
    model: Any = tiny_llama(n_layers=3)
    model.to(torch.bfloat16)
    sae = _topk()
    clean = model(ids).logits
    with latent_steering(model, sae, HOOK, {3: 4.0}):
        steered = model(ids).logits
    assert steered.dtype == torch.bfloat16
    assert not torch.equal(steered, clean)
    with capture(model, HOOK) as cap:
        cap(ids[:, :1])
    own = sae.encode(cap[HOOK])[0, 0]
    first = model(ids[:1, :1]).logits
    with latent_steering(model, sae, HOOK, {i: float(own[i]) for i in range(64) if own[i] != 0}, mode="clamp"):
        assert torch.equal(model(ids[:1, :1]).logits, first)
    assert torch.equal(model(ids).logits, clean)


@pytest.mark.parametrize("mode", ["add", "clamp"])
@torch.no_grad()
def test_generate_and_restore(model: Any, ids: Tensor, mode: str) -> None:
    prompt = ids[:1]
    plain = model.generate(prompt, max_new_tokens=4, do_sample=False, pad_token_id=0)
    before = _hooks(model)
    with latent_steering(model, _topk(), HOOK, {7: 50.0}, mode=mode):
        out = model.generate(prompt, max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert out.shape == plain.shape
    assert _hooks(model) == before
    assert torch.equal(model.generate(prompt, max_new_tokens=4, do_sample=False, pad_token_id=0), plain)

    def fail() -> None:
        with latent_steering(model, _topk(), HOOK, {7: 50.0}, mode=mode):
            model(prompt)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail()
    assert _hooks(model) == before


@torch.no_grad()
def test_a_reference_sae_without_act_scale_works(model: Any, ids: Tensor) -> None:
    sae = RefTopKSAE(32, 48, 4)
    with latent_steering(model, sae, HOOK, {2: 1.5}):
        steered = model(ids).logits
    with edit(model, HOOK, lambda h: h + 1.5 * sae.W_dec[2]):
        assert torch.equal(steered, model(ids).logits)


def test_bad_arguments_get_typed_errors(model: Any, ids: Tensor) -> None:
    sae = _topk()
    with pytest.raises(InvalidArgumentError, match=r"latents: keys must be latent indices in \[0, 63\], got 64"):
        latent_steering(model, sae, HOOK, {64: 1.0}).__enter__()
    with pytest.raises(InvalidArgumentError, match="latents: keys"):
        latent_steering(model, sae, HOOK, {-1: 1.0}).__enter__()
    with pytest.raises(InvalidArgumentError, match=r"latents\[3\]: must be a finite number, got nan"):
        latent_steering(model, sae, HOOK, {3: float("nan")}).__enter__()
    with pytest.raises(InvalidArgumentError, match="mode: must be one of 'add', 'clamp', got 'scale'"):
        latent_steering(model, sae, HOOK, {3: 1.0}, mode="scale").__enter__()
    with pytest.raises(InvalidArgumentError, match=r"hook: .*no module 'model\.layers\.9'"):
        latent_steering(model, sae, "model.layers.9", {3: 1.0}).__enter__()
    with pytest.raises(DTypeError, match="sae: must have encode"):
        latent_steering(model, nn.Linear(4, 4), HOOK, {3: 1.0}).__enter__()
    narrow = TopKSAE(16, 32, 4, seed=0)
    for mode in ("add", "clamp"):
        with (
            pytest.raises(ShapeMismatchError, match="sae: d_in is 16"),
            torch.no_grad(),
            latent_steering(model, narrow, HOOK, {3: 1.0}, mode=mode),
        ):
            model(ids)
    assert all(not mod._forward_hooks for mod in model.model.layers)
