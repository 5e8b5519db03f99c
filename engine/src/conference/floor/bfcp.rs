//! The Binary Floor Control Protocol (RFC 8855): messages, attributes and the framing of a TCP
//! stream (RFC 8855 §6.2, RFC 8856 `TCP/BFCP`). Sans-IO and strict: every length is checked
//! against the bytes present, nothing panics on peer input, errors say which BFCP error code
//! answers them (RFC 8855 §13.1).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! | Ver |R|F| Res |  Primitive    |        Payload Length         |
//! |                         Conference ID                         |
//! |         Transaction ID        |            User ID            |
//! ```
//! RFC 8855 §5.1 COMMON-HEADER. Payload Length counts 4-octet words after the header.
//! Attributes (§5.2) are `Type(7) M(1) Length(8)` + value, padded to 4 octets.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The COMMON-HEADER's length over reliable transports (RFC 8855 §5.1).
pub const COMMON_HEADER_LEN: usize = 12;

/// BFCP version 1: reliable transports (TCP, TLS; RFC 8855 §5.1).
pub const VERSION_RELIABLE: u8 = 1;

/// BFCP version 2: unreliable transports (UDP, DTLS; RFC 8855 §5.1).
pub const VERSION_UNRELIABLE: u8 = 2;

/// The largest message [`Framer`] accepts by default (floor control messages are small).
pub const DEFAULT_MAX_MESSAGE: usize = 16 * 1024;

/// Deepest nesting of grouped attributes the decoder accepts.
const MAX_GROUP_DEPTH: usize = 4;

/// A BFCP primitive (RFC 8855 §5.1 table 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Primitive {
    FloorRequest = 1,
    FloorRelease = 2,
    FloorRequestQuery = 3,
    FloorRequestStatus = 4,
    UserQuery = 5,
    UserStatus = 6,
    FloorQuery = 7,
    FloorStatus = 8,
    ChairAction = 9,
    ChairActionAck = 10,
    Hello = 11,
    HelloAck = 12,
    Error = 13,
    FloorRequestStatusAck = 14,
    FloorStatusAck = 15,
    Goodbye = 16,
    GoodbyeAck = 17,
}

impl Primitive {
    /// Every primitive, in value order.
    pub const ALL: [Primitive; 17] = [
        Primitive::FloorRequest,
        Primitive::FloorRelease,
        Primitive::FloorRequestQuery,
        Primitive::FloorRequestStatus,
        Primitive::UserQuery,
        Primitive::UserStatus,
        Primitive::FloorQuery,
        Primitive::FloorStatus,
        Primitive::ChairAction,
        Primitive::ChairActionAck,
        Primitive::Hello,
        Primitive::HelloAck,
        Primitive::Error,
        Primitive::FloorRequestStatusAck,
        Primitive::FloorStatusAck,
        Primitive::Goodbye,
        Primitive::GoodbyeAck,
    ];

    /// The primitive with value `v`.
    pub fn from_u8(v: u8) -> Option<Primitive> {
        Primitive::ALL.get(usize::from(v).checked_sub(1)?).copied()
    }
}

/// The status of a floor request (RFC 8855 §5.2.5 REQUEST-STATUS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum RequestStatus {
    Pending = 1,
    Accepted = 2,
    Granted = 3,
    Denied = 4,
    Cancelled = 5,
    Released = 6,
    Revoked = 7,
}

impl RequestStatus {
    fn from_u8(v: u8) -> Option<RequestStatus> {
        use RequestStatus::*;
        [
            Pending, Accepted, Granted, Denied, Cancelled, Released, Revoked,
        ]
        .get(usize::from(v).checked_sub(1)?)
        .copied()
    }
}

/// An ERROR-CODE value (RFC 8855 §5.2.6 table 5); values beyond 14 are kept as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u8);

