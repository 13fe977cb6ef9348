//! Binding of `sparsecore_core::index`: `IndexCore`, a thread-safe handle to an index.
//!
//! Concurrency by snapshots: the handle holds the current version of the index as an `Arc<Index>`. A search
//! clones that `Arc` under a read lock held for nanoseconds, then searches the snapshot with no lock held, so it
//! sees the index entirely before or entirely after an update. Writers (`add`, `delete`, `compact`) take a
//! writer mutex (one writer at a time), do the costly work (validation, layout, compaction) against a snapshot
//! without blocking searches, then publish the new version: in place when no search holds the old one, else
//! as a clone (segments are shared, only the id arrays are copied). No lock is ever held inside the rayon pool:
//! a pool worker waiting for a lock while another job of the same pool holds it was the deadlock of searching
//! while adding. Locks are taken with the GIL released.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use sparsecore_core::index::{format, BuildParams, Index, SearchParams};
use sparsecore_core::parallel::{self, Progress};
use sparsecore_core::SparseError;

use crate::convert::contiguous;
use crate::detach::run;
use crate::errors::to_py;
use crate::sparse::CsrArg;

/// Progress of a running build, polled from Python while the build runs on another thread.
#[pyclass(frozen, module = "sparsecore._core")]
pub struct BuildProgress {
    inner: Arc<Progress>,
}

#[pymethods]
impl BuildProgress {
    #[new]
    fn new() -> Self {
        Self { inner: Arc::new(Progress::new()) }
    }

    /// (done, total) units; total is 0 until the build has sized its work.
    fn get(&self) -> (u64, u64) {
        self.inner.get()
    }
}

/// A handle to an inverted index (private; use `sparsecore.InvertedIndex`).
#[pyclass(frozen, module = "sparsecore._core")]
pub struct IndexCore {
    /// The current version; replaced or changed only by a writer holding `writer`.
    current: RwLock<Arc<Index>>,
    /// Serializes writers, so that the snapshot a writer prepares against is still current when it publishes.
    writer: Mutex<()>,
}

fn poisoned<T>(_: T) -> SparseError {
    SparseError::ThreadPool("the index lock is poisoned by an earlier panic".into())
}

impl IndexCore {
    fn new(idx: Index) -> Self {
        Self { current: RwLock::new(Arc::new(idx)), writer: Mutex::new(()) }
    }

    /// The current version of the index (the read lock is held only to clone the `Arc`).
    fn snapshot(&self) -> Result<Arc<Index>, SparseError> {
        Ok(Arc::clone(&*self.current.read().map_err(poisoned)?))
    }

    /// Become the one writer (call outside the rayon pool, with the GIL released).
    fn lock_writer(&self) -> Result<MutexGuard<'_, ()>, SparseError> {
        self.writer.lock().map_err(poisoned)
    }

    /// Apply `f` to the current version and publish the result; the caller holds the writer guard. Changes the
    /// index in place when no search holds it; otherwise changes a clone (searches keep their snapshot) and
    /// swaps it in. `f` must leave the index unchanged when it fails.
    fn publish<R>(
        &self,
        _writer: &MutexGuard<'_, ()>,
        f: impl FnOnce(&mut Index) -> Result<R, SparseError>,
    ) -> Result<R, SparseError> {
        {
            let mut cur = self.current.write().map_err(poisoned)?;
            if let Some(idx) = Arc::get_mut(&mut cur) {
                return f(idx);
            }
        }
        // Cloned outside the lock: searches go on meanwhile, and no other writer can change `current`.
        let mut next = Index::clone(&*self.snapshot()?);
        let out = f(&mut next)?;
        *self.current.write().map_err(poisoned)? = Arc::new(next);
        Ok(out)
    }

    /// An update in two halves: `prepare` (the costly, read-only half) runs on the pool against a snapshot while
    /// searches go on, then `commit` publishes its result. Call with the GIL released.
    fn update<P: Send, R>(
        &self,
        num_threads: Option<usize>,
        prepare: impl FnOnce(&Index) -> Result<P, SparseError> + Send,
        commit: impl FnOnce(&mut Index, P) -> Result<R, SparseError>,
    ) -> Result<R, SparseError> {
        let writer = self.lock_writer()?;
        let snap = self.snapshot()?;
        let prepared = parallel::install(num_threads, || prepare(&snap))??;
        // Dropped before publishing, so that the update happens in place when no search holds the index.
        drop(snap);
        self.publish(&writer, |idx| commit(idx, prepared))
    }
}

