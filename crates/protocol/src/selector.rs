//! Target expressions: which hosts of the fleet a command is for.
//!
//! One grammar, parsed here and nowhere else, for every fleet command
//! (`ctl run`, `ctl hosts`, jobs over the WebSocket and HTTP, the console's
//! filter): host names and globs, and label and fact selectors in
//! kubectl's syntax, combined with commas (`docs/PROTOCOL.md`, "Target
//! expressions"):
//!
//! ```text
//! expression  = term *( "," term )
//! term        = pattern                        ; a host name or a glob: web*, db-1
//!             | "!" key                        ; has no such label or fact
//!             | key ( "=" | "==" | "!=" ) value
//!             | key ( "in" | "notin" ) "(" value *( "," value ) ")"
//! ```
//!
//! Names and globs are alternatives (a host matches when it matches any of
//! them; with none, every host does); selectors are all required. So
//! `web*,db-1` is a list, `role=web,os=debian` an intersection, and
//! `web*,dc in (fra,ams),!canary` the web hosts of two data centres that
//! are not canaries. Values may be globs too (`os=debian*`). As in kubectl,
//! `!=` and `notin` also match a host without the key.
//!
//! A hand-written parser rather than a grammar crate: the language is a
//! dozen tokens, and what matters is the error, which names the byte where
//! the expression went wrong and says what was expected there
//! ([`SelectorError`], shown with a caret under the mistake). Parsing is
//! total and bounded ([`MAX_EXPRESSION_BYTES`], [`MAX_TERMS`]): the
//! expression comes from clients.

use std::borrow::Cow;
use std::fmt;

use glob::Pattern;

/// The longest expression accepted.
pub const MAX_EXPRESSION_BYTES: usize = 4096;

/// The most terms (names, selectors and values of lists together).
pub const MAX_TERMS: usize = 256;

/// A parsed target expression.
#[derive(Debug, Clone)]
pub struct Selector {
    /// Host names and globs: any may match. Empty: every host.
    names: Vec<Glob>,
    /// Every one must hold.
    requirements: Vec<Requirement>,
}

/// A name or value pattern: a glob, or a literal when it has no
/// metacharacter (compared without the glob machinery).
#[derive(Debug, Clone)]
struct Glob {
    text: String,
    pattern: Option<Pattern>,
}

impl Glob {
    fn new(text: &str) -> Result<Glob, String> {
        let pattern = if text.contains(['*', '?', '[']) {
            Some(Pattern::new(text).map_err(|e| format!("{text:?} is not a glob: {}", e.msg))?)
        } else {
            None
        };
        Ok(Glob {
            text: text.to_owned(),
            pattern,
        })
    }

    fn matches(&self, s: &str) -> bool {
        match &self.pattern {
            Some(p) => p.matches(s),
            None => self.text == s,
        }
    }
}

/// One selector of labels and facts.
#[derive(Debug, Clone)]
enum Requirement {
    /// `key=value` / `key==value` (`equal`), `key!=value` (not).
    Compare {
        key: String,
        value: Glob,
        equal: bool,
    },
    /// `key in (…)` (`inside`), `key notin (…)`.
    Set {
        key: String,
        values: Vec<Glob>,
        inside: bool,
    },
    /// `!key`.
    Absent { key: String },
}

/// What a host is matched on: its name and the value of each of its labels
/// and facts.
pub trait Attributes {
    /// The host's name.
    fn name(&self) -> &str;
    /// The value of the label or fact `key`, if the host has it.
    fn get(&self, key: &str) -> Option<Cow<'_, str>>;
}

impl Selector {
    /// Parses a target expression.
    pub fn parse(expression: &str) -> Result<Selector, SelectorError> {
        Parser::new(expression)?.expression()
    }

    /// Whether the host `attributes` describe is one of the targets.
    pub fn matches(&self, host: &dyn Attributes) -> bool {
        (self.names.is_empty() || self.names.iter().any(|g| g.matches(host.name())))
            && self.requirements.iter().all(|r| r.holds(host))
    }
}

