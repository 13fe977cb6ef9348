"""sparsecore.gpu block-table builders (MInference, SparseD, Routing) against naive loop references."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

torch = pytest.importorskip("torch")

from sparsecore import gpu  # noqa: E402
from sparsecore.exceptions import DTypeError, InvalidArgumentError, ShapeMismatchError  # noqa: E402
from torch import Tensor  # noqa: E402
from torch import dtype as DType  # noqa: E402, N812


def qk(b: int, h: int, t: int, d: int, seed: int, dtype: DType = torch.float64) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, h, t, d, generator=g, dtype=dtype), torch.randn(b, h, t, d, generator=g, dtype=dtype)


def blocks_of(t: int, bs: int) -> list[range]:
    return [range(s, min(t, s + bs)) for s in range(0, t, bs)]


def naive_select(
    scores: list[float], allowed: list[bool], forced: set[int], budget: int | None, mass: float | None = None
) -> set[int]:
    """Forced blocks first, then the best allowed ones (ties: lower id) up to the budget or the mass."""
    forced = {j for j in forced if allowed[j]}
    rest = sorted((j for j in range(len(scores)) if allowed[j] and j not in forced), key=lambda j: (-scores[j], j))
    order = sorted(forced) + rest
    if mass is not None:
        keep: set[int] = set()
        total = 0.0
        for j in order:
            if total >= mass * (1 - 1e-6) and keep:
                break
            keep.add(j)
            total += scores[j]
        return keep | forced
    assert budget is not None
    return set(order[: max(budget, len(forced))])


def naive_budget(n_allowed: int, density: float | None, top_k: int | None) -> int:
    if top_k is not None:
        return min(top_k, n_allowed)
    assert density is not None
    return max(1, math.ceil(n_allowed * density))


def as_mask(sets: list[list[list[set[int]]]], nb: int) -> Tensor:
    out: Tensor = torch.zeros(len(sets), len(sets[0]), nb, nb, dtype=torch.bool)
    for b, per_h in enumerate(sets):
        for h, rows in enumerate(per_h):
            for i, keep in enumerate(rows):
                for j in keep:
                    out[b, h, i, j] = True
    return out


def naive_minference(
    q: Tensor, k: Tensor, bs: int, density: float | None, top_k: int | None, sinks: int, local: int, causal: bool
) -> Tensor:
    bsz, nh, t, _ = q.shape
    blocks = blocks_of(t, bs)
    nb = len(blocks)
    sets = []
    for b in range(bsz):
        per_h = []
        for h in range(nh):
            pq = [q[b, h, list(r)].mean(0) for r in blocks]
            pk = [k[b, h, list(r)].mean(0) for r in blocks]
            rows = []
            for i in range(nb):
                scores = [float(pq[i] @ pk[j]) for j in range(nb)]
                allowed = [(j <= i) or not causal for j in range(nb)]
                forced = {j for j in range(nb) if j < sinks or 0 <= i - j < local}
                rows.append(naive_select(scores, allowed, forced, naive_budget(sum(allowed), density, top_k)))
            per_h.append(rows)
        sets.append(per_h)
    return as_mask(sets, nb)


@pytest.mark.parametrize(
    ("t", "bs", "density", "top_k", "sinks", "local", "causal"),
    [
        (70, 16, 0.3, None, 1, 1, True),  # ragged last block
        (64, 8, None, 3, 2, 2, True),
        (50, 16, 0.5, None, 0, 1, False),
        (33, 16, 1.0, None, 1, 1, True),
        (40, 8, None, 1, 0, 1, True),  # top_k below the forced blocks
    ],
)
def test_minference_blocks_match_the_loop_reference(
    t: int, bs: int, density: float | None, top_k: int | None, sinks: int, local: int, causal: bool
) -> None:
    q, k = qk(2, 3, t, 8, seed=t)
    got = gpu.minference_blocks(
        q, k, block_size=bs, density=density, top_k=top_k, sink_blocks=sinks, local_blocks=local, causal=causal
    )
    want = naive_minference(q, k, bs, density, top_k, sinks, local, causal)
    assert got.dtype == torch.bool
    assert torch.equal(got, want)


def naive_sparsed(
    q: Tensor, k: Tensor, bs: int, density: float | None, top_k: int | None, mass: float | None, causal: bool
) -> Tensor:
    bsz, nh, t, d = q.shape
    blocks = blocks_of(t, bs)
    nb = len(blocks)
    sets = []
    for b in range(bsz):
        per_h = []
        for h in range(nh):
            s = (q[b, h] @ k[b, h].t()) / math.sqrt(d)
            if causal:
                s = s.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf"))
            p = torch.softmax(s, -1)
            rows = []
            for i in range(nb):
                ri = list(blocks[i])
                scores = [float(p[ri][:, list(blocks[j])].sum()) / len(ri) for j in range(nb)]
                allowed = [(j <= i) or not causal for j in range(nb)]
                budget = None if mass is not None else naive_budget(sum(allowed), density, top_k)
                rows.append(naive_select(scores, allowed, {i}, budget, mass))
            per_h.append(rows)
        sets.append(per_h)
    return as_mask(sets, nb)


@pytest.mark.parametrize(
    ("t", "bs", "density", "top_k", "mass", "causal"),
    [
        (70, 16, 0.3, None, None, True),
        (64, 8, None, 2, None, False),
        (60, 8, None, None, 0.8, True),
        (45, 16, None, None, 0.5, False),
        (40, 8, None, None, 1.0, True),
    ],
)
def test_sparsed_blocks_match_the_loop_reference(
    t: int, bs: int, density: float | None, top_k: int | None, mass: float | None, causal: bool
) -> None:
    q, k = qk(2, 2, t, 8, seed=t + 1)
    got = gpu.sparsed_blocks(q, k, block_size=bs, density=density, top_k=top_k, mass=mass, causal=causal)
    assert torch.equal(got, naive_sparsed(q, k, bs, density, top_k, mass, causal))


def test_sparsed_blocks_chunked_equals_one_chunk() -> None:
    q, k = qk(1, 2, 100, 8, seed=5)
    small = gpu.sparsed_blocks(q, k, block_size=8, mass=0.7, memory_budget_mb=1e-4)  # one block of rows a chunk
    big = gpu.sparsed_blocks(q, k, block_size=8, mass=0.7)
    assert torch.equal(small, big)
    from sparsecore.gpu._blocks import _block_mass

    m = _block_mass(q, k, 8, True, 8**-0.5, 100)
    torch.testing.assert_close(m.sum(-1), torch.ones(1, 2, 13, dtype=torch.float64))  # each row of blocks sums to 1


def test_sparsed_mask_cache_computes_once_per_key_and_shape() -> None:
    cache = gpu.SparsedMaskCache(block_size=8, mass=0.9)
    q, k = qk(1, 2, 40, 8, seed=6)
    m0 = cache.get(0, q, k)
    q2, k2 = qk(1, 2, 40, 8, seed=7)
    assert cache.get(0, q2, k2) is m0  # reused at a later step
    assert cache.computed == 1
    cache.get(1, q2, k2)
    cache.get(0, *qk(1, 2, 48, 8, seed=8))  # a new shape: recomputed
    assert cache.computed == 3
    assert len(cache) == 2
    cache.clear()
    assert len(cache) == 0
    assert torch.equal(m0, gpu.sparsed_blocks(q, k, block_size=8, mass=0.9))
    with pytest.raises(InvalidArgumentError, match="kwargs"):
        gpu.SparsedMaskCache(block_sise=8)


def naive_routing(q: Tensor, k: Tensor, bs: int, nc: int, iters: int, seed: int, causal: bool) -> Tensor:
    bsz, nh, t, _ = q.shape
    gen = torch.Generator().manual_seed(seed)
    blocks = blocks_of(t, bs)
    nb = len(blocks)
    nc = min(nc, 2 * t)
    sets = []
    for b in range(bsz):
        per_h = []
        for h in range(nh):
            x = torch.cat([q[b, h], k[b, h]])
            x = x / x.norm(dim=1, keepdim=True)
            cent = x[torch.randperm(2 * t, generator=gen)[:nc]]
            for _ in range(iters + 1):
                assign = [int(torch.argmax(cent @ x[n])) for n in range(2 * t)]
                new = []
                for c in range(nc):
                    members = [x[n] for n in range(2 * t) if assign[n] == c]
                    s = torch.stack(members).sum(0) if members else None
                    new.append(cent[c] if s is None or float(s.norm()) == 0 else s / s.norm())
                cent = torch.stack(new)
            rows = []
            for i in range(nb):
                qc = {assign[n] for n in blocks[i]}
                keep = {j for j in range(nb) if qc & {assign[t + n] for n in blocks[j]}} | {i}
                rows.append({j for j in keep if j <= i or not causal})
            per_h.append(rows)
        sets.append(per_h)
    return as_mask(sets, nb)


@pytest.mark.parametrize(("t", "bs", "nc", "iters", "causal"), [(40, 8, 6, 3, True), (27, 8, 4, 0, False)])
def test_routing_blocks_match_the_loop_reference(t: int, bs: int, nc: int, iters: int, causal: bool) -> None:
    q, k = qk(2, 2, t, 4, seed=t + 2)
    got = gpu.routing_blocks(q, k, block_size=bs, n_clusters=nc, iters=iters, seed=3, causal=causal)
    assert torch.equal(got, naive_routing(q, k, bs, nc, iters, 3, causal))


def test_routing_blocks_are_deterministic_for_a_seed_and_sparser_with_more_clusters() -> None:
    q, k = qk(1, 2, 128, 8, seed=9, dtype=torch.float32)
    a = gpu.routing_blocks(q, k, block_size=4, n_clusters=32, seed=1)
    assert torch.equal(a, gpu.routing_blocks(q, k, block_size=4, n_clusters=32, seed=1))
    few = gpu.routing_blocks(q, k, block_size=4, n_clusters=1, seed=1)
    assert bool(few.equal(torch.ones(32, 32, dtype=torch.bool).tril().expand_as(few)))  # one cluster: all causal
    assert int(a.sum()) < int(few.sum())


@pytest.mark.parametrize("name", ["minference", "sparsed", "routing"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_builders_keep_the_diagonal_and_nothing_above_it(name: str, dtype: DType) -> None:
    q, k = qk(2, 2, 77, 16, seed=11, dtype=dtype)
    builders: dict[str, Callable[..., Tensor]] = {
        "minference": gpu.minference_blocks,
        "sparsed": gpu.sparsed_blocks,
        "routing": gpu.routing_blocks,
    }
    fn = builders[name]
    mask = fn(q, k, block_size=16)
    nb = 5
    assert mask.shape == (2, 2, nb, nb)
    assert mask.device == q.device
    assert bool(mask.diagonal(dim1=-2, dim2=-1).all())
    assert not bool(mask.triu(1).any())
    # Non-causal: blocks above the diagonal may be kept, the diagonal still is.
    free = fn(q, k, block_size=16, causal=False)
    assert bool(free.diagonal(dim1=-2, dim2=-1).all())
    # The table feeds block_sparse_attention: every query sees at least itself, so the output is finite.
    v = torch.randn(2, 2, 77, 16).to(dtype)
    out = gpu.block_sparse_attention(q, k, v, mask, block_size=16, causal=True)
    assert bool(out.float().isfinite().all())


@pytest.mark.parametrize("density", [0.05, 0.25, 0.5, 1.0])
def test_density_is_respected_per_row(density: float) -> None:
    q, k = qk(1, 4, 160, 8, seed=12)
    nb = 20
    fns: list[Callable[..., Tensor]] = [gpu.minference_blocks, gpu.sparsed_blocks]
    for fn in fns:
        kwargs = {"sink_blocks": 0} if fn is gpu.minference_blocks else {}
        mask = fn(q, k, block_size=8, density=density, **kwargs)
        rows = mask.sum(-1)
        want = torch.tensor([max(1, math.ceil((i + 1) * density)) for i in range(nb)])
        assert torch.equal(rows, want.expand_as(rows)), fn
    full = gpu.minference_blocks(q, k, block_size=8, density=1.0)
    assert torch.equal(full, torch.ones(nb, nb, dtype=torch.bool).tril().expand_as(full))


def test_empty_sequence_gives_an_empty_table() -> None:
    q = torch.zeros(1, 2, 0, 4)
    for fn in (gpu.minference_blocks, gpu.sparsed_blocks, gpu.routing_blocks):
        assert fn(q, q).shape == (1, 2, 0, 0)


def test_builders_reject_bad_arguments() -> None:
    q, k = qk(1, 2, 20, 4, seed=13, dtype=torch.float32)
    for fn in (gpu.minference_blocks, gpu.sparsed_blocks, gpu.routing_blocks):
        with pytest.raises(ShapeMismatchError, match="k"):
            fn(q, k[:, :1])
        with pytest.raises(ShapeMismatchError, match="q"):
            fn(q[0], k[0])
        with pytest.raises(DTypeError, match="q"):
            fn(q.long(), k)
        with pytest.raises(DTypeError, match="k"):
            fn(q, "k")  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError, match="block_size"):
            fn(q, k, block_size=0)
        with pytest.raises(InvalidArgumentError, match="causal"):
            fn(q, k, causal=1)  # type: ignore[arg-type]
    for fn2 in (gpu.minference_blocks, gpu.sparsed_blocks):
        with pytest.raises(InvalidArgumentError, match="density"):
            fn2(q, k, density=0.0)
        with pytest.raises(InvalidArgumentError, match="density"):
            fn2(q, k, density=1.5)
        with pytest.raises(InvalidArgumentError, match="density, top_k"):
            fn2(q, k, density=0.5, top_k=2)
        with pytest.raises(InvalidArgumentError, match="top_k"):
            fn2(q, k, top_k=0)
    with pytest.raises(InvalidArgumentError, match="sink_blocks"):
        gpu.minference_blocks(q, k, sink_blocks=-1)
    with pytest.raises(InvalidArgumentError, match="local_blocks"):
        gpu.minference_blocks(q, k, local_blocks=0)
    with pytest.raises(InvalidArgumentError, match="mass"):
        gpu.sparsed_blocks(q, k, mass=0.5, density=0.2)
    with pytest.raises(InvalidArgumentError, match="mass"):
        gpu.sparsed_blocks(q, k, mass=1.5)
    with pytest.raises(InvalidArgumentError, match="memory_budget_mb"):
        gpu.sparsed_blocks(q, k, memory_budget_mb=0)
    with pytest.raises(InvalidArgumentError, match="n_clusters"):
        gpu.routing_blocks(q, k, n_clusters=0)
    with pytest.raises(InvalidArgumentError, match="iters"):
        gpu.routing_blocks(q, k, iters=-1)
    with pytest.raises(InvalidArgumentError, match="seed"):
        gpu.routing_blocks(q, k, seed=-1)


@pytest.mark.parametrize("causal", [False, True])
def test_minference_with_left_padding_of_whole_blocks_equals_the_unpadded_table(causal: bool) -> None:
    # Row 1 is row 0's last 48 positions behind 32 padding positions (two blocks of 16): the real part of its table
    # is the table of the 48 real positions alone, and no padding block is ever kept.
    q, k = qk(1, 2, 48, 8, seed=4)
    pad = 32
    qp = torch.cat([torch.randn(1, 2, pad, 8, dtype=torch.float64) * 50, q], 2)  # loud padding vectors
    kp = torch.cat([torch.randn(1, 2, pad, 8, dtype=torch.float64) * 50, k], 2)
    real = torch.ones(1, pad + 48, dtype=torch.bool)
    real[0, :pad] = False
    alone = gpu.minference_blocks(q, k, block_size=16, top_k=2, causal=causal)
    padded = gpu.minference_blocks(qp, kp, block_size=16, top_k=2, causal=causal, key_padding_mask=real)
    assert torch.equal(padded[..., 2:, 2:], alone)
    assert not padded[..., :2].any()  # padding key blocks
    assert padded[0, :, 2:, 2].all()  # the sink is the first real block


def test_minference_padding_means_skip_padding_positions_within_a_block() -> None:
    q, k = qk(2, 1, 40, 4, seed=6)
    real = torch.ones(2, 40, dtype=torch.bool)
    real[1, 35:] = False  # right padding inside the last block
    k_changed = k.clone()
    k_changed[1, :, 35:] = 1e3  # padding keys are ignored by the block means
    one = gpu.minference_blocks(q, k, block_size=16, density=0.5, causal=False, key_padding_mask=real)
    assert torch.equal(
        one, gpu.minference_blocks(q, k_changed, block_size=16, density=0.5, causal=False, key_padding_mask=real)
    )
    with pytest.raises(DTypeError, match="key_padding_mask"):
        gpu.minference_blocks(q, k, key_padding_mask=real.int())
    with pytest.raises(ShapeMismatchError, match="key_padding_mask"):
        gpu.minference_blocks(q, k, key_padding_mask=real[:, :39])


@pytest.mark.parametrize("causal", [False, True])
def test_sparsed_with_left_padding_of_whole_blocks_equals_the_unpadded_table(causal: bool) -> None:
    q, k = qk(2, 2, 48, 8, seed=7)
    pad = 32
    qp = torch.cat([torch.randn(2, 2, pad, 8, dtype=torch.float64) * 50, q], 2)
    kp = torch.cat([torch.randn(2, 2, pad, 8, dtype=torch.float64) * 50, k], 2)
    real = torch.ones(2, pad + 48, dtype=torch.bool)
    real[:, :pad] = False
    for kw in ({"top_k": 2}, {"mass": 0.8}):
        alone = gpu.sparsed_blocks(q, k, block_size=16, causal=causal, **kw)
        padded = gpu.sparsed_blocks(qp, kp, block_size=16, causal=causal, key_padding_mask=real, **kw)
        assert torch.equal(padded[..., 2:, 2:], alone)
        assert not padded[..., 2:, :2].any()  # real queries keep no padding block
    with pytest.raises(ShapeMismatchError, match="key_padding_mask"):
        gpu.sparsed_blocks(q, k, key_padding_mask=real)


def test_routing_ignores_padding_positions() -> None:
    q, k = qk(2, 2, 64, 8, seed=8)
    real = torch.ones(2, 64, dtype=torch.bool)
    real[0, :32] = False  # two whole blocks of left padding
    real[1, 50:] = False  # right padding inside the last block
    loud_q, loud_k = q.clone(), k.clone()
    loud_q[0, :, :32] = loud_k[0, :, :32] = 40.0
    loud_q[1, :, 50:] = -40.0
    loud_k[1, :, 50:] = 7.0
    for causal in (False, True):
        kw = {"block_size": 16, "n_clusters": 6, "iters": 3, "causal": causal, "key_padding_mask": real}
        got = gpu.routing_blocks(q, k, **kw)
        assert torch.equal(got, gpu.routing_blocks(loud_q, loud_k, **kw))
        assert not got[0, :, :, :2].any()  # padding key blocks are never kept
        assert got[0, :, 2:, 2:].diagonal(dim1=-2, dim2=-1).all()  # real blocks keep their diagonal
