//! Floor control on virtual time: grant, queue, release, cancel, revoke, leave, and the BFCP
//! exchange a participant sees.

use super::*;

const A: ParticipantId = ParticipantId(1);
const B: ParticipantId = ParticipantId(2);
const C: ParticipantId = ParticipantId(3);

fn setup() -> (FloorControl, Instant) {
    let mut f = FloorControl::new(FloorConfig {
        conference_id: 77,
        floor_id: 1,
        max_talk_time: Some(Duration::from_secs(10)),
    });
    for (p, uid) in [(A, 101), (B, 102), (C, 103)] {
        f.add_participant(p, uid);
    }
    (f, Instant::now())
}

fn events(f: &mut FloorControl) -> Vec<FloorEvent> {
    std::iter::from_fn(|| f.poll_event()).collect()
}

fn transmits(f: &mut FloorControl) -> Vec<(ParticipantId, Message)> {
    std::iter::from_fn(|| f.poll_transmit()).collect()
}

/// The (request id, status, queue position) of a FloorRequestStatus / FLOOR-REQUEST-INFORMATION.
fn status_of(a: &Attribute) -> (u16, RequestStatus, u8) {
    let Attribute::FloorRequestInformation(g) = a else {
        panic!("not FLOOR-REQUEST-INFORMATION: {a:?}")
    };
    let overall = g.attrs.iter().find_map(|a| match a {
        Attribute::OverallRequestStatus(o) => Some(o),
        _ => None,
    });
    match overall.and_then(|o| o.attrs.first()) {
        Some(Attribute::RequestStatus {
            status,
            queue_position,
        }) => (g.id, *status, *queue_position),
        other => panic!("no status: {other:?}"),
    }
}

fn request_statuses(tx: &[(ParticipantId, Message)]) -> Vec<(ParticipantId, RequestStatus, u8)> {
    tx.iter()
        .filter(|(_, m)| m.primitive == Primitive::FloorRequestStatus)
        .map(|(p, m)| {
            let (_, s, q) = status_of(&m.attrs[0]);
            (*p, s, q)
        })
        .collect()
}

#[test]
fn grant_queue_release_in_fifo_order() {
    let (mut f, t0) = setup();
    f.request(t0, A).unwrap();
    f.request(t0, B).unwrap();
    f.request(t0, C).unwrap();
    assert_eq!(
        events(&mut f),
        vec![
            FloorEvent::Granted(A),
            FloorEvent::Queued(B, 1),
            FloorEvent::Queued(C, 2)
        ]
    );
    assert!(f.may_talk(A) && !f.may_talk(B));
    assert_eq!(f.request(t0, B), Err(FloorError::AlreadyRequested));
    transmits(&mut f);

    f.release(t0 + Duration::from_secs(2), A).unwrap();
    assert_eq!(
        events(&mut f),
        vec![FloorEvent::Released(A), FloorEvent::Granted(B)]
    );
    assert_eq!(
        request_statuses(&transmits(&mut f)),
        vec![
            (A, RequestStatus::Released, 0),
            (B, RequestStatus::Granted, 0),
            (C, RequestStatus::Pending, 1),
        ]
    );
    assert_eq!(f.queue_position(C), Some(1));
    assert_eq!(f.release(t0, A), Err(FloorError::NoSuchRequest));
}

#[test]
fn max_talk_time_revokes_and_grants_the_next() {
    let (mut f, t0) = setup();
    assert_eq!(f.next_deadline(), None);
    f.request(t0, A).unwrap();
    let t1 = t0 + Duration::from_secs(4);
    f.request(t1, B).unwrap();
    assert_eq!(f.next_deadline(), Some(t0 + Duration::from_secs(10)));
    events(&mut f);
    transmits(&mut f);

    f.handle_timeout(t0 + Duration::from_millis(9_999));
    assert!(events(&mut f).is_empty(), "not yet");
    f.handle_timeout(t0 + Duration::from_secs(10));
    assert_eq!(
        events(&mut f),
        vec![FloorEvent::Revoked(A), FloorEvent::Granted(B)]
    );
    assert_eq!(
        request_statuses(&transmits(&mut f)),
        vec![
            (A, RequestStatus::Revoked, 0),
            (B, RequestStatus::Granted, 0)
        ]
    );
    // B's talk time counts from its grant, not its request.
    assert_eq!(f.next_deadline(), Some(t0 + Duration::from_secs(20)));
    let unlimited = FloorControl::new(FloorConfig {
        max_talk_time: None,
        ..FloorConfig::default()
    });
    assert_eq!(unlimited.next_deadline(), None);
}

