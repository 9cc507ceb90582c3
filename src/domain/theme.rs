//! Themes: what a customer talks about. A `Taxonomy` is the user-owned,
//! versioned set of themes (at most two levels); `ThemeMention` is one theme
//! found in one text. Every taxonomy rule lives in `Taxonomy::check_upsert` /
//! `Taxonomy::check_delete`, so the store applies only edits that passed them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::analysis::Sentiment;
use super::limits::{
    MAX_THEMES, MAX_THEME_DESCRIPTION_BYTES, MAX_THEME_EXAMPLES, MAX_THEME_EXAMPLE_BYTES,
    MAX_THEME_ID_BYTES, MAX_THEME_NAME_BYTES,
};
use super::validate::{is_default_ignorable, Rejection};

/// A theme as stored: `id` is stable forever once created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Theme {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub examples: Vec<String>,
    #[serde(default)]
    pub counter_examples: Vec<String>,
    /// Empty: a top-level theme.
    #[serde(default)]
    pub parent_id: String,
    /// The taxonomy version of this theme's last change.
    #[serde(default)]
    pub version: u64,
}

/// A theme as a client sent it (`id` empty: derive one from the name); the
/// built-in taxonomy's JSON holds these too.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ThemeDraft {
    pub id: String,
    pub name: String,
    pub description: String,
    pub examples: Vec<String>,
    pub counter_examples: Vec<String>,
    pub parent_id: String,
}

/// Why a delete cannot happen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeleteRefusal {
    NotFound,
    HasChildren(Vec<String>),
}

/// The whole taxonomy at one version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Taxonomy {
    pub version: u64,
    /// By id; `ordered()` gives parents before children.
    pub themes: BTreeMap<String, Theme>,
}

impl Taxonomy {
    /// Parents first (by name), each followed by its children (by name).
    pub fn ordered(&self) -> Vec<&Theme> {
        let mut parents: Vec<&Theme> = self
            .themes
            .values()
            .filter(|t| t.parent_id.is_empty())
            .collect();
        parents.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        let mut out = Vec::with_capacity(self.themes.len());
        for parent in parents {
            out.push(parent);
            let mut children: Vec<&Theme> = self
                .themes
                .values()
                .filter(|t| t.parent_id == parent.id)
                .collect();
            children.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
            out.extend(children);
        }
        out
    }

    pub fn children_of(&self, id: &str) -> Vec<String> {
        self.themes
            .values()
            .filter(|t| t.parent_id == id)
            .map(|t| t.id.clone())
            .collect()
    }

