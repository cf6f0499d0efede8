//! The ext4 root file system: `mkfs.ext4 -d` from a staged tree, then every inode time set to
//! `SOURCE_DATE_EPOCH` (mke2fs 1.47.0 copies `atime` and `ctime` from the staging tree, and a
//! tree's `ctime` cannot be set), with the inode checksums made again.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// The features of the root file system, written out so the host's `/etc/mke2fs.conf` does not
/// change the bytes (Debian 12's defaults for ext4).
pub const FEATURES: &str =
    "has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize";

const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_CSUM_SEED: u32 = 0x2000;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;
const BG_INODE_UNINIT: u16 = 0x1;

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("not an ext4 image: {what}"),
    )
}

/// CRC-32C (Castagnoli) as ext4 uses it: no inversion on entry or exit.
pub(crate) fn crc32c(mut crc: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// Sets `atime`, `ctime` and `crtime` of every inode in use to `epoch`, and `mtime` to at
/// most `epoch` (nanoseconds zero), and makes each changed inode's checksum again. Returns the
/// number of inodes rewritten.
pub fn clamp_inode_times(image: &Path, epoch: u64) -> io::Result<u64> {
    let mut f = OpenOptions::new().read(true).write(true).open(image)?;
    let mut sb = vec![0u8; 1024];
    f.seek(SeekFrom::Start(1024))?;
    f.read_exact(&mut sb)?;
    if le16(&sb, 0x38) != 0xEF53 {
        return Err(bad("no ext2/3/4 magic"));
    }
    let inodes_count = u64::from(le32(&sb, 0x00));
    let blocks_count = u64::from(le32(&sb, 0x04));
    let first_data_block = u64::from(le32(&sb, 0x14));
    let log_block = le32(&sb, 0x18);
    if log_block > 6 {
        return Err(bad("block size"));
    }
    let block_size = 1024u64 << log_block;
    let blocks_per_group = u64::from(le32(&sb, 0x20));
    let inodes_per_group = u64::from(le32(&sb, 0x28));
    let inode_size = usize::from(le16(&sb, 0x58));
    let incompat = le32(&sb, 0x60);
    let ro_compat = le32(&sb, 0x64);
    if blocks_per_group == 0 || inodes_per_group == 0 || !(128..=4096).contains(&inode_size) {
        return Err(bad("geometry"));
    }
    let blocks_count = if incompat & INCOMPAT_64BIT != 0 {
        blocks_count | (u64::from(le32(&sb, 0x150)) << 32)
    } else {
        blocks_count
    };
    let desc_size = if incompat & INCOMPAT_64BIT != 0 {
        usize::from(le16(&sb, 0xFE))
    } else {
        32
    };
    if desc_size < 32 {
        return Err(bad("descriptor size"));
    }
    let csum = ro_compat & RO_COMPAT_METADATA_CSUM != 0;
    let seed = if incompat & INCOMPAT_CSUM_SEED != 0 {
        le32(&sb, 0x270)
    } else {
        crc32c(!0, &sb[0x68..0x78])
    };
    let groups = (blocks_count - first_data_block).div_ceil(blocks_per_group);
    if groups * inodes_per_group < inodes_count {
        return Err(bad("inode count"));
    }
    let mut descs = vec![0u8; usize::try_from(groups).map_err(|_| bad("groups"))? * desc_size];
    f.seek(SeekFrom::Start((first_data_block + 1) * block_size))?;
    f.read_exact(&mut descs)?;

    let epoch_lo = (epoch & 0xFFFF_FFFF) as u32;
    let epoch_extra = ((epoch >> 32) & 3) as u32;
    let mut table = vec![0u8; inodes_per_group as usize * inode_size];
    let mut rewritten = 0;
    for g in 0..groups as usize {
        let d = &descs[g * desc_size..(g + 1) * desc_size];
        if le16(d, 0x12) & BG_INODE_UNINIT != 0 {
            continue;
        }
        let mut itable = u64::from(le32(d, 0x08));
        if desc_size >= 64 {
            itable |= u64::from(le32(d, 0x28)) << 32;
        }
        let offset = itable * block_size;
        f.seek(SeekFrom::Start(offset))?;
        f.read_exact(&mut table)?;
        let mut changed = false;
        for i in 0..inodes_per_group as usize {
            let inum = (g as u64 * inodes_per_group + i as u64 + 1) as u32;
            let ino = &mut table[i * inode_size..(i + 1) * inode_size];
            if le16(ino, 0x00) == 0 {
                continue; // not in use
            }
            let extra = if inode_size > 128 {
                usize::from(le16(ino, 0x80))
            } else {
                0
            };
            // Which of the extra time fields this inode has.
            let has = |end: usize| inode_size > 128 && extra + 0x80 >= end;
            put32(ino, 0x08, epoch_lo); // atime
            put32(ino, 0x0C, epoch_lo); // ctime
            let mtime = u64::from(le32(ino, 0x10))
                | if has(0x8C) {
                    u64::from(le32(ino, 0x88) & 3) << 32
                } else {
                    0
                };
            let clamp_mtime = mtime > epoch;
            if clamp_mtime {
                put32(ino, 0x10, epoch_lo);
            }
            if has(0x88) {
                put32(ino, 0x84, epoch_extra); // ctime_extra
            }
            if has(0x8C) {
                // Seconds' epoch bits kept (or clamped), nanoseconds dropped.
                let kept = if clamp_mtime {
                    epoch_extra
                } else {
                    le32(ino, 0x88) & 3
                };
                put32(ino, 0x88, kept);
            }
            if has(0x90) {
                put32(ino, 0x8C, epoch_extra); // atime_extra
            }
            if has(0x94) {
                put32(ino, 0x90, epoch_lo); // crtime
            }
            if has(0x98) {
                put32(ino, 0x94, epoch_extra); // crtime_extra
            }
            if csum {
                let has_hi = has(0x84);
                put16(ino, 0x7C, 0);
                if has_hi {
                    put16(ino, 0x82, 0);
                }
                let mut crc = crc32c(seed, &inum.to_le_bytes());
                crc = crc32c(crc, &ino[0x64..0x68]); // i_generation
                crc = crc32c(crc, ino);
                put16(ino, 0x7C, (crc & 0xFFFF) as u16);
                if has_hi {
                    put16(ino, 0x82, (crc >> 16) as u16);
                }
            }
            changed = true;
            rewritten += 1;
        }
        if changed {
            f.seek(SeekFrom::Start(offset))?;
            f.write_all(&table)?;
        }
    }
    f.sync_all()?;
    Ok(rewritten)
}

/// Reads the file system UUID of an ext4 image (for tests and reports).
pub fn uuid_of(image: &Path) -> io::Result<[u8; 16]> {
    let mut f = File::open(image)?;
    let mut sb = vec![0u8; 1024];
    f.seek(SeekFrom::Start(1024))?;
    f.read_exact(&mut sb)?;
    if le16(&sb, 0x38) != 0xEF53 {
        return Err(bad("no ext2/3/4 magic"));
    }
    let mut u = [0u8; 16];
    u.copy_from_slice(&sb[0x68..0x78]);
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_published_check_value() {
        // CRC-32C of "123456789" with the usual inversions is 0xE3069283.
        assert_eq!(!crc32c(!0, b"123456789"), 0xE306_9283);
    }
}
