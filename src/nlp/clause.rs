//! Clause boundaries inside one sentence, so that "the food was great but the
//! waiter ignored us" can carry two themes, each with its own sentiment.
//!
//! A sentence is cut before a contrast connector ("but", "aber", "mais",
//! "pero", "ma", "mas", "although", "while" ...) and at "; " or a spaced
//! dash when both sides
//! keep at least `MIN_CLAUSE_WORDS` words. Connectors are matched as whole
//! words, lower-cased, after a comma or a space; the connector starts the
//! second clause. Sentences shorter than `2 * MIN_CLAUSE_WORDS` words are
//! never cut. "and" is not a cut: on the shipped sample's review sentences
//! it cut two in three and added 150% encoder inputs (each clause is embedded
//! on its own), for aspect spans the contrast cuts mostly give already.

/// Words each side of a cut keeps at least.
const MIN_CLAUSE_WORDS: usize = 3;

/// Connectors that open a new clause, in en, de, fr, es, pt, it (lower-case;
/// multi-word ones are matched word by word).
const CONNECTORS: &[&str] = &[
    // en
    "but",
    "however",
    "although",
    "though",
    "even though",
    "while",
    "whereas",
    "yet",
    "except that",
    "except",
    "apart from",
    "other than that",
    "on the other hand",
    "unfortunately",
    // de
    "aber",
    "jedoch",
    "doch",
    "allerdings",
    "obwohl",
    "während",
    "sondern",
    "leider",
    "trotzdem",
    "dafür",
    // fr
    "mais",
    "cependant",
    "pourtant",
    "toutefois",
    "bien que",
    "alors que",
    "tandis que",
    "par contre",
    "en revanche",
    "malheureusement",
    "sauf",
    // es
    "pero",
    "sin embargo",
    "aunque",
    "mientras que",
    "en cambio",
    "sino",
    "lamentablemente",
    "excepto",
    // pt
    "mas",
    "porém",
    "contudo",
    "entretanto",
    "embora",
    "enquanto",
    "no entanto",
    "infelizmente",
    "exceto",
    // it
    "ma",
    "però",
    "tuttavia",
    "anche se",
    "sebbene",
    "mentre",
    "invece",
    "purtroppo",
    "tranne",
];

/// The clause spans (code points, absolute) of the sentence `span` of
/// `chars`; one span (the sentence) when it has no usable cut.
pub fn split_clauses(chars: &[char], span: (usize, usize)) -> Vec<(usize, usize)> {
    split_at(chars, span, CONNECTORS, true)
}

/// Cuts `span` before `connectors` (and, with `punctuation`, at "; " and
/// spaced dashes), greedily left to right, keeping `MIN_CLAUSE_WORDS` words
/// each side.
fn split_at(
    chars: &[char],
    span: (usize, usize),
    connectors: &[&str],
    punctuation: bool,
) -> Vec<(usize, usize)> {
    let (start, end) = span;
    // Word starts and ends, in code points.
    let mut words: Vec<(usize, usize)> = Vec::new();
    let mut i = start;
    while i < end {
        if chars[i].is_alphanumeric() {
            let s = i;
            while i < end && (chars[i].is_alphanumeric() || chars[i] == '\'' || chars[i] == '’') {
                i += 1;
            }
            words.push((s, i));
        } else {
            i += 1;
        }
    }
    if words.len() < 2 * MIN_CLAUSE_WORDS {
        return vec![span];
    }
    let lower: Vec<String> = words
        .iter()
        .map(|&(s, e)| chars[s..e].iter().collect::<String>().to_lowercase())
        .collect();
    let mut cuts: Vec<usize> = Vec::new(); // word indexes that open a clause
    let mut last_cut = 0;
    for w in MIN_CLAUSE_WORDS..words.len() {
        if w - last_cut < MIN_CLAUSE_WORDS {
            continue;
        }
        let gap: String = chars[words[w - 1].1..words[w].0].iter().collect();
        let at_semicolon = punctuation && (gap.contains([';', '—', '–']) || gap.contains(" - "));
        let connector = connectors.iter().find(|c| {
            let parts: Vec<&str> = c.split(' ').collect();
            parts.len() + w <= words.len()
                && parts.iter().enumerate().all(|(k, p)| lower[w + k] == *p)
        });
        let opens = at_semicolon
            || connector.is_some_and(|c| {
                // The clause after the connector keeps enough words.
                words.len() - w >= MIN_CLAUSE_WORDS + c.split(' ').count() - 1
            });
        if opens && words.len() - w >= MIN_CLAUSE_WORDS {
            cuts.push(w);
            last_cut = w;
        }
    }
    if cuts.is_empty() {
        return vec![span];
    }
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut piece_start = start;
    for w in cuts {
        let cut = words[w].0;
        out.push(trim(chars, piece_start, cut));
        piece_start = cut;
    }
    out.push(trim(chars, piece_start, end));
    out
}

