//! The append log `scores.log`: fixed-width binary records, one per scored (image, question) pair.
//!
//! Layout (all little-endian):
//! - a 24-byte header: magic `MAKDSLOG`, u32 log version, u32 images, u32 questions, u32 CRC-32 of
//!   the first 20 bytes;
//! - then 24-byte records: u32 image, u16 question, u8 status, u8 zero, f32 p_yes, f32 logit_yes,
//!   f32 logit_no, u32 CRC-32 of the first 20 bytes.
//!
//! Records are only ever appended, so a kill -9 can tear at most the last one. Replay streams the
//! file once, applies every record whose CRC and fields are valid (a later record for the same
//! pair wins), and reports where the last valid record ends so the writer can cut a torn tail off.

use crate::error::{input, IoContext, Result};
use std::io::Read;
use std::path::Path;

pub const RECORD_LEN: usize = 24;
pub const HEADER_LEN: usize = 24;
const MAGIC: &[u8; 8] = b"MAKDSLOG";
const LOG_VERSION: u32 = 1;
/// Records read per chunk during replay (1.5 MiB): big enough for streaming speed, small enough
/// that replay memory stays negligible next to the score matrix.
const CHUNK_RECORDS: usize = 65536;

/// One decoded record.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Record {
    pub image: u32,
    pub question: u16,
    pub status: u8,
    pub p_yes: f32,
    pub logit_yes: f32,
    pub logit_no: f32,
}

impl Record {
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut b = [0u8; RECORD_LEN];
        b[0..4].copy_from_slice(&self.image.to_le_bytes());
        b[4..6].copy_from_slice(&self.question.to_le_bytes());
        b[6] = self.status;
        b[7] = 0;
        b[8..12].copy_from_slice(&self.p_yes.to_le_bytes());
        b[12..16].copy_from_slice(&self.logit_yes.to_le_bytes());
        b[16..20].copy_from_slice(&self.logit_no.to_le_bytes());
        let crc = crc32(&b[0..20]);
        b[20..24].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// `None` when the checksum or the reserved byte is wrong (a torn or overwritten record).
    pub fn decode(b: &[u8; RECORD_LEN]) -> Option<Record> {
        let crc = u32::from_le_bytes([b[20], b[21], b[22], b[23]]);
        if crc != crc32(&b[0..20]) || b[7] != 0 {
            return None;
        }
        let f = |i: usize| f32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Some(Record {
            image: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            question: u16::from_le_bytes([b[4], b[5]]),
            status: b[6],
            p_yes: f(8),
            logit_yes: f(12),
            logit_no: f(16),
        })
    }
}

pub fn encode_header(images: u32, questions: u32) -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[0..8].copy_from_slice(MAGIC);
    b[8..12].copy_from_slice(&LOG_VERSION.to_le_bytes());
    b[12..16].copy_from_slice(&images.to_le_bytes());
    b[16..20].copy_from_slice(&questions.to_le_bytes());
    let crc = crc32(&b[0..20]);
    b[20..24].copy_from_slice(&crc.to_le_bytes());
    b
}

/// What one streaming pass over a log found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Replay {
    /// Records applied.
    pub valid: u64,
    /// Records skipped because their checksum or fields were wrong (a bad stretch of bytes counts
    /// as its length in records, rounded up).
    pub corrupt: u64,
    /// Byte offset just past the last valid record (or the header): everything after it is a
    /// torn or corrupt tail the writer truncates.
    pub valid_end: u64,
    /// The header itself was torn (a crash right after creating the file).
    pub header_torn: bool,
}

