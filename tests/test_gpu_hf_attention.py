"""sparsecore.gpu.register_attention on a tiny random transformers Llama (no downloads)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _tiny_lm import tiny_llama  # noqa: E402
from sparsecore import gpu  # noqa: E402
from sparsecore.exceptions import InvalidArgumentError  # noqa: E402
from sparsecore.gpu import _hf  # noqa: E402
from torch import Tensor  # noqa: E402

T = 50  # > 3 blocks of 16


def ids(b: int = 2, t: int = T, seed: int = 0) -> Tensor:
    out: Tensor = torch.randint(3, 100, (b, t), generator=torch.Generator().manual_seed(seed))
    return out


def logits(model: object, name: str, input_ids: Tensor, **kwargs: object) -> Tensor:
    model.set_attn_implementation(name)  # type: ignore[attr-defined]
    with torch.no_grad():
        out: Tensor = model(input_ids=input_ids, **kwargs).logits  # type: ignore[operator]
    return out


def left_padded(x: Tensor, pad: int) -> tuple[Tensor, Tensor, Tensor]:
    """Row 1 of ``x`` with its first ``pad`` tokens turned into left padding: ids, attention mask, positions."""
    padded = x.clone()
    padded[1, :pad] = 0
    mask = torch.ones_like(padded)
    mask[1, :pad] = 0
    return padded, mask, (mask.cumsum(-1) - 1).clamp(min=0)


def test_all_blocks_equal_sdpa_and_generation_matches() -> None:
    name = gpu.register_attention("sc_test_dense", builder="minference", block_size=16, density=1.0)
    assert name == "sc_test_dense"
    model = tiny_llama()
    x = ids()
    torch.testing.assert_close(logits(model, name, x), logits(model, "sdpa", x), atol=1e-5, rtol=1e-5)
    model.set_attn_implementation("sdpa")
    want = model.generate(x, max_new_tokens=6, do_sample=False)
    model.set_attn_implementation(name)
    got = model.generate(x, max_new_tokens=6, do_sample=False)
    assert torch.equal(got, want)


def test_from_config_takes_the_registered_name() -> None:
    from transformers import AutoModelForCausalLM

    name = gpu.register_attention("sc_test_cfg", builder="sparsed", block_size=16, mass=0.9)
    cfg = tiny_llama().config
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation=name)  # type: ignore[no-untyped-call]
    assert model.config._attn_implementation == name
    with torch.no_grad():
        out = model(input_ids=ids()).logits
    assert bool(out.isfinite().all())


@pytest.mark.parametrize("builder", ["minference", "sparsed", "routing"])
def test_sparse_builders_change_the_output_and_generate(builder: str) -> None:
    choices: dict[str, dict[str, object]] = {
        "minference": {"density": 0.1, "sink_blocks": 0},
        "sparsed": {"top_k": 1},
        "routing": {"n_clusters": 64, "iters": 2},
    }
    kwargs = choices[builder]
    name = gpu.register_attention(f"sc_test_{builder}", builder=builder, block_size=16, **kwargs)
    model = tiny_llama()
    x = ids(t=80)
    sparse = logits(model, name, x)
    dense = logits(model, "sdpa", x)
    assert bool(sparse.isfinite().all())
    assert not torch.allclose(sparse, dense, atol=1e-4)
    # The first block sees only itself under every builder: identical there.
    torch.testing.assert_close(sparse[:, :16], dense[:, :16], atol=1e-5, rtol=1e-5)
    model.set_attn_implementation(name)
    out = model.generate(x, max_new_tokens=4, do_sample=False)
    assert out.shape == (2, 84)


def test_left_padding_is_respected() -> None:
    name = gpu.register_attention("sc_test_pad", block_size=16, density=1.0)
    model = tiny_llama()
    x = ids(t=40)
    pad = 12
    short = x[1:, pad:]
    padded, mask, pos = left_padded(x, pad)
    got = logits(model, name, padded, attention_mask=mask, position_ids=pos)
    alone = logits(model, name, short)
    torch.testing.assert_close(got[1, pad:], alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[0], logits(model, name, x[:1])[0], atol=1e-5, rtol=1e-5)
    assert bool(got.isfinite().all())
    # Generation with a left-padded batch equals sdpa's.
    model.set_attn_implementation("sdpa")
    want = model.generate(padded, attention_mask=mask, max_new_tokens=4, do_sample=False)
    model.set_attn_implementation(name)
    assert torch.equal(model.generate(padded, attention_mask=mask, max_new_tokens=4, do_sample=False), want)


def test_kernel_path_gives_the_same_logits(monkeypatch: pytest.MonkeyPatch) -> None:
    # On CUDA without padding the layer calls block_sparse_attention; force that branch on CPU (its reference).
    name = gpu.register_attention("sc_test_kernel", block_size=16, density=0.3)
    model = tiny_llama()
    x = ids(t=64)
    masked = logits(model, name, x)
    monkeypatch.setattr(_hf, "_kernel_path", lambda q, bs: True)
    import sparsecore.gpu._attention as attention_module

    calls = []
    original = attention_module.block_sparse_attention

    def counting(*args: object, **kwargs: object) -> Tensor:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(attention_module, "block_sparse_attention", counting)
    torch.testing.assert_close(logits(model, name, x), masked, atol=1e-5, rtol=1e-5)
    assert len(calls) == 3  # one per layer


def test_register_attention_rejects_bad_arguments() -> None:
    with pytest.raises(InvalidArgumentError, match="name"):
        gpu.register_attention("")
    with pytest.raises(InvalidArgumentError, match="builder"):
        gpu.register_attention("x", builder="moba")
    with pytest.raises(InvalidArgumentError, match="builder"):
        gpu.register_attention("x", builder=3)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="block_size"):
        gpu.register_attention("x", block_size=0)
    with pytest.raises(InvalidArgumentError, match="builder_kwargs"):
        gpu.register_attention("x", builder="routing", density=0.5)
    with pytest.raises(InvalidArgumentError, match="causal"):
        gpu.register_attention("x", causal=False)
    with pytest.raises(InvalidArgumentError, match="key_padding_mask"):
        gpu.register_attention("x", key_padding_mask=None)


def test_kernel_path_takes_a_left_padded_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    # transformers' boolean padding mask becomes the kernel's key padding mask (CUDA path forced on CPU).
    name = gpu.register_attention("sc_test_kernel_pad", block_size=16, density=0.3)
    model = tiny_llama()
    x = ids(t=64)
    pad = 21
    padded, mask, pos = left_padded(x, pad)
    dense_path = logits(model, name, padded, attention_mask=mask, position_ids=pos)
    monkeypatch.setattr(_hf, "_kernel_path", lambda q, bs: True)
    import sparsecore.gpu._attention as attention_module

    seen: list[object] = []
    original = attention_module.block_sparse_attention

    def counting(*args: object, **kwargs: object) -> Tensor:
        seen.append(kwargs.get("key_padding_mask"))
        return original(*args, **kwargs)

    monkeypatch.setattr(attention_module, "block_sparse_attention", counting)
    kernel_path = logits(model, name, padded, attention_mask=mask, position_ids=pos)
    assert len(seen) == 3  # one call per layer, each with the padding
    assert seen[0] is seen[1] is seen[2]  # recognised once per forward, not per layer
    want = torch.ones(2, 64, dtype=torch.bool)
    want[1, :pad] = False
    assert all(isinstance(m, Tensor) and torch.equal(m, want) for m in seen)
    # Real positions agree with the dense path (padding positions are don't-care: zeros here, anything there).
    torch.testing.assert_close(kernel_path[0], dense_path[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(kernel_path[1, pad:], dense_path[1, pad:], atol=1e-5, rtol=1e-5)


def test_only_exact_padding_masks_take_the_kernel() -> None:
    t = 8
    real = torch.ones(2, t, dtype=torch.bool)
    real[1, :3] = False
    causal = real[:, None, None, :] & torch.ones(t, t, dtype=torch.bool).tril()
    got = _hf._key_padding(causal, t, causal=True)
    assert got is not None
    assert torch.equal(got, real)
    window = causal & ~torch.ones(t, t, dtype=torch.bool).tril(-3)  # a sliding window: not padding
    assert _hf._key_padding(window, t, causal=True) is None
    assert _hf._key_padding(causal.float(), t, causal=True) is None
    assert _hf._key_padding(causal.expand(2, 2, t, t), t, causal=True) is None  # per head
