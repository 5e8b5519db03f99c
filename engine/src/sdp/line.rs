//! Lines of a session description (RFC 8866 §5): `<type>=<value>`, kept as received, and the
//! ordered line lists of the session part and of each media section.

use bytes::{Bytes, BytesMut};

use super::attr::Attribute;
use super::SdpError;

/// One `<type>=<value>` line (RFC 8866 §5). The value is kept byte for byte as received, without
/// its line end; lines of unknown types and unknown attributes pass through untouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    kind: u8,
    value: Bytes,
}

impl Line {
    /// A line of type `kind` (an ASCII letter, not `m`: media sections are built with
    /// [`super::MediaSection::new`]); the value may not contain CR, LF or NUL (RFC 8866 §9).
    pub fn new(kind: u8, value: impl Into<Bytes>) -> Result<Line, SdpError> {
        let value = value.into();
        if !kind.is_ascii_alphabetic() || kind == b'm' || !valid_value(&value) {
            return Err(SdpError::InvalidValue);
        }
        Ok(Line { kind, value })
    }

    /// A line whose parts are known to be valid (built by this module).
    pub(crate) fn known(kind: u8, value: Bytes) -> Line {
        Line { kind, value }
    }

    /// The type letter (`b'a'` for `a=...`).
    pub fn kind(&self) -> u8 {
        self.kind
    }

    /// The value after `=`, as received.
    pub fn value(&self) -> &Bytes {
        &self.value
    }

    /// The line as an attribute, if it is an `a=` line (RFC 8866 §5.13).
    pub fn attribute(&self) -> Option<Attribute> {
        (self.kind == b'a').then(|| Attribute::parse(&self.value))
    }

    /// Appends `<type>=<value>CRLF`.
    pub(crate) fn write_to(&self, out: &mut BytesMut) {
        out.extend_from_slice(&[self.kind, b'=']);
        out.extend_from_slice(&self.value);
        out.extend_from_slice(b"\r\n");
    }
}

/// Whether `v` may be the value of a line: no CR, LF or NUL (RFC 8866 §9, `byte-string`).
pub(crate) fn valid_value(v: &[u8]) -> bool {
    !v.iter().any(|&c| matches!(c, b'\r' | b'\n' | 0))
}

/// Which part of the description a line list belongs to; sets the order new lines go in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    /// Session-level lines (RFC 8866 §5: `v o s i u e p c b t r z k a`).
    Session,
    /// Lines after an `m=` line (RFC 8866 §5: `i c b k a`).
    Media,
}

impl Level {
    /// The position of `kind` in the grammar's order at this level; `None` for other types.
    fn rank(self, kind: u8) -> Option<usize> {
        let order: &[u8] = match self {
            Level::Session => b"vosiuepcbtrzka",
            Level::Media => b"icbka",
        };
        order.iter().position(|&k| k == kind)
    }
}

/// The ordered lines of the session part or of one media section (without its `m=` line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lines {
    level: Level,
    lines: Vec<Line>,
}

impl Lines {
    pub(crate) fn new(level: Level) -> Lines {
        Lines {
            level,
            lines: Vec::new(),
        }
    }

    pub(crate) fn as_slice(&self) -> &[Line] {
        &self.lines
    }

    /// Appends a received line where it was (parsing keeps the sender's order).
    pub(crate) fn push_received(&mut self, line: Line) {
        self.lines.push(line);
    }

    /// Inserts a new line in the grammar's order: after the last line whose type comes at or
    /// before it (lines of unknown types are not moved and not counted).
    pub(crate) fn insert(&mut self, line: Line) {
        let at = match self.level.rank(line.kind) {
            Some(r) => self
                .lines
                .iter()
                .rposition(|l| self.level.rank(l.kind).is_some_and(|lr| lr <= r))
                .map_or(0, |i| i + 1),
            None => self.lines.len(),
        };
        self.lines.insert(at, line);
    }

