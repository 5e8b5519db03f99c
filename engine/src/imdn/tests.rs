use super::*;
use crate::store::DeliveryState;

fn crlf(s: &str) -> Bytes {
    Bytes::from(s.replace('\n', "\r\n"))
}

/// RFC 5438 §7.2 (the delivery notification document of the examples; the odd line break
/// inside the `original-recipient-uri` start tag is the RFC's own).
const RFC5438_DELIVERED: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<imdn xmlns="urn:ietf:params:xml:ns:imdn">
   <message-id>34jk324j</message-id>
   <datetime>2008-04-04T12:16:49-05:00</datetime>
   <recipient-uri>im:bob@example.com</recipient-uri>
   <original-recipient-uri
      >im:bob@example.com</original-recipient-uri>
   <delivery-notification>
      <status>
         <delivered/>
      </status>
   </delivery-notification>
</imdn>
"#;

/// RFC 5438 §7.1 (the CPIM envelope of an IMDN sent by Bob to Alice about her message).
fn rfc5438_imdn_message() -> Bytes {
    crlf(&format!(
        "From: Bob <im:bob@example.com>
To: Alice <im:alice@example.com>
NS: imdn <urn:ietf:params:imdn>
imdn.Message-ID: d834jied93rf
DateTime: 2008-04-04T12:16:49-05:00

Content-type: message/imdn+xml
Content-Disposition: notification

{RFC5438_DELIVERED}"
    ))
}

#[test]
fn rfc5438_delivered_document() {
    let n = Notification::parse(RFC5438_DELIVERED.as_bytes()).unwrap();
    assert_eq!(
        n,
        Notification {
            message_id: "34jk324j".into(),
            datetime: "2008-04-04T12:16:49-05:00".into(),
            recipient_uri: Some("im:bob@example.com".into()),
            original_recipient_uri: Some("im:bob@example.com".into()),
            subject: None,
            kind: NotificationKind::Delivery,
            status: Status::Delivered,
        }
    );
    assert_eq!(n.delivery_event(), Some(DeliveryEvent::ImdnDelivered));
    // Our writer's output reads back the same.
    assert_eq!(Notification::parse(n.to_xml().as_bytes()).unwrap(), n);
}

#[test]
fn rfc5438_display_document_with_prefix_and_unknown_elements() {
    let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<i:imdn xmlns:i="urn:ietf:params:xml:ns:imdn" xmlns:x="urn:example:ext">
  <i:message-id>34jk324j</i:message-id>
  <x:vendor><i:message-id>not-this</i:message-id></x:vendor>
  <i:datetime>2008-04-04T12:16:49-05:00</i:datetime>
  <i:future-element>ignored</i:future-element>
  <i:subject>caf&#233; &amp; co</i:subject>
  <i:display-notification>
    <i:status><x:maybe/><i:displayed/></i:status>
  </i:display-notification>
  <x:extension a="b"/>
</i:imdn>"#;
    let n = Notification::parse(xml.as_bytes()).unwrap();
    assert_eq!(n.message_id, "34jk324j");
    assert_eq!(n.subject.as_deref(), Some("café & co"));
    assert_eq!(n.recipient_uri, None);
    assert_eq!(
        (n.kind, n.status),
        (NotificationKind::Display, Status::Displayed)
    );
    assert_eq!(n.delivery_event(), Some(DeliveryEvent::ImdnDisplayed));
}

