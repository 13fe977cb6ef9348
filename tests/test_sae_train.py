"""sparsecore.sae.train: recovery of a planted dictionary, BatchTopK / JumpReLU / AuxK behaviour, exact resume."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from sparsecore import sae as S  # noqa: N812
from sparsecore.exceptions import (
    IndexFormatError,
    InvalidArgumentError,
    NonFiniteError,
    ShapeMismatchError,
    TruncationWarning,
)
from sparsecore.sae._train import CHECKPOINT_NAME, geometric_median
from torch import Tensor

D_IN, N_ATOMS, K_TRUE, N_TOKENS = 32, 96, 4, 20_000
BATCH, EPOCHS, LR = 256, 8, 1e-2


def _planted(seed: int = 0) -> tuple[Tensor, Tensor]:
    """Atoms (N_ATOMS, D_IN) unit-norm, and x = offset + 3 * sum of K_TRUE atoms with coefficients in [0.5, 2]."""
    g = torch.Generator().manual_seed(seed)
    atoms = torch.randn(N_ATOMS, D_IN, generator=g)
    atoms /= atoms.norm(dim=1, keepdim=True)
    support = torch.stack([torch.randperm(N_ATOMS, generator=g)[:K_TRUE] for _ in range(N_TOKENS)])
    coef = 0.5 + 1.5 * torch.rand(N_TOKENS, K_TRUE, generator=g)
    x = 3.0 * (coef[..., None] * atoms[support]).sum(dim=1) + 0.1
    return atoms, x


ATOMS, X = _planted()


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """These tiny matmuls gain nothing from threads; on a shared machine, one thread avoids oversubscription."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _chunks(x: Tensor, size: int) -> list[Tensor]:
    return [x[i : i + size] for i in range(0, x.shape[0], size)]


def _epochs(x: Tensor, epochs: int = EPOCHS) -> list[Tensor]:
    return [chunk for _ in range(epochs) for chunk in _chunks(x, BATCH)]


def _recovery(atoms: Tensor, w_dec: Tensor) -> float:
    """Mean over true atoms of the best cosine with a decoder row."""
    w = w_dec.detach().float()
    w = w / w.norm(dim=1, keepdim=True)
    return float((atoms @ w.T).max(dim=1).values.mean())


