//! The agent protocol: versioned, length-prefixed frames between the runtime and the
//! in-box agent.
//!
//! ```text
//! frame  = len:u32be tag:u8 body[len-1]       (len counts tag + body; 1 ≤ len ≤ MAX_FRAME)
//! tag 1  = control message, body is JSON (Request from the runtime, Response from the agent)
//! tag 2  = stdout chunk (agent → runtime), raw bytes
//! tag 3  = stderr chunk (agent → runtime), raw bytes
//! tag 4  = stdin chunk (runtime → agent), raw bytes
//! tag 5  = stdin end-of-file (runtime → agent), empty body
//! ```
//!
//! A connection starts with `Request::Hello { version }`; the agent answers
//! `Response::Hello` or, on a version it does not speak, `Response::Error` with
//! [`ErrorCode::Version`] (whose message names both versions; the shape of that
//! refusal is the same in every version, so an old client can read it). Then one
//! request per connection: `Ping` → `Pong`; `Exec` → any number of stdout/stderr
//! frames, then `Exit`; `Shutdown` → `ShuttingDown`. While an exec runs the client may
//! send, besides stdin frames, the control messages `Signal` (deliver a signal to the
//! command's process group, or with a tty to the terminal's foreground group) and
//! `Resize` (the tty's window size).
//!
//! Oversized, truncated or malformed frames are answered with an error frame and the
//! connection is closed; decoding never panics.
//!
//! The readiness notification is a single control frame `Response::Ready` sent by the
//! agent on the `ready` socket.

use std::io;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Protocol version spoken by this build.
pub const VERSION: u32 = 2;
/// Largest frame accepted (tag + body), in bytes.
pub const MAX_FRAME: usize = 1 << 20;

/// Runtime → agent control messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// First message of every connection.
    Hello {
        /// The runtime's protocol version.
        version: u32,
    },
    /// Liveness check. (Empty struct variants, not unit variants: serde's
    /// `deny_unknown_fields` only rejects extra fields on struct variants.)
    Ping {},
    /// Run a command. Stdin follows as `Stdin`/`StdinEof` frames when `stdin` is true.
    Exec {
        /// argv; `argv[0]` is looked up on `PATH`.
        argv: Vec<String>,
        /// Extra environment.
        #[serde(default)]
        env: Vec<(String, String)>,
        /// Whether stdin frames follow (otherwise stdin is /dev/null).
        #[serde(default)]
        stdin: bool,
        /// Working directory of the command (absolute; default: the agent's).
        #[serde(default)]
        cwd: Option<String>,
        /// Run the command on a new pty, as the controlling terminal of a new
        /// session: its stdout and stderr arrive merged as stdout frames, stdin
        /// frames are typed into the terminal.
        #[serde(default)]
        tty: bool,
        /// The pty's initial window size (with `tty`; default 24×80).
        #[serde(default)]
        winsize: Option<WinSize>,
        /// Run the command as this user: `uid`, `uid:gid`, `name` or `name:group`,
        /// resolved by the agent against the box's own `/etc/passwd` and `/etc/group`
        /// (docker's rules); default: the agent's own user. Left out of the frame when
        /// unset, so a request without a user still decodes in an agent that predates
        /// the field; a request with one is refused there as malformed (an unknown
        /// field), never run as the agent's user.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        /// Resource limits the command starts with (`setrlimit` in the child before
        /// exec, before any user switch), as an OCI `process.rlimits` gives them. Left
        /// out of the frame when empty, so an agent that predates the field still
        /// decodes every request without limits, and refuses one with them as
        /// malformed rather than run the command without.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        rlimits: Vec<Rlimit>,
    },
    /// During an exec: deliver signal `signal` (a number, e.g. 2 for SIGINT) to the
    /// command's process group, or with a tty to the terminal's foreground group.
    Signal {
        /// The signal number.
        signal: i32,
    },
    /// During an exec with a tty: the new window size (TIOCSWINSZ; the foreground
    /// group gets SIGWINCH from the kernel). Ignored without a tty.
    Resize {
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
    /// Stop the agent (and so the box) gracefully.
    Shutdown {},
}

