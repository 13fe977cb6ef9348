"""The package as a user imports it: submodules reachable as attributes, loaded lazily; license files."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_submodules_are_attributes_loaded_on_first_use() -> None:
    code = textwrap.dedent(
        """
        import sys
        import sparsecore
        lazy = ["datasets", "encoders", "eval", "fusion", "gpu", "lsse", "pursuit", "sdr", "testing"]
        assert not any(f"sparsecore.{m}" in sys.modules for m in lazy), sorted(sys.modules)
        assert "torch" not in sys.modules and "scipy" not in sys.modules
        assert callable(sparsecore.pursuit.omp)
        assert "sparsecore.pursuit" in sys.modules and "sparsecore.sdr" not in sys.modules
        for m in lazy:
            assert getattr(sparsecore, m).__name__ == f"sparsecore.{m}"
            assert m in dir(sparsecore)
        try:
            sparsecore.no_such_module
        except AttributeError as e:
            assert "no_such_module" in str(e)
        else:
            raise SystemExit("missing attribute did not raise")
        print("ok")
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


def test_license_files_match_the_declared_license() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'license = { text = "MIT OR Apache-2.0" }' in pyproject
    assert "Permission is hereby granted, free of charge" in (ROOT / "LICENSE-MIT").read_text()
    assert "Apache License" in (ROOT / "LICENSE-APACHE").read_text()
