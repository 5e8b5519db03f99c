//! Half-duplex floor control (push-to-talk, ISSUE 6): one floor per conference, granted to one
//! talker at a time, a FIFO queue, a maximum talk time, spoken over BFCP ([`bfcp`], RFC 8855 over
//! TCP, RFC 8856).
//!
//! [`FloorControl`] is the floor control server of one conference (RFC 8855 §13). It is driven
//! like every engine machine: inputs with the time they happened (`request`, `release`,
//! `handle_message`, `handle_frame`, `handle_timeout`), outputs polled (`poll_event` for the
//! mixer and the roster, `poll_transmit` for the BFCP connections), and `next_deadline` for the
//! talk-time timer. The floor request's life (RFC 8855 §5.2.5):
//!
//! ```text
//!   FloorRequest ──► Pending(queue position) ──► Granted ──► Released (FloorRelease, leave)
//!                        │                          └──────► Revoked  (max talk time)
//!                        └──► Cancelled (FloorRelease while queued, leave)
//! ```

pub mod bfcp;

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;

use self::bfcp::{Attribute, ErrorCode, Group, Header, Message, Primitive, RequestStatus};
use super::roster::ParticipantId;

/// The floor of a conference when SDP names none (`a=floorid:1`, RFC 8856 §6).
pub const DEFAULT_FLOOR_ID: u16 = 1;

/// The primitives this server handles, announced in HelloAck (RFC 8855 §5.3.12).
const SUPPORTED_PRIMITIVES: [u8; 11] = [1, 2, 3, 4, 7, 8, 11, 12, 13, 16, 17];

/// A floor control server's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloorConfig {
    /// The BFCP conference id (SDP `a=confid`).
    pub conference_id: u32,
    /// The floor id (SDP `a=floorid`).
    pub floor_id: u16,
    /// How long one talker may hold the floor before it is revoked; `None`: no limit.
    pub max_talk_time: Option<Duration>,
}

impl Default for FloorConfig {
    /// Floor 1 of conference 1, 30 s of talk at most.
    fn default() -> Self {
        FloorConfig {
            conference_id: 1,
            floor_id: DEFAULT_FLOOR_ID,
            max_talk_time: Some(Duration::from_secs(30)),
        }
    }
}

/// What happened to the floor, for the mixer (drop audio of non-holders), the roster and the
/// HTTP API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloorEvent {
    /// The participant holds the floor: its audio is mixed.
    Granted(ParticipantId),
    /// The floor was taken back at the maximum talk time.
    Revoked(ParticipantId),
    /// The holder released the floor (or left).
    Released(ParticipantId),
    /// The participant's request waits at this 1-based queue position.
    Queued(ParticipantId, usize),
    /// A queued request was withdrawn (release while queued, or the participant left).
    Cancelled(ParticipantId),
}

/// Why a floor operation was refused; [`FloorError::error_code`] is the BFCP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FloorError {
    /// The participant is not registered with floor control.
    UnknownParticipant,
    /// The participant already has a floor request pending or granted.
    AlreadyRequested,
    /// No such floor request (of this participant).
    NoSuchRequest,
    /// The request names another floor.
    InvalidFloor,
    /// The request is for another participant (third-party requests need a chair).
    Unauthorized,
}

impl FloorError {
    /// A reason phrase.
    pub fn reason(&self) -> &'static str {
        match self {
            FloorError::UnknownParticipant => "user does not exist",
            FloorError::AlreadyRequested => "a floor request is already ongoing",
            FloorError::NoSuchRequest => "floor request id does not exist",
            FloorError::InvalidFloor => "invalid floor id",
            FloorError::Unauthorized => "unauthorized operation",
        }
    }

    /// The BFCP ERROR-CODE for this refusal (RFC 8855 §5.2.6).
    pub fn error_code(&self) -> ErrorCode {
        match self {
            FloorError::UnknownParticipant => ErrorCode::USER_DOES_NOT_EXIST,
            FloorError::AlreadyRequested => ErrorCode::MAX_FLOOR_REQUESTS_REACHED,
            FloorError::NoSuchRequest => ErrorCode::FLOOR_REQUEST_ID_DOES_NOT_EXIST,
            FloorError::InvalidFloor => ErrorCode::INVALID_FLOOR_ID,
            FloorError::Unauthorized => ErrorCode::UNAUTHORIZED_OPERATION,
        }
    }
}

