//! Facets: terms aggregations over the keyword fields, in the same query.

use tantivy::aggregation::agg_req::Aggregations;
use tantivy::aggregation::{AggContextParams, AggregationCollector, AggregationLimitsGuard};
use tantivy::Searcher;

use super::{schema, IndexError};
use crate::domain::limits::FACET_VALUES_PER_FIELD;
use crate::domain::FacetCounts;

/// Facet field names -> (names, aggregation request); None when no facets.
pub(super) fn facet_request(
    facets: &[String],
) -> Result<Option<(Vec<String>, Aggregations)>, IndexError> {
    if facets.is_empty() {
        return Ok(None);
    }
    let mut request = serde_json::Map::new();
    for (i, field) in facets.iter().enumerate() {
        let valid = schema::KEYWORD_FIELDS.contains(&field.as_str())
            || field.strip_prefix("attributes.").is_some_and(|key| {
                !key.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            });
        if !valid {
            return Err(IndexError::InvalidFacet(field.clone()));
        }
        request.insert(
            format!("f{i}"),
            serde_json::json!({"terms": {"field": field, "size": FACET_VALUES_PER_FIELD}}),
        );
    }
    let aggs: Aggregations = serde_json::from_value(serde_json::Value::Object(request))
        .map_err(|e| IndexError::InvalidFacet(e.to_string()))?;
    Ok(Some((facets.to_vec(), aggs)))
}

pub(super) fn collect_facets(
    searcher: &Searcher,
    query: &dyn tantivy::query::Query,
    names: Vec<String>,
    aggs: Aggregations,
) -> Result<Vec<FacetCounts>, IndexError> {
    let collector = AggregationCollector::from_aggs(
        aggs,
        AggContextParams::new(
            AggregationLimitsGuard::default(),
            searcher.index().tokenizers().clone(),
        ),
    );
    let results = searcher.search(query, &collector)?;
    let json = serde_json::to_value(&results)
        .map_err(|e| tantivy::TantivyError::InternalError(format!("aggregation result: {e}")))?;
    Ok(names
        .into_iter()
        .enumerate()
        .map(|(i, field)| {
            let counts = json
                .get(format!("f{i}"))
                .and_then(|agg| agg.get("buckets"))
                .and_then(|b| b.as_array())
                .map(|buckets| {
                    buckets
                        .iter()
                        .filter_map(|b| {
                            let key = match b.get("key")? {
                                serde_json::Value::String(s) => s.clone(),
                                other => other.to_string(),
                            };
                            Some((key, b.get("doc_count")?.as_u64()?))
                        })
                        .collect()
                })
                .unwrap_or_default();
            FacetCounts { field, counts }
        })
        .collect())
}
