//! Batch uploads: many blobs in one request body (`POST /v1/files/batch`), so a
//! deployment of many small files costs requests by its bytes, not by its files.
//!
//! The body is a tar archive (ustar or GNU headers) of regular files, each named by the
//! SHA-256 of its bytes (`<sha256>` or `./<sha256>`), closed by the end-of-archive
//! marker; a `./` directory entry is allowed. `tar -cf - -C dir .` of a folder of blobs
//! named by their hashes is one. The reader ([`read`], with the `io` feature) checks each
//! member against its name as it arrives and refuses everything else: links, devices,
//! extension headers, names that are not hashes (so no member can name a path, inside
//! the root or out of it), a member over the per-file limit, more bytes or members than
//! a deployment may have, a truncated archive, and data after its end.

use std::io::Write;

/// The body's media type.
pub const CONTENT_TYPE: &str = "application/x-tar";

/// How the CLI groups blobs: a batch closes at this many bytes of content…
pub const CLIENT_BATCH_BYTES: u64 = 8 << 20;
/// …or this many members.
pub const CLIENT_BATCH_FILES: usize = 2_500;
/// Files larger than this go on their own (`PUT /v1/files/{hash}`): one request per
/// file costs nothing next to its bytes.
pub const CLIENT_BATCH_MEMBER_MAX: u64 = 2 << 20;

/// Appends a blob named by its hash to an archive being written.
pub fn append<W: Write>(
    archive: &mut tar::Builder<W>,
    hash: &str,
    data: &[u8],
) -> std::io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_path(hash)?;
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    archive.append(&header, data)
}

#[cfg(feature = "io")]
pub use reader::*;

#[cfg(feature = "io")]
mod reader {
    use std::path::Path;

    use bytes::Bytes;
    use sha2::Digest;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

    const BLOCK: usize = 512;
    /// Members up to this size are kept in memory…
    const IN_MEMORY_MEMBER: u64 = 1 << 20;
    /// …while the batch's members in memory stay under this; the rest are spooled to
    /// files, so a batch of large members never sits in memory.
    const IN_MEMORY_TOTAL: u64 = 16 << 20;
    /// Zero padding allowed after the end-of-archive marker (tar pads to 10 KiB records).
    const MAX_TRAILER: u64 = 1 << 20;

    /// What one batch may hold (the server's per-file, per-deployment and file-count
    /// limits), and the memory all batches at once may hold.
    #[derive(Debug, Clone)]
    pub struct Limits {
        pub max_member_bytes: u64,
        pub max_total_bytes: u64,
        pub max_members: usize,
        /// KiB of members held in memory across every batch being received; a member
        /// that finds none left is spooled to a file instead.
        pub memory: Option<std::sync::Arc<tokio::sync::Semaphore>>,
    }

    /// A received member's bytes, checked against its hash.
    #[derive(Debug)]
    pub enum Content {
        /// With its share of the shared memory budget, given back when dropped.
        Memory(Bytes, Option<tokio::sync::OwnedSemaphorePermit>),
        /// A private file in the spool folder, deleted when dropped.
        File(tempfile::TempPath),
    }

    #[derive(Debug)]
    pub struct Member {
        pub hash: String,
        pub size: u64,
        pub content: Content,
    }

    #[derive(Debug, thiserror::Error)]
    pub enum BatchError {
        /// Not an archive of hash-named regular files, or a cut or damaged one.
        #[error("{0}")]
        Malformed(String),
        #[error("member {name} is {size} bytes, over the per-file limit of {max} bytes")]
        MemberTooLarge { name: String, size: u64, max: u64 },
        #[error("the members add up to more than {max} bytes")]
        TotalTooLarge { max: u64 },
        #[error("more than {max} members")]
        TooManyMembers { max: usize },
        #[error("member {name}: its bytes hash to {actual}")]
        HashMismatch { name: String, actual: String },
        /// The body could not be read (the client went away, or sent a broken stream).
        #[error("reading the upload failed: {0}")]
        Read(std::io::Error),
        /// A member could not be written to the spool folder (the server's fault).
        #[error("cannot spool a member: {0}")]
        Spool(std::io::Error),
    }