impl Requirement {
    fn holds(&self, host: &dyn Attributes) -> bool {
        match self {
            Requirement::Compare { key, value, equal } => {
                host.get(key).is_some_and(|v| value.matches(&v)) == *equal
            }
            Requirement::Set {
                key,
                values,
                inside,
            } => {
                host.get(key)
                    .is_some_and(|v| values.iter().any(|g| g.matches(&v)))
                    == *inside
            }
            Requirement::Absent { key } => host.get(key).is_none(),
        }
    }
}

/// A target expression that does not parse: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorError {
    /// The expression (cut to [`MAX_EXPRESSION_BYTES`]).
    pub expression: String,
    /// The byte offset of the mistake.
    pub at: usize,
    /// What was expected there, or what is wrong.
    pub message: String,
}

impl fmt::Display for SelectorError {
    /// The message, then the expression with a caret under the mistake.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let column = self.expression[..self.at.min(self.expression.len())]
            .chars()
            .count();
        write!(
            f,
            "bad target expression: {} (at character {})\n  {}\n  {}^",
            self.message,
            column + 1,
            self.expression,
            " ".repeat(column)
        )
    }
}

impl std::error::Error for SelectorError {}

/// The characters of names, keys and values: what host names and label
/// keys are made of (`/` for `example.com/role` keys), and glob
/// metacharacters.
fn word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | '*' | '?' | '[' | ']')
}

