//! Writing a layer blob in one streaming pass: tar → SHA-256 (the diff ID) → compressor →
//! SHA-256 (the blob digest) → output.
//!
//! The tar is produced on its own thread and handed over in fixed-size blocks through a bounded
//! channel, so reading files and hashing overlap with compression. Gzip blocks are deflated in
//! parallel on a rayon pool and written back in order; zstd uses the library's own worker
//! threads. In both cases the bytes written never depend on the number of threads.

use std::collections::VecDeque;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};

use sha2::{Digest, Sha256};
use strata_fstree::Entry;

use crate::digest::Digest as ContentDigest;

use crate::compress::{
    Compression, DEFLATE_FINAL_BLOCK, GZIP_BLOCK_SIZE, GZIP_HEADER, GZIP_LEVEL, ZSTD_LEVEL,
    deflate_block, dictionary_of, gzip_trailer,
};
use crate::tar::{TarOptions, write_entries};

/// Settings of the layer writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LayerOptions {
    /// How the blob is compressed.
    pub compression: Compression,
    /// Compression threads; 0 means one per available core. The output does not depend on it.
    pub threads: usize,
    /// Modification times later than this are clamped to it.
    pub source_date_epoch: i64,
}

/// The identity of a written layer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerDigests {
    /// `sha256:<hex>` of the uncompressed tar (the image config's `rootfs.diff_ids` entry).
    pub diff_id: ContentDigest,
    /// `sha256:<hex>` of the blob as written.
    pub digest: ContentDigest,
    /// Size of the blob in bytes.
    pub size: u64,
    /// Size of the uncompressed tar in bytes.
    pub uncompressed_size: u64,
}

