//! The tantivy schema and text analysis. Bump `SCHEMA_VERSION` when a field
//! changes: a new version lives in its own folder and is rebuilt from the
//! store at startup, so schema changes never need a manual migration.

use std::collections::BTreeMap;

use tantivy::schema::{
    DateOptions, DateTimePrecision, Field, IndexRecordOption, JsonObjectOptions, NumericOptions,
    OwnedValue, Schema, TextFieldIndexing, TextOptions, FAST, INDEXED, STORED, STRING,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, Stemmer, TextAnalyzer,
    TextAnalyzerBuilder, Token, TokenFilter, TokenStream, Tokenizer, TokenizerManager,
};
use tantivy::{DateTime, TantivyDocument};

use super::words::{Cjk, WordTokenizer};
use crate::domain::{keyword_form, normalize_text, AnalysisState, StoredFeedback};

/// 4: `text` holds the normalised text (`normalize_text`): items stored before
/// in decomposed form (e + U+0301) are re-indexed composed.
/// 5: `seq` is indexed too: similarity search maps vector keys to documents.
/// 6: `text_pairs` holds each two adjacent words of `text`: a two-word phrase
/// is one term there (`query::pair_phrases`).
/// 7: `text` and `text_pairs` drop combining marks after lower-casing
/// (`StripCombiningMarks`): "İade" is found by "iade".
/// 8: `product`, `tags` and attribute values hold their NFC
/// form (`keyword_form`): a value sent decomposed was found only by a
/// filter spelling it decomposed.
/// 9: Chinese, Japanese and Korean runs are cut into characters and pairs
/// of characters (`words`): a run was one term, so a word inside it was
/// found by nothing. An analysed item's undetermined language is indexed
/// as `und`: it was left out, so no filter, facet or segment found it.
/// 10: half-width Katakana and Hangul are indexed in their full-width forms,
/// a kana and its half-width sound mark as one character (`fold_width`):
/// "ｺｰﾋｰ" and "コーヒー" were different words.
pub const SCHEMA_VERSION: u32 = 10;

/// Tokenizer of `text`: Unicode word split (CJK runs into characters and
/// pairs of characters, half-width kana folded, `words`), lower-case, accent folding, English
/// stemming. Language-specific analyzers can be registered beside it
/// and chosen per item language (a new schema version).
pub const TEXT_TOKENIZER: &str = "feedback_en";

/// Tokenizer of `text_pairs`: `TEXT_TOKENIZER`'s terms, each two at
/// adjacent positions joined by `PAIR_SEPARATOR` into one term.
pub const PAIRS_TOKENIZER: &str = "feedback_en_pairs";

/// Joins the two words of a `text_pairs` term (no term of `text` holds one:
/// the tokenizer splits on every character that is not a letter or digit).
pub const PAIR_SEPARATOR: char = ' ';

/// The name of every index field: the one catalogue that the schema, the
/// query language, filters, facets and sort keys use (a field's name is
/// written nowhere else in `index/`).
pub mod field {
    pub const ID: &str = "id";
    pub const TEXT: &str = "text";
    /// Each two adjacent words of `text` as one term: a two-word phrase
    /// without slop is a term query here, not a positional match over
    /// `text` (Elasticsearch's `index_phrases`). Not in the query language:
    /// phrases reach it through `query::pair_phrases`.
    pub const TEXT_PAIRS: &str = "text_pairs";
    pub const CHANNEL: &str = "channel";
    pub const JOURNEY_STAGE: &str = "journey_stage";
    pub const PRODUCT: &str = "product";
    pub const LANGUAGE: &str = "language";
    pub const TAGS: &str = "tags";
    pub const CUSTOMER_ID: &str = "customer_id";
    /// A JSON field: queries and facets name `attributes.KEY`.
    pub const ATTRIBUTES: &str = "attributes";
    pub const CREATED_AT: &str = "created_at";
    pub const NPS: &str = "nps";
    pub const CSAT: &str = "csat";
    pub const CES: &str = "ces";
    pub const RATING: &str = "rating";
    /// The version's store seq: the total tie-breaker of every sort, and
    /// the key of the item's vector in the similarity index.
    pub const SEQ: &str = "seq";
    pub const SENTIMENT: &str = "sentiment";
    pub const SENTIMENT_SCORE: &str = "sentiment_score";
    pub const ANALYSIS_STATUS: &str = "analysis_status";
    /// Theme ids of the item; a sub-theme's parent id too.
    pub const THEME: &str = "theme";
    /// `THEME_ID.LABEL` per theme the item carries (sub-theme and parent).
    pub const THEME_SENTIMENT: &str = "theme_sentiment";
    /// The taxonomy version the item's themes come from (analysed items).
    pub const TAXONOMY_VERSION: &str = "taxonomy_version";
}

