//! Where in a TOML file something is: the line (and column) of a byte
//! offset, the line of a key path (from toml_edit's spans), and the line and
//! key of a serde/TOML error. Shared by the daemon's configuration and the
//! notifier's settings file, so both name lines the same way.

use std::fmt;
use std::ops::Range;

/// One step of a key path: a table key or an index into an array of tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(&'static str),
    Index(usize),
}

/// A key path such as `sensor[0].critical_above`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    /// A path of plain keys: `KeyPath::keys(&["mqtt", "host"])`.
    pub fn keys(keys: &[&'static str]) -> Self {
        Self(keys.iter().map(|k| Seg::Key(k)).collect())
    }

    /// This path with `key` appended.
    #[must_use]
    pub fn key(mut self, key: &'static str) -> Self {
        self.0.push(Seg::Key(key));
        self
    }

    /// This path with `[i]` appended.
    #[must_use]
    pub fn index(mut self, i: usize) -> Self {
        self.0.push(Seg::Index(i));
        self
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, s) in self.0.iter().enumerate() {
            match s {
                Seg::Key(k) if n == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

/// The 1-based line and column of byte `offset` in `src` (clamped to its end).
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(src.len());
    while !src.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |n| before.len() - n - 1)
        + 1;
    (line, column)
}

/// The 1-based line of byte `offset` in `src`.
pub fn line_of(src: &str, offset: usize) -> usize {
    line_col(src, offset).0
}

/// The byte span of the deepest part of `path` found in `src`.
pub fn span_of(src: &str, path: &KeyPath) -> Option<Range<usize>> {
    use toml_edit::{Item, Table};
    enum Cur<'a> {
        Item(&'a Item),
        Table(&'a Table),
    }
    let doc = toml_edit::ImDocument::parse(src).ok()?;
    let mut cur = Cur::Table(doc.as_table());
    let mut span = None;
    for seg in &path.0 {
        match (seg, cur) {
            (Seg::Key(k), c) => {
                let t: &dyn toml_edit::TableLike = match c {
                    Cur::Table(t) => t,
                    Cur::Item(i) => match i.as_table_like() {
                        Some(t) => t,
                        None => break,
                    },
                };
                let Some((key, item)) = t.get_key_value(k) else {
                    break;
                };
                span = key.span().or_else(|| item.span()).or(span);
                cur = Cur::Item(item);
            }
            (Seg::Index(i), Cur::Item(Item::ArrayOfTables(a))) => {
                let Some(t) = a.get(*i) else { break };
                span = t.span().or(span);
                cur = Cur::Table(t);
            }
            _ => break,
        }
    }
    span
}

/// The line of `path` in `src`: its key's line, or its deepest existing
/// parent's, or 1.
pub fn line_of_key(src: &str, path: &KeyPath) -> usize {
    span_of(src, path).map_or(1, |s| line_of(src, s.start))
}

/// A TOML or serde error, placed in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TomlErrorAt {
    pub line: usize,
    pub column: usize,
    /// The key written on the error's line, when the error's own message
    /// does not name it (a bad value's message names only the value).
    pub key: Option<String>,
    /// The parser's message.
    pub message: String,
}

impl TomlErrorAt {
    /// The message, prefixed with `key: ` when the parser's message does not
    /// name the key.
    pub fn message_with_key(&self) -> String {
        match &self.key {
            Some(k) => format!("{k}: {}", self.message),
            None => self.message.clone(),
        }
    }

    /// The message, prefixed with ``key `path`: `` as the daemon's other
    /// configuration errors name their key, when the parser's message does
    /// not name it.
    pub fn message_naming_key(&self) -> String {
        match &self.key {
            Some(k) => format!("key `{k}`: {}", self.message),
            None => self.message.clone(),
        }
    }
}

/// The key path (`mqtt.keep_alive_secs`, `sensor[1].resolution`) of the
/// key or value at byte `offset` of `src`, when one is there.
pub fn key_path_at(src: &str, offset: usize) -> Option<String> {
    use toml_edit::{Item, Table, Value};
    fn join(path: &str, key: &str) -> String {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    }
    fn spans(key: Option<&toml_edit::Key>, offset: usize) -> bool {
        key.and_then(|k| k.span())
            .is_some_and(|s| s.contains(&offset))
    }
    fn value(v: &Value, path: &str, offset: usize) -> Option<String> {
        let inner = match v {
            Value::Array(a) => a
                .iter()
                .enumerate()
                .find_map(|(i, v)| value(v, &format!("{path}[{i}]"), offset)),
            Value::InlineTable(t) => t.iter().find_map(|(k, v)| {
                let p = join(path, k);
                if spans(t.key(k), offset) {
                    Some(p)
                } else {
                    value(v, &p, offset)
                }
            }),
            _ => None,
        };
        inner.or_else(|| {
            v.span()
                .filter(|s| s.contains(&offset))
                .map(|_| path.to_string())
        })
    }
    fn item(it: &Item, path: &str, offset: usize) -> Option<String> {
        match it {
            Item::Value(v) => value(v, path, offset),
            Item::Table(t) => table(t, path, offset),
            Item::ArrayOfTables(a) => a
                .iter()
                .enumerate()
                .find_map(|(i, t)| table(t, &format!("{path}[{i}]"), offset)),
            Item::None => None,
        }
    }
    fn table(t: &Table, path: &str, offset: usize) -> Option<String> {
        t.iter().find_map(|(k, it)| {
            let p = join(path, k);
            if spans(t.key(k), offset) {
                Some(p)
            } else {
                item(it, &p, offset)
            }
        })
    }
    let doc = toml_edit::ImDocument::parse(src).ok()?;
    table(doc.as_table(), "", offset).filter(|p| !p.is_empty())
}

/// Places `e`, an error from parsing `src`, at its line and column (1:1 when
/// the error has no span) and finds its key: the whole path of the key or
/// value at the error (`mqtt.keep_alive_secs`, `sensor[1].resolution`), or
/// else the key written on that line.
pub fn toml_error(src: &str, e: &toml::de::Error) -> TomlErrorAt {
    let (line, column) = e.span().map_or((1, 1), |s| line_col(src, s.start));
    let message = e.message().to_string();
    let key = e
        .span()
        .and_then(|s| key_path_at(src, s.start))
        .or_else(|| {
            src.lines()
                .nth(line - 1)
                .and_then(|l| l.split_once('='))
                .map(|(k, _)| k.trim().to_string())
        })
        .filter(|k| !k.is_empty() && !message.contains(k.as_str()));
    TomlErrorAt {
        line,
        column,
        key,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_columns_are_one_based_and_clamped() {
        let src = "a = 1\nbb = 2\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 6), (2, 1));
        assert_eq!(line_col(src, 9), (2, 4));
        assert_eq!(line_col(src, 1000), (3, 1));
        assert_eq!(line_col("é", 1), (1, 1));
    }

    #[test]
    fn key_paths_display_like_the_toml_they_name() {
        let p = KeyPath::keys(&["sensor"]).index(2).key("sim").key("steps");
        assert_eq!(p.to_string(), "sensor[2].sim.steps");
        assert_eq!(KeyPath::keys(&["mqtt", "host"]).to_string(), "mqtt.host");
    }

    #[test]
    fn a_key_path_finds_its_line_or_its_parents() {
        let src = "x = 1\n[mqtt]\nhost = \"h\"\n[[sensor]]\nid = \"a\"\n[[sensor]]\nid = \"b\"\n";
        assert_eq!(line_of_key(src, &KeyPath::keys(&["mqtt", "host"])), 3);
        assert_eq!(line_of_key(src, &KeyPath::keys(&["mqtt", "port"])), 2);
        let second = KeyPath::keys(&["sensor"]).index(1).key("id");
        assert_eq!(line_of_key(src, &second), 7);
        assert_eq!(line_of_key(src, &KeyPath::keys(&["nope"])), 1);
        assert_eq!(line_of_key("not [ toml", &KeyPath::keys(&["x"])), 1);
    }

    #[test]
    fn a_toml_error_names_its_line_and_the_key_of_a_bad_value() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[expect(dead_code, reason = "only parsed")]
        struct T {
            a: u32,
            b: u32,
        }
        let src = "a = 1\nb = \"two\"\n";
        let e = toml::from_str::<T>(src).expect_err("b is a string");
        let at = toml_error(src, &e);
        assert_eq!((at.line, at.column), (2, 5));
        assert_eq!(at.key.as_deref(), Some("b"));
        assert!(at.message_with_key().starts_with("b: "), "{at:?}");
        let src = "a = 1\nb = 2\nc = 3\n";
        let e = toml::from_str::<T>(src).expect_err("c is unknown");
        assert_eq!(toml_error(src, &e).line, 3);
    }

    #[test]
    fn key_paths_are_found_for_values_keys_and_inline_values() {
        let src = "a = 1\n[t]\nb = { c = [1, \"x\"] }\n[[s]]\nd = 2\n[[s]]\ne.f = 3\n";
        let at = |needle: &str| key_path_at(src, src.find(needle).expect("needle"));
        assert_eq!(at("1\n").as_deref(), Some("a"));
        assert_eq!(at("\"x\"").as_deref(), Some("t.b.c[1]"));
        assert_eq!(at("c =").as_deref(), Some("t.b.c"));
        assert_eq!(at("2\n").as_deref(), Some("s[0].d"));
        assert_eq!(at("3\n").as_deref(), Some("s[1].e.f"));
        assert_eq!(key_path_at(src, src.len() + 10), None);
    }
}
