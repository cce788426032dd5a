//! Content-addressed blobs: `<store>/blobs/sha256/<hex>`. A blob gets its name only
//! after its bytes were written to a temporary file, synced and checked against the
//! digest (and the declared size): a file under `blobs/` is always whole and right. Every
//! use verifies again as it reads (small documents in full before parsing, layers while
//! they stream into the unpack).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::digest::{Digest, HashingReader, HashingWriter};
use crate::error::{ImageError, Result};
use crate::fsutil;

/// The largest JSON document (manifest, index, config) read into memory.
pub const MAX_DOCUMENT: u64 = 4 << 20;

/// What an ingest expects of the bytes it is given.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Expect<'a> {
    /// The digest the bytes must have; `None` names the blob by what arrives.
    pub digest: Option<&'a Digest>,
    /// The size they must have, when declared.
    pub size: Option<u64>,
    /// At most this many bytes are accepted when no size is declared.
    pub limit: u64,
}

/// The blob directory of a store.
#[derive(Clone, Debug)]
pub(crate) struct Blobs {
    dir: PathBuf,
    tmp: PathBuf,
}

impl Blobs {
    pub(crate) fn new(dir: PathBuf, tmp: PathBuf) -> Self {
        Blobs { dir, tmp }
    }

    pub(crate) fn path(&self, d: &Digest) -> PathBuf {
        self.dir.join(d.hex())
    }

    pub(crate) fn has(&self, d: &Digest) -> bool {
        fs::symlink_metadata(self.path(d)).is_ok_and(|m| m.is_file())
    }

    /// Every blob present (names that are not digests are ignored).
    pub(crate) fn all(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        let rd = fs::read_dir(&self.dir).map_err(|e| ImageError::io("read", &self.dir, e))?;
        for e in rd {
            let e = e.map_err(|e| ImageError::io("read", &self.dir, e))?;
            if let Some(d) = e.file_name().to_str().and_then(|n| format!("sha256:{n}").parse().ok())
            {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Write what `src` yields as a blob, verified against `expect`. Returns its digest
    /// and size. Nothing appears under `blobs/` unless it is whole and verified.
    pub(crate) fn ingest(&self, src: impl Read, expect: Expect<'_>) -> Result<(Digest, u64)> {
        let mut tmp = fsutil::TempEntry::new(&self.tmp, "blob")?;
        let result = self.ingest_at(tmp.path(), src, expect);
        if result.is_ok() {
            tmp.consumed();
        }
        result
    }

    fn ingest_at(&self, tmp: &Path, src: impl Read, expect: Expect<'_>) -> Result<(Digest, u64)> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(tmp)
            .map_err(|e| ImageError::io("create", tmp, e))?;
        let mut w = HashingWriter::new(io::BufWriter::new(file));
        // One byte past the bound tells "larger" from "exactly the bound".
        let bound = expect.size.unwrap_or(expect.limit);
        let copied = io::copy(&mut src.take(bound.saturating_add(1)), &mut w)
            .map_err(|e| ImageError::io("write", tmp, e))?;
        w.flush().map_err(|e| ImageError::io("write", tmp, e))?;
        crate::crash::point("blob-write");
        let (buf, digest, _) = w.finish();
        let what = || match expect.digest {
            Some(d) => format!("blob {d}"),
            None => "blob".to_owned(),
        };
        if copied > bound {
            return Err(ImageError::TooLarge { what: what(), limit: bound });
        }
        if let (Some(size), Some(d)) = (expect.size, expect.digest)
            && copied < size
        {
            return Err(ImageError::Truncated { digest: d.clone(), expected: size, got: copied });
        }
        if let Some(d) = expect.digest
            && *d != digest
        {
            return Err(ImageError::DigestMismatch {
                what: what(),
                expected: d.clone(),
                actual: digest,
            });
        }
        let file = buf.into_inner().map_err(|e| ImageError::io("write", tmp, e.into_error()))?;
        file.sync_all().map_err(|e| ImageError::io("fsync", tmp, e))?;
        drop(file);
        let dest = self.path(&digest);
        fs::rename(tmp, &dest).map_err(|e| ImageError::io("rename into place", &dest, e))?;
        fsutil::sync_dir(&self.dir)?;
        tracing::debug!(digest = %digest, size = copied, "blob stored");
        Ok((digest, copied))
    }

    /// Make the whole file `path` (a finished download) the blob `d`: verified (size and
    /// digest; a mismatch removes the file), synced, renamed into place.
    #[cfg_attr(not(feature = "registry"), allow(dead_code))]
    pub(crate) fn adopt(&self, path: &Path, d: &Digest, size: u64) -> Result<()> {
        let f = File::open(path).map_err(|e| ImageError::io("open", path, e))?;
        let mut r = HashingReader::new(BufReader::new(&f));
        io::copy(&mut r, &mut io::sink()).map_err(|e| ImageError::io("read", path, e))?;
        let (actual, n) = r.finish();
        if n != size || actual != *d {
            let _ = fs::remove_file(path);
            if n != size {
                return Err(ImageError::Truncated { digest: d.clone(), expected: size, got: n });
            }
            return Err(ImageError::DigestMismatch {
                what: format!("blob {d}"),
                expected: d.clone(),
                actual,
            });
        }
        f.sync_all().map_err(|e| ImageError::io("fsync", path, e))?;
        let dest = self.path(d);
        fs::rename(path, &dest).map_err(|e| ImageError::io("rename into place", &dest, e))?;
        fsutil::sync_dir(&self.dir)
    }

    /// Read a small blob (a JSON document) whole, verified against its digest.
    pub(crate) fn read(&self, d: &Digest) -> Result<Vec<u8>> {
        let path = self.path(d);
        let f = File::open(&path).map_err(|e| ImageError::io("open blob", &path, e))?;
        let mut r = HashingReader::new(f.take(MAX_DOCUMENT + 1));
        let mut out = Vec::new();
        r.read_to_end(&mut out).map_err(|e| ImageError::io("read blob", &path, e))?;
        if out.len() as u64 > MAX_DOCUMENT {
            return Err(ImageError::TooLarge {
                what: format!("document {d}"),
                limit: MAX_DOCUMENT,
            });
        }
        let (actual, _) = r.finish();
        if actual != *d {
            return Err(ImageError::DigestMismatch {
                what: format!("stored blob {d}"),
                expected: d.clone(),
                actual,
            });
        }
        Ok(out)
    }

    /// Open a blob for streaming; the caller checks the digest at the end
    /// (`HashingReader::finish`) before it trusts what it made of the bytes.
    pub(crate) fn open(&self, d: &Digest) -> Result<HashingReader<BufReader<File>>> {
        let path = self.path(d);
        let f = File::open(&path).map_err(|e| ImageError::io("open blob", &path, e))?;
        Ok(HashingReader::new(BufReader::with_capacity(256 << 10, f)))
    }

    /// Remove a blob; returns the bytes freed.
    pub(crate) fn remove(&self, d: &Digest) -> Result<u64> {
        fsutil::remove_tree(&self.path(d))
    }
}