impl ErrorCode {
    /// 1: Conference does not exist.
    pub const CONFERENCE_DOES_NOT_EXIST: ErrorCode = ErrorCode(1);
    /// 2: User does not exist.
    pub const USER_DOES_NOT_EXIST: ErrorCode = ErrorCode(2);
    /// 3: Unknown primitive.
    pub const UNKNOWN_PRIMITIVE: ErrorCode = ErrorCode(3);
    /// 4: Unknown mandatory attribute (details: the attribute types, shifted left by one).
    pub const UNKNOWN_MANDATORY_ATTRIBUTE: ErrorCode = ErrorCode(4);
    /// 5: Unauthorized operation.
    pub const UNAUTHORIZED_OPERATION: ErrorCode = ErrorCode(5);
    /// 6: Invalid floor ID.
    pub const INVALID_FLOOR_ID: ErrorCode = ErrorCode(6);
    /// 7: Floor request ID does not exist.
    pub const FLOOR_REQUEST_ID_DOES_NOT_EXIST: ErrorCode = ErrorCode(7);
    /// 8: Already the maximum number of ongoing floor requests for this floor.
    pub const MAX_FLOOR_REQUESTS_REACHED: ErrorCode = ErrorCode(8);
    /// 10: Unable to parse message.
    pub const UNABLE_TO_PARSE: ErrorCode = ErrorCode(10);
    /// 12: Unsupported version.
    pub const UNSUPPORTED_VERSION: ErrorCode = ErrorCode(12);
    /// 13: Incorrect message length.
    pub const INCORRECT_MESSAGE_LENGTH: ErrorCode = ErrorCode(13);
    /// 14: Generic error.
    pub const GENERIC_ERROR: ErrorCode = ErrorCode(14);
}

/// A grouped attribute's leading 16-bit id and its nested attributes (RFC 8855 §5.2.14-18).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Group {
    /// The id in the group's header (beneficiary, floor request, or floor id).
    pub id: u16,
    /// The nested attributes.
    pub attrs: Vec<Attribute>,
}

/// A BFCP attribute (RFC 8855 §5.2). Strings are kept as received (UTF-8 is not checked).
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Attribute {
    /// 1 BENEFICIARY-ID.
    BeneficiaryId(u16),
    /// 2 FLOOR-ID.
    FloorId(u16),
    /// 3 FLOOR-REQUEST-ID.
    FloorRequestId(u16),
    /// 4 PRIORITY (0 lowest .. 4 highest).
    Priority(u8),
    /// 5 REQUEST-STATUS with the queue position (0: not applicable).
    RequestStatus {
        status: RequestStatus,
        queue_position: u8,
    },
    /// 6 ERROR-CODE with its error specific details.
    ErrorCode { code: ErrorCode, details: Bytes },
    /// 7 ERROR-INFO.
    ErrorInfo(Bytes),
    /// 8 PARTICIPANT-PROVIDED-INFO.
    ParticipantProvidedInfo(Bytes),
    /// 9 STATUS-INFO.
    StatusInfo(Bytes),
    /// 10 SUPPORTED-ATTRIBUTES: attribute types.
    SupportedAttributes(Vec<u8>),
    /// 11 SUPPORTED-PRIMITIVES: primitive values.
    SupportedPrimitives(Vec<u8>),
    /// 12 USER-DISPLAY-NAME.
    UserDisplayName(Bytes),
    /// 13 USER-URI.
    UserUri(Bytes),
    /// 14 BENEFICIARY-INFORMATION (id: beneficiary id).
    BeneficiaryInformation(Group),
    /// 15 FLOOR-REQUEST-INFORMATION (id: floor request id).
    FloorRequestInformation(Group),
    /// 16 REQUESTED-BY-INFORMATION (id: requester's user id).
    RequestedByInformation(Group),
    /// 17 FLOOR-REQUEST-STATUS (id: floor id).
    FloorRequestStatus(Group),
    /// 18 OVERALL-REQUEST-STATUS (id: floor request id).
    OverallRequestStatus(Group),
    /// An attribute this codec does not know, received without the M bit (ignored by
    /// receivers, RFC 8855 §5.2).
    Unknown { kind: u8, value: Bytes },
}

impl Attribute {
    /// The attribute type (RFC 8855 §5.2 table 2).
    pub fn kind(&self) -> u8 {
        match self {
            Attribute::BeneficiaryId(_) => 1,
            Attribute::FloorId(_) => 2,
            Attribute::FloorRequestId(_) => 3,
            Attribute::Priority(_) => 4,
            Attribute::RequestStatus { .. } => 5,
            Attribute::ErrorCode { .. } => 6,
            Attribute::ErrorInfo(_) => 7,
            Attribute::ParticipantProvidedInfo(_) => 8,
            Attribute::StatusInfo(_) => 9,
            Attribute::SupportedAttributes(_) => 10,
            Attribute::SupportedPrimitives(_) => 11,
            Attribute::UserDisplayName(_) => 12,
            Attribute::UserUri(_) => 13,
            Attribute::BeneficiaryInformation(_) => 14,
            Attribute::FloorRequestInformation(_) => 15,
            Attribute::RequestedByInformation(_) => 16,
            Attribute::FloorRequestStatus(_) => 17,
            Attribute::OverallRequestStatus(_) => 18,
            Attribute::Unknown { kind, .. } => *kind,
        }
    }

