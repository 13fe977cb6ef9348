"""sparsecore.sae models and files: each variant against plain-torch reference formulas, and folder round trips."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from sparsecore import sae as S  # noqa: N812
from sparsecore.exceptions import (
    DTypeError,
    IndexFormatError,
    InvalidArgumentError,
    NonFiniteError,
    ShapeMismatchError,
)
from torch import Tensor

D_IN, D_SAE, K = 8, 24, 3
DTYPES = [torch.float32, torch.bfloat16]
SHAPES = [(D_IN,), (5, D_IN), (2, 3, D_IN)]


def _close(actual: Tensor, expected: Tensor, tol: float, what: object = "") -> None:
    torch.testing.assert_close(actual, expected, atol=tol, rtol=tol, msg=lambda m: f"{what}: {m}")


def _perturbed(sae: S.SparseAutoencoder, seed: int = 7) -> S.SparseAutoencoder:
    """Give every parameter non-trivial values (biases, scale) so the reference formulas are really exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sae.named_parameters():
            if name == "log_threshold":
                p.copy_(torch.empty(p.shape).uniform_(-3.0, -0.5, generator=g))
            else:
                p.add_((0.3 * torch.randn(p.shape, generator=g)).to(p.dtype))
        sae.set_decoder_norm_to_unit_norm_()
        sae.act_scale.fill_(1.7)
    return sae


def _models(dtype: torch.dtype) -> list[S.SparseAutoencoder]:
    bt = S.BatchTopKSAE(D_IN, D_SAE, K, dtype=dtype, seed=3)
    bt.threshold.fill_(0.2)
    return [
        _perturbed(S.TopKSAE(D_IN, D_SAE, K, dtype=dtype, seed=1)),
        _perturbed(bt).eval(),
        _perturbed(S.JumpReLUSAE(D_IN, D_SAE, dtype=dtype, seed=4)),
        _perturbed(S.ReLUSAE(D_IN, D_SAE, 0.1, dtype=dtype, seed=5)),
        _perturbed(S.MatchingPursuitSAE(D_IN, D_SAE, K, dtype=dtype, seed=6)),
    ]


@torch.no_grad()
def _ref_mp(xc: Tensor, atoms: Tensor, k: int, threshold: float) -> Tensor:
    """Matching pursuit, one row at a time, in float64."""
    out = torch.zeros(xc.shape[0], atoms.shape[0], dtype=torch.float64)
    for row in range(xc.shape[0]):
        r = xc[row].double().clone()
        for _ in range(k):
            inner = atoms.double() @ r
            best = int(inner.argmax())
            if float(inner[best]) <= threshold:
                break
            out[row, best] += inner[best]
            r -= inner[best] * atoms[best].double()
    return out


