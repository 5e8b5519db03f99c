//! Network storage (CPM.md §7 CM-5): the types the message controller, the storage backends and
//! the HTTP API share. The storage trait and its backends follow with issue 5.

use std::fmt;

/// Where a stored message stands (RFC 5438 §7: the dispositions an IMDN reports, plus the
/// server's own "stored" for a message it holds for an offline recipient).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeliveryState {
    /// Accepted and held by the server (202 sent), not yet delivered.
    Stored,
    /// A device of the recipient answered 2xx, or a positive delivery IMDN arrived.
    Delivered,
    /// A display IMDN arrived (the user saw it).
    Displayed,
    /// Given up: expired, refused by every device, or a negative IMDN arrived.
    Failed,
}

impl DeliveryState {
    /// Every state, in order.
    pub const ALL: [DeliveryState; 4] = [
        DeliveryState::Stored,
        DeliveryState::Delivered,
        DeliveryState::Displayed,
        DeliveryState::Failed,
    ];

    /// The lower-case name used in storage and in the HTTP API.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Stored => "stored",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Displayed => "displayed",
            DeliveryState::Failed => "failed",
        }
    }

    /// The state named `s` (as [`DeliveryState::as_str`] writes it).
    pub fn parse(s: &str) -> Option<DeliveryState> {
        DeliveryState::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in DeliveryState::ALL {
            assert_eq!(DeliveryState::parse(s.as_str()), Some(s));
        }
        assert_eq!(DeliveryState::parse("Stored"), None);
    }
}