    /// The group of a grouped attribute.
    pub fn group(&self) -> Option<&Group> {
        match self {
            Attribute::BeneficiaryInformation(g)
            | Attribute::FloorRequestInformation(g)
            | Attribute::RequestedByInformation(g)
            | Attribute::FloorRequestStatus(g)
            | Attribute::OverallRequestStatus(g) => Some(g),
            _ => None,
        }
    }

    fn encode(&self, buf: &mut BytesMut) -> Result<(), BfcpError> {
        let start = buf.len();
        // Type and M bit (0: every attribute here is defined by RFC 8855 itself), length later.
        buf.put_u8(self.kind() << 1);
        buf.put_u8(0);
        match self {
            Attribute::BeneficiaryId(v) | Attribute::FloorId(v) | Attribute::FloorRequestId(v) => {
                buf.put_u16(*v);
            }
            Attribute::Priority(p) => buf.put_u16(u16::from(*p & 0x07) << 13),
            Attribute::RequestStatus {
                status,
                queue_position,
            } => {
                buf.put_u8(*status as u8);
                buf.put_u8(*queue_position);
            }
            Attribute::ErrorCode { code, details } => {
                buf.put_u8(code.0);
                buf.put_slice(details);
            }
            Attribute::ErrorInfo(s)
            | Attribute::ParticipantProvidedInfo(s)
            | Attribute::StatusInfo(s)
            | Attribute::UserDisplayName(s)
            | Attribute::UserUri(s)
            | Attribute::Unknown { value: s, .. } => buf.put_slice(s),
            Attribute::SupportedAttributes(v) => buf.extend(v.iter().map(|t| t << 1)),
            Attribute::SupportedPrimitives(v) => buf.put_slice(v),
            Attribute::BeneficiaryInformation(g)
            | Attribute::FloorRequestInformation(g)
            | Attribute::RequestedByInformation(g)
            | Attribute::FloorRequestStatus(g)
            | Attribute::OverallRequestStatus(g) => {
                buf.put_u16(g.id);
                for a in &g.attrs {
                    a.encode(buf)?;
                }
            }
        }
        let len = u8::try_from(buf.len() - start).map_err(|_| BfcpError::AttributeTooLong)?;
        if let Some(b) = buf.get_mut(start + 1) {
            *b = len;
        }
        while (buf.len() - start) & 3 != 0 {
            buf.put_u8(0);
        }
        Ok(())
    }
}