    /// The values of the lines of type `kind`, in order.
    pub(crate) fn values(&self, kind: u8) -> impl Iterator<Item = &Bytes> + '_ {
        self.lines
            .iter()
            .filter(move |l| l.kind == kind)
            .map(|l| &l.value)
    }

    /// The value of the first line of type `kind`.
    pub(crate) fn first(&self, kind: u8) -> Option<&Bytes> {
        self.values(kind).next()
    }

    /// Replaces the first line matching `is_same` with `line` (in place) and removes the other
    /// matching lines; inserts `line` in grammar order when none matches.
    pub(crate) fn replace(&mut self, line: Line, mut is_same: impl FnMut(&Line) -> bool) {
        match self.lines.iter().position(&mut is_same) {
            Some(i) => {
                self.lines[i] = line;
                let mut k = 0;
                self.lines.retain(|l| {
                    let keep = k <= i || !is_same(l);
                    k += 1;
                    keep
                });
            }
            None => self.insert(line),
        }
    }

    /// Removes the lines matching `remove`; returns how many were removed.
    pub(crate) fn remove(&mut self, mut remove: impl FnMut(&Line) -> bool) -> usize {
        let before = self.lines.len();
        self.lines.retain(|l| !remove(l));
        before - self.lines.len()
    }

    /// The `a=` lines as attributes, in order.
    pub(crate) fn attributes(&self) -> impl Iterator<Item = Attribute> + '_ {
        self.lines.iter().filter_map(Line::attribute)
    }

    /// The first attribute called `name` (compared ASCII case-insensitively).
    pub(crate) fn attribute(&self, name: &str) -> Option<Attribute> {
        self.attributes().find(|a| a.is(name))
    }

    /// Sets attribute `attr`: replaces the first one of that name in place and drops the others
    /// of that name, or appends it after the last attribute.
    pub(crate) fn set_attribute(&mut self, attr: Attribute) {
        let name = attr.name().clone();
        self.replace(attr.into_line(), |l| is_attribute(l, &name));
    }

    /// Removes the attributes called `name`; returns how many were removed.
    pub(crate) fn remove_attribute(&mut self, name: &str) -> usize {
        self.remove(|l| is_attribute(l, name.as_bytes()))
    }

    pub(crate) fn write_to(&self, out: &mut BytesMut) {
        for l in &self.lines {
            l.write_to(out);
        }
    }
}

/// Whether `l` is an `a=` line whose name is `name` (ASCII case-insensitively).
pub(crate) fn is_attribute(l: &Line, name: &[u8]) -> bool {
    l.kind == b'a' && attribute_name(&l.value).eq_ignore_ascii_case(name)
}

/// The name part of an attribute value (`att-field`, before the first `:`).
pub(crate) fn attribute_name(value: &[u8]) -> &[u8] {
    match value.iter().position(|&c| c == b':') {
        Some(i) => value.get(..i).unwrap_or(value),
        None => value,
    }
}

/// The lines of `body` without their line ends: CRLF or bare LF (RFC 8866 §5 asks parsers to
/// accept both); a last line without a line end is a line; blank lines are skipped.
pub(crate) fn split_lines(body: &Bytes) -> impl Iterator<Item = Bytes> + '_ {
    let mut pos = 0;
    std::iter::from_fn(move || loop {
        let rest = body.get(pos..)?;
        if rest.is_empty() {
            return None;
        }
        let (len, next) = match rest.iter().position(|&c| c == b'\n') {
            Some(nl) => (nl, pos + nl + 1),
            None => (rest.len(), body.len()),
        };
        let line = &rest[..len];
        let len = if line.last() == Some(&b'\r') {
            len - 1
        } else {
            len
        };
        let start = pos;
        pos = next;
        if len > 0 {
            return Some(body.slice(start..start + len));
        }
    })
}

/// The space-separated fields of `v` (RFC 8866 separates fields by one SP; runs of SP and HTAB
/// are accepted), as slices of `v`.
pub(crate) fn fields(v: &Bytes) -> impl Iterator<Item = Bytes> + '_ {
    let is_sp = |c: &u8| *c == b' ' || *c == b'\t';
    let mut pos = 0;
    std::iter::from_fn(move || {
        let rest = v.get(pos..)?;
        let start = pos + rest.iter().position(|c| !is_sp(c))?;
        let tail = v.get(start..)?;
        let end = start + tail.iter().position(is_sp).unwrap_or(tail.len());
        pos = end;
        Some(v.slice(start..end))
    })
}

/// `v` split at the first run of spaces: the first field and the rest (without leading spaces).
pub(crate) fn split_field(v: &Bytes) -> (Bytes, Bytes) {
    let is_sp = |c: &u8| *c == b' ' || *c == b'\t';
    let start = v.iter().position(|c| !is_sp(c)).unwrap_or(v.len());
    let end = v
        .get(start..)
        .and_then(|t| t.iter().position(is_sp))
        .map_or(v.len(), |e| start + e);
    let rest = v
        .get(end..)
        .and_then(|t| t.iter().position(|c| !is_sp(c)))
        .map_or(v.len(), |r| end + r);
    (v.slice(start..end), v.slice(rest..))
}

