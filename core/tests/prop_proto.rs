//! Property tests for the agent protocol: `encode` → `decode` (and `read_frame`)
//! round-trips arbitrary control messages and raw frames, alone and back to back; the
//! decoder never panics on arbitrary or mutated bytes and never claims more bytes than
//! it was given; a cut frame is "not yet" for `decode` and "truncated" for
//! `read_frame`; a message of one direction never decodes as the other.

use boxsock_core::proto::{
    ErrorCode, Frame, MAX_FRAME, ProtoError, Request, Response, Rlimit, WinSize, decode, encode,
    read_frame,
};
use proptest::prelude::*;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "\\PC{0,20}", Just(String::new()), ".{200,2000}"]
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        any::<u32>().prop_map(|version| Request::Hello { version }),
        Just(Request::Ping {}),
        (
            proptest::collection::vec(text(), 0..6),
            proptest::collection::vec((text(), text()), 0..4),
            any::<bool>(),
            proptest::option::of(text()),
            any::<bool>(),
            proptest::option::of(
                (any::<u16>(), any::<u16>()).prop_map(|(rows, cols)| WinSize { rows, cols })
            ),
            proptest::option::of(text()),
            proptest::collection::vec(
                (text(), any::<u64>(), any::<u64>()).prop_map(|(resource, soft, hard)| Rlimit {
                    resource,
                    soft,
                    hard
                }),
                0..3,
            ),
        )
            .prop_map(|(argv, env, stdin, cwd, tty, winsize, user, rlimits)| {
                Request::Exec { argv, env, stdin, cwd, tty, winsize, user, rlimits }
            }),
        any::<i32>().prop_map(|signal| Request::Signal { signal }),
        (any::<u16>(), any::<u16>()).prop_map(|(rows, cols)| Request::Resize { rows, cols }),
        Just(Request::Shutdown {}),
    ]
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    proptest::sample::select(
        &[
            ErrorCode::Version,
            ErrorCode::BadFrame,
            ErrorCode::BadRequest,
            ErrorCode::Spawn,
            ErrorCode::NotFound,
            ErrorCode::PermissionDenied,
            ErrorCode::Internal,
        ][..],
    )
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        (any::<u32>(), any::<u32>()).prop_map(|(version, pid)| Response::Hello { version, pid }),
        (any::<u32>(), any::<u32>()).prop_map(|(version, pid)| Response::Ready { version, pid }),
        Just(Response::Pong {}),
        (any::<i32>(), proptest::option::of(any::<i32>()))
            .prop_map(|(code, signal)| Response::Exit { code, signal }),
        Just(Response::ShuttingDown {}),
        (error_code(), text()).prop_map(|(code, message)| Response::Error { code, message }),
    ]
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..600)
}

fn frame<M: std::fmt::Debug + Clone + 'static>(
    control: impl Strategy<Value = M> + 'static,
) -> impl Strategy<Value = Frame<M>> {
    prop_oneof![
        3 => control.prop_map(Frame::Control),
        1 => bytes().prop_map(Frame::Stdout),
        1 => bytes().prop_map(Frame::Stderr),
        1 => bytes().prop_map(Frame::Stdin),
        1 => Just(Frame::StdinEof),
    ]
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().expect("runtime")
}