impl fmt::Display for FloorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for FloorError {}

#[derive(Debug, Clone, Copy)]
struct Member {
    id: ParticipantId,
    user_id: u16,
    /// Sent a FloorQuery: receives FloorStatus on every change (RFC 8855 §13.5).
    subscribed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Request {
    id: u16,
    owner: ParticipantId,
}

/// The floor control server of one conference (RFC 8855 §13): grant, FIFO queue, release,
/// revocation at the maximum talk time. Time is an input; nothing here reads a clock.
#[derive(Debug)]
pub struct FloorControl {
    cfg: FloorConfig,
    members: Vec<Member>,
    holder: Option<(Request, Instant)>,
    queue: VecDeque<Request>,
    next_request_id: u16,
    events: VecDeque<FloorEvent>,
    transmits: VecDeque<(ParticipantId, Message)>,
}

impl FloorControl {
    /// A free floor with nobody registered.
    pub fn new(cfg: FloorConfig) -> FloorControl {
        FloorControl {
            cfg,
            members: Vec::new(),
            holder: None,
            queue: VecDeque::new(),
            next_request_id: 1,
            events: VecDeque::new(),
            transmits: VecDeque::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &FloorConfig {
        &self.cfg
    }

    /// Registers a participant under the BFCP user id its SDP answer gave it (`a=userid`).
    /// Registering again replaces the user id.
    pub fn add_participant(&mut self, p: ParticipantId, user_id: u16) {
        match self.members.iter_mut().find(|m| m.id == p) {
            Some(m) => m.user_id = user_id,
            None => self.members.push(Member {
                id: p,
                user_id,
                subscribed: false,
            }),
        }
    }

    /// Removes a participant (it left): its granted request is released, its queued one
    /// cancelled.
    pub fn remove_participant(&mut self, now: Instant, p: ParticipantId) {
        self.withdraw(now, p, None, 0);
        self.members.retain(|m| m.id != p);
    }

    /// The participant whose BFCP user id is `user_id`.
    pub fn participant_of_user(&self, user_id: u16) -> Option<ParticipantId> {
        self.members
            .iter()
            .find(|m| m.user_id == user_id)
            .map(|m| m.id)
    }

    /// Who holds the floor.
    pub fn holder(&self) -> Option<ParticipantId> {
        self.holder.map(|(r, _)| r.owner)
    }

    /// Whether `p`'s audio is to be mixed (it holds the floor).
    pub fn may_talk(&self, p: ParticipantId) -> bool {
        self.holder() == Some(p)
    }

    /// `p`'s 1-based position in the queue.
    pub fn queue_position(&self, p: ParticipantId) -> Option<usize> {
        self.queue.iter().position(|r| r.owner == p).map(|i| i + 1)
    }

    /// The participants waiting, first first.
    pub fn queue(&self) -> impl Iterator<Item = ParticipantId> + '_ {
        self.queue.iter().map(|r| r.owner)
    }

    /// `p` asks for the floor (push-to-talk pressed, from the HTTP API or a FloorRequest):
    /// granted at once if free, else queued. Returns the floor request id.
    pub fn request(&mut self, now: Instant, p: ParticipantId) -> Result<u16, FloorError> {
        self.request_with(now, p, 0)
    }

    /// `p` releases the floor, or cancels its queued request (push-to-talk released).
    pub fn release(&mut self, now: Instant, p: ParticipantId) -> Result<(), FloorError> {
        self.member(p)?;
        if self.withdraw(now, p, None, 0) {
            Ok(())
        } else {
            Err(FloorError::NoSuchRequest)
        }
    }

    /// When the holder's talk time ends.
    pub fn next_deadline(&self) -> Option<Instant> {
        let max = self.cfg.max_talk_time?;
        self.holder.map(|(_, since)| since + max)
    }

    /// Revokes the floor if the holder's talk time is over, and grants it to the next.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(deadline) = self.next_deadline() else {
            return;
        };
        if now < deadline {
            return;
        }
        if let Some((req, _)) = self.holder.take() {
            self.events.push_back(FloorEvent::Revoked(req.owner));
            self.send_request_status(req, RequestStatus::Revoked, 0, 0);
            self.grant_next(now);
            self.send_floor_status_to_subscribers();
        }
    }