    /// Applies every rule to a create or replace; the theme to store (with
    /// its id, version not yet set) or the first violation with its field
    /// path under `theme.`.
    pub fn check_upsert(&self, draft: ThemeDraft) -> Result<Theme, Rejection> {
        let name = normalize_name(&draft.name);
        if name.is_empty() {
            return Err(Rejection::new("theme.name", "must not be empty"));
        }
        check_len("theme.name", &name, MAX_THEME_NAME_BYTES)?;
        check_printable("theme.name", &name)?;
        check_not_text("theme.name", &name)?;
        // Invisible characters alone (a zero-width space, a lone accent, a
        // blank Braille cell) are no name; between visible ones they may
        // belong to it (a joiner in an emoji or in Persian).
        if name.chars().all(shows_nothing) {
            return Err(Rejection::new(
                "theme.name",
                "must hold a visible character",
            ));
        }
        let description = theme_text("theme.description", &draft.description)?;
        let description = if description.chars().all(shows_nothing) {
            String::new()
        } else {
            description
        };
        check_len(
            "theme.description",
            &description,
            MAX_THEME_DESCRIPTION_BYTES,
        )?;
        let examples = check_sentences("theme.examples", draft.examples)?;
        let counter_examples = check_sentences("theme.counter_examples", draft.counter_examples)?;

        let existing = if draft.id.is_empty() {
            None
        } else {
            check_id("theme.id", &draft.id)?;
            self.themes.get(&draft.id)
        };
        let id = match existing {
            Some(theme) => theme.id.clone(),
            None if draft.id.is_empty() => self.derive_id(&name),
            None => draft.id.clone(),
        };
        if existing.is_none() && self.themes.len() >= MAX_THEMES {
            return Err(Rejection::new(
                "theme",
                format!("the taxonomy holds the maximum of {MAX_THEMES} themes"),
            ));
        }
        let parent_id = draft.parent_id.trim().to_string();
        if !parent_id.is_empty() {
            // A malformed id says so, as DeleteTheme's does (not "no theme").
            check_id("theme.parent_id", &parent_id)?;
            if parent_id == id {
                return Err(Rejection::new(
                    "theme.parent_id",
                    "a theme cannot be its own parent",
                ));
            }
            let Some(parent) = self.themes.get(&parent_id) else {
                return Err(Rejection::new(
                    "theme.parent_id",
                    format!("no theme with id {parent_id:?}"),
                ));
            };
            if !parent.parent_id.is_empty() {
                return Err(Rejection::new(
                    "theme.parent_id",
                    format!("{parent_id:?} is a sub-theme; themes have at most two levels"),
                ));
            }
            if !self.children_of(&id).is_empty() {
                return Err(Rejection::new(
                    "theme.parent_id",
                    "this theme has sub-themes, so it cannot become one (at most two levels)",
                ));
            }
        }
        let key = name_key(&name);
        // Only a new name or place is checked: siblings stored before names
        // were compared this way may look alike, and must stay editable.
        let moved = existing.is_none_or(|t| t.parent_id != parent_id || name_key(&t.name) != key);
        if let Some(sibling) = self
            .themes
            .values()
            .find(|t| moved && t.id != id && t.parent_id == parent_id && name_key(&t.name) == key)
        {
            return Err(Rejection::new(
                "theme.name",
                format!(
                    "{name:?} is already the name of theme {:?} under the same parent",
                    sibling.id
                ),
            ));
        }
        Ok(Theme {
            id,
            name,
            description,
            examples,
            counter_examples,
            parent_id,
            version: 0,
        })
    }

    /// The ids a delete removes (the theme, then its children with `cascade`).
    pub fn check_delete(&self, id: &str, cascade: bool) -> Result<Vec<String>, DeleteRefusal> {
        if !self.themes.contains_key(id) {
            return Err(DeleteRefusal::NotFound);
        }
        let children = self.children_of(id);
        if !children.is_empty() && !cascade {
            return Err(DeleteRefusal::HasChildren(children));
        }
        let mut ids = vec![id.to_string()];
        ids.extend(children);
        Ok(ids)
    }

    /// A stable id from a name: lower-cased ASCII letters and digits, runs of
    /// anything else as `_`, a numeric suffix when taken.
    fn derive_id(&self, name: &str) -> String {
        let mut base = String::new();
        for c in name.chars().flat_map(char::to_lowercase) {
            let c = fold_accent(c);
            if c.is_ascii_alphanumeric() {
                base.push(c);
            } else if !base.ends_with('_') {
                base.push('_');
            }
        }
        let mut base = base.trim_matches('_').to_string();
        if base.is_empty() {
            base = "theme".into();
        }
        base.truncate(MAX_THEME_ID_BYTES - 4);
        let base = base.trim_end_matches('_').to_string();
        if !self.themes.contains_key(&base) {
            return base;
        }
        (2..)
            .map(|n| format!("{base}_{n}"))
            .find(|id| !self.themes.contains_key(id))
            .expect("a free suffix exists")
    }
}

/// A Latin letter without its accent (the accents of en, de, fr, es, pt, it).
pub fn fold_accent(c: char) -> char {
    match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' => 'a',
        'ç' => 'c',
        'è' | 'é' | 'ê' | 'ë' => 'e',
        'ì' | 'í' | 'î' | 'ï' => 'i',
        'ñ' => 'n',
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' => 'o',
        'ù' | 'ú' | 'û' | 'ü' => 'u',
        'ý' | 'ÿ' => 'y',
        'ß' => 's',
        other => other,
    }
}