    fn malformed(msg: impl Into<String>) -> BatchError {
        BatchError::Malformed(msg.into())
    }

    fn truncated() -> BatchError {
        malformed(
            "the archive is truncated: it ends inside a member or before its end-of-archive marker",
        )
    }

    /// Fills `buf` or reports where the stream ended: `Ok(0)` for an end before the
    /// first byte, `Ok(n)` for an end after `n` bytes.
    async fn fill<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<usize, BatchError> {
        let mut read = 0;
        while read < buf.len() {
            match r.read(&mut buf[read..]).await.map_err(BatchError::Read)? {
                0 => return Ok(read),
                n => read += n,
            }
        }
        Ok(read)
    }

    /// Reads a whole batch: every member checked against its name and the limits, kept
    /// in memory when small, else spooled to a private file under `spool_dir`. Nothing
    /// is returned unless the whole archive is sound, so a caller stores all or nothing.
    pub async fn read<R: AsyncRead + Unpin>(
        r: &mut R,
        limits: &Limits,
        spool_dir: &Path,
    ) -> Result<Vec<Member>, BatchError> {
        let mut state = ReadState::default();
        let mut block = [0u8; BLOCK];
        loop {
            if fill(r, &mut block).await? != BLOCK {
                return Err(truncated());
            }
            if block.iter().all(|b| *b == 0) {
                break;
            }
            let Some((hash, size)) = state.header(&block)? else {
                continue;
            };
            state.count(&hash, size, limits)?;
            let (actual, content) = match state.permit(size, limits) {
                Some(permit) => {
                    state.in_memory += size;
                    read_to_memory(r, size, permit).await?
                }
                None => read_to_file(r, size, spool_dir).await?,
            };
            let padding = (BLOCK - (size % BLOCK as u64) as usize) % BLOCK;
            if fill(r, &mut block[..padding]).await? != padding {
                return Err(truncated());
            }
            if actual != hash {
                return Err(BatchError::HashMismatch { name: hash, actual });
            }
            // A member sent twice is kept once (and counted against the limits twice).
            if state.seen.insert(actual) {
                state.members.push(Member {
                    hash,
                    size,
                    content,
                });
            }
        }
        read_trailer(r).await?;
        Ok(state.members)
    }

    /// What [`read`] has taken in so far.
    #[derive(Default)]
    struct ReadState {
        members: Vec<Member>,
        seen: std::collections::HashSet<String>,
        total: u64,
        in_memory: u64,
        root_entries: usize,
    }

    impl ReadState {
        /// A member's hash and size from its header; `None` for the one root directory
        /// entry `tar -C dir .` writes first (every entry costs a block, so only once).
        fn header(&mut self, block: &[u8; BLOCK]) -> Result<Option<(String, u64)>, BatchError> {
            let header = tar::Header::from_byte_slice(block);
            check_checksum(header)?;
            let name = String::from_utf8_lossy(&header.path_bytes()).into_owned();
            let shown = format!("{name:?}");
            let size = header
                .entry_size()
                .map_err(|e| malformed(format!("member {shown}: bad size field ({e})")))?;
            match header.entry_type() {
                tar::EntryType::Regular => {}
                tar::EntryType::Directory
                    if matches!(name.as_str(), "." | "./") && size == 0 && self.root_entries == 0 =>
                {
                    self.root_entries += 1;
                    return Ok(None);
                }
                other => {
                    return Err(malformed(format!(
                        "member {shown} is not a regular file ({other:?}): a batch holds only files named by their SHA-256"
                    )))
                }
            }
            let hash = name.strip_prefix("./").unwrap_or(&name);
            if !crate::is_sha256_hex(hash) {
                return Err(malformed(format!(
                    "member {shown} is not named by a SHA-256 (64 lowercase hex characters, optionally after ./): a batch member names its content, never a path"
                )));
            }
            Ok(Some((hash.to_string(), size)))
        }