/// decode never panics, never uses more than it was given, and read_frame agrees.
fn decode_is_total<M>(buf: &[u8]) -> Result<(), TestCaseError>
where
    M: for<'de> serde::Deserialize<'de> + std::fmt::Debug + PartialEq,
{
    let got = decode::<M>(buf);
    let mut r = buf;
    let read = rt().block_on(read_frame::<M, _>(&mut r));
    match got {
        Ok(Some((f, used))) => {
            prop_assert!((5..=buf.len()).contains(&used), "used {} of {}", used, buf.len());
            prop_assert_eq!(read.ok(), Some(f));
            prop_assert_eq!(r.len(), buf.len() - used);
        }
        Ok(None) => {
            prop_assert!(
                buf.len() < 4
                    || 4 + u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize
                        > buf.len()
            );
            prop_assert!(
                matches!(read, Err(ProtoError::Closed | ProtoError::Truncated)),
                "{:?}",
                read
            );
        }
        Err(e) => {
            prop_assert!(!e.to_string().is_empty());
            let same = matches!(
                (&e, &read),
                (ProtoError::BadLength { .. }, Err(ProtoError::BadLength { .. }))
                    | (ProtoError::BadTag(_), Err(ProtoError::BadTag(_)))
                    | (ProtoError::BadJson(_), Err(ProtoError::BadJson(_)))
            );
            prop_assert!(same, "decode {:?} but read_frame {:?}", e, read);
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn request_frames_round_trip(f in frame(request())) {
        let buf = encode(&f);
        let (g, used) = decode::<Request>(&buf).expect("decodes").expect("whole");
        prop_assert_eq!(used, buf.len());
        prop_assert_eq!(&g, &f);
        let mut r = &buf[..];
        prop_assert_eq!(rt().block_on(read_frame::<Request, _>(&mut r)).expect("reads"), f);
    }

    #[test]
    fn response_frames_round_trip(f in frame(response())) {
        let buf = encode(&f);
        let (g, used) = decode::<Response>(&buf).expect("decodes").expect("whole");
        prop_assert_eq!(used, buf.len());
        prop_assert_eq!(&g, &f);
        let mut r = &buf[..];
        prop_assert_eq!(rt().block_on(read_frame::<Response, _>(&mut r)).expect("reads"), f);
    }

    #[test]
    fn streams_of_frames_decode_in_order(frames in proptest::collection::vec(frame(response()), 0..8)) {
        let buf: Vec<u8> = frames.iter().flat_map(encode).collect();
        let mut at = 0;
        let mut r = &buf[..];
        let rt = rt();
        for f in &frames {
            let (g, used) = decode::<Response>(&buf[at..]).expect("decodes").expect("whole");
            prop_assert_eq!(&g, f);
            prop_assert_eq!(&rt.block_on(read_frame::<Response, _>(&mut r)).expect("reads"), f);
            at += used;
        }
        prop_assert_eq!(at, buf.len());
        prop_assert!(decode::<Response>(&buf[at..]).expect("empty is fine").is_none());
        prop_assert!(matches!(rt.block_on(read_frame::<Response, _>(&mut r)), Err(ProtoError::Closed)));
    }

    #[test]
    fn a_cut_frame_is_not_yet_a_frame(f in frame(request()), cut in any::<proptest::sample::Index>()) {
        let buf = encode(&f);
        let n = cut.index(buf.len()); // 0..len: always short
        prop_assert!(decode::<Request>(&buf[..n]).expect("no error on a prefix").is_none());
        let mut r = &buf[..n];
        let read = rt().block_on(read_frame::<Request, _>(&mut r));
        if n == 0 {
            prop_assert!(matches!(read, Err(ProtoError::Closed)), "{:?}", read);
        } else {
            prop_assert!(matches!(read, Err(ProtoError::Truncated)), "{:?}", read);
        }
    }

    #[test]
    fn directions_never_mix(req in request(), resp in response()) {
        let as_resp = decode::<Response>(&encode(&Frame::Control(req.clone())));
        prop_assert!(matches!(as_resp, Err(ProtoError::BadJson(_))), "{:?} decoded as {:?}", req, as_resp);
        let as_req = decode::<Request>(&encode(&Frame::Control(resp.clone())));
        prop_assert!(matches!(as_req, Err(ProtoError::BadJson(_))), "{:?} decoded as {:?}", resp, as_req);
    }

    #[test]
    fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..2000)) {
        decode_is_total::<Request>(&buf)?;
        decode_is_total::<Response>(&buf)?;
    }

    #[test]
    fn mutated_frames_never_panic(
        frames in proptest::collection::vec(frame(request()), 1..4),
        flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut buf: Vec<u8> = frames.iter().flat_map(encode).collect();
        for (i, b) in flips {
            let i = i.index(buf.len());
            buf[i] = b;
        }
        decode_is_total::<Request>(&buf)?;
        decode_is_total::<Response>(&buf)?;
    }

    #[test]
    fn oversized_lengths_are_refused_before_reading(len in (MAX_FRAME as u32 + 1)..=u32::MAX, tail in bytes()) {
        let mut buf = len.to_be_bytes().to_vec();
        buf.extend(tail);
        let got = decode::<Request>(&buf);
        prop_assert!(matches!(got, Err(ProtoError::BadLength { len: l }) if l == len as u64), "{:?}", got);
        let mut r = &buf[..];
        let read = rt().block_on(read_frame::<Request, _>(&mut r));
        prop_assert!(matches!(read, Err(ProtoError::BadLength { .. })), "{:?}", read);
    }
}
