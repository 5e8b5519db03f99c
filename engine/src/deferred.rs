//! The store-and-forward policy of pager-mode messages (issue 5; CPM.md §5 fig. 5): which
//! message may be stored for an offline recipient, when it expires, and how its
//! [`DeliveryState`] moves. Pure functions, no storage and no clock: the message controller
//! keeps the queue (in the storage backend) and passes `now` in.
//!
//! ```text
//!                 device 2xx / IMDN delivered         IMDN displayed
//!   ──► Stored ────────────────────────────► Delivered ──────────────► Displayed
//!         │  └──────────── IMDN displayed ─────────────────────────────────▲
//!         │ expiry / rejected by every device / IMDN failed
//!         ▼                     (IMDN failed also from Delivered)
//!       Failed   (+ a failure IMDN owed when the server gave up and negative-delivery
//!                   was requested, RFC 5438 §5.1)
//! ```

use std::time::{Duration, Instant, SystemTime};

use crate::store::DeliveryState;

/// Where the store-and-forward limits are (issue 5 defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeferredPolicy {
    /// How long a message waits for its recipient before it fails (default 72 h).
    pub expiry: Duration,
    /// How many undelivered messages one recipient may have waiting (default 1,000).
    pub per_user_cap: usize,
    /// The largest pager-mode body accepted; larger ones must use large message mode, an
    /// MSRP session (default 1,300 bytes: RFC 3428's limit for a MESSAGE outside a session,
    /// which CPM/RCS use).
    pub max_size: usize,
}

impl Default for DeferredPolicy {
    fn default() -> Self {
        DeferredPolicy {
            expiry: Duration::from_secs(72 * 3600),
            per_user_cap: 1000,
            max_size: 1300,
        }
    }
}

/// Why a MESSAGE is refused rather than stored, with the SIP answer for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// Body over [`DeferredPolicy::max_size`]: 413 Request Entity Too Large (RFC 3261
    /// §21.4.11; RFC 3428's 1,300-byte limit), with a hint to use large message mode (an MSRP
    /// session, RFC 4975), as cpmd's messaging controller already answers.
    TooLarge {
        /// The size limit in bytes.
        max: usize,
    },
    /// The recipient already has [`DeferredPolicy::per_user_cap`] messages waiting:
    /// 480 Temporarily Unavailable (RFC 3261 §21.4.18). Not 486 Busy Here: the recipient is not
    /// busy, it is unreachable and its queue is full, a condition that clears when it comes
    /// back; not a 5xx either: a 503 would make the sender fail over to another server
    /// (RFC 3263 §4.3) which holds the same queue, and SIP has no "507 Insufficient Storage".
    QueueFull {
        /// The cap reached.
        cap: usize,
    },
}

impl Refusal {
    /// The SIP status code.
    pub fn code(&self) -> u16 {
        match self {
            Refusal::TooLarge { .. } => 413,
            Refusal::QueueFull { .. } => 480,
        }
    }

    /// The reason phrase.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::TooLarge { .. } => "Request Entity Too Large",
            Refusal::QueueFull { .. } => "Temporarily Unavailable",
        }
    }

    /// The value of a `Warning` header (RFC 3261 §20.43, code 399 "miscellaneous") telling the
    /// sender what to do; `agent` is the server's host name.
    pub fn warning(&self, agent: &str) -> String {
        match self {
            Refusal::TooLarge { max } => format!(
                "399 {agent} \"Message exceeds {max} bytes: use large message mode (MSRP session)\""
            ),
            Refusal::QueueFull { cap } => {
                format!("399 {agent} \"Recipient offline and {cap} messages already deferred\"")
            }
        }
    }
}

/// A point in time the policy can add a duration to ([`Instant`] for virtual time in tests and
/// timers, [`SystemTime`] for what storage keeps across restarts).
pub trait Timestamp: Copy + Ord {
    /// `self + d`, `None` on overflow.
    fn plus(self, d: Duration) -> Option<Self>;
}

impl Timestamp for Instant {
    fn plus(self, d: Duration) -> Option<Self> {
        self.checked_add(d)
    }
}

impl Timestamp for SystemTime {
    fn plus(self, d: Duration) -> Option<Self> {
        self.checked_add(d)
    }
}

/// A waiting message as the policy sees it.
pub trait DeferredItem {
    /// The clock the item's times are on.
    type Time: Timestamp;
    /// When it was stored (the 202 was sent).
    fn stored_at(&self) -> Self::Time;
    /// Where it stands.
    fn state(&self) -> DeliveryState;
}

impl DeferredPolicy {
    /// Whether a message of `size` body bytes for a recipient with `queued_for_user` messages
    /// already waiting may be stored (size is checked first: a too large message is refused even
    /// when the recipient is online, issue 5 "large message mode").
    pub fn admit(&self, queued_for_user: usize, size: usize) -> Result<(), Refusal> {
        if size > self.max_size {
            return Err(Refusal::TooLarge { max: self.max_size });
        }
        if queued_for_user >= self.per_user_cap {
            return Err(Refusal::QueueFull {
                cap: self.per_user_cap,
            });
        }
        Ok(())
    }

