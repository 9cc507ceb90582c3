//! Sentence segmentation that copes with reviews: terminal punctuation
//! followed by a space, line breaks and list items split; decimals ("52.00"),
//! abbreviations inside a word and emoji do not; a run-on text without any
//! punctuation is cut at commas, then every `MAX_WORDS` words, so no sentence
//! exceeds what the encoder sees well. Spans are in Unicode code points.

/// Longest sentence, in words, before it is cut further.
const MAX_WORDS: usize = 60;

fn is_terminal(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '…' | '。' | '！' | '？' | '؟' | '।')
}

fn has_content(s: &str) -> bool {
    s.chars()
        .any(|c| !c.is_whitespace() && !c.is_ascii_punctuation())
}

/// Sentence spans `(start, end)` in code points of `text`, in order. Every
/// non-blank text gets at least one sentence.
pub fn split_sentences(text: &str) -> Vec<(usize, usize)> {
    let chars: Vec<char> = text.chars().collect();
    let mut spans = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let boundary_end = if c == '\n' || c == '\r' {
            Some(i)
        } else if is_terminal(c) {
            let mut j = i + 1;
            while j < chars.len()
                && (is_terminal(chars[j]) || matches!(chars[j], '"' | '\'' | ')' | '”' | '’'))
            {
                j += 1;
            }
            // CJK full stops need no following space.
            let cjk = matches!(c, '。' | '！' | '？');
            if j >= chars.len() || chars[j].is_whitespace() || cjk {
                Some(j)
            } else {
                None
            }
        } else {
            None
        };
        if let Some(end) = boundary_end {
            push_trimmed(&chars, start, end, &mut spans);
            start = end;
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    push_trimmed(&chars, start, chars.len(), &mut spans);
    let mut spans: Vec<(usize, usize)> = spans
        .into_iter()
        .flat_map(|span| cut_long(&chars, span))
        .filter(|&(s, e)| has_content(&chars[s..e].iter().collect::<String>()))
        .collect();
    if spans.is_empty() {
        // Only punctuation or symbols: the trimmed text is the one sentence.
        let mut whole = Vec::new();
        push_trimmed(&chars, 0, chars.len(), &mut whole);
        spans = whole;
    }
    spans
}

fn push_trimmed(chars: &[char], mut start: usize, mut end: usize, out: &mut Vec<(usize, usize)>) {
    while start < end && chars[start].is_whitespace() {
        start += 1;
    }
    while end > start && chars[end - 1].is_whitespace() {
        end -= 1;
    }
    if start < end {
        out.push((start, end));
    }
}

/// Cuts a span with more than MAX_WORDS words at commas/semicolons, then by word count.
fn cut_long(chars: &[char], (start, end): (usize, usize)) -> Vec<(usize, usize)> {
    let words = |s: usize, e: usize| {
        chars[s..e]
            .iter()
            .collect::<String>()
            .split_whitespace()
            .count()
    };
    if words(start, end) <= MAX_WORDS {
        return vec![(start, end)];
    }
    let mut pieces = Vec::new();
    let mut piece_start = start;
    for i in start..end {
        if matches!(chars[i], ',' | ';' | '，' | '、') && words(piece_start, i + 1) >= MAX_WORDS / 3
        {
            push_trimmed(chars, piece_start, i + 1, &mut pieces);
            piece_start = i + 1;
        }
    }
    push_trimmed(chars, piece_start, end, &mut pieces);
    let mut out = Vec::new();
    for (s, e) in pieces {
        if words(s, e) <= MAX_WORDS {
            out.push((s, e));
            continue;
        }
        // No usable punctuation: cut every MAX_WORDS words.
        let mut count = 0;
        let mut piece = s;
        let mut in_word = false;
        for i in s..e {
            let space = chars[i].is_whitespace();
            if !space && !in_word {
                count += 1;
                if count > MAX_WORDS {
                    push_trimmed(chars, piece, i, &mut out);
                    piece = i;
                    count = 1;
                }
            }
            in_word = !space;
        }
        push_trimmed(chars, piece, e, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sentences(text: &str) -> Vec<String> {
        let chars: Vec<char> = text.chars().collect();
        split_sentences(text)
            .into_iter()
            .map(|(s, e)| chars[s..e].iter().collect())
            .collect()
    }

    #[test]
    fn splits_on_punctuation_and_lines_but_not_decimals() {
        assert_eq!(
            sentences(
                "Paid 52.00 twice! Support was great... Still no refund?\n1) call back\n2) fix it"
            ),
            vec![
                "Paid 52.00 twice!",
                "Support was great...",
                "Still no refund?",
                "1) call back",
                "2) fix it"
            ]
        );
    }

    #[test]
    fn keeps_emoji_and_handles_cjk_and_blank_input() {
        assert_eq!(
            sentences("Love it 😍😍 works great"),
            vec!["Love it 😍😍 works great"]
        );
        assert_eq!(sentences("很好。非常快！"), vec!["很好。", "非常快！"]);
        assert_eq!(sentences("😡😡😡"), vec!["😡😡😡"]);
        assert_eq!(sentences("!!!"), vec!["!!!"]);
        assert!(split_sentences("   ").is_empty());
    }

    #[test]
    fn spans_are_code_points() {
        let text = "Très bien. Ça marche.";
        assert_eq!(split_sentences(text), vec![(0, 10), (11, 21)]);
    }

    #[test]
    fn run_on_text_is_cut_into_bounded_sentences() {
        let text = (0..200)
            .map(|i| format!("word{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let spans = split_sentences(&text);
        assert!(spans.len() >= 4);
        let chars: Vec<char> = text.chars().collect();
        for (s, e) in &spans {
            let words = chars[*s..*e]
                .iter()
                .collect::<String>()
                .split_whitespace()
                .count();
            assert!(words <= MAX_WORDS, "{words}");
        }
        // Nothing is lost: every word is in some sentence.
        let total: usize = spans
            .iter()
            .map(|(s, e)| {
                chars[*s..*e]
                    .iter()
                    .collect::<String>()
                    .split_whitespace()
                    .count()
            })
            .sum();
        assert_eq!(total, 200);
    }
}