/// Drops surrounding spaces and the separating comma or semicolon.
fn trim(chars: &[char], mut s: usize, mut e: usize) -> (usize, usize) {
    while s < e && chars[s].is_whitespace() {
        s += 1;
    }
    while e > s && (chars[e - 1].is_whitespace() || matches!(chars[e - 1], ',' | ';' | '—' | '–'))
    {
        e -= 1;
    }
    (s, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clauses(text: &str) -> Vec<String> {
        let chars: Vec<char> = text.chars().collect();
        split_clauses(&chars, (0, chars.len()))
            .into_iter()
            .map(|(s, e)| chars[s..e].iter().collect())
            .collect()
    }

    #[test]
    fn contrasts_split_in_every_language() {
        assert_eq!(
            clauses("The food was great but the waiter ignored us"),
            vec!["The food was great", "but the waiter ignored us"]
        );
        assert_eq!(
            clauses("Die Lieferung kam schnell, aber das Paket war völlig beschädigt."),
            vec![
                "Die Lieferung kam schnell",
                "aber das Paket war völlig beschädigt."
            ]
        );
        assert_eq!(
            clauses("Le prix est correct mais le service client ne répond jamais"),
            vec![
                "Le prix est correct",
                "mais le service client ne répond jamais"
            ]
        );
        assert_eq!(
            clauses("La app es fácil de usar; la entrega tardó tres semanas"),
            vec!["La app es fácil de usar", "la entrega tardó tres semanas"]
        );
        assert_eq!(
            clauses("O produto é bom, no entanto a entrega atrasou muito"),
            vec!["O produto é bom", "no entanto a entrega atrasou muito"]
        );
    }

    #[test]
    fn contrast_wins_over_and() {
        assert_eq!(
            clauses(
                "The staff were lovely and helpful, but the parcel arrived crushed and leaking."
            ),
            vec![
                "The staff were lovely and helpful",
                "but the parcel arrived crushed and leaking."
            ]
        );
    }

    #[test]
    fn short_sides_and_short_sentences_stay_whole() {
        assert_eq!(clauses("Good but pricey"), vec!["Good but pricey"]);
        assert_eq!(
            clauses("Nothing but praise for the whole team here"),
            vec!["Nothing but praise for the whole team here"]
        );
        assert_eq!(
            clauses("Fast delivery, great price"),
            vec!["Fast delivery, great price"]
        );
        assert_eq!(
            clauses("The waiter was nice and the pasta was cold"),
            vec!["The waiter was nice and the pasta was cold"]
        );
    }

    #[test]
    fn spans_are_absolute_and_inside_the_sentence() {
        let text = "Intro. The staff was great but the room was dirty and small.";
        let chars: Vec<char> = text.chars().collect();
        let spans = split_clauses(&chars, (7, chars.len()));
        assert_eq!(spans.len(), 2);
        assert!(spans
            .iter()
            .all(|&(s, e)| s >= 7 && e <= chars.len() && s < e));
        let first: String = chars[spans[0].0..spans[0].1].iter().collect();
        assert_eq!(first, "The staff was great");
    }
}