#[test]
fn bad_documents() {
    let doc = |body: &str| {
        format!(
            "<imdn xmlns=\"urn:ietf:params:xml:ns:imdn\"><message-id>m</message-id>\
             <datetime>d</datetime>{body}</imdn>"
        )
    };
    let ok = doc("<processing-notification><status><stored/></status></processing-notification>");
    let n = Notification::parse(ok.as_bytes()).unwrap();
    assert_eq!(
        (n.kind, n.status),
        (NotificationKind::Processing, Status::Stored)
    );
    assert_eq!(n.delivery_event(), None);

    let cases: Vec<(String, ImdnError)> = vec![
        (
            doc("<delivery-notification><status><displayed/></status></delivery-notification>"),
            ImdnError::BadStatus,
        ),
        (
            doc("<delivery-notification><status><gone/></status></delivery-notification>"),
            ImdnError::BadStatus,
        ),
        (
            doc("<delivery-notification><status/></delivery-notification>"),
            ImdnError::BadStatus,
        ),
        (doc(""), ImdnError::MissingElement("notification missing")),
        (
            "<imdn xmlns=\"urn:ietf:params:xml:ns:imdn\"><datetime>d</datetime>\
             <delivery-notification><status><failed/></status></delivery-notification></imdn>"
                .into(),
            ImdnError::MissingElement("message-id missing"),
        ),
        (
            "<imdn><message-id>m</message-id></imdn>".into(),
            ImdnError::NotImdn,
        ),
        (
            "<imdn xmlns=\"urn:other\"><message-id>m</message-id></imdn>".into(),
            ImdnError::NotImdn,
        ),
        (String::new(), ImdnError::NotImdn),
    ];
    for (xml, want) in cases {
        assert_eq!(
            Notification::parse(xml.as_bytes()).unwrap_err(),
            want,
            "{xml}"
        );
    }
    assert!(matches!(
        Notification::parse(b"<imdn xmlns=\"urn:ietf:params:xml:ns:imdn\"><a></b></imdn>"),
        Err(ImdnError::Xml(_))
    ));
    let deep = format!(
        "<imdn xmlns=\"urn:ietf:params:xml:ns:imdn\">{}",
        "<x>".repeat(100)
    );
    assert_eq!(
        Notification::parse(deep.as_bytes()).unwrap_err(),
        ImdnError::TooDeep
    );
}

#[test]
fn no_panic_on_any_prefix() {
    let full = rfc5438_imdn_message();
    let mut parsed = 0;
    for n in 0..=full.len() {
        if let Ok(cpim) = CpimMessage::parse(full.slice(..n)) {
            if let Some(Ok(_)) = notification_in(&cpim) {
                parsed += 1;
            }
        }
        let _ =
            Notification::parse(&RFC5438_DELIVERED.as_bytes()[..n.min(RFC5438_DELIVERED.len())]);
    }
    // Only prefixes holding the whole document (up to optional trailing whitespace) parse.
    let end = full.len() - 2; // the trailing CRLF after </imdn>
    assert_eq!(parsed, full.len() + 1 - end);
}

#[test]
fn request_from_the_rfc_example() {
    // RFC 5438 §6 example body, with the blank line RFC 3862 requires after the headers, plus
    // an Original-To and two IMDN-Record-Route added by intermediaries (§6.4, §6.5).
    let m = CpimMessage::parse(crlf(
        "From: Alice <im:alice@example.com>
To: Bob <im:bob@example.com>
NS: imdn <urn:ietf:params:imdn>
imdn.Message-ID: 34jk324j
DateTime: 2006-04-04T12:16:49-05:00
imdn.Disposition-Notification: positive-delivery, negative-delivery
imdn.Original-To: <im:robert@example.com>
imdn.IMDN-Record-Route: <sip:as1.example.com>
imdn.IMDN-Record-Route: <sip:as2.example.com>
Subject: lunch

Content-type: text/plain
Content-length: 12

Hello World
",
    ))
    .unwrap();
    let r = ImdnRequest::from_cpim(&m).unwrap();
    assert_eq!(r.message_id, "34jk324j");
    assert_eq!(r.datetime.as_deref(), Some("2006-04-04T12:16:49-05:00"));
    assert!(r.wants(Disposition::PositiveDelivery));
    assert!(r.wants(Disposition::NegativeDelivery));
    assert!(!r.wants(Disposition::Display));
    assert!(!r.wants(Disposition::Processing));
    assert_eq!(
        r.dispositions.to_string(),
        "positive-delivery, negative-delivery"
    );
    assert_eq!(r.original_to.as_deref(), Some("im:robert@example.com"));
    assert_eq!(
        r.record_routes,
        ["sip:as1.example.com", "sip:as2.example.com"]
    );
    assert_eq!(
        r.notify_target("im:alice@example.com"),
        "sip:as1.example.com"
    );
    assert_eq!(r.subject.as_deref(), Some("lunch"));
    assert!(!is_imdn(&m));
    assert!(notification_in(&m).is_none());

    let no_id =
        CpimMessage::parse(crlf("From: <a:b>\nTo: <a:c>\n\nContent-Type: t/p\n\n")).unwrap();
    assert_eq!(
        ImdnRequest::from_cpim(&no_id).unwrap_err(),
        ImdnError::MissingMessageId
    );
}

#[test]
fn dispositions_parse() {
    let d = Dispositions::parse(" Display ,x-unknown,processing,,positive-delivery");
    assert_eq!(
        d.iter().collect::<Vec<_>>(),
        [
            Disposition::PositiveDelivery,
            Disposition::Display,
            Disposition::Processing
        ]
    );
    assert!(Dispositions::parse("").is_empty());
}

