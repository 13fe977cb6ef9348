"""Activations of a language model's module as a stream of shuffled ``(batch_size, d_in)`` batches, with a cache.

:class:`ActivationSource` tokenises texts into windows of ``context_size`` tokens (a long text becomes several
windows, each starting with the tokenizer's BOS token when it adds one; a text without tokens gives none), runs
the model on ``text_batch_size`` windows at a time with a :func:`sparsecore.llm.hooks.capture` hook that stops
the forward right after the hooked module, keeps the activations of real tokens (padding dropped via the
attention mask, and the BOS position when ``drop_bos``), and streams them through a shuffle buffer.

Shuffling is deterministic: it depends only on the seed and the sequence of activation rows (not on how they
were chunked), and every iteration replays the same order. The buffer holds ``shuffle_buffer`` rows; whenever it
is full it is permuted and about half of it is emitted as batches, the rest stays mixed with the rows that come
next; at the end the remainder is permuted and emitted.

Cache: with ``cache_dir``, the first complete pass writes the activation rows (in model order, before shuffling)
to ``activations-<key>.bin``, a raw little-endian ``(n_tokens, d_in)`` array written to a temporary and renamed
when the pass completes, and then ``activations-<key>.json``, a checked manifest (:func:`sparsecore._io.
write_checked_json`: format, version, SHA-256) giving the key, shape and dtype. ``key`` is a SHA-256 of the hook,
the token ids of every window, ``context_size``, ``drop_bos``, the dtype and a fingerprint of the model (class,
name, config, parameter names, shapes and a sample of their values). A later source with the same key memory-maps
the file and never runs the model; a manifest that does not match its data file raises
:class:`~sparsecore.exceptions.IndexFormatError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from sparsecore._io import (
    clean_stale_temporaries,
    fsync_dir,
    read_checked_json,
    temporary_name,
    write_checked_json,
)
from sparsecore._progress import progress as _progress_bar
from sparsecore._progress import want_progress
from sparsecore._validate import check_bool, check_int, check_seed, check_texts, nonnegative_int, positive_int
from sparsecore.exceptions import DTypeError, IndexFormatError, InvalidArgumentError, ShapeMismatchError
from sparsecore.llm.hooks import capture, resolve_module

__all__ = [
    "ActivationSource",
    "Window",
    "model_fingerprint",
    "pad_windows",
    "shuffled_batches",
    "tokenize_windows",
]

# Rows per chunk read from a cache file or a tensor (the shuffle does not depend on it).
_CHUNK_ROWS = 8192
# Default shuffle buffer, in batches: 8 batches mix tokens of ~8x more texts than one batch holds.
_DEFAULT_BUFFER_BATCHES = 8
_CACHE_FORMAT = "sparsecore.activations"
_CACHE_VERSION = 1
# Values sampled from each end of every parameter for the model fingerprint (a full hash would read all weights).
_FINGERPRINT_VALUES = 16

_NP_DTYPES: dict[torch.dtype, np.dtype[Any]] = {
    torch.float32: np.dtype(np.float32),
    torch.float64: np.dtype(np.float64),
    torch.float16: np.dtype(np.float16),
    torch.bfloat16: np.dtype(np.uint16),  # stored as raw bits
}

Window = tuple[int, list[int]]
"""A window of token ids and the index of the text it comes from."""


def tokenize_windows(tokenizer: Any, texts: Sequence[str], context_size: int) -> list[Window]:
    """Split every text's token ids into windows of at most ``context_size`` tokens.

    When the tokenizer starts a text with its BOS token, every window starts with it (so each window looks like
    the start of a text to the model) and holds ``context_size - 1`` other tokens. A text with no tokens (other than
    BOS) gives no window.

    Parameters
    ----------
    tokenizer
        A transformers tokenizer (callable on a list of texts, returning ``input_ids``).
    texts
        The texts.
    context_size
        Window length in tokens (>= 2).

    Returns
    -------
    list of (text index, token ids)

    Raises
    ------
    InvalidArgumentError
        ``context_size`` is not an integer >= 2.
    """
    size = check_int(context_size, "context_size", low=2)
    if not texts:
        return []
    ids_per_text = tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"]
    bos = getattr(tokenizer, "bos_token_id", None)
    out: list[Window] = []
    for t, ids in enumerate(ids_per_text):
        ids = list(ids)
        if not ids:
            continue
        if bos is not None and ids[0] == bos:
            body = ids[1:]
            for start in range(0, len(body), size - 1):
                out.append((t, [bos, *body[start : start + size - 1]]))
        else:
            out.extend((t, ids[start : start + size]) for start in range(0, len(ids), size))
    return out


def pad_windows(windows: Sequence[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Right-padded ``(input_ids, attention_mask)`` of ``windows``."""
    length = max(len(w) for w in windows)
    ids = torch.full((len(windows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(windows), length), dtype=torch.long)
    for i, w in enumerate(windows):
        ids[i, : len(w)] = torch.tensor(w, dtype=torch.long)
        mask[i, : len(w)] = 1
    return ids, mask


def _keep_mask(windows: Sequence[list[int]], mask: Tensor, bos: int | None, drop_bos: bool) -> Tensor:
    """Boolean mask of the positions whose activations are kept: real tokens, without a leading BOS if asked."""
    keep = mask != 0
    if drop_bos:  # BOS, or the first token where the tokenizer adds none: the model's attention sink
        keep[:, 0] = False
    return keep


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _check_dtype(dtype: object) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or dtype not in _NP_DTYPES:
        raise DTypeError(f"dtype: must be torch.float32, float64, float16 or bfloat16, got {dtype!r}")
    return dtype


def model_fingerprint(model: nn.Module) -> str:
    """A SHA-256 of a model's class, name, config, parameter names, shapes, dtypes and a sample of values."""
    h = hashlib.sha256()
    h.update(type(model).__qualname__.encode())
    config = getattr(model, "config", None)
    if config is not None:
        h.update(str(getattr(config, "_name_or_path", "")).encode())
        to_json = getattr(config, "to_json_string", None)
        h.update((to_json() if callable(to_json) else repr(config)).encode())
    with torch.no_grad():
        for name, p in model.named_parameters():
            flat = p.detach().reshape(-1)
            sample = torch.cat([flat[:_FINGERPRINT_VALUES], flat[-_FINGERPRINT_VALUES:]]).to("cpu", torch.float64)
            h.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
            h.update(sample.numpy().tobytes())
    return h.hexdigest()


def _split(rows: Tensor, size: int) -> list[Tensor]:
    return [rows[i : i + size] for i in range(0, rows.shape[0], size)]


def shuffled_batches(
    chunks: Iterator[Tensor], batch_size: int, buffer_size: int, seed: int, drop_last: bool
) -> Iterator[Tensor]:
    """Rows of ``chunks`` as ``(batch_size, d)`` batches through a shuffle buffer of ``buffer_size`` rows.

    The order depends only on ``seed`` and the rows (not on the chunking). ``buffer_size == 0`` keeps the order.
    The last ``n % batch_size`` rows are dropped when ``drop_last``, else yielded as a smaller batch.
    """
    gen = torch.Generator().manual_seed(seed)
    emit = batch_size * max(1, (buffer_size // 2) // batch_size)
    pending: list[Tensor] = []
    n_pending = 0
    for chunk in chunks:
        pending.append(chunk)
        n_pending += chunk.shape[0]
        if buffer_size == 0:
            if n_pending >= batch_size:
                rows = torch.cat(pending)
                n_full = (n_pending // batch_size) * batch_size
                yield from _split(rows[:n_full], batch_size)
                pending, n_pending = [rows[n_full:]], n_pending - n_full
            continue
        while n_pending >= buffer_size:
            rows = torch.cat(pending)
            full = rows[:buffer_size][torch.randperm(buffer_size, generator=gen).to(rows.device)]
            yield from _split(full[:emit], batch_size)
            pending, n_pending = [full[emit:], rows[buffer_size:]], n_pending - emit
    if n_pending == 0:
        return
    rows = torch.cat(pending)
    if buffer_size:
        rows = rows[torch.randperm(n_pending, generator=gen).to(rows.device)]
    n_full = (n_pending // batch_size) * batch_size
    yield from _split(rows[:n_full], batch_size)
    if not drop_last and n_full < n_pending:
        yield rows[n_full:]


class ActivationSource:
    """Shuffled ``(batch_size, d_in)`` batches of a language model's activations at one module, re-iterable.

    Parameters
    ----------
    model
        A transformers causal LM (any ``torch.nn.Module`` taking ``input_ids`` and ``attention_mask``).
    tokenizer
        Its tokenizer.
    texts
        The texts (a sequence of str).
    hook
        The module whose output tensor is recorded (see :func:`sparsecore.llm.hooks.resolve_module`).
    context_size
        Tokens per window (>= 2); longer texts are split into several windows.
    batch_size
        Activation rows (tokens) per yielded batch.
    text_batch_size
        Windows per forward pass.
    shuffle_buffer
        Rows held for shuffling (0: no shuffling; otherwise >= ``batch_size``; default 8 batches).
    seed
        Seed of the shuffle; every iteration yields the same batches.
    cache_dir
        Folder of the activation cache (see the module docs); None for no cache.
    drop_bos
        Drop each window's first position: the BOS token, or, where the tokenizer adds none (SmolLM2's), the first
        token, which the model treats the same way (an attention sink whose activation norm is ~100x the median;
        left in, such rows hold most of the variance and an SAE fits little else).
    dtype
        Dtype of the yielded batches (and of the cache): float32, float64, float16 or bfloat16.
    device
        Device of the yielded batches (default: the model's).
    progress
        Progress bar over the forward passes (None: only on a terminal).
    drop_last
        Drop the last incomplete batch (default), or yield it.

    Raises
    ------
    InvalidArgumentError
        An argument outside its domain or an unknown ``hook``.
    DTypeError
        ``texts`` is not a sequence of str, or an unsupported ``dtype``.

    Examples
    --------
    >>> source = ActivationSource(model, tokenizer, texts, hook="model.layers.6", batch_size=4096)  # doctest: +SKIP
    >>> for batch in source:  # doctest: +SKIP
    ...     loss = sae_training_step(batch)
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        texts: Sequence[str],
        hook: str = "model.layers.6",
        *,
        context_size: int = 128,
        batch_size: int = 4096,
        text_batch_size: int = 8,
        shuffle_buffer: int | None = None,
        seed: int = 0,
        cache_dir: str | os.PathLike[str] | None = None,
        drop_bos: bool = True,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = None,
        progress: bool | None = None,
        drop_last: bool = True,
    ) -> None:
        resolve_module(model, hook)
        self.model: nn.Module | None = model
        self.tokenizer = tokenizer
        self.texts = check_texts(texts)
        self.hook = hook
        self.context_size = check_int(context_size, "context_size", low=2)
        self.text_batch_size = positive_int(text_batch_size, "text_batch_size")
        self.drop_bos = check_bool(drop_bos, "drop_bos")
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.progress = None if progress is None else check_bool(progress, "progress")
        self._init_stream(batch_size, shuffle_buffer, seed, dtype, device, drop_last)
        self.device = torch.device(device) if device is not None else _model_device(model)
        self._tensor: Tensor | None = None
        self._windows: list[Window] | None = None
        self._n_tokens: int | None = None
        self._d_in: int | None = None

    def _init_stream(
        self,
        batch_size: int,
        shuffle_buffer: int | None,
        seed: int,
        dtype: torch.dtype,
        device: str | torch.device | None,
        drop_last: bool,
    ) -> None:
        self.batch_size = positive_int(batch_size, "batch_size")
        if shuffle_buffer is None:
            self.shuffle_buffer = _DEFAULT_BUFFER_BATCHES * self.batch_size
        else:
            self.shuffle_buffer = nonnegative_int(shuffle_buffer, "shuffle_buffer")
            if 0 < self.shuffle_buffer < self.batch_size:
                raise InvalidArgumentError(
                    f"shuffle_buffer: must be 0 or >= batch_size ({self.batch_size}), got {shuffle_buffer!r}"
                )
        self.seed = check_seed(seed)
        self.dtype = _check_dtype(dtype)
        self.drop_last = check_bool(drop_last, "drop_last")
        if device is not None and not isinstance(device, (str, torch.device)):
            raise InvalidArgumentError(f"device: must be None, a str or a torch.device, got {device!r}")

    @classmethod
    def from_tensor(
        cls,
        acts: Tensor | NDArray[Any],
        batch_size: int = 4096,
        *,
        shuffle_buffer: int | None = None,
        seed: int = 0,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        drop_last: bool = True,
    ) -> ActivationSource:
        """A source over precomputed activations ``(n_tokens, d_in)`` (a tensor or an ndarray).

        Parameters
        ----------
        acts
            The activation rows.
        batch_size, shuffle_buffer, seed, device, drop_last
            As for the constructor (``device`` defaults to that of ``acts``).
        dtype
            Dtype of the batches (default: that of ``acts``; float32 for an ndarray of integers).

        Raises
        ------
        ShapeMismatchError
            ``acts`` is not 2-D.
        DTypeError
            ``acts`` is neither a tensor nor an ndarray, or not floating point.
        """
        if isinstance(acts, np.ndarray):
            t = torch.from_numpy(np.array(acts, dtype=np.float32 if acts.dtype.kind in "iub" else None))
        elif isinstance(acts, Tensor):
            t = acts.detach()
        else:
            raise DTypeError(f"acts: must be a torch.Tensor or a numpy array, got {type(acts).__name__}")
        if t.dim() != 2:
            raise ShapeMismatchError(f"acts: must be 2-D (n_tokens, d_in), got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise DTypeError(f"acts: must be floating point, got {t.dtype}")
        obj = cls.__new__(cls)
        obj._init_stream(batch_size, shuffle_buffer, seed, t.dtype if dtype is None else dtype, device, drop_last)
        obj.model, obj.tokenizer, obj.texts, obj.hook = None, None, [], ""
        obj.context_size, obj.text_batch_size, obj.drop_bos = 0, 0, False
        obj.cache_dir, obj.progress = None, None
        obj.device = torch.device(device) if device is not None else t.device
        obj._tensor = t
        obj._windows = None
        obj._n_tokens, obj._d_in = t.shape[0], t.shape[1]
        return obj

    # -- sizes --------------------------------------------------------------------------------------------------

    def _get_windows(self) -> list[Window]:
        if self._windows is None:
            self._windows = tokenize_windows(self.tokenizer, self.texts, self.context_size)
        return self._windows

    @property
    def n_tokens(self) -> int:
        """Activation rows in one pass (tokenises the texts on first use; never runs the model)."""
        if self._n_tokens is None:
            drop = 1 if self.drop_bos else 0
            self._n_tokens = sum(len(w) - drop for _, w in self._get_windows())
        return self._n_tokens

    @property
    def d_in(self) -> int | None:
        """Width of the activations, once known (from a tensor, a cache, or after the first batch)."""
        return self._d_in

    @property
    def n_batches(self) -> int:
        """Batches in one pass."""
        full, rest = divmod(self.n_tokens, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def __repr__(self) -> str:
        what = "tensor" if self._tensor is not None else f"hook={self.hook!r}, n_texts={len(self.texts)}"
        return f"ActivationSource({what}, batch_size={self.batch_size}, d_in={self._d_in})"

    # -- iteration ----------------------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Tensor]:
        """Yield the batches of one pass (the same batches at every pass)."""
        return shuffled_batches(self._rows(), self.batch_size, self.shuffle_buffer, self.seed, self.drop_last)

    def _rows(self) -> Iterator[Tensor]:
        """Activation rows in model order, as chunks on ``self.device`` in ``self.dtype``."""
        if self._tensor is not None:
            for start in range(0, self._tensor.shape[0], _CHUNK_ROWS):
                yield self._tensor[start : start + _CHUNK_ROWS].to(self.device, self.dtype)
            return
        if self.cache_dir is None:
            yield from self._model_rows()
            return
        key = self._cache_key()
        cached = self._read_cache(key)
        if cached is not None:
            yield from cached
        else:
            yield from self._write_cache(key, self._model_rows())

    def _model_rows(self) -> Iterator[Tensor]:
        model = self.model
        if model is None:  # pragma: no cover - a tensor source never gets here
            raise InvalidArgumentError("model: this source has no model")
        windows = [w for _, w in self._get_windows()]
        bos = getattr(self.tokenizer, "bos_token_id", None)
        pad = getattr(self.tokenizer, "pad_token_id", None)
        pad_id = int(pad) if pad is not None else 0
        device = _model_device(model)
        groups = [windows[i : i + self.text_batch_size] for i in range(0, len(windows), self.text_batch_size)]
        show = want_progress(self.progress, len(groups))
        for group in _progress_bar(groups, desc="activations", unit="batch", show=show):
            ids, mask = pad_windows(group, pad_id)
            keep = _keep_mask(group, mask, bos, self.drop_bos)
            with torch.no_grad(), capture(model, self.hook) as cap:
                cap(input_ids=ids.to(device), attention_mask=mask.to(device))
                hidden = cap[self.hook]
            rows = hidden[keep.to(hidden.device)].to(self.device, self.dtype)
            self._d_in = rows.shape[1]
            yield rows

    # -- cache --------------------------------------------------------------------------------------------------

    def _cache_key(self) -> str:
        if self.model is None:  # pragma: no cover - a tensor source has no cache
            raise InvalidArgumentError("cache_dir: a tensor source has no cache")
        h = hashlib.sha256()
        desc = {
            "hook": self.hook,
            "context_size": self.context_size,
            "drop_bos": self.drop_bos,
            "first_position_rule": 2,  # 2: the first position of every window is dropped, BOS or not
            "bos": getattr(self.tokenizer, "bos_token_id", None),
            "dtype": str(self.dtype),
            "model": model_fingerprint(self.model),
        }
        h.update(json.dumps(desc, sort_keys=True).encode())
        for _, w in self._get_windows():
            h.update(np.asarray(w, dtype=np.int64).tobytes())
            h.update(b"|")
        return h.hexdigest()

    def _paths(self, key: str) -> tuple[Path, Path]:
        assert self.cache_dir is not None
        stem = f"activations-{key[:32]}"
        return self.cache_dir / f"{stem}.json", self.cache_dir / f"{stem}.bin"

    def _read_cache(self, key: str) -> Iterator[Tensor] | None:
        manifest, data = self._paths(key)
        if not manifest.exists():
            return None
        _, payload = read_checked_json(manifest, _CACHE_FORMAT, _CACHE_VERSION)
        np_dtype = _NP_DTYPES[self.dtype]
        try:
            n, d = int(payload["n_tokens"]), int(payload["d_in"])
            ok = payload["key"] == key and payload["dtype"] == str(self.dtype) and n >= 0 and d >= 1
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise IndexFormatError(f"{manifest}: the manifest does not describe this source's activations")
        expected = n * d * np_dtype.itemsize
        size = data.stat().st_size if data.is_file() else -1
        if size != expected:
            raise IndexFormatError(f"{data}: {size} bytes, the manifest {manifest.name} declares {expected}")
        self._n_tokens, self._d_in = n, d
        return self._cached_rows(data, n, d, np_dtype)

    def _cached_rows(self, data: Path, n: int, d: int, np_dtype: np.dtype[Any]) -> Iterator[Tensor]:
        if n == 0:
            return
        mm = np.memmap(data, dtype=np_dtype.newbyteorder("<"), mode="r", shape=(n, d))
        for start in range(0, n, _CHUNK_ROWS):
            block = np.array(mm[start : start + _CHUNK_ROWS], dtype=np_dtype)  # a writable native copy
            if self.dtype == torch.bfloat16:
                t = torch.from_numpy(block.view(np.int16)).view(torch.bfloat16)
            else:
                t = torch.from_numpy(block)
            yield t.to(self.device)

    def _write_cache(self, key: str, rows: Iterator[Tensor]) -> Iterator[Tensor]:
        manifest, data = self._paths(key)
        assert self.cache_dir is not None
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        clean_stale_temporaries(data)
        tmp = self.cache_dir / temporary_name(data.name)
        n = 0
        d = 0
        try:
            with open(tmp, "xb") as fh:
                for chunk in rows:
                    cpu = chunk.detach().to("cpu").contiguous()
                    arr = cpu.view(torch.int16).numpy().view(np.uint16) if self.dtype == torch.bfloat16 else cpu.numpy()
                    fh.write(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
                    n, d = n + chunk.shape[0], chunk.shape[1]
                    yield chunk
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, data)
            fsync_dir(data.parent)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        payload = {
            "key": key,
            "hook": self.hook,
            "n_tokens": n,
            "d_in": max(d, 1),
            "dtype": str(self.dtype),
            "data": data.name,
        }
        write_checked_json(manifest, _CACHE_FORMAT, _CACHE_VERSION, payload)
        self._n_tokens = n