/// Why a layer could not be written.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// A host file could not be opened or read.
    #[error("cannot read `{}`", path.display())]
    Read {
        /// The host path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file's content does not have the size recorded in its entry (the file changed since
    /// the tree was built).
    #[error(
        "`{}` changed while the layer was written: expected {expected} bytes, found {actual}",
        path.display()
    )]
    SizeMismatch {
        /// The host path (for in-memory content, the entry's image path).
        path: PathBuf,
        /// The size recorded in the entry.
        expected: u64,
        /// The size found.
        actual: u64,
    },
    /// An extended attribute name that a pax header cannot carry (empty, or with `=` or NUL).
    #[error("extended attribute `{name}` of `{path}` cannot be stored in a tar")]
    InvalidXattr {
        /// The entry's image path.
        path: String,
        /// The attribute name.
        name: String,
    },
    /// Writing the output failed.
    #[error("cannot write the layer")]
    Write(#[source] io::Error),
    /// The compressor failed.
    #[error("cannot compress the layer")]
    Compress(#[source] io::Error),
    /// The compression threads could not be started.
    #[error("cannot start compression threads: {0}")]
    Threads(String),
}

/// Blocks queued between the tar thread and the compressing side.
const CHANNEL_DEPTH: usize = 4;

/// One streaming pass: tar -> sha256 (diff_id) -> compressor -> sha256 (digest) -> out.
///
/// `entries` must be in image order. `out` receives the blob and is flushed at the end.
pub fn write_layer<W: Write + Send>(
    entries: &[&Entry],
    opts: &LayerOptions,
    out: W,
) -> Result<LayerDigests, LayerError> {
    let tar_opts = TarOptions {
        source_date_epoch: opts.source_date_epoch,
    };
    let threads = match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    if opts.compression == Compression::None {
        let mut w = BufWriter::with_capacity(1 << 20, HashWriter::new(out));
        write_entries(entries.iter().copied(), &tar_opts, &mut w)?;
        let hashed = w
            .into_inner()
            .map_err(|e| LayerError::Write(e.into_error()))?;
        let (digest, size) = hashed.finish()?;
        return Ok(LayerDigests {
            diff_id: digest.clone(),
            digest,
            size,
            uncompressed_size: size,
        });
    }

    std::thread::scope(|s| {
        let (tx, rx) = sync_channel::<Vec<u8>>(CHANNEL_DEPTH);
        let producer = std::thread::Builder::new()
            .name("strata-tar".to_owned())
            .spawn_scoped(s, move || {
                let mut sink = BlockSink::new(tx);
                write_entries(entries.iter().copied(), &tar_opts, &mut sink)?;
                sink.finish()
            })
            .map_err(|e| LayerError::Threads(e.to_string()))?;
        let compressed = match opts.compression {
            Compression::Zstd => compress_zstd(rx, threads, out),
            _ => compress_gzip(rx, threads, out),
        };
        let produced = match producer.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        match (produced, compressed) {
            // The tar side's own failure explains a truncated stream best, unless it only
            // stopped because the compressing side went away first.
            (Err(e), _) if !is_disconnect(&e) => Err(e),
            (_, Err(e)) => Err(e),
            (Err(e), Ok(_)) => Err(e),
            (Ok((diff_id, uncompressed_size)), Ok((digest, size))) => Ok(LayerDigests {
                diff_id,
                digest,
                size,
                uncompressed_size,
            }),
        }
    })
}

/// Compresses an existing uncompressed layer tar (`tar`, read to its end) as
/// [`write_layer`] compresses the tar it makes: the same bytes give the same blob, so a layer
/// kept uncompressed can be offered in any compression without being rebuilt.
pub fn compress_tar<R: io::Read + Send, W: Write + Send>(
    mut tar: R,
    opts: &LayerOptions,
    out: W,
) -> Result<LayerDigests, LayerError> {
    let threads = match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    if opts.compression == Compression::None {
        let mut w = HashWriter::new(out);
        io::copy(&mut tar, &mut w).map_err(LayerError::Write)?;
        let (digest, size) = w.finish()?;
        return Ok(LayerDigests {
            diff_id: digest.clone(),
            digest,
            size,
            uncompressed_size: size,
        });
    }
    std::thread::scope(|s| {
        let (tx, rx) = sync_channel::<Vec<u8>>(CHANNEL_DEPTH);
        let producer = std::thread::Builder::new()
            .name("strata-tar-read".to_owned())
            .spawn_scoped(s, move || {
                let mut sink = BlockSink::new(tx);
                io::copy(&mut tar, &mut sink).map_err(LayerError::Write)?;
                sink.finish()
            })
            .map_err(|e| LayerError::Threads(e.to_string()))?;
        let compressed = match opts.compression {
            Compression::Zstd => compress_zstd(rx, threads, out),
            _ => compress_gzip(rx, threads, out),
        };
        let produced = match producer.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        match (produced, compressed) {
            (Err(e), _) if !is_disconnect(&e) => Err(e),
            (_, Err(e)) => Err(e),
            (Err(e), Ok(_)) => Err(e),
            (Ok((diff_id, uncompressed_size)), Ok((digest, size))) => Ok(LayerDigests {
                diff_id,
                digest,
                size,
                uncompressed_size,
            }),
        }
    })
}

/// Message of the error a [`BlockSink`] returns when its receiver is gone.
const DISCONNECTED: &str = "layer compressor stopped";

fn is_disconnect(e: &LayerError) -> bool {
    matches!(e, LayerError::Write(io) if io.kind() == io::ErrorKind::BrokenPipe
        && io.to_string() == DISCONNECTED)
}

/// The tar thread's output: hashes the stream and sends it on in blocks of
/// [`GZIP_BLOCK_SIZE`] bytes.
struct BlockSink {
    tx: SyncSender<Vec<u8>>,
    block: Vec<u8>,
    hasher: Sha256,
    len: u64,
}

impl BlockSink {
    fn new(tx: SyncSender<Vec<u8>>) -> Self {
        Self {
            tx,
            block: Vec::with_capacity(GZIP_BLOCK_SIZE),
            hasher: Sha256::new(),
            len: 0,
        }
    }

    fn send(&mut self) -> io::Result<()> {
        let block = std::mem::replace(&mut self.block, Vec::with_capacity(GZIP_BLOCK_SIZE));
        self.hasher.update(&block);
        self.len += block.len() as u64;
        self.tx
            .send(block)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, DISCONNECTED))
    }

    /// Sends the last, partial block; returns the diff ID and the tar's length.
    fn finish(mut self) -> Result<(ContentDigest, u64), LayerError> {
        if !self.block.is_empty() {
            self.send().map_err(LayerError::Write)?;
        }
        Ok((digest_string(self.hasher), self.len))
    }
}