def _fvu(sae: S.SparseAutoencoder, x: Tensor) -> float:
    with torch.no_grad():
        recon, _ = sae(x)
    return float((recon - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


@pytest.mark.parametrize(
    "make",
    [
        lambda: S.TopKSAE(D_IN, 128, K_TRUE, seed=1),
        lambda: S.BatchTopKSAE(D_IN, 128, K_TRUE, seed=1),
        lambda: S.JumpReLUSAE(D_IN, 128, seed=1, init_threshold=0.5, bandwidth=0.05, l0_coefficient=0.05),
    ],
    ids=["topk", "batchtopk", "jumprelu"],
)
def test_training_recovers_a_planted_dictionary(make: object) -> None:
    assert callable(make)
    sae = make()
    assert isinstance(sae, S.SparseAutoencoder)
    history = S.train(sae, _epochs(X), EPOCHS * N_TOKENS, batch_size=BATCH, lr=LR, log_every=100)
    sae.eval()
    rec = _recovery(ATOMS, sae.W_dec)
    print(f"{sae.architecture}: recovery {rec:.4f}, fvu {_fvu(sae, X):.4f}")
    assert rec >= 0.9
    assert history[-1]["fvu"] < 0.3
    assert history[-1]["fvu"] < history[0]["fvu"]
    l0 = float((sae.encode(X) != 0).sum(-1).float().mean())
    assert 2.0 <= l0 <= 8.0
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(128))


def test_matching_pursuit_reconstructs_better_than_topk_at_equal_l0() -> None:
    fvus = {}
    for sae in (S.TopKSAE(D_IN, 128, K_TRUE, seed=1), S.MatchingPursuitSAE(D_IN, 128, K_TRUE, seed=1)):
        S.train(sae, _epochs(X, 3), 3 * N_TOKENS, batch_size=BATCH, lr=LR)
        l0 = float((sae.encode(X) != 0).sum(-1).float().mean())
        assert l0 <= K_TRUE
        fvus[sae.architecture] = _fvu(sae, X)
    print(f"fvu at L0 <= {K_TRUE}: {fvus}")
    assert fvus["mp"] < 0.75 * fvus["topk"]


def test_history_rows_scaling_and_geometric_median_initialisation() -> None:
    x = X[:2048] * 40.0 + 5.0
    sae = S.TopKSAE(D_IN, 64, K_TRUE, seed=2)
    threads = torch.get_num_threads()
    history = S.train(sae, _chunks(x, 300), 2048, batch_size=512, lr=1e-3, log_every=2, lr_warmup_steps=0)
    assert torch.get_num_threads() == threads
    assert [row["step"] for row in history] == [2, 4]
    assert [row["tokens"] for row in history] == [1024, 2048]
    assert set(history[0]) == {"step", "tokens", "loss", "fvu", "l0", "dead_fraction", "lr"}
    assert history[0]["l0"] <= K_TRUE
    assert history[0]["dead_fraction"] == 0.0
    first = x[:512]
    scale = math.sqrt(D_IN) / float(first.norm(dim=1).mean())
    assert float(sae.act_scale) == pytest.approx(scale, rel=1e-5)
    # the geometric median minimises the sum of distances: better than the mean and than nudged points
    med = geometric_median(first * scale)

    def cost(y: Tensor) -> float:
        return float((first * scale - y).norm(dim=1).sum())

    assert cost(med) <= cost((first * scale).mean(0))
    g = torch.Generator().manual_seed(0)
    assert all(cost(med) <= cost(med + 0.05 * torch.randn(D_IN, generator=g)) for _ in range(5))
    # the reconstruction is in raw units although training ran on scaled ones
    assert _fvu(sae, x) < 1.0


def test_batchtopk_keeps_k_per_token_on_average_for_2d_and_3d_sources() -> None:
    sae = S.BatchTopKSAE(D_IN, 64, K_TRUE, seed=3)
    source_3d = [chunk.reshape(4, -1, D_IN) for chunk in _chunks(X[:4096], 512)]
    history = S.train(sae, source_3d, 4096, batch_size=512, lr=3e-3, log_every=1)
    assert all(row["l0"] == pytest.approx(K_TRUE) for row in history)
    assert float(sae.threshold) > 0
    sae.train()
    for x in (X[:256], X[:256].reshape(4, 64, D_IN)):
        assert float((sae.encode(x) != 0).sum(-1).float().mean()) == pytest.approx(K_TRUE)
    sae.eval()
    eval_l0 = float((sae.encode(X[:2048]) != 0).sum(-1).float().mean())
    assert 0.5 * K_TRUE <= eval_l0 <= 2 * K_TRUE


def test_jumprelu_thresholds_move_under_adam() -> None:
    sae = S.JumpReLUSAE(D_IN, 64, seed=4, init_threshold=0.5, bandwidth=0.05, l0_coefficient=0.05)
    before = sae.threshold.detach().clone()
    S.train(sae, _chunks(X[:4096], 256), 4096, batch_size=256, lr=1e-2)
    after = sae.threshold.detach()
    moved = (after - before).abs()
    assert float(moved.max()) > 0.05
    assert int((moved > 1e-3).sum()) >= 32  # most latents' thresholds moved
    assert float(after.mean()) > float(before.mean())  # the L0 penalty pushes them up


def _half_dead_topk() -> S.TopKSAE:
    """A TopK SAE whose last 32 latents have tiny encoder columns and the others a bias of 1: never in the top k."""
    sae = S.TopKSAE(D_IN, 64, K_TRUE, seed=5)
    with torch.no_grad():
        sae.W_enc.copy_(sae.W_dec.T)  # unit-norm encoder columns: the bias of 1 then decides
        sae.W_enc[:, 32:] *= 1e-3
        sae.b_enc[:32] = 1.0
    return sae


def test_auxk_revives_dead_latents() -> None:
    source = _epochs(X[:8192], 3)
    counts = {}
    for coefficient in (0.0, 1 / 32):
        sae = _half_dead_topk()
        history = S.train(
            sae, source, 3 * 8192, batch_size=BATCH, lr=LR, auxk_coefficient=coefficient,
            dead_tokens_threshold=1024, log_every=8,
        )  # fmt: skip
        late = sae.encode(X[8192:12288])
        counts[coefficient] = int((late[:, 32:] != 0).any(0).sum())
        assert history[1]["dead_fraction"] >= 0.4  # about half the latents were dead early on
        if coefficient:
            assert history[-1]["dead_fraction"] < history[1]["dead_fraction"]
    assert counts[0.0] <= 2  # without AuxK the dead latents get no gradient and stay dead
    assert counts[1 / 32] >= 16, counts
    print(f"latents of the forced-dead half that fire after training: {counts}")


class _CrashError(Exception):
    pass


def _crashing(chunks: list[Tensor], after: int) -> Iterator[Tensor]:
    for i, chunk in enumerate(chunks):
        if i == after:
            raise _CrashError
        yield chunk


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "jumprelu"])
def test_resume_continues_exactly(tmp_path: Path, arch: str) -> None:
    def make() -> S.SparseAutoencoder:
        if arch == "topk":
            return S.TopKSAE(D_IN, 48, K_TRUE, seed=6)
        if arch == "batchtopk":
            return S.BatchTopKSAE(D_IN, 48, K_TRUE, seed=6)
        return S.JumpReLUSAE(D_IN, 48, seed=6, init_threshold=0.5, bandwidth=0.05, l0_coefficient=0.05)

    chunks = list(_chunks(X[:2560], 128))  # 20 steps of 128 tokens
    kw = {"batch_size": 128, "lr": 3e-3, "dead_tokens_threshold": 256, "log_every": 5, "checkpoint_every": 5}
    straight = make()
    full = S.train(straight, chunks, 2560, checkpoint_dir=tmp_path / "a", **kw)  # type: ignore[arg-type]

    interrupted = make()
    with pytest.raises(_CrashError):
        S.train(interrupted, _crashing(chunks, 12), 2560, checkpoint_dir=tmp_path / "b", **kw)  # type: ignore[arg-type]
    resumed = make()  # a fresh process: a new model, the checkpoint on disk
    rest = S.train(resumed, chunks, 2560, checkpoint_dir=tmp_path / "b", resume=True, **kw)  # type: ignore[arg-type]
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert rest == full
    assert [row["step"] for row in full] == [5, 10, 15, 20]


