//! Splitting `proxy.upstream.command` the way a POSIX shell would, without
//! running a shell: whitespace separates words, single quotes are literal,
//! double quotes allow `\"`, `\\`, `\$` and `` \` `` escapes, a backslash
//! outside quotes escapes the next character, and an unquoted leading `~`
//! is the user's home directory. Nothing else (variables, globs, pipes) is
//! interpreted, so the command runs exactly as written.

use std::fmt;

/// A command line that cannot be split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitError {
    /// A quote was opened and never closed.
    UnclosedQuote(char),
    /// The line ends with a lone backslash.
    TrailingBackslash,
    /// No words at all.
    Empty,
}

impl fmt::Display for SplitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SplitError::UnclosedQuote(q) => write!(f, "unclosed {q} quote"),
            SplitError::TrailingBackslash => f.write_str("command ends with a lone backslash"),
            SplitError::Empty => f.write_str("command is empty"),
        }
    }
}

/// Splits `line` into words, expanding a leading unquoted `~` with `home`.
pub fn split(line: &str, home: Option<&str>) -> Result<Vec<String>, SplitError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    // Whether the current word began with an unquoted `~`.
    let mut tilde_candidate = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(finish_word(
                        std::mem::take(&mut word),
                        tilde_candidate,
                        home,
                    ));
                    in_word = false;
                    tilde_candidate = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(ch) => word.push(ch),
                        None => return Err(SplitError::UnclosedQuote('\'')),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(esc @ ('"' | '\\' | '$' | '`')) => word.push(esc),
                            Some('\n') => {}
                            Some(other) => {
                                word.push('\\');
                                word.push(other);
                            }
                            None => return Err(SplitError::UnclosedQuote('"')),
                        },
                        Some(ch) => word.push(ch),
                        None => return Err(SplitError::UnclosedQuote('"')),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') => {}
                    Some(ch) => word.push(ch),
                    None => return Err(SplitError::TrailingBackslash),
                }
            }
            '~' if !in_word => {
                in_word = true;
                tilde_candidate = true;
                word.push('~');
            }
            ch => {
                in_word = true;
                word.push(ch);
            }
        }
    }
    if in_word {
        words.push(finish_word(word, tilde_candidate, home));
    }
    if words.is_empty() {
        return Err(SplitError::Empty);
    }
    Ok(words)
}

fn finish_word(word: String, tilde_candidate: bool, home: Option<&str>) -> String {
    if tilde_candidate {
        expand_tilde(&word, home)
    } else {
        word
    }
}

/// Replaces a leading `~` (alone or followed by `/`) with `home`.
pub fn expand_tilde(path: &str, home: Option<&str>) -> String {
    match (home, path.strip_prefix('~')) {
        (Some(home), Some(rest)) if rest.is_empty() || rest.starts_with('/') => {
            format!("{}{rest}", home.trim_end_matches('/'))
        }
        _ => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        split(line, Some("/home/u")).unwrap()
    }

    #[test]
    fn splits_the_tutorial_command() {
        assert_eq!(
            words("npx @modelcontextprotocol/server-filesystem ~/claude-sandbox/"),
            [
                "npx",
                "@modelcontextprotocol/server-filesystem",
                "/home/u/claude-sandbox/"
            ]
        );
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(words(r#"a "b c" 'd e' f\ g"#), ["a", "b c", "d e", "f g"]);
        assert_eq!(words(r#""x\"y" 'it''s' "a\nb""#), ["x\"y", "its", "a\\nb"]);
        assert_eq!(words("  spaced\targs  "), ["spaced", "args"]);
        assert_eq!(words("''"), [""]);
    }

    #[test]
    fn tilde_only_when_unquoted_and_leading() {
        assert_eq!(
            words("~ ~/x '~/y' \"~/z\" a~/b ~user"),
            ["/home/u", "/home/u/x", "~/y", "~/z", "a~/b", "~user"]
        );
        assert_eq!(split("~/x", None).unwrap(), ["~/x"]);
    }

    #[test]
    fn errors() {
        assert_eq!(split("a 'b", None), Err(SplitError::UnclosedQuote('\'')));
        assert_eq!(split("a \"b", None), Err(SplitError::UnclosedQuote('"')));
        assert_eq!(split("a \\", None), Err(SplitError::TrailingBackslash));
        assert_eq!(split("   ", None), Err(SplitError::Empty));
    }
}
