"""The LLM benchmark's perplexity scoring (benches/bench_llm.py) on a tiny random Llama."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benches"))

from _tiny_lm import tiny_llama  # noqa: E402
from bench_llm import CONT, PREFIX, nll_coreinfer, nll_dense  # noqa: E402
from sparsecore.llm import CoreNeurons  # noqa: E402


@pytest.fixture(scope="module")
def model() -> Any:
    return tiny_llama(n_layers=2)


@pytest.fixture(scope="module")
def ids() -> Any:
    return torch.randint(3, 100, (1, PREFIX + CONT), generator=torch.Generator().manual_seed(0))


def test_coreinfer_keeping_every_neuron_scores_like_the_dense_model(model: Any, ids: Any) -> None:
    dense, n = nll_dense(torch, model, ids)
    full, m = nll_coreinfer(torch, model, CoreNeurons(model, 0.2, 1.0), ids)
    assert n == m == CONT
    assert full == pytest.approx(dense, rel=1e-5)


def test_coreinfer_scores_the_continuation_with_the_sliced_ffns(model: Any, ids: Any) -> None:
    """Oracle: one cache-free forward whose FFNs zero the non-core neurons at the continuation positions only."""
    core = CoreNeurons(model, 0.2, 0.5)
    got, _ = nll_coreinfer(torch, model, core, ids)
    assert core.core is not None
    handles = []
    for name, idx in core.core.items():
        keep = torch.zeros(64, dtype=torch.bool)
        keep[idx] = True

        def zero_late(_m: Any, a: tuple[Any, ...], keep: Any = keep) -> tuple[Any]:
            x = a[0].clone()
            x[:, PREFIX:] *= keep
            return (x,)

        handles.append(model.get_submodule(name).down_proj.register_forward_pre_hook(zero_late))
    try:
        want, _ = nll_dense(torch, model, ids)
    finally:
        for h in handles:
            h.remove()
    assert got == pytest.approx(want, rel=1e-5)
    assert abs(got - nll_dense(torch, model, ids)[0]) > 1e-3  # the slicing does change the scores
