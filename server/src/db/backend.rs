//! [`Backend`]: which database a store talks to.

/// Which database a `SqlStore` talks to. Asked only where SQL must differ: the
/// migration bridge and the one statement that expands a JSON array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Backend {
    Sqlite,
    Postgres,
}
