//! Reading a row's columns by name. A column missing, a NULL where a value belongs, a
//! value of the wrong type, an unknown name (a status, a role) or JSON that does not parse
//! is a `ColumnDecode` error naming the table and the column: the caller gets a
//! [`StoreError`](super::StoreError), never a panic or a default standing in for the row.

use serde::de::DeserializeOwned;
use sqlx::any::AnyRow;
use sqlx::error::BoxDynError;
use sqlx::{Any, Decode, Row, Type};

/// One row of `table`, read column by column.
pub(super) struct Columns<'r> {
    row: &'r AnyRow,
    table: &'static str,
}

impl<'r> Columns<'r> {
    pub(super) fn of(row: &'r AnyRow, table: &'static str) -> Self {
        Columns { row, table }
    }

    /// A column's value as it is stored.
    pub(super) fn get<T>(&self, column: &str) -> sqlx::Result<T>
    where
        T: Decode<'r, Any> + Type<Any>,
    {
        self.row.try_get(column).map_err(|e| match e {
            sqlx::Error::ColumnNotFound(_) => self.broken(column, "the column is missing"),
            sqlx::Error::ColumnDecode { source, .. } => self.broken(column, source),
            other => other,
        })
    }

    /// A flag stored as an integer (0 or not).
    pub(super) fn flag(&self, column: &str) -> sqlx::Result<bool> {
        Ok(self.get::<i64>(column)? != 0)
    }

    /// An integer stored wider than its type (`INTEGER` for a `u16`).
    pub(super) fn narrowed<T: TryFrom<i64>>(&self, column: &str) -> sqlx::Result<T> {
        let wide: i64 = self.get(column)?;
        T::try_from(wide).map_err(|_| self.broken(column, format!("{wide} is out of range")))
    }

    /// A name stored as text that `parse` knows (a status, a role, a target).
    pub(super) fn parsed<T>(
        &self,
        column: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> sqlx::Result<T> {
        let text: String = self.get(column)?;
        parse(&text).ok_or_else(|| self.broken(column, format!("unknown value {text:?}")))
    }

    /// A value stored as JSON text.
    pub(super) fn json<T: DeserializeOwned>(&self, column: &str) -> sqlx::Result<T> {
        let text: String = self.get(column)?;
        serde_json::from_str(&text).map_err(|e| self.broken(column, e))
    }

    fn broken(&self, column: &str, why: impl Into<BoxDynError>) -> sqlx::Error {
        sqlx::Error::ColumnDecode {
            index: format!("{}.{column}", self.table),
            source: why.into(),
        }
    }
}
