//! The one error type of the core; the binding maps each variant to a typed Python exception.

/// Everything that can go wrong in a core operation.
///
/// Messages name the offending argument and, for per-entry problems, the row and the flat position so that a
/// user can find the entry in their arrays.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SparseError {
    /// `indptr` is malformed (empty, does not start at 0, decreases, or does not end at `len(indices)`).
    #[error("indptr: {0}")]
    Indptr(String),
    /// `indices` and `data` differ in length.
    #[error("indices and data must have the same length, got len(indices) = {indices} and len(data) = {data}")]
    LengthMismatch {
        /// Length of `indices`.
        indices: usize,
        /// Length of `data`.
        data: usize,
    },
    /// A stored value is NaN or infinite.
    #[error("data[{pos}] (row {row}) is not finite: {value}")]
    NonFinite {
        /// Row of the entry.
        row: usize,
        /// Flat position in `indices`/`data`.
        pos: usize,
        /// The offending value.
        value: f32,
    },
    /// A column index is `>= dim`.
    #[error("indices[{pos}] (row {row}) = {index} is out of range for dim = {dim}")]
    IndexOutOfRange {
        /// Row of the entry.
        row: usize,
        /// Flat position in `indices`.
        pos: usize,
        /// The offending index.
        index: u64,
        /// The batch dimension.
        dim: u64,
    },
    /// An entry of a dense input is NaN or infinite.
    #[error("dense[{row}, {col}] is not finite: {value}")]
    NonFiniteDense {
        /// Row of the entry.
        row: usize,
        /// Column of the entry.
        col: usize,
        /// The offending value.
        value: f32,
    },
    /// A value of a named array (or a computed intermediate) is NaN or infinite; `what` names it and its place,
    /// e.g. `W_enc[3, 17]`.
    #[error("{what} is not finite: {value}")]
    NonFiniteValue {
        /// The array and the position, as the user spells them.
        what: String,
        /// The offending value.
        value: f32,
    },
    /// An output would not fit in memory (or its size overflows).
    #[error("{what} needs {bytes} bytes, which cannot be allocated")]
    TooLarge {
        /// What was being allocated.
        what: &'static str,
        /// Bytes requested (saturated at `u64::MAX` on overflow).
        bytes: u64,
    },
    /// Indices within a row are not strictly increasing because they decrease.
    #[error(
        "indices: row {row} is not sorted (indices[{pos}] = {prev} > indices[{next_pos}] = {next}); \
         call canonicalize() or pass canonicalize=True",
        next_pos = pos + 1
    )]
    Unsorted {
        /// Row of the entry.
        row: usize,
        /// Flat position of the first of the two out-of-order entries.
        pos: usize,
        /// Index at `pos`.
        prev: u32,
        /// Index at `pos + 1`.
        next: u32,
    },
    /// An index repeats within a row.
    #[error(
        "indices: row {row} repeats index {index} (positions {pos} and {next_pos}); \
         call canonicalize(duplicates=\"sum\"|\"max\") or pass canonicalize=True",
        next_pos = pos + 1
    )]
    Duplicate {
        /// Row of the entry.
        row: usize,
        /// Flat position of the first of the two equal entries.
        pos: usize,
        /// The repeated index.
        index: u32,
    },
    /// Two operands (or an operand and a parameter) disagree in shape.
    #[error("{0}")]
    ShapeMismatch(String),
    /// A scalar argument is out of its domain.
    #[error("{arg}: {msg}")]
    InvalidArgument {
        /// The argument's name as the user spells it.
        arg: &'static str,
        /// What is wrong with it.
        msg: String,
    },
    /// A file is not a valid sparsecore index (foreign, truncated, corrupted, other version).
    #[error("{0}")]
    Format(String),
    /// A file could not be read or written.
    #[error("{msg}")]
    Io {
        /// The file does not exist.
        not_found: bool,
        /// What happened, with the path.
        msg: String,
    },
    /// An id is not in the index.
    #[error("{0}")]
    UnknownId(String),
    /// The thread pool could not be created.
    #[error("could not start a thread pool: {0}")]
    ThreadPool(String),
}

impl SparseError {
    /// Allocate a zeroed vector of `n` elements, or a [`SparseError::TooLarge`] instead of aborting.
    ///
    /// The memory comes zeroed from the allocator (`calloc`): a large vector is not written here, so its pages
    /// are first touched, and faulted in, by whichever thread fills them.
    pub fn try_zeroed<T: bytemuck::Zeroable>(what: &'static str, n: usize) -> Result<Vec<T>, Self> {
        bytemuck::allocation::try_zeroed_vec(n)
            .map_err(|()| Self::TooLarge { what, bytes: (n as u64).saturating_mul(std::mem::size_of::<T>() as u64) })
    }

    /// The element count of an `rows x cols` output, or [`SparseError::TooLarge`] on overflow.
    pub fn checked_area(what: &'static str, rows: usize, cols: usize) -> Result<usize, Self> {
        rows.checked_mul(cols).ok_or(Self::TooLarge { what, bytes: u64::MAX })
    }

    /// Shorthand for [`SparseError::InvalidArgument`].
    pub fn invalid(arg: &'static str, msg: impl Into<String>) -> Self {
        Self::InvalidArgument { arg, msg: msg.into() }
    }
}
