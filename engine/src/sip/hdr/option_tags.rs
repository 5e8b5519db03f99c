//! Option-tag lists: Require (RFC 3261 §20.32), Proxy-Require (§20.29), Supported (§20.37),
//! Unsupported (§20.40). Option tags are tokens and compare case-insensitively (§7.3.1).

use bytes::Bytes;

use super::HeaderError;
use crate::sip::message::is_token_char;

/// The option tags of every line of one header, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OptionTags(pub Vec<Bytes>);

impl OptionTags {
    /// Collects tags from list elements (already comma-split); each must be a token.
    pub fn parse(
        values: impl Iterator<Item = Bytes>,
        header: &'static str,
    ) -> Result<OptionTags, HeaderError> {
        let mut tags = Vec::new();
        for v in values {
            if !v.iter().all(|&c| is_token_char(c)) {
                return Err(HeaderError::Malformed(header));
            }
            tags.push(v);
        }
        Ok(OptionTags(tags))
    }

    /// Whether `tag` is listed (case-insensitive).
    pub fn contains(&self, tag: &str) -> bool {
        self.0
            .iter()
            .any(|t| t.eq_ignore_ascii_case(tag.as_bytes()))
    }

    /// The tags in order.
    pub fn iter(&self) -> impl Iterator<Item = &Bytes> {
        self.0.iter()
    }

    /// Whether no tag is listed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::split_list;

    #[test]
    fn parses_tags() {
        let v = Bytes::from_static(b"100rel, Timer ,  gruu");
        let t = OptionTags::parse(split_list(&v).into_iter(), "Supported").unwrap();
        assert_eq!(t.0.len(), 3);
        assert!(t.contains("timer"));
        assert!(t.contains("GRUU"));
        assert!(!t.contains("path"));
        let bad = Bytes::from_static(b"100rel, a b");
        assert_eq!(
            OptionTags::parse(split_list(&bad).into_iter(), "Require"),
            Err(HeaderError::Malformed("Require"))
        );
    }
}
