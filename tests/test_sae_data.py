"""sparsecore.sae._data: ActivationSource against direct forward passes of a tiny random Llama, shuffle, cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _tiny_lm import texts, tiny_llama, tiny_tokenizer
from sparsecore.exceptions import DTypeError, IndexFormatError, InvalidArgumentError, ShapeMismatchError
from sparsecore.sae._data import ActivationSource, shuffled_batches, tokenize_windows
from torch import Tensor

HOOK = "model.layers.1"


@pytest.fixture(scope="module")
def model() -> Any:
    return tiny_llama(n_layers=3)


@pytest.fixture(scope="module")
def tok() -> Any:
    return tiny_tokenizer()


def _direct(model: Any, tok: Any, window_ids: list[list[int]]) -> Tensor:
    """Layer-1 outputs of every window run alone, without its BOS position, concatenated."""
    rows = []
    with torch.no_grad():
        for w in window_ids:
            out = model(torch.tensor([w]), output_hidden_states=True)
            rows.append(out.hidden_states[2][0, 1:])  # hidden_states[i + 1] is the output of layer i
    return torch.cat(rows)


def _sorted_rows(t: Tensor) -> Tensor:
    """Rows in lexicographic order (to compare multisets of rows)."""
    order = np.lexsort(t.numpy().T[::-1])
    return t[torch.from_numpy(order)]


def test_unshuffled_batches_equal_direct_forward_passes(model: Any, tok: Any) -> None:
    docs = texts(7, seed=1)
    src = ActivationSource(model, tok, docs, HOOK, context_size=64, batch_size=16, text_batch_size=3,
                           shuffle_buffer=0, drop_last=False)  # fmt: skip
    batches = list(src)
    assert all(b.shape == (16, 32) for b in batches[:-1])
    assert batches[-1].shape[0] <= 16
    got = torch.cat(batches)
    want = _direct(model, tok, [tok(t)["input_ids"] for t in docs])
    assert src.n_tokens == got.shape[0] == want.shape[0] == sum(len(t.split()) for t in docs)
    assert torch.allclose(got, want, atol=1e-5)
    assert src.d_in == 32


def test_long_texts_become_windows_starting_with_bos(model: Any, tok: Any) -> None:
    doc = " ".join(["cat dog bird fish"] * 3)  # 12 words
    windows = tokenize_windows(tok, [doc, ""], context_size=5)
    assert [len(w) for _, w in windows] == [5, 5, 5]
    assert all(w[0] == tok.bos_token_id and t == 0 for t, w in windows)
    src = ActivationSource(model, tok, [doc], HOOK, context_size=5, batch_size=4, shuffle_buffer=0)
    got = torch.cat(list(src))
    assert torch.allclose(got, _direct(model, tok, [w for _, w in windows]), atol=1e-5)


def test_shuffle_is_a_deterministic_permutation(model: Any, tok: Any) -> None:
    docs = texts(12, seed=2)
    kw: dict[str, Any] = {"context_size": 32, "batch_size": 8, "shuffle_buffer": 32}
    src = ActivationSource(model, tok, docs, HOOK, **kw)
    first, second = list(src), list(src)
    again = list(ActivationSource(model, tok, docs, HOOK, **kw))
    other = list(ActivationSource(model, tok, docs, HOOK, **kw, seed=1))
    assert all(b.shape == (8, 32) for b in first)
    assert len(first) == src.n_tokens // 8 == src.n_batches
    for a, b, c in zip(first, second, again, strict=True):
        assert torch.equal(a, b)
        assert torch.equal(a, c)
    plain = torch.cat(list(ActivationSource(model, tok, docs, HOOK, **{**kw, "shuffle_buffer": 0}, drop_last=False)))
    assert not torch.equal(torch.cat(first), plain[: len(first) * 8])  # actually shuffled
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    # shuffle_buffer holds only 32 rows, yet with drop_last=False every row comes out exactly once
    everything = torch.cat(list(ActivationSource(model, tok, docs, HOOK, **kw, drop_last=False)))
    assert torch.equal(_sorted_rows(everything), _sorted_rows(plain))


def test_shuffle_does_not_depend_on_chunking() -> None:
    rows = torch.randn(103, 4, generator=torch.Generator().manual_seed(0))
    want = list(shuffled_batches(iter([rows]), 10, 40, seed=5, drop_last=False))
    for sizes in ([1] * 103, [50, 53], [7, 0, 96]):
        chunks = iter(torch.split(rows, sizes))
        got = list(shuffled_batches(chunks, 10, 40, seed=5, drop_last=False))
        assert len(got) == len(want) == 11
        assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    assert torch.equal(_sorted_rows(torch.cat(want)), _sorted_rows(rows))


def test_the_forward_stops_after_the_hooked_layer(model: Any, tok: Any) -> None:
    calls = {"model.layers.2": 0, "lm_head": 0, "model.layers.1": 0}
    handles = [
        model.get_submodule(n).register_forward_hook(lambda *_a, n=n: calls.__setitem__(n, calls[n] + 1)) for n in calls
    ]
    try:
        n = len(list(ActivationSource(model, tok, texts(5), HOOK, batch_size=4, text_batch_size=2)))
    finally:
        for h in handles:
            h.remove()
    assert n > 0
    assert calls == {"model.layers.2": 0, "lm_head": 0, "model.layers.1": 3}


def test_cache_is_read_instead_of_running_the_model(
    model: Any, tok: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = texts(9, seed=3)
    kw: dict[str, Any] = {"context_size": 16, "batch_size": 8, "shuffle_buffer": 16, "cache_dir": tmp_path}
    first = list(ActivationSource(model, tok, docs, HOOK, **kw))
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".bin", ".json"]

    def broken(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("the model ran")

    monkeypatch.setattr(model, "forward", broken)
    cached = ActivationSource(model, tok, docs, HOOK, **kw)
    again = list(cached)
    assert cached.n_tokens == sum(len(t.split()) for t in docs)
    assert cached.d_in == 32
    assert len(again) == len(first)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    # another hook, other texts or another model are other keys: the model runs (and fails here)
    for other in (
        ActivationSource(model, tok, docs, "model.layers.0", **kw),
        ActivationSource(model, tok, docs[:-1], HOOK, **kw),
        ActivationSource(tiny_llama(n_layers=3, seed=1), tok, docs, HOOK, **kw),
    ):
        if other.model is not model:
            monkeypatch.setattr(other.model, "forward", broken)
        with pytest.raises(AssertionError, match="the model ran"):
            list(other)
    assert len(list(tmp_path.iterdir())) == 2  # nothing half-written stays behind


def test_a_damaged_cache_is_refused(model: Any, tok: Any, tmp_path: Path) -> None:
    docs = texts(4, seed=4)
    kw: dict[str, Any] = {"batch_size": 4, "cache_dir": tmp_path}
    list(ActivationSource(model, tok, docs, HOOK, **kw))
    manifest = next(tmp_path.glob("*.json"))
    data = next(tmp_path.glob("*.bin"))
    raw = data.read_bytes()
    data.write_bytes(raw[:-4])
    with pytest.raises(IndexFormatError, match="bytes"):
        list(ActivationSource(model, tok, docs, HOOK, **kw))
    data.write_bytes(raw)
    doc = json.loads(manifest.read_text())
    doc["payload"]["n_tokens"] += 1
    manifest.write_text(json.dumps(doc))
    with pytest.raises(IndexFormatError, match="checksum"):
        list(ActivationSource(model, tok, docs, HOOK, **kw))


def test_bfloat16_cache_round_trips(model: Any, tok: Any, tmp_path: Path) -> None:
    kw: dict[str, Any] = {"batch_size": 4, "cache_dir": tmp_path, "dtype": torch.bfloat16, "shuffle_buffer": 0}
    first = list(ActivationSource(model, tok, texts(3), HOOK, **kw))
    again = list(ActivationSource(model, tok, texts(3), HOOK, **kw))
    assert first[0].dtype == torch.bfloat16
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


def test_from_tensor_and_ndarray() -> None:
    acts = np.random.default_rng(0).standard_normal((50, 6)).astype(np.float32)
    src = ActivationSource.from_tensor(acts, 16, shuffle_buffer=0)
    batches = list(src)
    assert src.n_tokens == 50
    assert src.d_in == 6
    assert len(batches) == 3 == src.n_batches
    assert torch.equal(torch.cat(batches), torch.from_numpy(acts[:48]))
    shuffled = torch.cat(list(ActivationSource.from_tensor(torch.from_numpy(acts), 10, seed=3)))
    assert torch.equal(_sorted_rows(shuffled), _sorted_rows(torch.from_numpy(acts)))
    assert next(iter(ActivationSource.from_tensor(acts, 16, dtype=torch.float64))).dtype == torch.float64
    with pytest.raises(ShapeMismatchError):
        ActivationSource.from_tensor(acts[0], 4)
    with pytest.raises(DTypeError):
        ActivationSource.from_tensor([[1.0]], 4)  # type: ignore[arg-type]


def test_arguments_are_checked(model: Any, tok: Any) -> None:
    with pytest.raises(InvalidArgumentError, match=r"hook: .*model\.layers\.1"):
        ActivationSource(model, tok, ["a"], "model.layers.9x")
    with pytest.raises(InvalidArgumentError, match="shuffle_buffer"):
        ActivationSource(model, tok, ["a"], HOOK, batch_size=8, shuffle_buffer=4)
    with pytest.raises(InvalidArgumentError, match="context_size"):
        ActivationSource(model, tok, ["a"], HOOK, context_size=1)
    with pytest.raises(DTypeError, match="dtype"):
        ActivationSource(model, tok, ["a"], HOOK, dtype=torch.int32)
    with pytest.raises(DTypeError, match="single str"):
        ActivationSource(model, tok, "a text", HOOK)


def test_the_first_position_is_dropped_also_when_the_tokenizer_adds_no_bos(model: Any) -> None:
    """SmolLM2's tokenizer adds no BOS: its first token is the model's attention sink and is left out too."""
    from _tiny_lm import VOCAB
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    no_bos = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", pad_token="<pad>")  # type: ignore[no-untyped-call]
    docs = texts(5, seed=2)
    windows = [no_bos(t)["input_ids"] for t in docs]
    assert all(w[0] != 1 for w in windows)  # no "<s>" in front
    src = ActivationSource(model, no_bos, docs, HOOK, context_size=64, batch_size=8, shuffle_buffer=0,
                           drop_last=False)  # fmt: skip
    got = torch.cat(list(src))
    assert src.n_tokens == got.shape[0] == sum(len(w) - 1 for w in windows)
    assert torch.allclose(got, _direct(model, no_bos, windows), atol=1e-5)
    kept = ActivationSource(model, no_bos, docs, HOOK, context_size=64, batch_size=8, shuffle_buffer=0,
                            drop_last=False, drop_bos=False)  # fmt: skip
    assert kept.n_tokens == sum(len(w) for w in windows)
