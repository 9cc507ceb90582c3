//! Where `text` is cut into words: maximal runs of alphanumeric characters
//! (tantivy's `SimpleTokenizer`, ASCII a byte at a time), except that
//! Chinese, Japanese and Korean characters, written without spaces between
//! words, are cut into overlapping pairs of characters (bigrams, as
//! Lucene's `CJKBigramFilter` and Elasticsearch's `cjk` analyzer do). A run
//! of such characters was one word before (schema 8): "配送" (delivery)
//! found nothing in "配送が遅い", and a run of 22 characters or more was
//! dropped as too long.
//!
//! Each character of a CJK run has its own position, and the pair starting
//! at a character stands at that character's position, so a phrase of
//! pairs matches the same text however its neighbours are cut, and a word
//! after a run of n characters stands n positions after the run's start.
//! The index (`Cjk::Index`) also holds every character alone, at its
//! position: a query of one character ("贵", expensive) is found inside a
//! run. A query (`Cjk::Query`) asks for the pairs only, or for the
//! character when its run is one character long: one term per pair, not
//! two, and every pair of the index exists once a run is two characters.
//! The snippet cutter and the analyzers all cut here, so a highlight is a
//! token of the index.
//!
//! The tokenizer (`WordTokenizer`) gives half-width kana and Hangul in their
//! full-width forms (`fold_width`, schema 10), and a run counts a kana and
//! the half-width sound mark after it as one character: "ｶﾞ" is "ガ".

/// What a CJK run gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cjk {
    /// Every character and every pair of adjacent characters (the index).
    Index,
    /// Every pair, or the character of a run of one (queries, snippets'
    /// words analysed alone).
    Query,
}

pub use crate::domain::is_cjk;

/// Half-width Katakana and Hangul (U+FF61 to U+FFDC) in their usual width
/// (kana as NFKC gives them, Hangul as the compatibility Jamo Korean is
/// typed in, U+3131 ..., NFKC's first step), a kana and the
/// half-width sound mark after it as one character (ｶﾞ -> ガ, ﾊﾟ -> パ), as
/// Lucene's `CJKWidthFilter` and Elasticsearch's `cjk_width` fold them:
/// "ｺｰﾋｰ" (older systems' and receipts' half-width kana) and "コーヒー"
/// are one word. Other characters are copied. Fullwidth Latin letters
/// and digits are folded later, by tantivy's `AsciiFoldingFilter`.
pub fn fold_width(text: &str, out: &mut String) {
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match chars.peek().and_then(|&mark| voiced(c, mark)) {
            Some(joined) => {
                out.push(joined);
                chars.next();
            }
            None => out.push(width_folded(c)),
        }
    }
}

/// The full-width form of a half-width character (U+FF61 to U+FFDC;
/// Unicode's `<narrow>` mapping), else `c`.
fn width_folded(c: char) -> char {
    const KANA: [char; 63] = [
        '。', '「', '」', '、', '・', 'ヲ', 'ァ', 'ィ', 'ゥ', 'ェ', 'ォ', 'ャ', 'ュ', 'ョ', 'ッ',
        'ー', 'ア', 'イ', 'ウ', 'エ', 'オ', 'カ', 'キ', 'ク', 'ケ', 'コ', 'サ', 'シ', 'ス', 'セ',
        'ソ', 'タ', 'チ', 'ツ', 'テ', 'ト', 'ナ', 'ニ', 'ヌ', 'ネ', 'ノ', 'ハ', 'ヒ', 'フ', 'ヘ',
        'ホ', 'マ', 'ミ', 'ム', 'メ', 'モ', 'ヤ', 'ユ', 'ヨ', 'ラ', 'リ', 'ル', 'レ', 'ロ', 'ワ',
        'ン', '\u{3099}', '\u{309A}',
    ];
    let code = c as u32;
    let shifted = |from: u32, to: u32| char::from_u32(code - from + to).unwrap_or(c);
    match code {
        0xFF61..=0xFF9F => KANA[(code - 0xFF61) as usize],
        // Half-width Hangul: the filler, then the compatibility Jamo in
        // runs (U+FFBF-FFC1, FFC8-FFC9, FFD0-FFD1, FFD8-FFD9 are unassigned).
        0xFFA0 => '\u{3164}',
        0xFFA1..=0xFFBE => shifted(0xFFA1, 0x3131),
        0xFFC2..=0xFFC7 => shifted(0xFFC2, 0x314F),
        0xFFCA..=0xFFCF => shifted(0xFFCA, 0x3155),
        0xFFD2..=0xFFD7 => shifted(0xFFD2, 0x315B),
        0xFFDA..=0xFFDC => shifted(0xFFDA, 0x3161),
        _ => c,
    }
}

