//! PostgreSQL's words for the shared statements (`sql/dialect.rs`) and how it stores the
//! shared column types: times as `TIMESTAMPTZ`, spans as `INTERVAL` (microseconds).

use chrono::{DateTime, Utc};
use sqlx::Postgres;
use sqlx::postgres::types::PgInterval;

use crate::adapters::sql::columns::{AuditTime, Span, Timestamp, column_type};
use crate::adapters::sql::dialect::Dialect;

/// `{now}` is the transaction's start (`now()`); rows are locked until the commit, since
/// several replicas write; wake-ups are `NOTIFY`s.
impl Dialect for Postgres {
    const INDEX: usize = 0;
    const WORDS: &'static [(&'static str, &'static str)] = &[
        ("{now}", "now()"),
        ("{for_update}", " FOR UPDATE"),
        ("{skip_locked}", " FOR UPDATE SKIP LOCKED"),
        ("{elements($1)}", "SELECT jsonb_array_elements_text($1)"),
        (
            "{event_type_matches}",
            "(jsonb_array_length(w.event_types) = 0 \
             OR jsonb_exists_any(w.event_types, ARRAY[$3::text, '*']))",
        ),
    ];
    const NOTIFIES: bool = true;
}

column_type!(Postgres: Timestamp as DateTime<Utc>,
    to: |t| Ok(t.0),
    from: |at| Ok(Timestamp(at)),
);

column_type!(Postgres: AuditTime as DateTime<Utc>,
    to: |t| Ok(t.0),
    from: |at| Ok(AuditTime(at)),
);

column_type!(Postgres: Span as PgInterval,
    to: |span| Ok(PgInterval {
        months: 0,
        days: 0,
        microseconds: i64::try_from(span.0.as_micros()).unwrap_or(i64::MAX),
    }),
    from: |interval| Ok(Span(std::time::Duration::from_micros(
        u64::try_from(interval.microseconds)?,
    ))),
);
