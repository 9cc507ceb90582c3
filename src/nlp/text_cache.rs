//! A file of embeddings of fixed texts (the built-in taxonomy and the
//! calibration background), kept beside the pinned model files so a new
//! data directory does not re-embed them: its name carries the encoder, and
//! the encoder's files are checked against their sha256 pins at load.
//!
//! Layout: per entry `u32` text length, the UTF-8 text, `u32` dimension,
//! then the floats (little-endian). Written whole to a temporary file and
//! renamed; a missing, unreadable or truncated file is just a cold cache.

use std::collections::HashMap;
use std::path::Path;

/// Reads the cache; empty when absent or damaged.
pub fn load(path: &Path) -> HashMap<String, Vec<f32>> {
    let Ok(bytes) = std::fs::read(path) else {
        return HashMap::new();
    };
    parse(&bytes).unwrap_or_default()
}

fn parse(bytes: &[u8]) -> Option<HashMap<String, Vec<f32>>> {
    let mut out = HashMap::new();
    let mut at = 0;
    let u32_at = |at: &mut usize| -> Option<usize> {
        let v = u32::from_le_bytes(bytes.get(*at..*at + 4)?.try_into().ok()?) as usize;
        *at += 4;
        Some(v)
    };
    while at < bytes.len() {
        let len = u32_at(&mut at)?;
        let text = std::str::from_utf8(bytes.get(at..at + len)?)
            .ok()?
            .to_string();
        at += len;
        let dim = u32_at(&mut at)?;
        let floats = bytes.get(at..at + dim * 4)?;
        at += dim * 4;
        out.insert(
            text,
            floats
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        );
    }
    Some(out)
}

/// Writes the entries (best effort: an error leaves the old file).
pub fn store<'a>(
    path: &Path,
    entries: impl Iterator<Item = (&'a str, &'a [f32])>,
) -> std::io::Result<()> {
    let mut bytes = Vec::new();
    for (text, vector) in entries {
        bytes.extend_from_slice(&(text.len() as u32).to_le_bytes());
        bytes.extend_from_slice(text.as_bytes());
        bytes.extend_from_slice(&(vector.len() as u32).to_le_bytes());
        for x in vector {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let temporary = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&temporary, &bytes)?;
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage_is_a_cold_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/cache.bin");
        let a = vec![0.5f32, -1.0];
        store(
            &path,
            [("héllo", a.as_slice()), ("x", &[2.0][..])].into_iter(),
        )
        .unwrap();
        let back = load(&path);
        assert_eq!(back.len(), 2);
        assert_eq!(back["héllo"], a);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 2]).unwrap();
        assert!(load(&path).is_empty());
        assert!(load(&dir.path().join("absent")).is_empty());
    }
}
