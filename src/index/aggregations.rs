//! Facets: terms aggregations over the keyword fields, in the same query.

use tantivy::aggregation::agg_req::{Aggregation, AggregationVariants, Aggregations};
use tantivy::aggregation::agg_result::{AggregationResult, AggregationResults, BucketResult};
use tantivy::aggregation::bucket::TermsAggregation;
use tantivy::aggregation::{AggContextParams, AggregationCollector, AggregationLimitsGuard};
use tantivy::Searcher;

use super::{schema, IndexError};
use crate::domain::limits::FACET_VALUES_PER_FIELD;
use crate::domain::FacetCounts;

/// Facet field names -> (names, aggregation request); None when no facets.
/// The aggregation of the i-th facet is named `f{i}`.
pub(super) fn facet_request(
    facets: &[String],
) -> Result<Option<(Vec<String>, Aggregations)>, IndexError> {
    if facets.is_empty() {
        return Ok(None);
    }
    let mut aggs = Aggregations::default();
    for (i, field) in facets.iter().enumerate() {
        let valid = schema::KEYWORD_FIELDS.contains(&field.as_str())
            || schema::attribute_key(field).is_some_and(|key| {
                !key.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            });
        if !valid {
            return Err(IndexError::InvalidFacet(field.clone()));
        }
        let terms = TermsAggregation {
            field: field.clone(),
            size: Some(FACET_VALUES_PER_FIELD as u32),
            ..TermsAggregation::default()
        };
        aggs.insert(
            facet_name(i),
            Aggregation {
                agg: AggregationVariants::Terms(terms),
                sub_aggregation: Aggregations::default(),
            },
        );
    }
    Ok(Some((facets.to_vec(), aggs)))
}

fn facet_name(position: usize) -> String {
    format!("f{position}")
}

/// The collector of a facet request, to run in the page's pass.
pub(super) fn collector(searcher: &Searcher, aggs: Aggregations) -> AggregationCollector {
    AggregationCollector::from_aggs(
        aggs,
        AggContextParams::new(
            AggregationLimitsGuard::default(),
            searcher.index().tokenizers().clone(),
        ),
    )
}

/// Facet counts from the aggregation results, in request order.
pub(super) fn read_facets(
    AggregationResults(mut results): AggregationResults,
    names: Vec<String>,
) -> Vec<FacetCounts> {
    names
        .into_iter()
        .enumerate()
        .map(|(i, field)| {
            let counts = match results.remove(&facet_name(i)) {
                Some(AggregationResult::BucketResult(BucketResult::Terms { buckets, .. })) => {
                    buckets
                        .into_iter()
                        .map(|bucket| (bucket.key.to_string(), bucket.doc_count))
                        .collect()
                }
                // A terms request answers with terms buckets; anything else
                // (none) reads as no values, as an empty field does.
                _ => Vec::new(),
            };
            FacetCounts { field, counts }
        })
        .collect()
}
