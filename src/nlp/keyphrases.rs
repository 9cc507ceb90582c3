//! Keyphrases: RAKE-style candidates (runs of up to three content words
//! between stopwords and punctuation), scored by word degree / frequency,
//! deduplicated (a phrase inside a better one is dropped). Multilingual-safe:
//! words are Unicode alphanumeric runs, stopword lists cover en, de, fr, es,
//! pt, it and nl, and other languages fall back to a length rule.

use crate::domain::Keyphrase;

const EN: &[&str] = &[
    "a", "about", "after", "again", "all", "also", "am", "an", "and", "any", "are", "as", "at",
    "be", "because", "been", "before", "being", "but", "by", "can", "could", "did", "do", "does",
    "doing", "don", "dont", "for", "from", "get", "got", "had", "has", "have", "having", "he",
    "her", "here", "him", "his", "how", "i", "if", "im", "in", "into", "is", "it", "its", "ive",
    "just", "me", "more", "most", "my", "no", "not", "now", "of", "off", "on", "once", "one",
    "only", "or", "other", "our", "out", "over", "really", "same", "she", "so", "some", "still",
    "such", "than", "that", "the", "their", "them", "then", "there", "these", "they", "this",
    "those", "through", "to", "too", "two", "up", "very", "was", "we", "were", "what", "when",
    "where", "which", "while", "who", "why", "will", "with", "would", "you", "your", "been",
    "every", "even", "much", "many", "lot", "thing", "things", "back", "way", "time", "times",
    "make", "made", "also", "ever", "never", "always", "again", "said", "says", "cant", "wont",
    "didnt", "doesnt", "isnt", "wasnt", "arent",
];
const DE: &[&str] = &[
    "aber", "alle", "als", "am", "an", "auch", "auf", "aus", "bei", "bin", "bis", "da", "das",
    "dass", "dem", "den", "der", "des", "die", "doch", "du", "ein", "eine", "einen", "einem",
    "einer", "er", "es", "für", "hat", "hatte", "ich", "ihr", "im", "in", "ist", "ja", "kam",
    "kein", "keine", "man", "mehr", "mich", "mir", "mit", "nach", "nicht", "noch", "nur", "oder",
    "schon", "sehr", "sich", "sie", "sind", "so", "über", "um", "und", "uns", "von", "vor", "war",
    "was", "wie", "wir", "wird", "zu", "zum", "zur", "viel", "hier",
];
const FR: &[&str] = &[
    "à", "au", "aux", "avec", "ce", "ces", "c", "d", "dans", "de", "des", "du", "elle", "en",
    "est", "et", "été", "il", "j", "je", "l", "la", "le", "les", "leur", "lui", "ma", "mais", "me",
    "mes", "mon", "n", "ne", "nous", "on", "ou", "par", "pas", "plus", "pour", "qu", "que", "qui",
    "s", "sa", "se", "ses", "son", "sur", "très", "tu", "un", "une", "vous", "y", "ça", "a", "ai",
    "suis", "sont", "fait",
];
const ES: &[&str] = &[
    "a", "al", "como", "con", "de", "del", "el", "en", "es", "esta", "este", "fue", "ha", "la",
    "las", "le", "lo", "los", "me", "mi", "muy", "más", "no", "nos", "o", "para", "pero", "por",
    "que", "se", "sin", "su", "sus", "un", "una", "y", "ya", "yo", "hay", "todo", "cuando",
    "porque",
];
const PT: &[&str] = &[
    "a", "ao", "as", "com", "como", "da", "das", "de", "do", "dos", "e", "é", "em", "foi", "mais",
    "mas", "me", "meu", "minha", "muito", "na", "nas", "no", "nos", "não", "o", "os", "para",
    "por", "que", "se", "sem", "seu", "sua", "um", "uma", "já", "tem", "está",
];
const IT: &[&str] = &[
    "a", "al", "alla", "anche", "che", "ci", "come", "con", "da", "del", "della", "di", "e", "è",
    "ed", "gli", "ha", "ho", "i", "il", "in", "la", "le", "lo", "ma", "mi", "molto", "non", "per",
    "più", "si", "sono", "su", "un", "una", "uno", "mio", "mia", "stato",
];
const NL: &[&str] = &[
    "aan", "al", "als", "bij", "dat", "de", "den", "der", "die", "dit", "een", "en", "er", "geen",
    "had", "heb", "heeft", "het", "hij", "ik", "in", "is", "je", "maar", "me", "met", "mijn", "na",
    "naar", "niet", "nog", "nu", "of", "om", "ook", "op", "te", "tot", "uit", "van", "voor", "was",
    "wat", "we", "wel", "werd", "wij", "ze", "zijn", "zo", "zeer",
];

