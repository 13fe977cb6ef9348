"""``sparsecore llm`` and :func:`sparsecore.llm.steering_demo` on a tiny random Llama (no download)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch", reason="the llm command needs the torch extra")

from _tiny_lm import texts, tiny_llama, tiny_tokenizer  # noqa: E402
from sparsecore.cli import main  # noqa: E402
from sparsecore.exceptions import InvalidArgumentError  # noqa: E402
from sparsecore.llm import SafetySteering, chat_prompt, steering_demo  # noqa: E402


@pytest.fixture(scope="module")
def model() -> Any:
    return tiny_llama(n_layers=3)


@pytest.fixture(scope="module")
def tok() -> Any:
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def steer(model: Any, tok: Any) -> SafetySteering:
    return SafetySteering.fit(model, tok, texts(8, seed=1), texts(8, seed=2), top_layers=0.67)


def _generate(model: Any, tok: Any, prompt: str, n: int) -> str:
    enc = tok(prompt, return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
    return str(tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)).strip()


def test_plain_column_is_the_unsteered_generation_and_alpha_zero_changes_nothing(
    model: Any, tok: Any, steer: SafetySteering
) -> None:
    prompts = texts(3, seed=5)
    rows = steering_demo(model, tok, prompts, steer, alpha=0.0, max_new_tokens=6)
    assert [r.prompt for r in rows] == prompts
    for r in rows:
        assert r.plain == _generate(model, tok, r.prompt, 6)
        assert r.steered == r.plain
    strong = steering_demo(model, tok, prompts, steer, alpha=200.0, sparsity=0.5, max_new_tokens=6)
    assert [r.plain for r in strong] == [r.plain for r in rows]
    assert any(r.steered != r.plain for r in strong)
    # what the steered column shows is the generation under apply()
    with steer.apply(model, 200.0, 0.5):
        assert strong[0].steered == _generate(model, tok, prompts[0], 6)
    assert _generate(model, tok, prompts[0], 6) == rows[0].plain  # hooks gone


def test_chat_prompt_without_a_template_is_the_text(tok: Any) -> None:
    assert chat_prompt(tok, "the cat") == "the cat"


def test_bad_arguments(model: Any, tok: Any, steer: SafetySteering) -> None:
    with pytest.raises(InvalidArgumentError, match="max_new_tokens"):
        steering_demo(model, tok, ["the cat"], steer, alpha=1.0, max_new_tokens=0)
    with pytest.raises(InvalidArgumentError, match="sparsity"):
        steering_demo(model, tok, ["the cat"], steer, alpha=1.0, sparsity=2.0)


def test_cli_fits_saves_prints_and_writes_json(
    tmp_path: Path, model: Any, tok: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "tiny"
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    saved, out_json = tmp_path / "steer.spc", tmp_path / "gen.json"
    argv = ["llm", "--model", str(folder), "--alpha", "50", "--sparsity", "0.5", "--max-new-tokens", "4"]
    argv += ["--prompt", "the cat run", "--prompt", "a big dog", "--save-steering", str(saved), "--json", str(out_json)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("prompt:   ") == 2
    assert "prompt:   the cat run" in printed
    payload = json.loads(out_json.read_text())
    assert [g["prompt"] for g in payload["generations"]] == ["the cat run", "a big dog"]
    fitted = SafetySteering.load(saved)
    assert payload["kept_layers"] == fitted.kept
    # loading the saved directions reproduces the same generations
    again = tmp_path / "again.json"
    argv2 = ["llm", "--model", str(folder), "--alpha", "50", "--sparsity", "0.5", "--max-new-tokens", "4"]
    argv2 += ["--prompt", "the cat run", "--prompt", "a big dog", "--steering", str(saved), "--json", str(again)]
    assert main(argv2) == 0
    assert json.loads(again.read_text())["generations"] == payload["generations"]
    capsys.readouterr()
    assert main(["llm", "--model", str(folder), "--max-new-tokens", "0"]) == 2
    assert "max_new_tokens" in capsys.readouterr().err
