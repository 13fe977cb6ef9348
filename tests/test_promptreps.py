"""PromptRepsEncoder against a naive forward pass of each prompt, written here, on a tiny random Llama.

The oracle feeds one prompt (no padding) to the model and reads the next-token logits and the last hidden state at
its final position; the sparse vector is ``log(1 + relu(logit))`` over the text's own token ids, top ``k`` of them,
the dense vector the hidden state normalised. The encoder's batching (left padding), truncation and prompts must
reproduce it. The tokenizer is a tiny BERT WordPiece one built from a vocab.txt (no chat template: plain prompt).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers as _transformers
from numpy.typing import NDArray
from sparsecore.encoders.promptreps import PromptRepsEncoder
from sparsecore.exceptions import DTypeError, InvalidArgumentError, TruncationWarning
from sparsecore.sparse import SparseBatch

# transformers' own annotations are partial (e.g. the "Fast" tokenizer aliases of version 5): use it untyped.
transformers: Any = _transformers

F32 = NDArray[np.float32]

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = """
query passage use one word to represent the in a retrieval task make sure your is lowercase
river bridge tower paris france king queen city train music film night water stone garden school song book light
dark cold warm blue green red mountain island road old new ship war love house story plot actor people world time
year day life man woman child family friend money power game team player coach season match goal ball field
""".split()  # noqa: SIM905 (a word list reads better as text)
PIECES = ["##s", "##ed", "##ing", "##ly", "##er", "##a", "##e", "##o", "##n", "##t"]
VOCAB: list[str] = list(
    dict.fromkeys(SPECIALS + list(".,!?\"':;-()") + list("abcdefghijklmnopqrstuvwxyz") + WORDS + PIECES)
)
TEXT_WORDS = sorted(set(WORDS[16:]))  # content words, not the prompt's own

TEXTS = [
    "the river under the old bridge",
    "King",
    "a queen came to the city by train and the people sang songs of love in the garden at night",
    "Music, film; STONE!",
    "zebra",
]


def document_prompt(text: str) -> str:
    return (
        f'Passage: "{text}"\nUse one word to represent the passage in a retrieval task. '
        'Make sure your word is in lowercase.\nThe word is "'
    )


def query_prompt(text: str) -> str:
    return (
        f'Query: "{text}"\nUse one word to represent the query in a retrieval task. '
        'Make sure your word is in lowercase.\nThe word is "'
    )


PROMPTS = {"document": document_prompt, "query": query_prompt}


@pytest.fixture(scope="session")
def tok(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("vocab")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    # from_pretrained(folder): transformers 5 ignores BertTokenizerFast(vocab_file=...).
    t = transformers.BertTokenizerFast.from_pretrained(str(folder))
    assert len(t) == len(VOCAB)
    assert not getattr(t, "chat_template", None)
    return t


@pytest.fixture(scope="session")
def llama() -> Any:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
    )
    return transformers.LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="session")
def gpt2() -> Any:
    """Absolute position embeddings: left padding must not shift the real tokens' positions."""
    torch.manual_seed(1)
    cfg = transformers.GPT2Config(
        vocab_size=len(VOCAB),
        n_embd=32,
        n_layer=1,
        n_head=2,
        n_positions=256,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    return transformers.GPT2LMHeadModel(cfg).eval()


@pytest.fixture(scope="session", params=["llama", "gpt2"])
def lm(request: pytest.FixtureRequest, llama: Any, gpt2: Any) -> Any:
    return llama if request.param == "llama" else gpt2


def encoder(llama: Any, tok: Any, **kwargs: Any) -> PromptRepsEncoder:
    return PromptRepsEncoder(llama, tok, **kwargs)


def own_ids(tok: Any, text: str) -> set[int]:
    return set(tok(text, add_special_tokens=False)["input_ids"]) | set(
        tok(text.lower(), add_special_tokens=False)["input_ids"]
    )


def naive(llama: Any, tok: Any, text: str, kind: str) -> tuple[F32, F32]:
    """(log1p(relu(next-token logits)), normalised last hidden state) of one prompt, no padding."""
    ids = tok(PROMPTS[kind](text), add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = llama(input_ids=ids, output_hidden_states=True)
    act: F32 = torch.log1p(torch.relu(out.logits[0, -1].float())).numpy()
    last = out.hidden_states[-1][0, -1].float()
    dense: F32 = (last / last.norm()).numpy()
    return act, dense


def expected_sparse(act: F32, own: set[int], top_k: int) -> dict[int, float]:
    cand = sorted((i for i in own if act[i] > 0), key=lambda i: (-act[i], i))[:top_k]
    return {i: float(act[i]) for i in cand}


def as_dict(batch: SparseBatch, r: int) -> dict[int, float]:
    idx, val = batch.row(r)
    return dict(zip(idx.tolist(), val.tolist(), strict=True))


# ---------------------------------------------------------------------------------------------------------------


def test_prompts_are_the_plain_paper_prompts(llama: Any, tok: Any) -> None:
    enc = encoder(llama, tok)
    for kind, make in PROMPTS.items():
        assert enc.prompt("the river", kind) == make("the river")  # type: ignore[arg-type]
    assert enc.prompt("x", "query") != enc.prompt("x", "document")


@pytest.mark.parametrize("kind", ["document", "query"])
@pytest.mark.parametrize("top_k", [1, 3, 128])
def test_sparse_and_dense_equal_a_naive_forward_pass(lm: Any, tok: Any, kind: str, top_k: int) -> None:
    enc = encoder(lm, tok, top_k=top_k, batch_size=8)
    sparse, dense = enc.encode(TEXTS, kind)  # type: ignore[arg-type]
    assert sparse.shape == (len(TEXTS), len(VOCAB))
    assert dense.shape == (len(TEXTS), 32)
    assert dense.dtype == np.float32
    for r, text in enumerate(TEXTS):
        act, want_dense = naive(lm, tok, text, kind)
        own = own_ids(tok, text)
        got = as_dict(sparse, r)
        assert set(got) <= own, "a term that is not in the text"
        assert len(got) <= top_k
        assert np.all(np.asarray(list(got.values())) > 0)
        want = expected_sparse(act, own, top_k)
        assert set(got) == set(want)
        np.testing.assert_allclose([got[i] for i in want], list(want.values()), rtol=0, atol=1e-4)
        np.testing.assert_allclose(dense[r], want_dense, rtol=0, atol=1e-4)
        assert np.linalg.norm(dense[r]) == pytest.approx(1.0, abs=1e-5)


def test_own_tokens_include_the_lower_cased_text(llama: Any, tok: Any) -> None:
    """Upper-case text: its own ids are those of the text as written and lower-cased (the BERT tokenizer lowers)."""
    enc = encoder(llama, tok, top_k=128)
    _, own = enc._cut("Music, FILM; Stone!")
    assert set(own) == own_ids(tok, "music, film; stone!")


def test_batching_and_left_padding_do_not_change_the_results(lm: Any, tok: Any) -> None:
    texts = [*TEXTS, " ".join(TEXT_WORDS[:30]), "a", "the king of the island"]
    lengths = {len(tok(t)["input_ids"]) for t in texts}
    assert len(lengths) >= 5  # batches mix lengths, so prompts are left-padded
    one_s, one_d = encoder(lm, tok, batch_size=1).encode(texts)
    three_s, three_d = encoder(lm, tok, batch_size=3).encode(texts)
    np.testing.assert_allclose(one_d, three_d, rtol=0, atol=1e-4)
    np.testing.assert_allclose(one_s.to_dense(), three_s.to_dense(), rtol=0, atol=1e-4)
    np.testing.assert_array_equal(one_s.indptr, three_s.indptr)
    assert tok.padding_side == "right"  # the caller's tokenizer is restored after encoding


def test_query_and_document_differ(llama: Any, tok: Any) -> None:
    enc = encoder(llama, tok)
    q_sparse, q_dense = enc.encode(TEXTS[:2], "query")
    d_sparse, d_dense = enc.encode(TEXTS[:2], "document")
    assert not np.allclose(q_dense, d_dense)
    assert enc.encode_query(TEXTS[:2]).equals(q_sparse)
    assert enc.encode_document(TEXTS[:2]).equals(d_sparse)
    for r, text in enumerate(TEXTS[:2]):
        np.testing.assert_allclose(q_dense[r], naive(llama, tok, text, "query")[1], rtol=0, atol=1e-4)


def test_truncation_counts_long_texts_and_cuts_them(llama: Any, tok: Any) -> None:
    max_length = 8
    long_a = " ".join(TEXT_WORDS[:12])
    long_b = " ".join(TEXT_WORDS[12:30])
    exact = " ".join(TEXT_WORDS[40:48])
    texts = ["the river", long_a, exact, long_b]
    n_long = sum(len(tok(t, add_special_tokens=False)["input_ids"]) > max_length for t in texts)
    assert n_long == 2
    enc = encoder(llama, tok, max_length=max_length, top_k=128)
    assert enc.n_truncated == 0
    with pytest.warns(TruncationWarning, match=f"{n_long} of 4 texts"):
        sparse, dense = enc.encode(texts)
    assert enc.n_truncated == n_long
    enc.encode(texts[:1])
    assert enc.n_truncated == 0  # counts the last call only
    # A cut text is encoded as its first max_length tokens, and only those are its own terms.
    cut = " ".join(TEXT_WORDS[:8])
    act, want_dense = naive(llama, tok, cut, "document")
    assert as_dict(sparse, 1) == pytest.approx(expected_sparse(act, own_ids(tok, cut), 128), abs=1e-4)
    np.testing.assert_allclose(dense[1], want_dense, rtol=0, atol=1e-4)
    assert not set(as_dict(sparse, 1)) & (own_ids(tok, long_a) - own_ids(tok, cut))


def test_empty_and_bad_arguments(llama: Any, tok: Any) -> None:
    enc = encoder(llama, tok)
    sparse, dense = enc.encode([])
    assert sparse.shape == (0, len(VOCAB))
    assert dense.shape == (0, 32)
    with pytest.raises(InvalidArgumentError, match="kind"):
        enc.encode(["the river"], "passage")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="kind"):
        enc.prompt("the river", "passage")  # type: ignore[arg-type]
    with pytest.raises(DTypeError):
        enc.encode("the river")
    with pytest.raises(DTypeError):
        enc.encode(["the river", None])  # type: ignore[list-item]
    for kwargs in ({"top_k": 0}, {"max_length": 0}, {"batch_size": 0}, {"top_k": True}, {"batch_size": 1.5}):
        with pytest.raises(InvalidArgumentError):
            encoder(llama, tok, **kwargs)
    with pytest.raises(DTypeError):
        PromptRepsEncoder(object(), tok)


def test_decode_lists_the_heaviest_text_tokens_first(llama: Any, tok: Any) -> None:
    enc = encoder(llama, tok, top_k=4)
    sparse = enc.encode_document(TEXTS[:3])
    decoded = enc.decode(sparse, top_k=2)
    for r, row in enumerate(decoded):
        weights = [w for _, w in row]
        assert weights == sorted(weights, reverse=True)
        assert {VOCAB.index(t) for t, _ in row} <= own_ids(tok, TEXTS[r])
    assert enc.dim == len(VOCAB)
    assert "PromptRepsEncoder(LlamaForCausalLM" in repr(enc)


def test_tokenizer_without_pad_token_gets_one(llama: Any, tmp_path: Path) -> None:
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    t = transformers.BertTokenizerFast.from_pretrained(str(tmp_path))
    t.pad_token = None
    enc = encoder(llama, t)
    assert t.pad_token is not None
    sparse, _ = enc.encode(TEXTS[:3])
    assert sparse.n_rows == 3