    /// The next floor event.
    pub fn poll_event(&mut self) -> Option<FloorEvent> {
        self.events.pop_front()
    }

    /// The next BFCP message to send, with the participant whose connection carries it.
    pub fn poll_transmit(&mut self) -> Option<(ParticipantId, Message)> {
        self.transmits.pop_front()
    }

    /// A framed message received on `from`'s BFCP connection ([`bfcp::Framer::next_frame`]):
    /// decoded and handled, or answered with an Error (RFC 8855 §13.1) when it does not decode.
    pub fn handle_frame(&mut self, now: Instant, from: ParticipantId, frame: Bytes) {
        match Message::decode(frame.clone()) {
            Ok(msg) => self.handle_message(now, from, &msg),
            Err(e) => {
                tracing::debug!(participant = %from, error = %e, "undecodable BFCP message");
                if let (Ok(h), Some((code, details))) = (Header::decode(&frame), e.error_code()) {
                    let reply = Message {
                        version: h.version,
                        responder: h.version == bfcp::VERSION_UNRELIABLE,
                        ..Message::new(
                            Primitive::Error,
                            h.conference_id,
                            h.transaction_id,
                            h.user_id,
                        )
                    };
                    self.transmits
                        .push_back((from, error_with(reply, code, details, e.reason())));
                }
            }
        }
    }

    /// A BFCP message received on `from`'s connection (RFC 8855 §13).
    pub fn handle_message(&mut self, now: Instant, from: ParticipantId, msg: &Message) {
        if msg.conference_id != self.cfg.conference_id {
            return self.reply_error(
                from,
                msg,
                ErrorCode::CONFERENCE_DOES_NOT_EXIST,
                "no such conference",
            );
        }
        match self.member(from) {
            Ok(m) if m.user_id == msg.user_id => {}
            _ => {
                return self.reply_error(from, msg, ErrorCode::USER_DOES_NOT_EXIST, "no such user")
            }
        }
        let result = match msg.primitive {
            Primitive::Hello => {
                let ack = Message::reply_to(msg, Primitive::HelloAck)
                    .with(Attribute::SupportedPrimitives(
                        SUPPORTED_PRIMITIVES.to_vec(),
                    ))
                    .with(Attribute::SupportedAttributes((1..=18).collect()));
                self.transmits.push_back((from, ack));
                Ok(())
            }
            Primitive::FloorRequest => self.on_floor_request(now, from, msg),
            Primitive::FloorRelease => match msg.floor_request_id() {
                Some(id) => self.on_floor_release(now, from, msg, id),
                None => Err(FloorError::NoSuchRequest),
            },
            Primitive::FloorRequestQuery => self.on_request_query(from, msg),
            Primitive::FloorQuery => {
                let wants = msg.attrs.iter().any(|a| matches!(a, Attribute::FloorId(_)));
                if wants && msg.floor_id() != Some(self.cfg.floor_id) {
                    Err(FloorError::InvalidFloor)
                } else {
                    if let Some(m) = self.members.iter_mut().find(|m| m.id == from) {
                        m.subscribed = wants;
                    }
                    let status = self.floor_status(msg.transaction_id, msg.user_id, wants);
                    self.transmits.push_back((
                        from,
                        Message {
                            version: msg.version,
                            ..status
                        },
                    ));
                    Ok(())
                }
            }
            Primitive::Goodbye => {
                self.withdraw(now, from, None, 0);
                if let Some(m) = self.members.iter_mut().find(|m| m.id == from) {
                    m.subscribed = false;
                }
                self.transmits
                    .push_back((from, Message::reply_to(msg, Primitive::GoodbyeAck)));
                Ok(())
            }
            // Answers to what we sent, or acknowledgements (UDP only): nothing to do.
            Primitive::HelloAck
            | Primitive::Error
            | Primitive::GoodbyeAck
            | Primitive::FloorRequestStatusAck
            | Primitive::FloorStatusAck => Ok(()),
            other => {
                tracing::debug!(participant = %from, primitive = ?other, "unsupported BFCP primitive");
                self.reply_error(
                    from,
                    msg,
                    ErrorCode::UNKNOWN_PRIMITIVE,
                    "unsupported primitive",
                );
                Ok(())
            }
        };
        if let Err(e) = result {
            self.reply_error(from, msg, e.error_code(), e.reason());
        }
    }