impl Write for BlockSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(GZIP_BLOCK_SIZE - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        if self.block.len() == GZIP_BLOCK_SIZE {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Hashes and counts what passes through to the output.
struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> HashWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// Flushes the output; returns the digest and the byte count.
    fn finish(mut self) -> Result<(ContentDigest, u64), LayerError> {
        self.inner.flush().map_err(LayerError::Write)?;
        Ok((digest_string(self.hasher), self.len))
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn digest_string(hasher: Sha256) -> crate::digest::Digest {
    crate::digest::Digest::from_sha256(hasher.finalize().into())
}

/// A deflated block on its way back from the pool, with the CRC of its input.
type Deflated = io::Result<(Vec<u8>, crc32fast::Hasher)>;

/// Parallel gzip of the blocks arriving on `rx`; returns the blob digest and size.
fn compress_gzip<W: Write>(
    rx: Receiver<Vec<u8>>,
    threads: usize,
    out: W,
) -> Result<(ContentDigest, u64), LayerError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("strata-gzip-{i}"))
        .build()
        .map_err(|e| LayerError::Threads(e.to_string()))?;
    let mut out = HashWriter::new(out);
    out.write_all(&GZIP_HEADER).map_err(LayerError::Write)?;
    let mut crc = crc32fast::Hasher::new();
    let mut in_flight: VecDeque<Receiver<Deflated>> = VecDeque::new();
    let max_in_flight = 2 * threads + 1;
    let mut write_one = |result: Result<Deflated, _>, out: &mut HashWriter<W>| {
        let (bytes, block_crc) = result
            .map_err(|_| LayerError::Threads("a compression thread died".to_owned()))?
            .map_err(LayerError::Compress)?;
        crc.combine(&block_crc);
        out.write_all(&bytes).map_err(LayerError::Write)
    };

    let mut previous: Option<Arc<Vec<u8>>> = None;
    for block in rx {
        let block = Arc::new(block);
        let dict = previous.replace(Arc::clone(&block));
        let (done_tx, done_rx) = sync_channel(1);
        pool.spawn(move || {
            let dict = dict.as_deref().map_or(&[][..], |d| dictionary_of(d));
            let result = deflate_block(dict, &block, GZIP_LEVEL).map(|bytes| {
                let mut h = crc32fast::Hasher::new();
                h.update(&block);
                (bytes, h)
            });
            // The receiver is only gone when the layer already failed.
            let _ = done_tx.send(result);
        });
        in_flight.push_back(done_rx);
        // Write whatever is ready, and wait once too much is queued.
        while let Some(front) = in_flight.front() {
            let result = if in_flight.len() >= max_in_flight {
                front.recv().map_err(|_| ())
            } else {
                match front.try_recv() {
                    Ok(r) => Ok(r),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => Err(()),
                }
            };
            in_flight.pop_front();
            write_one(result, &mut out)?;
        }
    }
    for done in in_flight {
        write_one(done.recv().map_err(|_| ()), &mut out)?;
    }
    let len = crc.total_len();
    out.write_all(&DEFLATE_FINAL_BLOCK)
        .and_then(|()| out.write_all(&gzip_trailer(crc.finalize(), len)))
        .map_err(LayerError::Write)?;
    out.finish()
}

/// Multithreaded zstd of the blocks arriving on `rx`; returns the blob digest and size.
///
/// zstd always runs with at least one worker: its output is the same for any number of
/// workers, but differs from the single-threaded (no worker) mode.
fn compress_zstd<W: Write>(
    rx: Receiver<Vec<u8>>,
    threads: usize,
    out: W,
) -> Result<(ContentDigest, u64), LayerError> {
    let workers = u32::try_from(threads.max(1)).unwrap_or(u32::MAX);
    let mut enc = zstd::stream::write::Encoder::new(HashWriter::new(out), ZSTD_LEVEL)
        .map_err(LayerError::Compress)?;
    enc.multithread(workers).map_err(LayerError::Compress)?;
    enc.include_checksum(true).map_err(LayerError::Compress)?;
    for block in rx {
        enc.write_all(&block).map_err(LayerError::Write)?;
    }
    enc.finish().map_err(LayerError::Write)?.finish()
}
