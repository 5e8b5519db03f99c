//! Fuzz the RFC 4575 conference-info reader (`cargo fuzz run conference_info`): the input is a
//! NOTIFY body of the conference event package.
//!
//! Whatever the bytes, nothing panics: the document is read, and applied as the next document
//! of a subscription both to an empty state and to itself.

#![no_main]

use cpm_engine::conference::roster::ConferenceInfo;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(doc) = ConferenceInfo::parse(data) {
        let mut state = ConferenceInfo {
            entity: doc.entity.clone(),
            version: doc.version.wrapping_sub(1),
            ..ConferenceInfo::default()
        };
        let _ = state.apply(doc.clone());
        let mut again = doc.clone();
        let _ = again.apply(doc);
    }
});