/// A resource limit for a command ([`Request::Exec`]'s `rlimits`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rlimit {
    /// The resource as `setrlimit(2)` names it: `RLIMIT_NOFILE`, `RLIMIT_NPROC`…
    pub resource: String,
    /// The soft limit (`u64::MAX`: unlimited).
    pub soft: u64,
    /// The hard limit (`u64::MAX`: unlimited).
    pub hard: u64,
}

/// The most resource limits one command takes (Linux has 16 resources).
pub const MAX_RLIMITS: usize = 16;

impl Rlimit {
    /// `setrlimit(2)`'s number for [`Rlimit::resource`]; `None` for a name this system
    /// does not have. The one table of names: the agent sets limits by it, and
    /// `boxsock-oci` checks an engine's against the host with it.
    #[cfg(target_os = "linux")]
    pub fn number(&self) -> Option<libc::c_int> {
        Some(match self.resource.as_str() {
            "RLIMIT_CPU" => libc::RLIMIT_CPU,
            "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
            "RLIMIT_DATA" => libc::RLIMIT_DATA,
            "RLIMIT_STACK" => libc::RLIMIT_STACK,
            "RLIMIT_CORE" => libc::RLIMIT_CORE,
            "RLIMIT_RSS" => libc::RLIMIT_RSS,
            "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
            "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
            "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
            "RLIMIT_AS" => libc::RLIMIT_AS,
            "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
            "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
            "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
            "RLIMIT_NICE" => libc::RLIMIT_NICE,
            "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
            "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
            _ => return None,
        } as libc::c_int)
    }
}

/// Agent → runtime control messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    /// Answer to `Hello`.
    Hello {
        /// The agent's protocol version.
        version: u32,
        /// The agent's pid (in its own pid namespace).
        pid: u32,
    },
    /// Sent once on the `ready` socket when the agent serves requests.
    Ready {
        /// The agent's protocol version.
        version: u32,
        /// The agent's pid.
        pid: u32,
    },
    /// Answer to `Ping`.
    Pong {},
    /// The command ended. `code` is the exit status, or 128 + signal number when
    /// `signal` says a signal killed it.
    Exit {
        /// Exit code (128 + signal when killed by one).
        code: i32,
        /// The signal that killed it, if one did.
        #[serde(default)]
        signal: Option<i32>,
    },
    /// Answer to `Shutdown`.
    ShuttingDown {},
    /// Something went wrong; the connection closes after this.
    Error {
        /// Machine-readable kind.
        code: ErrorCode,
        /// What happened, for a person.
        message: String,
    },
}

/// Kinds of protocol errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Unsupported protocol version.
    Version,
    /// A frame was oversized, truncated or not understood.
    BadFrame,
    /// The request is not valid here (e.g. an empty argv).
    BadRequest,
    /// The command could not be started, for another reason than the two below.
    Spawn,
    /// The command could not be started: it does not exist (ENOENT, also a missing
    /// working directory). A shell reports 127.
    NotFound,
    /// The command could not be started: permission denied or not executable
    /// (EACCES, ENOEXEC). A shell reports 126.
    PermissionDenied,
    /// Anything else.
    Internal,
}

/// A terminal's window size, in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WinSize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