/// The `theme_sentiment` value of a theme and a label.
pub fn theme_sentiment_value(theme_id: &str, label: &str) -> String {
    format!("{theme_id}.{label}")
}

/// Fields the query language and facets may name, besides `text`.
pub const KEYWORD_FIELDS: &[&str] = &[
    field::CHANNEL,
    field::JOURNEY_STAGE,
    field::PRODUCT,
    field::LANGUAGE,
    field::TAGS,
    field::CUSTOMER_ID,
    field::SENTIMENT,
    field::ANALYSIS_STATUS,
    field::THEME,
    field::THEME_SENTIMENT,
];

/// Fields the query language may name, in the order messages list them
/// (`attributes` is named as `attributes.KEY`).
pub const QUERY_FIELDS: &[&str] = &[
    field::TEXT,
    field::CHANNEL,
    field::JOURNEY_STAGE,
    field::PRODUCT,
    field::LANGUAGE,
    field::TAGS,
    field::CUSTOMER_ID,
    field::ATTRIBUTES,
    field::CREATED_AT,
    field::NPS,
    field::CSAT,
    field::CES,
    field::RATING,
    field::SENTIMENT,
    field::SENTIMENT_SCORE,
    field::ANALYSIS_STATUS,
    field::THEME,
    field::THEME_SENTIMENT,
];

/// For `name:*` (the item has a value there): `None` when there is no such
/// field (`attributes.KEY` is one), else whether it has the fast column that
/// query reads.
pub fn has_value_column(name: &str) -> Option<bool> {
    static SCHEMA: std::sync::LazyLock<Schema> = std::sync::LazyLock::new(|| build_schema().0);
    SCHEMA
        .find_field(name)
        .map(|(field, _)| SCHEMA.get_field_entry(field).is_fast())
}

/// The key of an `attributes.KEY` name, if `name` is one (the key may be empty).
pub fn attribute_key(name: &str) -> Option<&str> {
    name.strip_prefix(field::ATTRIBUTES)?.strip_prefix('.')
}

#[derive(Clone)]
pub struct Fields {
    pub id: Field,
    pub text: Field,
    pub text_pairs: Field,
    pub channel: Field,
    pub journey_stage: Field,
    pub product: Field,
    pub language: Field,
    pub tags: Field,
    pub customer_id: Field,
    pub attributes: Field,
    pub created_at: Field,
    pub nps: Field,
    pub csat: Field,
    pub ces: Field,
    pub rating: Field,
    pub seq: Field,
    pub sentiment: Field,
    pub sentiment_score: Field,
    pub analysis_status: Field,
    pub theme: Field,
    pub theme_sentiment: Field,
    pub taxonomy_version: Field,
    /// Documents fill `text_pairs` and two-word phrases search it
    /// (`--index-phrases`, on in `build_schema`); off, `text_pairs` stays
    /// empty and phrases search `text` by positions.
    pub phrase_pairs: bool,
}