/// Stream `path` once and call `apply` on every valid record in file order. A record is valid
/// when its checksum matches and `image < images`, `question < questions`, and its status/value
/// pass `valid_value`.
pub fn replay(
    path: &Path,
    images: usize,
    questions: usize,
    valid_value: impl Fn(&Record) -> bool,
    mut apply: impl FnMut(&Record),
) -> Result<Replay> {
    let mut file = std::fs::File::open(path).at(path)?;
    let mut header = [0u8; HEADER_LEN];
    let got = read_full(&mut file, &mut header).at(path)?;
    if got < HEADER_LEN {
        return Ok(Replay {
            header_torn: true,
            ..Replay::default()
        });
    }
    if header != encode_header(images as u32, questions as u32) {
        let shape_differs = header[0..12] == encode_header(0, 0)[0..12];
        return Err(input(
            if shape_differs {
                "the log was written for a different number of images or questions".to_string()
            } else {
                "not a makd score log (bad magic, version or header checksum)".to_string()
            },
            path.display().to_string(),
            "the store directory is damaged or from another store: delete it or use another --out",
        ));
    }
    let mut out = Replay {
        valid_end: HEADER_LEN as u64,
        ..Replay::default()
    };
    // Records are normally back to back, but a torn record in the middle (a crash of an older
    // makd without the store lock, a disk fault) would shift every later one: after a bad window
    // the scan slides one byte at a time until a record checks out again, so one bad stretch
    // costs only itself. A false resync needs a random 20 bytes to match their CRC-32 (2^-32).
    let mut buf = vec![0u8; CHUNK_RECORDS * RECORD_LEN];
    let mut have = 0usize;
    let mut base = HEADER_LEN as u64;
    let mut skipped = 0usize;
    loop {
        let n = read_full(&mut file, &mut buf[have..]).at(path)?;
        have += n;
        let eof = have < buf.len();
        let mut p = 0usize;
        while p + RECORD_LEN <= have {
            let window: &[u8; RECORD_LEN] = buf[p..p + RECORD_LEN]
                .try_into()
                .expect("slice of RECORD_LEN");
            match Record::decode(window) {
                Some(r)
                    if (r.image as usize) < images
                        && (r.question as usize) < questions
                        && valid_value(&r) =>
                {
                    out.corrupt += skipped.div_ceil(RECORD_LEN) as u64;
                    skipped = 0;
                    apply(&r);
                    out.valid += 1;
                    p += RECORD_LEN;
                    out.valid_end = base + p as u64;
                }
                _ => {
                    skipped += 1;
                    p += 1;
                }
            }
        }
        // Keep the unread tail (shorter than a record) for the next chunk.
        buf.copy_within(p..have, 0);
        base += p as u64;
        have -= p;
        if eof {
            break;
        }
    }
    out.corrupt += skipped.div_ceil(RECORD_LEN) as u64;
    Ok(out)
}

/// Read until `buf` is full or the file ends; returns the bytes read.
fn read_full(file: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// CRC-32 (IEEE 802.3, reflected, as in zlib/PNG). An all-zero record does not check out, so
/// zero-filled blocks left by a crash are rejected.
pub fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut c = 0xFFFF_FFFFu32;
    for &b in bytes {
        c = TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
    }
    c ^ 0xFFFF_FFFF
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        // The CRC-32 check value of the ASCII string "123456789" is 0xCBF43926.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        assert_ne!(crc32(&[0u8; 20]), 0);
    }

    #[test]
    fn record_encode_decode_roundtrip_and_layout() {
        let r = Record {
            image: 0x0102_0304,
            question: 0x0506,
            status: 1,
            p_yes: 0.25,
            logit_yes: -1.5,
            logit_no: f32::NEG_INFINITY,
        };
        let b = r.encode();
        assert_eq!(&b[0..4], &[4, 3, 2, 1]);
        assert_eq!(&b[4..6], &[6, 5]);
        assert_eq!(b[6], 1);
        assert_eq!(&b[8..12], &0.25f32.to_le_bytes());
        assert_eq!(Record::decode(&b), Some(r));
        // Any single flipped bit is caught.
        for i in 0..RECORD_LEN {
            let mut bad = b;
            bad[i] ^= 0x10;
            assert_eq!(Record::decode(&bad), None, "flip in byte {i} accepted");
        }
        assert_eq!(Record::decode(&[0u8; RECORD_LEN]), None);
    }

    #[test]
    fn header_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("scores.log");
        std::fs::write(&p, encode_header(3, 2)).unwrap();
        let r = replay(&p, 3, 2, |_| true, |_| {}).unwrap();
        assert_eq!(r.valid_end, HEADER_LEN as u64);
        assert!(replay(&p, 4, 2, |_| true, |_| {}).is_err());
        std::fs::write(&p, &encode_header(3, 2)[..10]).unwrap();
        assert!(replay(&p, 3, 2, |_| true, |_| {}).unwrap().header_torn);
    }
}