        /// Counts a member against the limits.
        fn count(&mut self, hash: &str, size: u64, limits: &Limits) -> Result<(), BatchError> {
            if self.members.len() >= limits.max_members {
                return Err(BatchError::TooManyMembers {
                    max: limits.max_members,
                });
            }
            if size > limits.max_member_bytes {
                return Err(BatchError::MemberTooLarge {
                    name: hash.to_string(),
                    size,
                    max: limits.max_member_bytes,
                });
            }
            self.total += size;
            if self.total > limits.max_total_bytes {
                return Err(BatchError::TotalTooLarge {
                    max: limits.max_total_bytes,
                });
            }
            Ok(())
        }

        /// Room in memory for a small member (`Some`: keep it there, with its share of
        /// the shared budget when there is one), or `None`: spool it to a file.
        fn permit(
            &self,
            size: u64,
            limits: &Limits,
        ) -> Option<Option<tokio::sync::OwnedSemaphorePermit>> {
            if size > IN_MEMORY_MEMBER || self.in_memory + size > IN_MEMORY_TOTAL {
                return None;
            }
            match &limits.memory {
                None => Some(None),
                // Whole KiB, at least one: a budget of many empty members is spent too.
                Some(budget) => budget
                    .clone()
                    .try_acquire_many_owned((size / 1024 + 1) as u32)
                    .ok()
                    .map(Some),
            }
        }
    }

    /// After the end-of-archive marker: only zero padding, and not much of it.
    async fn read_trailer<R: AsyncRead + Unpin>(r: &mut R) -> Result<(), BatchError> {
        let mut trailer = 0u64;
        let mut buf = [0u8; 8192];
        loop {
            let n = r.read(&mut buf).await.map_err(BatchError::Read)?;
            if n == 0 {
                return Ok(());
            }
            trailer += n as u64;
            if trailer > MAX_TRAILER || buf[..n].iter().any(|b| *b != 0) {
                return Err(malformed("data after the archive's end-of-archive marker"));
            }
        }
    }

    /// The header checksum: the unsigned sum of its bytes with the checksum field read
    /// as spaces (what every tar writes; the `tar` crate checks it only while reading
    /// synchronously).
    fn check_checksum(header: &tar::Header) -> Result<(), BatchError> {
        let bytes = header.as_bytes();
        let sum: u32 = bytes[..148]
            .iter()
            .chain(&bytes[156..])
            .map(|b| u32::from(*b))
            .sum::<u32>()
            + 8 * u32::from(b' ');
        match header.cksum() {
            Ok(stored) if stored == sum => Ok(()),
            _ => Err(malformed(
                "a member header's checksum does not match: not a tar archive, or a damaged one",
            )),
        }
    }

    async fn read_to_memory<R: AsyncRead + Unpin>(
        r: &mut R,
        size: u64,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Result<(String, Content), BatchError> {
        let mut data = vec![0u8; size as usize];
        if fill(r, &mut data).await? != data.len() {
            return Err(truncated());
        }
        let hash = hex::encode(sha2::Sha256::digest(&data));
        Ok((hash, Content::Memory(Bytes::from(data), permit)))
    }

    async fn read_to_file<R: AsyncRead + Unpin>(
        r: &mut R,
        size: u64,
        spool_dir: &Path,
    ) -> Result<(String, Content), BatchError> {
        let path = tempfile::Builder::new()
            .prefix("member-")
            .tempfile_in(spool_dir)
            .map_err(BatchError::Spool)?
            .into_temp_path();
        let mut out = tokio::fs::File::create(&path)
            .await
            .map_err(BatchError::Spool)?;
        let mut hasher = sha2::Sha256::new();
        let mut left = size;
        let mut buf = vec![0u8; 64 * 1024];
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = r.read(&mut buf[..want]).await.map_err(BatchError::Read)?;
            if n == 0 {
                return Err(truncated());
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).await.map_err(BatchError::Spool)?;
            left -= n as u64;
        }
        out.flush().await.map_err(BatchError::Spool)?;
        Ok((hex::encode(hasher.finalize()), Content::File(path)))
    }

