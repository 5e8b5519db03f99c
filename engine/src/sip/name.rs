//! Header names: the ones the server reads are an enum, everything else keeps its spelling.
//!
//! Names compare case-insensitively and compact forms (RFC 3261 §7.3.3, RFC 3515, RFC 3841,
//! RFC 6665) map to the same variant as the long form, so `v:` and `VIA:` are both
//! [`HeaderName::Via`].

use bytes::Bytes;

macro_rules! header_names {
    ($( $variant:ident => $canon:literal $(, $compact:literal)? ;)*) => {
        /// A SIP header name.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum HeaderName {
            $(
                #[doc = concat!("`", $canon, "`")]
                $variant,
            )*
            /// Any other header, with its name as received.
            Other(Bytes),
        }

        impl HeaderName {
            /// Classifies a received name (case-insensitive, compact forms understood).
            pub fn from_bytes(raw: &Bytes) -> HeaderName {
                HeaderName::known(raw).unwrap_or_else(|| HeaderName::Other(raw.clone()))
            }

            /// The variant for a name this enum knows, `None` for an `Other` name. Takes a
            /// plain slice, so the parser only makes a `Bytes` for unknown names.
            pub fn known(raw: &[u8]) -> Option<HeaderName> {
                $(
                    if raw.eq_ignore_ascii_case($canon.as_bytes()) {
                        return Some(HeaderName::$variant);
                    }
                    $(
                        if raw.eq_ignore_ascii_case($compact.as_bytes()) {
                            return Some(HeaderName::$variant);
                        }
                    )?
                )*
                None
            }

            /// The canonical long form, as the serializer prints it.
            pub fn as_str(&self) -> &str {
                match self {
                    $( HeaderName::$variant => $canon, )*
                    HeaderName::Other(raw) => std::str::from_utf8(raw).unwrap_or("X-Invalid"),
                }
            }

            /// The compact form (RFC 3261 §7.3.3), if the header has one.
            pub fn compact(&self) -> Option<&'static str> {
                match self {
                    $( $( HeaderName::$variant => Some($compact), )? )*
                    _ => None,
                }
            }
        }
    };
}

header_names! {
    Via => "Via", "v";
    From => "From", "f";
    To => "To", "t";
    CallId => "Call-ID", "i";
    CSeq => "CSeq";
    MaxForwards => "Max-Forwards";
    Contact => "Contact", "m";
    ContentLength => "Content-Length", "l";
    ContentType => "Content-Type", "c";
    ContentEncoding => "Content-Encoding", "e";
    Route => "Route";
    RecordRoute => "Record-Route";
    Expires => "Expires";
    MinExpires => "Min-Expires";
    Authorization => "Authorization";
    ProxyAuthorization => "Proxy-Authorization";
    WwwAuthenticate => "WWW-Authenticate";
    ProxyAuthenticate => "Proxy-Authenticate";
    AuthenticationInfo => "Authentication-Info";
    AcceptContact => "Accept-Contact", "a";
    RejectContact => "Reject-Contact", "j";
    Require => "Require";
    ProxyRequire => "Proxy-Require";
    Supported => "Supported", "k";
    Unsupported => "Unsupported";
    Allow => "Allow";
    Accept => "Accept";
    Event => "Event", "o";
    AllowEvents => "Allow-Events", "u";
    SubscriptionState => "Subscription-State";
    ReferTo => "Refer-To", "r";
    ReferredBy => "Referred-By", "b";
    Subject => "Subject", "s";
    UserAgent => "User-Agent";
    Server => "Server";
    Date => "Date";
    RetryAfter => "Retry-After";
    Timestamp => "Timestamp";
    SessionExpires => "Session-Expires", "x";
    MinSe => "Min-SE";
    Path => "Path";
    ServiceRoute => "Service-Route";
    PAssertedIdentity => "P-Asserted-Identity";
    Warning => "Warning";
}

impl HeaderName {
    /// Whether several values of this header may share one line, separated by commas
    /// (RFC 3261 §7.3.1). Authentication headers, dates and free text may contain commas of
    /// their own and are never split.
    pub fn is_list(&self) -> bool {
        matches!(
            self,
            HeaderName::Via
                | HeaderName::Contact
                | HeaderName::Route
                | HeaderName::RecordRoute
                | HeaderName::Require
                | HeaderName::ProxyRequire
                | HeaderName::Supported
                | HeaderName::Unsupported
                | HeaderName::Allow
                | HeaderName::Accept
                | HeaderName::ContentEncoding
                | HeaderName::AcceptContact
                | HeaderName::RejectContact
                | HeaderName::AllowEvents
                | HeaderName::Path
                | HeaderName::ServiceRoute
                | HeaderName::PAssertedIdentity
        )
    }
}

impl std::fmt::Display for HeaderName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_and_case_insensitive() {
        assert_eq!(
            HeaderName::from_bytes(&Bytes::from_static(b"v")),
            HeaderName::Via
        );
        assert_eq!(
            HeaderName::from_bytes(&Bytes::from_static(b"VIA")),
            HeaderName::Via
        );
        assert_eq!(
            HeaderName::from_bytes(&Bytes::from_static(b"call-id")),
            HeaderName::CallId
        );
        assert_eq!(
            HeaderName::from_bytes(&Bytes::from_static(b"i")),
            HeaderName::CallId
        );
        assert_eq!(
            HeaderName::from_bytes(&Bytes::from_static(b"X-Foo")),
            HeaderName::Other(Bytes::from_static(b"X-Foo"))
        );
        assert_eq!(HeaderName::Via.compact(), Some("v"));
        assert_eq!(HeaderName::CSeq.compact(), None);
    }
}