    /// When a message stored at `stored_at` expires; `None` if that is past the clock's range
    /// (never).
    pub fn expires_at<T: Timestamp>(&self, stored_at: T) -> Option<T> {
        stored_at.plus(self.expiry)
    }

    /// Whether `item` is still waiting ([`DeliveryState::Stored`]) and expired at `now`.
    pub fn is_expired<I: DeferredItem>(&self, item: &I, now: I::Time) -> bool {
        item.state() == DeliveryState::Stored
            && self.expires_at(item.stored_at()).is_some_and(|t| t <= now)
    }

    /// The items of `items` expired at `now`, in their order.
    pub fn expired<'a, I: DeferredItem + 'a>(
        &'a self,
        items: impl IntoIterator<Item = &'a I> + 'a,
        now: I::Time,
    ) -> impl Iterator<Item = &'a I> + 'a {
        items.into_iter().filter(move |i| self.is_expired(*i, now))
    }

    /// The earliest expiry among the waiting items: the deadline to arm one timer on.
    pub fn next_expiry<'a, I: DeferredItem + 'a>(
        &self,
        items: impl IntoIterator<Item = &'a I>,
    ) -> Option<I::Time> {
        items
            .into_iter()
            .filter(|i| i.state() == DeliveryState::Stored)
            .filter_map(|i| self.expires_at(i.stored_at()))
            .min()
    }
}

/// What happened to a message (the inputs of its delivery state machine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryEvent {
    /// A device of the recipient answered the MESSAGE with 2xx (it may leave the queue).
    Device2xx,
    /// Every device refused it with a final error, and the server gives up.
    Rejected,
    /// A positive delivery IMDN was relayed (RFC 5438 §7.2.1 `<delivered/>`).
    ImdnDelivered,
    /// A display IMDN was relayed (`<displayed/>`).
    ImdnDisplayed,
    /// A negative delivery IMDN was relayed (`<failed/>`, `<forbidden/>` or `<error/>`).
    ImdnFailed,
    /// The expiry passed with the message still waiting.
    Expired,
}

/// The result of one transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state before.
    pub from: DeliveryState,
    /// The state after (equal to `from` when the event changes nothing).
    pub to: DeliveryState,
    /// The server gave up on the message and must send the sender a failure IMDN
    /// ([`crate::imdn::failure_notification`]), RFC 5438 §5.1, §9.
    pub owes_failure_imdn: bool,
}

impl Transition {
    /// Whether the state changed.
    pub fn changed(&self) -> bool {
        self.from != self.to
    }
}

/// The delivery state of one message and whether its sender asked for negative delivery
/// notifications (RFC 5438 §6.2); see the module diagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    state: DeliveryState,
    negative_delivery_requested: bool,
}

impl Delivery {
    /// A message just stored (202 sent).
    pub fn stored(negative_delivery_requested: bool) -> Delivery {
        Delivery::resume(DeliveryState::Stored, negative_delivery_requested)
    }

    /// A message whose state was read back from storage.
    pub fn resume(state: DeliveryState, negative_delivery_requested: bool) -> Delivery {
        Delivery {
            state,
            negative_delivery_requested,
        }
    }

    /// Where it stands.
    pub fn state(&self) -> DeliveryState {
        self.state
    }

