//! The Event header (RFC 6665 §8.2.1): `Event: presence;id=1`, `o: conference`.

use bytes::Bytes;

use super::{HeaderError, Params};
use crate::sip::message::{is_token_char, trim};

/// An Event value: the event type and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The event type as received: package and templates (`presence.winfo`).
    pub package: Bytes,
    /// The parameters (`id`, ...).
    pub params: Params,
}

impl Event {
    /// Parses `event-type *( SEMI event-param )`.
    pub fn parse(raw: &Bytes) -> Result<Event, HeaderError> {
        const E: HeaderError = HeaderError::Malformed("Event");
        let v = trim(raw);
        let end = v.iter().position(|&c| c == b';').unwrap_or(v.len());
        let package = trim(&v.slice(..end));
        if package.is_empty()
            || !package.iter().all(|&c| is_token_char(c))
            || package.first() == Some(&b'.')
            || package.last() == Some(&b'.')
        {
            return Err(E);
        }
        let params = Params::parse_strict(&v.slice(end..), "Event")?;
        Ok(Event { package, params })
    }

    /// The `id` parameter, which tells apart subscriptions of one dialog (RFC 6665 §8.2.1).
    pub fn id(&self) -> Option<&Bytes> {
        self.params.value("id")
    }

    /// Whether the event type is `name`, compared byte by byte as RFC 6665 §8.2.1 matches
    /// event types.
    pub fn is(&self, name: &str) -> bool {
        self.package[..] == *name.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_event() {
        let e = Event::parse(&Bytes::from_static(b"presence.winfo ; id=7")).unwrap();
        assert!(e.is("presence.winfo"));
        assert_eq!(&e.id().unwrap()[..], b"7");
        assert!(Event::parse(&Bytes::from_static(b"refer"))
            .unwrap()
            .id()
            .is_none());
        for bad in [&b""[..], b";id=1", b"pres ence", b"x;;", b".x", b"x."] {
            assert!(
                Event::parse(&Bytes::copy_from_slice(bad)).is_err(),
                "{bad:?}"
            );
        }
    }
}
