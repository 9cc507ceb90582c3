//! Email addresses: `local@domain.tld`.
//!
//! The local part may hold letters and digits of any script plus `. _ % + ' -`
//! (plus-addressing, dotted names, `o'brien@…`); the domain is one or more
//! dot-separated labels (letters/digits of any script and inner hyphens)
//! followed by an ASCII top-level domain of 2..=24 letters. So `user@localhost`
//! (no dot) and a bare social-media handle `@acme_support` (no local part) are
//! not addresses. A match glued to a following word character (`a@b.comx1`) or
//! to another `@` is dropped, leading punctuation is trimmed from the local
//! part (`…jean@x.fr` starts at `j`), and file names such as
//! `icon@2x.png` (the "TLD" is a file extension that is no real TLD) are
//! skipped. Obfuscated forms (`jean [at] exemple [dot] fr`) are not detected.

use std::sync::LazyLock;

use regex::Regex;

use super::{PiiKind, Redaction};

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?x)
        [\p{L}\p{N}._%+'\-]+                              # local part
        @
        (?:[\p{L}\p{N}](?:[\p{L}\p{N}\-]*[\p{L}\p{N}])?\.)+ # domain labels
        [A-Za-z]{2,24}                                     # ASCII TLD
        ",
    )
    .expect("email regex compiles")
});

/// File extensions that look like a TLD but are none (`icon@2x.png`,
/// `logo@3x.webp`); an "address" ending in one of them is a file name.
const FILE_EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "tif", "tiff", "heic", "js", "css",
    "html", "htm", "txt", "pdf", "json", "csv",
];

pub(super) fn find(text: &str, out: &mut Vec<Redaction>) {
    if !text.as_bytes().contains(&b'@') {
        return;
    }
    for m in EMAIL.find_iter(text) {
        let s = m.as_str();
        let lead = s.len() - s.trim_start_matches(['.', '%', '+', '\'', '-']).len();
        let start = m.start() + lead;
        let Some(at) = s.find('@') else { continue };
        if m.start() + at == start {
            continue; // the local part was punctuation only
        }
        let tld = &s[s.rfind('.').map_or(0, |d| d + 1)..];
        if FILE_EXTENSIONS.iter().any(|e| tld.eq_ignore_ascii_case(e)) {
            continue;
        }
        // The regex stops the TLD at the first non-letter; a following word
        // character, hyphen or `@` means this is no address boundary.
        if let Some(c) = text[m.end()..].chars().next() {
            if c.is_alphanumeric() || matches!(c, '_' | '-' | '@') {
                continue;
            }
        }
        out.push(Redaction {
            kind: PiiKind::Email,
            start,
            end: m.end(),
        });
    }
}
