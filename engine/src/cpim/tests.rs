use super::*;

const IMDN_NS: &str = "urn:ietf:params:imdn";

fn crlf(s: &str) -> Bytes {
    Bytes::from(s.replace('\n', "\r\n"))
}

/// RFC 3862 §2 (the "m:/s:/h:/e:" example with the markers removed; the outer MIME header
/// `Content-type: Message/CPIM` belongs to the carrying protocol).
const RFC3862_EXAMPLE: &str = "From: MR SANDERS <im:piglet@100akerwood.com>
To: Depressed Donkey <im:eeyore@100akerwood.com>
DateTime: 2000-12-13T13:40:00-08:00
Subject: the weather will be fine today
Subject:;lang=fr beau temps prevu pour aujourd'hui
NS: MyFeatures <mid:MessageFeatures@id.foo.com>
Require: MyFeatures.VitalMessageOption
MyFeatures.VitalMessageOption: Confirmation-requested
MyFeatures.WackyMessageOption: Use-silly-font

Content-type: text/xml; charset=utf-8
Content-ID: <1234567890@foo.com>

<body>
Here is the text of my message.
</body>
";

#[test]
fn rfc3862_example() {
    let buf = crlf(RFC3862_EXAMPLE);
    let m = CpimMessage::parse(buf.clone()).unwrap();
    assert_eq!(m.from().display_str(), Some("MR SANDERS"));
    assert_eq!(m.from().uri_str(), "im:piglet@100akerwood.com");
    assert_eq!(m.to().len(), 1);
    assert_eq!(m.to()[0].display_str(), Some("Depressed Donkey"));
    assert_eq!(m.to()[0].uri_str(), "im:eeyore@100akerwood.com");
    assert!(m.cc().is_empty());
    assert_eq!(m.datetime(), Some("2000-12-13T13:40:00-08:00"));
    let subjects: Vec<_> = m.subjects().collect();
    assert_eq!(
        subjects,
        vec![
            (None, "the weather will be fine today"),
            (Some("fr"), "beau temps prevu pour aujourd'hui"),
        ]
    );
    assert_eq!(
        m.require().collect::<Vec<_>>(),
        vec!["MyFeatures.VitalMessageOption"]
    );
    let ns = "mid:MessageFeatures@id.foo.com";
    assert_eq!(
        m.header_ns(ns, "VitalMessageOption"),
        Some("Confirmation-requested")
    );
    assert_eq!(
        m.header_ns(ns, "WackyMessageOption"),
        Some("Use-silly-font")
    );
    assert_eq!(m.header_ns(CPIM_HEADERS_NS, "WackyMessageOption"), None);
    assert!(m.content_type_is("text/xml"));
    assert_eq!(&m.content_type()[..], b"text/xml; charset=utf-8");
    assert_eq!(
        m.content_header("content-id").map(|v| &v[..]),
        Some(&b"<1234567890@foo.com>"[..])
    );
    assert_eq!(
        &m.body()[..],
        b"<body>\r\nHere is the text of my message.\r\n</body>\r\n"
    );
    // Zero copy: the content is a slice of the input buffer.
    let off = m.body().as_ptr() as usize - buf.as_ptr() as usize;
    assert_eq!(off + m.body().len(), buf.len());
}

/// RFC 5438 §6 (the CPIM body of an IM requesting positive and negative delivery IMDNs).
const RFC5438_REQUEST: &str = "From: Alice <im:alice@example.com>
To: Bob <im:bob@example.com>
NS: imdn <urn:ietf:params:imdn>
imdn.Message-ID: 34jk324j
DateTime: 2006-04-04T12:16:49-05:00
imdn.Disposition-Notification: positive-delivery, negative-delivery
Content-type: text/plain
Content-length: 12

Hello World
";

