use std::collections::BTreeMap;
use std::fmt;

use super::limits::*;
use super::text::normalize_text;
use super::{Channel, Feedback, FeedbackId, JourneyStage, Scores, UnixMicros};

/// Why one item was not accepted: the path of the offending field inside the
/// item and a human-readable reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub field: String,
    pub reason: String,
}

impl Rejection {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Rejection {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// An item as a client sent it, before validation. Transport adapters (gRPC,
/// CLI import) fill it in; `validate` applies every rule in one place.
#[derive(Clone, Debug, Default)]
pub struct FeedbackDraft {
    /// Empty: the server generates an id.
    pub id: String,
    pub text: String,
    pub channel: Option<Channel>,
    pub journey_stage: Option<JourneyStage>,
    pub product: String,
    pub customer_id: String,
    pub created_at: Option<UnixMicros>,
    pub language: String,
    pub nps: Option<i64>,
    pub csat: Option<i64>,
    pub ces: Option<i64>,
    pub rating: Option<i64>,
    pub tags: Vec<String>,
    pub attributes: BTreeMap<String, String>,
}

impl FeedbackDraft {
    /// Applies every rule and returns the validated item, or the first
    /// violation with its field path. `now` stands in for a missing `created_at`.
    pub fn validate(self, now: UnixMicros) -> Result<Feedback, Rejection> {
        let id = if self.id.is_empty() {
            FeedbackId::generate()
        } else {
            FeedbackId::parse(&self.id).map_err(|reason| Rejection::new("id", reason))?
        };
        validate_text(&self.text)?;
        let product = validate_name("product", self.product, MAX_NAME_BYTES)?;
        let customer_id = validate_name("customer_id", self.customer_id, MAX_NAME_BYTES)?;
        let language = validate_language(self.language)?;
        let created_at =
            match self.created_at {
                None => now,
                Some(at) if (MIN_CREATED_AT_MICROS..MAX_CREATED_AT_MICROS).contains(&at.0) => at,
                Some(_) => return Err(Rejection::new(
                    "created_at",
                    "must be from 1970-01-01T00:00:00Z up to (not including) 2200-01-01T00:00:00Z",
                )),
            };
        let scores = Scores {
            nps: validate_score("nps", self.nps, 0, 10)?,
            csat: validate_score("csat", self.csat, 1, 5)?,
            ces: validate_score("ces", self.ces, 1, 7)?,
            rating: validate_score("rating", self.rating, 1, 5)?,
        };
        let tags = validate_tags(self.tags)?;
        let attributes = validate_attributes(self.attributes)?;
        Ok(Feedback {
            id,
            text: self.text,
            channel: self.channel.unwrap_or(Channel::Other),
            journey_stage: self.journey_stage.unwrap_or(JourneyStage::Other),
            product,
            customer_id,
            created_at,
            language,
            scores,
            tags,
            attributes,
            original_text: None,
        })
    }
}

/// The rules of `Feedback.text` (also applied to texts sent to Analyze and
/// similarity search): at most `MAX_TEXT_BYTES`, nothing that cannot be text
/// (U+0000, the non-characters U+FFFE and U+FFFF), and not empty once
/// normalised (`normalize_text`: control characters other than tab, LF and
/// CR read as spaces, C1 characters as cp1252). Control characters are
/// otherwise accepted: the text is stored as sent.
pub fn validate_text(text: &str) -> Result<(), Rejection> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(Rejection::new(
            "text",
            format!("must be at most {MAX_TEXT_BYTES} bytes, got {}", text.len()),
        ));
    }
    if let Some((at, c)) = text
        .char_indices()
        .find(|(_, c)| matches!(c, '\u{0}' | '\u{FFFE}' | '\u{FFFF}'))
    {
        return Err(Rejection::new(
            "text",
            format!(
                "must not contain U+{:04X}, which is not text (at byte {at})",
                c as u32
            ),
        ));
    }
    if normalize_text(text)
        .chars()
        .all(|c| c.is_whitespace() || is_default_ignorable(c))
    {
        return Err(Rejection::new(
            "text",
            "must not be empty or only whitespace, control and invisible characters",
        ));
    }
    Ok(())
}

