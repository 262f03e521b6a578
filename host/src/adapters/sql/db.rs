//! What the shared SQL layer needs from a database, as one trait: [`Db`].
//!
//! sqlx's own bounds (`T: Encode<DB>`, `&mut DB::Connection: Executor`) are bounds on other
//! types than the database, which Rust does not carry from a trait to its users, so every
//! generic function would have to repeat them. Here each capability is a trait *of the
//! database* ([`Binds`], [`Reads`]), implemented once for any database that has it, and
//! [`Db`] lists them as supertraits, which Rust does carry: a function generic over `D: Db`
//! can bind and read every column type rdev stores and needs no `where` clause. The few
//! operations that really differ between the databases are [`Db`]'s methods.

use std::future::Future;
use std::time::Duration;

use serde_json::value::RawValue;
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};
use tokio::sync::Mutex;

use super::SqlStore;
use super::columns::{AuditTime, Span, Timestamp};
use super::dialect::Dialect;
use crate::domain::{Claim, CommandId, CommandRecord, DueDelivery, Lease, Outcome, StreamEvent};
use crate::ports::{StoreError, StoredEvent};

/// `T` can be bound as a parameter of this database's statements (`'t`: how long the
/// statement may borrow it).
pub trait Binds<'t, T>: Database {
    fn bind_to<'q>(
        query: Query<'q, Self, Self::Arguments>,
        value: T,
    ) -> Query<'q, Self, Self::Arguments>;
}

impl<'t, DB: Database, T> Binds<'t, T> for DB
where
    T: Encode<'t, DB> + Type<DB>,
{
    fn bind_to<'q>(query: Query<'q, DB, DB::Arguments>, value: T) -> Query<'q, DB, DB::Arguments> {
        query.bind(value)
    }
}

/// A column of this database's rows can be read as `T`.
pub trait Reads<T>: Database {
    fn read(row: &Self::Row, column: &str) -> Result<T, sqlx::Error>;
}

impl<DB: Database, T> Reads<T> for DB
where
    T: for<'r> Decode<'r, DB> + Type<DB>,
    for<'c> &'c str: ColumnIndex<DB::Row>,
{
    fn read(row: &DB::Row, column: &str) -> Result<T, sqlx::Error> {
        row.try_get(column)
    }
}

/// `query.arg(value)`: sqlx's `bind` for a query generic over `D: Db`, where `D: Binds<'t, T>`
/// stands in for sqlx's bounds on `T`.
pub trait Arg<D: Database> {
    fn arg<'t, T>(self, value: T) -> Self
    where
        D: Binds<'t, T>;
}

impl<D: Database> Arg<D> for Query<'_, D, D::Arguments> {
    fn arg<'t, T>(self, value: T) -> Self
    where
        D: Binds<'t, T>,
    {
        D::bind_to(self, value)
    }
}

/// How many rows a statement changed (sqlx has the method on each database's result type,
/// not on a trait).
pub trait RowsAffected {
    fn rows_affected(&self) -> u64;
}

impl RowsAffected for sqlx::postgres::PgQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

impl RowsAffected for sqlx::sqlite::SqliteQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

/// A JSON document as both databases bind and read it (`JSONB` / `TEXT`): the shared code
/// serializes and parses the domain type itself.
pub type JsonDoc = Json<Box<RawValue>>;