#[test]
fn failure_notification_round_trip() {
    let req = ImdnRequest {
        message_id: "34jk<324j>".into(),
        datetime: Some("2006-04-04T12:16:49-05:00".into()),
        dispositions: Dispositions::parse("positive-delivery, negative-delivery"),
        original_to: Some("im:robert@example.com".into()),
        record_routes: vec!["sip:as1.example.com".into()],
        subject: Some("a & b".into()),
    };
    let body = failure_notification(
        &req,
        "sip:bob@example.com",
        "sip:alice@example.com",
        "2006-04-07T12:16:49Z",
        "srv-0001",
    )
    .unwrap();
    let cpim = CpimMessage::parse(body).unwrap();
    assert_eq!(cpim.from().uri_str(), "sip:bob@example.com");
    assert_eq!(cpim.to()[0].uri_str(), "sip:alice@example.com");
    assert_eq!(cpim.header(IMDN_NS, "Message-ID"), Some("srv-0001"));
    assert_eq!(cpim.datetime(), Some("2006-04-07T12:16:49Z"));
    assert_eq!(
        cpim.header(IMDN_NS, "IMDN-Route"),
        Some("<sip:as1.example.com>")
    );
    // An IMDN never asks for IMDNs (RFC 5438 §7).
    assert_eq!(cpim.header(IMDN_NS, "Disposition-Notification"), None);
    assert_eq!(
        cpim.content_header("Content-Disposition").map(|v| &v[..]),
        Some(&b"notification"[..])
    );
    assert!(is_imdn(&cpim));
    let n = notification_in(&cpim).unwrap().unwrap();
    assert_eq!(
        n,
        Notification {
            message_id: "34jk<324j>".into(),
            datetime: "2006-04-04T12:16:49-05:00".into(),
            recipient_uri: Some("sip:bob@example.com".into()),
            original_recipient_uri: Some("im:robert@example.com".into()),
            subject: Some("a & b".into()),
            kind: NotificationKind::Delivery,
            status: Status::Failed,
        }
    );
    assert_eq!(n.delivery_event(), Some(DeliveryEvent::ImdnFailed));
    // And the sender's delivery state follows it.
    let mut d = crate::deferred::Delivery::stored(false);
    assert_eq!(
        d.on_event(n.delivery_event().unwrap()).to,
        DeliveryState::Failed
    );

    // No negative-delivery request: nothing to send.
    let quiet = ImdnRequest {
        dispositions: Dispositions::parse("positive-delivery, display"),
        datetime: None,
        ..req
    };
    assert!(failure_notification(&quiet, "sip:b@x", "sip:a@x", "now", "id").is_none());
    // Without the original's DateTime, `now` stands in.
    let undated = ImdnRequest {
        dispositions: Dispositions::parse("negative-delivery"),
        ..quiet
    };
    let body = failure_notification(&undated, "sip:b@x", "sip:a@x", "T", "id").unwrap();
    let n = notification_in(&CpimMessage::parse(body).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(n.datetime, "T");
}

#[test]
fn relayed_sip_message() {
    let cpim = rfc5438_imdn_message();
    let mut raw = format!(
        "MESSAGE sip:alice@example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
         From: <sip:bob@example.com>;tag=1\r\n\
         To: <sip:alice@example.com>\r\n\
         Call-ID: c1\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\n\
         Content-Type: Message/CPIM\r\nContent-Length: {}\r\n\r\n",
        cpim.len()
    )
    .into_bytes();
    raw.extend_from_slice(&cpim);
    let msg = crate::sip::parse(Bytes::from(raw)).unwrap();
    let n = relayed_notification(&msg).unwrap().unwrap();
    assert_eq!(n.message_id, "34jk324j");
    assert_eq!(n.status, Status::Delivered);

    let plain = crate::sip::parse(Bytes::from_static(
        b"MESSAGE sip:a@x SIP/2.0\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi",
    ))
    .unwrap();
    assert!(relayed_notification(&plain).is_none());
    let broken = crate::sip::parse(Bytes::from_static(
        b"MESSAGE sip:a@x SIP/2.0\r\nContent-Type: message/cpim\r\nContent-Length: 2\r\n\r\nhi",
    ))
    .unwrap();
    assert_eq!(
        relayed_notification(&broken).unwrap().unwrap_err(),
        ImdnError::Cpim(CpimError::MissingHeaderEnd)
    );
}