pub fn build_schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let text_options = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TEXT_TOKENIZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    // Frequencies and lengths for BM25; no positions: a pair is matched
    // whole.
    let pairs_options = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(PAIRS_TOKENIZER)
            .set_index_option(IndexRecordOption::WithFreqs),
    );
    let keyword = STRING | FAST;
    let score = NumericOptions::default().set_indexed().set_fast();
    let fields = Fields {
        id: builder.add_text_field(field::ID, STRING | STORED),
        text: builder.add_text_field(field::TEXT, text_options),
        text_pairs: builder.add_text_field(field::TEXT_PAIRS, pairs_options),
        channel: builder.add_text_field(field::CHANNEL, keyword.clone()),
        journey_stage: builder.add_text_field(field::JOURNEY_STAGE, keyword.clone()),
        product: builder.add_text_field(field::PRODUCT, keyword.clone()),
        language: builder.add_text_field(field::LANGUAGE, keyword.clone()),
        tags: builder.add_text_field(field::TAGS, keyword.clone()),
        customer_id: builder.add_text_field(field::CUSTOMER_ID, keyword),
        attributes: builder.add_json_field(
            field::ATTRIBUTES,
            JsonObjectOptions::default()
                .set_indexing_options(
                    TextFieldIndexing::default()
                        .set_tokenizer("raw")
                        .set_index_option(IndexRecordOption::Basic),
                )
                .set_fast("raw"),
        ),
        created_at: builder.add_date_field(
            field::CREATED_AT,
            DateOptions::default()
                .set_indexed()
                .set_fast()
                .set_precision(DateTimePrecision::Microseconds),
        ),
        nps: builder.add_i64_field(field::NPS, score.clone()),
        csat: builder.add_i64_field(field::CSAT, score.clone()),
        ces: builder.add_i64_field(field::CES, score.clone()),
        rating: builder.add_i64_field(field::RATING, score),
        seq: builder.add_u64_field(field::SEQ, FAST | INDEXED),
        sentiment: builder.add_text_field(field::SENTIMENT, STRING | FAST),
        sentiment_score: builder.add_f64_field(
            field::SENTIMENT_SCORE,
            NumericOptions::default().set_indexed().set_fast(),
        ),
        analysis_status: builder.add_text_field(field::ANALYSIS_STATUS, STRING | FAST),
        theme: builder.add_text_field(field::THEME, STRING | FAST),
        theme_sentiment: builder.add_text_field(field::THEME_SENTIMENT, STRING | FAST),
        taxonomy_version: builder.add_u64_field(
            field::TAXONOMY_VERSION,
            NumericOptions::default().set_indexed().set_fast(),
        ),
        phrase_pairs: true,
    };
    (builder.build(), fields)
}

/// Tokens of this many bytes or more are dropped by the analyzers (as
/// written, before lower-casing).
pub const TOKEN_BYTES_LIMIT: usize = 64;

/// The analyzer of `text` in the index: a CJK run gives each character and
/// each pair (`Cjk::Index`).
pub fn text_analyzer() -> TextAnalyzer {
    english(Cjk::Index).build()
}

/// The analyzer of `text` in queries: a CJK run asks for its pairs, or for
/// its character when it is one (`Cjk::Query`).
pub fn query_analyzer() -> TextAnalyzer {
    english(Cjk::Query).build()
}

/// `query_analyzer`'s terms in adjacent pairs (`AdjacentPairs`): in the
/// index and in queries alike, so a phrase's pairs (`query::pair_phrases`)
/// are those the index holds.
pub fn pairs_analyzer() -> TextAnalyzer {
    english(Cjk::Query).filter(AdjacentPairs).build()
}

/// Word split (`words`), long words dropped, lower-case, combining marks
/// dropped, ASCII folding, English stemming.
fn english(cjk: Cjk) -> TextAnalyzerBuilder<impl Tokenizer> {
    TextAnalyzer::builder(WordTokenizer::new(cjk))
        .filter(RemoveLongFilter::limit(TOKEN_BYTES_LIMIT))
        .filter(LowerCaser)
        .filter(StripCombiningMarks)
        .filter(AsciiFoldingFilter)
        .filter(Stemmer::new(Language::English))
}