#[test]
fn cancel_and_leave_withdraw_requests() {
    let (mut f, t0) = setup();
    f.request(t0, A).unwrap();
    f.request(t0, B).unwrap();
    f.request(t0, C).unwrap();
    events(&mut f);
    transmits(&mut f);
    // B cancels while queued: C moves up.
    f.release(t0, B).unwrap();
    assert_eq!(events(&mut f), vec![FloorEvent::Cancelled(B)]);
    assert_eq!(
        request_statuses(&transmits(&mut f)),
        vec![
            (B, RequestStatus::Cancelled, 0),
            (C, RequestStatus::Pending, 1)
        ]
    );
    // The holder leaves: released, C granted.
    f.remove_participant(t0, A);
    assert_eq!(
        events(&mut f),
        vec![FloorEvent::Released(A), FloorEvent::Granted(C)]
    );
    assert_eq!(f.request(t0, A), Err(FloorError::UnknownParticipant));
    // A queued participant leaves: cancelled.
    f.request(t0, B).unwrap();
    events(&mut f);
    f.remove_participant(t0, B);
    assert_eq!(events(&mut f), vec![FloorEvent::Cancelled(B)]);
    assert_eq!(f.holder(), Some(C));
    assert_eq!(f.queue().count(), 0);
}

/// A participant's BFCP session: Hello, FloorQuery subscription, FloorRequest, FloorRelease.
#[test]
fn bfcp_exchange() {
    let (mut f, t0) = setup();
    let msg = |p, tid| Message::new(p, 77, tid, 102);

    f.handle_message(t0, B, &msg(Primitive::Hello, 1));
    let tx = transmits(&mut f);
    assert_eq!(tx.len(), 1);
    assert_eq!((tx[0].0, tx[0].1.primitive), (B, Primitive::HelloAck));
    assert_eq!(tx[0].1.transaction_id, 1);

    f.handle_message(
        t0,
        B,
        &msg(Primitive::FloorQuery, 2).with(Attribute::FloorId(1)),
    );
    let tx = transmits(&mut f);
    assert_eq!(tx[0].1.primitive, Primitive::FloorStatus);
    assert_eq!(tx[0].1.transaction_id, 2);
    assert_eq!(tx[0].1.attrs, vec![Attribute::FloorId(1)], "floor free");

    // A takes the floor through the API: B (subscribed) gets a FloorStatus with tid 0.
    f.request(t0, A).unwrap();
    let tx = transmits(&mut f);
    let to_b: Vec<_> = tx.iter().filter(|(p, _)| *p == B).collect();
    assert_eq!(to_b.len(), 1);
    assert_eq!(to_b[0].1.primitive, Primitive::FloorStatus);
    assert_eq!(to_b[0].1.transaction_id, 0);
    assert_eq!(status_of(&to_b[0].1.attrs[1]).1, RequestStatus::Granted);

    // B requests over BFCP: the answer carries its transaction id and queue position 1.
    f.handle_message(
        t0,
        B,
        &msg(Primitive::FloorRequest, 3).with(Attribute::FloorId(1)),
    );
    let tx = transmits(&mut f);
    let (_, frs) = tx
        .iter()
        .find(|(p, m)| *p == B && m.primitive == Primitive::FloorRequestStatus)
        .unwrap();
    assert_eq!(frs.transaction_id, 3);
    let (req_id, status, pos) = status_of(&frs.attrs[0]);
    assert_eq!((status, pos), (RequestStatus::Pending, 1));

    // FloorRequestQuery answers the same; FloorRelease by B cancels it.
    f.handle_message(
        t0,
        B,
        &msg(Primitive::FloorRequestQuery, 4).with(Attribute::FloorRequestId(req_id)),
    );
    let tx = transmits(&mut f);
    assert_eq!(
        status_of(&tx[0].1.attrs[0]),
        (req_id, RequestStatus::Pending, 1)
    );
    f.handle_message(
        t0,
        B,
        &msg(Primitive::FloorRelease, 5).with(Attribute::FloorRequestId(req_id)),
    );
    let tx = transmits(&mut f);
    assert_eq!(tx[0].1.transaction_id, 5);
    assert_eq!(status_of(&tx[0].1.attrs[0]).1, RequestStatus::Cancelled);
    events(&mut f);

    // Goodbye: acknowledged, and no more FloorStatus to B.
    f.handle_message(t0, B, &msg(Primitive::Goodbye, 6));
    assert_eq!(transmits(&mut f)[0].1.primitive, Primitive::GoodbyeAck);
    f.release(t0, A).unwrap();
    assert!(transmits(&mut f).iter().all(|(p, _)| *p != B));

    // Every message the server produced encodes and decodes back.
    f.request(t0, A).unwrap();
    f.request(t0, C).unwrap();
    for (_, m) in transmits(&mut f) {
        assert_eq!(Message::decode(m.to_bytes().unwrap()).unwrap(), m);
    }
}

