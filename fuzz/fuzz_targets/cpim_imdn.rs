//! Fuzz the CPIM (RFC 3862) and IMDN (RFC 5438) parsers (`cargo fuzz run cpim_imdn`): the input
//! is a MESSAGE body as a relayed pager message carries it.
//!
//! Whatever the bytes, nothing panics: the CPIM envelope, the IMDN request read from it, the
//! IMDN document in its content, and the same bytes taken as an IMDN document directly. A
//! parsed notification prints to XML that parses back to the same notification.

#![no_main]

use bytes::Bytes;
use cpm_engine::cpim::CpimMessage;
use cpm_engine::imdn::{self, ImdnRequest, Notification};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cpim) = CpimMessage::parse(Bytes::copy_from_slice(data)) {
        let _ = (cpim.from(), cpim.to(), cpim.datetime(), cpim.body().len());
        if let Ok(req) = ImdnRequest::from_cpim(&cpim) {
            let _ = req.notify_target("sip:sender@example.com");
        }
        if let Some(Ok(n)) = imdn::notification_in(&cpim) {
            let _ = n.delivery_event();
        }
    }
    if let Ok(n) = Notification::parse(data) {
        let again = Notification::parse(n.to_xml().as_bytes())
            .expect("a printed notification parses");
        assert_eq!(again, n, "print/parse round trip");
    }
});