/// Drops combining diacritical marks (U+0300 to U+036F) from tokens. Texts
/// are indexed in NFC (`normalize_text`), so a mark is left only where no
/// composed character exists, and above all where lower-casing makes one:
/// the Turkish capital "İ" lower-cases to "i" + U+0307, and "İade" (refund)
/// was found by "İADE" but not by "iade". The tokenizer splits words at a
/// mark in the text, so no token is made of marks alone.
#[derive(Clone)]
struct StripCombiningMarks;

impl TokenFilter for StripCombiningMarks {
    type Tokenizer<T: Tokenizer> = StripCombiningMarksTokenizer<T>;

    fn transform<T: Tokenizer>(self, inner: T) -> StripCombiningMarksTokenizer<T> {
        StripCombiningMarksTokenizer { inner }
    }
}

#[derive(Clone)]
struct StripCombiningMarksTokenizer<T> {
    inner: T,
}

impl<T: Tokenizer> Tokenizer for StripCombiningMarksTokenizer<T> {
    type TokenStream<'a> = StripCombiningMarksStream<T::TokenStream<'a>>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> Self::TokenStream<'a> {
        StripCombiningMarksStream {
            tail: self.inner.token_stream(text),
        }
    }
}

struct StripCombiningMarksStream<S> {
    tail: S,
}

fn is_combining_mark(c: char) -> bool {
    ('\u{300}'..='\u{36f}').contains(&c)
}

impl<S: TokenStream> TokenStream for StripCombiningMarksStream<S> {
    fn advance(&mut self) -> bool {
        if !self.tail.advance() {
            return false;
        }
        let token = self.tail.token_mut();
        if !token.text.is_ascii() && token.text.chars().any(is_combining_mark) {
            token.text.retain(|c| !is_combining_mark(c));
        }
        true
    }

    fn token(&self) -> &Token {
        self.tail.token()
    }

    fn token_mut(&mut self) -> &mut Token {
        self.tail.token_mut()
    }
}

/// Registers the analyzers the schema's text fields name (the index's).
pub fn register_analyzers(tokenizers: &TokenizerManager) {
    tokenizers.register(TEXT_TOKENIZER, text_analyzer());
    tokenizers.register(PAIRS_TOKENIZER, pairs_analyzer());
}

/// tantivy's analyzers with the query side's under the schema's names
/// (`query_analyzer` for `text`): what the query parser analyses with.
pub fn query_tokenizers() -> TokenizerManager {
    let tokenizers = TokenizerManager::default();
    tokenizers.register(TEXT_TOKENIZER, query_analyzer());
    tokenizers.register(PAIRS_TOKENIZER, pairs_analyzer());
    tokenizers
}

/// A token per two tokens at adjacent positions (their texts joined by
/// `PAIR_SEPARATOR`, at the first one's position): a word dropped between two others
/// (`RemoveLongFilter`) leaves a gap that no pair spans, as no phrase does.
#[derive(Clone)]
struct AdjacentPairs;

impl TokenFilter for AdjacentPairs {
    type Tokenizer<T: Tokenizer> = AdjacentPairsTokenizer<T>;

    fn transform<T: Tokenizer>(self, inner: T) -> AdjacentPairsTokenizer<T> {
        AdjacentPairsTokenizer { inner }
    }
}

#[derive(Clone)]
struct AdjacentPairsTokenizer<T> {
    inner: T,
}

impl<T: Tokenizer> Tokenizer for AdjacentPairsTokenizer<T> {
    type TokenStream<'a> = AdjacentPairsStream<T::TokenStream<'a>>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> Self::TokenStream<'a> {
        AdjacentPairsStream {
            tail: self.inner.token_stream(text),
            previous: Token::default(),
            has_previous: false,
            pair: Token::default(),
        }
    }
}

struct AdjacentPairsStream<S> {
    tail: S,
    /// The last token, once there is one.
    previous: Token,
    has_previous: bool,
    pair: Token,
}