/// Unicode's `Default_Ignorable_Code_Point`s: characters a text shows
/// nothing for (zero-width space and joiners, soft hyphen, byte order mark,
/// bidirectional marks, variation selectors, tags, Hangul fillers). A text
/// of these alone is empty to a reader: the encoder still gave it themes.
pub(crate) fn is_default_ignorable(c: char) -> bool {
    matches!(
        c,
        '\u{AD}'
            | '\u{34F}'
            | '\u{61C}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFF8}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// The customer_id rule (trimmed; at most `MAX_NAME_BYTES`, no control
/// characters), for requests that name a customer outside an item.
pub fn validate_customer_id(value: String) -> Result<String, Rejection> {
    validate_name("customer_id", value, MAX_NAME_BYTES)
}

fn validate_name(field: &str, value: String, max_bytes: usize) -> Result<String, Rejection> {
    let value = value.trim().to_string();
    if value.len() > max_bytes {
        return Err(Rejection::new(
            field,
            format!("must be at most {max_bytes} bytes, got {}", value.len()),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Rejection::new(field, "must not contain control characters"));
    }
    Ok(value)
}

fn validate_language(value: String) -> Result<String, Rejection> {
    let value = value.trim().to_ascii_lowercase();
    if value.len() > MAX_LANGUAGE_BYTES {
        return Err(Rejection::new(
            "language",
            format!(
                "must be at most {MAX_LANGUAGE_BYTES} bytes, got {}",
                value.len()
            ),
        ));
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(Rejection::new(
            "language",
            format!("must be a BCP-47 tag such as \"en\" or \"pt-br\", got {value:?}"),
        ));
    }
    Ok(value)
}

fn validate_score(
    field: &str,
    value: Option<i64>,
    min: i64,
    max: i64,
) -> Result<Option<u8>, Rejection> {
    match value {
        None => Ok(None),
        Some(v) if (min..=max).contains(&v) => Ok(Some(v as u8)),
        Some(v) => Err(Rejection::new(
            field,
            format!("must be between {min} and {max}, got {v}"),
        )),
    }
}

fn validate_tags(tags: Vec<String>) -> Result<Vec<String>, Rejection> {
    // Repeats count once, as they are kept once (33 entries with one
    // repeat were refused); the loop stops at the first tag too many.
    let mut out: Vec<String> = Vec::with_capacity(tags.len().min(MAX_TAGS + 1));
    let mut forms: Vec<String> = Vec::with_capacity(out.capacity());
    for (i, tag) in tags.into_iter().enumerate() {
        let field = format!("tags[{i}]");
        let tag = tag.trim().to_string();
        if tag.is_empty() {
            return Err(Rejection::new(field, "must not be empty"));
        }
        if tag.len() > MAX_TAG_BYTES {
            return Err(Rejection::new(
                field,
                format!("must be at most {MAX_TAG_BYTES} bytes, got {}", tag.len()),
            ));
        }
        if tag.chars().any(char::is_control) {
            return Err(Rejection::new(field, "must not contain control characters"));
        }
        // Canonically equivalent spellings are one tag, as the index reads
        // them (`keyword_form`): the first is kept.
        let form = super::keyword_form(&tag).into_owned();
        if !forms.contains(&form) {
            forms.push(form);
            if out.len() == MAX_TAGS {
                return Err(Rejection::new(
                    "tags",
                    format!("at most {MAX_TAGS} distinct tags, got more"),
                ));
            }
            out.push(tag);
        }
    }
    Ok(out)
}

fn validate_attributes(
    attributes: BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, Rejection> {
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(Rejection::new(
            "attributes",
            format!(
                "at most {MAX_ATTRIBUTES} attributes, got {}",
                attributes.len()
            ),
        ));
    }
    for (key, value) in &attributes {
        // The key cut short (`shown`): a rejection named a 100 KB key whole,
        // and a batch of them made an answer past a client's 4 MiB.
        let field = format!("attributes.{}", super::shown(key));
        if key.is_empty() || key.len() > MAX_ATTRIBUTE_KEY_BYTES {
            return Err(Rejection::new(
                field,
                format!(
                    "key must be 1 to {MAX_ATTRIBUTE_KEY_BYTES} bytes, got {}",
                    key.len()
                ),
            ));
        }
        if !is_attribute_key(key) {
            return Err(Rejection::new(field, "key must use only [a-z0-9_]"));
        }
        if value.len() > MAX_ATTRIBUTE_VALUE_BYTES {
            return Err(Rejection::new(
                field,
                format!(
                    "value must be at most {MAX_ATTRIBUTE_VALUE_BYTES} bytes, got {}",
                    value.len()
                ),
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(Rejection::new(
                field,
                "value must not contain control characters",
            ));
        }
    }
    Ok(attributes)
}

/// The attribute key rule: 1 to `MAX_ATTRIBUTE_KEY_BYTES` bytes of `[a-z0-9_]`.
pub fn is_attribute_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_ATTRIBUTE_KEY_BYTES
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(text: &str) -> FeedbackDraft {
        FeedbackDraft {
            id: "a-1".into(),
            text: text.into(),
            ..Default::default()
        }
    }

    #[test]
    fn accepts_a_minimal_item_and_fills_defaults() {
        let item = draft("great app").validate(UnixMicros(5)).unwrap();
        assert_eq!(item.id.as_str(), "a-1");
        assert_eq!(item.channel, Channel::Other);
        assert_eq!(item.journey_stage, JourneyStage::Other);
        assert_eq!(item.created_at, UnixMicros(5));
    }

    #[test]
    fn generates_an_id_when_absent() {
        let mut d = draft("ok");
        d.id.clear();
        let item = d.validate(UnixMicros(0)).unwrap();
        assert_eq!(item.id.as_str().len(), 26);
    }

    #[test]
    fn rejects_bad_text() {
        for (text, needle) in [
            ("", "empty"),
            (" \n\t ", "empty"),
            ("\u{7}\u{1B} \u{81}", "empty"),
            ("a\u{0}b", "U+0000, which is not text (at byte 1)"),
            ("caf\u{e9}\u{FFFE}", "U+FFFE, which is not text (at byte 5)"),
            ("\u{FFFF}", "U+FFFF"),
            // Invisible characters alone (the encoder gave them themes).
            ("\u{200B}", "empty"),
            ("\u{FEFF} \u{AD}\u{2060}", "empty"),
            ("\u{34F}\u{FE0F}\u{E0041}\u{200D}", "empty"),
        ] {
            let err = draft(text).validate(UnixMicros(0)).unwrap_err();
            assert_eq!(err.field, "text");
            assert!(err.reason.contains(needle), "{text:?}: {err}");
        }
        let long = "x".repeat(MAX_TEXT_BYTES + 1);
        assert_eq!(
            draft(&long).validate(UnixMicros(0)).unwrap_err().field,
            "text"
        );
        let ok = "x".repeat(MAX_TEXT_BYTES);
        assert!(draft(&ok).validate(UnixMicros(0)).is_ok());
        // Beside a visible character they are text; an emoji alone too.
        for text in ["\u{200B}a", "\u{2764}\u{FE0F}", "soft\u{AD}hyphen"] {
            assert!(draft(text).validate(UnixMicros(0)).is_ok(), "{text:?}");
        }
    }

    /// cp1252 mojibake and stray control characters are text: accepted and
    /// stored exactly as sent.
    #[test]
    fn accepts_c1_and_other_control_characters_and_keeps_the_text() {
        for text in [
            "Price \u{96} too high",
            "don\u{92}t \u{85}",
            "bell\u{7}",
            "\u{85}",
            "e\u{301}",
        ] {
            assert!(validate_text(text).is_ok(), "{text:?}");
            let item = draft(text).validate(UnixMicros(0)).unwrap();
            assert_eq!(item.text, text);
        }
    }

    #[test]
    fn range_checks_every_score_at_both_ends() {
        type Setter = fn(&mut FeedbackDraft, i64);
        let cases: [(&str, i64, i64, Setter); 4] = [
            ("nps", 0, 10, |d, v| d.nps = Some(v)),
            ("csat", 1, 5, |d, v| d.csat = Some(v)),
            ("ces", 1, 7, |d, v| d.ces = Some(v)),
            ("rating", 1, 5, |d, v| d.rating = Some(v)),
        ];
        for (field, min, max, set) in cases {
            for v in [min, max] {
                let mut d = draft("t");
                set(&mut d, v);
                assert!(d.validate(UnixMicros(0)).is_ok(), "{field}={v}");
            }
            for v in [min - 1, max + 1] {
                let mut d = draft("t");
                set(&mut d, v);
                let err = d.validate(UnixMicros(0)).unwrap_err();
                assert_eq!(err.field, field);
                assert!(err.reason.contains(&v.to_string()));
            }
        }
    }

    #[test]
    fn rejects_bad_ids_tags_and_attributes_with_field_paths() {
        let mut d = draft("t");
        d.id = "has space".into();
        assert_eq!(d.validate(UnixMicros(0)).unwrap_err().field, "id");

        let mut d = draft("t");
        d.tags = vec!["ok".into(), "".into()];
        assert_eq!(d.validate(UnixMicros(0)).unwrap_err().field, "tags[1]");

        let mut d = draft("t");
        d.tags = (0..=MAX_TAGS).map(|i| format!("t{i}")).collect();
        assert_eq!(d.validate(UnixMicros(0)).unwrap_err().field, "tags");
        // Found by probing: a repeat counted against the limit.
        let mut d = draft("t");
        d.tags = (0..MAX_TAGS).map(|i| format!("t{i}")).collect();
        d.tags.push(" t0".into());
        assert_eq!(
            d.clone().validate(UnixMicros(0)).unwrap().tags.len(),
            MAX_TAGS
        );

        let mut d = draft("t");
        d.attributes.insert("Region".into(), "emea".into());
        assert_eq!(
            d.validate(UnixMicros(0)).unwrap_err().field,
            "attributes.Region"
        );
        // A long key is named cut short, its length in the reason.
        let mut d = draft("t");
        d.attributes.insert("k".repeat(100_000), "v".into());
        let rejection = d.validate(UnixMicros(0)).unwrap_err();
        assert_eq!(
            rejection.field,
            format!("attributes.{}…", "k".repeat(crate::domain::SHOWN_CHARS))
        );
        assert!(
            rejection.reason.ends_with("got 100000"),
            "{}",
            rejection.reason
        );

        let mut d = draft("t");
        d.language = "en us".into();
        assert_eq!(d.validate(UnixMicros(0)).unwrap_err().field, "language");

        let mut d = draft("t");
        d.created_at = Some(UnixMicros(-1));
        assert_eq!(d.validate(UnixMicros(0)).unwrap_err().field, "created_at");
    }

    #[test]
    fn normalises_language_and_dedupes_tags() {
        let mut d = draft("t");
        d.language = " PT-BR ".into();
        d.tags = vec![
            "vip".into(),
            "vip".into(),
            " b2b ".into(),
            "cafe\u{301}".into(),
            "caf\u{e9}".into(),
        ];
        let item = d.validate(UnixMicros(0)).unwrap();
        assert_eq!(item.language, "pt-br");
        // Canonically equivalent tags are one (the first spelling kept).
        assert_eq!(item.tags, vec!["vip", "b2b", "cafe\u{301}"]);
    }
}
