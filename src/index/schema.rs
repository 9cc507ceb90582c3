//! The tantivy schema and text analysis. Bump `SCHEMA_VERSION` when a field
//! changes: a new version lives in its own folder and is rebuilt from the
//! store at startup, so schema changes never need a manual migration.

use std::collections::BTreeMap;

use tantivy::schema::{
    DateOptions, DateTimePrecision, Field, IndexRecordOption, JsonObjectOptions, NumericOptions,
    OwnedValue, Schema, TextFieldIndexing, TextOptions, FAST, STORED, STRING,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer,
    TextAnalyzer,
};
use tantivy::{DateTime, TantivyDocument};

use crate::domain::{AnalysisState, StoredFeedback};

pub const SCHEMA_VERSION: u32 = 2;

/// Tokenizer of `text`: Unicode word split, lower-case, accent folding,
/// English stemming. Language-specific analyzers can be registered beside it
/// and chosen per item language (a new schema version).
pub const TEXT_TOKENIZER: &str = "feedback_en";

/// Fields the query language and facets may name, besides `text`.
pub const KEYWORD_FIELDS: &[&str] = &[
    "channel",
    "journey_stage",
    "product",
    "language",
    "tags",
    "customer_id",
    "sentiment",
    "analysis_status",
];

#[derive(Clone)]
pub struct Fields {
    pub id: Field,
    pub text: Field,
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
}

pub fn build_schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let text_options = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TEXT_TOKENIZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let keyword = STRING | FAST;
    let score = NumericOptions::default().set_indexed().set_fast();
    let fields = Fields {
        id: builder.add_text_field("id", STRING | STORED),
        text: builder.add_text_field("text", text_options),
        channel: builder.add_text_field("channel", keyword.clone()),
        journey_stage: builder.add_text_field("journey_stage", keyword.clone()),
        product: builder.add_text_field("product", keyword.clone()),
        language: builder.add_text_field("language", keyword.clone()),
        tags: builder.add_text_field("tags", keyword.clone()),
        customer_id: builder.add_text_field("customer_id", keyword),
        attributes: builder.add_json_field(
            "attributes",
            JsonObjectOptions::default()
                .set_indexing_options(
                    TextFieldIndexing::default()
                        .set_tokenizer("raw")
                        .set_index_option(IndexRecordOption::Basic),
                )
                .set_fast("raw"),
        ),
        created_at: builder.add_date_field(
            "created_at",
            DateOptions::default()
                .set_indexed()
                .set_fast()
                .set_precision(DateTimePrecision::Microseconds),
        ),
        nps: builder.add_i64_field("nps", score.clone()),
        csat: builder.add_i64_field("csat", score.clone()),
        ces: builder.add_i64_field("ces", score.clone()),
        rating: builder.add_i64_field("rating", score),
        seq: builder.add_u64_field("seq", FAST),
        sentiment: builder.add_text_field("sentiment", STRING | FAST),
        sentiment_score: builder.add_f64_field(
            "sentiment_score",
            NumericOptions::default().set_indexed().set_fast(),
        ),
        analysis_status: builder.add_text_field("analysis_status", STRING | FAST),
    };
    (builder.build(), fields)
}

pub fn text_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(64))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .filter(Stemmer::new(Language::English))
        .build()
}

pub fn to_document(fields: &Fields, stored: &StoredFeedback) -> TantivyDocument {
    let item = &stored.feedback;
    let mut doc = TantivyDocument::new();
    doc.add_text(fields.id, item.id.as_str());
    doc.add_text(fields.text, &item.text);
    doc.add_text(fields.channel, item.channel.as_str());
    doc.add_text(fields.journey_stage, item.journey_stage.as_str());
    if !item.product.is_empty() {
        doc.add_text(fields.product, &item.product);
    }
    let detected = match &stored.analysis {
        AnalysisState::Done(analysis) if analysis.language != "und" => analysis.language.as_str(),
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
        }
    }
    for tag in &item.tags {
        doc.add_text(fields.tags, tag);
    }
    if !item.customer_id.is_empty() {
        doc.add_text(fields.customer_id, &item.customer_id);
    }
    if !item.attributes.is_empty() {
        let object: BTreeMap<String, OwnedValue> = item
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), OwnedValue::Str(v.clone())))
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