impl<S: TokenStream> TokenStream for AdjacentPairsStream<S> {
    fn advance(&mut self) -> bool {
        while self.tail.advance() {
            let token = self.tail.token();
            let joined = self.has_previous && self.previous.position + 1 == token.position;
            if joined {
                self.pair.text.clear();
                self.pair.text.push_str(&self.previous.text);
                self.pair.text.push(PAIR_SEPARATOR);
                self.pair.text.push_str(&token.text);
                self.pair.position = self.previous.position;
                self.pair.offset_from = self.previous.offset_from;
                self.pair.offset_to = token.offset_to;
                self.pair.position_length = 1;
            }
            // Reused, as the pair's text: no allocation per token.
            self.previous.text.clear();
            self.previous.text.push_str(&token.text);
            self.previous.position = token.position;
            self.previous.offset_from = token.offset_from;
            self.has_previous = true;
            if joined {
                return true;
            }
        }
        false
    }

    fn token(&self) -> &Token {
        &self.pair
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.pair
    }
}

/// The analyzer snippets analyse each word of a hit with (the snippet
/// cutter cuts the words, `Cjk::Index`, and each one alone is its own
/// query term: `Cjk::Query`): `query_analyzer`, except
/// that a token whose first character starts none of `terms` is blanked
/// before the stemmer, so only candidates are stemmed (a stem keeps its
/// word's first character, so a blanked token could never match). Stemming
/// every word of every hit was a quarter of a search's server CPU (`perf`,
/// BENCHMARKS.md "Search under load"). A token starting with an ASCII
/// character is blanked before lower-casing and folding too (those leave
/// an ASCII first character as its ASCII lower case), so most words of a
/// hit are only split, never copied or folded.
pub fn snippet_analyzer(terms: &[String]) -> TextAnalyzer {
    let firsts: std::sync::Arc<[char]> = terms
        .iter()
        .filter_map(|t| t.chars().next())
        .collect::<Vec<_>>()
        .into();
    TextAnalyzer::builder(WordTokenizer::new(Cjk::Query))
        .filter(RemoveLongFilter::limit(TOKEN_BYTES_LIMIT))
        .filter(OnlyCandidates {
            firsts: firsts.clone(),
            ascii_only: true,
        })
        .filter(LowerCaser)
        .filter(StripCombiningMarks)
        .filter(AsciiFoldingFilter)
        .filter(OnlyCandidates {
            firsts,
            ascii_only: false,
        })
        .filter(Stemmer::new(Language::English))
        .build()
}

/// Blanks tokens whose first character is none of `firsts`; with
/// `ascii_only` (before lower-casing and folding), only tokens whose first
/// character is ASCII, compared in lower case.
#[derive(Clone)]
struct OnlyCandidates {
    firsts: std::sync::Arc<[char]>,
    ascii_only: bool,
}

impl TokenFilter for OnlyCandidates {
    type Tokenizer<T: Tokenizer> = OnlyCandidatesTokenizer<T>;

    fn transform<T: Tokenizer>(self, inner: T) -> OnlyCandidatesTokenizer<T> {
        OnlyCandidatesTokenizer {
            filter: self,
            inner,
        }
    }
}

#[derive(Clone)]
struct OnlyCandidatesTokenizer<T> {
    filter: OnlyCandidates,
    inner: T,
}

impl<T: Tokenizer> Tokenizer for OnlyCandidatesTokenizer<T> {
    type TokenStream<'a> = OnlyCandidatesStream<'a, T::TokenStream<'a>>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> Self::TokenStream<'a> {
        OnlyCandidatesStream {
            filter: &self.filter,
            tail: self.inner.token_stream(text),
        }
    }
}

struct OnlyCandidatesStream<'a, S> {
    filter: &'a OnlyCandidates,
    tail: S,
}

