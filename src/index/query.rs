//! From a `SearchQuery` to a tantivy query: the user's query language,
//! checked for size and syntax with error positions, AND the structured
//! filters as non-scoring clauses.

use std::ops::Bound;

use tantivy::query::{
    AllQuery, BooleanQuery, ConstScoreQuery, Occur, Query, QueryParser, QueryParserError,
    RangeQuery, TermQuery,
};
use tantivy::query_grammar::{parse_query_lenient, UserInputAst, UserInputLeaf};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::{DateTime, Term};

use super::schema::{field, theme_sentiment_value, Fields, QUERY_FIELDS};
use super::IndexError;
use crate::domain::limits::{MAX_QUERY_BYTES, MAX_QUERY_CLAUSES, MAX_QUERY_DEPTH};
use crate::domain::{IntRange, SearchFilter};

/// Parses the query language; empty text matches everything.
pub fn parse_user_query(parser: &QueryParser, text: &str) -> Result<Box<dyn Query>, IndexError> {
    if text.len() > MAX_QUERY_BYTES {
        return Err(IndexError::InvalidQuery {
            position: MAX_QUERY_BYTES,
            message: format!(
                "query must be at most {MAX_QUERY_BYTES} bytes, got {}",
                text.len()
            ),
        });
    }
    if text.trim().is_empty() {
        return Ok(Box::new(AllQuery));
    }
    // The grammar (and the AST walks after it) recurse once per `(` and per
    // `NOT`: bound both before anything recursive sees the text. Without this,
    // ~730 `(` overflowed a worker thread's stack and aborted the process.
    check_nesting(text)?;
    let (ast, errors) = parse_query_lenient(text);
    if let Some(first) = errors.first() {
        return Err(IndexError::InvalidQuery {
            position: first.pos,
            message: first.message.clone(),
        });
    }
    let clauses = count_clauses(&ast);
    if clauses > MAX_QUERY_CLAUSES {
        return Err(IndexError::InvalidQuery {
            position: 0,
            message: format!(
                "query has {clauses} clauses, at most {MAX_QUERY_CLAUSES} are allowed"
            ),
        });
    }
    parser
        .parse_query(text)
        .map_err(|error| parser_error(text, error))
}

/// Rejects queries nested deeper than `MAX_QUERY_DEPTH`: open parentheses
/// outside phrases, plus a run of `NOT`s in front of one clause. Iterative, so
/// it is safe on any input; the position is the byte that goes too deep.
fn check_nesting(text: &str) -> Result<(), IndexError> {
    let too_deep = |position: usize| IndexError::InvalidQuery {
        position,
        message: format!("query nests deeper than {MAX_QUERY_DEPTH} levels of parentheses or NOT"),
    };
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut nots = 0usize; // NOTs since the last clause started
    let mut in_phrase = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\\' {
            i += 2; // an escaped character is part of a word
            continue;
        }
        if in_phrase {
            in_phrase = b != b'"';
            i += 1;
            continue;
        }
        let word_start = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
        match b {
            b'"' => {
                in_phrase = true;
                nots = 0;
            }
            b'(' => {
                depth += 1;
                if depth + nots > MAX_QUERY_DEPTH {
                    return Err(too_deep(i));
                }
            }
            b')' => depth = depth.saturating_sub(1),
            b'N' if word_start
                && bytes[i..].starts_with(b"NOT")
                && bytes.get(i + 3).is_none_or(|c| !c.is_ascii_alphanumeric()) =>
            {
                nots += 1;
                if depth + nots > MAX_QUERY_DEPTH {
                    return Err(too_deep(i));
                }
                i += 3;
                continue;
            }
            c if c.is_ascii_whitespace() || c == b'-' || c == b'+' => {}
            _ => nots = 0,
        }
        i += 1;
    }
    Ok(())
}

fn count_clauses(ast: &UserInputAst) -> usize {
    match ast {
        UserInputAst::Clause(children) => children.iter().map(|(_, c)| count_clauses(c)).sum(),
        UserInputAst::Boost(inner, _) => count_clauses(inner),
        UserInputAst::Leaf(leaf) => match leaf.as_ref() {
            UserInputLeaf::Set { elements, .. } => elements.len().max(1),
            _ => 1,
        },
    }
}