/// A database the shared SQL layer runs on: the column types it binds and reads (its
/// supertraits), its dialect, and the operations that differ between PostgreSQL (several
/// replicas: `SKIP LOCKED`, `LISTEN/NOTIFY`, advisory locks, batched finishes) and SQLite
/// (one process: a single writer, in-process wake-ups).
pub trait Db:
    Database<Arguments: IntoArguments<Self>, QueryResult: RowsAffected>
    + Dialect
    + for<'a> Binds<'a, &'a str>
    + for<'a> Binds<'a, Option<&'a str>>
    + for<'a> Binds<'a, String>
    + for<'a> Binds<'a, &'a String>
    + for<'a> Binds<'a, &'a Option<String>>
    + for<'a> Binds<'a, &'a [u8]>
    + for<'a> Binds<'a, Vec<u8>>
    + for<'a> Binds<'a, i64>
    + for<'a> Binds<'a, Option<i64>>
    + for<'a> Binds<'a, i32>
    + for<'a> Binds<'a, Option<i32>>
    + for<'a> Binds<'a, bool>
    + for<'a> Binds<'a, f64>
    + for<'a> Binds<'a, Timestamp>
    + for<'a> Binds<'a, Option<Timestamp>>
    + for<'a> Binds<'a, AuditTime>
    + for<'a> Binds<'a, Span>
    + for<'a> Binds<'a, JsonDoc>
    + for<'a> Binds<'a, Option<JsonDoc>>
    + Reads<String>
    + Reads<Option<String>>
    + Reads<Vec<u8>>
    + Reads<Option<Vec<u8>>>
    + Reads<i64>
    + Reads<Option<i64>>
    + Reads<i32>
    + Reads<Option<i32>>
    + Reads<bool>
    + Reads<f64>
    + Reads<Timestamp>
    + Reads<Option<Timestamp>>
    + Reads<AuditTime>
    + Reads<JsonDoc>
    + Reads<Option<JsonDoc>>
{
    /// What this database keeps in the store beside the pool (the finish writer and the
    /// listener on PostgreSQL, the write lock on SQLite).
    type State: Send + Sync + 'static;

    /// [`Db::insert_event`] is one statement, atomic without a transaction.
    const APPEND_IN_ONE_STATEMENT: bool;

    /// The statement that opens a write transaction. SQLite's must take the write lock at
    /// once (`IMMEDIATE`): a deferred transaction that reads first and writes later fails at
    /// once with `SQLITE_BUSY` instead of waiting when another connection still holds the
    /// lock (e.g. a transaction dropped on an error whose rollback has not run yet).
    const BEGIN: &'static str;

    /// A connection as an executor: sqlx implements `Executor` for `&mut` each concrete
    /// connection type, which generic code cannot name.
    fn exec(conn: &mut Self::Connection) -> impl Executor<'_, Database = Self>;

    /// The pool as an executor (one statement on whichever connection is free).
    fn on_pool(pool: &Pool<Self>) -> impl Executor<'_, Database = Self>;

    /// The lock every write takes first, where the database has a single writer.
    fn write_lock(state: &Self::State) -> Option<&Mutex<()>>;

    /// Serializes audit appends inside the caller's transaction until it commits, so the
    /// chain never forks (where the write lock does not already).
    fn lock_audit(
        conn: &mut Self::Connection,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Appends `event` to `stream` with the stream's next sequence number on `conn` (alone
    /// when [`Db::APPEND_IN_ONE_STATEMENT`], else inside the caller's transaction); with a
    /// `key` already stored for the stream, returns that event and writes nothing. The
    /// caller publishes the result to subscribers after its commit. With `running_only`,
    /// nothing is written unless the command is `running` (checked on its locked row, so a
    /// concurrent finish either comes first and wins or waits): `Conflict` then.
    fn insert_event(
        conn: &mut Self::Connection,
        stream: &CommandId,
        event: &StreamEvent,
        key: Option<&str>,
        running_only: bool,
    ) -> impl Future<Output = Result<StoredEvent, StoreError>> + Send;

    /// Takes up to `max` runnable commands under `CommandQueue::claim`'s rules.
    fn claim(
        store: &SqlStore<Self>,
        owner: &str,
        max: usize,
    ) -> impl Future<Output = Result<Vec<Claim>, StoreError>> + Send;

    /// Writes a command's terminal status (already checked against the state machine),
    /// fenced by its lease, with its webhook events.
    fn finish(
        store: &SqlStore<Self>,
        lease: &Lease,
        outcome: Outcome,
    ) -> impl Future<Output = Result<CommandRecord, StoreError>> + Send;

    /// Leases up to `limit` due webhook deliveries to `owner` for `lease`.
    fn claim_deliveries(
        store: &SqlStore<Self>,
        owner: &str,
        limit: u32,
        lease: Duration,
    ) -> impl Future<Output = Result<Vec<DueDelivery>, StoreError>> + Send;

    /// Tells the other processes on the database, inside the caller's transaction, what
    /// its commit announces. Only called where [`Dialect::NOTIFIES`]; elsewhere the store
    /// wakes its own waiters after the commit.
    fn notify(
        conn: &mut Self::Connection,
        notice: &Notice,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Writes [`Db::exec`] and [`Db::on_pool`] for a database whose connection type is `$conn`
/// (the same two conversions for every database).
macro_rules! executors {
    ($conn:ty) => {
        fn exec(conn: &mut $conn) -> impl sqlx::Executor<'_, Database = Self> {
            conn
        }

        fn on_pool(pool: &sqlx::Pool<Self>) -> impl sqlx::Executor<'_, Database = Self> {
            pool
        }
    };
}
pub(crate) use executors;

/// What a write announces at its commit: work for the workers, deliveries for the webhook
/// dispatchers, a cancel for the worker running the command, a decision for the broker
/// waiting for that approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Work,
    Deliveries,
    Cancel(CommandId),
    /// The id of an approval just decided.
    Decided(String),
}