/// Run a search on `idx`, turning a panic into an error when it comes from the index's file having changed
/// under the search (the check before each search cannot see a change that lands during it). Any other panic is
/// a bug and propagates.
fn guarded<T>(idx: &Index, f: impl FnOnce() -> Result<T, SparseError>) -> Result<T, SparseError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(panic) => match idx.check_file() {
            Err(changed) => Err(changed),
            Ok(()) if idx.is_unverified() => Err(SparseError::Format(UNVERIFIED_FAILURE.into())),
            Ok(()) => resume_unwind(panic),
        },
    }
}

/// What a failed internal check of an index loaded with `verify=False` reports.
const UNVERIFIED_FAILURE: &str = "the index data failed an internal check: the file, loaded with verify=False, is \
                                  corrupted; load it with verify=True to find the damage";

/// Allowed-set bitset from either external ids or a boolean mask over external ids.
fn allowed_bits(
    idx: &Index,
    allow_ids: Option<&[i64]>,
    allow_mask: Option<&[bool]>,
) -> Result<Option<Vec<u64>>, SparseError> {
    match (allow_ids, allow_mask) {
        (Some(ids), _) => Ok(Some(idx.allow_ids(ids))),
        (None, Some(mask)) => idx.allow_mask(mask).map(Some),
        (None, None) => Ok(None),
    }
}

type HitArrays<'py> = (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<f32>>);
type SearchArrays<'py> = (Bound<'py, PyArray2<i64>>, Bound<'py, PyArray2<f32>>);

#[pymethods]
impl IndexCore {
    /// Build an index over CSR docs (non-negative weights) with optional int64 external ids.
    #[staticmethod]
    #[pyo3(signature = (docs, ids=None, block_size=32, reorder=true, num_threads=None, progress=None))]
    fn build(
        py: Python<'_>,
        docs: CsrArg<'_>,
        ids: Option<PyReadonlyArray1<'_, i64>>,
        block_size: usize,
        reorder: bool,
        num_threads: Option<usize>,
        progress: Option<&BuildProgress>,
    ) -> PyResult<Self> {
        let view = docs.view("docs")?;
        let ids = ids.as_ref().map(|a| contiguous(a, "ids")).transpose()?;
        let params = BuildParams { block_size, reorder };
        let prog = progress.map(|p| Arc::clone(&p.inner));
        let idx = run(py, num_threads, || Index::build_with_progress(&view, ids, params, prog.as_deref()))?;
        Ok(Self::new(idx))
    }

