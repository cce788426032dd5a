//! The agent protocol decoder on arbitrary bytes: `proto::decode::<Request>` and
//! `::<Response>`, and `read_frame` over an in-memory reader (whole, and one byte per
//! read) on a current-thread tokio runtime.
//!
//! Never panics; the consumed length is at most the input; a decoded control message
//! re-encodes to a frame that decodes to the same value; a raw frame re-encodes to the
//! exact bytes it came from; `read_frame` agrees with `decode` frame by frame.
#![no_main]

use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use boxsock_core::proto::{Frame, ProtoError, Request, Response, decode, encode, read_frame};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, ReadBuf};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().build().expect("runtime"))
}

/// A reader that hands out at most `chunk` bytes per read, to exercise partial reads.
struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let n = self.chunk.min(buf.remaining()).min(self.data.len());
        buf.put_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(()))
    }
}

/// A comparable summary of a decode error (`ProtoError` is not `PartialEq`).
fn kind(e: &ProtoError) -> String {
    match e {
        ProtoError::BadLength { len } => format!("bad length {len}"),
        ProtoError::BadTag(t) => format!("bad tag {t}"),
        ProtoError::BadJson(_) => "bad json".into(),
        ProtoError::Truncated => "truncated".into(),
        ProtoError::Closed => "closed".into(),
        ProtoError::Io(e) => format!("io {e}"),
    }
}

fn check<M>(data: &[u8])
where
    M: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    // Decode frames back to back, as a connection would, and read the same bytes with
    // read_frame through a whole-buffer reader and a one-byte-per-read reader.
    let mut at = 0;
    let mut whole = Chunked { data, chunk: usize::MAX };
    let mut bytewise = Chunked { data, chunk: 1 };
    loop {
        let rest = &data[at..];
        let decoded = decode::<M>(rest);
        let read_whole = runtime().block_on(read_frame::<M, _>(&mut whole));
        let read_bytewise = runtime().block_on(read_frame::<M, _>(&mut bytewise));
        match (&read_whole, &read_bytewise) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(a), Err(b)) => assert_eq!(kind(a), kind(b)),
            (a, b) => panic!("chunking changed the result: {a:?} vs {b:?}"),
        }
        match decoded {
            Ok(Some((frame, used))) => {
                assert!(used >= 5 && used <= rest.len(), "used {used} of {}", rest.len());
                assert_eq!(read_whole.as_ref().ok(), Some(&frame), "read_frame disagrees with decode");
                let again = encode(&frame);
                match &frame {
                    Frame::Control(m) => {
                        let (back, n) = decode::<M>(&again).expect("re-encoded frame decodes").expect("whole frame");
                        assert_eq!(n, again.len());
                        assert!(matches!(&back, Frame::Control(b) if b == m), "control message does not survive re-encoding: {m:?} became {back:?}");
                    }
                    _ => assert_eq!(again, &rest[..used], "raw frame does not re-encode to its bytes"),
                }
                at += used;
                assert_eq!(whole.data.len(), data.len() - at);
            }
            Ok(None) => {
                // Not a whole frame yet: the reader sees a close, clean or mid-frame.
                let want = if rest.is_empty() { "closed" } else { "truncated" };
                let got = read_whole.as_ref().map_err(kind);
                assert_eq!(got.err().as_deref(), Some(want), "at {at} of {}", data.len());
                return;
            }
            Err(e) => {
                let msg = e.to_string();
                assert!(!msg.is_empty());
                let got = read_whole.as_ref().map_err(kind);
                assert_eq!(got.err(), Some(kind(&e)), "read_frame disagrees with decode error {msg}");
                return;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check::<Request>(data);
    check::<Response>(data);
});