/// Reads the attributes filling `buf`; `depth` counts enclosing groups.
fn decode_attrs(mut buf: Bytes, depth: usize) -> Result<Vec<Attribute>, BfcpError> {
    let mut attrs = Vec::new();
    while !buf.is_empty() {
        let [b0, len, ..] = buf[..] else {
            return Err(BfcpError::Malformed("truncated attribute header"));
        };
        let len = usize::from(len);
        if len < 2 || len > buf.len() {
            return Err(BfcpError::Malformed("attribute length out of bounds"));
        }
        // Every attribute is padded, also the last one of a group (RFC 8855 §5.2).
        let padded = (len + 3) & !3;
        if padded > buf.len() {
            return Err(BfcpError::Malformed("attribute padding missing"));
        }
        let mut value = buf.slice(2..len);
        buf.advance(padded);
        let (kind, mandatory) = (b0 >> 1, b0 & 1 == 1);
        let u16_of = |v: &Bytes| match v[..] {
            [a, b] => Ok(u16::from_be_bytes([a, b])),
            _ => Err(BfcpError::Malformed("16-bit attribute of wrong length")),
        };
        let attr = match kind {
            1 => Attribute::BeneficiaryId(u16_of(&value)?),
            2 => Attribute::FloorId(u16_of(&value)?),
            3 => Attribute::FloorRequestId(u16_of(&value)?),
            4 => Attribute::Priority((u16_of(&value)? >> 13) as u8),
            5 => {
                let v = u16_of(&value)?;
                Attribute::RequestStatus {
                    status: RequestStatus::from_u8((v >> 8) as u8)
                        .ok_or(BfcpError::Malformed("unknown request status"))?,
                    queue_position: v as u8,
                }
            }
            6 => {
                if value.is_empty() {
                    return Err(BfcpError::Malformed("empty ERROR-CODE"));
                }
                let code = ErrorCode(value.get_u8());
                Attribute::ErrorCode {
                    code,
                    details: value,
                }
            }
            7 => Attribute::ErrorInfo(value),
            8 => Attribute::ParticipantProvidedInfo(value),
            9 => Attribute::StatusInfo(value),
            10 => Attribute::SupportedAttributes(value.iter().map(|t| t >> 1).collect()),
            11 => Attribute::SupportedPrimitives(value.to_vec()),
            12 => Attribute::UserDisplayName(value),
            13 => Attribute::UserUri(value),
            14..=18 => {
                if depth >= MAX_GROUP_DEPTH {
                    return Err(BfcpError::Malformed("grouped attributes nested too deep"));
                }
                if value.len() < 2 {
                    return Err(BfcpError::Malformed("grouped attribute without its id"));
                }
                let id = value.get_u16();
                let group = Group {
                    id,
                    attrs: decode_attrs(value, depth + 1)?,
                };
                match kind {
                    14 => Attribute::BeneficiaryInformation(group),
                    15 => Attribute::FloorRequestInformation(group),
                    16 => Attribute::RequestedByInformation(group),
                    17 => Attribute::FloorRequestStatus(group),
                    _ => Attribute::OverallRequestStatus(group),
                }
            }
            _ if mandatory => return Err(BfcpError::UnknownMandatoryAttribute(kind)),
            _ => Attribute::Unknown { kind, value },
        };
        attrs.push(attr);
    }
    Ok(attrs)
}

/// A BFCP message: the COMMON-HEADER fields and the attributes (RFC 8855 §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// 1 over TCP/TLS, 2 over UDP/DTLS.
    pub version: u8,
    /// The R bit (version 2 only): the message is a response.
    pub responder: bool,
    /// The primitive.
    pub primitive: Primitive,
    /// The conference (SDP `a=confid`, RFC 8856 §5).
    pub conference_id: u32,
    /// Pairs a response with its request; 0 in server-initiated messages over TCP (RFC 8855
    /// §8.1).
    pub transaction_id: u16,
    /// The sender or addressee (SDP `a=userid`).
    pub user_id: u16,
    /// The attributes in order.
    pub attrs: Vec<Attribute>,
}

impl Message {
    /// A version-1 (TCP) message without attributes.
    pub fn new(
        primitive: Primitive,
        conference_id: u32,
        transaction_id: u16,
        user_id: u16,
    ) -> Self {
        Message {
            version: VERSION_RELIABLE,
            responder: false,
            primitive,
            conference_id,
            transaction_id,
            user_id,
            attrs: Vec::new(),
        }
    }

    /// Adds an attribute.
    pub fn with(mut self, attr: Attribute) -> Self {
        self.attrs.push(attr);
        self
    }

    /// The reply to `request`: same version, conference, transaction and user (RFC 8855 §8).
    pub fn reply_to(request: &Message, primitive: Primitive) -> Message {
        Message {
            version: request.version,
            responder: request.version == VERSION_UNRELIABLE,
            ..Message::new(
                primitive,
                request.conference_id,
                request.transaction_id,
                request.user_id,
            )
        }
    }

    /// The first top-level FLOOR-ID.
    pub fn floor_id(&self) -> Option<u16> {
        self.attrs.iter().find_map(|a| match a {
            Attribute::FloorId(v) => Some(*v),
            _ => None,
        })
    }

    /// The top-level FLOOR-REQUEST-ID.
    pub fn floor_request_id(&self) -> Option<u16> {
        self.attrs.iter().find_map(|a| match a {
            Attribute::FloorRequestId(v) => Some(*v),
            _ => None,
        })
    }