@torch.no_grad()
def _reference(sae: S.SparseAutoencoder, x: Tensor) -> tuple[Tensor, Tensor]:
    """Codes and reconstruction of ``x`` by the papers' formulas, in float64, from the model's parameters."""
    s = float(sae.act_scale)
    flat = x.reshape(-1, D_IN).double()
    w_dec, b_dec = sae.W_dec.double(), sae.b_dec.double()
    xc = flat * s - b_dec
    if isinstance(sae, S.MatchingPursuitSAE):
        codes = _ref_mp(xc, w_dec, K, sae.residual_threshold)
    else:
        pre = xc @ sae.W_enc.double() + sae.b_enc.double()
        if isinstance(sae, S.TopKSAE):
            kth = pre.topk(K, dim=1).values[:, -1:]
            codes = torch.where(pre >= kth, pre.clamp_min(0), torch.zeros_like(pre))
        elif isinstance(sae, S.BatchTopKSAE):
            codes = torch.where(pre > float(sae.threshold), pre, torch.zeros_like(pre))
        elif isinstance(sae, S.JumpReLUSAE):
            theta = sae.log_threshold.double().exp()
            codes = torch.where(pre > theta, pre, torch.zeros_like(pre))
        else:
            codes = pre.clamp_min(0)
    recon = (codes @ w_dec + b_dec) / s
    return codes.reshape(*x.shape[:-1], D_SAE), recon.reshape(x.shape)


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape", SHAPES, ids=["1d", "2d", "3d"])
def test_every_variant_matches_the_reference_formulas(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    for sae in _models(dtype):
        ref_codes, ref_recon = _reference(sae, x)
        recon, codes = sae(x)
        assert recon.dtype == dtype, sae
        assert codes.dtype == dtype, sae
        assert recon.shape == shape
        assert codes.shape == (*shape[:-1], D_SAE)
        _close(codes.double(), ref_codes, tol, sae)
        _close(recon.double(), ref_recon, tol, sae)
        torch.testing.assert_close(sae.encode(x), codes)
        _close(sae.decode(codes).double(), ref_recon, tol)
        pre = sae.pre_acts(x)
        assert pre.dtype == torch.float32
        assert pre.shape == (*shape[:-1], D_SAE)


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
def test_encode_sparse_lists_exactly_the_active_latents(dtype: torch.dtype) -> None:
    x = torch.randn(2, 4, D_IN, generator=torch.Generator().manual_seed(1)).to(dtype)
    for sae in _models(dtype):
        codes = sae.encode(x)
        indices, values = sae.encode_sparse(x)
        assert indices.dtype == torch.int64
        assert values.dtype == dtype
        assert indices.shape == values.shape
        assert indices.shape[:-1] == x.shape[:-1]
        rebuilt = torch.zeros_like(codes).scatter_add(-1, indices, values)
        _close(rebuilt, codes, 1e-6, sae)
        if isinstance(sae, S.TopKSAE):
            assert indices.shape[-1] == K
        else:
            assert indices.shape[-1] == int((codes != 0).sum(-1).max())
            assert bool((indices[values == 0] == 0).all())


@given(
    lead=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    k=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_topk_codes_have_k_nonnegative_entries_at_the_largest_pre_activations(
    lead: list[int], k: int, seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    sae = S.TopKSAE(D_IN, 12, k, generator=g)
    x = torch.randn(*lead, D_IN, generator=g)
    codes, pre = sae.encode(x), sae.pre_acts(x)
    assert bool((codes >= 0).all())
    assert bool(((codes != 0).sum(-1) <= k).all())
    kth = pre.topk(k, dim=-1).values[..., -1:]
    assert bool((codes[pre < kth] == 0).all())
    assert bool(((pre >= kth) & (pre > 0)).sum(-1).eq((codes > 0).sum(-1)).all())


def test_mp_is_tied_and_stops_on_the_residual_threshold() -> None:
    sae = _perturbed(S.MatchingPursuitSAE(D_IN, D_SAE, 6, residual_threshold=0.5, seed=2))
    assert "W_enc" not in dict(sae.named_parameters())
    assert "b_enc" not in dict(sae.named_parameters())
    assert sae.W_enc.shape == (D_IN, D_SAE)
    assert sae.W_enc.data_ptr() == sae.W_dec.data_ptr()
    assert torch.equal(sae.b_enc, torch.zeros(D_SAE))
    x = torch.randn(40, D_IN, generator=torch.Generator().manual_seed(3))
    codes = sae.encode(x).double()
    ref = _ref_mp(x.double() * float(sae.act_scale) - sae.b_dec.double(), sae.W_dec.double(), 6, 0.5)
    torch.testing.assert_close(codes, ref, atol=1e-4, rtol=1e-4)
    assert int((codes != 0).sum(-1).min()) < 6  # the threshold stopped some rows early
    assert bool((codes >= 0).all())


def test_batchtopk_training_mode_keeps_k_per_token_on_average_over_2d_and_3d_batches() -> None:
    sae = S.BatchTopKSAE(D_IN, D_SAE, K, seed=0)
    g = torch.Generator().manual_seed(4)
    for shape in [(64, D_IN), (4, 16, D_IN)]:
        x = torch.randn(shape, generator=g) + 0.5
        codes = sae.encode(x)
        per_token = (codes != 0).sum(-1).float()
        assert per_token.mean().item() == pytest.approx(K)
        assert per_token.max() > per_token.min()  # the budget is shared, not per row
    assert float(sae.threshold) > 0
    assert int(sae.threshold_updates) == 2


def test_batchtopk_eval_uses_the_threshold_and_exports_an_equivalent_jumprelu() -> None:
    sae = S.BatchTopKSAE(D_IN, D_SAE, K, seed=0)
    x = torch.randn(256, D_IN, generator=torch.Generator().manual_seed(5)) + 0.3
    sae.encode(x)  # training mode: sets the threshold
    sae.eval()
    thr = float(sae.threshold)
    pre = sae.pre_acts(x)
    torch.testing.assert_close(sae.encode(x), torch.where(pre > thr, pre, torch.zeros_like(pre)))
    jump = sae.export_jumprelu()
    assert isinstance(jump, S.JumpReLUSAE)
    assert not jump.training
    torch.testing.assert_close(jump(x)[0], sae(x)[0])
    torch.testing.assert_close(jump.encode(x), sae.encode(x))


def test_jumprelu_thresholds_get_the_rectangle_kernel_pseudo_gradient() -> None:
    sae = S.JumpReLUSAE(D_IN, D_SAE, bandwidth=0.5, init_threshold=0.3, seed=0, dtype=torch.bfloat16)
    assert sae.log_threshold.dtype == torch.float32
    x = torch.randn(64, D_IN, generator=torch.Generator().manual_seed(6))
    pre = sae.pre_acts(x).detach()
    codes = sae.encode(x.to(torch.float32))
    loss = sae.sparsity_loss(codes, pre)
    torch.autograd.backward(loss)
    theta = 0.3
    kernel = ((pre - theta).abs() < 0.25).double()
    # d/dθ [λ · mean_tokens Σ H(pre - θ)] = -λ/ε · mean_tokens K((pre - θ)/ε), then chain rule through θ = exp(log θ)
    expected = -(1e-3 / 0.5) * kernel.sum(0) / 64 * theta
    assert sae.log_threshold.grad is not None
    torch.testing.assert_close(sae.log_threshold.grad.double(), expected, atol=1e-7, rtol=1e-4)
    assert float(sae.log_threshold.grad.abs().sum()) > 0


def test_relu_sparsity_loss_is_l1_weighted_by_decoder_norms() -> None:
    sae = _perturbed(S.ReLUSAE(D_IN, D_SAE, 0.25, seed=1))
    with torch.no_grad():
        sae.W_dec.mul_(torch.linspace(0.5, 2.0, D_SAE)[:, None])
    x = torch.randn(10, D_IN, generator=torch.Generator().manual_seed(7))
    codes, pre = sae.encode(x), sae.pre_acts(x)
    expected = 0.25 * (codes * sae.W_dec.norm(dim=1)).sum(-1).mean()
    torch.testing.assert_close(sae.sparsity_loss(codes, pre), expected)
    for other in (S.TopKSAE(D_IN, D_SAE, K), S.MatchingPursuitSAE(D_IN, D_SAE, K)):
        assert float(other.sparsity_loss(other.encode(x), other.pre_acts(x))) == 0.0


def test_decoder_renormalisation_and_gradient_projection() -> None:
    sae = _perturbed(S.TopKSAE(D_IN, D_SAE, K, seed=0))
    with torch.no_grad():
        sae.W_dec.mul_(3.0)
    sae.set_decoder_norm_to_unit_norm_()
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(D_SAE))
    x = torch.randn(16, D_IN, generator=torch.Generator().manual_seed(8))
    recon, _ = sae(x)
    torch.autograd.backward((recon - x).pow(2).sum())
    assert sae.W_dec.grad is not None
    assert float(sae.W_dec.grad.abs().sum()) > 0
    sae.remove_gradient_parallel_to_decoder_directions_()
    parallel = (sae.W_dec.grad * sae.W_dec).sum(dim=1)
    torch.testing.assert_close(parallel, torch.zeros(D_SAE), atol=1e-4, rtol=0)


def test_config_is_json_and_names_the_architecture() -> None:
    for sae in _models(torch.float32):
        cfg = json.loads(json.dumps(sae.config()))
        assert cfg["architecture"] == sae.architecture
        assert cfg["d_in"] == D_IN
        assert cfg["d_sae"] == D_SAE
        assert cfg["k"] == sae.k
        assert cfg["act_scale"] == pytest.approx(1.7)
    assert [m.architecture for m in _models(torch.float32)] == ["topk", "batchtopk", "jumprelu", "relu", "mp"]
    assert S.JumpReLUSAE(4, 8).k is None
    assert S.ReLUSAE(4, 8, 0.0).k is None


def test_bad_arguments_and_inputs_raise_typed_errors() -> None:
    with pytest.raises(InvalidArgumentError, match="k: must be an integer <= d_sae"):
        S.TopKSAE(4, 8, 9)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(InvalidArgumentError, match="d_sae"):
            S.TopKSAE(4, bad, 1)  # type: ignore[arg-type]
    for cls in (S.TopKSAE, S.BatchTopKSAE, S.MatchingPursuitSAE):
        with pytest.raises(InvalidArgumentError, match="k: must be a positive integer"):
            cls(4, 8, None)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="bandwidth"):
        S.JumpReLUSAE(4, 8, bandwidth=0.0)
    with pytest.raises(DTypeError, match="dtype"):
        S.TopKSAE(4, 8, 2, dtype=torch.float64)
    with pytest.raises(InvalidArgumentError, match="seed"):
        S.TopKSAE(4, 8, 2, seed=1, generator=torch.Generator())
    sae = S.TopKSAE(4, 8, 2)
    with pytest.raises(ShapeMismatchError, match="x: last dimension must be 4"):
        sae.encode(torch.zeros(3, 5))
    with pytest.raises(NonFiniteError, match="x: "):
        sae(torch.tensor([[0.0, math.nan, 0.0, 0.0]]))
    with pytest.raises(NonFiniteError, match="x: "):
        sae.encode_sparse(torch.tensor([0.0, math.inf, 0.0, 0.0]))
    with pytest.raises(DTypeError, match="x: "):
        sae.encode(torch.zeros(2, 4, dtype=torch.float64))
    with pytest.raises(DTypeError, match="x: "):
        sae.encode([[0.0] * 4])  # type: ignore[arg-type]
    with pytest.raises(ShapeMismatchError, match="codes"):
        sae.decode(torch.zeros(2, 7))


def test_same_seed_same_weights() -> None:
    a, b = S.TopKSAE(8, 16, 2, seed=11), S.TopKSAE(8, 16, 2, generator=torch.Generator().manual_seed(11))
    assert torch.equal(a.W_dec, b.W_dec)
    assert torch.equal(a.W_enc, a.W_dec.T * (1 / math.sqrt(3)))  # TopK: the transpose, scaled by 1/sqrt(3)
    assert torch.equal(S.ReLUSAE(8, 16, 1e-3, seed=11).W_enc, a.W_dec.T)  # the other architectures: the transpose
    assert not torch.equal(a.W_dec, S.TopKSAE(8, 16, 2, seed=12).W_dec)


def test_importing_without_torch_names_the_extra() -> None:
    code = "import sys; sys.modules['torch'] = None\nimport sparsecore.sae"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode != 0
    assert "ImportError" in res.stderr or "MissingExtraError" in res.stderr
    assert "pip install 'sparsecore[torch]'" in res.stderr


# -- files -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
def test_every_variant_round_trips_through_a_saelens_folder(tmp_path: Path, dtype: torch.dtype) -> None:
    x = torch.randn(3, 5, D_IN, generator=torch.Generator().manual_seed(9)).to(dtype)
    tol = 1e-5 if dtype == torch.float32 else 5e-2
    for sae in _models(dtype):
        folder = tmp_path / sae.architecture
        sae.save(folder)
        assert sorted(p.name for p in folder.iterdir()) == ["cfg.json", "sae_weights.safetensors"]
        back = S.load(folder)
        assert type(back) is type(sae)
        assert back.config() == pytest.approx(sae.config())
        assert back.dtype == dtype
        if isinstance(back, S.JumpReLUSAE):
            assert back.log_threshold.dtype == torch.float32
        back.train(sae.training)
        for (name, p), q in zip(sae.named_parameters(), back.parameters(), strict=True):
            _close(q.float(), p.float(), tol, name)
        _close(back(x)[0].float(), sae(x)[0].float(), tol)
        _close(back.encode(x).float(), sae.encode(x).float(), tol)
    assert not list(tmp_path.glob(".*tmp*"))


def test_saving_twice_replaces_the_folder(tmp_path: Path) -> None:
    a, b = S.TopKSAE(D_IN, D_SAE, K, seed=1), S.ReLUSAE(D_IN, D_SAE, 0.5, seed=2)
    S.save(a, tmp_path / "m")
    S.save(b, tmp_path / "m")
    back = S.load(tmp_path / "m")
    assert isinstance(back, S.ReLUSAE)
    assert torch.equal(back.W_dec, b.W_dec)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_saelens_file_folds_the_activation_scale_like_saelens(tmp_path: Path) -> None:
    sae = _models(torch.float32)[0]
    sae.save(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "cfg.json").read_text())
    assert cfg["architecture"] == "topk"
    assert cfg["k"] == K
    assert cfg["normalize_activations"] == "none"
    assert cfg["apply_b_dec_to_input"] is True
    assert cfg["dtype"] == "float32"
    assert cfg["metadata"]["sparsecore"]["act_scale"] == pytest.approx(1.7)
    t = load_file(str(tmp_path / "m" / "sae_weights.safetensors"))
    x = torch.randn(6, D_IN, generator=torch.Generator().manual_seed(10))
    # SAELens' TopK inference, by hand, from the file alone on raw activations
    pre = (x - t["b_dec"]) @ t["W_enc"] + t["b_enc"]
    v, i = pre.topk(K, dim=-1)
    codes = torch.zeros_like(pre).scatter(-1, i, v.relu())
    torch.testing.assert_close(codes @ t["W_dec"] + t["b_dec"], sae(x)[0], atol=1e-5, rtol=1e-5)