/// Theme ids: 1..=64 bytes of `[a-z0-9_-]`.
pub fn check_id(field: &str, id: &str) -> Result<(), Rejection> {
    if id.is_empty() || id.len() > MAX_THEME_ID_BYTES {
        return Err(Rejection::new(
            field,
            format!("must be 1 to {MAX_THEME_ID_BYTES} bytes, got {}", id.len()),
        ));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'))
    {
        return Err(Rejection::new(
            field,
            format!("may hold only a-z, 0-9, '_' and '-', found {bad:?}"),
        ));
    }
    Ok(())
}

fn check_len(field: &str, text: &str, max: usize) -> Result<(), Rejection> {
    if text.len() > max {
        return Err(Rejection::new(
            field,
            format!("must be at most {max} bytes, got {}", text.len()),
        ));
    }
    Ok(())
}

/// A name as stored: NFC, each run of white space (no-break and line
/// separators included) one space, without invisible characters at its
/// ends. "cafe\u{301}" and "café", or "Delivery  delay" and
/// "Delivery\u{a0}delay", were two sibling themes.
fn normalize_name(raw: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    // A word of invisible characters alone goes too: one between two
    // spaces left a double space ("Café \u{200b} delay"). At the ends,
    // variation selectors and tag characters stay: they end emoji ("❤\u{fe0f}").
    let ends_invisibly = |c: char| {
        is_default_ignorable(c)
            && !matches!(c, '\u{FE00}'..='\u{FE0F}' | '\u{E0000}'..='\u{E01EF}' | '\u{180B}'..='\u{180F}')
    };
    raw.nfc()
        .collect::<String>()
        .split(char::is_whitespace)
        .filter(|word| !word.chars().all(is_default_ignorable))
        .collect::<Vec<_>>()
        .join(" ")
        .trim_matches(ends_invisibly)
        .to_string()
}

/// What sibling names must differ in: compatibility forms, case (full:
/// "STRASSE" and "straße" are one name), white space and invisible
/// characters aside.
fn name_key(name: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    normalize_name(&name.nfkc().collect::<String>())
        .chars()
        .filter(|&c| !is_default_ignorable(c))
        .collect::<String>()
        .to_lowercase()
        .replace('ß', "ss")
        .replace('ς', "σ")
}

/// A character that shows nothing on its own.
fn shows_nothing(c: char) -> bool {
    c.is_whitespace()
        || is_default_ignorable(c)
        || unicode_normalization::char::is_combining_mark(c)
        || c == '\u{2800}'
}

/// A description's or an example's text: no U+0000 or non-character (as
/// in an item's text), no other control character (line breaks too) but
/// the C1 ones, which are read as cp1252 (`normalize_text`); trimmed.
fn theme_text(path: &str, raw: &str) -> Result<String, Rejection> {
    check_not_text(path, raw)?;
    // Checked before normalising, which makes the others spaces.
    if raw
        .chars()
        .any(|c| c.is_control() && !('\u{80}'..='\u{9f}').contains(&c))
    {
        return Err(Rejection::new(path, "must not contain control characters"));
    }
    Ok(crate::domain::normalize_text(raw.trim()).trim().to_string())
}

/// Refuses what is no text (as in an item's): U+0000 and the
/// non-characters (U+FDD0..U+FDEF, U+xFFFE and U+xFFFF).
fn check_not_text(field: &str, text: &str) -> Result<(), Rejection> {
    let not_text = |c: char| {
        let c = c as u32;
        c == 0 || (0xFDD0..=0xFDEF).contains(&c) || c & 0xFFFE == 0xFFFE
    };
    match text.chars().find(|&c| not_text(c)) {
        Some(c) => Err(Rejection::new(
            field,
            format!("must not contain U+{:04X}, which is not text", c as u32),
        )),
        None => Ok(()),
    }
}

fn check_printable(field: &str, text: &str) -> Result<(), Rejection> {
    if text.chars().any(|c| c.is_control()) {
        return Err(Rejection::new(field, "must not contain control characters"));
    }
    Ok(())
}

fn check_sentences(field: &str, sentences: Vec<String>) -> Result<Vec<String>, Rejection> {
    if sentences.len() > MAX_THEME_EXAMPLES {
        return Err(Rejection::new(
            field,
            format!(
                "at most {MAX_THEME_EXAMPLES} entries, got {}",
                sentences.len()
            ),
        ));
    }
    sentences
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let path = format!("{field}[{i}]");
            // As an item's text: C1 characters read as cp1252 (a pasted
            // "late\u{96}delivery" was refused), no non-characters, and not
            // invisible characters alone (both were taken).
            let s = theme_text(&path, &s)?;
            if s.chars().all(shows_nothing) {
                return Err(Rejection::new(path, "must not be empty"));
            }
            check_len(&path, &s, MAX_THEME_EXAMPLE_BYTES)?;
            Ok(s)
        })
        .collect()
}