    #[cfg(test)]
    mod tests {
        use super::super::append;
        use super::*;

        const LIMITS: Limits = Limits {
            max_member_bytes: 4 << 20,
            max_total_bytes: 8 << 20,
            max_members: 10,
            memory: None,
        };

        fn archive(members: &[&[u8]]) -> Vec<u8> {
            let mut b = tar::Builder::new(Vec::new());
            for m in members {
                append(&mut b, &crate::sha256_hex(m), m).unwrap();
            }
            b.into_inner().unwrap()
        }

        async fn read_all(bytes: &[u8], limits: &Limits) -> Result<Vec<Member>, BatchError> {
            let dir = tempfile::tempdir().unwrap();
            read(&mut &bytes[..], limits, dir.path()).await
        }

        #[tokio::test]
        async fn round_trip_in_memory_and_spooled() {
            let big = vec![7u8; 3 << 20];
            let bytes = archive(&[b"hello", b"", &big]);
            let dir = tempfile::tempdir().unwrap();
            let members = read(&mut &bytes[..], &LIMITS, dir.path()).await.unwrap();
            assert_eq!(members.len(), 3);
            assert_eq!(members[0].hash, crate::sha256_hex(b"hello"));
            assert!(matches!(&members[0].content, Content::Memory(b, _) if &b[..] == b"hello"));
            assert_eq!(members[1].size, 0);
            match &members[2].content {
                Content::File(p) => assert_eq!(std::fs::read(p).unwrap(), big),
                other => panic!("a 3 MiB member is spooled, not {other:?}"),
            }
            drop(members);
            assert_eq!(
                std::fs::read_dir(dir.path()).unwrap().count(),
                0,
                "spooled members are removed when dropped"
            );
        }

        #[tokio::test]
        async fn the_shared_memory_budget_spools_what_does_not_fit_and_duplicates_go() {
            let budget = std::sync::Arc::new(tokio::sync::Semaphore::new(3));
            let limits = Limits {
                memory: Some(budget.clone()),
                ..LIMITS
            };
            let a = vec![1u8; 1500];
            let bytes = archive(&[&a, b"b", &a, b"c"]);
            let members = read_all(&bytes, &limits).await.unwrap();
            assert_eq!(members.len(), 3, "the second copy of a is dropped");
            // a takes 2 KiB of 3, b the last one, c finds none: a file.
            assert!(matches!(members[0].content, Content::Memory(..)));
            assert!(matches!(members[1].content, Content::Memory(..)));
            assert!(matches!(members[2].content, Content::File(_)));
            assert_eq!(budget.available_permits(), 0);
            drop(members);
            assert_eq!(budget.available_permits(), 3, "given back when dropped");
        }

        #[tokio::test]
        async fn tar_of_a_folder_with_dot_slash_names_is_accepted() {
            let mut b = tar::Builder::new(Vec::new());
            let mut dir = tar::Header::new_gnu();
            dir.set_path("./").unwrap();
            dir.set_entry_type(tar::EntryType::Directory);
            dir.set_size(0);
            dir.set_cksum();
            b.append(&dir, &[][..]).unwrap();
            let mut h = tar::Header::new_gnu();
            h.set_path(format!("./{}", crate::sha256_hex(b"x")))
                .unwrap();
            h.set_size(1);
            h.set_cksum();
            b.append(&h, &b"x"[..]).unwrap();
            let bytes = b.into_inner().unwrap();
            let members = read_all(&bytes, &LIMITS).await.unwrap();
            assert_eq!(members.len(), 1);
            // The root entry once: a stream of them would be an unbounded body.
            let mut twice = bytes[..512].to_vec();
            twice.extend_from_slice(&bytes);
            let e = read_all(&twice, &LIMITS).await.unwrap_err();
            assert!(e.to_string().contains("not a regular file"), "{e}");
        }

