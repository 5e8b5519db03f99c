//! The dialog state of a test peer (RFC 3261 §12): enough to send requests inside a dialog set
//! up through cpmd, as the caller (UAC) or the callee (UAS), and to tell its requests apart.

use cpm_engine::sip::Message;

use crate::ua::Ua;
use crate::wire::{header, param, Req};

/// One side's view of a dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    /// The Call-ID.
    pub call_id: String,
    /// Our From value in requests (with our tag).
    pub local: String,
    /// Their To value in requests (with their tag).
    pub remote: String,
    /// The remote target: the Request-URI of our requests (their Contact).
    pub target: String,
    /// Our last CSeq number.
    pub cseq: u32,
}

/// The URI of a name-addr (`<uri>;params` or a bare `uri;params`).
pub fn uri_of(value: &str) -> String {
    match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => value[a + 1..b].to_string(),
        _ => value.split(';').next().unwrap_or("").trim().to_string(),
    }
}

fn must(msg: &Message, name: &str) -> String {
    header(msg, name).unwrap_or_else(|| panic!("no {name} in:\n{msg}"))
}

impl Dialog {
    /// The caller's dialog, from its INVITE and a tagged response with a Contact
    /// (RFC 3261 §12.1.2).
    pub fn uac(invite: &Req, resp: &Message) -> Dialog {
        let remote = must(resp, "To");
        assert!(param(&remote, "tag").is_some(), "no To tag in:\n{resp}");
        Dialog {
            call_id: invite.get("Call-ID").expect("INVITE Call-ID").into(),
            local: invite.get("From").expect("INVITE From").into(),
            remote,
            target: uri_of(&must(resp, "Contact")),
            cseq: invite.cseq().expect("INVITE CSeq"),
        }
    }

    /// The callee's dialog, from the INVITE it received and the tag it answers with
    /// (RFC 3261 §12.1.1).
    pub fn uas(invite: &Message, tag: &str) -> Dialog {
        Dialog {
            call_id: must(invite, "Call-ID"),
            local: format!("{};tag={tag}", must(invite, "To")),
            remote: must(invite, "From"),
            target: uri_of(&must(invite, "Contact")),
            cseq: 0,
        }
    }

    /// Our tag.
    pub fn local_tag(&self) -> &str {
        param(&self.local, "tag").unwrap_or_default()
    }

    /// Their tag.
    pub fn remote_tag(&self) -> &str {
        param(&self.remote, "tag").unwrap_or_default()
    }

    /// A request inside the dialog from `ua` (RFC 3261 §12.2.1.1): Request-URI the remote
    /// target, a fresh Via, the next CSeq number, our Contact. Sent to cpmd by [`Ua::send_req`].
    pub fn request(&mut self, ua: &Ua, method: &str) -> Req {
        self.cseq += 1;
        self.base(ua, method, self.cseq)
            .header("Contact", format!("<{}>", ua.contact_uri()))
    }

    /// The ACK of the 2xx to our INVITE with CSeq number `seq` (RFC 3261 §13.2.2.4: a new
    /// transaction, the INVITE's CSeq number).
    pub fn ack(&self, ua: &Ua, seq: u32) -> Req {
        self.base(ua, "ACK", seq)
    }

    fn base(&self, ua: &Ua, method: &str, seq: u32) -> Req {
        Req::new(method, &self.target)
            .header("Via", ua.via())
            .header("Max-Forwards", "70")
            .header("From", self.local.clone())
            .header("To", self.remote.clone())
            .header("Call-ID", self.call_id.clone())
            .header("CSeq", format!("{seq} {method}"))
    }

    /// Whether `req`, received from the other side, is of this dialog: same Call-ID, their
    /// tag in From, ours in To.
    pub fn owns(&self, req: &Message) -> bool {
        let (Some(call_id), Some(from), Some(to)) = (
            header(req, "Call-ID"),
            header(req, "From"),
            header(req, "To"),
        ) else {
            return false;
        };
        call_id == self.call_id
            && param(&from, "tag") == Some(self.remote_tag())
            && param(&to, "tag") == Some(self.local_tag())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn both_sides_of_one_dialog() {
        let invite = Req::new("INVITE", "sip:bob@localhost")
            .header("Via", "SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKa")
            .header("From", "<sip:alice@localhost>;tag=a1")
            .header("To", "<sip:bob@localhost>")
            .header("Call-ID", "c1")
            .header("CSeq", "7 INVITE")
            .header("Contact", "<sip:alice@127.0.0.1:1>");
        let received = cpm_engine::sip::parse(Bytes::from(invite.to_bytes())).unwrap();
        let bob = Dialog::uas(&received, "b1");
        assert_eq!(bob.target, "sip:alice@127.0.0.1:1");
        assert_eq!((bob.local_tag(), bob.remote_tag()), ("b1", "a1"));
        let ok = cpm_engine::sip::parse(Bytes::from(
            "SIP/2.0 200 OK\r\nTo: <sip:bob@localhost>;tag=b1\r\nContact: <sip:127.0.0.1:9>\r\n\r\n",
        ))
        .unwrap();
        let alice = Dialog::uac(&invite, &ok);
        assert_eq!(alice.target, "sip:127.0.0.1:9");
        assert_eq!(alice.cseq, 7);
        // A request of alice's dialog is one bob's dialog owns.
        let ua = Ua::udp("127.0.0.1:9".parse().unwrap());
        let mut a = alice.clone();
        let bye = a.request(&ua, "BYE");
        assert_eq!(bye.get("CSeq"), Some("8 BYE"));
        assert_eq!(bye.uri, "sip:127.0.0.1:9");
        let bye = cpm_engine::sip::parse(Bytes::from(bye.to_bytes())).unwrap();
        assert!(bob.owns(&bye));
        assert!(!alice.owns(&bye));
        assert_eq!(alice.ack(&ua, 7).get("CSeq"), Some("7 ACK"));
    }
}