/// Whether `mark` after `kana` joins it into one character (`voiced`):
/// cuts between the two (snippet windows) must not separate them.
pub fn joined(kana: char, mark: char) -> bool {
    voiced(kana, mark).is_some()
}

/// The voiced kana a half-width `kana` and the half-width sound `mark`
/// after it make (ｶ + ﾞ -> ガ, ﾊ + ﾟ -> パ), if they make one.
fn voiced(kana: char, mark: char) -> Option<char> {
    let code = kana as u32;
    let full = |c: char| c as u32;
    let joined = match mark {
        // ﾞ: the k, s, t and h rows take the next code point, and ｳ, ﾜ, ｦ
        // their own.
        '\u{FF9E}' => match code {
            0xFF76..=0xFF84 | 0xFF8A..=0xFF8E => full(width_folded(kana)) + 1,
            0xFF73 => 0x30F4, // ヴ
            0xFF9C => 0x30F7, // ヷ
            0xFF66 => 0x30FA, // ヺ
            _ => return None,
        },
        // ﾟ: the h row, two code points on.
        '\u{FF9F}' => match code {
            0xFF8A..=0xFF8E => full(width_folded(kana)) + 2,
            _ => return None,
        },
        _ => return None,
    };
    char::from_u32(joined)
}

/// A word: its byte range in the text and its position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Word {
    pub from: usize,
    pub to: usize,
    pub position: usize,
}

/// The words of a text, in order of their start (at one start, the shorter
/// first), so each ends no earlier than the one before it.
pub struct Words<'a> {
    text: &'a str,
    mode: Cjk,
    /// The next byte to read.
    next: usize,
    /// The next word's position.
    position: usize,
    /// The character boundaries of the CJK run being given (its start, each
    /// character's end), reused from run to run.
    run: Vec<usize>,
    /// The run's next character, and whether its pair comes next (else the
    /// character alone).
    at: usize,
    pair_next: bool,
}

