//! Splitting a command line into arguments the way a POSIX shell groups words, without any
//! of a shell's expansions: quotes and backslashes only.

use std::fmt;

/// Why a line could not be split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitError {
    UnterminatedQuote(char),
    TrailingBackslash,
}

impl fmt::Display for SplitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnterminatedQuote(q) => write!(f, "a {q} quote is never closed"),
            Self::TrailingBackslash => f.write_str("the line ends with a lone backslash"),
        }
    }
}

/// Splits `line` into words. Whitespace separates words; `'…'` is literal; in `"…"` a
/// backslash escapes only `"`, `\`, `$` and `` ` `` (as in sh); outside quotes a backslash
/// escapes any character. `''` is an empty argument. Nothing is expanded.
pub fn split(line: &str) -> Result<Vec<String>, SplitError> {
    let mut words = Vec::new();
    let mut word = String::new();
    // A word exists once any of its characters, or a quote pair, was seen.
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(SplitError::UnterminatedQuote('\'')),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            // A backslash before a newline joins lines, as in sh.
                            Some('\n') => {}
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(SplitError::UnterminatedQuote('"')),
                        },
                        Some(c) => word.push(c),
                        None => return Err(SplitError::UnterminatedQuote('"')),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(c) => {
                    in_word = true;
                    word.push(c);
                }
                None => return Err(SplitError::TrailingBackslash),
            },
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Vec<String> {
        split(line).expect("splits")
    }

    #[test]
    fn whitespace_separates_words() {
        assert_eq!(
            ok("log  --oneline\t-n 3\n"),
            ["log", "--oneline", "-n", "3"]
        );
        assert!(ok("").is_empty());
        assert!(ok("  \t ").is_empty());
    }

    #[test]
    fn quotes_group_and_concatenate() {
        assert_eq!(ok("commit -m 'two words'"), ["commit", "-m", "two words"]);
        assert_eq!(
            ok(r#"commit -m "it's here""#),
            ["commit", "-m", "it's here"]
        );
        assert_eq!(ok(r#"a'b c'"d e"f"#), ["ab cd ef"]);
        assert_eq!(ok("x '' \"\" y"), ["x", "", "", "y"]);
    }

    #[test]
    fn backslashes_escape_like_sh() {
        assert_eq!(ok(r"a\ b c"), ["a b", "c"]);
        assert_eq!(ok(r#""say \"hi\" \$HOME \n""#), [r#"say "hi" $HOME \n"#]);
        assert_eq!(ok(r"'no \escape'"), [r"no \escape"]);
        assert_eq!(ok("a\\\nb"), ["ab"]);
    }

    #[test]
    fn nothing_is_expanded() {
        assert_eq!(
            ok("status; rm -rf $HOME | cat * $(id)"),
            ["status;", "rm", "-rf", "$HOME", "|", "cat", "*", "$(id)"]
        );
    }

    #[test]
    fn unbalanced_input_is_an_error() {
        assert_eq!(split("'open"), Err(SplitError::UnterminatedQuote('\'')));
        assert_eq!(split("\"open"), Err(SplitError::UnterminatedQuote('"')));
        assert_eq!(split("\"open\\"), Err(SplitError::UnterminatedQuote('"')));
        assert_eq!(split("end\\"), Err(SplitError::TrailingBackslash));
    }
}