#[test]
fn rfc5438_request_example_lacks_the_blank_line() {
    // As printed in the RFC the example has no blank line between the CPIM headers and the
    // MIME headers; that is not a valid CPIM message (RFC 3862 §2).
    assert_eq!(
        CpimMessage::parse(crlf(RFC5438_REQUEST)).unwrap_err(),
        CpimError::MissingContentEnd
    );
    let fixed = RFC5438_REQUEST.replace("Content-type", "\nContent-type");
    let m = CpimMessage::parse(crlf(&fixed)).unwrap();
    assert_eq!(m.header(IMDN_NS, "Message-ID"), Some("34jk324j"));
    assert_eq!(
        m.header(IMDN_NS, "Disposition-Notification"),
        Some("positive-delivery, negative-delivery")
    );
    assert_eq!(&m.body()[..], b"Hello World\r");
}

#[test]
fn rcs_style_message_lf_only_and_prefix_case() {
    let m = CpimMessage::parse(Bytes::from_static(
        b"From: <sip:anonymous@anonymous.invalid>\n\
          To: <sip:anonymous@anonymous.invalid>\n\
          DateTime: 2015-02-17T06:54:27Z\n\
          IMDN.message-id: UbS4OGgbgy\n\
          NS: imdn <urn:ietf:params:imdn>\n\
          imdn.Disposition-Notification: positive-delivery,display\n\
          \n\
          Content-type: text/plain;charset=UTF-8\n\
          Content-length: 5\n\
          \n\
          Hello trailing",
    ))
    .unwrap();
    // NS after the use and a differently cased prefix still resolve.
    assert_eq!(m.header(IMDN_NS, "Message-ID"), Some("UbS4OGgbgy"));
    assert_eq!(
        m.header("URN:IETF:PARAMS:IMDN", "disposition-notification"),
        Some("positive-delivery,display")
    );
    assert!(m.content_type_is("TEXT/PLAIN"));
    assert_eq!(&m.body()[..], b"Hello");
}

#[test]
fn several_to_cc_and_other_prefix_for_same_namespace() {
    let m = CpimMessage::parse(crlf(
        "From: \"Al \\\"the\\\" Ice\" <sip:alice@example.com>
To: <sip:bob@example.com>
To: Carol <sip:carol@example.com>
cc: sip:dave@example.com
NS: x <urn:ietf:params:imdn>
x.Message-ID: abc
unknown.Thing: kept
Plain-Extension: in default ns

Content-Type: text/plain

",
    ))
    .unwrap();
    assert_eq!(m.from().display_str(), Some("Al \\\"the\\\" Ice"));
    let to: Vec<_> = m.to().iter().map(NameAddr::uri_str).collect();
    assert_eq!(to, ["sip:bob@example.com", "sip:carol@example.com"]);
    assert_eq!(m.cc()[0].uri_str(), "sip:dave@example.com");
    assert_eq!(m.header(IMDN_NS, "Message-ID"), Some("abc"));
    let unknown = m
        .headers()
        .iter()
        .find(|h| &h.name[..] == b"Thing")
        .unwrap();
    assert_eq!(unknown.ns, None);
    assert_eq!(unknown.prefix.as_deref(), Some(&b"unknown"[..]));
    assert_eq!(
        m.header(CPIM_HEADERS_NS, "Plain-Extension"),
        Some("in default ns")
    );
    assert!(m.body().is_empty());
}

#[test]
fn folded_and_odd_whitespace() {
    let m = CpimMessage::parse(crlf(
        "From:   Alice   <im:alice@example.com>   \nTo: Bob\n  <im:bob@example.com>\nSubject:\tfolded\n\tline\n\nContent-Type: text/plain;\n charset=utf-8\n\nx",
    ))
    .unwrap();
    assert_eq!(m.from().display_str(), Some("Alice"));
    assert_eq!(m.from().uri_str(), "im:alice@example.com");
    assert_eq!(m.to()[0].display_str(), Some("Bob"));
    assert_eq!(m.to()[0].uri_str(), "im:bob@example.com");
    assert_eq!(m.subjects().next(), Some((None, "folded line")));
    assert_eq!(&m.content_type()[..], b"text/plain; charset=utf-8");
    assert!(m.content_type_is("text/plain"));
    assert_eq!(&m.body()[..], b"x");
}