def _reference_saelens_folder(folder: Path, arch: str, tensors: dict[str, Tensor], **cfg: object) -> None:
    """Write a folder as SAELens does: cfg.json with its field names, sae_weights.safetensors."""
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "sae_weights.safetensors"))
    base = {"architecture": arch, "d_in": D_IN, "d_sae": D_SAE, "dtype": "float32", "device": "cpu"}
    base |= {"apply_b_dec_to_input": True, "normalize_activations": "none", "reshape_activations": "none"}
    base |= {"metadata": {"sae_lens_version": "6.0.0", "hook_name": "blocks.0.hook_resid_post"}}
    (folder / "cfg.json").write_text(json.dumps(base | cfg))


def _random_weights(seed: int) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "W_enc": torch.randn(D_IN, D_SAE, generator=g) / 3,
        "b_enc": torch.randn(D_SAE, generator=g) / 10,
        "W_dec": torch.randn(D_SAE, D_IN, generator=g) / 3,
        "b_dec": torch.randn(D_IN, generator=g) / 10,
    }


def test_folders_written_by_saelens_load_and_match_its_formulas(tmp_path: Path) -> None:
    x = torch.randn(7, D_IN, generator=torch.Generator().manual_seed(11))
    w = _random_weights(12)
    pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]

    _reference_saelens_folder(tmp_path / "topk", "topk", w, k=K, rescale_acts_by_decoder_norm=False)
    v, i = pre.topk(K, dim=-1)
    expect = torch.zeros_like(pre).scatter(-1, i, v.relu()) @ w["W_dec"] + w["b_dec"]
    got = S.load(tmp_path / "topk")
    assert isinstance(got, S.TopKSAE)
    assert got.k == K
    torch.testing.assert_close(got(x)[0], expect, atol=1e-5, rtol=1e-5)

    norms = w["W_dec"].norm(dim=1)
    _reference_saelens_folder(tmp_path / "rescaled", "topk", w, k=K, rescale_acts_by_decoder_norm=True)
    v, i = (pre * norms).topk(K, dim=-1)
    acts = torch.zeros_like(pre).scatter(-1, i, v.relu())
    expect = (acts / norms) @ w["W_dec"] + w["b_dec"]
    torch.testing.assert_close(S.load(tmp_path / "rescaled")(x)[0], expect, atol=1e-5, rtol=1e-5)

    thr = torch.rand(D_SAE, generator=torch.Generator().manual_seed(13)) * 0.2 + 0.01
    _reference_saelens_folder(tmp_path / "jump", "jumprelu", w | {"threshold": thr})
    expect = (pre.relu() * (pre > thr)) @ w["W_dec"] + w["b_dec"]
    got = S.load(tmp_path / "jump")
    assert isinstance(got, S.JumpReLUSAE)
    torch.testing.assert_close(got(x)[0], expect, atol=1e-5, rtol=1e-5)

    _reference_saelens_folder(tmp_path / "std", "standard", w, apply_b_dec_to_input=False)
    expect = (x @ w["W_enc"] + w["b_enc"]).relu() @ w["W_dec"] + w["b_dec"]
    got = S.load(tmp_path / "std")
    assert isinstance(got, S.ReLUSAE)
    torch.testing.assert_close(got(x)[0], expect, atol=1e-5, rtol=1e-5)

    atoms = w["W_dec"] / w["W_dec"].norm(dim=1, keepdim=True)
    tied = {"W_dec": atoms, "b_dec": w["b_dec"]}
    _reference_saelens_folder(
        tmp_path / "mp", "matching_pursuit", tied, max_iterations=K, residual_threshold=0.0,
        stop_on_duplicate_support=False,
    )  # fmt: skip
    codes = _ref_mp(x - w["b_dec"], atoms, K, 0.0).float()
    got = S.load(tmp_path / "mp")
    assert isinstance(got, S.MatchingPursuitSAE)
    assert got.k == K
    torch.testing.assert_close(got(x)[0], codes @ atoms + w["b_dec"], atol=1e-5, rtol=1e-5)


