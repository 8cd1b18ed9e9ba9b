//! Large contents sent from their file, as nginx's `sendfile` does, instead of copied
//! into the socket: a response body of a ~200 KB bundle spent half of the proxy's time
//! in the kernel's copy from user memory (`bench/proxy.sh`, 512 connections).
//!
//! hyper writes a response as slices of memory; it has no notion of a file. So a server
//! declares, on the thread that serves the connection, that a buffer's bytes are the
//! whole content of a file ([`send_from_file`]); when [`crate::ProgressIo`] on that
//! thread is asked to write a slice of that buffer, it sends the same bytes from the
//! file with `sendfile(2)` (the page cache's pages go to the socket by reference) and
//! the rest (the response head) with `send(2)` and `MSG_MORE`, so head and body still
//! leave in one segment. The buffer is kept while it is declared, so its address stands
//! for it alone: no other buffer can be allocated there meanwhile.
//!
//! Bounds: [`MAX_REGIONS`] declared buffers per thread (past it, the oldest is
//! forgotten), [`MAX_OPEN_FILES`] files open for it in the process (counted in the
//! connection layer's descriptor reserve). A file that cannot be sent from (a file
//! system without `sendfile`, a file shorter than its buffer) is forgotten and its bytes
//! are copied from memory, so a response never suffers for it.
//!
//! What it covers: plain-HTTP responses whose body slices lie in a declared buffer. TLS
//! connections write rustls's own encrypted buffers, which are never declared. Like
//! nginx's `sendfile` without `aio`, a file whose pages the kernel has evicted is read
//! on the serving thread; the proxy declares a file right after reading it whole, and
//! its memory copy stays, so this is a cold-cache case.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use rustix::net::SendFlags;

/// The smallest slice sent from its file: below it, the copy costs less than the extra
/// system call for the response head.
pub const MIN_SENDFILE: usize = 64 * 1024;
/// Buffers one thread keeps declared (past it, it starts over).
const MAX_REGIONS: usize = 32;
/// Files kept open for this in the whole process.
pub(crate) const MAX_OPEN_FILES: usize = 64;

static OPEN_FILES: AtomicUsize = AtomicUsize::new(0);

/// A file open for sending, counted against [`MAX_OPEN_FILES`].
pub struct SendFile {
    file: File,
    _slot: Slot,
}

/// One of the [`MAX_OPEN_FILES`], given back when dropped.
struct Slot;

impl Slot {
    fn take() -> Option<Slot> {
        OPEN_FILES
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_OPEN_FILES).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        OPEN_FILES.fetch_sub(1, Ordering::AcqRel);
    }
}

impl SendFile {
    /// Opens `path` to send its `len` bytes from, when fewer than [`MAX_OPEN_FILES`] are
    /// open for sending (checked before opening) and the file has that size. Blocking.
    pub fn open(path: &std::path::Path, len: u64) -> Option<Arc<Self>> {
        let slot = Slot::take()?;
        let file = File::open(path).ok()?;
        (file.metadata().ok()?.len() == len).then(|| Arc::new(SendFile { file, _slot: slot }))
    }
}

/// A declared buffer: where it ends, its file, and the buffer itself (kept, so that its
/// address is not reused while it is declared).
struct Region {
    end: usize,
    file: Arc<SendFile>,
    _kept: Bytes,
}

thread_local! {
    /// Declared buffers by start address.
    static REGIONS: RefCell<BTreeMap<usize, Region>> = const { RefCell::new(BTreeMap::new()) };
}

/// Declares, for this thread, that `data` is the whole content of `file`: what
/// [`crate::ProgressIo`] writes from it on this thread is sent from the file. The caller
/// vouches that the file holds exactly these bytes and never changes (a
/// content-addressed blob). Small buffers are not declared.
pub fn send_from_file(data: &Bytes, file: Arc<SendFile>) {
    if data.len() < MIN_SENDFILE {
        return;
    }
    let start = data.as_ptr() as usize;
    REGIONS.with_borrow_mut(|regions| {
        if regions.len() >= MAX_REGIONS {
            regions.pop_first();
        }
        regions.insert(
            start,
            Region {
                end: start + data.len(),
                file,
                _kept: data.clone(),
            },
        );
    });
}

/// Forgets the buffer declared at `start` on this thread (its file failed).
fn forget_region(start: usize) {
    REGIONS.with_borrow_mut(|regions| regions.remove(&start));
}

/// Forgets what this thread declared (its memo of contents starts over).
pub fn forget_files() {
    let _ = REGIONS.try_with(|r| r.borrow_mut().clear());
}