#[test]
fn missing_mandatory_parts() {
    let cases: &[(&str, CpimError)] = &[
        ("To: <a:b>\n\nContent-Type: t/p\n\n", CpimError::MissingFrom),
        ("From: <a:b>\n\nContent-Type: t/p\n\n", CpimError::MissingTo),
        (
            "From: <a:b>\nFrom: <a:c>\nTo: <a:b>\n\nContent-Type: t/p\n\n",
            CpimError::DuplicateFrom,
        ),
        (
            "From: <a:b>\nTo: <a:b>\n\nContent-ID: x\n\n",
            CpimError::MissingContentType,
        ),
        (
            "From: <a:b>\nTo: <a:b>\n\nContent-Type: t/p\n",
            CpimError::MissingContentEnd,
        ),
        ("From: <a:b>\nTo: <a:b>\n", CpimError::MissingHeaderEnd),
        ("", CpimError::MissingHeaderEnd),
        (
            "From <a:b>\nTo: <a:b>\n\nContent-Type: t/p\n\n",
            CpimError::MalformedHeader,
        ),
        (
            ".x: y\nFrom: <a:b>\nTo: <a:b>\n\nContent-Type: t/p\n\n",
            CpimError::MalformedHeader,
        ),
        (
            "From: Alice\nTo: <a:b>\n\nContent-Type: t/p\n\n",
            CpimError::MalformedAddress,
        ),
        (
            "From: <a:b> junk\nTo: <a:b>\n\nContent-Type: t/p\n\n",
            CpimError::MalformedAddress,
        ),
        (
            "From: <>\nTo: <a:b>\n\nContent-Type: t/p\n\n",
            CpimError::MalformedAddress,
        ),
        (
            "From: <a:b>\nTo: <a:b>\nNS: imdn urn:x\n\nContent-Type: t/p\n\n",
            CpimError::MalformedNs,
        ),
        (
            "From: <a:b>\nTo: <a:b>\nNS: a b <urn:x>\n\nContent-Type: t/p\n\n",
            CpimError::MalformedNs,
        ),
        (
            "From: <a:b>\nTo: <a:b>\n\nContent-Type: t/p\nContent-Length: 9\n\nshort",
            CpimError::Truncated,
        ),
        (
            "From: <a:b>\nTo: <a:b>\n\nContent-Type: t/p\nContent-Length: -1\n\n",
            CpimError::BadContentLength,
        ),
    ];
    for (input, want) in cases {
        let got = CpimMessage::parse(crlf(input)).unwrap_err();
        assert_eq!(got, *want, "input {input:?}");
        assert!(!got.reason().is_empty());
    }
    let bad_utf8 =
        Bytes::from_static(b"From: <a:b>\r\nTo: \xff<a:b>\r\n\r\nContent-Type: t/p\r\n\r\n");
    assert_eq!(
        CpimMessage::parse(bad_utf8).unwrap_err(),
        CpimError::NotUtf8
    );
}

#[test]
fn no_panic_on_any_prefix() {
    let full = crlf(RFC3862_EXAMPLE);
    let mut ok = 0;
    for n in 0..=full.len() {
        if CpimMessage::parse(full.slice(..n)).is_ok() {
            ok += 1;
        }
    }
    // Only prefixes that end inside the content parse (no inner Content-Length there).
    let body_start = full.windows(6).position(|w| w == b"<body>").unwrap();
    assert_eq!(ok, full.len() + 1 - body_start);
    // Arbitrary bytes: never a panic.
    for seed in 0u32..2000 {
        let mut x = seed.wrapping_mul(2_654_435_761);
        let junk: Vec<u8> = (0..(seed % 64))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let alphabet = b"<>:;. \r\n\tFromTo\"ab";
                alphabet[x as usize % alphabet.len()]
            })
            .collect();
        let _ = CpimMessage::parse(Bytes::from(junk));
    }
}