    /// Top-k of every query row: (ids int64 (nq, k), scores float32 (nq, k)), padded with -1 / -inf.
    #[pyo3(signature = (queries, k, alpha=1.0, beta=1.0, patience=0.0, allow_ids=None, allow_mask=None, num_threads=None))]
    fn search<'py>(
        &self,
        py: Python<'py>,
        queries: CsrArg<'py>,
        k: usize,
        alpha: f32,
        beta: f32,
        patience: f32,
        allow_ids: Option<PyReadonlyArray1<'py, i64>>,
        allow_mask: Option<PyReadonlyArray1<'py, bool>>,
        num_threads: Option<usize>,
    ) -> PyResult<SearchArrays<'py>> {
        let qv = queries.view("queries")?;
        let ai = allow_ids.as_ref().map(|a| contiguous(a, "filter")).transpose()?;
        let am = allow_mask.as_ref().map(|a| contiguous(a, "filter")).transpose()?;
        let params = SearchParams { k, alpha, beta, patience };
        let nq = qv.n_rows();
        let top = py
            .detach(|| {
                let idx = self.snapshot()?;
                let bits = allowed_bits(&idx, ai, am)?;
                parallel::install(num_threads, || guarded(&idx, || idx.search(&qv, &params, bits.as_deref())))?
            })
            .map_err(to_py)?;
        let k = top.k;
        let ids = Array2::from_shape_vec((nq, k), top.ids).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        let scores = Array2::from_shape_vec((nq, k), top.scores).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        Ok((ids.into_pyarray(py), scores.into_pyarray(py)))
    }

    /// Top-k of one query (sorted uint32 term ids, float32 weights) on the calling thread: 1-D (ids, scores),
    /// only real hits (no padding).
    #[pyo3(signature = (indices, values, k, alpha=1.0, beta=1.0, patience=0.0, allow_ids=None, allow_mask=None))]
    fn search_one<'py>(
        &self,
        py: Python<'py>,
        indices: PyReadonlyArray1<'py, u32>,
        values: PyReadonlyArray1<'py, f32>,
        k: usize,
        alpha: f32,
        beta: f32,
        patience: f32,
        allow_ids: Option<PyReadonlyArray1<'py, i64>>,
        allow_mask: Option<PyReadonlyArray1<'py, bool>>,
    ) -> PyResult<HitArrays<'py>> {
        let t = contiguous(&indices, "indices")?;
        let v = contiguous(&values, "values")?;
        let ai = allow_ids.as_ref().map(|a| contiguous(a, "filter")).transpose()?;
        let am = allow_mask.as_ref().map(|a| contiguous(a, "filter")).transpose()?;
        let params = SearchParams { k, alpha, beta, patience };
        let hits = py
            .detach(|| {
                let idx = self.snapshot()?;
                let bits = allowed_bits(&idx, ai, am)?;
                guarded(&idx, || idx.search_one(t, v, &params, bits.as_deref()))
            })
            .map_err(to_py)?;
        let ids: Vec<i64> = hits.iter().map(|h| h.id).collect();
        let scores: Vec<f32> = hits.iter().map(|h| h.score).collect();
        Ok((ids.into_pyarray(py), scores.into_pyarray(py)))
    }

    /// Work one query does: dict with blocks_bounded, blocks_visited, docs_scored, docs_rescored (and n_hits).
    #[pyo3(signature = (indices, values, k, alpha=1.0, beta=1.0, patience=0.0))]
    fn explain_one<'py>(
        &self,
        py: Python<'py>,
        indices: PyReadonlyArray1<'py, u32>,
        values: PyReadonlyArray1<'py, f32>,
        k: usize,
        alpha: f32,
        beta: f32,
        patience: f32,
    ) -> PyResult<Bound<'py, PyDict>> {
        let t = contiguous(&indices, "indices")?;
        let v = contiguous(&values, "values")?;
        let params = SearchParams { k, alpha, beta, patience };
        let (hits, st) = py
            .detach(|| {
                let idx = self.snapshot()?;
                guarded(&idx, || idx.search_one_stats(t, v, &params, None))
            })
            .map_err(to_py)?;
        let d = PyDict::new(py);
        d.set_item("n_hits", hits.len())?;
        d.set_item("blocks_bounded", st.blocks_bounded)?;
        d.set_item("blocks_visited", st.blocks_visited)?;
        d.set_item("docs_scored", st.docs_scored)?;
        d.set_item("docs_rescored", st.docs_rescored)?;
        Ok(d)
    }

    /// Add documents (new segment); returns their external ids.
    #[pyo3(signature = (docs, ids=None, num_threads=None))]
    fn add<'py>(
        &self,
        py: Python<'py>,
        docs: CsrArg<'py>,
        ids: Option<PyReadonlyArray1<'py, i64>>,
        num_threads: Option<usize>,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let view = docs.view("docs")?;
        let ids = ids.as_ref().map(|a| contiguous(a, "ids")).transpose()?;
        let out = py
            .detach(|| self.update(num_threads, |idx| idx.prepare_add(&view, ids, None), Index::commit_add))
            .map_err(to_py)?;
        Ok(out.into_pyarray(py))
    }

    /// Delete documents by external id; returns how many were live.
    #[pyo3(signature = (ids, ignore_missing=false))]
    fn delete(&self, py: Python<'_>, ids: PyReadonlyArray1<'_, i64>, ignore_missing: bool) -> PyResult<usize> {
        let ids = contiguous(&ids, "ids")?;
        py.detach(|| {
            let writer = self.lock_writer()?;
            self.publish(&writer, |idx| idx.delete(ids, ignore_missing))
        })
        .map_err(to_py)
    }

    /// Fold segments and deletions into one freshly laid-out segment.
    #[pyo3(signature = (num_threads=None))]
    fn compact(&self, py: Python<'_>, num_threads: Option<usize>) -> PyResult<()> {
        py.detach(|| {
            self.update(num_threads, Index::compacted, |idx, compacted| {
                *idx = compacted;
                Ok(())
            })
        })
        .map_err(to_py)
    }

    /// Bytes per component.
    fn memory_usage<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (name, bytes) in self.snapshot().map_err(to_py)?.memory_usage() {
            d.set_item(name, bytes)?;
        }
        Ok(d)
    }

    /// External ids of the live documents, in insertion order.
    fn ids<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let idx = self.snapshot().map_err(to_py)?;
        let live: Vec<i64> = idx
            .ext_ids
            .iter()
            .enumerate()
            .filter(|(g, _)| (idx.deleted[g >> 6] >> (g & 63)) & 1 == 0)
            .map(|(_, &id)| id)
            .collect();
        Ok(live.into_pyarray(py))
    }

    /// Whether an external id is live.
    fn contains(&self, id: i64) -> PyResult<bool> {
        Ok(self.snapshot().map_err(to_py)?.contains(id))
    }

    fn __len__(&self) -> PyResult<usize> {
        Ok(self.snapshot().map_err(to_py)?.len())
    }

    /// Dimension.
    #[getter]
    fn dim(&self) -> PyResult<u64> {
        Ok(self.snapshot().map_err(to_py)?.dim)
    }

    /// Number of segments (1 after build or compact, +1 per add).
    #[getter]
    fn n_segments(&self) -> PyResult<usize> {
        Ok(self.snapshot().map_err(to_py)?.segments.len())
    }

    /// Write the index to `path` atomically (see the format in sparsecore-core's index::format).
    fn save(&self, py: Python<'_>, path: std::path::PathBuf) -> PyResult<()> {
        py.detach(|| format::save(&*self.snapshot()?, &path)).map_err(to_py)
    }

    /// Load an index file, memory-mapped (`mmap=True`) or read into memory; checks magic, version, checksums
    /// and structure.
    #[staticmethod]
    #[pyo3(signature = (path, mmap=true, num_threads=None, verify=true))]
    fn load(
        py: Python<'_>,
        path: std::path::PathBuf,
        mmap: bool,
        num_threads: Option<usize>,
        verify: bool,
    ) -> PyResult<Self> {
        let idx = run(py, num_threads, || {
            if verify {
                return format::load(&path, mmap);
            }
            catch_unwind(AssertUnwindSafe(|| format::load_with(&path, mmap, false)))
                .unwrap_or_else(|_| Err(SparseError::Format(format!("{}: {UNVERIFIED_FAILURE}", path.display()))))
        })?;
        Ok(Self::new(idx))
    }

    /// Whether the index reads its main arrays from a memory-mapped or loaded file.
    #[getter]
    fn is_file_backed(&self) -> PyResult<bool> {
        Ok(self.snapshot().map_err(to_py)?.segments.iter().any(|s| s.fwd_terms.is_file()))
    }

    /// Documents per block.
    #[getter]
    fn block_size(&self) -> PyResult<usize> {
        Ok(self.snapshot().map_err(to_py)?.params.block_size)
    }
}
