//! Snippets: tantivy's `SnippetGenerator` algorithm (tantivy 0.27,
//! `src/snippet/mod.rs`, MIT licence), without its cost per token. tantivy
//! looks each token up as `token.text.to_lowercase()`, a new `String` per
//! token of every hit, and escapes HTML a character at a time through a
//! writer; here a token the snippet analyzer blanked (it cannot match) is
//! not looked up, a lower-case token is looked up as it is, and the HTML is
//! escaped slice by slice. The output is the same, except that touching
//! highlights are joined (`collapse`): fragments of at most
//! `max_bytes` bytes from the first token to the last one in them, the
//! highest score winning (ties to the earliest) (a unit test compares with
//! tantivy's own generator).
//!
//! The text is split into words here, by `words` (as the index cuts it,
//! `index::words`: maximal runs of alphanumeric characters, ASCII a byte at
//! a time, and in CJK runs each character and pair of characters); only a word that can match (its first two characters start
//! a term, or are not ASCII: `Pairs`) goes through the analyzer. The analyzer's filters
//! work a token at a time, so a word analysed alone gives the token it
//! gives inside the text; a word the analyzer would drop as too long
//! (`TOKEN_BYTES_LIMIT`) is no token here either.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::{Mutex, PoisonError};

use tantivy::tokenizer::{TextAnalyzer, Token};
use tantivy::Score;

use super::schema::TOKEN_BYTES_LIMIT;
use super::words::{Cjk, Words};

/// Cuts snippets around a query's terms (term text -> weight). One per
/// query, for all its hits.
pub struct SnippetCutter {
    terms: BTreeMap<String, Score>,
    max_bytes: usize,
    /// Which words starting with an ASCII character can match (`Pairs`).
    ascii_pairs: Pairs,
    /// The analyzer, and the weights of the words it analysed so far (as
    /// written): the words that match recur from hit to hit, and analysing
    /// one (the stemmer) costs ~2,000 instructions, a lookup ~100. At most
    /// `ANALYSED_WORDS` words are kept; later ones are analysed each time.
    analysis: Mutex<Analysis>,
}

struct Analysis {
    analyzer: TextAnalyzer,
    weights: HashMap<Box<str>, Option<Score>>,
}

const ANALYSED_WORDS: usize = 1_024;

/// The ASCII bytes that start a term (a stem keeps its word's first
/// character, in lower case), the pairs of ASCII bytes that start a term
/// (bit `a * 128 + b`), and the first bytes some term starts with but not
/// with two ASCII characters (a one-character term, or a non-ASCII second
/// character): for those the first character alone decides.
///
/// English stems keep their word's first two characters (lower-cased and
/// folded): the stemmer only rewrites suffixes, inside regions that start
/// after the second character, or deletes a suffix of a word of three or
/// more letters. The exceptions are stems of one character (`aing` ->
/// `a`, left to the first-character rule) and the stemmer's exceptional
/// forms `dying`, `lying`, `tying` (-> `die`, `lie`, `tie`), so a word
/// whose second character is `y` is always analysed. The unit test
/// `stems_keep_their_words_first_two_characters` checks this over a word
/// list and random words.
#[derive(Clone)]
struct Pairs {
    firsts: [bool; 128],
    bits: Box<[u64; 256]>,
    first_only: [bool; 128],
}

impl Pairs {
    fn new<'a>(terms: impl Iterator<Item = &'a String>) -> Pairs {
        let mut pairs = Pairs {
            firsts: [false; 128],
            bits: Box::new([0; 256]),
            first_only: [false; 128],
        };
        for term in terms {
            if let Some(&first) = term.as_bytes().first().filter(|b| b.is_ascii()) {
                pairs.firsts[first as usize] = true;
            }
            match *term.as_bytes() {
                [a, b, ..] if a.is_ascii() && b.is_ascii() => {
                    let bit = a as usize * 128 + b as usize;
                    pairs.bits[bit / 64] |= 1 << (bit % 64);
                }
                [a, ..] if a.is_ascii() => pairs.first_only[a as usize] = true,
                _ => {}
            }
        }
        pairs
    }

    /// Whether `word` (starting with an ASCII byte) may stem to a term.
    fn may_match(&self, word: &[u8]) -> bool {
        let first = word[0].to_ascii_lowercase();
        if !self.firsts[first as usize] {
            return false;
        }
        let Some(&second) = word.get(1) else {
            return true;
        };
        let second = second.to_ascii_lowercase();
        if self.first_only[first as usize] || !second.is_ascii() || second == b'y' {
            return true;
        }
        let bit = first as usize * 128 + second as usize;
        self.bits[bit / 64] & (1 << (bit % 64)) != 0
    }
}