    fn on_floor_request(
        &mut self,
        now: Instant,
        from: ParticipantId,
        msg: &Message,
    ) -> Result<(), FloorError> {
        let mut floors = msg.attrs.iter().filter_map(|a| match a {
            Attribute::FloorId(f) => Some(*f),
            _ => None,
        });
        if floors.next() != Some(self.cfg.floor_id) || floors.next().is_some() {
            return Err(FloorError::InvalidFloor);
        }
        if msg
            .attrs
            .iter()
            .any(|a| matches!(a, Attribute::BeneficiaryId(_)))
        {
            return Err(FloorError::Unauthorized);
        }
        self.request_with(now, from, msg.transaction_id).map(|_| ())
    }

    fn on_floor_release(
        &mut self,
        now: Instant,
        from: ParticipantId,
        msg: &Message,
        id: u16,
    ) -> Result<(), FloorError> {
        let owner = self
            .find_request(id)
            .map(|r| r.owner)
            .ok_or(FloorError::NoSuchRequest)?;
        if owner != from {
            return Err(FloorError::Unauthorized);
        }
        self.withdraw(now, from, Some(id), msg.transaction_id);
        Ok(())
    }

    fn on_request_query(&mut self, from: ParticipantId, msg: &Message) -> Result<(), FloorError> {
        let id = msg.floor_request_id().ok_or(FloorError::NoSuchRequest)?;
        let req = self.find_request(id).ok_or(FloorError::NoSuchRequest)?;
        let (status, pos) = self.status_of(req);
        let mut reply = Message::reply_to(msg, Primitive::FloorRequestStatus);
        reply.attrs.push(self.request_information(req, status, pos));
        self.transmits.push_back((from, reply));
        Ok(())
    }

    fn request_with(
        &mut self,
        now: Instant,
        p: ParticipantId,
        tid: u16,
    ) -> Result<u16, FloorError> {
        self.member(p)?;
        if self.holder() == Some(p) || self.queue_position(p).is_some() {
            return Err(FloorError::AlreadyRequested);
        }
        let req = Request {
            id: self.new_request_id(),
            owner: p,
        };
        if self.holder.is_none() {
            self.holder = Some((req, now));
            self.events.push_back(FloorEvent::Granted(p));
            self.send_request_status(req, RequestStatus::Granted, 0, tid);
        } else {
            self.queue.push_back(req);
            let pos = self.queue.len();
            self.events.push_back(FloorEvent::Queued(p, pos));
            self.send_request_status(req, RequestStatus::Pending, pos, tid);
        }
        self.send_floor_status_to_subscribers();
        Ok(req.id)
    }

    /// Releases (if granted) or cancels (if queued) `p`'s request, optionally only the one with
    /// id `only`. Whether there was one.
    fn withdraw(&mut self, now: Instant, p: ParticipantId, only: Option<u16>, tid: u16) -> bool {
        let matches = |r: &Request| r.owner == p && (only.is_none() || only == Some(r.id));
        if let Some((req, _)) = self.holder.filter(|(r, _)| matches(r)) {
            self.holder = None;
            self.events.push_back(FloorEvent::Released(p));
            self.send_request_status(req, RequestStatus::Released, 0, tid);
            self.grant_next(now);
        } else if let Some(i) = self.queue.iter().position(matches) {
            let Some(req) = self.queue.remove(i) else {
                return false;
            };
            self.events.push_back(FloorEvent::Cancelled(p));
            self.send_request_status(req, RequestStatus::Cancelled, 0, tid);
            self.send_queue_positions(i);
        } else {
            return false;
        }
        self.send_floor_status_to_subscribers();
        true
    }

    fn grant_next(&mut self, now: Instant) {
        if let Some(req) = self.queue.pop_front() {
            self.holder = Some((req, now));
            self.events.push_back(FloorEvent::Granted(req.owner));
            self.send_request_status(req, RequestStatus::Granted, 0, 0);
            self.send_queue_positions(0);
        }
    }

