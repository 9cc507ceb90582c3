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

/// What a CJK run gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cjk {
    /// Every character and every pair of adjacent characters (the index).
    Index,
    /// Every pair, or the character of a run of one (queries, snippets'
    /// words analysed alone).
    Query,
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
                i += width;
                self.run.push(i);
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
        self.token.text.push_str(&self.text[word.from..word.to]);
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

    /// Every word of a text analysed alone in query mode is itself, once:
    /// what the snippet cutter relies on (it cuts with `Cjk::Index` and
    /// analyses each word alone).
    #[test]
    fn each_word_of_the_index_is_its_own_query() {
        let text = "配送が遅い、贵 iPhone配送 한국어 ok";
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
