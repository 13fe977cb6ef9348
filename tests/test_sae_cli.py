"""``sparsecore sae train|eval|embed`` end to end on a tiny random Llama saved to a folder (no download)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="the sae commands need the torch extra")

import torch
from _tiny_lm import texts, tiny_llama, tiny_tokenizer
from sparsecore import sae
from sparsecore.cli import main
from sparsecore.store import load_vectors


@pytest.fixture(autouse=True)
def _restore_torch_threads() -> object:
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)  # --threads sets torch's global thread count


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama(n_layers=2).save_pretrained(d, safe_serialization=True)
    tiny_tokenizer().save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("texts") / "texts.txt"
    p.write_text("\n".join(texts(120, seed=4, lo=10, hi=30)) + "\n", encoding="utf-8")
    return p


def test_train_eval_embed(model_dir: Path, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sae"
    common = ["--model", str(model_dir), "--hook", "model.layers.0", "--context-size", "32", "--threads", "1"]
    data = ["--texts", str(corpus), "--batch-size", "256"]
    argv = ["sae", "train", *common, *data, "--arch", "topk", "--k", "4", "--expansion", "2", "--tokens", "3000"]
    assert main([*argv, "--output", str(out)]) == 0
    assert "trained topk SAE (32 -> 64)" in capsys.readouterr().out
    trained = sae.load(out)
    assert isinstance(trained, sae.TopKSAE)
    assert (trained.d_in, trained.d_sae, trained.k) == (32, 64, 4)
    history = json.loads((out / "training_history.json").read_text(encoding="utf-8"))
    assert history["history"][-1]["tokens"] == 3000  # over several passes of the texts

    metrics_file = tmp_path / "m.json"
    evaluate = ["sae", "eval", *common, *data, "--sae", str(out), "--loss-texts", "8", "--json", str(metrics_file)]
    assert main(evaluate) == 0
    printed = capsys.readouterr().out
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    assert 0.0 <= metrics["fvu"] < 1.0
    assert metrics["l0"] == pytest.approx(4.0)
    assert "ce_recovered" in metrics
    assert f"{metrics['fvu']:.4f}" in printed

    docs = tmp_path / "docs.tsv"
    docs.write_text("a\tthe cat sat on the hill\nb\tthe dog ran to the river\n", encoding="utf-8")
    vec = tmp_path / "docs.vec"
    assert main(["sae", "embed", *common, "--sae", str(out), "--input", str(docs), "--output", str(vec)]) == 0
    batch, ids, info = load_vectors(vec)
    assert ids == ["a", "b"]
    assert batch.dim == 64
    assert info["encoder"] == "sae"
    assert batch.n_rows == 2
    assert batch.nnz > 0
    assert np.all(batch.data > 0)


def test_bad_arguments_are_reported(model_dir: Path, corpus: Path, tmp_path: Path) -> None:
    base = ["sae", "train", "--model", str(model_dir), "--texts", str(corpus), "--output", str(tmp_path / "o")]
    assert main([*base, "--hook", "model.layers.9"]) == 2  # no such module
    assert main([*base, "--hook", "model.layers.0", "--k", "0"]) == 2
    assert main([*base[:3], str(tmp_path / "missing"), *base[4:]]) == 2
    assert not (tmp_path / "o").exists()
