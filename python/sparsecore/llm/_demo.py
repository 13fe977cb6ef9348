"""The ``sparsecore llm`` demo: greedy generations with and without Jailbreak Antidote steering, side by side."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple, TextIO

import torch
from torch import nn

from sparsecore._io import atomic_write_bytes
from sparsecore._validate import check_texts, positive_int
from sparsecore.llm._steering import SafetySteering, safety_pairs

__all__ = ["DEMO_HELD_OUT", "SteeredGeneration", "chat_prompt", "run", "steering_demo"]

#: The last pairs of :func:`safety_pairs` are left out of the demo's fit; their prompts are the default ones.
DEMO_HELD_OUT = 2


class SteeredGeneration(NamedTuple):
    """One prompt's greedy continuation without and with steering."""

    prompt: str
    plain: str
    steered: str


def chat_prompt(tokenizer: Any, text: str) -> str:
    """``text`` as a user turn in the tokenizer's chat template (with the generation prompt), or as is without one.

    Parameters
    ----------
    tokenizer
        A transformers tokenizer.
    text
        The user's message.

    Returns
    -------
    str
    """
    if getattr(tokenizer, "chat_template", None):
        msg = [{"role": "user", "content": text}]
        return str(tokenizer.apply_chat_template(msg, tokenize=False, add_generation_prompt=True))
    return text


@torch.no_grad()
def steering_demo(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    steer: SafetySteering,
    *,
    alpha: float,
    sparsity: float = 0.05,
    selector: str = "abs_max",
    max_new_tokens: int = 32,
) -> list[SteeredGeneration]:
    """Greedy continuations of ``prompts`` without and with ``steer.apply(model, alpha, sparsity)``.

    Parameters
    ----------
    model
        A transformers causal LM (has ``generate``).
    tokenizer
        Its tokenizer; each prompt is wrapped with :func:`chat_prompt`.
    prompts
        The user messages.
    steer
        Fitted directions (:meth:`SafetySteering.fit`).
    alpha, sparsity, selector
        As :meth:`SafetySteering.apply`.
    max_new_tokens
        Tokens generated per prompt (fewer when the model ends its answer).

    Returns
    -------
    list of SteeredGeneration
        One per prompt, in order; the texts are the decoded new tokens (special tokens dropped).

    Raises
    ------
    InvalidArgumentError
        A bad ``alpha``, ``sparsity``, ``selector`` or ``max_new_tokens``.
    DTypeError
        ``prompts`` is not a sequence of strings.
    """
    texts = check_texts(prompts, "prompts")
    n_new = positive_int(max_new_tokens, "max_new_tokens")
    device = next(model.parameters()).device
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = getattr(tokenizer, "eos_token_id", None)
    generate: Any = model.generate  # transformers.GenerationMixin.generate

    def continuation(text: str) -> str:
        enc = tokenizer(chat_prompt(tokenizer, text), return_tensors="pt")
        enc = {k: v.to(device) for k, v in enc.items() if isinstance(v, torch.Tensor)}
        out = generate(**enc, max_new_tokens=n_new, do_sample=False, pad_token_id=pad)
        return str(tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)).strip()

    plain = [continuation(t) for t in texts]
    with steer.apply(model, alpha, sparsity, selector=selector):
        steered = [continuation(t) for t in texts]
    return [SteeredGeneration(t, p, s) for t, p, s in zip(texts, plain, steered, strict=True)]


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run ``sparsecore llm`` with parsed ``args``; prints to ``out`` (stdout by default); returns the exit status."""
    from sparsecore.sae import load_causal_lm

    stream = sys.stdout if out is None else out
    if args.threads is not None:
        torch.set_num_threads(positive_int(args.threads, "--threads"))
    model, tokenizer = load_causal_lm(args.model)
    harmful, harmless = safety_pairs()
    if args.steering is not None:
        steer = SafetySteering.load(args.steering)
    else:
        n_fit = len(harmful) - DEMO_HELD_OUT
        fit_h = [chat_prompt(tokenizer, t) for t in harmful[:n_fit]]
        fit_s = [chat_prompt(tokenizer, t) for t in harmless[:n_fit]]
        steer = SafetySteering.fit(model, tokenizer, fit_h, fit_s)
    if args.save_steering is not None:
        steer.save(args.save_steering)
    prompts = args.prompt or harmful[-DEMO_HELD_OUT:] + harmless[-DEMO_HELD_OUT:]
    rows = steering_demo(
        model,
        tokenizer,
        prompts,
        steer,
        alpha=args.alpha,
        sparsity=args.sparsity,
        selector=args.selector,
        max_new_tokens=args.max_new_tokens,
    )
    print(f"{steer!r}\nalpha {args.alpha:g}, {args.selector} {args.sparsity:g} of the entries kept\n", file=stream)
    for row in rows:
        print(f"prompt:   {row.prompt}\nplain:    {row.plain}\nsteered:  {row.steered}\n", file=stream)
    if args.json is not None:
        payload = {
            "alpha": args.alpha,
            "sparsity": args.sparsity,
            "selector": args.selector,
            "kept_layers": steer.kept,
            "generations": [row._asdict() for row in rows],
        }
        atomic_write_bytes(args.json, (json.dumps(payload, indent=2) + "\n").encode())
    return 0
