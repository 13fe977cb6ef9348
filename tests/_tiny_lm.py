"""A tiny random Llama model, an offline word-level tokenizer and a reference TopK SAE, for the SAE/LLM tests."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

_WORD_TEXT = (
    "the a an of to in and is was for on with as by at from that this it be are were not or but he she they we "
    "you cat dog bird fish tree house car road river hill sun moon star rain snow wind fire water stone gold "
    "iron red blue green black white big small old new fast slow good bad hot cold run walk fly swim eat sleep "
    "see hear read write sing play work rest one two three four five six seven eight nine ten day night year "
    "time"
)
WORDS = _WORD_TEXT.split()
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
VOCAB = SPECIALS + WORDS
assert len(VOCAB) <= 100


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over :data:`VOCAB` that prepends ``<s>``; ids 0..len(VOCAB) - 1."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {w: i for i, w in enumerate(VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )


def tiny_llama(n_layers: int = 3, seed: int = 0) -> LlamaForCausalLM:
    """A random Llama (hidden 32, vocab 100) in eval mode."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=100,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = LlamaForCausalLM(cfg)
    model.eval()  # type: ignore[no-untyped-call]
    return model


def texts(n: int, seed: int = 0, lo: int = 3, hi: int = 20) -> list[str]:
    """``n`` random sentences of ``lo`` to ``hi`` words."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(lo, hi + 1, (1,), generator=g))
        idx = torch.randint(0, len(WORDS), (length,), generator=g).tolist()
        out.append(" ".join(WORDS[i] for i in idx))
    return out


class RefTopKSAE(nn.Module):
    """Reference TopK SAE: ``codes = topk(relu(W_enc (x - b_dec) + b_enc))``, ``recon = codes W_dec + b_dec``."""

    def __init__(self, d_in: int, d_sae: int, k: int, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.d_in, self.d_sae, self.k = d_in, d_sae, k
        w = torch.randn(d_sae, d_in, generator=g)
        w = w / w.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w)
        self.W_enc = nn.Parameter(w.t().clone())
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(d_in))

    def encode(self, x: Tensor) -> Tensor:
        pre = torch.relu((x - self.b_dec) @ self.W_enc + self.b_enc)
        vals, idx = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, idx, vals)

    def decode(self, codes: Tensor) -> Tensor:
        return codes @ self.W_dec + self.b_dec

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        codes = self.encode(x)
        return self.decode(codes), codes


def identity_sae(d_in: int) -> RefTopKSAE:
    """A TopK SAE that reconstructs exactly: latents ``relu(x)`` and ``relu(-x)``, ``k = d_in``."""
    sae = RefTopKSAE(d_in, 2 * d_in, d_in)
    eye = torch.eye(d_in)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
    return sae


def zero_sae(d_in: int, d_sae: int = 16) -> RefTopKSAE:
    """A TopK SAE whose reconstruction is always 0 (zero decoder and bias)."""
    sae = RefTopKSAE(d_in, d_sae, 4)
    with torch.no_grad():
        sae.W_dec.zero_()
    return sae
