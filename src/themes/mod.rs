//! Theme assignment, discovery and their data: pure computation over
//! embeddings (no I/O, no model, no store). The engine embeds the texts,
//! compiles a `ThemeModel` per taxonomy version and applies it to analysed
//! units; discovery clusters what no theme covers.
//!
//! Data shipped in the binary:
//! - `builtin_taxonomy.json`: the customer-experience taxonomy installed in a
//!   new data directory (about 20 themes, examples in en, de, fr, es, pt, it).
//! - `background.txt`: the calibration sample, sentences about nothing a
//!   customer files feedback on (see `model.rs`).
//!
//! Invariants: pure; deterministic for the same input.

pub mod discover;
pub mod model;
pub mod units;

use serde::Deserialize;

use crate::domain::ThemeDraft;

pub use model::{texts_needed, ThemeModel, UnitRef, THRESHOLD};

#[derive(Deserialize)]
struct BuiltinFile {
    themes: Vec<ThemeDraft>,
}

/// The built-in taxonomy, parents first, as drafts with their fixed ids.
pub fn builtin_taxonomy() -> Vec<ThemeDraft> {
    let file: BuiltinFile = serde_json::from_str(include_str!("builtin_taxonomy.json"))
        .expect("builtin_taxonomy.json is valid (checked by a unit test)");
    file.themes
}

pub(crate) use crate::nlp::dot::{dot, max_dot, normalize};

/// The calibration background sentences.
pub fn background_sentences() -> Vec<&'static str> {
    include_str!("background.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Taxonomy;

    #[test]
    fn the_builtin_taxonomy_passes_every_rule() {
        let mut taxonomy = Taxonomy::default();
        let drafts = builtin_taxonomy();
        assert!(drafts.len() >= 18, "about 20 themes, got {}", drafts.len());
        for draft in drafts {
            let id = draft.id.clone();
            let theme = taxonomy
                .check_upsert(draft)
                .unwrap_or_else(|r| panic!("{id}: {r}"));
            assert_eq!(theme.id, id);
            assert!(theme.examples.len() >= 12, "{id} has few examples");
            taxonomy.themes.insert(theme.id.clone(), theme);
        }
        assert!(taxonomy.themes.values().any(|t| !t.parent_id.is_empty()));
        assert!(background_sentences().len() >= 300);
    }
}