        #[tokio::test]
        async fn refusals() {
            let good = archive(&[b"one", b"two"]);
            // Cut inside the second member's data, after the first header, and at a
            // member boundary (no end-of-archive marker).
            for cut in [good.len() - 1024 - 300, 600, 1024] {
                let e = read_all(&good[..cut], &LIMITS).await.unwrap_err();
                assert!(e.to_string().contains("truncated"), "cut at {cut}: {e}");
            }
            let e = read_all(&good[..1030], &LIMITS).await.unwrap_err();
            assert!(e.to_string().contains("truncated"), "{e}");

            // Bytes that do not hash to the name.
            let mut bad = good.clone();
            bad[512] = b'X';
            assert!(matches!(
                read_all(&bad, &LIMITS).await,
                Err(BatchError::HashMismatch { .. })
            ));

            // A damaged header.
            let mut bad = good.clone();
            bad[10] ^= 1;
            let e = read_all(&bad, &LIMITS).await.unwrap_err();
            assert!(e.to_string().contains("checksum"), "{e}");

            // Names that are paths, and entries that are not files.
            let hash = crate::sha256_hex(b"x");
            for name in [
                format!("../{hash}"),
                format!("/etc/{hash}"),
                format!("a/{hash}"),
                "index.html".to_string(),
            ] {
                let mut b = tar::Builder::new(Vec::new());
                let mut h = tar::Header::new_ustar();
                h.set_path(&name).unwrap_or_else(|_| {
                    // set_path refuses `..`; write the raw name as a hostile client would.
                    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
                });
                h.set_size(1);
                h.set_cksum();
                b.append(&h, &b"x"[..]).unwrap();
                let e = read_all(&b.into_inner().unwrap(), &LIMITS)
                    .await
                    .unwrap_err();
                assert!(e.to_string().contains("SHA-256"), "{name}: {e}");
            }
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_ustar();
            h.set_path(&hash).unwrap();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_link_name("/etc/passwd").unwrap();
            h.set_size(0);
            h.set_cksum();
            b.append(&h, &[][..]).unwrap();
            let e = read_all(&b.into_inner().unwrap(), &LIMITS)
                .await
                .unwrap_err();
            assert!(e.to_string().contains("not a regular file"), "{e}");

            // Limits: per member, in all, and the member count.
            let small = Limits {
                max_member_bytes: 4,
                max_total_bytes: 6,
                max_members: 2,
                memory: None,
            };
            assert!(matches!(
                read_all(&archive(&[b"12345"]), &small).await,
                Err(BatchError::MemberTooLarge { size: 5, .. })
            ));
            assert!(matches!(
                read_all(&archive(&[b"1234", b"567"]), &small).await,
                Err(BatchError::TotalTooLarge { .. })
            ));
            assert!(matches!(
                read_all(&archive(&[b"1", b"2", b"3"]), &small).await,
                Err(BatchError::TooManyMembers { max: 2 })
            ));

            // Trailing data after the marker.
            let mut bad = good.clone();
            bad.extend_from_slice(b"more");
            let e = read_all(&bad, &LIMITS).await.unwrap_err();
            assert!(e.to_string().contains("after"), "{e}");
            // Zero padding is fine.
            let mut padded = good.clone();
            padded.extend_from_slice(&[0u8; 9000]);
            assert_eq!(read_all(&padded, &LIMITS).await.unwrap().len(), 2);
        }
    }
}
