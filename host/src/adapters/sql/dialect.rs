//! The SQL text that differs between the databases. Statements are written once, in the
//! subset both accept (`$1` placeholders, `RETURNING`, `ON CONFLICT`, `TRUE`/`FALSE`,
//! `IS NOT DISTINCT FROM`), with a few words in braces that each dialect spells its own way
//! ([`Dialect::WORDS`]):
//!
//! - `{now}`: the current time in the type the database stores times in (`now()`, the
//!   transaction's start, on PostgreSQL; integer milliseconds on SQLite).
//! - `{for_update}`: locks the selected rows until the commit (PostgreSQL); nothing on
//!   SQLite, whose write lock the caller holds.
//! - `{skip_locked}`: the same, passing over rows another replica has locked.
//! - `{elements($1)}`: a one-column query of the text elements of the JSON array bound as
//!   `$1` (for `NOT IN (…)`).
//! - `{event_type_matches}`: the webhook `w`'s `event_types` (a JSON array) is empty or
//!   holds the event type bound as `$3`, or `*`.

use std::sync::OnceLock;

/// How one database spells what the shared statements leave open.
pub trait Dialect {
    /// Where [`Sql`] keeps this dialect's text of a statement.
    const INDEX: usize;
    /// Each word in braces and what it becomes.
    const WORDS: &'static [(&'static str, &'static str)];
    /// Other processes share the database and learn of writes by notifications sent in the
    /// writing transaction (`Db::notify`); otherwise the store wakes its own waiters.
    const NOTIFIES: bool;

    /// `text` with the words in braces replaced.
    fn expand(text: &str) -> String {
        Self::WORDS
            .iter()
            .fold(text.to_owned(), |text, (word, spelled)| {
                text.replace(word, spelled)
            })
    }
}

/// How many dialects there are (the length of [`Sql`]'s cache).
const DIALECTS: usize = 2;

/// One shared statement: its text as written and, once used, as each dialect spells it.
/// Lives in a `static` (see [`sql!`]), so the expansion happens once per process.
pub struct Sql {
    text: &'static str,
    expanded: [OnceLock<String>; DIALECTS],
}

impl Sql {
    pub const fn new(text: &'static str) -> Self {
        Self {
            text,
            expanded: [const { OnceLock::new() }; DIALECTS],
        }
    }

    /// The statement in `D`'s dialect.
    pub fn text<D: Dialect>(&'static self) -> &'static str {
        self.expanded[D::INDEX].get_or_init(|| D::expand(self.text))
    }
}

/// `sql!(D, "… {now} …")`: the statement in database `D`'s dialect, as a `&'static str`
/// sqlx accepts (see the module documentation for the words in braces).
macro_rules! sql {
    ($db:ty, $text:expr) => {{
        static STATEMENT: $crate::adapters::sql::dialect::Sql =
            $crate::adapters::sql::dialect::Sql::new($text);
        STATEMENT.text::<$db>()
    }};
}
pub(crate) use sql;

#[cfg(test)]
mod tests {
    use sqlx::{Postgres, Sqlite};

    use super::*;

    #[test]
    fn each_dialect_spells_the_words_in_braces_once_per_process() {
        static STATEMENT: Sql = Sql::new("SELECT {now} FROM t WHERE a{for_update}; b{skip_locked}");
        let postgres = STATEMENT.text::<Postgres>();
        assert_eq!(
            postgres,
            "SELECT now() FROM t WHERE a FOR UPDATE; b FOR UPDATE SKIP LOCKED"
        );
        assert_eq!(
            STATEMENT.text::<Sqlite>(),
            "SELECT CAST(ROUND(unixepoch('subsec') * 1000) AS INTEGER) FROM t WHERE a; b"
        );
        assert!(std::ptr::eq(postgres, STATEMENT.text::<Postgres>()));
    }

    #[test]
    fn every_word_is_spelled_by_both_dialects() {
        fn words(words: &'static [(&'static str, &'static str)]) -> Vec<&'static str> {
            words.iter().map(|(word, _)| *word).collect()
        }
        assert_eq!(words(Postgres::WORDS), words(Sqlite::WORDS));
        for (word, _) in Postgres::WORDS {
            assert!(!Postgres::expand(word).contains('{'), "{word}");
            assert!(!Sqlite::expand(word).contains('{'), "{word}");
        }
    }
}
