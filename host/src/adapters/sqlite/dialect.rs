//! SQLite's words for the shared statements (`sql/dialect.rs`) and how it stores the shared
//! column types: times as integer milliseconds since the Unix epoch (so they compare
//! numerically), audit times as RFC 3339 text, spans as milliseconds.

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::Sqlite;

use crate::adapters::sql::columns::{AuditTime, Span, Timestamp, column_type};
use crate::adapters::sql::dialect::Dialect;

/// `{now}` is SQLite's clock in whole milliseconds (the same within one statement); no row
/// locks, since every write holds the store's write lock; wake-ups stay in this process.
impl Dialect for Sqlite {
    const INDEX: usize = 1;
    const WORDS: &'static [(&'static str, &'static str)] = &[
        (
            "{now}",
            "CAST(ROUND(unixepoch('subsec') * 1000) AS INTEGER)",
        ),
        ("{for_update}", ""),
        ("{skip_locked}", ""),
        ("{elements($1)}", "SELECT value FROM json_each($1)"),
        (
            "{event_type_matches}",
            "(json_array_length(w.event_types) = 0 OR EXISTS ( \
             SELECT 1 FROM json_each(w.event_types) t WHERE t.value IN ($3, '*')))",
        ),
    ];
    const NOTIFIES: bool = false;
}

column_type!(Sqlite: Timestamp as i64,
    to: |t| Ok(t.0.timestamp_millis()),
    from: |ms| DateTime::from_timestamp_millis(ms)
        .map(Timestamp)
        .ok_or_else(|| format!("timestamp {ms} out of range").into()),
);

column_type!(Sqlite: AuditTime as String,
    to: |t| Ok(t.0.to_rfc3339_opts(SecondsFormat::Micros, true)),
    from: |text| Ok(AuditTime(DateTime::parse_from_rfc3339(&text)?.with_timezone(&Utc))),
);

column_type!(Sqlite: Span as i64,
    to: |span| Ok(i64::try_from(span.0.as_millis()).unwrap_or(i64::MAX)),
    from: |ms| Ok(Span(std::time::Duration::from_millis(u64::try_from(ms)?))),
);
