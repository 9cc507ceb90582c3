//! Snippets: tantivy's `SnippetGenerator` algorithm (tantivy 0.27,
//! `src/snippet/mod.rs`, MIT licence), without its cost per token. tantivy
//! looks each token up as `token.text.to_lowercase()`, a new `String` per
//! token of every hit, and escapes HTML a character at a time through a
//! writer; here a token the snippet analyzer blanked (it cannot match) is
//! not looked up, a lower-case token is looked up as it is, and the HTML is
//! escaped slice by slice. The output is the same: fragments of at most
//! `max_bytes` bytes from the first token to the last one in them, the
//! highest score winning (ties to the earliest) (a unit test compares with
//! tantivy's own generator).

use std::collections::BTreeMap;
use std::ops::Range;

use tantivy::tokenizer::{TextAnalyzer, Token};
use tantivy::Score;

/// Cuts snippets around a query's terms (term text -> weight).
#[derive(Clone)]
pub struct SnippetCutter {
    terms: BTreeMap<String, Score>,
    analyzer: TextAnalyzer,
    max_bytes: usize,
}

/// The best fragment of a text and its highlights (byte ranges in the
/// fragment).
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
        SnippetCutter {
            terms,
            analyzer,
            max_bytes,
        }
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
        let mut analyzer = self.analyzer.clone();
        let mut stream = analyzer.token_stream(text);
        let mut best: Option<Candidate> = None;
        let mut fragment = Candidate::new(0);
        // The best fragment by score; on equal scores the earliest (tantivy
        // keeps the one with the smallest (start, stop)).
        let offer = |fragment: Candidate, best: &mut Option<Candidate>| {
            if fragment.score > 0.0 && best.as_ref().is_none_or(|b| fragment.score > b.score) {
                *best = Some(fragment);
            }
        };
        while let Some(token) = stream.next() {
            if token.offset_to - fragment.start > self.max_bytes {
                let next = Candidate::new(token.offset_from);
                offer(std::mem::replace(&mut fragment, next), &mut best);
            }
            fragment.stop = token.offset_to;
            if let Some(weight) = self.weight(token) {
                fragment.score += weight;
                fragment
                    .highlighted
                    .push(token.offset_from..token.offset_to);
            }
        }
        offer(fragment, &mut best);
        let best = best?;
        Some(Cut {
            fragment: text[best.start..best.stop].to_string(),
            highlighted: best
                .highlighted
                .iter()
                .map(|r| r.start - best.start..r.end - best.start)
                .collect(),
        })
    }
}

impl Cut {
    /// The fragment as HTML: escaped (`& < > " '`), highlights in `<b>`.
    /// The highlights are tokens of one stream, in order and apart, so
    /// tantivy's sorting and merging of overlapping ranges has nothing to do.
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
/// `encode_minimal`, which tantivy uses).
fn escape_into(out: &mut String, text: &str) {
    let mut from = 0;
    for (i, byte) in text.bytes().enumerate() {
        let entity = match byte {
            b'"' => "&quot;",
            b'&' => "&amp;",
            b'\'' => "&#x27;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            _ => continue,
        };
        out.push_str(&text[from..i]);
        out.push_str(entity);
        from = i + 1;
    }
    out.push_str(&text[from..]);
}