impl Default for WinSize {
    fn default() -> Self {
        WinSize { rows: 24, cols: 80 }
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<M> {
    /// A control message.
    Control(M),
    /// Stdout bytes.
    Stdout(Vec<u8>),
    /// Stderr bytes.
    Stderr(Vec<u8>),
    /// Stdin bytes.
    Stdin(Vec<u8>),
    /// End of stdin.
    StdinEof,
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The declared length is 0 or over [`MAX_FRAME`].
    #[error("frame length {len} is outside 1..={MAX_FRAME}")]
    BadLength {
        /// Declared length.
        len: u64,
    },
    /// Unknown tag byte.
    #[error("unknown frame tag {0}")]
    BadTag(u8),
    /// The control body is not a valid message.
    #[error("malformed control message: {0}")]
    BadJson(String),
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed mid-frame")]
    Truncated,
    /// The peer closed the connection between frames.
    #[error("connection closed")]
    Closed,
    /// Another I/O error.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

const TAG_CONTROL: u8 = 1;
const TAG_STDOUT: u8 = 2;
const TAG_STDERR: u8 = 3;
const TAG_STDIN: u8 = 4;
const TAG_STDIN_EOF: u8 = 5;

/// Encode a frame into bytes.
pub fn encode<M: Serialize>(frame: &Frame<M>) -> Vec<u8> {
    let (tag, body): (u8, std::borrow::Cow<'_, [u8]>) = match frame {
        Frame::Control(m) => {
            (TAG_CONTROL, serde_json::to_vec(m).expect("protocol messages always serialise").into())
        }
        Frame::Stdout(b) => (TAG_STDOUT, b.as_slice().into()),
        Frame::Stderr(b) => (TAG_STDERR, b.as_slice().into()),
        Frame::Stdin(b) => (TAG_STDIN, b.as_slice().into()),
        Frame::StdinEof => (TAG_STDIN_EOF, (&[][..]).into()),
    };
    let len = (body.len() + 1) as u32;
    let mut out = Vec::with_capacity(4 + len as usize);
    out.extend_from_slice(&len.to_be_bytes());
    out.push(tag);
    out.extend_from_slice(&body);
    out
}

/// Decode one frame from the start of `buf`. Returns the frame and the bytes it used,
/// or `Ok(None)` when `buf` does not yet hold a whole frame.
pub fn decode<M: for<'de> Deserialize<'de>>(
    buf: &[u8],
) -> Result<Option<(Frame<M>, usize)>, ProtoError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(ProtoError::BadLength { len: len as u64 });
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    let frame = parse(buf[4], &buf[5..4 + len])?;
    Ok(Some((frame, 4 + len)))
}

fn parse<M: for<'de> Deserialize<'de>>(tag: u8, body: &[u8]) -> Result<Frame<M>, ProtoError> {
    Ok(match tag {
        TAG_CONTROL => Frame::Control(
            serde_json::from_slice(body).map_err(|e| ProtoError::BadJson(e.to_string()))?,
        ),
        TAG_STDOUT => Frame::Stdout(body.to_vec()),
        TAG_STDERR => Frame::Stderr(body.to_vec()),
        TAG_STDIN => Frame::Stdin(body.to_vec()),
        TAG_STDIN_EOF if body.is_empty() => Frame::StdinEof,
        TAG_STDIN_EOF => return Err(ProtoError::BadJson("stdin-eof frame with a body".into())),
        t => return Err(ProtoError::BadTag(t)),
    })
}

/// Read one frame. A clean close before the first byte is [`ProtoError::Closed`].
pub async fn read_frame<M, R>(r: &mut R) -> Result<Frame<M>, ProtoError>
where
    M: for<'de> Deserialize<'de>,
    R: AsyncRead + Unpin,
{
    let mut head = [0u8; 5];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut head[got..4]).await?;
        if n == 0 {
            return Err(if got == 0 { ProtoError::Closed } else { ProtoError::Truncated });
        }
        got += n;
    }
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(ProtoError::BadLength { len: len as u64 });
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => ProtoError::Truncated,
        _ => ProtoError::Io(e),
    })?;
    parse(body[0], &body[1..])
}

