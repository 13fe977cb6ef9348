"""The release wheel installs and works in a fresh virtualenv that has numpy and nothing else.

Builds with this virtualenv's maturin into a temporary folder; Cargo output goes to ``target/wheel-test`` so
that reruns are incremental and never touch the ``target/release`` of ``make build``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import sparsecore

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
MATURIN = Path(sys.prefix) / "bin" / "maturin"
TARGET_DIR = ROOT / "target" / "wheel-test"


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
    cmd = [str(MATURIN), "build", "--release", "--interpreter", sys.executable, "-o", str(out)]
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
    assert "abi3" in wheel.name
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
