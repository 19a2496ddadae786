//! The framed protocol between corral and a `server`-mode function's process, over the
//! process's standard input (requests) and standard output (replies). One process serves one
//! invocation at a time: corral writes a request, then reads exactly one reply.
//!
//! ```text
//! request:  length: u32 big-endian | payload: length bytes
//! reply:    status: u8 | length: u32 big-endian | body: length bytes
//!           status 0: the invocation succeeded, body is its output
//!           status 1: the function failed, body is its error message (UTF-8)
//! ```
//!
//! Anything else is a protocol error: another status byte, a reply longer than the function's
//! `max_output_bytes`, or the stream ending inside a frame. The process reads its next request
//! after writing a reply; end of input means corral is done with it (it should exit). Standard
//! error is free-form and kept (its tail) for error messages.
//!
//! The async half is what the backends use; the blocking half is for servers written in Rust
//! (`corral-serve`, the example server, uses it).

use std::io::{self, Read, Write};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A reply's status byte: success.
pub const STATUS_OK: u8 = 0;
/// A reply's status byte: the function failed; the body is its message.
pub const STATUS_ERROR: u8 = 1;

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The output of a successful invocation.
    Ok(Vec<u8>),
    /// The function's own error message.
    Failed(String),
}

/// Why a reply could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream ended before a reply began: the process closed its output or exited.
    #[error("it closed its standard output before answering")]
    Closed,
    /// The stream ended inside a reply.
    #[error("its reply ended after {got} of {expected} bytes")]
    Truncated {
        /// Bytes announced (header included).
        expected: u64,
        /// Bytes read.
        got: u64,
    },
    /// The status byte is neither 0 nor 1.
    #[error("its reply began with status byte {0:#04x}, not 0 (ok) or 1 (error)")]
    BadStatus(u8),
    /// The reply announces more than the limit.
    #[error("its reply announces {len} bytes, more than the limit of {limit}")]
    TooLarge {
        /// The announced length.
        len: u64,
        /// The function's `max_output_bytes`.
        limit: u64,
    },
    /// Reading failed.
    #[error("reading its reply failed: {0}")]
    Io(#[from] io::Error),
}

/// Writes one request frame carrying `payload`.
pub async fn write_request<W: AsyncWrite + Unpin>(w: &mut W, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a payload of {} bytes does not fit a frame (at most {} bytes)",
                payload.len(),
                u32::MAX
            ),
        )
    })?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(payload).await?;
    w.flush().await
}

/// Reads one reply, refusing one longer than `limit` bytes before reading its body.
pub async fn read_reply<R: AsyncRead + Unpin>(r: &mut R, limit: u64) -> Result<Reply, FrameError> {
    let mut header = [0u8; 5];
    let mut got = 0;
    while got < header.len() {
        match r.read(&mut header[got..]).await? {
            0 if got == 0 => return Err(FrameError::Closed),
            0 => {
                return Err(FrameError::Truncated {
                    expected: header.len() as u64,
                    got: got as u64,
                })
            }
            n => got += n,
        }
    }
    let status = header[0];
    if status != STATUS_OK && status != STATUS_ERROR {
        return Err(FrameError::BadStatus(status));
    }
    let len = u64::from(u32::from_be_bytes([
        header[1], header[2], header[3], header[4],
    ]));
    if len > limit {
        return Err(FrameError::TooLarge { len, limit });
    }
    let mut body = vec![0u8; len as usize];
    let mut read = 0;
    while read < body.len() {
        match r.read(&mut body[read..]).await? {
            0 => {
                return Err(FrameError::Truncated {
                    expected: 5 + len,
                    got: 5 + read as u64,
                })
            }
            n => read += n,
        }
    }
    Ok(if status == STATUS_OK {
        Reply::Ok(body)
    } else {
        Reply::Failed(String::from_utf8_lossy(&body).into_owned())
    })
}

