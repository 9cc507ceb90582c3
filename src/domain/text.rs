//! The normalised form of a feedback text: what analysis, the index and
//! snippets read. The stored text stays as the client sent it; everything
//! derived from it reads `normalize_text`.
//!
//! Survey exports and scraped reviews carry cp1252 mojibake: a byte such as
//! 0x96 (an en dash in Windows-1252) read as latin-1 becomes the C1 control
//! character U+0096. Normalising maps each C1 character as cp1252 maps the
//! byte of the same number, turns other control characters (except tab, LF,
//! CR) into spaces, and composes the result (Unicode NFC).

use std::borrow::Cow;

use unicode_normalization::char::canonical_combining_class;
use unicode_normalization::{is_nfc, is_nfc_quick, IsNormalized, UnicodeNormalization};

/// Windows-1252 bytes 0x80..=0x9F. The five bytes cp1252 leaves undefined
/// (0x81, 0x8D, 0x8F, 0x90, 0x9D) decode, as in Windows and the WHATWG
/// encoding standard, to the C1 character of the same number.
const CP1252_80_TO_9F: [char; 32] = [
    '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8D}', 'Ž', '\u{8F}',
    '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9D}', 'ž', 'Ÿ',
];

/// The character a Windows-1252 byte stands for (latin-1 outside
/// 0x80..=0x9F; the five undefined bytes give their C1 character, which
/// `normalize_text` turns into a space).
pub fn decode_cp1252_byte(byte: u8) -> char {
    match byte {
        0x80..=0x9F => CP1252_80_TO_9F[usize::from(byte - 0x80)],
        _ => char::from(byte),
    }
}

/// The first step of normalising, one character for one: a C1 character
/// as cp1252 reads its byte (undefined bytes: a space), any other control
/// character but tab, LF and CR a space. None: the character stays.
fn map_control(c: char) -> Option<char> {
    match c {
        '\t' | '\n' | '\r' => None,
        '\u{80}'..='\u{9F}' => {
            let mapped = decode_cp1252_byte(c as u8);
            Some(if mapped.is_control() { ' ' } else { mapped })
        }
        c if c.is_control() => Some(' '),
        _ => None,
    }
}

/// Printable ASCII, tab, LF and CR only: nothing to map (DEL and the C0
/// controls are mapped) and already NFC. One pass over the bytes, where
/// the general path decodes characters twice.
fn is_plain_ascii(text: &str) -> bool {
    // 32 bytes at a time without an early exit, which the compiler
    // vectorises (a byte-at-a-time `all` cost ~7 instructions a byte, the
    // largest part of a plain text's trip through here).
    let plain = |b: &u8| matches!(b, b' '..=b'~' | b'\t' | b'\n' | b'\r');
    text.as_bytes()
        .chunks(32)
        .all(|chunk| chunk.iter().fold(true, |all, b| all & plain(b)))
}

/// `text` with control characters mapped (see `map_control`): the same
/// number of code points. Borrowed when none needed mapping.
fn map_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| map_control(c).is_some()) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(text.chars().map(|c| map_control(c).unwrap_or(c)).collect())
}

/// The form of a text that analysis, the index and snippets read: C1
/// characters U+0080..U+009F mapped as cp1252 maps the byte (0x96 '–', 0x92
/// '’', 0x80 '€'; the undefined 0x81, 0x8D, 0x8F, 0x90, 0x9D a space), other
/// control characters except tab, LF and CR a space, then Unicode NFC.
/// Borrowed (no allocation) when the text is already in that form.
pub fn normalize_text(text: &str) -> Cow<'_, str> {
    if is_plain_ascii(text) {
        return Cow::Borrowed(text);
    }
    let mapped = map_controls(text);
    if is_nfc(&mapped) {
        mapped
    } else {
        Cow::Owned(mapped.nfc().collect())
    }
}

/// The form a label (product, tag, attribute value) is indexed and searched
/// in: Unicode NFC, so "cafe" + U+0301 and "café" are one value to filters,
/// the query language, facets and report segments (the store keeps the
/// value as sent; customer ids, identifiers, match exactly). Borrowed when
/// the value is already in that form.
pub fn keyword_form(value: &str) -> Cow<'_, str> {
    if value.is_ascii() || is_nfc(value) {
        Cow::Borrowed(value)
    } else {
        Cow::Owned(value.nfc().collect())
    }
}

