//! What MESSAGE `data` may hold: JSON that every client can read.
//!
//! The gateway relays `data` byte for byte, so whatever it accepts reaches
//! every recipient's parser as it was sent. JSON's grammar allows text that
//! strict parsers refuse: a `\ud800` escape with no partner (serde_json and
//! Python's `json` with `strict` surrogates refuse it), a number such as
//! `1e400` that no double holds (serde_json refuses it), nesting deeper
//! than a parser's recursion limit (128 for serde_json, Python's recursion
//! limit). One such MESSAGE to `ALL` used to knock every agent and every
//! `ctl` off the gateway. So `data` must follow the profile of I-JSON
//! (RFC 7493) on everything that breaks a parser: no lone surrogates,
//! numbers that fit a double, and at most [`MAX_DATA_DEPTH`] levels of
//! arrays and objects, so that the envelopes around `data` (the MESSAGE, an
//! agent's reply, a Socket.IO event) stay far below any parser's limit.
//!
//! [`check`] walks the raw text once with serde_json's own deserializer,
//! building nothing: strings are really decoded (which is where serde_json
//! refuses a lone surrogate; its `IgnoredAny` skips escapes unchecked),
//! numbers are read as numbers, and containers are counted.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// How deeply arrays and objects may nest in MESSAGE `data`: `[[1]]` is
/// two levels. With the envelopes around it, data this deep stays well
/// under serde_json's limit of 128 and Python's default recursion limit.
pub const MAX_DATA_DEPTH: usize = 64;

/// Checks that `json` (one syntactically valid JSON value, as a
/// [`RawValue`](serde_json::value::RawValue) holds) is readable by every
/// client; the error names what is not, and where.
pub fn check(json: &str) -> Result<(), String> {
    let mut de = serde_json::Deserializer::from_str(json);
    Walk { depth: 0 }
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(describe)
}

/// How deeply arrays and objects nest in `value` (a scalar is 0, `[[1]]`
/// is 2): what a program that builds data checks against
/// [`MAX_DATA_DEPTH`] before it sends it.
pub fn depth(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(members) => 1 + members.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// serde_json's errors for what the walk finds, said plainly.
fn describe(e: serde_json::Error) -> String {
    let text = e.to_string();
    let problem = if text.contains("surrogate") || text.contains("hex escape") {
        "a string with a lone surrogate escape (\\uD800-\\uDFFF not in a pair)".to_owned()
    } else if text.contains("number out of range") {
        "a number too large for a double (64-bit float)".to_owned()
    } else {
        return text;
    };
    format!("{problem} at line {} column {}", e.line(), e.column())
}

/// One value at `depth` containers deep.
#[derive(Clone, Copy)]
struct Walk {
    depth: usize,
}

impl Walk {
    /// The walk inside one more array or object, if that is allowed.
    fn deeper<E: de::Error>(self) -> Result<Walk, E> {
        if self.depth >= MAX_DATA_DEPTH {
            return Err(E::custom(format_args!(
                "arrays and objects nested deeper than {MAX_DATA_DEPTH} levels"
            )));
        }
        Ok(Walk {
            depth: self.depth + 1,
        })
    }
}

impl<'de> DeserializeSeed<'de> for Walk {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        // serde_json already refuses what overflows; kept so the rule does
        // not hang on that.
        if v.is_finite() {
            Ok(())
        } else {
            Err(E::custom("a number too large for a double (64-bit float)"))
        }
    }

    /// serde_json hands over a string only once it has decoded its
    /// escapes, surrogate pairs included.
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.deeper()?;
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.deeper()?;
        // A key is a string: decoded like any other, at this depth.
        while map.next_key_seed(self)?.is_some() {
            map.next_value_seed(inner)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn what_every_parser_reads_passes() {
        for ok in [
            "null",
            "true",
            r#""plain""#,
            r#""\ud83d\ude00 and \u00e9 and \n""#,
            "-0",
            "1.7976931348623157e308",
            "18446744073709551615",
            "-9223372036854775808",
            "123456789012345678901234567890",
            r#"{"a": [1, {"b": null}], "\ud83d\ude00": "x"}"#,
            &nested(MAX_DATA_DEPTH),
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn what_strict_parsers_refuse_is_named() {
        for (bad, named) in [
            (r#""\ud800""#, "lone surrogate"),
            (r#""\udc00""#, "lone surrogate"),
            (r#""\ud800\u0041""#, "lone surrogate"),
            (r#"{"\ud800": 1}"#, "lone surrogate"),
            (r#"["ok", "x\ud83dy"]"#, "lone surrogate"),
            ("1e400", "too large for a double"),
            ("[-1e400]", "too large for a double"),
            (&nested(MAX_DATA_DEPTH + 1), "nested deeper than 64"),
        ] {
            let e = check(bad).expect_err(bad);
            assert!(e.contains(named), "{bad}: {e}");
        }
        let deep_object = format!(
            "{}1{}",
            r#"{"k":"#.repeat(MAX_DATA_DEPTH + 1),
            "}".repeat(MAX_DATA_DEPTH + 1)
        );
        assert!(check(&deep_object).is_err());
    }
}
