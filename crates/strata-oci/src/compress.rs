//! Layer compression: the choice of algorithm and the block-parallel gzip encoder.
//!
//! Gzip is produced the way pigz does it: the uncompressed stream is cut into blocks of a fixed
//! size ([`GZIP_BLOCK_SIZE`]), each block is deflated on its own (primed with the last 32 KiB of
//! the block before it, so the ratio stays close to a single-stream deflate) and ends with a
//! sync flush, so the compressed blocks simply concatenate. The stream is closed with an empty
//! final block. Because block boundaries and dictionaries depend only on the data, the output
//! is byte-for-byte the same for any number of threads.

use std::fmt;
use std::io;
use std::str::FromStr;

use flate2::{Compress, FlushCompress, Status};

/// How a layer blob is compressed.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Gzip (deflate), the format every registry and runtime reads. The default.
    #[default]
    Gzip,
    /// Zstandard: smaller and faster, read by recent runtimes.
    Zstd,
    /// No compression: the blob is the tar itself.
    None,
}

impl Compression {
    /// All variants, in the order they are listed to users.
    pub const ALL: [Compression; 3] = [Compression::Gzip, Compression::Zstd, Compression::None];

    /// The OCI media type of a layer blob compressed this way.
    pub fn media_type(&self) -> &'static str {
        match self {
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
        }
    }

    /// The compression a blob starting with `head` has, told by its magic bytes (gzip
    /// `1f 8b`, zstd `28 b5 2f fd`; anything else is taken for a plain tar).
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The name used on the command line and in configuration: `gzip`, `zstd` or `none`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::None => "none",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A compression name that is not one of `gzip`, `zstd` or `none`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown compression `{0}`: expected one of gzip, zstd, none")]
pub struct ParseCompressionError(pub String);

impl FromStr for Compression {
    type Err = ParseCompressionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Compression::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| ParseCompressionError(s.to_owned()))
    }
}

/// A reader of the uncompressed tar of a layer blob compressed with `compression`: the one
/// layer decompressor every reader of layers uses. Gzip is read as a multi-member stream (the
/// parallel encoder's output, `pigz`'s, and concatenated gzip files are all valid layers).
pub fn decompress<'a, R: io::BufRead + 'a>(
    blob: R,
    compression: Compression,
) -> io::Result<Box<dyn io::Read + 'a>> {
    Ok(match compression {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(blob)),
        Compression::Zstd => Box::new(zstd::Decoder::with_buffer(blob)?),
        Compression::None => Box::new(blob),
    })
}

/// Size of the uncompressed blocks the parallel gzip encoder works on. Fixed, so the output
/// never depends on the number of threads.
pub const GZIP_BLOCK_SIZE: usize = 1 << 20;

/// The deflate level used for gzip layers (the level of `gzip` and `pigz` by default).
pub const GZIP_LEVEL: u32 = 6;

/// The zstd level used for zstd layers (the level of `zstd` by default).
pub const ZSTD_LEVEL: i32 = 3;

/// How much of the previous block primes the deflate of the next one (deflate's window).
const DICT_SIZE: usize = 32 * 1024;

/// The gzip member header: no file name, no comment, modification time 0, no extra flags,
/// OS "unknown". Fixed, so equal content gives equal bytes on any host.
pub(crate) const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// An empty deflate block with the "final" bit set (fixed Huffman codes, just the end-of-block
/// symbol): closes a stream made of sync-flushed blocks.
pub(crate) const DEFLATE_FINAL_BLOCK: [u8; 2] = [0x03, 0x00];

/// The gzip trailer: CRC-32 and length modulo 2^32 of the uncompressed data, little-endian.
pub(crate) fn gzip_trailer(crc: u32, len: u64) -> [u8; 8] {
    let mut t = [0u8; 8];
    t[..4].copy_from_slice(&crc.to_le_bytes());
    // ISIZE is defined as the length modulo 2^32; the truncation is intended.
    t[4..].copy_from_slice(&((len & 0xffff_ffff) as u32).to_le_bytes());
    t
}

/// The dictionary a block is primed with: the tail of the block before it.
pub(crate) fn dictionary_of(previous: &[u8]) -> &[u8] {
    &previous[previous.len().saturating_sub(DICT_SIZE)..]
}

/// Deflates one block of a parallel gzip stream: raw deflate at `level`, primed with `dict`,
/// ending with a sync flush so the next block's output can follow directly.
pub(crate) fn deflate_block(dict: &[u8], data: &[u8], level: u32) -> io::Result<Vec<u8>> {
    let mut z = Compress::new(flate2::Compression::new(level), false);
    if !dict.is_empty() {
        z.set_dictionary(dict).map_err(io::Error::other)?;
    }
    // Deflate's worst case is a few bytes per 16 KiB stored block; this avoids any regrowth.
    let mut out = Vec::with_capacity(data.len() + data.len() / 64 + 1024);
    loop {
        let consumed = usize::try_from(z.total_in()).map_err(io::Error::other)?;
        let input = data.get(consumed..).unwrap_or_default();
        let status = z
            .compress_vec(input, &mut out, FlushCompress::Sync)
            .map_err(io::Error::other)?;
        let done = z.total_in() == data.len() as u64 && out.len() < out.capacity();
        match status {
            Status::Ok | Status::BufError if done => return Ok(out),
            Status::StreamEnd => return Err(io::Error::other("deflate ended a stream early")),
            _ => out.reserve(64 * 1024),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn names_round_trip() {
        for c in Compression::ALL {
            assert_eq!(c.as_str().parse::<Compression>(), Ok(c));
            assert_eq!(c.to_string(), c.as_str());
        }
        let err = "lz4"
            .parse::<Compression>()
            .expect_err("lz4 is not supported");
        assert!(err.to_string().contains("gzip, zstd, none"), "{err}");
        assert_eq!(Compression::default(), Compression::Gzip);
        assert_eq!(
            Compression::Zstd.media_type(),
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
    }

    #[test]
    fn blocks_concatenate_into_one_gzip_stream() {
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| format!("line {} {}\n", i, i % 7).into_bytes())
            .collect();
        let mut gz = GZIP_HEADER.to_vec();
        let mut crc = crc32fast::Hasher::new();
        let mut prev: &[u8] = &[];
        for block in data.chunks(100_000) {
            gz.extend(deflate_block(dictionary_of(prev), block, GZIP_LEVEL).expect("deflate"));
            crc.update(block);
            prev = block;
        }
        gz.extend(DEFLATE_FINAL_BLOCK);
        gz.extend(gzip_trailer(crc.finalize(), data.len() as u64));
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .expect("valid gzip");
        assert_eq!(back, data);
        assert!(gz.len() < data.len() / 3, "dictionaries keep the ratio up");
    }

    #[test]
    fn empty_stream_is_valid_gzip() {
        let mut gz = GZIP_HEADER.to_vec();
        gz.extend(DEFLATE_FINAL_BLOCK);
        gz.extend(gzip_trailer(0, 0));
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .expect("valid gzip");
        assert!(back.is_empty());
    }
}