/// For servers: reads the next request's payload; `None` at end of input (corral is done).
pub fn read_request_blocking<R: Read>(r: &mut R) -> io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < header.len() {
        match r.read(&mut header[got..])? {
            0 if got == 0 => return Ok(None),
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "input ended inside a request header",
                ))
            }
            n => got += n,
        }
    }
    let mut payload = vec![0u8; u32::from_be_bytes(header) as usize];
    r.read_exact(&mut payload)?;
    Ok(Some(payload))
}

/// For servers: writes one reply (`Ok` with the output, or `Err` with a message).
pub fn write_reply_blocking<W: Write>(w: &mut W, reply: Result<&[u8], &str>) -> io::Result<()> {
    let (status, body) = match reply {
        Ok(out) => (STATUS_OK, out),
        Err(msg) => (STATUS_ERROR, msg.as_bytes()),
    };
    let len = u32::try_from(body.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a reply over 4 GiB"))?;
    w.write_all(&[status])?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(body)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply_bytes(status: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![status];
        v.extend_from_slice(&(body.len() as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    /// A request written by corral reads back on the server's side, and a server's replies
    /// (ok and failed) read back on corral's, frame by frame on one stream.
    #[tokio::test]
    async fn requests_and_replies_round_trip() {
        let mut wire = Vec::new();
        write_request(&mut wire, b"hello").await.unwrap();
        write_request(&mut wire, b"").await.unwrap();
        let mut r = &wire[..];
        assert_eq!(
            read_request_blocking(&mut r).unwrap().as_deref(),
            Some(&b"hello"[..])
        );
        assert_eq!(
            read_request_blocking(&mut r).unwrap().as_deref(),
            Some(&b""[..])
        );
        assert_eq!(read_request_blocking(&mut r).unwrap(), None, "end of input");

        let mut out = Vec::new();
        write_reply_blocking(&mut out, Ok(b"world")).unwrap();
        write_reply_blocking(&mut out, Err("bad input")).unwrap();
        let mut r = &out[..];
        assert_eq!(
            read_reply(&mut r, 100).await.unwrap(),
            Reply::Ok(b"world".to_vec())
        );
        assert_eq!(
            read_reply(&mut r, 100).await.unwrap(),
            Reply::Failed("bad input".into())
        );
        assert!(matches!(
            read_reply(&mut r, 100).await,
            Err(FrameError::Closed)
        ));
    }

    /// Malformed replies are refused by kind: a bad status byte, a length over the limit
    /// (before any of the body is read), a stream that ends inside the header or the body.
    #[tokio::test]
    async fn malformed_replies_are_refused() {
        let bad = reply_bytes(7, b"x");
        assert!(matches!(
            read_reply(&mut &bad[..], 100).await,
            Err(FrameError::BadStatus(7))
        ));
        let big = reply_bytes(STATUS_OK, &[0u8; 101]);
        assert!(matches!(
            read_reply(&mut &big[..], 100).await,
            Err(FrameError::TooLarge {
                len: 101,
                limit: 100
            })
        ));
        let mut cut = reply_bytes(STATUS_OK, b"abcdef");
        cut.truncate(8);
        assert!(matches!(
            read_reply(&mut &cut[..], 100).await,
            Err(FrameError::Truncated {
                expected: 11,
                got: 8
            })
        ));
        assert!(matches!(
            read_reply(&mut &[0u8, 0][..], 100).await,
            Err(FrameError::Truncated {
                expected: 5,
                got: 2
            })
        ));
        let text = b"hello world\n";
        assert!(matches!(
            read_reply(&mut &text[..], 100).await,
            Err(FrameError::BadStatus(b'h'))
        ));
    }
}

/// The two ends corral holds of a server process (its standard input's write end and its
/// standard output's read end, pipes or FIFOs), as plain non-blocking descriptors. Each
/// exchange registers them with the tokio runtime it runs on and gives them back after, so a
/// warm-lane invocation does its I/O on the caller's runtime and an actor-path one on the
/// actix thread's. `None` after a cancelled exchange lost them (the server is then unusable).
#[derive(Debug, Default)]
pub struct ServerEnds {
    /// The server's standard input, write end.
    pub stdin: Option<std::os::fd::OwnedFd>,
    /// The server's standard output, read end.
    pub stdout: Option<std::os::fd::OwnedFd>,
}

/// Why an exchange with a server failed.
#[derive(Debug)]
pub enum ExchangeError {
    /// The ends were lost by an exchange that was cancelled.
    Lost,
    /// The ends could not be registered with the current runtime (no IO driver).
    Register(io::Error),
    /// Writing the request failed (the server is gone, most likely).
    Write(io::Error),
    /// The reply could not be read.
    Frame(FrameError),
}

impl ServerEnds {
    /// One request and its reply, on the current runtime.
    pub async fn exchange(&mut self, payload: &[u8], limit: u64) -> Result<Reply, ExchangeError> {
        use tokio::net::unix::pipe;
        let (Some(stdin), Some(stdout)) = (self.stdin.take(), self.stdout.take()) else {
            return Err(ExchangeError::Lost);
        };
        let mut tx =
            pipe::Sender::from_owned_fd_unchecked(stdin).map_err(ExchangeError::Register)?;
        let mut rx =
            pipe::Receiver::from_owned_fd_unchecked(stdout).map_err(ExchangeError::Register)?;
        let reply = match write_request(&mut tx, payload).await {
            Ok(()) => read_reply(&mut rx, limit)
                .await
                .map_err(ExchangeError::Frame),
            Err(e) => Err(ExchangeError::Write(e)),
        };
        // Back to plain descriptors, for whichever runtime runs the next invocation.
        self.stdin = tx.into_nonblocking_fd().ok();
        self.stdout = rx.into_nonblocking_fd().ok();
        reply
    }
}

/// What an exchange means for the invocation.
#[derive(Debug)]
pub enum Verdict {
    /// Settled: the output, or the invocation's error.
    Settled(Result<Vec<u8>, crate::error::ActorError>),
    /// The server broke the exchange (`what` happened): the backend adds what became of the
    /// process and its last words, and answers `ServerFailed`.
    Broken(String),
}

/// Maps an exchange's outcome to the invocation's, the same for every backend. `ends` names
/// the server's ends in messages ("pipes", "FIFOs").
pub fn verdict(
    function: &str,
    container: &str,
    ends: &str,
    outcome: Result<Reply, ExchangeError>,
) -> Verdict {
    use crate::error::ActorError;
    let failed = |what: String| ActorError::ServerFailed {
        function: function.to_owned(),
        container: container.to_owned(),
        what,
        stderr: String::new(),
    };
    Verdict::Settled(match outcome {
        Ok(Reply::Ok(out)) => Ok(out),
        Ok(Reply::Failed(message)) => Err(ActorError::FunctionFailed {
            function: function.to_owned(),
            container: container.to_owned(),
            status: "answered a failed reply (status 1)".into(),
            stderr: message,
        }),
        Err(ExchangeError::Frame(FrameError::TooLarge { limit, .. })) => {
            Err(ActorError::OutputTooLarge {
                function: function.to_owned(),
                container: container.to_owned(),
                limit,
            })
        }
        Err(ExchangeError::Register(e)) => Err(failed(format!(
            "its {ends} cannot be registered with the caller's tokio runtime ({e}); build that \
             runtime with its IO driver (enable_all)"
        ))),
        Err(ExchangeError::Lost) => Err(failed(format!(
            "its {ends} were lost by an invocation that was cancelled"
        ))),
        Err(ExchangeError::Write(e)) => {
            return Verdict::Broken(format!("writing the request failed ({e})"))
        }
        Err(ExchangeError::Frame(e)) => return Verdict::Broken(e.to_string()),
    })
}