/// The fields a query may name, for messages.
fn query_fields() -> String {
    QUERY_FIELDS
        .iter()
        .map(|name| match *name {
            field::ATTRIBUTES => format!("{name}.KEY"),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn parser_error(text: &str, error: QueryParserError) -> IndexError {
    let (needle, message) = match &error {
        QueryParserError::FieldDoesNotExist(field) => (
            Some(field.clone()),
            format!("unknown field `{field}`; fields are {}", query_fields()),
        ),
        QueryParserError::ExpectedInt(_)
        | QueryParserError::ExpectedFloat(_)
        | QueryParserError::ExpectedBool(_)
        | QueryParserError::DateFormatError(_) => (None, format!("bad value: {error}")),
        other => (None, other.to_string()),
    };
    let position = needle.and_then(|n| text.find(&n)).unwrap_or(0);
    IndexError::InvalidQuery { position, message }
}

/// The filter as a list of non-scoring clauses (empty: no filter).
pub fn filter_clauses(fields: &Fields, filter: &SearchFilter) -> Vec<Box<dyn Query>> {
    let mut clauses: Vec<Box<dyn Query>> = Vec::new();
    // Alternatives as a disjunction of term queries: they iterate postings
    // lazily, where a TermSetQuery would first build a bitset of every
    // matching document (measured 4x slower on a common channel at 1M items).
    let mut any_of = |field: Field, values: Vec<String>| match values.len() {
        0 => {}
        1 => clauses.push(term(field, &values[0])),
        _ => clauses.push(Box::new(BooleanQuery::new(
            values
                .iter()
                .map(|v| (Occur::Should, term(field, v)))
                .collect(),
        ))),
    };
    any_of(
        fields.channel,
        filter
            .channels
            .iter()
            .map(|c| c.as_str().to_string())
            .collect(),
    );
    any_of(
        fields.journey_stage,
        filter
            .journey_stages
            .iter()
            .map(|s| s.as_str().to_string())
            .collect(),
    );
    any_of(fields.product, filter.products.clone());
    any_of(
        fields.language,
        filter
            .languages
            .iter()
            .map(|l| l.to_ascii_lowercase())
            .collect(),
    );
    any_of(fields.tags, filter.tags.clone());
    any_of(
        fields.sentiment,
        filter
            .sentiments
            .iter()
            .map(|s| s.as_str().to_string())
            .collect(),
    );

    any_of(fields.theme, filter.themes.clone());
    for (theme, labels) in &filter.theme_sentiments {
        any_of(
            fields.theme_sentiment,
            labels
                .iter()
                .map(|l| theme_sentiment_value(theme, l.as_str()))
                .collect(),
        );
    }

    if let Some(customer) = &filter.customer_id {
        clauses.push(term(fields.customer_id, customer));
    }
    for (key, value) in &filter.attributes {
        let mut t = Term::from_field_json_path(fields.attributes, key, false);
        t.append_type_and_str(value);
        clauses.push(Box::new(TermQuery::new(t, IndexRecordOption::Basic)));
    }
    if filter.created_after.is_some() || filter.created_before.is_some() {
        clauses.push(created_range(
            fields,
            filter.created_after.map(|at| at.0),
            filter.created_before.map(|at| at.0),
        ));
    }
    let score = filter.sentiment_score;
    if score.min.is_some() || score.max.is_some() {
        let bound = |v: Option<f32>| match v {
            Some(v) => Bound::Included(Term::from_field_f64(fields.sentiment_score, f64::from(v))),
            None => Bound::Unbounded,
        };
        clauses.push(Box::new(RangeQuery::new(
            bound(score.min),
            bound(score.max),
        )));
    }
    for (field, range) in [
        (fields.nps, filter.nps),
        (fields.csat, filter.csat),
        (fields.ces, filter.ces),
        (fields.rating, filter.rating),
    ] {
        if let Some(query) = int_range(field, range) {
            clauses.push(query);
        }
    }
    clauses
}

/// Items created in `[after, before)`; `None` leaves a side open.
fn created_range(fields: &Fields, after: Option<i64>, before: Option<i64>) -> Box<dyn Query> {
    let bound = |at: Option<i64>, inclusive: bool| match at {
        None => Bound::Unbounded,
        Some(at) => {
            let t = Term::from_field_date(fields.created_at, DateTime::from_timestamp_micros(at));
            if inclusive {
                Bound::Included(t)
            } else {
                Bound::Excluded(t)
            }
        }
    };
    Box::new(RangeQuery::new(bound(after, true), bound(before, false)))
}

/// Items created in `[start, end)`.
pub fn created_between(fields: &Fields, start: i64, end: i64) -> Box<dyn Query> {
    created_range(fields, Some(start), Some(end))
}

/// Items tagged with this taxonomy version.
pub fn taxonomy_version(fields: &Fields, version: u64) -> Box<dyn Query> {
    Box::new(TermQuery::new(
        Term::from_field_u64(fields.taxonomy_version, version),
        IndexRecordOption::Basic,
    ))
}

/// Analysed items (whatever their taxonomy version).
pub fn analysed(fields: &Fields) -> Box<dyn Query> {
    term(fields.analysis_status, "done")
}

fn term(field: Field, value: &str) -> Box<dyn Query> {
    Box::new(TermQuery::new(
        Term::from_field_text(field, value),
        IndexRecordOption::Basic,
    ))
}

fn int_range(field: Field, range: IntRange) -> Option<Box<dyn Query>> {
    if range.is_open() {
        return None;
    }
    let bound = |v: Option<i64>| match v {
        Some(v) => Bound::Included(Term::from_field_i64(field, v)),
        None => Bound::Unbounded,
    };
    Some(Box::new(RangeQuery::new(
        bound(range.min),
        bound(range.max),
    )))
}

/// The user query AND every filter clause (filters add no score).
pub fn combine(user_query: Box<dyn Query>, filters: Vec<Box<dyn Query>>) -> Box<dyn Query> {
    if filters.is_empty() {
        return user_query;
    }
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Must, user_query)];
    for filter in filters {
        clauses.push((Occur::Must, Box::new(ConstScoreQuery::new(filter, 0.0))));
    }
    Box::new(BooleanQuery::new(clauses))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parser() -> QueryParser {
        let (schema, fields) = super::super::schema::build_schema();
        let index = tantivy::Index::create_in_ram(schema);
        index.tokenizers().register(
            super::super::schema::TEXT_TOKENIZER,
            super::super::schema::text_analyzer(),
        );
        let mut parser = QueryParser::for_index(&index, vec![fields.text]);
        parser.set_conjunction_by_default();
        parser
    }

    #[test]
    fn accepts_the_documented_query_forms() {
        let parser = parser();
        for q in [
            "refund delivery",
            "refund OR delivery",
            "\"late delivery\"",
            "-refund slow",
            "(late OR slow) AND driver",
            "product:Acme channel:review tags:vip",
            "attributes.region:emea",
            "nps:[0 TO 6]",
            "",
        ] {
            parse_user_query(&parser, q).unwrap_or_else(|e| panic!("{q}: {e}"));
        }
    }

    #[test]
    fn reports_the_position_of_a_syntax_error() {
        let parser = parser();
        match parse_user_query(&parser, "refund AND (late") {
            Err(IndexError::InvalidQuery { position, .. }) => assert!(position > 0),
            other => panic!("{other:?}"),
        }
        match parse_user_query(&parser, "colour:red") {
            Err(IndexError::InvalidQuery { position, message }) => {
                assert_eq!(position, 0);
                assert!(message.contains("colour"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    /// Regression: `verbatim search "$(printf '(%.0s' $(seq 1000))"` aborted
    /// the server (stack overflow in the recursive query grammar).
    #[test]
    fn bounds_nesting_before_parsing() {
        let parser = parser();
        for hostile in [
            "(".repeat(1000),
            "(".repeat(MAX_QUERY_DEPTH + 1),
            format!("{}a{}", "(".repeat(500), ")".repeat(500)),
            "NOT ".repeat(250) + "a",
            "text:(".repeat(170),
            "(NOT ".repeat(200),
        ] {
            match parse_user_query(&parser, &hostile) {
                Err(IndexError::InvalidQuery { position, message }) => {
                    assert!(message.contains("nests deeper"), "{message}");
                    assert!(position > 0 && position < hostile.len());
                }
                other => panic!("{hostile:?}: {other:?}"),
            }
        }
        let deepest = format!(
            "{}refund{}",
            "(".repeat(MAX_QUERY_DEPTH),
            ")".repeat(MAX_QUERY_DEPTH)
        );
        parse_user_query(&parser, &deepest).unwrap();
        // Parentheses inside a phrase are text, not nesting.
        let phrase = format!("\"{}\"", "(".repeat(100));
        assert!(!matches!(
            parse_user_query(&parser, &phrase),
            Err(IndexError::InvalidQuery { ref message, .. }) if message.contains("nests deeper")
        ));
        parse_user_query(&parser, "NOT refund AND NOTE").unwrap();
    }

    /// Whatever the text, parsing returns (never overflows the stack): random
    /// mixes of the grammar's recursive tokens on a 2 MiB thread like the
    /// server's workers.
    #[test]
    fn random_nesting_never_overflows() {
        let handle = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(|| {
                let parser = parser();
                let pieces = [
                    "(", ")", "NOT ", "-", "+", "a", " ", "text:(", "\"", "^2", "AND ", "OR ",
                ];
                let mut state = 0x9e37_79b9_7f4a_7c15u64;
                for _ in 0..300 {
                    let mut q = String::new();
                    while q.len() < MAX_QUERY_BYTES - 8 {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        q.push_str(pieces[(state % pieces.len() as u64) as usize]);
                    }
                    let _ = parse_user_query(&parser, &q);
                }
            })
            .unwrap();
        handle.join().expect("parsing stayed within a 2 MiB stack");
    }

    #[test]
    fn limits_length_and_clause_count() {
        let parser = parser();
        let long = "a".repeat(MAX_QUERY_BYTES + 1);
        assert!(parse_user_query(&parser, &long).is_err());
        let many: Vec<String> = (0..=MAX_QUERY_CLAUSES).map(|i| format!("w{i}")).collect();
        assert!(parse_user_query(&parser, &many.join(" ")).is_err());
        let ok: Vec<String> = (0..MAX_QUERY_CLAUSES).map(|i| format!("w{i}")).collect();
        assert!(parse_user_query(&parser, &ok.join(" ")).is_ok());
    }
}