    /// Appends the encoded message (header, attributes, padding) to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), BfcpError> {
        let start = buf.len();
        buf.put_u8(self.version << 5 | u8::from(self.responder) << 4);
        buf.put_u8(self.primitive as u8);
        buf.put_u16(0);
        buf.put_u32(self.conference_id);
        buf.put_u16(self.transaction_id);
        buf.put_u16(self.user_id);
        for a in &self.attrs {
            if let Err(e) = a.encode(buf) {
                buf.truncate(start);
                return Err(e);
            }
        }
        let words = (buf.len() - start - COMMON_HEADER_LEN) / 4;
        let Ok(words) = u16::try_from(words) else {
            buf.truncate(start);
            return Err(BfcpError::MessageTooLong);
        };
        buf[start + 2..start + 4].copy_from_slice(&words.to_be_bytes());
        Ok(())
    }

    /// The encoded message.
    pub fn to_bytes(&self) -> Result<Bytes, BfcpError> {
        let mut b = BytesMut::with_capacity(64);
        self.encode(&mut b)?;
        Ok(b.freeze())
    }

    /// Decodes exactly one message filling `buf` (as [`Framer`] yields them). Attribute values
    /// are slices of `buf`.
    pub fn decode(buf: Bytes) -> Result<Message, BfcpError> {
        let h = Header::decode(&buf)?;
        if h.fragmented {
            return Err(BfcpError::Fragmented);
        }
        if buf.len() != h.message_len() {
            return Err(BfcpError::IncorrectLength);
        }
        let primitive =
            Primitive::from_u8(h.primitive).ok_or(BfcpError::UnknownPrimitive(h.primitive))?;
        let attrs = decode_attrs(buf.slice(COMMON_HEADER_LEN..), 0)?;
        Ok(Message {
            version: h.version,
            responder: h.responder,
            primitive,
            conference_id: h.conference_id,
            transaction_id: h.transaction_id,
            user_id: h.user_id,
            attrs,
        })
    }
}

/// The COMMON-HEADER alone (RFC 8855 §5.1), readable even when the rest of a message is not,
/// so that an Error can be addressed to the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Ver.
    pub version: u8,
    /// R.
    pub responder: bool,
    /// F (fragments exist over UDP only; not supported here).
    pub fragmented: bool,
    /// The primitive value.
    pub primitive: u8,
    /// Payload Length in 4-octet words.
    pub payload_words: u16,
    /// Conference ID.
    pub conference_id: u32,
    /// Transaction ID.
    pub transaction_id: u16,
    /// User ID.
    pub user_id: u16,
}

impl Header {
    /// Reads the first 12 octets of `buf`; checks the version (1 or 2).
    pub fn decode(buf: &[u8]) -> Result<Header, BfcpError> {
        let Some(h) = buf.get(..COMMON_HEADER_LEN) else {
            return Err(BfcpError::Truncated);
        };
        let version = h[0] >> 5;
        if version != VERSION_RELIABLE && version != VERSION_UNRELIABLE {
            return Err(BfcpError::UnsupportedVersion(version));
        }
        Ok(Header {
            version,
            responder: h[0] & 0x10 != 0,
            fragmented: h[0] & 0x08 != 0,
            primitive: h[1],
            payload_words: u16::from_be_bytes([h[2], h[3]]),
            conference_id: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
            transaction_id: u16::from_be_bytes([h[8], h[9]]),
            user_id: u16::from_be_bytes([h[10], h[11]]),
        })
    }

    /// The whole message's length in octets.
    pub fn message_len(&self) -> usize {
        COMMON_HEADER_LEN + 4 * usize::from(self.payload_words)
    }
}

/// Why a BFCP message could not be framed, decoded or encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BfcpError {
    /// Fewer than 12 octets, or fewer than the header announces.
    Truncated,
    /// Ver is neither 1 nor 2.
    UnsupportedVersion(u8),
    /// The F bit is set: fragmentation (UDP only) is not supported.
    Fragmented,
    /// The buffer is not exactly the length the header announces.
    IncorrectLength,
    /// A message longer than the framer accepts.
    TooLarge(usize),
    /// An unknown primitive value.
    UnknownPrimitive(u8),
    /// An unknown attribute with the M bit set (its type).
    UnknownMandatoryAttribute(u8),
    /// A structural error (the reason).
    Malformed(&'static str),
    /// An attribute too long for its 8-bit length field (encoding).
    AttributeTooLong,
    /// A message too long for its 16-bit length field (encoding).
    MessageTooLong,
}