    /// Applies `event`. Displayed and Failed are final; a late or duplicate event changes
    /// nothing (IMDNs may arrive in any order, RFC 5438 §7).
    pub fn on_event(&mut self, event: DeliveryEvent) -> Transition {
        use DeliveryEvent as E;
        use DeliveryState as S;
        let from = self.state;
        let to = match (from, event) {
            (S::Stored, E::Device2xx | E::ImdnDelivered) => S::Delivered,
            (S::Stored | S::Delivered, E::ImdnDisplayed) => S::Displayed,
            (S::Stored, E::Rejected | E::Expired) => S::Failed,
            (S::Stored | S::Delivered, E::ImdnFailed) => S::Failed,
            (s, _) => s,
        };
        self.state = to;
        Transition {
            from,
            to,
            owes_failure_imdn: from == S::Stored
                && matches!(event, E::Rejected | E::Expired)
                && self.negative_delivery_requested,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeliveryEvent as E;
    use DeliveryState as S;

    struct Item {
        at: Instant,
        state: DeliveryState,
    }

    impl DeferredItem for Item {
        type Time = Instant;
        fn stored_at(&self) -> Instant {
            self.at
        }
        fn state(&self) -> DeliveryState {
            self.state
        }
    }

    #[test]
    fn admit_checks_size_then_cap() {
        let p = DeferredPolicy::default();
        assert_eq!(p.admit(0, 1300), Ok(()));
        let big = p.admit(0, 1301).unwrap_err();
        assert_eq!(
            (big.code(), big.reason()),
            (413, "Request Entity Too Large")
        );
        assert!(big
            .warning("cpm.example.com")
            .starts_with("399 cpm.example.com \""));
        assert!(big.warning("h").contains("large message mode"));
        assert_eq!(p.admit(999, 10), Ok(()));
        let full = p.admit(1000, 10).unwrap_err();
        assert_eq!(full, Refusal::QueueFull { cap: 1000 });
        assert_eq!(full.code(), 480);
        // Both exceeded: the size wins (it will never fit).
        assert_eq!(p.admit(1000, 5000).unwrap_err().code(), 413);
    }

    #[test]
    fn expiry_on_virtual_time() {
        let p = DeferredPolicy {
            expiry: Duration::from_secs(60),
            ..DeferredPolicy::default()
        };
        let t0 = Instant::now();
        let items = [
            Item {
                at: t0,
                state: S::Stored,
            },
            Item {
                at: t0 + Duration::from_secs(30),
                state: S::Stored,
            },
            Item {
                at: t0,
                state: S::Delivered,
            },
        ];
        assert_eq!(p.expires_at(t0), Some(t0 + Duration::from_secs(60)));
        assert_eq!(p.next_expiry(&items), Some(t0 + Duration::from_secs(60)));
        assert_eq!(p.expired(&items, t0 + Duration::from_secs(59)).count(), 0);
        let at_60: Vec<_> = p.expired(&items, t0 + Duration::from_secs(60)).collect();
        assert_eq!(at_60.len(), 1);
        assert!(std::ptr::eq(at_60[0], &items[0]));
        // A delivered message never expires.
        assert_eq!(
            p.expired(&items, t0 + Duration::from_secs(1_000_000))
                .count(),
            2
        );
        let none: [Item; 0] = [];
        assert_eq!(p.next_expiry(&none), None);
        // Overflow means never, not a panic.
        let forever = DeferredPolicy {
            expiry: Duration::MAX,
            ..p
        };
        assert_eq!(forever.expires_at(t0), None);
        assert!(!forever.is_expired(&items[0], t0 + Duration::from_secs(1 << 40)));
        assert_eq!(
            DeferredPolicy::default().expires_at(SystemTime::UNIX_EPOCH),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(259_200))
        );
    }

    #[test]
    fn happy_path_stored_delivered_displayed() {
        let mut d = Delivery::stored(true);
        assert_eq!(d.state(), S::Stored);
        let t = d.on_event(E::Device2xx);
        assert_eq!(
            (t.from, t.to, t.owes_failure_imdn),
            (S::Stored, S::Delivered, false)
        );
        assert!(!d.on_event(E::ImdnDelivered).changed());
        assert!(!d.on_event(E::Expired).changed());
        assert_eq!(d.on_event(E::ImdnDisplayed).to, S::Displayed);
        for e in [E::ImdnFailed, E::Expired, E::Device2xx, E::ImdnDelivered] {
            let t = d.on_event(e);
            assert!(!t.changed() && !t.owes_failure_imdn, "{e:?}");
        }
        // A display IMDN before any delivery proof implies delivery.
        assert_eq!(
            Delivery::stored(false).on_event(E::ImdnDisplayed).to,
            S::Displayed
        );
    }

    #[test]
    fn failures_and_the_owed_imdn() {
        for e in [E::Expired, E::Rejected] {
            let mut asked = Delivery::stored(true);
            let t = asked.on_event(e);
            assert_eq!((t.to, t.owes_failure_imdn), (S::Failed, true));
            // Only once: Failed is final.
            let again = asked.on_event(e);
            assert!(!again.changed() && !again.owes_failure_imdn);
            let mut not_asked = Delivery::stored(false);
            let t = not_asked.on_event(e);
            assert_eq!((t.to, t.owes_failure_imdn), (S::Failed, false));
        }
        // The recipient's own negative IMDN is relayed, the server owes nothing.
        let mut d = Delivery::stored(true);
        let t = d.on_event(E::ImdnFailed);
        assert_eq!((t.to, t.owes_failure_imdn), (S::Failed, false));
        let mut d = Delivery::resume(S::Delivered, true);
        assert_eq!(d.on_event(E::ImdnFailed).to, S::Failed);
        assert!(!d.on_event(E::ImdnDisplayed).changed());
    }

    #[test]
    fn expiry_then_state_machine_on_a_queue() {
        // Three messages for an offline user; the user registers at t=10s and receives the
        // first two; the third expires at 72 h with a negative-delivery request.
        let p = DeferredPolicy::default();
        let t0 = Instant::now();
        let mut q: Vec<(Item, Delivery)> = (0..3)
            .map(|i| {
                let item = Item {
                    at: t0 + Duration::from_secs(i),
                    state: S::Stored,
                };
                (item, Delivery::stored(i == 2))
            })
            .collect();
        for (item, d) in q.iter_mut().take(2) {
            item.state = d.on_event(E::Device2xx).to;
        }
        let deadline = p.next_expiry(q.iter().map(|(i, _)| i)).unwrap();
        assert_eq!(deadline, t0 + Duration::from_secs(2) + p.expiry);
        let expired: Vec<usize> = q
            .iter()
            .enumerate()
            .filter(|(_, (i, _))| p.is_expired(i, deadline))
            .map(|(n, _)| n)
            .collect();
        assert_eq!(expired, [2]);
        let t = q[2].1.on_event(E::Expired);
        assert!(t.owes_failure_imdn);
    }
}
