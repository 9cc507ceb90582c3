//! IBANs (ISO 13616): two letters (country), two check digits, then the
//! alphanumeric BBAN; 15..=34 characters in all, written either compact
//! (`DE89370400440532013000`) or in groups of four separated by single spaces
//! (`DE89 3704 0044 0532 0130 00`, last group 1..=4 long). Case-insensitive.
//!
//! Countries in [`IBAN_LENGTHS`] (all of the EU/EEA plus a few neighbours)
//! must have exactly their registered length; any other two-letter prefix is
//! accepted at 15..=34 characters. Every candidate must pass the mod-97 check
//! (`== 1`) and have check digits in 02..=98, which makes an accidental match
//! of an ordinary word-and-number token roughly a 1-in-100 event on top of the
//! shape rules. A candidate must stand alone: not preceded or followed by a
//! letter or digit. A span with the right shape but a wrong checksum is not
//! an IBAN, but it still keeps the phone detector off its digits.

use super::scan::space_at;
use super::{PiiKind, Redaction};

/// Registered IBAN lengths (SWIFT IBAN registry) of the countries customers
/// are most likely to mention.
const IBAN_LENGTHS: [(&[u8; 2], usize); 40] = [
    (b"AD", 24),
    (b"AT", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"CH", 21),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DK", 18),
    (b"EE", 20),
    (b"ES", 24),
    (b"FI", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IS", 26),
    (b"IT", 27),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"MC", 27),
    (b"MT", 31),
    (b"NL", 18),
    (b"NO", 15),
    (b"PL", 28),
    (b"PT", 25),
    (b"RO", 24),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"TR", 26),
    (b"VA", 22),
];

const MIN_LEN: usize = 15;
const MAX_LEN: usize = 34;

fn expected_len(cc: [u8; 2]) -> Option<usize> {
    IBAN_LENGTHS
        .iter()
        .find(|(c, _)| **c == cc)
        .map(|&(_, len)| len)
}

/// ISO 7064 MOD 97-10 as ISO 13616 applies it: move the first four characters
/// to the end, letters count as 10..=35, the remainder must be 1.
pub(super) fn mod97_ok(chars: &[u8]) -> bool {
    if chars.len() < 5 {
        return false;
    }
    let mut rem: u32 = 0;
    for &c in chars[4..].iter().chain(&chars[..4]) {
        rem = match c {
            b'0'..=b'9' => (rem * 10 + u32::from(c - b'0')) % 97,
            b'A'..=b'Z' => (rem * 100 + u32::from(c - b'A') + 10) % 97,
            b'a'..=b'z' => (rem * 100 + u32::from(c - b'a') + 10) % 97,
            _ => return false,
        };
    }
    rem == 1
}

fn ascii_alnum_run(b: &[u8], i: usize) -> usize {
    b[i..]
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric())
        .count()
}

/// The token after an alphanumeric run stands alone: no letter or digit of
/// any script follows (`DE89…00é` is not an IBAN boundary).
fn ends_word(text: &str, end: usize) -> bool {
    !text[end..]
        .chars()
        .next()
        .is_some_and(|c| c.is_alphanumeric() || c == '_')
}

/// What starts at a position: a valid IBAN, or something IBAN-shaped whose
/// check digits are wrong (a typo, or a made-up number).
enum Found {
    Valid(usize),
    ShapeOnly(usize),
}

/// Pushes every IBAN to `out`. IBAN-shaped spans that fail the checksum go
/// to `shapes`: they are not IBANs, but their digits are not a phone number
/// either (`NL91 ABNA 0417 1643 01` must not become `NL91 ABNA [PHONE]`).
pub(super) fn find(text: &str, out: &mut Vec<Redaction>, shapes: &mut Vec<Redaction>) {
    let b = text.as_bytes();
    let mut i = 0;
    while i + 4 <= b.len() {
        let starts = b[i].is_ascii_alphabetic()
            && b[i + 1].is_ascii_alphabetic()
            && b[i + 2].is_ascii_digit()
            && b[i + 3].is_ascii_digit()
            && !text[..i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_');
        if starts {
            let (list, end) = match match_at(text, i) {
                Some(Found::Valid(end)) => (&mut *out, end),
                Some(Found::ShapeOnly(end)) => (&mut *shapes, end),
                None => {
                    i += 1;
                    continue;
                }
            };
            list.push(Redaction {
                kind: PiiKind::Iban,
                start: i,
                end,
            });
            i = end;
            continue;
        }
        i += 1;
    }
}

/// The IBAN (or IBAN-shaped span) starting at `start`, which holds `LLdd`.
fn match_at(text: &str, start: usize) -> Option<Found> {
    let b = text.as_bytes();
    let cc = [
        b[start].to_ascii_uppercase(),
        b[start + 1].to_ascii_uppercase(),
    ];
    let check = (b[start + 2] - b'0') * 10 + (b[start + 3] - b'0');
    let valid = |chars: &[u8]| (2..=98).contains(&check) && mod97_ok(chars);
    let want = expected_len(cc);
    let fits = |n: usize| match want {
        Some(w) => n == w,
        None => (MIN_LEN..=MAX_LEN).contains(&n),
    };

    let first = ascii_alnum_run(b, start);
    if first > 4 {
        // Compact form: one token, nothing glued to either end.
        let end = start + first;
        if !fits(first) || !ends_word(text, end) {
            return None;
        }
        return Some(if valid(&b[start..end]) {
            Found::Valid(end)
        } else {
            Found::ShapeOnly(end)
        });
    }
    if first < 4 {
        return None;
    }
    // Grouped form: tokens of exactly four separated by single spaces, the
    // last one 1..=4 long. Collect each possible end (a token boundary with
    // an acceptable length), then take the longest that passes mod-97.
    let mut chars: Vec<u8> = b[start..start + 4].to_vec();
    let mut ends: Vec<(usize, usize)> = Vec::new(); // (byte end, char count)
    let mut pos = start + 4;
    loop {
        let sp = space_at(b, pos);
        if sp == 0 {
            break;
        }
        let tok = pos + sp;
        let n = ascii_alnum_run(b, tok);
        if n == 0 || n > 4 || chars.len() + n > MAX_LEN || !ends_word(text, tok + n) {
            break;
        }
        chars.extend_from_slice(&b[tok..tok + n]);
        pos = tok + n;
        if fits(chars.len()) {
            ends.push((pos, chars.len()));
        }
        if n < 4 {
            break;
        }
    }
    let longest = ends.last()?.0;
    Some(
        ends.iter()
            .rev()
            .find(|&&(_, n)| valid(&chars[..n]))
            .map_or(Found::ShapeOnly(longest), |&(end, _)| Found::Valid(end)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mod97() {
        assert!(mod97_ok(b"DE89370400440532013000"));
        assert!(mod97_ok(b"de89370400440532013000"));
        assert!(mod97_ok(b"GB82WEST12345698765432"));
        assert!(!mod97_ok(b"DE88370400440532013000"));
        assert!(!mod97_ok(b"DE89"));
        assert!(!mod97_ok(b"DE89-370400440532013000"));
    }

    #[test]
    fn lengths_table_is_sorted_and_sane() {
        for w in IBAN_LENGTHS.windows(2) {
            assert!(w[0].0 < w[1].0);
        }
        for (_, n) in IBAN_LENGTHS {
            assert!((MIN_LEN..=MAX_LEN).contains(&n));
        }
    }
}