impl<S: TokenStream> TokenStream for OnlyCandidatesStream<'_, S> {
    fn advance(&mut self) -> bool {
        if !self.tail.advance() {
            return false;
        }
        let token = self.tail.token_mut();
        let blank = match token.text.chars().next() {
            None => false,
            Some(c) if self.filter.ascii_only => {
                c.is_ascii() && !self.filter.firsts.contains(&c.to_ascii_lowercase())
            }
            // Folding can leave ASCII upper case (small capitals: U+1D05
            // `ᴅ` folds to `D`); the snippet looks such a token up in lower
            // case, as tantivy does.
            Some(c) => {
                !self.filter.firsts.contains(&c)
                    && !self.filter.firsts.contains(&c.to_ascii_lowercase())
            }
        };
        if blank {
            token.text.clear();
        }
        true
    }

    fn token(&self) -> &Token {
        self.tail.token()
    }

    fn token_mut(&mut self) -> &mut Token {
        self.tail.token_mut()
    }
}

pub fn to_document(fields: &Fields, stored: &StoredFeedback) -> TantivyDocument {
    let item = &stored.feedback;
    let mut doc = TantivyDocument::new();
    doc.add_text(fields.id, item.id.as_str());
    // Indexed in its normalised form; the store keeps the text as sent.
    let text = normalize_text(&item.text);
    doc.add_text(fields.text, &*text);
    if fields.phrase_pairs {
        doc.add_text(fields.text_pairs, &*text);
    }
    doc.add_text(fields.channel, item.channel.as_str());
    doc.add_text(fields.journey_stage, item.journey_stage.as_str());
    // Keyword values are indexed in NFC (`keyword_form`), as the filters
    // and the query language look for them.
    if !item.product.is_empty() {
        doc.add_text(fields.product, &*keyword_form(&item.product));
    }
    let detected = match &stored.analysis {
        AnalysisState::Done(analysis) => analysis.language.as_str(),
        _ => "",
    };
    let language = if item.language.is_empty() {
        detected
    } else {
        item.language.as_str()
    };
    if !language.is_empty() {
        doc.add_text(fields.language, language);
    }
    match &stored.analysis {
        AnalysisState::Pending => doc.add_text(fields.analysis_status, "pending"),
        AnalysisState::Failed { .. } => doc.add_text(fields.analysis_status, "failed"),
        AnalysisState::Done(analysis) => {
            doc.add_text(fields.analysis_status, "done");
            doc.add_text(fields.sentiment, analysis.sentiment.label.as_str());
            doc.add_f64(fields.sentiment_score, f64::from(analysis.sentiment.score));
            doc.add_u64(fields.taxonomy_version, analysis.taxonomy_version);
            // The themes and theme sentiments come from `theme_terms` alone:
            // a re-tag that keeps an item's terms does not re-index it.
            let terms = crate::domain::theme_terms(&analysis.themes);
            let mut themes = std::collections::BTreeSet::new();
            for &(id, label) in &terms {
                themes.insert(id);
                doc.add_text(fields.theme_sentiment, theme_sentiment_value(id, label));
            }
            for id in themes {
                doc.add_text(fields.theme, id);
            }
        }
    }
    // Once each: an item stored by an older build may hold two spellings
    // of one tag, and facets count a value per occurrence.
    let mut tags: Vec<std::borrow::Cow<'_, str>> = Vec::with_capacity(item.tags.len());
    for tag in &item.tags {
        let form = keyword_form(tag);
        if !tags.contains(&form) {
            doc.add_text(fields.tags, &*form);
            tags.push(form);
        }
    }
    if !item.customer_id.is_empty() {
        // An identifier: exact, as `DeleteCustomer` and the store match it.
        doc.add_text(fields.customer_id, &item.customer_id);
    }
    if !item.attributes.is_empty() {
        let object: BTreeMap<String, OwnedValue> = item
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), OwnedValue::Str(keyword_form(v).into_owned())))
            .collect();
        doc.add_object(fields.attributes, object);
    }
    doc.add_date(
        fields.created_at,
        DateTime::from_timestamp_micros(item.created_at.0),
    );
    let scores = [
        (fields.nps, item.scores.nps),
        (fields.csat, item.scores.csat),
        (fields.ces, item.scores.ces),
        (fields.rating, item.scores.rating),
    ];
    for (field, value) in scores {
        if let Some(value) = value {
            doc.add_i64(field, i64::from(value));
        }
    }
    doc.add_u64(fields.seq, stored.seq);
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(analyzer: &mut TextAnalyzer, text: &str) -> Vec<(String, usize)> {
        let mut stream = analyzer.token_stream(text);
        let mut out = Vec::new();
        while stream.advance() {
            out.push((stream.token().text.clone(), stream.token().position));
        }
        out
    }

    /// Lower-casing the Turkish capital "İ" leaves a combining dot, which
    /// no query in lower case typed: dropped, in the index's terms, the
    /// query's and the snippets'.
    #[test]
    fn lower_casing_leaves_no_combining_mark() {
        for mut analyzer in [
            text_analyzer(),
            query_analyzer(),
            snippet_analyzer(&["iad".into(), "istanbul".into()]),
        ] {
            assert_eq!(
                tokens(&mut analyzer, "İade İSTANBUL İstanbul'da"),
                tokens(&mut analyzer, "iade istanbul istanbul'da"),
            );
            assert_eq!(tokens(&mut analyzer, "İade")[0].0, "iad");
        }
        // Accented words fold as before; a mark between letters in the
        // text splits the word, as any non-letter does.
        let mut analyzer = text_analyzer();
        assert_eq!(tokens(&mut analyzer, "Crème Brûlée")[0].0, "creme");
        assert_eq!(
            tokens(&mut analyzer, "q\u{307}x").len(),
            2,
            "split at the mark"
        );
    }

    /// `text_pairs` holds each two adjacent terms of `text`, as `text`
    /// analyses them (stemmed, folded), and nothing across a dropped word.
    #[test]
    fn pairs_join_adjacent_terms_only() {
        let long = "x".repeat(TOKEN_BYTES_LIMIT);
        let text = format!("Refunds were LATE, {long} Wi-Fi été");
        let terms = tokens(&mut text_analyzer(), &text);
        assert_eq!(
            terms,
            [
                ("refund".to_string(), 0),
                ("were".into(), 1),
                ("late".into(), 2),
                ("wi".into(), 4),
                ("fi".into(), 5),
                ("ete".into(), 6)
            ]
        );
        assert_eq!(
            tokens(&mut pairs_analyzer(), &text),
            [
                ("refund were".to_string(), 0),
                ("were late".into(), 1),
                ("wi fi".into(), 4),
                ("fi ete".into(), 5)
            ]
        );
        assert_eq!(tokens(&mut pairs_analyzer(), "alone"), []);
        assert_eq!(tokens(&mut pairs_analyzer(), ""), []);
    }

    /// A CJK run: the index holds each character and each pair, queries
    /// ask for pairs, and `text_pairs` joins the query's pairs (a
    /// three-character phrase is one pair of pairs); a word after a run of
    /// n characters stands n positions after it, in the index and in
    /// queries alike.
    #[test]
    fn cjk_runs_give_characters_and_pairs() {
        let text = "配送が遅い Refunds";
        assert_eq!(
            tokens(&mut query_analyzer(), text),
            [
                ("配送".to_string(), 0),
                ("送が".into(), 1),
                ("が遅".into(), 2),
                ("遅い".into(), 3),
                ("refund".into(), 5)
            ]
        );
        let index = tokens(&mut text_analyzer(), text);
        assert_eq!(index.len(), 5 + 4 + 1, "{index:?}");
        assert!(index.contains(&("遅".to_string(), 3)));
        assert!(index.contains(&("refund".to_string(), 5)));
        assert_eq!(
            tokens(&mut pairs_analyzer(), text),
            [
                ("配送 送が".to_string(), 0),
                ("送が が遅".into(), 1),
                ("が遅 遅い".into(), 2)
            ]
        );
        // 22 characters were one term of 66 bytes, dropped as too long.
        let long = "配送が遅いので二度と注文しませんと伝えてください";
        assert_eq!(
            tokens(&mut query_analyzer(), long).len(),
            long.chars().count() - 1
        );
    }
}