impl BfcpError {
    /// A reason phrase.
    pub fn reason(&self) -> &'static str {
        match self {
            BfcpError::Truncated => "truncated message",
            BfcpError::UnsupportedVersion(_) => "unsupported version",
            BfcpError::Fragmented => "fragmented message",
            BfcpError::IncorrectLength => "incorrect message length",
            BfcpError::TooLarge(_) => "message too large",
            BfcpError::UnknownPrimitive(_) => "unknown primitive",
            BfcpError::UnknownMandatoryAttribute(_) => "unknown mandatory attribute",
            BfcpError::Malformed(r) => r,
            BfcpError::AttributeTooLong => "attribute too long",
            BfcpError::MessageTooLong => "message too long",
        }
    }

    /// The ERROR-CODE (and details) an Error answering this decoding failure carries (RFC 8855
    /// §13.1); `None` for encoding errors.
    pub fn error_code(&self) -> Option<(ErrorCode, Bytes)> {
        let code = match self {
            BfcpError::UnsupportedVersion(_) => ErrorCode::UNSUPPORTED_VERSION,
            BfcpError::IncorrectLength | BfcpError::Truncated | BfcpError::TooLarge(_) => {
                ErrorCode::INCORRECT_MESSAGE_LENGTH
            }
            BfcpError::UnknownPrimitive(_) => ErrorCode::UNKNOWN_PRIMITIVE,
            BfcpError::UnknownMandatoryAttribute(t) => {
                return Some((
                    ErrorCode::UNKNOWN_MANDATORY_ATTRIBUTE,
                    Bytes::copy_from_slice(&[t << 1]),
                ))
            }
            BfcpError::Fragmented | BfcpError::Malformed(_) => ErrorCode::UNABLE_TO_PARSE,
            BfcpError::AttributeTooLong | BfcpError::MessageTooLong => return None,
        };
        Some((code, Bytes::new()))
    }
}

impl fmt::Display for BfcpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for BfcpError {}

/// Splits a TCP byte stream into BFCP messages by the header's Payload Length (RFC 8855
/// §6.2). Feed received bytes with [`Framer::push`], take messages with [`Framer::next_message`].
/// After an error the stream cannot be resynchronised: the connection is to be closed.
#[derive(Debug)]
pub struct Framer {
    buf: BytesMut,
    max_message: usize,
    failed: bool,
}

impl Default for Framer {
    fn default() -> Self {
        Framer::new(DEFAULT_MAX_MESSAGE)
    }
}