/// `v` split at the first `sep`: before it, and after it if present.
pub(crate) fn split_at_byte(v: &Bytes, sep: u8) -> (Bytes, Option<Bytes>) {
    match v.iter().position(|&c| c == sep) {
        Some(i) => (v.slice(..i), Some(v.slice(i + 1..))),
        None => (v.clone(), None),
    }
}

/// A non-empty run of ASCII digits as a number of type `T`; `None` when not digits or too big.
pub(crate) fn decimal<T: TryFrom<u64>>(d: &[u8]) -> Option<T> {
    if d.is_empty() || d.len() > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for &c in d {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    T::try_from(n).ok()
}

/// `parts` joined by single spaces, as a new buffer.
pub(crate) fn join(parts: &[&[u8]]) -> Bytes {
    let mut out = BytesMut::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b" ");
        }
        out.extend_from_slice(p);
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn lines_accept_crlf_lf_and_a_missing_last_end() {
        let body = b("v=0\r\no=x\n\r\n\ns=-");
        let lines: Vec<Bytes> = split_lines(&body).collect();
        assert_eq!(lines, vec![b("v=0"), b("o=x"), b("s=-")]);
        assert_eq!(split_lines(&b("")).count(), 0);
        assert_eq!(split_lines(&b("\r\n\n")).count(), 0);
    }

    #[test]
    fn fields_split_on_space_runs() {
        let v = b(" IN  IP4\t192.0.2.1 ");
        let f: Vec<Bytes> = fields(&v).collect();
        assert_eq!(f, vec![b("IN"), b("IP4"), b("192.0.2.1")]);
        assert_eq!(fields(&b("   ")).count(), 0);
        assert_eq!(split_field(&b("96 a=1; b=2")), (b("96"), b("a=1; b=2")));
        assert_eq!(split_field(&b("96")), (b("96"), b("")));
    }

    #[test]
    fn decimals_are_bounded() {
        assert_eq!(decimal::<u16>(b"65535"), Some(65535));
        assert_eq!(decimal::<u16>(b"65536"), None);
        assert_eq!(decimal::<u64>(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(decimal::<u64>(b"18446744073709551616"), None);
        assert_eq!(decimal::<u8>(b""), None);
        assert_eq!(decimal::<u8>(b"1a"), None);
    }

    #[test]
    fn new_lines_are_checked() {
        assert!(Line::new(b'b', "AS:64").is_ok());
        assert_eq!(
            Line::new(b'm', "audio 0 RTP/AVP 0"),
            Err(SdpError::InvalidValue)
        );
        assert_eq!(Line::new(b'=', "x"), Err(SdpError::InvalidValue));
        assert_eq!(Line::new(b'a', "x\r\nm=evil"), Err(SdpError::InvalidValue));
    }

    #[test]
    fn insert_follows_grammar_order() {
        let mut l = Lines::new(Level::Session);
        for (k, v) in [
            (b'v', "0"),
            (b'o', "o"),
            (b's', "-"),
            (b't', "0 0"),
            (b'a', "x"),
        ] {
            l.push_received(Line::known(k, Bytes::from_static(v.as_bytes())));
        }
        l.insert(Line::known(b'c', b("IN IP4 192.0.2.1")));
        l.insert(Line::known(b'b', b("AS:64")));
        let kinds: Vec<u8> = l.as_slice().iter().map(Line::kind).collect();
        assert_eq!(kinds, b"voscbta");
    }

    #[test]
    fn replace_keeps_position_and_drops_duplicates() {
        let mut l = Lines::new(Level::Media);
        for v in ["sendonly", "x-foo", "inactive", "ptime:20"] {
            l.push_received(Line::known(b'a', Bytes::from_static(v.as_bytes())));
        }
        let dir = |l: &Line| is_attribute(l, b"sendonly") || is_attribute(l, b"inactive");
        l.replace(Line::known(b'a', b("recvonly")), dir);
        let vals: Vec<&Bytes> = l.values(b'a').collect();
        assert_eq!(vals, vec!["recvonly", "x-foo", "ptime:20"]);
    }
}