#[test]
fn builder_round_trip() {
    let body = b"<?xml version=\"1.0\"?><x/>";
    let out = CpimBuilder::new("sip:bob@example.com", "sip:alice@example.com")
        .ns("imdn", IMDN_NS)
        .header("imdn.Message-ID", "n1")
        .header("DateTime", "2026-01-01T00:00:00Z")
        .header("Subject", "evil\r\nInjected: yes")
        .content_header("Content-Disposition", "notification")
        .build("message/imdn+xml", body);
    let m = CpimMessage::parse(out.clone()).unwrap();
    assert_eq!(m.from().uri_str(), "sip:bob@example.com");
    assert_eq!(m.to()[0].uri_str(), "sip:alice@example.com");
    assert_eq!(m.header(IMDN_NS, "Message-ID"), Some("n1"));
    assert_eq!(m.datetime(), Some("2026-01-01T00:00:00Z"));
    assert_eq!(m.header(CPIM_HEADERS_NS, "Injected"), None);
    assert!(m.content_type_is("message/imdn+xml"));
    assert_eq!(
        m.content_header("Content-Disposition").map(|v| &v[..]),
        Some(&b"notification"[..])
    );
    assert_eq!(&m.body()[..], body);
    assert!(out.starts_with(b"From: <sip:bob@example.com>\r\nTo: <sip:alice@example.com>\r\n"));
}

#[test]
fn name_addr_display() {
    let a = NameAddr::parse(&Bytes::from_static(b"\"Bob B\" <sip:b@x>")).unwrap();
    assert_eq!(a.to_string(), "\"Bob B\" <sip:b@x>");
    let q = NameAddr::parse(&Bytes::from_static(b"\"a<b> \\\" c\" <sip:q@x>")).unwrap();
    assert_eq!(q.display_str(), Some("a<b> \\\" c"));
    assert_eq!(q.uri_str(), "sip:q@x");
    assert_eq!(
        NameAddr::parse(&Bytes::from_static(b"\"open <sip:q@x>")),
        Err(CpimError::MalformedAddress)
    );
    let b = NameAddr::parse(&Bytes::from_static(b"sip:b@x")).unwrap();
    assert_eq!(b.to_string(), "<sip:b@x>");
}

#[test]
fn the_envelope_of_a_sip_request_and_its_content() {
    assert!(super::is_cpim(b"message/cpim"));
    assert!(super::is_cpim(b" Message/CPIM ; charset=utf-8"));
    assert!(!super::is_cpim(b"text/plain"));
    let body = "From: <sip:a@x>\r\nTo: <sip:b@x>\r\n\r\nContent-Type: text/plain\r\n\r\nhi";
    let sip = |ct: &str| {
        crate::sip::parse(Bytes::from(format!(
            "MESSAGE sip:b@x SIP/2.0\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )))
        .unwrap()
    };
    let env = super::of_sip(&sip("message/cpim")).unwrap().unwrap();
    assert_eq!(&env.body()[..], b"hi");
    assert!(super::of_sip(&sip("text/plain")).is_none());
    // Stored content: CPIM unwrapped, anything else (or a CPIM that does not parse) as it is.
    let (ct, b) = super::unwrap_content(Some(b"message/cpim"), Bytes::from(body), "x/y");
    assert_eq!((ct.as_str(), &b[..]), ("text/plain", &b"hi"[..]));
    let (ct, b) = super::unwrap_content(Some(b"message/cpim"), Bytes::from_static(b"junk"), "x/y");
    assert_eq!((ct.as_str(), &b[..]), ("message/cpim", &b"junk"[..]));
    let (ct, _) = super::unwrap_content(None, Bytes::from_static(b"raw"), "x/y");
    assert_eq!(ct, "x/y");
}