/// Write one frame.
pub async fn write_frame<M, W>(w: &mut W, frame: &Frame<M>) -> io::Result<()>
where
    M: Serialize,
    W: AsyncWrite + Unpin,
{
    w.write_all(&encode(frame)).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_kind() {
        let frames: Vec<Frame<Request>> = vec![
            Frame::Control(Request::Hello { version: VERSION }),
            Frame::Control(Request::Exec {
                argv: vec!["true".into()],
                env: vec![],
                stdin: true,
                cwd: None,
                tty: false,
                winsize: None,
                user: None,
                rlimits: vec![],
            }),
            Frame::Control(Request::Exec {
                argv: vec!["sh".into()],
                env: vec![],
                stdin: true,
                cwd: Some("/tmp".into()),
                tty: true,
                winsize: Some(WinSize { rows: 50, cols: 132 }),
                user: Some("65534:65534".into()),
                rlimits: vec![Rlimit { resource: "RLIMIT_NOFILE".into(), soft: 64, hard: 128 }],
            }),
            Frame::Control(Request::Signal { signal: 2 }),
            Frame::Control(Request::Resize { rows: 10, cols: 20 }),
            Frame::Stdin(b"abc".to_vec()),
            Frame::StdinEof,
        ];
        let mut buf = Vec::new();
        for f in &frames {
            buf.extend(encode(f));
        }
        let mut at = 0;
        for f in &frames {
            let (g, used) = decode::<Request>(&buf[at..]).unwrap().unwrap();
            assert_eq!(&g, f);
            at += used;
        }
        assert_eq!(at, buf.len());
        assert!(decode::<Request>(&buf[..3]).unwrap().is_none());
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        assert!(matches!(decode::<Request>(&[0, 0, 0, 0]), Err(ProtoError::BadLength { len: 0 })));
        assert!(matches!(
            decode::<Request>(&[0xff, 0xff, 0xff, 0xff, 1]),
            Err(ProtoError::BadLength { .. })
        ));
        assert!(matches!(decode::<Request>(&[0, 0, 0, 1, 9]), Err(ProtoError::BadTag(9))));
        assert!(matches!(
            decode::<Request>(&[0, 0, 0, 3, 1, b'{', b'x']),
            Err(ProtoError::BadJson(_))
        ));
        for unknown in
            [&br#"{"type":"ping","bogus":1}"#[..], br#"{"type":"exec","argv":["x"],"bogus":1}"#]
        {
            let mut f = ((unknown.len() + 1) as u32).to_be_bytes().to_vec();
            f.push(1);
            f.extend_from_slice(unknown);
            assert!(
                matches!(decode::<Request>(&f), Err(ProtoError::BadJson(_))),
                "{}",
                String::from_utf8_lossy(unknown)
            );
        }
        let ping = br#"{"type":"ping"}"#;
        let mut f = ((ping.len() + 1) as u32).to_be_bytes().to_vec();
        f.push(1);
        f.extend_from_slice(ping);
        assert!(matches!(decode::<Request>(&f), Ok(Some((Frame::Control(Request::Ping {}), _)))));
    }

    #[test]
    fn an_exec_without_a_user_keeps_the_old_frame() {
        let old = br#"{"type":"exec","argv":["id"],"env":[],"stdin":false,"cwd":null,"tty":false,"winsize":null}"#;
        let req = Request::Exec {
            argv: vec!["id".into()],
            env: vec![],
            stdin: false,
            cwd: None,
            tty: false,
            winsize: None,
            user: None,
            rlimits: vec![],
        };
        assert_eq!(serde_json::to_vec(&req).unwrap(), old.to_vec());
        assert_eq!(serde_json::from_slice::<Request>(old).unwrap(), req);
    }

    #[tokio::test]
    async fn async_read_reports_truncation_and_close() {
        let mut empty: &[u8] = &[];
        assert!(matches!(read_frame::<Request, _>(&mut empty).await, Err(ProtoError::Closed)));
        let mut cut: &[u8] = &[0, 0, 0, 10, 1, b'{'];
        assert!(matches!(read_frame::<Request, _>(&mut cut).await, Err(ProtoError::Truncated)));
        let whole = encode(&Frame::<Response>::Control(Response::Pong {}));
        let mut r: &[u8] = &whole;
        assert_eq!(
            read_frame::<Response, _>(&mut r).await.unwrap(),
            Frame::Control(Response::Pong {})
        );
    }
}