def test_checkpoint_is_checked_and_must_match_the_model(tmp_path: Path) -> None:
    sae = S.TopKSAE(D_IN, 48, K_TRUE, seed=7)
    S.train(sae, _chunks(X[:512], 128), 512, batch_size=128, checkpoint_dir=tmp_path)
    ckpt = tmp_path / CHECKPOINT_NAME
    assert ckpt.exists()
    with pytest.raises(InvalidArgumentError, match="d_sae"):
        S.train(
            S.TopKSAE(D_IN, 64, K_TRUE),
            _chunks(X[:512], 128),
            1024,
            batch_size=128,
            checkpoint_dir=tmp_path,
            resume=True,
        )
    raw = bytearray(ckpt.read_bytes())
    raw[-5] ^= 0xFF
    ckpt.write_bytes(bytes(raw))
    with pytest.raises(IndexFormatError):
        S.train(
            S.TopKSAE(D_IN, 48, K_TRUE),
            _chunks(X[:512], 128),
            1024,
            batch_size=128,
            checkpoint_dir=tmp_path,
            resume=True,
        )


def test_bad_sources_and_arguments_raise_typed_errors() -> None:
    sae = S.TopKSAE(D_IN, 48, K_TRUE, seed=8)
    bad = X[:64].clone()
    bad[3, 1] = math.nan
    with pytest.raises(NonFiniteError, match="x: "):
        S.train(sae, [bad], 64, batch_size=32)
    with pytest.raises(ShapeMismatchError, match="x: "):
        S.train(sae, [torch.zeros(64, D_IN + 1)], 64, batch_size=32)
    with pytest.raises(InvalidArgumentError, match="checkpoint_dir"):
        S.train(sae, [X[:64]], 64, resume=True)
    with pytest.raises(InvalidArgumentError, match="init_b_dec"):
        S.train(sae, [X[:64]], 64, init_b_dec="median")
    with pytest.raises(InvalidArgumentError, match="n_tokens"):
        S.train(sae, [X[:64]], 0)
    with pytest.raises(InvalidArgumentError, match="source"):
        S.train(sae, [[1.0] * D_IN], 64)  # type: ignore[list-item]


def test_a_reiterable_source_is_read_over_several_passes_and_a_short_iterator_warns() -> None:
    torch.manual_seed(0)
    data = torch.randn(300, 8)
    chunks = [data[i : i + 100] for i in range(0, 300, 100)]
    history = S.train(S.TopKSAE(8, 16, 2, seed=0), chunks, 1000, batch_size=128, progress=False, log_every=1)
    assert history[-1]["tokens"] == 1000  # 3.33 passes over the 300 rows
    with pytest.warns(TruncationWarning, match="ran out after 300 of n_tokens = 1,000"):
        history = S.train(S.TopKSAE(8, 16, 2, seed=0), iter(chunks), 1000, batch_size=128, progress=False, log_every=1)
    assert history[-1]["tokens"] == 300
