"""One SAE training run of the SAE benchmark, in its own process (``bench_sae.py`` starts it).

Runs under any interpreter that has torch and numpy plus the trainer's package: ours (``sparsecore``) in the
project's virtualenv, the anchors (``sae-lens``, ``eai-sparsify``) in the benchmark virtualenv; it imports nothing
from this repository except ``sparsecore`` for ours. Every trainer reads the same memory-mapped ``.npy`` of
activations in the same order: batch ``i`` is rows ``[i * batch, (i + 1) * batch)`` modulo the number of rows, so
a budget above the rows cycles over them (epochs).

Timed: the trainer's whole training call (``train(...)``, ``SAETrainer.fit()``, ``Trainer.fit()``) from cached
activations, nothing else (no model forward, no SAE construction, no imports, no export). Sparsify's final
checkpoint save inside ``fit()`` is disabled (``save`` replaced by a no-op, ``save_best`` off): it is I/O, not training.

Output (``--out`` folder): ``weights.npz`` with ``w_enc (d_in, d_sae)``, ``b_enc``, ``w_dec (d_sae, d_in)``,
``b_dec`` in the common convention ``x̂ = topk_relu(x @ w_enc + b_enc) @ w_dec + b_dec`` (each trainer's input
centring and scaling folded in), and ``run.json`` with the timing and the trainer's settings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]


class Rows:
    """Consecutive ``n``-row blocks of a memory-mapped ``(n_rows, d_in)`` float32 array, wrapping at the end."""

    def __init__(self, path: Path) -> None:
        self.mm: F32 = np.load(path, mmap_mode="r")
        self.n_rows, self.d_in = self.mm.shape

    def block(self, start: int, n: int) -> F32:
        start %= self.n_rows
        end = start + n
        if end <= self.n_rows:
            return np.array(self.mm[start:end], dtype=np.float32)
        parts = [np.array(self.mm[start:], dtype=np.float32)]
        left = n - parts[0].shape[0]
        while left > 0:
            take = min(left, self.n_rows)
            parts.append(np.array(self.mm[:take], dtype=np.float32))
            left -= take
        return np.concatenate(parts)


def batches(rows: Rows, batch_size: int, n_tokens: int) -> Iterator[Any]:
    """The ``ceil(n_tokens / batch_size)`` training batches as torch tensors (one-shot)."""
    import torch

    for start in range(0, n_tokens, batch_size):
        yield torch.from_numpy(rows.block(start, min(batch_size, n_tokens - start)))


def export_error(weights: dict[str, F32], own: Any, x: F32, k: int) -> float:
    """Largest |exported-formula reconstruction - the trainer's own| over the rows ``x``, relative to the largest
    |own reconstruction - b_dec| (the part the codes contribute).

    ``own`` maps a float32 tensor batch to the trainer's own reconstruction (its model's forward).
    """
    import torch

    with torch.no_grad():
        pre = x @ weights["w_enc"] + weights["b_enc"]
        idx = np.argpartition(-pre, k - 1, axis=1)[:, :k]
        vals = np.maximum(np.take_along_axis(pre, idx, axis=1), 0)
        recon = np.einsum("nk,nkd->nd", vals, weights["w_dec"][idx]) + weights["b_dec"]
        theirs = own(torch.from_numpy(np.ascontiguousarray(x))).detach().float().numpy()
    return float(np.abs(recon - theirs).max() / max(np.abs(theirs - weights["b_dec"]).max(), 1e-30))


# ---------------------------------------------------------------------------------------------------------------
# Trainers: each returns (train_seconds, exported weights, settings)
# ---------------------------------------------------------------------------------------------------------------


def run_ours(args: argparse.Namespace, rows: Rows) -> tuple[float, dict[str, F32], dict[str, Any]]:
    import torch
    from sparsecore.sae import MatchingPursuitSAE, TopKSAE, train

    cls = MatchingPursuitSAE if args.trainer == "ours-mp" else TopKSAE
    sae = cls(rows.d_in, args.d_sae, args.k, seed=args.seed)
    settings = {
        "sae": f"sparsecore.sae.{cls.__name__}({rows.d_in}, {args.d_sae}, {args.k}, seed={args.seed})",
        "optimizer": "Adam (eps 6.25e-10)",
        "lr": args.lr,
        "lr_warmup_steps": args.warmup_steps,
        "lr_decay_steps": args.decay_steps,
        "auxk_coefficient": args.auxk_coefficient,
        "auxk_k": rows.d_in // 2,
        "dead_tokens_threshold": args.dead_tokens,
        "scale_activations": True,
        "init_b_dec": "geometric_median",
        "decoder": "unit-norm rows, parallel gradient removed",
    }
    # A one-shot iterator of exactly the budget: the same batches as the anchors read.
    data = batches(rows, args.batch_size, args.n_tokens)
    t0 = time.perf_counter()
    history = train(
        sae,
        data,
        args.n_tokens,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_warmup_steps=args.warmup_steps,
        lr_decay_steps=args.decay_steps,
        auxk_coefficient=args.auxk_coefficient,
        dead_tokens_threshold=args.dead_tokens,
        progress=False,
        log_every=10,
    )
    seconds = time.perf_counter() - t0
    settings["history_last"] = history[-1] if history else {}
    with torch.no_grad():
        s = float(sae.act_scale)
        w_enc = sae.W_enc.float()
        b_dec = sae.b_dec.float()
        # pre = (x*s - b_dec) @ W_enc + b_enc  ->  x @ (s W_enc) + (b_enc - b_dec @ W_enc)
        weights = {
            "w_enc": (w_enc * s).numpy(),
            "b_enc": (sae.b_enc.float() - b_dec @ w_enc).numpy(),
            "w_dec": (sae.W_dec.float() / s).numpy(),
            "b_dec": (b_dec / s).numpy(),
        }
    if args.trainer == "ours-mp":  # the MP model itself is saved too: its encoding is not a top-k of x @ w_enc
        sae.save(Path(args.out) / "mp_model")
    else:
        sae.eval()
        settings["export_max_rel_error"] = export_error(weights, lambda x: sae(x)[0], rows.block(0, 256), args.k)
    return seconds, weights, settings


def run_saelens(args: argparse.Namespace, rows: Rows) -> tuple[float, dict[str, F32], dict[str, Any]]:
    import torch
    from sae_lens import LoggingConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    torch.manual_seed(args.seed)
    steps = -(-args.n_tokens // args.batch_size)
    dead_window_steps = max(1, args.dead_tokens // args.batch_size)
    sae_cfg = TopKTrainingSAEConfig(
        d_in=rows.d_in,
        d_sae=args.d_sae,
        k=args.k,
        aux_loss_coefficient=args.auxk_coefficient,
        normalize_activations="expected_average_only_in",
        device="cpu",
    )
    sae = TopKTrainingSAE(sae_cfg)
    trainer_cfg = SAETrainerConfig(
        total_training_samples=args.n_tokens,
        train_batch_size_samples=args.batch_size,
        lr=args.lr,
        lr_end=0.0,
        lr_scheduler_name="constant",
        lr_warm_up_steps=args.warmup_steps,
        lr_decay_steps=args.decay_steps,
        device="cpu",
        dead_feature_window=dead_window_steps,
        feature_sampling_window=max(steps, 1),
        logger=LoggingConfig(log_to_wandb=False),
    )
    trainer = SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=batches(rows, args.batch_size, args.n_tokens))
    # SAELens's own scaling (mean norm -> sqrt(d_in), folded into the weights after fit), estimated here from the
    # first batch like ours does, so that fit() does not read 1000 batches of the training stream for it.
    first = torch.from_numpy(rows.block(0, args.batch_size))
    trainer.activation_scaler.estimate_scaling_factor(rows.d_in, iter([first]), n_batches_for_norm_estimate=1)
    # b_dec from the data, as ours (geometric median) and sparsify (mean) do: SAELens 6 has no option for it and
    # starts from zeros, which a few hundred steps cannot undo (FVU stayed above 2 over 24 steps: the mean is as
    # large as the spread here).
    with torch.no_grad():
        sae.b_dec.copy_(trainer.activation_scaler(first).mean(dim=0))
    settings = {
        "sae": f"TopKTrainingSAE(TopKTrainingSAEConfig(d_in={rows.d_in}, d_sae={args.d_sae}, k={args.k}))",
        "optimizer": "Adam (torch default eps 1e-8), gradient norm clipped to 1.0 (SAELens, not configurable)",
        "lr": args.lr,
        "lr_scheduler": "constant with warm-up and final linear decay to 0 (lr_end=0)",
        "lr_warmup_steps": args.warmup_steps,
        "lr_decay_steps": args.decay_steps,
        "aux_loss_coefficient": args.auxk_coefficient,
        "auxk_k": rows.d_in // 2,
        "dead_feature_window_steps": dead_window_steps,
        "rescale_acts_by_decoder_norm": sae_cfg.rescale_acts_by_decoder_norm,
        "apply_b_dec_to_input": sae_cfg.apply_b_dec_to_input,
        "normalize_activations": f"{sae_cfg.normalize_activations} (from the first batch, before the timed fit)",
        "decoder_init_norm": sae_cfg.decoder_init_norm,
        "b_dec_init": "mean of the (scaled) first batch, set before fit (SAELens default: zeros)",
        "loss": "sum of squared errors per token, mean over tokens; AuxK un-normalised (SAELens)",
    }
    t0 = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        state = {k: v.detach().clone() for k, v in sae.state_dict().items()}
        sae.process_state_dict_for_saving_inference(state)  # folds the decoder norms in
        w_enc, b_enc, w_dec, b_dec = (state[k].float() for k in ("W_enc", "b_enc", "W_dec", "b_dec"))
        if sae_cfg.apply_b_dec_to_input:
            b_enc = b_enc - b_dec @ w_enc
    settings["dead_at_end_training_window"] = int(trainer.dead_neurons.sum())
    weights = {"w_enc": w_enc.numpy(), "b_enc": b_enc.numpy(), "w_dec": w_dec.numpy(), "b_dec": b_dec.numpy()}
    sae.eval()
    settings["export_max_rel_error"] = export_error(weights, sae, rows.block(0, 256), args.k)
    return seconds, weights, settings


def run_sparsify(args: argparse.Namespace, rows: Rows) -> tuple[float, dict[str, F32], dict[str, Any]]:
    import torch
    from sparsify import SaeConfig, TrainConfig, Trainer
    from torch import nn

    seq = 128
    if args.batch_size % seq:
        raise SystemExit(f"sparsify: batch_size must be a multiple of {seq}")

    class Config:
        num_hidden_layers = 1

    class Layer(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    class ActivationModel(nn.Module):
        """Stands in for the language model: ``input_ids`` are row numbers, layer 0 outputs those rows."""

        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList([Layer()])
            self.config = Config()
            self._anchor = nn.Parameter(torch.zeros(1))  # so .parameters() is not empty

        @property
        def base_model(self) -> nn.Module:
            return self

        @property
        def device(self) -> torch.device:
            return torch.device("cpu")

        @property
        def dummy_inputs(self) -> dict[str, torch.Tensor]:
            return {"input_ids": torch.arange(seq).reshape(1, seq)}

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            b, s = input_ids.shape
            block = torch.from_numpy(rows.block(int(input_ids[0, 0]), b * s)).reshape(b, s, rows.d_in)
            out: torch.Tensor = self.layers[0](block)
            return out

    class RowIds(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
        def __len__(self) -> int:
            return int(args.n_tokens) // seq

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            return {"input_ids": torch.arange(i * seq, (i + 1) * seq)}

    cfg = TrainConfig(
        SaeConfig(k=args.k, num_latents=args.d_sae),
        batch_size=args.batch_size // seq,
        optimizer="adam",
        lr=args.lr,
        lr_warmup_steps=args.warmup_steps,
        auxk_alpha=args.auxk_coefficient,
        dead_feature_threshold=args.dead_tokens,
        hookpoints=["layers.0"],
        init_seeds=[args.seed],
        log_to_wandb=False,
        save_dir=str(Path(args.out) / "sparsify-checkpoints"),
    )
    trainer = Trainer(cfg, RowIds(), ActivationModel())
    trainer.save = lambda: None  # checkpoint I/O is not training
    settings = {
        "sae": f"SparseCoder({rows.d_in}, SaeConfig(k={args.k}, num_latents={args.d_sae}))",
        "optimizer": "adam (torch.optim.Adam: bitsandbytes absent)",
        "lr": args.lr,
        "lr_scheduler": "linear warm-up, then linear decay to 0 over the whole run (sparsify, not configurable)",
        "lr_warmup_steps": args.warmup_steps,
        "auxk_alpha": args.auxk_coefficient,
        "auxk_k": rows.d_in // 2,
        "dead_feature_threshold_tokens": args.dead_tokens,
        "normalize_decoder": cfg.sae.normalize_decoder,
        "b_dec_init": "mean of the first batch (sparsify)",
        "data": "a stand-in model whose layer 0 outputs rows of the .npy; 32 sequences of 128 rows per step",
        "loss": "FVU + auxk_alpha * AuxK-FVU (sparsify)",
    }
    t0 = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - t0
    sae = next(iter(trainer.saes.values()))
    with torch.no_grad():
        w_enc = sae.encoder.weight.float().T.contiguous()
        b_dec = sae.b_dec.float()
        weights = {
            "w_enc": w_enc.numpy(),
            "b_enc": (sae.encoder.bias.float() - b_dec @ w_enc).numpy(),
            "w_dec": sae.W_dec.float().numpy(),
            "b_dec": b_dec.numpy(),
        }
    settings["export_max_rel_error"] = export_error(weights, lambda x: sae(x).sae_out, rows.block(0, 256), args.k)
    return seconds, weights, settings


TRAINERS = {"ours": run_ours, "ours-mp": run_ours, "saelens": run_saelens, "sparsify": run_sparsify}


def peak_rss_mib() -> float | None:
    """This process's peak resident set (``VmHWM``; Linux), in MiB; None where /proc is missing.

    Read in the process itself: a parent's ``wait4`` figure can also count the parent's pages that the child
    shared between ``fork`` and ``exec``.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trainer", choices=sorted(TRAINERS), required=True)
    ap.add_argument("--acts", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n-tokens", type=int, required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--d-sae", type=int, default=4608)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--lr", type=float, required=True)
    ap.add_argument("--warmup-steps", type=int, default=0)
    ap.add_argument("--decay-steps", type=int, default=0)
    ap.add_argument("--auxk-coefficient", type=float, default=1 / 32)
    ap.add_argument("--dead-tokens", type=int, default=10_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", action="store_true", help="run under torch.profiler (profile.txt; slower)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = Rows(args.acts)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            seconds, weights, settings = TRAINERS[args.trainer](args, rows)
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
        (args.out / "profile.txt").write_text(table + "\n")
        total = sum(e.self_cpu_time_total for e in prof.key_averages())
        settings["profile_top"] = [
            {"op": e.key, "self_cpu_pct": round(100 * e.self_cpu_time_total / total, 1), "calls": e.count}
            for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:8]
        ]
    else:
        seconds, weights, settings = TRAINERS[args.trainer](args, rows)
    arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}
    np.savez(
        args.out / "weights.npz",
        w_enc=arrays["w_enc"],
        b_enc=arrays["b_enc"],
        w_dec=arrays["w_dec"],
        b_dec=arrays["b_dec"],
    )
    versions = {"torch": torch.__version__, "python": sys.version.split()[0]}
    for dist in ("sae-lens", "eai-sparsify"):
        try:
            from importlib.metadata import version

            versions[dist] = version(dist)
        except Exception:  # not installed in this interpreter
            pass
    run = {
        "trainer": args.trainer,
        "threads": args.threads,
        "torch_threads": torch.get_num_threads(),
        "n_tokens": args.n_tokens,
        "batch_size": args.batch_size,
        "train_s": seconds,
        "tokens_per_s": args.n_tokens / seconds,
        "vm_hwm_mib": peak_rss_mib(),
        "settings": settings,
        "versions": versions,
        "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "SPARSIFY_DISABLE_TRITON")},
    }
    (args.out / "run.json").write_text(json.dumps(run, indent=2, default=str) + "\n")
    print(json.dumps({"trainer": args.trainer, "threads": args.threads, "train_s": round(seconds, 2)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
