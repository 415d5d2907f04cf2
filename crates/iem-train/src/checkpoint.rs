//! Checkpoints: `magic | version | config hash | payload length | checksum | payload` (the
//! checksum covers everything after the magic), the
//! payload a bincode (serde) encoding. Decoding checks every header field before touching the
//! payload and bounds bincode's allocations, so a truncated, corrupted or foreign file gives a
//! typed [`CheckpointError`], never a panic or a huge allocation. Writes are atomic.

use serde::{Serialize, de::DeserializeOwned};
use std::fmt;
use std::io::Write;
use std::path::Path;

/// First bytes of every checkpoint.
pub const MAGIC: &[u8; 8] = b"IEMCKPT\x01";
/// Current format version.
pub const VERSION: u32 = 1;
const HEADER: usize = 8 + 4 + 8 + 8 + 8;

/// Why a checkpoint could not be read or written.
#[derive(Clone, Debug, PartialEq)]
pub enum CheckpointError {
    /// Shorter than its header or its stated payload.
    Truncated {
        /// Bytes needed.
        needed: u64,
        /// Bytes present.
        got: u64,
    },
    /// Not a checkpoint (wrong magic bytes).
    Foreign,
    /// A format version this build cannot read.
    Version(u32),
    /// The payload does not match its checksum.
    Corrupt,
    /// The checkpoint was written for another configuration.
    ConfigMismatch {
        /// Hash expected.
        expected: u64,
        /// Hash found.
        found: u64,
    },
    /// The payload is larger than allowed.
    TooLarge(u64),
    /// The payload passed its checksum but does not decode as the expected type.
    Decode(String),
    /// A file-system error.
    Io(String),
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointError::Truncated { needed, got } => {
                write!(f, "truncated: needs {needed} bytes, has {got}")
            }
            CheckpointError::Foreign => {
                write!(f, "not an implicit-em checkpoint (wrong magic bytes)")
            }
            CheckpointError::Version(v) => {
                write!(f, "format version {v} is not supported (this build reads {VERSION})")
            }
            CheckpointError::Corrupt => write!(f, "payload checksum mismatch (corrupted file)"),
            CheckpointError::ConfigMismatch { expected, found } => {
                write!(
                    f,
                    "written for another configuration (hash {found:016x}, expected {expected:016x})"
                )
            }
            CheckpointError::TooLarge(n) => write!(f, "payload of {n} bytes exceeds the limit"),
            CheckpointError::Decode(s) => write!(f, "payload does not decode: {s}"),
            CheckpointError::Io(s) => write!(f, "{s}"),
        }
    }
}

impl std::error::Error for CheckpointError {}

/// Largest payload accepted (4 GiB).
pub const MAX_PAYLOAD: u64 = 4 << 30;

/// FNV-1a, 64 bits: the checksum and the config hash.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The checksum covers the header fields after the magic (version, config hash, length) and
/// the payload, so any flipped byte is detected.
pub fn checksum(header_fields: &[u8], payload: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in header_fields.iter().chain(payload) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Encodes `value` with the hash of its resolved configuration.
pub fn encode<T: Serialize>(value: &T, config_hash: u64) -> Result<Vec<u8>, CheckpointError> {
    let payload = bincode::serde::encode_to_vec(value, bincode::config::standard())
        .map_err(|e| CheckpointError::Decode(e.to_string()))?;
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&config_hash.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    let sum = checksum(&out[8..28], &payload);
    out.extend_from_slice(&sum.to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn decode_limited<T: DeserializeOwned, const L: usize>(
    payload: &[u8],
) -> Result<T, CheckpointError> {
    let cfg = bincode::config::standard().with_limit::<L>();
    match bincode::serde::decode_from_slice::<T, _>(payload, cfg) {
        Ok((v, used)) if used == payload.len() => Ok(v),
        Ok((_, used)) => {
            Err(CheckpointError::Decode(format!("{} trailing bytes", payload.len() - used)))
        }
        Err(e) => Err(CheckpointError::Decode(e.to_string())),
    }
}

/// Decodes a checkpoint, checking magic, version, config hash (when `expected_hash` is
/// given), length and checksum before decoding. Bincode may claim at most a small multiple of
/// the payload's own size, so a forged length field cannot trigger a huge allocation.
pub fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    expected_hash: Option<u64>,
) -> Result<T, CheckpointError> {
    // A prefix of the magic is a truncated checkpoint; anything else is foreign.
    if (bytes.len() < 8 || &bytes[..8] != MAGIC) && (bytes.len() >= 8 || !MAGIC.starts_with(bytes))
    {
        return Err(CheckpointError::Foreign);
    }
    if bytes.len() < HEADER {
        return Err(CheckpointError::Truncated { needed: HEADER as u64, got: bytes.len() as u64 });
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(CheckpointError::Version(version));
    }
    let hash = u64_at(bytes, 12);
    if let Some(h) = expected_hash
        && h != hash
    {
        return Err(CheckpointError::ConfigMismatch { expected: h, found: hash });
    }
    let len = u64_at(bytes, 20);
    if len > MAX_PAYLOAD {
        return Err(CheckpointError::TooLarge(len));
    }
    let have = (bytes.len() - HEADER) as u64;
    if have < len {
        return Err(CheckpointError::Truncated {
            needed: HEADER as u64 + len,
            got: bytes.len() as u64,
        });
    }
    if have > len {
        return Err(CheckpointError::Corrupt);
    }
    let payload = &bytes[HEADER..];
    if checksum(&bytes[8..28], payload) != u64_at(bytes, 28) {
        return Err(CheckpointError::Corrupt);
    }
    // Limit bincode's claimed bytes to a tier of at least 8× the payload.
    match len {
        0..=131_072 => decode_limited::<T, { 1 << 20 }>(payload),
        131_073..=2_097_152 => decode_limited::<T, { 1 << 24 }>(payload),
        2_097_153..=33_554_432 => decode_limited::<T, { 1 << 28 }>(payload),
        _ => decode_limited::<T, { 1 << 32 }>(payload),
    }
}

/// Writes bytes atomically: a temporary file in the same directory, flushed and synced, then
/// renamed over `path`. A reader sees the old file or the new one, never a partial one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let io = |e: std::io::Error| CheckpointError::Io(format!("{}: {e}", path.display()));
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Saves `value` to `path` atomically.
pub fn save<T: Serialize>(path: &Path, value: &T, config_hash: u64) -> Result<(), CheckpointError> {
    write_atomic(path, &encode(value, config_hash)?)
}

/// Loads a checkpoint from `path`.
pub fn load<T: DeserializeOwned>(
    path: &Path,
    expected_hash: Option<u64>,
) -> Result<T, CheckpointError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| CheckpointError::Io(format!("{}: {e}", path.display())))?;
    if meta.len() > MAX_PAYLOAD + HEADER as u64 {
        return Err(CheckpointError::TooLarge(meta.len()));
    }
    let bytes =
        std::fs::read(path).map_err(|e| CheckpointError::Io(format!("{}: {e}", path.display())))?;
    decode(&bytes, expected_hash)
}