fn error_code(tx: &[(ParticipantId, Message)]) -> ErrorCode {
    let (_, m) = tx.last().expect("a reply");
    assert_eq!(m.primitive, Primitive::Error);
    match &m.attrs[0] {
        Attribute::ErrorCode { code, .. } => *code,
        a => panic!("{a:?}"),
    }
}

#[test]
fn bfcp_errors() {
    let (mut f, t0) = setup();
    let msg = |p, conf, user| Message::new(p, conf, 9, user);
    let cases = [
        (
            msg(Primitive::Hello, 78, 101),
            ErrorCode::CONFERENCE_DOES_NOT_EXIST,
        ),
        (
            msg(Primitive::Hello, 77, 102),
            ErrorCode::USER_DOES_NOT_EXIST,
        ),
        (
            msg(Primitive::FloorRequest, 77, 101),
            ErrorCode::INVALID_FLOOR_ID,
        ),
        (
            msg(Primitive::FloorRequest, 77, 101).with(Attribute::FloorId(2)),
            ErrorCode::INVALID_FLOOR_ID,
        ),
        (
            msg(Primitive::FloorRequest, 77, 101)
                .with(Attribute::FloorId(1))
                .with(Attribute::BeneficiaryId(102)),
            ErrorCode::UNAUTHORIZED_OPERATION,
        ),
        (
            msg(Primitive::FloorRelease, 77, 101).with(Attribute::FloorRequestId(999)),
            ErrorCode::FLOOR_REQUEST_ID_DOES_NOT_EXIST,
        ),
        (
            msg(Primitive::ChairAction, 77, 101),
            ErrorCode::UNKNOWN_PRIMITIVE,
        ),
    ];
    for (m, code) in cases {
        f.handle_message(t0, A, &m);
        let tx = transmits(&mut f);
        assert_eq!(error_code(&tx), code, "{m:?}");
        assert_eq!(tx.last().unwrap().1.transaction_id, 9);
    }
    // Twice the same request; releasing someone else's.
    let req = msg(Primitive::FloorRequest, 77, 101).with(Attribute::FloorId(1));
    f.handle_message(t0, A, &req);
    f.handle_message(t0, A, &req);
    assert_eq!(
        error_code(&transmits(&mut f)),
        ErrorCode::MAX_FLOOR_REQUESTS_REACHED
    );
    let id = f.find_request(1).unwrap().id;
    f.handle_message(
        t0,
        B,
        &msg(Primitive::FloorRelease, 77, 102).with(Attribute::FloorRequestId(id)),
    );
    assert_eq!(
        error_code(&transmits(&mut f)),
        ErrorCode::UNAUTHORIZED_OPERATION
    );
    assert_eq!(f.holder(), Some(A));

    // Undecodable frames: answered when the header is readable.
    let mut bad = msg(Primitive::Hello, 77, 101).to_bytes().unwrap().to_vec();
    bad[1] = 200;
    f.handle_frame(t0, A, Bytes::from(bad));
    assert_eq!(error_code(&transmits(&mut f)), ErrorCode::UNKNOWN_PRIMITIVE);
    f.handle_frame(t0, A, Bytes::from_static(b"garbage"));
    assert!(transmits(&mut f).is_empty());
}