/// The best fragment of a text and its highlights (byte ranges in the
/// fragment, in order and apart: a CJK character and the pair it starts
/// are one highlight).
#[derive(Debug, PartialEq)]
pub struct Cut {
    pub fragment: String,
    pub highlighted: Vec<Range<usize>>,
}

struct Candidate {
    score: Score,
    start: usize,
    stop: usize,
    highlighted: Vec<Range<usize>>,
}

impl Candidate {
    fn new(start: usize) -> Candidate {
        Candidate {
            score: 0.0,
            start,
            stop: start,
            highlighted: Vec::new(),
        }
    }
}

impl SnippetCutter {
    pub fn new(terms: BTreeMap<String, Score>, analyzer: TextAnalyzer, max_bytes: usize) -> Self {
        let ascii_pairs = Pairs::new(terms.keys());
        SnippetCutter {
            terms,
            max_bytes,
            ascii_pairs,
            analysis: Mutex::new(Analysis {
                analyzer,
                weights: HashMap::new(),
            }),
        }
    }

    /// The weight of `word` (one token of the tokenizer), analysed only
    /// where its first characters can start a term, once per word.
    fn word_weight(&self, analysis: &mut Analysis, word: &str) -> Option<Score> {
        let first = *word.as_bytes().first()?;
        if first.is_ascii() && !self.ascii_pairs.may_match(word.as_bytes()) {
            return None;
        }
        if let Some(&weight) = analysis.weights.get(word) {
            return weight;
        }
        let weight = {
            let mut stream = analysis.analyzer.token_stream(word);
            stream.next().and_then(|token| self.weight(token))
        };
        if analysis.weights.len() < ANALYSED_WORDS {
            analysis.weights.insert(word.into(), weight);
        }
        weight
    }

    /// The weight of a token's text, as tantivy's `terms.get(&text.to_lowercase())`.
    fn weight(&self, token: &Token) -> Option<Score> {
        if token.text.is_empty() {
            // Blanked by the analyzer; no term is empty.
            return None;
        }
        if token.text.chars().any(char::is_uppercase) {
            self.terms.get(&token.text.to_lowercase()).copied()
        } else {
            self.terms.get(token.text.as_str()).copied()
        }
    }

    /// The best fragment holding a term of the query, or `None`.
    pub fn cut(&self, text: &str) -> Option<Cut> {
        let mut analysis = self.analysis.lock().unwrap_or_else(PoisonError::into_inner);
        let mut best: Option<Candidate> = None;
        let mut fragment = Candidate::new(0);
        // The best fragment by score; on equal scores the earliest (tantivy
        // keeps the one with the smallest (start, stop)).
        let offer = |fragment: Candidate, best: &mut Option<Candidate>| {
            if fragment.score > 0.0 && best.as_ref().is_none_or(|b| fragment.score > b.score) {
                *best = Some(fragment);
            }
        };
        for (from, to) in words(text) {
            if to - from >= TOKEN_BYTES_LIMIT {
                // The analyzer drops it (`RemoveLongFilter`).
                continue;
            }
            if to - fragment.start > self.max_bytes {
                let next = Candidate::new(from);
                offer(std::mem::replace(&mut fragment, next), &mut best);
            }
            fragment.stop = to;
            if let Some(weight) = self.word_weight(&mut analysis, &text[from..to]) {
                fragment.score += weight;
                fragment.highlighted.push(from..to);
            }
        }
        offer(fragment, &mut best);
        let best = best?;
        Some(Cut {
            fragment: text[best.start..best.stop].to_string(),
            highlighted: collapse(
                best.highlighted
                    .iter()
                    .map(|r| r.start - best.start..r.end - best.start)
                    .collect(),
            ),
        })
    }
}