/// A text's normalised form (`normalize_text`) together with the way back:
/// a code-point position in the normalised text to the position in the
/// original. Mapping control characters is one code point for one, so the
/// positions are the same unless NFC changed something (composed `e` +
/// U+0301 into `é`, for instance); only then a table is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NormalizedText<'a> {
    text: Cow<'a, str>,
    /// For each code point of `text`, the position in the original of the
    /// code point it comes from, and one more entry: the original's length.
    /// None: positions are the same.
    origin: Option<Vec<usize>>,
}

impl<'a> NormalizedText<'a> {
    pub fn new(original: &'a str) -> NormalizedText<'a> {
        let mapped = map_controls(original);
        if is_nfc(&mapped) {
            return NormalizedText {
                text: mapped,
                origin: None,
            };
        }
        // NFC works within runs that start at a character nothing before
        // it can compose or reorder with (a starter that is NFC_QC=Yes):
        // normalise run by run and note where each run starts.
        let chars: Vec<char> = mapped.chars().collect();
        let mut text = String::with_capacity(mapped.len());
        let mut origin = Vec::with_capacity(chars.len() + 1);
        let mut start = 0;
        for end in 1..=chars.len() {
            if end < chars.len() && !starts_a_run(chars[end]) {
                continue;
            }
            let run = &chars[start..end];
            for (offset, c) in run.iter().copied().nfc().enumerate() {
                text.push(c);
                // Inside a run that NFC changed, positions stay in the run.
                origin.push(start + offset.min(run.len() - 1));
            }
            start = end;
        }
        origin.push(chars.len());
        NormalizedText {
            text: Cow::Owned(text),
            origin: Some(origin),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The original's code-point position of `position` in the normalised
    /// text (a span's start or its exclusive end; past the end: the
    /// original's length).
    pub fn to_original(&self, position: usize) -> usize {
        match &self.origin {
            None => position,
            Some(origin) => origin[position.min(origin.len() - 1)],
        }
    }

    /// Owns its text, so it can outlive the original.
    pub fn into_owned(self) -> NormalizedText<'static> {
        NormalizedText {
            text: Cow::Owned(self.text.into_owned()),
            origin: self.origin,
        }
    }
}

/// Whether NFC output before `c` is final: `c` is a starter that composes
/// with nothing before it (canonical combining class 0 and NFC_QC=Yes).
fn starts_a_run(c: char) -> bool {
    c.is_ascii()
        || (canonical_combining_class(c) == 0
            && is_nfc_quick(std::iter::once(c)) == IsNormalized::Yes)
}

/// Characters of client text an error message names back at most
/// (`shown`).
pub const SHOWN_CHARS: usize = 80;

/// Client text as an error message names it: its first `SHOWN_CHARS`
/// characters, and `…` when there were more. A status message travels in
/// the `grpc-message` header, percent-encoded, and clients refuse headers
/// past 16 KiB (grpc-core: "metadata size exceeds hard limit"): a value of
/// 20,000 bytes named back whole reached the client as a transport error
/// instead of INVALID_ARGUMENT.
pub fn shown(text: &str) -> Cow<'_, str> {
    match text.char_indices().nth(SHOWN_CHARS) {
        None => Cow::Borrowed(text),
        Some((end, _)) => Cow::Owned(format!("{}…", &text[..end])),
    }
}

/// Whether `c` (alphanumeric) is written in a script without spaces between
/// words: Han ideographs and their iteration marks, Bopomofo, Hiragana,
/// Katakana (half width too) and Hangul (Korean puts spaces between phrases, not
/// between a word and its particle: "배송이" holds "배송").
pub fn is_cjk(c: char) -> bool {
    matches!(c,
        '\u{1100}'..='\u{11FF}'     // Hangul Jamo
        | '\u{3005}'..='\u{3007}'   // 々 〆 〇
        | '\u{3021}'..='\u{3029}'   // Hangzhou numerals
        | '\u{3031}'..='\u{3035}'   // kana repeat marks
        | '\u{303B}'..='\u{303C}'
        | '\u{3040}'..='\u{30FF}'   // Hiragana, Katakana
        | '\u{3100}'..='\u{312F}'   // Bopomofo
        | '\u{3130}'..='\u{318F}'   // Hangul compatibility Jamo
        | '\u{31A0}'..='\u{31BF}'   // Bopomofo extended
        | '\u{31F0}'..='\u{31FF}'   // Katakana phonetic extensions
        | '\u{3400}'..='\u{4DBF}'   // CJK extension A
        | '\u{4E00}'..='\u{9FFF}'   // CJK unified ideographs
        | '\u{A960}'..='\u{A97F}'   // Hangul Jamo extended A
        | '\u{AC00}'..='\u{D7FF}'   // Hangul syllables, Jamo extended B
        | '\u{F900}'..='\u{FAFF}'   // CJK compatibility ideographs
        | '\u{FF66}'..='\u{FF9F}'   // half-width Katakana
        | '\u{FFA0}'..='\u{FFDC}'   // half-width Hangul
        | '\u{1B000}'..='\u{1B16F}' // kana supplement and extensions
        | '\u{20000}'..='\u{3134F}' // CJK extensions B to H, compatibility supplement
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalized(text: &str) -> String {
        normalize_text(text).into_owned()
    }

    /// The check 32 bytes at a time equals one a byte at a time, with the
    /// byte that is not plain at every offset of texts around a chunk's
    /// length.
    #[test]
    fn plain_ascii_is_checked_at_every_offset() {
        let plain = |text: &str| {
            text.bytes()
                .all(|b| matches!(b, b' '..=b'~' | b'\t' | b'\n' | b'\r'))
        };
        for len in [0, 1, 31, 32, 33, 64, 70] {
            let base = "a b\tc\n".repeat(12)[..len].to_string();
            assert!(is_plain_ascii(&base) && plain(&base));
            for at in 0..len {
                for odd in ["\u{7f}", "\u{1}", "\u{e9}"] {
                    let mut text = base.clone();
                    text.replace_range(at..at + 1, odd);
                    assert_eq!(is_plain_ascii(&text), plain(&text), "{text:?}");
                    assert!(!is_plain_ascii(&text));
                }
            }
        }
    }

    #[test]
    fn c1_characters_read_as_cp1252() {
        assert_eq!(normalized("Price \u{96} too high"), "Price – too high");
        assert_eq!(normalized("don\u{92}t"), "don’t");
        assert_eq!(normalized("\u{93}quoted\u{94}"), "“quoted”");
        assert_eq!(normalized("\u{80}5 and more\u{85}"), "€5 and more…");
        assert_eq!(normalized("\u{8A}koda \u{9F} \u{99}"), "Škoda Ÿ ™");
        // Every defined byte of the range maps to a printable character.
        for byte in 0x80..=0x9Fu8 {
            let mapped = normalized(&char::from(byte).to_string());
            assert_eq!(mapped.chars().count(), 1, "{byte:#x}");
            assert!(!mapped.chars().any(char::is_control), "{byte:#x}");
        }
    }

    #[test]
    fn the_five_undefined_cp1252_bytes_become_spaces() {
        for c in ['\u{81}', '\u{8D}', '\u{8F}', '\u{90}', '\u{9D}'] {
            assert_eq!(normalized(&format!("a{c}b")), "a b", "U+{:04X}", c as u32);
            assert_eq!(decode_cp1252_byte(c as u8), c);
        }
    }

    #[test]
    fn other_control_characters_become_spaces_but_tab_lf_cr_stay() {
        assert_eq!(normalized("bell\u{7}ring\u{1B}[0m\u{7F}"), "bell ring [0m ");
        assert_eq!(normalized("a\u{0}b"), "a b");
        assert_eq!(normalized("line\r\nnext\tcell"), "line\r\nnext\tcell");
        assert!(matches!(normalize_text("a\tb\r\n"), Cow::Borrowed(_)));
    }

    #[test]
    fn composes_to_nfc() {
        assert_eq!(normalized("cafe\u{301}"), "café");
        assert_eq!(normalized("\u{212B}ngstr\u{F6}m"), "Ångström");
        assert_eq!(
            normalized("\u{1100}\u{1161}"),
            "\u{AC00}",
            "Hangul jamo compose"
        );
        // Mapping and composing together: U+0096 then a decomposed é.
        assert_eq!(normalized("tre\u{300}s \u{96} bien"), "très – bien");
    }

    /// The ASCII shortcut agrees with the general path for every ASCII
    /// character.
    #[test]
    fn ascii_texts_normalise_as_the_general_path_does() {
        for byte in 0u8..0x80 {
            let text = format!("a{}b", byte as char);
            let general: String = map_controls(&text).nfc().collect();
            assert_eq!(normalize_text(&text), general, "{byte:#x}");
        }
    }

    #[test]
    fn borrowed_when_nothing_changes() {
        for text in [
            "great app",
            "café – très bien",
            "日本語のレビュー 😡",
            "",
            "\u{AC00}",
        ] {
            assert!(matches!(normalize_text(text), Cow::Borrowed(_)), "{text:?}");
            assert!(NormalizedText::new(text).origin.is_none());
        }
    }

    #[test]
    fn decodes_cp1252_bytes() {
        let bytes = b"caf\xE9 \x96 tr\xE8s bien \x80 \x81";
        let text: String = bytes.iter().map(|&b| decode_cp1252_byte(b)).collect();
        assert_eq!(text, "café – très bien € \u{81}");
    }

    /// One for one: positions are the same and no table is kept.
    #[test]
    fn positions_are_the_same_when_nfc_changes_nothing() {
        let text = "Price \u{96} too high. Don\u{92}t buy.";
        let normalized = NormalizedText::new(text);
        assert_eq!(normalized.as_str(), "Price – too high. Don’t buy.");
        assert!(normalized.origin.is_none());
        assert_eq!(normalized.to_original(18), 18);
    }

    /// NFC merged code points: positions map back to the original's.
    #[test]
    fn positions_map_back_when_nfc_merges_code_points() {
        let text = "Cafe\u{301} ok. Tre\u{300}s \u{96} bien.";
        let normalized = NormalizedText::new(text);
        assert_eq!(normalized.as_str(), "Café ok. Très – bien.");
        let original: Vec<char> = text.chars().collect();
        let slice = |start: usize, end: usize| -> String {
            original[normalized.to_original(start)..normalized.to_original(end)]
                .iter()
                .collect()
        };
        assert_eq!(slice(0, 8), "Cafe\u{301} ok.");
        assert_eq!(slice(9, 21), "Tre\u{300}s \u{96} bien.");
        assert_eq!(normalized.to_original(21), original.len());
        assert_eq!(normalized.to_original(99), original.len());
    }

    /// The run-by-run NFC gives what NFC of the whole text gives, and the
    /// table is monotone and as long as the text plus one.
    #[test]
    fn run_by_run_nfc_equals_whole_text_nfc() {
        let pieces = [
            "a",
            "e\u{301}",
            "\u{301}",
            "\u{316}",
            "\u{328}",
            "\u{96}",
            "\u{1100}",
            "\u{1161}",
            "\u{11A8}",
            "\u{212B}",
            "\u{344}",
            "\u{F73}",
            "\u{B47}",
            "\u{B3E}",
            " ",
            ".",
            "é",
            "\u{7}",
            "\u{1D15E}",
            "\u{FB2C}",
            "\u{5B7}",
        ];
        // Every sequence of up to three pieces.
        let mut texts = vec![String::new()];
        for _ in 0..3 {
            texts = texts
                .iter()
                .flat_map(|t| pieces.iter().map(move |p| format!("{t}{p}")))
                .collect();
            for text in &texts {
                let normalized = NormalizedText::new(text);
                let whole: String = map_controls(text).nfc().collect();
                assert_eq!(normalized.as_str(), whole, "{text:?}");
                assert_eq!(normalize_text(text), whole, "{text:?}");
                if let Some(origin) = &normalized.origin {
                    assert_eq!(origin.len(), whole.chars().count() + 1, "{text:?}");
                    assert!(origin.windows(2).all(|w| w[0] <= w[1]), "{text:?}");
                    assert_eq!(origin.last(), Some(&text.chars().count()));
                }
            }
        }
    }

    #[test]
    fn shown_cuts_client_text_at_a_character() {
        assert_eq!(shown("segment"), "segment");
        let long = "é".repeat(SHOWN_CHARS + 1);
        assert_eq!(shown(&long), format!("{}…", "é".repeat(SHOWN_CHARS)));
        assert_eq!(shown(&"x".repeat(SHOWN_CHARS)), "x".repeat(SHOWN_CHARS));
    }
}