impl Framer {
    /// A framer accepting messages up to `max_message` octets.
    pub fn new(max_message: usize) -> Framer {
        Framer {
            buf: BytesMut::new(),
            max_message: max_message.max(COMMON_HEADER_LEN),
            failed: false,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        if !self.failed {
            self.buf.extend_from_slice(data);
        }
    }

    /// The bytes buffered and not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete message's bytes, `Ok(None)` when more bytes are needed. A header with
    /// a bad version or too large a length is an error; the framer then yields nothing more.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, BfcpError> {
        if self.failed {
            return Ok(None);
        }
        if self.buf.len() < COMMON_HEADER_LEN {
            return Ok(None);
        }
        let h = match Header::decode(&self.buf) {
            Ok(h) => h,
            Err(e) => return self.fail(e),
        };
        let len = h.message_len();
        if len > self.max_message {
            return self.fail(BfcpError::TooLarge(len));
        }
        if self.buf.len() < len {
            self.buf.reserve(len - self.buf.len());
            return Ok(None);
        }
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// The next complete message, decoded. A message that frames but does not decode is an
    /// `Err` without stopping the framer (its header is still readable for the Error reply).
    pub fn next_message(&mut self) -> Option<Result<Message, (Bytes, BfcpError)>> {
        match self.next_frame() {
            Ok(None) => None,
            Ok(Some(frame)) => Some(Message::decode(frame.clone()).map_err(|e| (frame, e))),
            Err(e) => Some(Err((Bytes::new(), e))),
        }
    }

    fn fail(&mut self, e: BfcpError) -> Result<Option<Bytes>, BfcpError> {
        self.failed = true;
        self.buf.clear();
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frq_info() -> Attribute {
        Attribute::FloorRequestInformation(Group {
            id: 7,
            attrs: vec![
                Attribute::OverallRequestStatus(Group {
                    id: 7,
                    attrs: vec![
                        Attribute::RequestStatus {
                            status: RequestStatus::Pending,
                            queue_position: 2,
                        },
                        Attribute::StatusInfo(Bytes::from_static(b"queued")),
                    ],
                }),
                Attribute::FloorRequestStatus(Group {
                    id: 1,
                    attrs: vec![],
                }),
                Attribute::BeneficiaryInformation(Group {
                    id: 3,
                    attrs: vec![
                        Attribute::UserDisplayName(Bytes::from_static(b"Bob")),
                        Attribute::UserUri(Bytes::from_static(b"sip:bob@example.com")),
                    ],
                }),
                Attribute::RequestedByInformation(Group {
                    id: 3,
                    attrs: vec![],
                }),
                Attribute::Priority(2),
                Attribute::ParticipantProvidedInfo(Bytes::from_static(b"pls")),
            ],
        })
    }

    /// One message of every primitive the participant and the server exchange.
    fn samples() -> Vec<Message> {
        use Primitive::*;
        let m = |p| Message::new(p, 0x0102_0304, 0x0506, 0x0708);
        vec![
            m(FloorRequest)
                .with(Attribute::FloorId(1))
                .with(Attribute::BeneficiaryId(9))
                .with(Attribute::Priority(4)),
            m(FloorRelease).with(Attribute::FloorRequestId(7)),
            m(FloorRequestQuery).with(Attribute::FloorRequestId(7)),
            m(FloorRequestStatus).with(frq_info()),
            m(FloorQuery).with(Attribute::FloorId(1)),
            m(FloorStatus).with(Attribute::FloorId(1)).with(frq_info()),
            m(Hello),
            m(HelloAck)
                .with(Attribute::SupportedPrimitives(vec![
                    1, 2, 3, 4, 7, 8, 11, 12, 13, 16, 17,
                ]))
                .with(Attribute::SupportedAttributes((1..=18).collect())),
            m(Error)
                .with(Attribute::ErrorCode {
                    code: ErrorCode::UNKNOWN_MANDATORY_ATTRIBUTE,
                    details: Bytes::from_static(&[0x62]),
                })
                .with(Attribute::ErrorInfo(Bytes::from_static(b"what is 49?"))),
            m(Goodbye),
            m(GoodbyeAck),
        ]
    }

    #[test]
    fn every_primitive_round_trips() {
        for msg in samples() {
            let bytes = msg.to_bytes().unwrap();
            assert_eq!(bytes.len() % 4, 0, "{:?}", msg.primitive);
            let back = Message::decode(bytes.clone()).unwrap();
            assert_eq!(back, msg);
            assert_eq!(back.to_bytes().unwrap(), bytes);
        }
    }

    #[test]
    fn encoding_is_byte_exact() {
        let bytes = Message::new(Primitive::FloorRequest, 1, 2, 3)
            .with(Attribute::FloorId(1))
            .with(Attribute::UserUri(Bytes::from_static(b"sip:a")))
            .to_bytes()
            .unwrap();
        #[rustfmt::skip]
        let expected: &[u8] = &[
            0x20, 1, 0, 3,                                  // ver 1, FloorRequest, 3 words
            0, 0, 0, 1, 0, 2, 0, 3,                         // conf 1, tid 2, user 3
            2 << 1, 4, 0, 1,                                // FLOOR-ID 1
            13 << 1, 7, b's', b'i', b'p', b':', b'a', 0,    // USER-URI, padded
        ];
        assert_eq!(&bytes[..], expected);
        let status = Message::new(Primitive::FloorRequestStatus, 1, 0, 3)
            .with(Attribute::FloorRequestInformation(Group {
                id: 5,
                attrs: vec![Attribute::RequestStatus {
                    status: RequestStatus::Granted,
                    queue_position: 0,
                }],
            }))
            .to_bytes()
            .unwrap();
        assert_eq!(
            &status[12..],
            &[15 << 1, 8, 0, 5, 5 << 1, 4, 3, 0][..],
            "grouped length covers the nested attribute"
        );
    }

    #[test]
    fn truncated_and_garbage_input_are_errors() {
        let good = samples()[3].to_bytes().unwrap();
        for cut in 0..good.len() {
            assert!(Message::decode(good.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut bad_version = BytesMut::from(&good[..]);
        bad_version[0] = 0x60;
        assert_eq!(
            Message::decode(bad_version.freeze()),
            Err(BfcpError::UnsupportedVersion(3))
        );
        let mut bad_prim = BytesMut::from(&good[..]);
        bad_prim[1] = 99;
        assert_eq!(
            Message::decode(bad_prim.freeze()),
            Err(BfcpError::UnknownPrimitive(99))
        );
        // An attribute claiming more than the message holds.
        let mut over = BytesMut::from(&good[..]);
        over[13] = 200;
        assert!(matches!(
            Message::decode(over.freeze()),
            Err(BfcpError::Malformed(_))
        ));
        // Unknown attribute 49 with the M bit: error 4 naming it; without: kept.
        let mut m =
            BytesMut::from(&[0x20, 11, 0, 1, 0, 0, 0, 1, 0, 1, 0, 1, 49 << 1 | 1, 2, 0, 0][..]);
        let e = Message::decode(m.clone().freeze()).unwrap_err();
        assert_eq!(e, BfcpError::UnknownMandatoryAttribute(49));
        assert_eq!(
            e.error_code(),
            Some((
                ErrorCode::UNKNOWN_MANDATORY_ATTRIBUTE,
                Bytes::from_static(&[98])
            ))
        );
        m[12] = 49 << 1;
        let ok = Message::decode(m.freeze()).unwrap();
        assert_eq!(ok.attrs[0].kind(), 49);
        // A group whose last attribute lacks its padding.
        let unpadded = [
            0x20,
            8,
            0,
            2,
            0,
            0,
            0,
            1,
            0,
            0,
            0,
            1,
            17 << 1,
            7,
            0,
            1,
            12 << 1,
            3,
            b'x',
            0,
        ];
        assert_eq!(
            Message::decode(Bytes::copy_from_slice(&unpadded)),
            Err(BfcpError::Malformed("attribute padding missing"))
        );
        // Nesting beyond the limit.
        let mut deep = BytesMut::new();
        let mut inner = Attribute::FloorRequestStatus(Group::default());
        for _ in 0..6 {
            inner = Attribute::FloorRequestInformation(Group {
                id: 1,
                attrs: vec![inner],
            });
        }
        Message::new(Primitive::FloorStatus, 1, 1, 1)
            .with(inner)
            .encode(&mut deep)
            .unwrap();
        assert!(matches!(
            Message::decode(deep.freeze()),
            Err(BfcpError::Malformed(_))
        ));
    }

    #[test]
    fn oversized_attribute_is_refused_when_encoding() {
        let long = Bytes::from(vec![b'x'; 300]);
        let mut buf = BytesMut::from(&b"keep"[..]);
        let e = Message::new(Primitive::Error, 1, 1, 1)
            .with(Attribute::ErrorInfo(long))
            .encode(&mut buf);
        assert_eq!(e, Err(BfcpError::AttributeTooLong));
        assert_eq!(&buf[..], b"keep", "nothing half-written");
    }

    #[test]
    fn framer_reassembles_split_reads() {
        let msgs = samples();
        let mut stream = BytesMut::new();
        for m in &msgs {
            m.encode(&mut stream).unwrap();
        }
        for chunk in [1, 3, 7, 13, 64] {
            let mut f = Framer::default();
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                f.push(piece);
                while let Some(r) = f.next_message() {
                    got.push(r.unwrap());
                }
            }
            assert_eq!(got, msgs, "chunk {chunk}");
            assert_eq!(f.buffered(), 0);
        }
    }

    #[test]
    fn framer_rejects_bad_headers_and_oversize() {
        let mut f = Framer::new(64);
        f.push(&[0x20, 1, 0x01, 0x00, 0, 0, 0, 1, 0, 1, 0, 1]);
        assert_eq!(f.next_frame(), Err(BfcpError::TooLarge(12 + 1024)));
        f.push(&[0; 40]);
        assert_eq!(
            f.next_frame(),
            Ok(None),
            "a failed stream yields nothing more"
        );
        let mut f = Framer::default();
        f.push(b"INVITE sip:x SIP/2.0\r\n");
        assert!(f.next_frame().is_err());
        // A frame that does not decode keeps the framer going.
        let mut f = Framer::default();
        f.push(&[0x20, 99, 0, 0, 0, 0, 0, 1, 0, 1, 0, 1]);
        samples()[6].encode(&mut BytesMut::new()).unwrap();
        f.push(&samples()[6].to_bytes().unwrap());
        let (frame, e) = f.next_message().unwrap().unwrap_err();
        assert_eq!(e, BfcpError::UnknownPrimitive(99));
        assert_eq!(Header::decode(&frame).unwrap().user_id, 1);
        assert_eq!(
            f.next_message().unwrap().unwrap().primitive,
            Primitive::Hello
        );
    }
}