struct Parser<'a> {
    text: &'a str,
    at: usize,
    terms: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Result<Parser<'a>, SelectorError> {
        let parser = Parser {
            text,
            at: 0,
            terms: 0,
        };
        if text.len() > MAX_EXPRESSION_BYTES {
            let mut cut = MAX_EXPRESSION_BYTES;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            return Err(SelectorError {
                expression: text[..cut].to_owned(),
                at: cut,
                message: format!("longer than {MAX_EXPRESSION_BYTES} bytes"),
            });
        }
        Ok(parser)
    }

    fn error(&self, at: usize, message: impl Into<String>) -> SelectorError {
        SelectorError {
            expression: self.text.to_owned(),
            at,
            message: message.into(),
        }
    }

    fn rest(&self) -> &'a str {
        &self.text[self.at..]
    }

    fn skip_spaces(&mut self) {
        let rest = self.rest();
        self.at += rest.len() - rest.trim_start().len();
    }

    /// Consumes `token` (after spaces) if it comes next.
    fn eat(&mut self, token: &str) -> bool {
        self.skip_spaces();
        if self.rest().starts_with(token) {
            self.at += token.len();
            true
        } else {
            false
        }
    }

    /// A name, key or value; `what` names it in the error when none comes.
    fn word(&mut self, what: &str) -> Result<(usize, &'a str), SelectorError> {
        self.skip_spaces();
        let start = self.at;
        let len = self
            .rest()
            .find(|c: char| !word_char(c))
            .unwrap_or(self.rest().len());
        if len == 0 {
            let found = match self.rest().chars().next() {
                Some(c) => format!("{c:?}"),
                None => "the end".to_owned(),
            };
            return Err(self.error(start, format!("expected {what}, found {found}")));
        }
        self.at += len;
        self.count(start)?;
        Ok((start, &self.text[start..self.at]))
    }

    fn count(&mut self, at: usize) -> Result<(), SelectorError> {
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return Err(self.error(at, format!("more than {MAX_TERMS} terms")));
        }
        Ok(())
    }

    fn glob(&self, at: usize, text: &str) -> Result<Glob, SelectorError> {
        Glob::new(text).map_err(|e| self.error(at, e))
    }

    fn key(&self, at: usize, key: &str) -> Result<String, SelectorError> {
        if key.contains(['*', '?', '[', ']']) {
            return Err(self.error(at, format!("a key is not a glob: {key:?}")));
        }
        Ok(key.to_owned())
    }

    fn expression(mut self) -> Result<Selector, SelectorError> {
        let mut selector = Selector {
            names: Vec::new(),
            requirements: Vec::new(),
        };
        self.skip_spaces();
        if self.rest().is_empty() {
            return Err(self.error(
                0,
                "the expression is empty: name a host, a glob or a selector",
            ));
        }
        loop {
            self.term(&mut selector)?;
            self.skip_spaces();
            if self.rest().is_empty() {
                return Ok(selector);
            }
            if !self.eat(",") {
                let at = self.at;
                let found = self.rest().chars().next().unwrap_or(' ');
                return Err(
                    self.error(at, format!("expected \",\" between terms, found {found:?}"))
                );
            }
        }
    }

    fn term(&mut self, selector: &mut Selector) -> Result<(), SelectorError> {
        if self.eat("!") {
            let (at, key) = self.word("a label or fact after \"!\"")?;
            let key = self.key(at, key)?;
            selector.requirements.push(Requirement::Absent { key });
            return Ok(());
        }
        let (at, word) = self.word("a host name, a glob or a selector")?;
        self.skip_spaces();
        let operator = ["==", "!=", "="]
            .into_iter()
            .find(|op| self.rest().starts_with(op));
        if let Some(op) = operator {
            let key = self.key(at, word)?;
            self.at += op.len();
            self.skip_spaces();
            let value_at = self.at;
            let len = self
                .rest()
                .find(|c: char| !word_char(c))
                .unwrap_or(self.rest().len());
            let value = &self.text[value_at..value_at + len];
            self.at += len;
            let value = self.glob(value_at, value)?;
            selector.requirements.push(Requirement::Compare {
                key,
                value,
                equal: op != "!=",
            });
            return Ok(());
        }
        let set = ["in", "notin"].into_iter().find(|op| {
            self.rest().starts_with(op) && self.rest()[op.len()..].trim_start().starts_with('(')
        });
        if let Some(op) = set {
            let key = self.key(at, word)?;
            self.at += op.len();
            self.eat("(");
            let mut values = Vec::new();
            loop {
                let (value_at, value) = self.word("a value")?;
                values.push(self.glob(value_at, value)?);
                if self.eat(")") {
                    break;
                }
                if !self.eat(",") {
                    let at = self.at;
                    return Err(self.error(at, "expected \",\" or \")\" in the list of values"));
                }
            }
            selector.requirements.push(Requirement::Set {
                key,
                values,
                inside: op == "in",
            });
            return Ok(());
        }
        selector.names.push(self.glob(at, word)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct Host {
        name: &'static str,
        attributes: HashMap<&'static str, &'static str>,
    }

    impl Attributes for Host {
        fn name(&self) -> &str {
            self.name
        }
        fn get(&self, key: &str) -> Option<Cow<'_, str>> {
            self.attributes.get(key).map(|v| Cow::Borrowed(*v))
        }
    }

    fn fleet() -> Vec<Host> {
        let host = |name, pairs: &[(&'static str, &'static str)]| Host {
            name,
            attributes: pairs.iter().copied().collect(),
        };
        vec![
            host("web-1", &[("role", "web"), ("dc", "fra"), ("os", "debian")]),
            host("web-2", &[("role", "web"), ("dc", "ams"), ("os", "ubuntu")]),
            host(
                "web-3",
                &[
                    ("role", "web"),
                    ("dc", "nyc"),
                    ("os", "debian"),
                    ("canary", ""),
                ],
            ),
            host("db-1", &[("role", "db"), ("dc", "fra"), ("os", "debian")]),
            host("lab", &[]),
        ]
    }

    fn select(expression: &str) -> Vec<&'static str> {
        let selector = Selector::parse(expression).unwrap_or_else(|e| panic!("{e}"));
        fleet()
            .into_iter()
            .filter(|h| selector.matches(h))
            .map(|h| h.name)
            .collect()
    }

    #[test]
    fn names_globs_and_lists_are_alternatives() {
        assert_eq!(select("db-1"), ["db-1"]);
        assert_eq!(select("web*"), ["web-1", "web-2", "web-3"]);
        assert_eq!(select("web-[12],db-1"), ["web-1", "web-2", "db-1"]);
        assert_eq!(select(" lab , nothing "), ["lab"]);
        assert!(select("nothing").is_empty());
    }

    #[test]
    fn selectors_are_all_required() {
        assert_eq!(select("role=web"), ["web-1", "web-2", "web-3"]);
        assert_eq!(select("role==web,os=debian"), ["web-1", "web-3"]);
        assert_eq!(select("dc in (fra, ams)"), ["web-1", "web-2", "db-1"]);
        assert_eq!(select("role=web,!canary"), ["web-1", "web-2"]);
        assert_eq!(select("os=deb*"), ["web-1", "web-3", "db-1"]);
        // As in kubectl, a host without the key is not "equal" but is
        // "not equal" and "not in".
        assert_eq!(select("role!=web"), ["db-1", "lab"]);
        assert_eq!(select("dc notin (fra,ams)"), ["web-3", "lab"]);
        assert_eq!(select("canary="), ["web-3"]);
    }

    #[test]
    fn names_and_selectors_combine() {
        assert_eq!(select("web*,dc in (fra,ams),!canary"), ["web-1", "web-2"]);
        assert_eq!(select("web-1,db-1,dc=fra"), ["web-1", "db-1"]);
        assert!(select("db*,role=web").is_empty());
    }

    /// Each mistake is reported at its byte, with what was expected there.
    #[test]
    fn errors_point_at_the_mistake() {
        let cases = [
            ("", 0, "the expression is empty"),
            ("   ", 0, "the expression is empty"),
            (
                "role=web,",
                9,
                "expected a host name, a glob or a selector, found the end",
            ),
            ("role=web,,db", 9, "found ','"),
            ("dc in (fra", 10, "expected \",\" or \")\""),
            ("dc in (fra,)", 11, "expected a value, found ')'"),
            ("dc in ()", 7, "expected a value"),
            ("!", 1, "a label or fact after"),
            ("role=web db", 9, "expected \",\" between terms, found 'd'"),
            ("web-[1", 0, "is not a glob"),
            ("ro*le=web", 0, "a key is not a glob"),
            ("role=(web)", 5, "expected \",\" between terms, found '('"),
            ("héllo", 1, "expected \",\" between terms"),
        ];
        for (expression, at, message) in cases {
            let e = Selector::parse(expression).expect_err(expression);
            assert_eq!(e.at, at, "{expression:?}: {e}");
            assert!(e.message.contains(message), "{expression:?}: {e}");
        }
        let shown = Selector::parse("role=web,dc in (fra")
            .unwrap_err()
            .to_string();
        assert_eq!(
            shown,
            "bad target expression: expected \",\" or \")\" in the list of values (at character 20)\n  role=web,dc in (fra\n                     ^"
        );
    }

    #[test]
    fn hostile_expressions_are_bounded() {
        let long = "a,".repeat(MAX_EXPRESSION_BYTES);
        let e = Selector::parse(&long).unwrap_err();
        assert!(e.message.contains("longer than"), "{}", e.message);
        assert!(e.expression.len() <= MAX_EXPRESSION_BYTES);
        let many = vec!["h"; MAX_TERMS + 1].join(",");
        let e = Selector::parse(&many).unwrap_err();
        assert!(e.message.contains("more than 256 terms"), "{}", e.message);
        // Every prefix of a valid expression parses or fails cleanly.
        let full = "web*,dc in (fra, ams),!canary,os!=debian*";
        for cut in 0..=full.len() {
            let _ = Selector::parse(&full[..cut]);
        }
    }
}