/// A code-point range `[start, end)` of a text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

/// One theme found in a text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThemeMention {
    pub theme_id: String,
    pub theme_name: String,
    /// The theme's parent when it is a sub-theme (empty otherwise).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub parent_id: String,
    /// Calibrated score of the best carrying unit, 0..1.
    pub score: f32,
    /// Indexes into `Analysis::sentences`.
    pub sentences: Vec<usize>,
    /// The sentences or clauses that carry the theme.
    pub spans: Vec<Span>,
    /// The carrying spans' sentiment (aspect sentiment).
    pub sentiment: Sentiment,
}

/// The (theme id, sentiment label) pairs an item's mentions put in the
/// search index: each mention's theme and its parent, with the mention's
/// sentiment label; sorted, without repeats. Two taggings with the same
/// terms are indexed alike (`index::schema` builds the theme fields from
/// these).
pub fn theme_terms(mentions: &[ThemeMention]) -> BTreeSet<(&str, &'static str)> {
    let mut terms = BTreeSet::new();
    for mention in mentions {
        let label = mention.sentiment.label.as_str();
        for id in [mention.theme_id.as_str(), mention.parent_id.as_str()] {
            if !id.is_empty() {
                terms.insert((id, label));
            }
        }
    }
    terms
}

/// A stable 64-bit digest (FNV-1a) of an item's `theme_terms`: a re-tag
/// whose mentions keep the digest changes nothing the index holds, so the
/// item is confirmed under the new taxonomy version (`Store::retag`)
/// instead of being re-indexed. Stable across builds and platforms (no std
/// hasher).
pub fn theme_terms_digest(mentions: &[ThemeMention]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (id, label) in theme_terms(mentions) {
        eat(&(id.len() as u64).to_le_bytes());
        eat(id.as_bytes());
        eat(&(label.len() as u64).to_le_bytes());
        eat(label.as_bytes());
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(name: &str, parent: &str) -> ThemeDraft {
        ThemeDraft {
            name: name.into(),
            parent_id: parent.into(),
            ..Default::default()
        }
    }

    fn insert(tax: &mut Taxonomy, theme: Theme) {
        tax.themes.insert(theme.id.clone(), theme);
    }

    #[test]
    fn ids_are_derived_stable_and_unique() {
        let mut tax = Taxonomy::default();
        let t = tax.check_upsert(draft("Price & Value", "")).unwrap();
        assert_eq!(t.id, "price_value");
        insert(&mut tax, t);
        let t = tax.check_upsert(draft("Livraison rapide", "")).unwrap();
        assert_eq!(t.id, "livraison_rapide");
        let t2 = tax.check_upsert(draft("Price-Value", "")).unwrap();
        assert_eq!(t2.id, "price_value_2");
        assert_eq!(tax.check_upsert(draft("¿?", "")).unwrap().id, "theme");
    }

    /// Found by probing: names that look alike were sibling themes
    /// ("cafe" + U+0301 and "café", a double or no-break space, "STRASSE"
    /// and "straße"), an invisible name was taken, a malformed parent id
    /// was "no theme", and examples followed other rules than item texts.
    #[test]
    fn look_alike_names_are_one_name_and_texts_follow_the_item_rules() {
        let mut tax = Taxonomy::default();
        let theme = tax.check_upsert(draft("Café  delay", "")).unwrap();
        insert(&mut tax, theme);
        let stored = &tax.themes["cafe_delay"];
        assert_eq!(stored.name, "Café delay");
        for same in [
            "cafe\u{301} delay",
            "CAFÉ\u{a0}DELAY",
            " café\u{2028}delay ",
        ] {
            let refused = tax.check_upsert(draft(same, "")).unwrap_err();
            assert_eq!(refused.field, "theme.name", "{same:?}");
            assert!(
                refused.reason.contains("already the name"),
                "{same:?}: {refused:?}"
            );
        }
        let theme = tax.check_upsert(draft("STRASSE", "")).unwrap();
        insert(&mut tax, theme);
        assert!(tax.check_upsert(draft("straße", "")).is_err());
        let theme = tax.check_upsert(draft("ΟΔΟΣ", "")).unwrap();
        insert(&mut tax, theme);
        assert!(tax.check_upsert(draft("οδοσ", "")).is_err(), "final sigma");
        for invisible in [
            "\u{200b}",
            "\u{200d}\u{feff}",
            "\u{301}",
            "\u{2800}",
            "a\u{fffe}b",
            "a\u{fdd0}b",
            "\u{10ffff}",
        ] {
            let refused = tax.check_upsert(draft(invisible, "")).unwrap_err();
            assert_eq!(refused.field, "theme.name", "{invisible:?}");
        }
        // Invisible characters at the ends go; between visible ones they
        // may be part of the name (found by review: emoji and Persian
        // names were refused).
        let trimmed = tax
            .check_upsert(draft("\u{feff}BOM name\u{200b}", ""))
            .unwrap();
        assert_eq!(trimmed.name, "BOM name");
        for name in [
            "\u{2764}\u{fe0f} Love",
            "نیم\u{200c}فاصله",
            "👩\u{200d}💻 Dev tools",
        ] {
            assert_eq!(tax.check_upsert(draft(name, "")).unwrap().name, name);
        }
        for look_alike in ["Stra\u{200b}ße", "STRASSE \u{200b}", "Café \u{200b} delay"] {
            let refused = tax.check_upsert(draft(look_alike, "")).unwrap_err();
            assert!(
                refused.reason.contains("already the name"),
                "{look_alike:?}: {refused:?}"
            );
        }
        // Look-alike siblings stored before this rule stay editable.
        let legacy = Theme {
            id: "legacy".into(),
            name: "Strasse".into(),
            ..tax.themes["strasse"].clone()
        };
        insert(&mut tax, legacy);
        let edit = ThemeDraft {
            id: "legacy".into(),
            description: "now with a description".into(),
            ..draft("Strasse", "")
        };
        assert!(tax.check_upsert(edit).is_ok());
        let rename = ThemeDraft {
            id: "legacy".into(),
            ..draft("CAFE\u{301} DELAY", "")
        };
        let refused = tax.check_upsert(rename).unwrap_err();
        assert!(refused.reason.contains("already the name"), "{refused:?}");

        let refused = tax.check_upsert(draft("x", "Bad Id")).unwrap_err();
        assert_eq!(refused.field, "theme.parent_id");
        assert!(refused.reason.contains("may hold only"), "{refused:?}");
        let described = ThemeDraft {
            description: "a\u{0}b".into(),
            ..draft("described", "")
        };
        let refused = tax.check_upsert(described).unwrap_err();
        assert_eq!(refused.field, "theme.description");
        for control in ["a\u{7}b", "\u{1}", "a\nb", "a\u{7f}"] {
            let described = ThemeDraft {
                description: control.into(),
                ..draft("described", "")
            };
            let refused = tax.check_upsert(described).unwrap_err();
            assert_eq!(refused.field, "theme.description", "{control:?}");
        }

        let with_examples = |examples: &[&str]| ThemeDraft {
            name: "examples".into(),
            examples: examples.iter().map(|e| e.to_string()).collect(),
            ..Default::default()
        };
        let taken = tax
            .check_upsert(with_examples(&["late\u{96}delivery"]))
            .unwrap();
        assert_eq!(taken.examples, ["late–delivery"]);
        for bad in ["\u{200b}\u{200b}", "a\u{fffe}", "a\u{0}b"] {
            let refused = tax.check_upsert(with_examples(&[bad])).unwrap_err();
            assert_eq!(refused.field, "theme.examples[0]", "{bad:?}");
        }
    }

    #[test]
    fn rules_name_the_field() {
        let mut tax = Taxonomy::default();
        let parent = tax.check_upsert(draft("Delivery", "")).unwrap();
        insert(&mut tax, parent);
        let child = tax.check_upsert(draft("Late", "delivery")).unwrap();
        insert(&mut tax, child);
        let field = |d: ThemeDraft| tax.check_upsert(d).unwrap_err().field;
        assert_eq!(field(draft("  ", "")), "theme.name");
        assert_eq!(field(draft(&"x".repeat(101), "")), "theme.name");
        assert_eq!(field(draft("delivery", "")), "theme.name"); // sibling name, any case
        assert_eq!(field(draft("Other", "nope")), "theme.parent_id");
        assert_eq!(field(draft("Third level", "late")), "theme.parent_id");
        // A parent with children cannot move under another theme.
        let mut d = draft("Delivery", "late");
        d.id = "delivery".into();
        assert_eq!(field(d), "theme.parent_id");
        let mut d = draft("Self", "delivery");
        d.id = "delivery".into();
        assert_eq!(field(d), "theme.parent_id");
        let mut d = draft("Bad id", "");
        d.id = "Bad Id".into();
        assert_eq!(field(d), "theme.id");
        let mut d = draft("Many", "");
        d.examples = vec!["e".into(); MAX_THEME_EXAMPLES + 1];
        assert_eq!(field(d), "theme.examples");
        let mut d = draft("Empty example", "");
        d.examples = vec!["ok".into(), " ".into()];
        assert_eq!(field(d), "theme.examples[1]");
        // The same name under another parent is fine.
        assert!(tax.check_upsert(draft("Late", "")).is_ok());
    }

    #[test]
    fn theme_count_is_bounded() {
        let mut tax = Taxonomy::default();
        for i in 0..MAX_THEMES {
            let t = tax.check_upsert(draft(&format!("t{i}"), "")).unwrap();
            insert(&mut tax, t);
        }
        assert_eq!(
            tax.check_upsert(draft("one more", "")).unwrap_err().field,
            "theme"
        );
        // Replacing an existing theme is still allowed.
        let mut d = draft("renamed", "");
        d.id = "t0".into();
        assert!(tax.check_upsert(d).is_ok());
    }

    #[test]
    fn delete_refuses_parents_unless_cascading() {
        let mut tax = Taxonomy::default();
        let p = tax.check_upsert(draft("Delivery", "")).unwrap();
        insert(&mut tax, p);
        let c = tax.check_upsert(draft("Late", "delivery")).unwrap();
        insert(&mut tax, c);
        assert_eq!(
            tax.check_delete("delivery", false),
            Err(DeleteRefusal::HasChildren(vec!["late".into()]))
        );
        assert_eq!(
            tax.check_delete("delivery", true).unwrap(),
            vec!["delivery".to_string(), "late".to_string()]
        );
        assert_eq!(tax.check_delete("nope", true), Err(DeleteRefusal::NotFound));
        assert_eq!(
            tax.ordered()
                .iter()
                .map(|t| t.id.as_str())
                .collect::<Vec<_>>(),
            vec!["delivery", "late"]
        );
    }

    #[test]
    fn the_terms_digest_sees_themes_parents_and_labels_not_scores_or_spans() {
        use crate::domain::{Sentiment, SentimentLabel};
        let mention = |id: &str, parent: &str, p: [f32; 3], score: f32| ThemeMention {
            theme_id: id.into(),
            theme_name: id.into(),
            parent_id: parent.into(),
            score,
            sentences: vec![0],
            spans: vec![Span { start: 0, end: 10 }],
            sentiment: Sentiment::from_probabilities(p),
        };
        let negative = [0.8, 0.1, 0.1];
        let base = vec![mention("late", "delivery", negative, 0.9)];
        // New scores, probabilities and spans with the same label: same terms.
        let mut moved = vec![mention("late", "delivery", [0.7, 0.2, 0.1], 0.8)];
        moved[0].spans = vec![Span { start: 2, end: 9 }];
        assert_eq!(theme_terms_digest(&base), theme_terms_digest(&moved));
        assert_eq!(
            theme_terms(&base).into_iter().collect::<Vec<_>>(),
            vec![("delivery", "negative"), ("late", "negative")]
        );
        // Another label, theme, parent, or one more theme: other terms.
        for other in [
            vec![mention("late", "delivery", [0.1, 0.1, 0.8], 0.9)],
            vec![mention("lost", "delivery", negative, 0.9)],
            vec![mention("late", "", negative, 0.9)],
            vec![
                mention("late", "delivery", negative, 0.9),
                mention("price", "", negative, 0.6),
            ],
            Vec::new(),
        ] {
            assert_ne!(
                theme_terms_digest(&base),
                theme_terms_digest(&other),
                "{other:?}"
            );
        }
        assert_eq!(base[0].sentiment.label, SentimentLabel::Negative);
    }
}