impl<'a> Words<'a> {
    pub fn new(text: &'a str, mode: Cjk) -> Words<'a> {
        Words {
            text,
            mode,
            next: 0,
            position: 0,
            run: Vec::new(),
            at: 0,
            pair_next: false,
        }
    }

    /// The class of the character at byte `i` (a character boundary) and
    /// its length in bytes.
    fn class_at(&self, i: usize) -> (Class, usize) {
        let byte = self.text.as_bytes()[i];
        if byte.is_ascii() {
            let class = match byte.is_ascii_alphanumeric() {
                true => Class::Word,
                false => Class::Gap,
            };
            return (class, 1);
        }
        let c = self.text[i..].chars().next().unwrap_or_default();
        let class = if !c.is_alphanumeric() {
            Class::Gap
        } else if is_cjk(c) {
            Class::Cjk
        } else {
            Class::Word
        };
        (class, c.len_utf8())
    }

    /// The next token of the CJK run in `run`, if any is left.
    fn next_of_run(&mut self) -> Option<Word> {
        // `run` holds n + 1 boundaries for n characters.
        let chars = self.run.len().checked_sub(1)?;
        while self.at < chars {
            let k = self.at;
            let single = Word {
                from: self.run[k],
                to: self.run[k + 1],
                position: self.position + k,
            };
            let pair = (k + 2 <= chars).then(|| Word {
                to: self.run[k + 2],
                ..single
            });
            match self.mode {
                Cjk::Index if !self.pair_next => {
                    self.pair_next = pair.is_some();
                    if !self.pair_next {
                        self.at += 1;
                    }
                    return Some(single);
                }
                Cjk::Index => {
                    self.pair_next = false;
                    self.at += 1;
                    return pair;
                }
                Cjk::Query => {
                    self.at += 1;
                    match pair {
                        Some(pair) => return Some(pair),
                        None if chars == 1 => return Some(single),
                        None => continue,
                    }
                }
            }
        }
        self.position += chars;
        self.run.clear();
        self.at = 0;
        None
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Gap,
    Word,
    Cjk,
}

impl Iterator for Words<'_> {
    type Item = Word;

    // Inlined into the loops that call it (the snippet cutter, the
    // tokenizer): a call per word cost about a quarter of the split.
    #[inline(always)]
    fn next(&mut self) -> Option<Word> {
        // The rest of a CJK run being given.
        if !self.run.is_empty() {
            if let Some(word) = self.next_of_run() {
                return Some(word);
            }
        }
        let bytes = self.text.as_bytes();
        let len = bytes.len();
        let mut i = self.next;
        // Most text is ASCII: its bytes are classed by a table, without
        // decoding. `i` ends at the word's start.
        let (class, from) = loop {
            while i < len && BYTE_CLASS[bytes[i] as usize] == GAP {
                i += 1;
            }
            if i >= len {
                self.next = len;
                return None;
            }
            if BYTE_CLASS[bytes[i] as usize] == WORD {
                break (Class::Word, i);
            }
            let (class, width) = self.class_at(i);
            if class != Class::Gap {
                break (class, i);
            }
            i += width;
        };
        if class == Class::Cjk {
            self.run.push(from);
            while i < len {
                let (next, width) = self.class_at(i);
                if next != Class::Cjk {
                    break;
                }
                // A half-width sound mark joins the kana it voices (ｶﾞ is
                // one character, ガ, once folded: `fold_width`).
                let joins = width == 3 && i > from && {
                    let mark = self.text[i..].chars().next().unwrap_or_default();
                    let kana = self.text[..i].chars().next_back().unwrap_or_default();
                    voiced(kana, mark).is_some()
                };
                i += width;
                match joins {
                    true => *self.run.last_mut().expect("a run has its start") = i,
                    false => self.run.push(i),
                }
            }
            self.next = i;
            return self.next_of_run();
        }
        loop {
            while i < len && BYTE_CLASS[bytes[i] as usize] == WORD {
                i += 1;
            }
            if i >= len || bytes[i].is_ascii() {
                break;
            }
            let (next, width) = self.class_at(i);
            if next != Class::Word {
                break;
            }
            i += width;
        }
        self.next = i;
        let position = self.position;
        self.position += 1;
        Some(Word {
            from,
            to: i,
            position,
        })
    }
}

/// `BYTE_CLASS[b]` for a byte `b`: an ASCII byte is `WORD` (alphanumeric)
/// or `GAP`; a byte of a longer character is `NON_ASCII` (decoded).
const GAP: u8 = 0;
const WORD: u8 = 1;
const NON_ASCII: u8 = 2;
static BYTE_CLASS: [u8; 256] = {
    let mut table = [NON_ASCII; 256];
    let mut b = 0;
    while b < 128 {
        table[b] = if (b as u8).is_ascii_alphanumeric() {
            WORD
        } else {
            GAP
        };
        b += 1;
    }
    table
};

/// A tantivy tokenizer over `Words`: each word as a token, as written.
#[derive(Clone)]
pub struct WordTokenizer {
    mode: Cjk,
    token: tantivy::tokenizer::Token,
}

impl WordTokenizer {
    pub fn new(mode: Cjk) -> WordTokenizer {
        WordTokenizer {
            mode,
            token: tantivy::tokenizer::Token::default(),
        }
    }
}

impl tantivy::tokenizer::Tokenizer for WordTokenizer {
    type TokenStream<'a> = WordStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> WordStream<'a> {
        self.token.reset();
        WordStream {
            words: Words::new(text, self.mode),
            text,
            token: &mut self.token,
        }
    }
}

pub struct WordStream<'a> {
    words: Words<'a>,
    text: &'a str,
    token: &'a mut tantivy::tokenizer::Token,
}