/// The byte ranges of `text`'s words as the index cuts them (`words`,
/// `Cjk::Index`: tantivy's `SimpleTokenizer` outside CJK runs; in a run,
/// each character and each pair of characters, overlapping), each ending
/// no earlier than the one before.
pub(crate) fn words(text: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    Words::new(text, Cjk::Index).map(|word| (word.from, word.to))
}

/// Overlapping and touching ranges joined (a CJK character and its pair,
/// two matched characters side by side: `<b>贵贵</b>`, not
/// `<b>贵</b><b>贵</b>`), in order (ranges sorted by start). tantivy joins
/// overlapping ranges only. Words touch only at a CJK run: inside it, or
/// where it meets another word (`<b>iPhone配送</b>`).
fn collapse(ranges: Vec<Range<usize>>) -> Vec<Range<usize>> {
    let mut out: Vec<Range<usize>> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match out.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ => out.push(range),
        }
    }
    out
}

impl Cut {
    /// The fragment as HTML: escaped (`& < > " '`), highlights in `<b>`.
    /// The highlights are in order and apart (`collapse`).
    pub fn html(&self) -> String {
        let mut html = String::with_capacity(self.fragment.len() + 7 * self.highlighted.len() + 16);
        let mut from = 0;
        for range in &self.highlighted {
            escape_into(&mut html, &self.fragment[from..range.start]);
            html.push_str("<b>");
            escape_into(&mut html, &self.fragment[range.clone()]);
            html.push_str("</b>");
            from = range.end;
        }
        escape_into(&mut html, &self.fragment[from..]);
        html
    }
}

/// Appends `text` with `& < > " '` as entities (htmlescape's
/// `encode_minimal`, which tantivy uses). Chunks of 32 bytes with none of
/// them (most) are checked without an early exit, which the compiler
/// vectorises, and copied whole.
fn escape_into(out: &mut String, text: &str) {
    const CHUNK: usize = 32;
    let special = |byte: u8| matches!(byte, b'"' | b'&' | b'\'' | b'<' | b'>');
    let mut from = 0;
    for (c, chunk) in text.as_bytes().chunks(CHUNK).enumerate() {
        if !chunk.iter().fold(false, |any, &byte| any | special(byte)) {
            continue;
        }
        for (k, &byte) in chunk.iter().enumerate() {
            let entity = match byte {
                b'"' => "&quot;",
                b'&' => "&amp;",
                b'\'' => "&#x27;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                _ => continue,
            };
            let i = c * CHUNK + k;
            out.push_str(&text[from..i]);
            out.push_str(entity);
            from = i + 1;
        }
    }
    out.push_str(&text[from..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chunked escape equals a character-at-a-time one on texts with
    /// the special characters at every offset of a chunk, multi-byte
    /// characters and lengths around the chunk's.
    #[test]
    fn escape_equals_escaping_a_character_at_a_time() {
        let reference = |text: &str| {
            text.chars()
                .map(|c| match c {
                    '"' => "&quot;".to_string(),
                    '&' => "&amp;".to_string(),
                    '\'' => "&#x27;".to_string(),
                    '<' => "&lt;".to_string(),
                    '>' => "&gt;".to_string(),
                    c => c.to_string(),
                })
                .collect::<String>()
        };
        let pieces = ["a", " ", "\"", "&", "'", "<", ">", "é", "配", "😀", "bcd"];
        let mut next = crate::index::xorshift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2_000 {
            let len = (next() % 90) as usize;
            let mut text = String::new();
            for _ in 0..len {
                // Mostly plain letters, so whole chunks go without a special.
                let s = next();
                let piece = match s % 8 {
                    0..=4 => "x",
                    _ => pieces[(s >> 8) as usize % pieces.len()],
                };
                text.push_str(piece);
            }
            let mut out = String::from("kept");
            escape_into(&mut out, &text);
            assert_eq!(out, format!("kept{}", reference(&text)), "{text:?}");
        }
    }
}
