"""The SAE benchmark's common evaluation (benches/_sae_eval.py) against a direct dense torch computation."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benches"))

from _sae_eval import evaluate, topk_reconstruct  # noqa: E402


def _tiny(seed: int, d_in: int = 6, d_sae: int = 20) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {
        "w_enc": rng.standard_normal((d_in, d_sae)).astype(np.float32),
        "b_enc": (rng.standard_normal(d_sae) - 0.5).astype(np.float32),
        "w_dec": rng.standard_normal((d_sae, d_in)).astype(np.float32),
        "b_dec": rng.standard_normal(d_in).astype(np.float32),
    }


def _direct(x: np.ndarray[Any, Any], w: dict[str, Any], k: int) -> tuple[float, float, float]:
    xt = torch.from_numpy(x).double()
    pre = xt @ torch.from_numpy(w["w_enc"]).double() + torch.from_numpy(w["b_enc"]).double()
    values, indices = pre.topk(k, dim=1)
    codes = torch.zeros_like(pre).scatter(1, indices, values.relu())
    recon = codes @ torch.from_numpy(w["w_dec"]).double() + torch.from_numpy(w["b_dec"]).double()
    fvu = float((xt - recon).pow(2).sum() / (xt - xt.mean(dim=0)).pow(2).sum())
    l0 = float((codes != 0).sum(dim=1).double().mean())
    dead = float(((codes != 0).sum(dim=0) == 0).double().mean())
    return fvu, l0, dead


@pytest.mark.parametrize(("seed", "k", "batch"), [(0, 3, 7), (1, 5, 1000), (2, 1, 1)])
def test_matches_dense_torch(seed: int, k: int, batch: int) -> None:
    w = _tiny(seed)
    x = np.random.default_rng(seed + 10).standard_normal((37, 6)).astype(np.float32) * 2 + 1
    got = evaluate(x, topk_reconstruct(w, k), d_sae=20, batch=batch)
    fvu, l0, dead = _direct(x, w, k)
    assert got["fvu"] == pytest.approx(fvu, rel=1e-5)
    assert got["l0"] == pytest.approx(l0)
    assert got["dead_fraction"] == pytest.approx(dead)
    assert got["n_dead"] == round(dead * 20)
    assert got["n_tokens"] == 37
    assert 0 < got["l0"] <= k


def test_perfect_reconstruction_and_all_dead() -> None:
    x = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    identity = {
        "w_enc": np.zeros((4, 8), np.float32),
        "b_enc": -np.ones(8, np.float32),  # every pre-activation negative: no code fires
        "w_dec": np.zeros((8, 4), np.float32),
        "b_dec": x.mean(axis=0),
    }
    got = evaluate(x, topk_reconstruct(identity, 2), d_sae=8)
    assert got["fvu"] == pytest.approx(1.0, rel=1e-5)  # the mean predicts nothing of the variance
    assert got["l0"] == 0
    assert got["dead_fraction"] == 1.0


def test_no_rows() -> None:
    with pytest.raises(ValueError, match="no rows"):
        evaluate(np.zeros((0, 4), np.float32), topk_reconstruct(_tiny(0, 4, 8), 2), d_sae=8)