fn stopwords(language: &str) -> &'static [&'static str] {
    match language {
        "de" => DE,
        "fr" => FR,
        "es" => ES,
        "pt" => PT,
        "it" => IT,
        "nl" => NL,
        _ => EN,
    }
}

/// Up to `max` keyphrases, best first, scores relative to the best (1.0).
pub fn extract(text: &str, language: &str, max: usize) -> Vec<Keyphrase> {
    let stop = stopwords(language);
    let is_stop = |w: &str| stop.contains(&w) || EN.contains(&w);
    // Phrases: runs of content words, broken by stopwords and any non-word character other than spaces/hyphens/apostrophes.
    let mut phrases: Vec<Vec<String>> = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut word = String::new();
    let flush_word = |word: &mut String,
                      current: &mut Vec<String>,
                      phrases: &mut Vec<Vec<String>>| {
        if word.is_empty() {
            return;
        }
        let w = std::mem::take(word).to_lowercase();
        let w = w
            .trim_matches(|c| c == '\'' || c == '’' || c == '-')
            .to_string();
        let numeric = w.chars().all(|c| c.is_numeric());
        if w.is_empty() || is_stop(&w.replace(['\'', '’'], "")) || numeric || w.chars().count() < 2
        {
            if !current.is_empty() {
                phrases.push(std::mem::take(current));
            }
        } else {
            current.push(w);
            if current.len() == 3 {
                phrases.push(std::mem::take(current));
            }
        }
    };
    for c in text.chars() {
        if c.is_alphanumeric() || ((c == '\'' || c == '’' || c == '-') && !word.is_empty()) {
            word.push(c);
        } else {
            flush_word(&mut word, &mut current, &mut phrases);
            if !c.is_whitespace() && !current.is_empty() {
                phrases.push(std::mem::take(&mut current));
            }
        }
    }
    flush_word(&mut word, &mut current, &mut phrases);
    if !current.is_empty() {
        phrases.push(current);
    }
    // RAKE word scores: degree / frequency.
    let mut frequency = std::collections::HashMap::<&str, f32>::new();
    let mut degree = std::collections::HashMap::<&str, f32>::new();
    for phrase in &phrases {
        for w in phrase {
            *frequency.entry(w).or_default() += 1.0;
            *degree.entry(w).or_default() += phrase.len() as f32;
        }
    }
    let mut scored: Vec<(String, f32, usize)> = Vec::new();
    for phrase in &phrases {
        let text = phrase.join(" ");
        if scored.iter().any(|(t, _, _)| *t == text) {
            if let Some(entry) = scored.iter_mut().find(|(t, _, _)| *t == text) {
                entry.2 += 1;
            }
            continue;
        }
        let score: f32 = phrase
            .iter()
            .map(|w| degree[w.as_str()] / frequency[w.as_str()])
            .sum();
        scored.push((text, score, 1));
    }
    for entry in &mut scored {
        entry.1 *= 1.0 + 0.5 * (entry.2 as f32 - 1.0); // repeated phrases matter more
    }
    scored.sort_by(|a, b| {
        b.1.partial_cmp(&a.1)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.0.cmp(&b.0))
    });
    let mut chosen: Vec<(String, f32)> = Vec::new();
    for (text, score, _) in scored {
        let words: Vec<&str> = text.split(' ').collect();
        let redundant = chosen.iter().any(|(c, _)| {
            let chosen_words: Vec<&str> = c.split(' ').collect();
            words.iter().all(|w| chosen_words.contains(w))
        });
        if !redundant {
            chosen.push((text, score));
        }
        if chosen.len() == max {
            break;
        }
    }
    let best = chosen
        .first()
        .map(|c| c.1)
        .unwrap_or(1.0)
        .max(f32::MIN_POSITIVE);
    chosen
        .into_iter()
        .map(|(text, score)| Keyphrase {
            text,
            score: score / best,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_content_phrases() {
        let phrases = extract("The delivery was late and the customer service never called back. Late delivery again!", "en", 5);
        let texts: Vec<&str> = phrases.iter().map(|k| k.text.as_str()).collect();
        assert!(texts.contains(&"late delivery"), "{texts:?}");
        assert!(
            texts.iter().any(|t| t.contains("customer service")),
            "{texts:?}"
        );
        assert_eq!(phrases[0].score, 1.0);
        assert!(phrases.windows(2).all(|w| w[0].score >= w[1].score));
    }

    #[test]
    fn multilingual_and_degenerate_inputs() {
        let de = extract(
            "Die Lieferung kam viel zu spät, der Kundenservice war unfreundlich.",
            "de",
            3,
        );
        assert!(de.iter().any(|k| k.text.contains("lieferung")), "{de:?}");
        assert!(extract("😀😀 !!!", "und", 5).is_empty());
        assert!(extract("", "en", 5).is_empty());
        let zh = extract("送货太慢了", "zh", 5);
        assert_eq!(zh.len(), 1);
    }
}
