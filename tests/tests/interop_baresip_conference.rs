//! Interop with baresip (Debian `baresip-core`) in an ad-hoc conference (RFC 4579, issue 6):
//! three instances registered at cpmd, each sending a sine of its own (`ausine`) and
//! recording what it hears (`sndfile`). The first INVITEs cpmd's conference factory URI and
//! gets the focus URI in the 200's Contact (with `isfocus`); the other two INVITE the focus.
//! Each recording must hold the other two tones, each 20 dB above the instance's own tone
//! (mix-minus: nobody hears themselves).

use std::time::Duration;

use cpm_tests::audio;
use cpm_tests::baresip::{self, Baresip, Direction};
use cpm_tests::Cpmd;

/// The three tones: distinct, none the double of another (the checks compare each with twice
/// its frequency as well).
const TONES: [u32; 3] = [440, 1000, 1700];
/// How long all three are in the conference together.
const TOGETHER: Duration = Duration::from_secs(4);
/// The least of each other tone every recording must hold.
const MIN_TONE: Duration = Duration::from_secs(2);
const WAIT: Duration = Duration::from_secs(10);
const QUIT: Duration = Duration::from_secs(5);

/// The focus URI of the conference `ua` created: the Contact of the 2xx to its INVITE, which
/// must carry `isfocus` (RFC 4579 §4.1).
fn focus_uri(ua: &Baresip) -> String {
    let trace = ua.sip_trace();
    let ok = trace
        .iter()
        .map(|t| &t.msg)
        .find(|m| {
            m.status().is_some_and(|c| (200..300).contains(&c))
                && m.cseq()
                    .is_ok_and(|c| c.method == cpm_engine::sip::Method::Invite)
        })
        .unwrap_or_else(|| panic!("no 2xx to the factory INVITE in the trace:\n{}", ua.log()));
    let contacts = ok.contacts().expect("a parsable Contact");
    let contact = contacts.first().expect("the 2xx has a Contact");
    assert!(
        contact.params().is_some_and(|p| p.has("isfocus")),
        "the factory's 2xx Contact lacks isfocus: {contact:?}"
    );
    contact.uri().expect("a URI").to_string()
}

/// The mean amplitude of each of [`TONES`] in `ua`'s received recording, per 20 ms block.
fn levels(ua: &Baresip) -> Vec<(u32, f64)> {
    let wav = ua.recording(Direction::Received);
    let samples = wav.mono();
    let block = (wav.rate / 50) as usize;
    let blocks: Vec<&[f64]> = samples.chunks_exact(block).collect();
    TONES
        .iter()
        .map(|&hz| {
            let sum: f64 = blocks
                .iter()
                .map(|b| audio::goertzel(b, wav.rate, f64::from(hz)).sqrt())
                .sum();
            (hz, (sum / blocks.len().max(1) as f64).round())
        })
        .collect()
}

#[test]
#[ignore = "needs baresip"]
fn three_baresips_in_an_ad_hoc_conference_hear_the_others_and_not_themselves() {
    assert!(
        baresip::available(),
        "baresip or its modules {:?} missing: apt-get install baresip-core",
        baresip::MODULES
    );
    // No digest: baresip 1.0.0 fails cpmd's SHA-256-first challenge (see interop_baresip.rs).
    let cpmd = Cpmd::spawn(&[]);
    let mut uas: Vec<Baresip> = ["alice", "bob", "carol"]
        .iter()
        .zip(TONES)
        .map(|(user, hz)| {
            Baresip::builder(user)
                .tone(hz)
                .registrar(cpmd.sip_addr())
                .lifetime(Duration::from_secs(60))
                .spawn()
        })
        .collect();
    let factory = format!("sip:conf-factory@{}", cpmd.sip_addr());
    uas[0].dial(&factory);
    uas[0].wait_established(WAIT);
    let focus = focus_uri(&uas[0]);
    assert!(
        focus.starts_with("sip:"),
        "focus URI {focus:?} from the factory's 2xx"
    );
    for ua in &mut uas[1..] {
        ua.dial(&focus);
        ua.wait_established(WAIT);
    }
    std::thread::sleep(TOGETHER);
    // Everyone leaves with BYE; the conference ends with the last.
    for ua in &mut uas {
        ua.hangup();
        ua.wait_closed(WAIT);
    }
    for ua in &mut uas {
        ua.quit(QUIT);
    }
    for (i, ua) in uas.iter().enumerate() {
        let own = TONES[i];
        eprintln!("{} hears (amplitude per tone): {:?}", ua.aor(), levels(ua));
        // The mix comes from cpmd's mixer, not from a peer.
        let from = ua.rtp_source().expect("it logged its RTP source");
        for other in &uas {
            assert!(
                !other.rtp_ports().contains(&from.port()),
                "{} hears {from} directly, not through the mixer",
                ua.aor()
            );
        }
        // Each other tone present, 20 dB above this instance's own, in 90 % of the loud
        // blocks. Not compared with its double as `Baresip::assert_tone` does: ausine plays
        // at about -6 dBFS, so two of them summed clip (the mixer saturates, as it should)
        // and the clipped mix holds harmonics.
        let wav = ua.recording(Direction::Received);
        let samples = wav.mono();
        for (j, &hz) in TONES.iter().enumerate() {
            if j == i {
                continue;
            }
            let r = audio::detect_tone(&samples, wav.rate, f64::from(hz), &[f64::from(own)]);
            eprintln!("{} hears {hz} Hz: {r:?}", ua.aor());
            assert!(
                r.toned_secs() >= MIN_TONE.as_secs_f64() && r.toned * 10 >= r.loud * 9,
                "{} does not hear {hz} Hz 20 dB over its own {own} Hz: {r:?}",
                ua.aor()
            );
        }
    }
    cpmd.wait_metric("cpm_sessions", WAIT, |v| v == 0.0);
}
