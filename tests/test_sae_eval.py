"""sparsecore.sae._eval and ._embed against plain-torch computations on a tiny random Llama."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from _tiny_lm import RefTopKSAE, identity_sae, texts, tiny_llama, tiny_tokenizer, zero_sae
from sparsecore import InvertedIndex, SparseBatch
from sparsecore.exceptions import DTypeError, InvalidArgumentError, ShapeMismatchError
from sparsecore.sae._data import ActivationSource
from sparsecore.sae._embed import dataset_diff, embed, fisher_exact, top_documents, two_proportion_p
from sparsecore.sae._eval import dark_matter, evaluate
from torch import Tensor, nn

HOOK = "model.layers.1"
HAS_MPL = importlib.util.find_spec("matplotlib") is not None


@pytest.fixture(scope="module")
def model() -> Any:
    return tiny_llama(n_layers=3)


@pytest.fixture(scope="module")
def tok() -> Any:
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def docs() -> list[str]:
    return texts(10, seed=7)


def _sae_with_dead_and_dense(seed: int = 0) -> RefTopKSAE:
    sae = RefTopKSAE(32, 64, 4, seed=seed)
    with torch.no_grad():
        sae.b_enc[:8] = -100.0  # never positive: dead
        sae.b_enc[8:10] = 100.0  # always in the top k: dense
    return sae


def _layer_rows(model: Any, tok: Any, text: str) -> Tensor:
    """The hooked layer's output at the text's tokens without BOS, by a plain forward pass."""
    with torch.no_grad():
        out = model(torch.tensor([tok(text)["input_ids"]]), output_hidden_states=True)
    hidden: Tensor = out.hidden_states[2]
    return hidden[0, 1:]


def _ce_kl(model: Any, tok: Any, docs: list[str], fn: Any) -> tuple[float, Tensor]:
    """Mean next-token CE with the layer output replaced by ``fn`` after BOS (plain torch hook), and log-probs."""
    nll, n, logps = 0.0, 0, []

    def hook(_m: nn.Module, _a: Any, out: Tensor) -> Tensor:
        return torch.cat([out[:, :1], fn(out[:, 1:])], dim=1)

    handle = model.get_submodule(HOOK).register_forward_hook(hook) if fn is not None else None
    try:
        with torch.no_grad():
            for t in docs:
                ids = torch.tensor([tok(t)["input_ids"]])
                lp = F.log_softmax(model(ids).logits[0, :-1].double(), dim=-1)
                nll -= float(lp.gather(1, ids[0, 1:, None]).sum())
                n += ids.shape[1] - 1
                logps.append(lp)
    finally:
        if handle is not None:
            handle.remove()
    return nll / n, torch.cat(logps)


def test_reconstruction_and_sparsity_metrics_match_direct_computation(model: Any, tok: Any, docs: list[str]) -> None:
    sae = _sae_with_dead_and_dense()
    src = ActivationSource(model, tok, docs, HOOK, batch_size=16, shuffle_buffer=0, drop_last=False)
    res = evaluate(sae, None, src)
    x = torch.cat(list(src)).double()
    with torch.no_grad():
        recon, codes = sae(x.float())
    err = x - recon.double()
    active = codes != 0
    assert res["n_tokens"] == x.shape[0] == src.n_tokens
    assert res["fvu"] == pytest.approx(float((err**2).sum() / ((x - x.mean(0)) ** 2).sum()), rel=1e-9)
    assert res["explained_variance"] == pytest.approx(1 - res["fvu"])
    assert res["mse"] == pytest.approx(float((err**2).mean()), rel=1e-9)
    assert res["l0"] == pytest.approx(4.0)  # TopK with k = 4 and positive pre-activations everywhere here
    assert res["l0"] == pytest.approx(float(active.sum(1).double().mean()))
    assert res["dead_fraction"] == float((active.sum(0) == 0).double().mean())
    assert res["dead_fraction"] >= 8 / 64
    assert res["dense_fraction"] == float((active.double().mean(0) > 0.1).double().mean())
    assert res["dense_fraction"] >= 2 / 64
    np.testing.assert_allclose(res["latent_frequency"], active.double().mean(0).numpy())
    alive = int((active.sum(0) > 0).sum())
    assert sum(res["frequency_histogram"]["counts"]) == alive
    assert res["ce_recovered"] is None  # no model given
    limited = evaluate(sae, None, src, n_batches=2)
    assert limited["n_tokens"] == 32


def test_dark_matter_of_evaluate_is_that_of_the_error(model: Any, tok: Any, docs: list[str]) -> None:
    sae = RefTopKSAE(32, 64, 3)
    acts = torch.randn(300, 32, generator=torch.Generator().manual_seed(0))
    res = evaluate(sae, None, ActivationSource.from_tensor(acts, 50, shuffle_buffer=0))
    with torch.no_grad():
        want = dark_matter(acts, acts - sae(acts)[0])
    assert want["linear_fraction"] is not None
    assert res["dark_matter_linear_fraction"] == pytest.approx(want["linear_fraction"], rel=1e-5)
    assert res["dark_matter_nonlinear_fraction"] == pytest.approx(1 - want["linear_fraction"], rel=1e-5)
    assert res["error_norm_r2"] == pytest.approx(want["norm_r2"], rel=1e-5)


def test_dark_matter_tells_linear_from_nonlinear_errors() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2000, 8, generator=g)
    a, b = torch.randn(8, 8, generator=g), torch.randn(8, generator=g)
    linear = dark_matter(x, x @ a + b)
    assert linear["linear_fraction"] == pytest.approx(1.0, abs=1e-6)
    noise = dark_matter(x, torch.randn(2000, 8, generator=g))
    assert noise["linear_fraction"] is not None
    assert abs(noise["linear_fraction"]) < 0.02
    assert noise["nonlinear_fraction"] == pytest.approx(1 - noise["linear_fraction"])
    u = torch.zeros(8)
    u[0] = 1.0
    scaled = dark_matter(x, (x @ b + 20.0)[:, None] * u)  # the norm |x·b + 20| is linear in x here
    assert scaled["norm_r2"] == pytest.approx(1.0, abs=1e-6)
    squared = dark_matter(x, (x[:, :1] ** 2) * u)  # x0² is uncorrelated with x: not linear
    assert squared["linear_fraction"] is not None
    assert squared["linear_fraction"] < 0.02
    assert dark_matter(x[:8], x[:8])["linear_fraction"] is None  # too few rows for d_in = 8
    with pytest.raises(ShapeMismatchError):
        dark_matter(x, x[:5])


def test_perfect_sae_recovers_the_loss_and_zero_sae_recovers_nothing(model: Any, tok: Any, docs: list[str]) -> None:
    src = ActivationSource(model, tok, docs, HOOK, batch_size=16)
    perfect = evaluate(identity_sae(32), model, src)
    assert perfect["fvu"] == pytest.approx(0.0, abs=1e-10)
    assert perfect["ce_recovered"] == pytest.approx(1.0, abs=1e-5)
    assert perfect["kl_sae"] == pytest.approx(0.0, abs=1e-7)
    assert perfect["kl_zero"] > 1e-4  # zero-ablation does change the predictions
    ce_clean, _ = _ce_kl(model, tok, docs, None)
    ce_zero, _ = _ce_kl(model, tok, docs, torch.zeros_like)
    assert perfect["ce_clean"] == pytest.approx(ce_clean, rel=1e-5)
    assert perfect["ce_zero"] == pytest.approx(ce_zero, rel=1e-5)
    nothing = evaluate(zero_sae(32), model, src)
    assert nothing["ce_recovered"] == pytest.approx(0.0, abs=1e-9)
    assert nothing["ce_sae"] == pytest.approx(nothing["ce_zero"], rel=1e-9)
    assert nothing["kl_sae"] == pytest.approx(nothing["kl_zero"], rel=1e-9)


def test_downstream_loss_of_a_real_sae_matches_a_plain_torch_splice(model: Any, tok: Any, docs: list[str]) -> None:
    sae = RefTopKSAE(32, 64, 8, seed=3)
    src = ActivationSource(model, tok, docs, HOOK, batch_size=16)
    res = evaluate(sae, model, src, texts=docs[:6], batch_size=4)
    ce_clean, lp_clean = _ce_kl(model, tok, docs[:6], None)
    ce_sae, lp_sae = _ce_kl(model, tok, docs[:6], lambda h: sae(h)[0])
    ce_zero, _ = _ce_kl(model, tok, docs[:6], torch.zeros_like)
    assert res["ce_sae"] == pytest.approx(ce_sae, rel=1e-5)
    assert res["ce_recovered"] == pytest.approx((ce_zero - ce_sae) / (ce_zero - ce_clean), rel=1e-4)
    kl = float((lp_clean.exp() * (lp_clean - lp_sae)).sum(-1).mean())
    assert res["kl_sae"] == pytest.approx(kl, rel=1e-4)


@pytest.mark.skipif(HAS_MPL, reason="matplotlib is installed")
def test_histogram_png_needs_matplotlib(tmp_path: Path) -> None:
    src = ActivationSource.from_tensor(torch.randn(20, 32), 10)
    with pytest.raises(InvalidArgumentError, match="matplotlib"):
        evaluate(RefTopKSAE(32, 64, 4), None, src, histogram_path=tmp_path / "h.png")
    assert not (tmp_path / "h.png").exists()


@pytest.mark.skipif(not HAS_MPL, reason="needs matplotlib")
def test_histogram_png_is_written(tmp_path: Path) -> None:  # pragma: no cover - matplotlib is optional
    src = ActivationSource.from_tensor(torch.randn(20, 32), 10)
    evaluate(RefTopKSAE(32, 64, 4), None, src, histogram_path=tmp_path / "h.png")
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_checks_its_arguments() -> None:
    src = ActivationSource.from_tensor(torch.randn(20, 16), 10)
    with pytest.raises(DTypeError, match="sae"):
        evaluate(nn.Linear(3, 3), None, src)
    with pytest.raises(ShapeMismatchError, match="source"):
        evaluate(RefTopKSAE(32, 64, 4), None, src)
    with pytest.raises(InvalidArgumentError, match="n_batches"):
        evaluate(RefTopKSAE(16, 32, 4), None, src, n_batches=0)


# -- embeddings ---------------------------------------------------------------------------------------------------


def _direct_embedding(sae: RefTopKSAE, model: Any, tok: Any, text: str) -> dict[int, float]:
    with torch.no_grad():
        pooled = sae.encode(_layer_rows(model, tok, text)).amax(dim=0)
    return {int(j): float(pooled[j]) for j in torch.nonzero(pooled).reshape(-1)}


def test_embed_max_pools_latents_per_text(model: Any, tok: Any, docs: list[str]) -> None:
    sae = RefTopKSAE(32, 64, 4, seed=1)
    batch = embed(sae, model, tok, [docs[0], "", docs[1], docs[0]], hook=HOOK, batch_size=3)
    assert batch.shape == (4, 64)
    # a duplicated text gives the same row (batched matmuls may differ in the last bit between batch rows)
    assert np.array_equal(batch.row(0)[0], batch.row(3)[0])
    np.testing.assert_allclose(batch.row(0)[1], batch.row(3)[1], rtol=1e-6)
    assert batch.row_nnz[1] == 0  # no tokens, empty row
    got = batch.to_dicts()
    for row, text in ((0, docs[0]), (2, docs[1])):
        want = _direct_embedding(sae, model, tok, text)
        assert got[row].keys() == want.keys()
        assert all(math.isclose(got[row][j], want[j], rel_tol=1e-5, abs_tol=1e-6) for j in want)


def test_embed_pools_the_windows_of_a_long_text(model: Any, tok: Any) -> None:
    sae = RefTopKSAE(32, 64, 4, seed=2)
    words = texts(1, seed=5, lo=20, hi=20)[0].split()
    batch = embed(sae, model, tok, [" ".join(words)], hook=HOOK, context_size=8)
    with torch.no_grad():
        parts = [sae.encode(_layer_rows(model, tok, " ".join(words[i : i + 7]))) for i in range(0, 20, 7)]
        pooled = torch.cat(parts).amax(dim=0)
    np.testing.assert_allclose(batch.to_dense()[0], pooled.numpy(), rtol=1e-5, atol=1e-6)


def test_an_index_on_embeddings_finds_a_latents_top_document(model: Any, tok: Any, docs: list[str]) -> None:
    sae = RefTopKSAE(32, 64, 4, seed=4)
    batch = embed(sae, model, tok, docs, hook=HOOK)
    index = InvertedIndex.build(batch, mode="exact")
    freq = np.bincount(batch.indices.astype(np.int64), minlength=64)
    with torch.no_grad():
        codes = [sae.encode(_layer_rows(model, tok, t)) for t in docs]
    for latent in np.argsort(-freq)[:3].tolist():
        rows, values = top_documents(batch, latent, n=3)
        per_text = [float(c[:, latent].max()) for c in codes]
        assert rows[0] == int(np.argmax(per_text))
        assert values[0] == pytest.approx(max(per_text), rel=1e-5)
        assert list(values) == sorted(values, reverse=True)
        ids, scores = index.search(SparseBatch.from_dicts([{latent: 1.0}], dim=64), k=1)
        assert ids[0, 0] == rows[0]
        assert scores[0, 0] == pytest.approx(values[0], rel=1e-6)


def test_top_documents_orders_by_value_then_row() -> None:
    b = SparseBatch.from_dicts([{1: 0.5}, {1: 2.0, 3: 1.0}, {}, {1: 2.0}, {3: 4.0}], dim=5)
    rows, values = top_documents(b, 1, n=10)
    assert rows.tolist() == [1, 3, 0]
    assert values.tolist() == [2.0, 2.0, 0.5]
    assert top_documents(b, 2)[0].size == 0
    with pytest.raises(InvalidArgumentError, match="latent"):
        top_documents(b, 5)


def _random_batch(rng: np.random.Generator, n: int, freqs: np.ndarray[Any, Any]) -> SparseBatch:
    dense = (rng.random((n, freqs.size)) < freqs) * rng.uniform(0.5, 2.0, (n, freqs.size))
    return SparseBatch.from_dense(dense.astype(np.float32))


def test_dataset_diff_finds_planted_differences() -> None:
    rng = np.random.default_rng(0)
    freqs = np.full(40, 0.2)
    a = _random_batch(rng, 300, freqs)
    planted = freqs.copy()
    planted[7] = 0.5  # more frequent in b
    planted[3] = 0.0  # never in b
    b = _random_batch(rng, 300, planted)
    hits = dataset_diff(a, b)
    assert {h[0] for h in hits} == {3, 7}
    for latent, fa, fb, p in hits:
        assert fa == pytest.approx(float((a.indices == latent).sum()) / 300)
        assert fb == pytest.approx(float((b.indices == latent).sum()) / 300)
        assert 0 <= p < 0.05
    assert [h[0] for h in dataset_diff(a, b, top=1)] == [hits[0][0]]
    # small counts go to Fisher's exact test: a rare latent in 6 of 40 rows against 0 of 40
    rare_a = SparseBatch.from_dicts([{0: 1.0}] * 6 + [{}] * 34, dim=2)
    rare_b = SparseBatch.from_dicts([{1: 1.0}] * 40, dim=2)
    result = dataset_diff(rare_a, rare_b)
    assert [h[0] for h in result] == [1, 0]
    assert result[1][3] == pytest.approx(fisher_exact(6, 40, 0, 40))  # rank 2 of 2: BH leaves it


def test_dataset_diff_controls_false_positives() -> None:
    runs_with_hits = 0
    freqs = np.linspace(0.01, 0.6, 30)
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        runs_with_hits += bool(dataset_diff(_random_batch(rng, 150, freqs), _random_batch(rng, 150, freqs)))
    assert runs_with_hits <= 3  # BH at 0.05 under the global null: P(any hit) <= 0.05 per run


def test_p_values_match_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    for c_a, n_a, c_b, n_b in ((3, 20, 0, 25), (1, 7, 5, 9), (0, 10, 0, 12), (12, 40, 2, 35), (30, 31, 31, 31)):
        want = stats.fisher_exact([[c_a, n_a - c_a], [c_b, n_b - c_b]]).pvalue
        assert fisher_exact(c_a, n_a, c_b, n_b) == pytest.approx(want, rel=1e-9)
    for c_a, n_a, c_b, n_b in ((30, 100, 45, 120), (500, 1000, 520, 1000)):
        p = (c_a + c_b) / (n_a + n_b)
        z = (c_a / n_a - c_b / n_b) / math.sqrt(p * (1 - p) * (1 / n_a + 1 / n_b))
        assert two_proportion_p(c_a, n_a, c_b, n_b) == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-9)
    with pytest.raises(ShapeMismatchError):
        dataset_diff(SparseBatch.empty(2, 3), SparseBatch.empty(2, 4))