impl tantivy::tokenizer::TokenStream for WordStream<'_> {
    fn advance(&mut self) -> bool {
        let Some(word) = self.words.next() else {
            return false;
        };
        self.token.text.clear();
        let text = &self.text[word.from..word.to];
        // Only a CJK run (its first byte not ASCII) holds half-width forms
        // (U+FFxx: three bytes starting 0xEF).
        if !text.as_bytes()[0].is_ascii() && text.as_bytes().contains(&0xEF) {
            fold_width(text, &mut self.token.text);
        } else {
            self.token.text.push_str(text);
        }
        self.token.offset_from = word.from;
        self.token.offset_to = word.to;
        self.token.position = word.position;
        self.token.position_length = 1;
        true
    }

    fn token(&self) -> &tantivy::tokenizer::Token {
        self.token
    }

    fn token_mut(&mut self) -> &mut tantivy::tokenizer::Token {
        self.token
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tantivy::tokenizer::{SimpleTokenizer, TokenStream, Tokenizer};

    fn cut(text: &str, mode: Cjk) -> Vec<(&str, usize)> {
        Words::new(text, mode)
            .map(|w| (&text[w.from..w.to], w.position))
            .collect()
    }

    #[test]
    fn cjk_runs_are_cut_into_pairs_at_their_characters_positions() {
        let text = "配送が遅い! iPhone配送 ok 贵 한국어";
        assert_eq!(
            cut(text, Cjk::Query),
            [
                ("配送", 0),
                ("送が", 1),
                ("が遅", 2),
                ("遅い", 3),
                ("iPhone", 5),
                ("配送", 6),
                ("ok", 8),
                ("贵", 9),
                ("한국", 10),
                ("국어", 11),
            ]
        );
        assert_eq!(
            cut("太贵了 ok", Cjk::Index),
            [
                ("太", 0),
                ("太贵", 0),
                ("贵", 1),
                ("贵了", 1),
                ("了", 2),
                ("ok", 3),
            ]
        );
        assert_eq!(cut("贵", Cjk::Index), [("贵", 0)]);
        // Punctuation between CJK characters ends a run ("・" is not
        // alphanumeric); the prolonged sound mark is part of one.
        assert_eq!(
            cut("コーヒー・カップ", Cjk::Query),
            [
                ("コー", 0),
                ("ーヒ", 1),
                ("ヒー", 2),
                ("カッ", 4),
                ("ップ", 5)
            ]
        );
    }

    /// Half-width kana fold as Unicode's NFKC maps them, each alone and
    /// each followed by either half-width sound mark (a kana that mark
    /// voices joins it: ｶﾞ -> ガ); half-width Hangul to compatibility Jamo.
    #[test]
    fn half_width_forms_fold_as_nfkc_with_their_sound_marks() {
        use unicode_normalization::UnicodeNormalization;
        let fold = |text: &str| {
            let mut out = String::new();
            fold_width(text, &mut out);
            out
        };
        let mut joined = 0;
        for code in 0xFF61..=0xFFDCu32 {
            let c = char::from_u32(code).expect("no surrogate here");
            let alone = c.to_string();
            if (0xFFA0..=0xFFDC).contains(&code) {
                // Hangul: to the compatibility Jamo (U+3131 ...) that Korean
                // text is typed in (`ㅋㅋ`), one step of NFKC's mapping (which
                // goes on to the conjoining Jamo, U+1100 ...).
                let folded = fold(&alone);
                let nfkc = |s: &str| s.nfkc().collect::<String>();
                assert_eq!(nfkc(&folded), nfkc(&alone), "U+{code:04X}");
                if nfkc(&alone) != alone {
                    assert!(
                        folded
                            .chars()
                            .all(|f| ('\u{3130}'..='\u{318F}').contains(&f)),
                        "U+{code:04X} {folded}"
                    );
                }
                continue;
            }
            assert_eq!(
                fold(&alone),
                alone.nfkc().collect::<String>(),
                "U+{code:04X}"
            );
            for mark in ['\u{FF9E}', '\u{FF9F}'] {
                let pair = format!("{c}{mark}");
                let nfkc: String = pair.nfkc().collect();
                assert_eq!(fold(&pair), nfkc, "U+{code:04X} {pair}");
                joined += usize::from(nfkc.chars().count() == 1);
            }
        }
        // ｳ ｶ-ｺ ｻ-ｿ ﾀ-ﾄ ﾊ-ﾎ ﾜ ｦ with ﾞ, ﾊ-ﾎ with ﾟ.
        assert_eq!(joined, 1 + 5 * 4 + 1 + 1 + 5);
    }

    /// A text in half-width kana gives the tokens of its full-width form,
    /// at the same positions, in both modes, the sound marks joined to
    /// their kana; a mark that voices nothing stays a character.
    #[test]
    fn half_width_kana_are_the_words_of_their_full_width_forms() {
        use tantivy::tokenizer::Tokenizer as _;
        let tokens = |text: &str, mode: Cjk| {
            let mut tokenizer = WordTokenizer::new(mode);
            let mut stream = tokenizer.token_stream(text);
            let mut out = Vec::new();
            while stream.advance() {
                let token = stream.token();
                out.push((token.text.clone(), token.position));
            }
            out
        };
        let half = "ｺｰﾋｰｶｯﾌﾟがﾀﾞﾒ ok ﾊﾟｽﾜｰﾄﾞ";
        let full = "コーヒーカップがダメ ok パスワード";
        for mode in [Cjk::Index, Cjk::Query] {
            assert_eq!(tokens(half, mode), tokens(full, mode), "{mode:?}");
        }
        assert_eq!(cut("ﾀﾞﾒ", Cjk::Query), [("ﾀﾞﾒ", 0)], "ﾀﾞ is one character");
        assert_eq!(
            tokens("ﾒﾞﾒ", Cjk::Index),
            [
                ("メ".to_string(), 0),
                ("メ\u{3099}".to_string(), 0),
                ("\u{3099}".to_string(), 1),
                ("\u{3099}メ".to_string(), 1),
                ("メ".to_string(), 2),
            ]
        );
    }

    /// Every word of a text analysed alone in query mode is itself, once:
    /// what the snippet cutter relies on (it cuts with `Cjk::Index` and
    /// analyses each word alone).
    #[test]
    fn each_word_of_the_index_is_its_own_query() {
        let text = "配送が遅い、贵 iPhone配送 한국어 ok ｺｰﾋｰｶｯﾌﾟがﾀﾞﾒ ﾒﾞﾒ";
        for word in Words::new(text, Cjk::Index) {
            let alone = &text[word.from..word.to];
            assert_eq!(cut(alone, Cjk::Query), [(alone, 0)], "{alone}");
        }
    }

    /// Without CJK characters both modes cut as tantivy's `SimpleTokenizer`
    /// (random texts of ASCII, accented, combining, Greek, Arabic-Indic,
    /// emoji and space pieces); with them, the query's words are the
    /// index's pairs and lone characters, at the same positions, and the
    /// index's words end in order.
    #[test]
    fn words_split_as_tantivys_simple_tokenizer_outside_cjk() {
        let plain = [
            "a",
            "Z",
            "9",
            " ",
            ",",
            "-",
            "_",
            "'",
            "\u{e9}",
            "\u{301}",
            "\u{1f600}",
            "\u{3a3}",
            "\u{a0}",
            "\u{2003}",
            "\u{660}",
            "\u{b2}",
            "\n",
            "\u{ff21}",
        ];
        let cjk = [
            "\u{4e2d}", "\u{3042}", "\u{30ab}", "\u{d55c}", "\u{3005}", "\u{30fb}",
        ];
        let mut next = crate::index::xorshift(0x2545_f491_4f6c_dd1d);
        let mut tokenizer = SimpleTokenizer::default();
        let mut compared = 0;
        for round in 0..4_000 {
            let len = (next() % 40) as usize;
            let pieces: Vec<&str> = match round % 2 {
                0 => plain.to_vec(),
                _ => plain.iter().chain(&cjk).copied().collect(),
            };
            let text: String = (0..len)
                .map(|_| pieces[(next() % pieces.len() as u64) as usize])
                .collect();
            let index: Vec<Word> = Words::new(&text, Cjk::Index).collect();
            let query: Vec<Word> = Words::new(&text, Cjk::Query).collect();
            assert!(index
                .windows(2)
                .all(|w| w[0].to <= w[1].to && w[0].from <= w[1].from));
            if round % 2 == 0 {
                let mut expected = Vec::new();
                let mut stream = tokenizer.token_stream(&text);
                while stream.advance() {
                    let token = stream.token();
                    expected.push((token.offset_from, token.offset_to, token.position));
                }
                let of = |words: &[Word]| -> Vec<(usize, usize, usize)> {
                    words.iter().map(|w| (w.from, w.to, w.position)).collect()
                };
                assert_eq!(of(&index), expected, "{text:?}");
                assert_eq!(of(&query), expected, "{text:?}");
                compared += expected.len();
            } else {
                // The query's words are the index's, less the characters
                // of runs of two or more.
                let cjk_chars = |w: &Word| {
                    let word = &text[w.from..w.to];
                    word.chars().all(is_cjk).then(|| word.chars().count())
                };
                let in_run = |w: &Word| {
                    index
                        .iter()
                        .any(|o| cjk_chars(o) == Some(2) && (o.from == w.from || o.to == w.to))
                };
                let single = |w: &Word| cjk_chars(w) == Some(1);
                let kept: Vec<&Word> = index.iter().filter(|w| !(single(w) && in_run(w))).collect();
                assert_eq!(kept, query.iter().collect::<Vec<_>>(), "{text:?}");
            }
        }
        assert!(compared > 5_000, "{compared}");
    }
}
