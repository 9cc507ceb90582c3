//! Byte-level helpers shared by the detectors: space-like separators, the
//! characters around a candidate and the "is this a standalone number" tests.
//!
//! Every index handed to these functions is a `char` boundary of the text:
//! detectors only ever stop on ASCII bytes or after a whole space character.

/// Byte length of a space-like separator starting at `i`: ASCII space, NO-BREAK
/// SPACE (U+00A0), THIN SPACE (U+2009) or NARROW NO-BREAK SPACE (U+202F; French
/// typography groups digits with it). 0 when there is none.
pub(super) fn space_at(b: &[u8], i: usize) -> usize {
    match b.get(i..) {
        Some([b' ', ..]) => 1,
        Some([0xC2, 0xA0, ..]) => 2,
        Some([0xE2, 0x80, 0x89 | 0xAF, ..]) => 3,
        _ => 0,
    }
}

/// Number of ASCII digits starting at `i`.
pub(super) fn digits_at(b: &[u8], i: usize) -> usize {
    b.get(i..).map_or(0, |rest| {
        rest.iter().take_while(|c| c.is_ascii_digit()).count()
    })
}

/// The character just before byte `i` and the one before that.
pub(super) fn before(text: &str, i: usize) -> (Option<char>, Option<char>) {
    let mut it = text[..i].chars().rev();
    (it.next(), it.next())
}

/// The character at byte `i` and the one after it.
pub(super) fn after(text: &str, i: usize) -> (Option<char>, Option<char>) {
    let mut it = text[i..].chars();
    (it.next(), it.next())
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Currency symbols that make an adjacent number a price.
pub(super) fn is_currency(c: char) -> bool {
    matches!(
        c,
        '€' | '$'
            | '£'
            | '¥'
            | '₹'
            | '₽'
            | '₺'
            | '₩'
            | '¢'
            | '₣'
            | '₤'
            | '₱'
            | '₪'
            | '₫'
            | '฿'
            | '₴'
            | '₦'
            | '₿'
    )
}

/// Whether a number may start at byte `start`: not glued to a word
/// (`A123`, `_123`), not part of a mail address, URL or path (`@`, `/`, `\`,
/// `=`, `&`, `?`), and not the continuation of another number (`12.5`,
/// `10:30`, `4711-2231`, `1,299`). A label before a colon (`Tel:0301234567`)
/// is fine; a hyphen glued to a word is not (`ABC-0301234567` is an id).
pub(super) fn left_ok(text: &str, start: usize) -> bool {
    match before(text, start) {
        (None, _) => true,
        (Some(c), _) if is_word(c) || matches!(c, '@' | '/' | '\\' | '=' | '&' | '?') => false,
        (Some('-'), Some(p)) => !p.is_alphanumeric(),
        (Some('.' | ',' | ':'), Some(p)) => !p.is_ascii_digit(),
        _ => true,
    }
}

/// Whether a number may end at byte `end`: not glued to a word or a mail
/// address, not followed by `%` or a currency symbol, and not continued by a
/// decimal part, a time, a range or an id suffix (`.5`, `:30`, `-3`, `-A`,
/// `/2`).
pub(super) fn right_ok(text: &str, end: usize) -> bool {
    match after(text, end) {
        (None, _) => true,
        (Some(c), _) if is_word(c) || matches!(c, '@' | '%' | '‰' | '\\') || is_currency(c) => {
            false
        }
        (Some('-' | '/'), Some(n)) => !n.is_alphanumeric(),
        (Some('.' | ',' | ':'), Some(n)) => !n.is_ascii_digit(),
        _ => true,
    }
}

/// Luhn (mod 10) check over ASCII digits.
pub(super) fn luhn_ok(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, &d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaces() {
        assert_eq!(space_at(b" x", 0), 1);
        assert_eq!(space_at("\u{a0}x".as_bytes(), 0), 2);
        assert_eq!(space_at("\u{202f}x".as_bytes(), 0), 3);
        assert_eq!(space_at("\u{2009}x".as_bytes(), 0), 3);
        assert_eq!(space_at("\u{2008}x".as_bytes(), 0), 0);
        assert_eq!(space_at(b"x", 0), 0);
        assert_eq!(space_at(b"", 0), 0);
        assert_eq!(space_at(b"", 5), 0);
    }

    #[test]
    fn boundaries() {
        assert!(left_ok("Tel:0301234567", 4));
        assert!(left_ok("Tel.: 030", 6));
        assert!(!left_ok("A0301234567", 1));
        assert!(!left_ok("ABC-0301234567", 4));
        assert!(!left_ok("12.0301234567", 3));
        assert!(!left_ok("10:30", 3));
        assert!(left_ok("", 0));
        assert!(right_ok("030 1234567.", 11));
        assert!(right_ok("030 1234567. Danke", 11));
        assert!(!right_ok("1234567.5", 7));
        assert!(!right_ok("1234567%", 7));
        assert!(!right_ok("1234567€", 7));
        assert!(!right_ok("1234567-A", 7));
        assert!(right_ok("1234567 - danke", 7));
    }

    #[test]
    fn luhn() {
        assert!(luhn_ok(b"4111111111111111"));
        assert!(luhn_ok(b"378282246310005"));
        assert!(!luhn_ok(b"4111111111111112"));
        assert!(luhn_ok(b"0"));
        assert!(luhn_ok(b""));
    }
}