/// The file `buf` lies in, its offset there, and the buffer's start, when it was
/// declared on this thread.
fn file_of(buf: &[u8]) -> Option<(Arc<SendFile>, u64, usize)> {
    if buf.len() < MIN_SENDFILE {
        return None;
    }
    let at = buf.as_ptr() as usize;
    REGIONS.with_borrow(|regions| {
        let (start, region) = regions.range(..=at).next_back()?;
        (at + buf.len() <= region.end).then(|| (region.file.clone(), (at - start) as u64, *start))
    })
}

/// Whether a write of `bufs` would send some of them from a file.
pub(crate) fn any_from_file(bufs: &[IoSlice<'_>]) -> bool {
    bufs.iter()
        .any(|b| b.len() >= MIN_SENDFILE && file_of(b).is_some())
}

/// Writes `bufs` in order to the socket `sock` (non-blocking), the declared ones from
/// their file: the bytes written, up to the first that would block. `WouldBlock` only
/// when nothing was written.
pub(crate) fn send(sock: BorrowedFd<'_>, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
    let mut sent = 0;
    for (i, buf) in bufs.iter().enumerate() {
        if buf.is_empty() {
            continue;
        }
        // More follows: held back to leave with it (the head with the body).
        let more = bufs[i + 1..].iter().any(|b| !b.is_empty());
        let flags = if more {
            SendFlags::NOSIGNAL | SendFlags::MORE
        } else {
            SendFlags::NOSIGNAL
        };
        let result = match file_of(buf) {
            Some((file, mut offset, start)) => {
                match rustix::fs::sendfile(sock, file.file.as_fd(), Some(&mut offset), buf.len()) {
                    Ok(n) if n > 0 => Ok(n),
                    Err(e) if e == rustix::io::Errno::AGAIN => Err(e),
                    // The file cannot be sent from (ended early, a file system without
                    // sendfile): copied from memory now and from now on.
                    _ => {
                        forget_region(start);
                        rustix::net::send(sock, buf, flags)
                    }
                }
            }
            None => rustix::net::send(sock, buf, flags),
        };
        match result {
            Ok(0) if sent == 0 => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                sent += n;
                if n < buf.len() {
                    break;
                }
            }
            // What was sent counts; the error comes again on the next write.
            Err(_) if sent > 0 => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_declared_buffer_is_sent_from_its_file_and_others_are_copied() {
        let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(&content).unwrap();
        let data = Bytes::from(content.clone());
        assert!(
            SendFile::open(tmp.path(), 1).is_none(),
            "not the buffer's size"
        );
        let file = SendFile::open(tmp.path(), content.len() as u64).unwrap();
        send_from_file(&data, file);

        // A slice inside the buffer is found at its offset; a copy of the same bytes,
        // elsewhere in memory, is not; nor is a small slice.
        let (_, offset, _) = file_of(&data[1000..100_000]).expect("declared");
        assert_eq!(offset, 1000);
        let copy = data.to_vec();
        assert!(file_of(&copy).is_none());
        assert!(file_of(&data[..100]).is_none());
        assert!(file_of(&data[130_000..]).is_some());

        // Sent on a socket pair: the head copied, the body from the file; the reader
        // sees exactly the bytes of the slices.
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            b.read_to_end(&mut got).unwrap();
            got
        });
        let head = b"HTTP/1.1 200 OK\r\n\r\n";
        let body = &data[10..];
        let bufs = [IoSlice::new(head), IoSlice::new(body)];
        assert!(any_from_file(&bufs));
        let mut written = 0;
        let total = head.len() + body.len();
        while written < total {
            let rest = if written < head.len() {
                vec![IoSlice::new(&head[written..]), IoSlice::new(body)]
            } else {
                vec![IoSlice::new(&body[written - head.len()..])]
            };
            written += send(a.as_fd(), &rest).unwrap();
        }
        drop(a);
        let got = reader.join().unwrap();
        assert_eq!(&got[..head.len()], head);
        assert_eq!(&got[head.len()..], &content[10..]);

        forget_files();
        assert!(file_of(body).is_none());
        assert_eq!(OPEN_FILES.load(Ordering::Acquire), 0, "the file was closed");

        // A file shorter than its buffer (changed behind our back): the rest is copied
        // from memory, and the buffer is no longer sent from it.
        let short = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(short.path(), &content).unwrap();
        let file = SendFile::open(short.path(), content.len() as u64).unwrap();
        send_from_file(&data, file);
        std::fs::write(short.path(), &content[..1000]).unwrap();
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            b.read_to_end(&mut got).unwrap();
            got
        });
        let mut written = 0;
        while written < data.len() - 5000 {
            written += send(a.as_fd(), &[IoSlice::new(&data[5000 + written..])]).unwrap();
        }
        drop(a);
        assert_eq!(reader.join().unwrap(), &content[5000..]);
        assert!(file_of(&data[5000..]).is_none(), "forgotten");
    }
}