    /// Tells the queued requests from index `from` on their new positions.
    fn send_queue_positions(&mut self, from: usize) {
        let moved: Vec<(usize, Request)> =
            self.queue.iter().copied().enumerate().skip(from).collect();
        for (i, req) in moved {
            self.send_request_status(req, RequestStatus::Pending, i + 1, 0);
        }
    }

    fn send_request_status(&mut self, req: Request, status: RequestStatus, pos: usize, tid: u16) {
        let Some(user_id) = self.user_id(req.owner) else {
            return;
        };
        let msg = Message::new(
            Primitive::FloorRequestStatus,
            self.cfg.conference_id,
            tid,
            user_id,
        )
        .with(self.request_information(req, status, pos));
        self.transmits.push_back((req.owner, msg));
    }

    fn send_floor_status_to_subscribers(&mut self) {
        let subs: Vec<Member> = self
            .members
            .iter()
            .filter(|m| m.subscribed)
            .copied()
            .collect();
        for m in subs {
            let msg = self.floor_status(0, m.user_id, true);
            self.transmits.push_back((m.id, msg));
        }
    }

    /// FloorStatus (RFC 8855 §5.3.8): the floor and every request on it, holder first.
    fn floor_status(&self, tid: u16, user_id: u16, with_floor: bool) -> Message {
        let mut msg = Message::new(Primitive::FloorStatus, self.cfg.conference_id, tid, user_id);
        if with_floor {
            msg.attrs.push(Attribute::FloorId(self.cfg.floor_id));
            if let Some((req, _)) = self.holder {
                msg.attrs
                    .push(self.request_information(req, RequestStatus::Granted, 0));
            }
            for (i, req) in self.queue.iter().enumerate() {
                msg.attrs
                    .push(self.request_information(*req, RequestStatus::Pending, i + 1));
            }
        }
        msg
    }

    /// FLOOR-REQUEST-INFORMATION (RFC 8855 §5.2.15) for one request.
    fn request_information(&self, req: Request, status: RequestStatus, pos: usize) -> Attribute {
        let request_status = Attribute::RequestStatus {
            status,
            queue_position: u8::try_from(pos).unwrap_or(u8::MAX),
        };
        let mut attrs = vec![
            Attribute::OverallRequestStatus(Group {
                id: req.id,
                attrs: vec![request_status.clone()],
            }),
            Attribute::FloorRequestStatus(Group {
                id: self.cfg.floor_id,
                attrs: vec![request_status],
            }),
        ];
        if let Some(user_id) = self.user_id(req.owner) {
            attrs.push(Attribute::BeneficiaryInformation(Group {
                id: user_id,
                attrs: Vec::new(),
            }));
        }
        Attribute::FloorRequestInformation(Group { id: req.id, attrs })
    }

    fn status_of(&self, req: Request) -> (RequestStatus, usize) {
        match self.queue.iter().position(|r| *r == req) {
            Some(i) => (RequestStatus::Pending, i + 1),
            None => (RequestStatus::Granted, 0),
        }
    }

    fn find_request(&self, id: u16) -> Option<Request> {
        self.holder
            .map(|(r, _)| r)
            .into_iter()
            .chain(self.queue.iter().copied())
            .find(|r| r.id == id)
    }

    fn new_request_id(&mut self) -> u16 {
        loop {
            let id = self.next_request_id;
            self.next_request_id = self.next_request_id.wrapping_add(1).max(1);
            if self.find_request(id).is_none() {
                return id;
            }
        }
    }

    fn member(&self, p: ParticipantId) -> Result<&Member, FloorError> {
        self.members
            .iter()
            .find(|m| m.id == p)
            .ok_or(FloorError::UnknownParticipant)
    }

    fn user_id(&self, p: ParticipantId) -> Option<u16> {
        self.member(p).ok().map(|m| m.user_id)
    }

    fn reply_error(&mut self, to: ParticipantId, msg: &Message, code: ErrorCode, info: &str) {
        let reply = Message::reply_to(msg, Primitive::Error);
        self.transmits
            .push_back((to, error_with(reply, code, Bytes::new(), info)));
    }
}

fn error_with(msg: Message, code: ErrorCode, details: Bytes, info: &str) -> Message {
    msg.with(Attribute::ErrorCode { code, details })
        .with(Attribute::ErrorInfo(Bytes::copy_from_slice(
            info.as_bytes(),
        )))
}

#[cfg(test)]
mod tests;