def _reference_sparsify_folder(folder: Path, tensors: dict[str, Tensor], **cfg: object) -> None:
    """Write a folder as eai-sparsify's ``SparseCoder.save_to_disk`` does."""
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "sae.safetensors"))
    base = {"activation": "topk", "expansion_factor": 32, "normalize_decoder": True, "num_latents": D_SAE, "k": K}
    base |= {"multi_topk": False, "skip_connection": False, "transcode": False, "d_in": D_IN}
    (folder / "cfg.json").write_text(json.dumps(base | cfg))


def test_a_sparsify_folder_loads_and_matches_its_formulas(tmp_path: Path) -> None:
    w = _random_weights(14)
    tensors = {"encoder.weight": w["W_enc"].T, "encoder.bias": w["b_enc"], "W_dec": w["W_dec"], "b_dec": w["b_dec"]}
    _reference_sparsify_folder(tmp_path / "s", tensors)
    x = torch.randn(2, 5, D_IN, generator=torch.Generator().manual_seed(15))
    pre = torch.nn.functional.linear(x - w["b_dec"], tensors["encoder.weight"], w["b_enc"]).relu()
    v, i = pre.topk(K, dim=-1)
    expect = torch.zeros_like(pre).scatter(-1, i, v) @ w["W_dec"] + w["b_dec"]
    got = S.load(tmp_path / "s")
    assert isinstance(got, S.TopKSAE)
    assert (got.d_in, got.d_sae, got.k) == (D_IN, D_SAE, K)
    torch.testing.assert_close(got(x)[0], expect, atol=1e-5, rtol=1e-5)
    _, vals = got.encode_sparse(x)
    torch.testing.assert_close(vals.sort(-1).values, v.sort(-1).values, atol=1e-5, rtol=1e-5)
    # without num_latents the width is d_in * expansion_factor
    _reference_sparsify_folder(tmp_path / "e", tensors | {}, num_latents=0, expansion_factor=D_SAE // D_IN)
    assert S.load(tmp_path / "e").d_sae == D_SAE


def test_malformed_folders_raise_index_format_error_naming_the_file(tmp_path: Path) -> None:
    w = _random_weights(16)
    _reference_saelens_folder(tmp_path / "arch", "gated", w)
    with pytest.raises(IndexFormatError, match=r"cfg\.json.*unknown architecture 'gated'"):
        S.load(tmp_path / "arch")
    _reference_saelens_folder(tmp_path / "miss", "topk", {k: v for k, v in w.items() if k != "b_enc"}, k=K)
    with pytest.raises(IndexFormatError, match=r"sae_weights\.safetensors.*missing tensor 'b_enc'"):
        S.load(tmp_path / "miss")
    _reference_saelens_folder(tmp_path / "shape", "topk", w | {"W_dec": w["W_dec"][:, :-1]}, k=K)
    with pytest.raises(IndexFormatError, match=r"sae_weights\.safetensors.*'W_dec' has shape"):
        S.load(tmp_path / "shape")
    bad = w["W_enc"].clone()
    bad[0, 0] = math.nan
    _reference_saelens_folder(tmp_path / "nan", "topk", w | {"W_enc": bad}, k=K)
    with pytest.raises(IndexFormatError, match=r"sae_weights\.safetensors.*'W_enc' contains NaN"):
        S.load(tmp_path / "nan")
    _reference_saelens_folder(tmp_path / "jump", "jumprelu", w)
    with pytest.raises(IndexFormatError, match="missing tensor 'threshold'"):
        S.load(tmp_path / "jump")
    _reference_saelens_folder(tmp_path / "bigk", "topk", w, k=D_SAE + 1)
    with pytest.raises(IndexFormatError, match="k = 25 exceeds"):
        S.load(tmp_path / "bigk")
    tensors = {"encoder.weight": w["W_enc"].T, "encoder.bias": w["b_enc"], "W_dec": w["W_dec"]}
    _reference_sparsify_folder(tmp_path / "sp", tensors)
    with pytest.raises(IndexFormatError, match=r"sae\.safetensors.*missing tensor 'b_dec'"):
        S.load(tmp_path / "sp")
    _reference_sparsify_folder(tmp_path / "gm", tensors, activation="groupmax")
    with pytest.raises(IndexFormatError, match="unknown architecture"):
        S.load(tmp_path / "gm")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "cfg.json").write_text(json.dumps({"architecture": "topk", "d_in": 8, "d_sae": 24, "k": 3}))
    (tmp_path / "junk" / "sae_weights.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(IndexFormatError, match=r"sae_weights\.safetensors"):
        S.load(tmp_path / "junk")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexFormatError, match="neither"):
        S.load(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        S.load(tmp_path / "nowhere")
