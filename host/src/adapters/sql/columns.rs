//! Column types whose storage differs between the databases, and reading a row's columns.
//! Each database's `columns.rs` says how it stores these types; the shared code binds and
//! reads them without knowing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::types::Json;

use super::db::{Db, JsonDoc, Reads};
use crate::ports::StoreError;

/// A point in time: `TIMESTAMPTZ` on PostgreSQL, integer milliseconds since the Unix epoch
/// on SQLite (so that times compare numerically).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub DateTime<Utc>);

/// An audit entry's time, which its hash covers: `TIMESTAMPTZ` on PostgreSQL, RFC 3339 text
/// with microseconds on SQLite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditTime(pub DateTime<Utc>);

/// A duration added to `{now}` (a lease): `INTERVAL` on PostgreSQL, milliseconds on SQLite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

/// `value` as a JSON document to bind.
pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<JsonDoc, StoreError> {
    serde_json::value::to_raw_value(value)
        .map(Json)
        .map_err(|e| StoreError::Invalid(e.to_string()))
}

/// The columns of one row of `table`: a missing, mistyped or undecodable column is
/// `StoreError::Corrupt` naming the table.
pub struct Cols<'r, D: Db> {
    row: &'r D::Row,
    table: &'static str,
}

impl<'r, D: Db> Cols<'r, D> {
    pub fn new(row: &'r D::Row, table: &'static str) -> Self {
        Self { row, table }
    }

    /// The row's table is corrupt for `reason`.
    pub fn corrupt(&self, reason: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt {
            table: self.table,
            reason: reason.to_string(),
        }
    }

    pub fn get<T>(&self, column: &str) -> Result<T, StoreError>
    where
        D: Reads<T>,
    {
        D::read(self.row, column).map_err(|e| self.corrupt(e))
    }

    /// A text column parsed by `parse` (an id, a status).
    pub fn parse<T, E: std::fmt::Display>(
        &self,
        column: &str,
        parse: impl FnOnce(String) -> Result<T, E>,
    ) -> Result<T, StoreError> {
        parse(self.get(column)?).map_err(|e| self.corrupt(e))
    }

    pub fn time(&self, column: &str) -> Result<DateTime<Utc>, StoreError> {
        self.get::<Timestamp>(column).map(|t| t.0)
    }

    pub fn time_opt(&self, column: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self.get::<Option<Timestamp>>(column)?.map(|t| t.0))
    }

    /// A JSON column as `T`.
    pub fn json<T: DeserializeOwned>(&self, column: &str) -> Result<T, StoreError> {
        let Json(raw) = self.get::<JsonDoc>(column)?;
        serde_json::from_str(raw.get()).map_err(|e| self.corrupt(e))
    }

    /// A nullable JSON column as `T`.
    pub fn json_opt<T: DeserializeOwned>(&self, column: &str) -> Result<Option<T>, StoreError> {
        self.get::<Option<JsonDoc>>(column)?
            .map(|Json(raw)| serde_json::from_str(raw.get()).map_err(|e| self.corrupt(e)))
            .transpose()
    }
}

/// `column_type!(Sqlite: Timestamp as i64, to: |t| …, from: |v| …)`: stores the column
/// type `Timestamp` on database `Sqlite` as sqlx's `i64`, converting with `to` (which may
/// fail) and `from` (which may fail, for a stored value out of range).
macro_rules! column_type {
    ($db:ty: $ty:ty as $as:ty, to: $to:expr, from: $from:expr $(,)?) => {
        impl sqlx::Type<$db> for $ty {
            fn type_info() -> <$db as sqlx::Database>::TypeInfo {
                <$as as sqlx::Type<$db>>::type_info()
            }

            fn compatible(ty: &<$db as sqlx::Database>::TypeInfo) -> bool {
                <$as as sqlx::Type<$db>>::compatible(ty)
            }
        }

        impl sqlx::Encode<'_, $db> for $ty {
            fn encode_by_ref(
                &self,
                buf: &mut <$db as sqlx::Database>::ArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                let to: fn(&$ty) -> Result<$as, sqlx::error::BoxDynError> = $to;
                <$as as sqlx::Encode<'_, $db>>::encode(to(self)?, buf)
            }
        }

        impl<'r> sqlx::Decode<'r, $db> for $ty {
            fn decode(
                value: <$db as sqlx::Database>::ValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let from: fn($as) -> Result<$ty, sqlx::error::BoxDynError> = $from;
                from(<$as as sqlx::Decode<'r, $db>>::decode(value)?)
            }
        }
    };
}
pub(crate) use column_type;
