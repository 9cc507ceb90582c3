//! From a `SearchQuery` to a tantivy query: the user's query language,
//! checked for size and syntax with error positions, AND the structured
//! filters as non-scoring clauses.

use std::ops::Bound;
use std::sync::Arc;

use tantivy::query::{
    AllQuery, BooleanQuery, ConstScoreQuery, Occur, Query, QueryParser, QueryParserError,
    RangeQuery, TermQuery,
};
use tantivy::query_grammar::{
    self as query_grammar, parse_query_lenient, Delimiter, UserInputAst, UserInputBound,
    UserInputLeaf, UserInputLiteral,
};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::tokenizer::{TextAnalyzer, TokenStream};
use tantivy::Term;

use super::collect::ColumnCache;
use super::date_range::CreatedRangeQuery;
use super::filters::{CachedFilter, FilterCache};
use super::schema::{
    self, field, has_value_column, theme_sentiment_value, Fields, QUERY_FIELDS, TOKEN_BYTES_LIMIT,
};
use super::tags::{ConfirmedTags, TaggedVersionQuery};
use super::IndexError;
use crate::domain::limits::{MAX_QUERY_BYTES, MAX_QUERY_CLAUSES, MAX_QUERY_DEPTH};
use crate::domain::{keyword_form, IntRange, SearchFilter};

/// Parses the query language; empty text matches everything. With
/// `phrase_pairs` (the index fills `text_pairs`), two-word phrases search
/// `text_pairs` and longer ones require their pairs (`pair_phrases`).
pub fn parse_user_query(
    parser: &QueryParser,
    text: &str,
    phrase_pairs: bool,
) -> Result<Box<dyn Query>, IndexError> {
    if text.len() > MAX_QUERY_BYTES {
        // The first character that does not fit (a position inside a
        // character would not split the text).
        let mut position = MAX_QUERY_BYTES;
        while !text.is_char_boundary(position) {
            position -= 1;
        }
        return Err(IndexError::InvalidQuery {
            position,
            message: format!(
                "query must be at most {MAX_QUERY_BYTES} bytes, got {}",
                text.len()
            ),
        });
    }
    if text.trim().is_empty() {
        return Ok(Box::new(AllQuery));
    }
    if is_plain(text) {
        // Words alone pass every check below by construction (one clause
        // level, a clause per word, no field): only the query is built,
        // from the tree the grammar would give the text, without parsing
        // it. An error (none is known for such a text) takes the
        // full path, which reports it with its position.
        if let Ok(query) = parser.build_query_from_user_input_ast(plain_tree(text)) {
            return Ok(query);
        }
    }
    // The grammar (and the AST walks after it) recurse once per `(` and per
    // `NOT`: bound both before anything recursive sees the text. Without this,
    // ~730 `(` overflowed a worker thread's stack and aborted the process.
    check_nesting(text)?;
    // `check_nesting` reads the text as the grammar does, except in texts
    // made to differ: a quote inside a word, or a parenthesis in a range, a
    // set or a regex, hides the parentheses after it (`a" ((((...` passed
    // and overflowed the stack again). So the grammar runs where no text
    // can overflow it: here when the text holds few `(` and `NOT` (each
    // level of the grammar's recursion takes one), else on a thread with a
    // stack for the deepest text `MAX_QUERY_BYTES` can spell; and the tree
    // it builds is checked for depth.
    let levels = text.matches('(').count() + text.matches("NOT").count();
    if levels <= INLINE_PARSE_LEVELS {
        parse_checked(parser, text, phrase_pairs)
    } else {
        on_parser_stack(|| parse_checked(parser, text, phrase_pairs))?
    }
}

/// Whether `text` is plain words: letters and digits apart from ASCII
/// whitespace (the grammar's separators), no word an operator of the
/// grammar (`AND`, `OR`, `NOT`, `IN`, `TO`) or as long as the analyzer
/// drops (each word is then at least one term, one outside CJK runs: a
/// text of dropped words only is an error of tantivy's parser), at most `MAX_QUERY_CLAUSES`
/// words. Such a text nests nothing, names no field and parses without
/// errors, so the grammar's checks and their parse of the text are skipped
/// (that parse was ~5% of the server's CPU for a one-word query matching
/// nothing, BENCHMARKS.md "A smaller fixed cost").
fn is_plain(text: &str) -> bool {
    if !text
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '\t' | '\n' | '\r'))
    {
        return false;
    }
    let mut words = 0;
    for word in text.split_ascii_whitespace() {
        words += 1;
        if words > MAX_QUERY_CLAUSES
            || word.len() >= TOKEN_BYTES_LIMIT
            || matches!(word, "AND" | "OR" | "NOT" | "IN" | "TO")
        {
            return false;
        }
    }
    true
}

/// The grammar's tree of a plain text (`is_plain`), without parsing it:
/// one word is a leaf; several are a clause of their distinct leaves, in
/// order, with no occur (tantivy-query-grammar's `ast` and `rewrite_ast`).
fn plain_tree(text: &str) -> UserInputAst {
    let leaf = |word: &str| {
        UserInputAst::Leaf(Box::new(UserInputLeaf::Literal(UserInputLiteral {
            field_name: None,
            phrase: word.to_string(),
            delimiter: Delimiter::None,
            slop: 0,
            prefix: false,
        })))
    };
    let words: Vec<&str> = text.split_ascii_whitespace().collect();
    if let [word] = words[..] {
        return leaf(word);
    }
    let clauses = words
        .iter()
        .enumerate()
        .filter(|&(i, word)| !words[..i].contains(word))
        .map(|(_, word)| (None, leaf(word)))
        .collect();
    UserInputAst::Clause(clauses)
}

/// Levels of the grammar (a `(` or a `NOT` each) parsed on the caller's
/// stack: a search worker's 2 MiB hold them with room to spare (a level
/// takes ~3 KB in a release build, ~16 KB in a debug one).
const INLINE_PARSE_LEVELS: usize = 32;

/// The stack of the parser thread: the deepest text `MAX_QUERY_BYTES` can
/// spell (1,024 levels) needs ~3 MiB in a release build, ~16 MiB in a
/// debug one. Reserved, not used: the pages a parse does not touch cost
/// nothing.
const PARSER_STACK_BYTES: usize = 32 * 1024 * 1024;

/// The deepest tree of a text within `MAX_QUERY_DEPTH`: a level of
/// parentheses or a `NOT` adds at most two levels of clauses (a group that
/// mixes AND and OR holds its AND run as a clause of its own) and a boost,
/// the root as many more. Only a text `check_nesting` misread reaches this
/// check.
const MAX_CLAUSE_DEPTH: usize = 3 * (MAX_QUERY_DEPTH + 1);

/// Runs `work` on a thread with `PARSER_STACK_BYTES` of stack.
fn on_parser_stack<T: Send>(work: impl FnOnce() -> T + Send) -> Result<T, IndexError> {
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("query-parser".into())
            .stack_size(PARSER_STACK_BYTES)
            .spawn_scoped(scope, work)
            .map_err(|source| IndexError::Io {
                path: "query parser thread".into(),
                cause: source,
            })?;
        Ok(handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
    })
}

/// The grammar's checks (syntax, depth, clauses, fields), then the query.
fn parse_checked(
    parser: &QueryParser,
    text: &str,
    phrase_pairs: bool,
) -> Result<Box<dyn Query>, IndexError> {
    let (ast, errors) = parse_query_lenient(text);
    if let Some(first) = errors.first() {
        return Err(IndexError::InvalidQuery {
            position: first.pos,
            message: syntax_message(text, first.pos, &first.message),
        });
    }
    if clause_depth(&ast) > MAX_CLAUSE_DEPTH {
        return Err(too_deep(0));
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
    check_leaves(&ast, text)?;
    // `parse_query` is the strict grammar's tree, then the query. A tree
    // with a phrase paired is built the same way, except for tantivy's
    // private flattening of nested clauses of one occur: the same
    // documents and scores.
    let tree = || {
        query_grammar::parse_query(text).ok().map(|mut ast| {
            complete_exclusions(&mut ast);
            fold_keyword_values(&mut ast);
            ast
        })
    };
    let paired = match phrase_pairs {
        // A text that spells the mark itself keeps its long phrases as
        // they are (no mark of ours can be confused with it).
        true => tree().and_then(|ast| pair_phrases(ast, !text.contains(PREFILTER_MARK))),
        false => None,
    };
    let built = match paired {
        Some(Paired { ast, long }) if long.is_empty() => {
            parser.build_query_from_user_input_ast(ast)
        }
        Some(Paired { ast, long }) => match prefilter_long_phrases(parser, ast, long) {
            Ok(Some(query)) => Ok(query),
            Err(error) => Err(error),
            // A mark tantivy's tree hides (inside a boost): the long
            // phrases as they are.
            Ok(None) => match tree().and_then(|ast| pair_phrases(ast, false)) {
                Some(Paired { ast, .. }) => parser.build_query_from_user_input_ast(ast),
                None => parse_text(parser, text),
            },
        },
        None => parse_text(parser, text),
    };
    built.map_err(|error| parser_error(text, error))
}

/// tantivy's query for `text`, its nested exclusions completed
/// (`complete_exclusions`).
fn parse_text(parser: &QueryParser, text: &str) -> Result<Box<dyn Query>, QueryParserError> {
    // Only NOT and `-` exclude; only a field's value can need folding.
    let excludes = text.contains("NOT") || text.contains('-');
    if excludes || may_fold(text) {
        if let Ok(mut ast) = query_grammar::parse_query(text) {
            let completed = complete_exclusions(&mut ast);
            if fold_keyword_values(&mut ast) | completed {
                return parser.build_query_from_user_input_ast(ast);
            }
        }
    }
    // The same tree, built (and its nested clauses of one occur flattened)
    // by tantivy.
    parser.parse_query(text)
}

/// The grammar's message for the error at `position`, made clearer where
/// it names no remedy: a URL pasted as it is (`https:` reads as a field,
/// `//` as a regular expression), and a word with a second `:`
/// (`created_at:` with a date-time) that is "parsed possible invalid field
/// as term".
fn syntax_message(text: &str, position: usize, message: &str) -> String {
    // The whole word (the grammar points at its start or at its value's).
    let mut start = position.min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    if text[start..].starts_with(|c: char| !c.is_whitespace()) {
        start = text[..start]
            .trim_end_matches(|c: char| !c.is_whitespace())
            .len();
    }
    let word = text[start..]
        .trim_start()
        .split(char::is_whitespace)
        .next()
        .unwrap_or_default();
    if word.contains("://") {
        return format!(
            "{message}: `{word}` reads as a field and a regular expression; quote a URL (`\"{}\"`)",
            word.trim_matches('"')
        );
    }
    if message != "parsed possible invalid field as term" {
        return message.to_string();
    }
    let date_time = word
        .strip_prefix(field::CREATED_AT)
        .and_then(|rest| rest.strip_prefix(':'))
        .filter(|value| value.len() > 10 && value.as_bytes()[10] == b'T');
    match date_time {
        Some(value) => format!(
            "`{word}`: a date-time's `:` ends a word; quote it \
             ({created}:\"{value}\"), or search a range ({created}:>={value})",
            created = field::CREATED_AT
        ),
        None => format!(
            "`{word}`: only a field's name ends with `:`; quote a value that holds one \
             (`FIELD:\"a:b\"`, `\"a:b\"`) or escape it (`a\\:b`)"
        ),
    }
}

/// Gives each nested clause made of exclusions alone (`NOT wifi` in
/// `router AND NOT wifi`, which tantivy's grammar reads as
/// `(+router +(-wifi))`) the documents it leaves: every document but the
/// excluded ones. Alone such a clause matches nothing, so `router AND NOT
/// wifi` matched nothing, and `zebra NOT NOT stripes` excluded nothing
/// (`router AND NOT wifi` now scores as `router -wifi`). A
/// query of exclusions alone at the top is left as it is: tantivy refuses
/// it ("Only excluding terms given"). Returns whether it changed the tree.
fn complete_exclusions(ast: &mut UserInputAst) -> bool {
    fn excludes_only(ast: &UserInputAst) -> bool {
        match ast {
            UserInputAst::Leaf(_) => false,
            UserInputAst::Boost(inner, _) => excludes_only(inner),
            UserInputAst::Clause(children) => children
                .iter()
                .all(|(occur, child)| *occur == Some(Occur::MustNot) || excludes_only(child)),
        }
    }
    fn walk(ast: &mut UserInputAst, top: bool) -> bool {
        match ast {
            UserInputAst::Leaf(_) => false,
            UserInputAst::Boost(inner, _) => walk(inner, top),
            UserInputAst::Clause(children) => {
                let mut changed = false;
                for (_, child) in children.iter_mut() {
                    changed |= walk(child, false);
                }
                if !top
                    && !children.is_empty()
                    && children
                        .iter()
                        .all(|(occur, _)| *occur == Some(Occur::MustNot))
                {
                    // Boosted to nothing: it adds no score.
                    let all = UserInputAst::Leaf(Box::new(UserInputLeaf::All));
                    children.push((
                        Some(Occur::Must),
                        UserInputAst::Boost(Box::new(all), 0.0.into()),
                    ));
                    changed = true;
                }
                changed
            }
        }
    }
    !excludes_only(ast) && walk(ast, true)
}

/// The start of the term (on the `id` field, whose analyzer keeps it as
/// it is) that stands for a long phrase in the tree `pair_phrases` returns
/// until `prefilter_long_phrases` puts the phrase and its pairs there.
const PREFILTER_MARK: &str = "\u{0}verbatim-long-phrase-";

/// A tree with two-word phrases on `text_pairs` and each longer phrase
/// replaced by a mark (`PREFILTER_MARK` and its index in `long`).
struct Paired {
    ast: UserInputAst,
    long: Vec<LongPhrase>,
}

/// A phrase of three terms or more: its leaf, and the leaves of its pairs
/// of adjacent terms on `text_pairs`.
struct LongPhrase {
    phrase: UserInputAst,
    pairs: Vec<UserInputAst>,
}

/// Builds `ast` and puts each long phrase where its mark is: the phrase
/// query AND its pairs as `ConstScoreQuery`s of score 0 (they score
/// nothing and ask for no statistics, so relevance cursors carry only the
/// phrase's). `None` when a mark could not be reached (tantivy's
/// `BoostQuery` does not show what it boosts).
fn prefilter_long_phrases(
    parser: &QueryParser,
    ast: UserInputAst,
    long: Vec<LongPhrase>,
) -> Result<Option<Box<dyn Query>>, QueryParserError> {
    let query = parser.build_query_from_user_input_ast(ast)?;
    let mut replacements = Vec::with_capacity(long.len());
    for LongPhrase { phrase, pairs } in long {
        let mut clauses = vec![(Occur::Must, parser.build_query_from_user_input_ast(phrase)?)];
        for pair in pairs {
            let pair = parser.build_query_from_user_input_ast(pair)?;
            let filter: Box<dyn Query> = Box::new(ConstScoreQuery::new(pair, 0.0));
            clauses.push((Occur::Must, filter));
        }
        let prefiltered: Box<dyn Query> = Box::new(BooleanQuery::new(clauses));
        replacements.push(Some(prefiltered));
    }
    let query = replace_marks(query, &mut replacements);
    Ok(replacements.iter().all(Option::is_none).then_some(query))
}

/// `query` with each mark's term query replaced by its query in
/// `replacements` (taken). Recursive over boolean clauses: `clause_depth`
/// bounded the tree first.
fn replace_marks(
    query: Box<dyn Query>,
    replacements: &mut [Option<Box<dyn Query>>],
) -> Box<dyn Query> {
    if let Some(term) = query.downcast_ref::<TermQuery>() {
        let mark = term
            .term()
            .value()
            .as_str()
            .and_then(|value| value.strip_prefix(PREFILTER_MARK))
            .and_then(|index| index.parse::<usize>().ok());
        if let Some(replacement) = mark
            .and_then(|i| replacements.get_mut(i))
            .and_then(Option::take)
        {
            return replacement;
        }
        return query;
    }
    if let Some(boolean) = query.downcast_ref::<BooleanQuery>() {
        let clauses = boolean
            .clauses()
            .iter()
            .map(|(occur, clause)| (*occur, replace_marks(clause.box_clone(), replacements)))
            .collect();
        return Box::new(BooleanQuery::with_minimum_required_clauses(
            clauses,
            boolean.get_minimum_number_should_match(),
        ));
    }
    query
}

/// `ast` with every two-word phrase of `text` (a literal, quoted or not
/// as `wi-fi`, whose words analyse to two terms at adjacent positions,
/// without slop or prefix) searching `text_pairs` instead, where it is one
/// term: the same documents match (`AdjacentPairs` joins exactly the words
/// a phrase query would find adjacent), found by one posting list instead
/// of two intersected and their positions compared, and pruned by
/// block-WAND when ranked alone. With `long_phrases`, a longer phrase
/// becomes a mark that `prefilter_long_phrases` replaces with the phrase
/// query AND its pairs of adjacent words, scoring nothing: every document
/// with the phrase holds them, so the same documents match with the
/// phrase's own score, and its positions are compared only where the
/// pairs meet. `None` when no literal is such a phrase. Recursive:
/// `clause_depth` bounded the tree first.
fn pair_phrases(ast: UserInputAst, long_phrases: bool) -> Option<Paired> {
    struct Walk {
        analyzer: Option<TextAnalyzer>,
        paired: bool,
        long_phrases: bool,
        long: Vec<LongPhrase>,
    }
    fn walk(ast: UserInputAst, state: &mut Walk) -> UserInputAst {
        match ast {
            UserInputAst::Clause(children) => UserInputAst::Clause(
                children
                    .into_iter()
                    .map(|(occur, child)| (occur, walk(child, state)))
                    .collect(),
            ),
            UserInputAst::Boost(inner, boost) => {
                UserInputAst::Boost(Box::new(walk(*inner, state)), boost)
            }
            UserInputAst::Leaf(mut leaf) => {
                let UserInputLeaf::Literal(literal) = leaf.as_mut() else {
                    return UserInputAst::Leaf(leaf);
                };
                let on_text = literal
                    .field_name
                    .as_deref()
                    .is_none_or(|name| name == field::TEXT);
                if !on_text || literal.slop != 0 || literal.prefix {
                    return UserInputAst::Leaf(leaf);
                }
                let analyzer = state.analyzer.get_or_insert_with(schema::query_analyzer);
                match phrase_pairs(analyzer, &literal.phrase) {
                    PhrasePairs::None => UserInputAst::Leaf(leaf),
                    PhrasePairs::One => {
                        literal.field_name = Some(field::TEXT_PAIRS.to_string());
                        state.paired = true;
                        UserInputAst::Leaf(leaf)
                    }
                    PhrasePairs::Within(_) if !state.long_phrases => UserInputAst::Leaf(leaf),
                    PhrasePairs::Within(spans) => {
                        state.paired = true;
                        let literal_leaf = |field_name: &str, phrase: String| {
                            UserInputAst::Leaf(Box::new(UserInputLeaf::Literal(UserInputLiteral {
                                field_name: Some(field_name.to_string()),
                                phrase,
                                delimiter: Delimiter::DoubleQuotes,
                                slop: 0,
                                prefix: false,
                            })))
                        };
                        let pairs = spans
                            .iter()
                            .map(|&(from, to)| {
                                literal_leaf(
                                    field::TEXT_PAIRS,
                                    literal.phrase[from..to].to_string(),
                                )
                            })
                            .collect();
                        let mark = format!("{PREFILTER_MARK}{}", state.long.len());
                        state.long.push(LongPhrase {
                            phrase: UserInputAst::Leaf(leaf),
                            pairs,
                        });
                        literal_leaf(field::ID, mark)
                    }
                }
            }
        }
    }
    let mut state = Walk {
        analyzer: None,
        paired: false,
        long_phrases,
        long: Vec::new(),
    };
    let ast = walk(ast, &mut state);
    state.paired.then_some(Paired {
        ast,
        long: state.long,
    })
}

/// Pairs of adjacent words a longer phrase's documents must hold, at most
/// (any of them narrow the candidates; each is one more posting list).
const MAX_PREFILTER_PAIRS: usize = 8;

/// What `text_pairs` can do for a phrase.
#[derive(Debug, PartialEq, Eq)]
enum PhrasePairs {
    /// Nothing: one term, or no two terms at adjacent positions.
    None,
    /// Exactly two terms at adjacent positions: the phrase is one pair.
    One,
    /// More terms: the byte spans of the phrase whose words make the
    /// distinct pairs of adjacent terms (each span analyses to exactly
    /// those two terms, adjacent), at most `MAX_PREFILTER_PAIRS`.
    Within(Vec<(usize, usize)>),
}

/// Whether `phrase` analyses to two adjacent terms, or to more with pairs
/// of adjacent ones.
fn phrase_pairs(analyzer: &mut TextAnalyzer, phrase: &str) -> PhrasePairs {
    // (position, byte offsets, term) of each token.
    let mut tokens: Vec<(usize, usize, usize, String)> = Vec::new();
    {
        let mut stream = analyzer.token_stream(phrase);
        while stream.advance() {
            let token = stream.token();
            tokens.push((
                token.position,
                token.offset_from,
                token.offset_to,
                token.text.clone(),
            ));
        }
    }
    // A pair of adjacent terms the index's `text_pairs` holds for every
    // text where the phrase matches. Not with a lone CJK character: the
    // query asks for it alone (its run is one character), while a text may
    // hold it inside a longer run, whose pairs `text_pairs` joins instead
    // (found by probing: "iPhone 配" missed "iPhone配送", found by the
    // positions of `text`).
    let pairable = |first: &(usize, usize, usize, String),
                    second: &(usize, usize, usize, String)| {
        first.0 + 1 == second.0 && !is_lone_cjk(&first.3) && !is_lone_cjk(&second.3)
    };
    match tokens.len() {
        0 | 1 => return PhrasePairs::None,
        2 => {
            return match pairable(&tokens[0], &tokens[1]) {
                true => PhrasePairs::One,
                false => PhrasePairs::None,
            }
        }
        _ => {}
    }
    let mut seen: Vec<(&str, &str)> = Vec::new();
    let mut spans = Vec::new();
    for window in tokens.windows(2) {
        let (first, second) = (&window[0], &window[1]);
        if spans.len() == MAX_PREFILTER_PAIRS {
            break;
        }
        if !pairable(first, second) || seen.contains(&(first.3.as_str(), second.3.as_str())) {
            continue;
        }
        let span = (first.1, second.2);
        // The span alone must analyse to the same pair (it does, cut at
        // token boundaries; checked, since a pair literal of more terms
        // would be a phrase on a field without positions).
        let Some(text) = phrase.get(span.0..span.1) else {
            continue;
        };
        if is_pair(analyzer, text, &first.3, &second.3) {
            seen.push((first.3.as_str(), second.3.as_str()));
            spans.push(span);
        }
    }
    match spans.is_empty() {
        true => PhrasePairs::None,
        false => PhrasePairs::Within(spans),
    }
}

/// Whether a term is one CJK character (`words`: a query gives one for a
/// run of one character only).
fn is_lone_cjk(term: &str) -> bool {
    let mut chars = term.chars();
    matches!((chars.next(), chars.next()), (Some(c), None) if super::words::is_cjk(c))
}

/// Whether `text` analyses to exactly the terms `first`, `second`, adjacent.
fn is_pair(analyzer: &mut TextAnalyzer, text: &str, first: &str, second: &str) -> bool {
    let mut stream = analyzer.token_stream(text);
    let mut found: Vec<(usize, String)> = Vec::with_capacity(2);
    while stream.advance() {
        if found.len() == 2 {
            return false;
        }
        let token = stream.token();
        found.push((token.position, token.text.clone()));
    }
    matches!(&found[..], [(p, a), (q, b)] if p + 1 == *q && a == first && b == second)
}

fn too_deep(position: usize) -> IndexError {
    IndexError::InvalidQuery {
        position,
        message: format!("query nests deeper than {MAX_QUERY_DEPTH} levels of parentheses or NOT"),
    }
}

/// Clauses in clauses: 1 for `a b`, 2 for `a (b c)` (a group of one clause
/// is that clause). Iterative.
fn clause_depth(ast: &UserInputAst) -> usize {
    let mut deepest = 0;
    let mut pending = vec![(ast, 0)];
    while let Some((node, depth)) = pending.pop() {
        match node {
            UserInputAst::Clause(children) => {
                deepest = deepest.max(depth + 1);
                pending.extend(children.iter().map(|(_, child)| (child, depth + 1)));
            }
            // A boost is a level of the query tree too (a `BoostQuery`).
            UserInputAst::Boost(inner, _) => {
                deepest = deepest.max(depth + 1);
                pending.push((inner, depth + 1));
            }
            UserInputAst::Leaf(_) => {}
        }
    }
    deepest
}

/// Whether the query's matches depend on the taxonomy version: its filter
/// names themes, or its text a theme field (`theme:delivery`,
/// `theme_sentiment:delivery.negative`, `theme:*`). Such a query matches
/// only items tagged with the current version (the others are the
/// response's `retag_pending`). A theme facet does not restrict the
/// matches, nor does the word in a phrase ("dark theme: blue").
pub fn filters_by_themes(query: &crate::domain::SearchQuery) -> bool {
    query.filter.uses_themes() || names_theme_field(&query.text)
}

/// The leaves of a tree, in no particular order (walked without recursion:
/// any depth).
fn leaves(ast: &UserInputAst) -> Vec<&UserInputLeaf> {
    let mut found = Vec::new();
    let mut pending = vec![ast];
    while let Some(node) = pending.pop() {
        match node {
            UserInputAst::Clause(children) => pending.extend(children.iter().map(|(_, c)| c)),
            UserInputAst::Boost(inner, _) => pending.push(inner),
            UserInputAst::Leaf(leaf) => found.push(leaf.as_ref()),
        }
    }
    found
}

/// Whether `text` names the `theme` or `theme_sentiment` field.
fn names_theme_field(text: &str) -> bool {
    if !text.contains(field::THEME) {
        return false;
    }
    let (ast, _) = parse_query_lenient(text);
    for leaf in leaves(&ast) {
        let name = match leaf {
            UserInputLeaf::Literal(literal) => literal.field_name.as_deref(),
            UserInputLeaf::Range { field, .. } | UserInputLeaf::Set { field, .. } => {
                field.as_deref()
            }
            UserInputLeaf::Exists { field } => Some(field.as_str()),
            _ => None,
        };
        if matches!(name, Some(name) if name == field::THEME || name == field::THEME_SENTIMENT) {
            return true;
        }
    }
    false
}

/// Fields whose every indexed value is lower-case (fixed vocabularies, and
/// languages, which ingest lower-cases): a value typed in the query is
/// lower-cased too, as the filters do (`language:EN` matched nothing).
const LOWER_CASE_FIELDS: &[&str] = &[
    field::CHANNEL,
    field::JOURNEY_STAGE,
    field::LANGUAGE,
    field::SENTIMENT,
    field::ANALYSIS_STATUS,
];

/// Fields whose values are labels, indexed in NFC (`keyword_form`):
/// `product`, `tags` and every `attributes.KEY`.
fn is_label_field(name: &str) -> bool {
    name == field::PRODUCT || name == field::TAGS || schema::attribute_key(name).is_some()
}

/// Whether a query may name a field whose values `fold_keyword_values`
/// changes: an ASCII text without upper-case letters has nothing to fold.
/// Any other character may: the values are read after unescaping, and a
/// text in NFC can spell a value that is not (found by probing: `cafe`, a
/// backslash and U+0301 in a quoted product is NFC as typed, as the
/// backslash stops the accent from combining; the value, `cafe` + U+0301,
/// is not, and it matched nothing).
fn may_fold(text: &str) -> bool {
    let upper = text.bytes().any(|b| b.is_ascii_uppercase())
        && LOWER_CASE_FIELDS.iter().any(|name| text.contains(name));
    upper || !text.is_ascii() || text.contains(field::CREATED_AT)
}

/// `created_at:2026-03-01` (a plain date as a value) as the whole day,
/// `created_at:[2026-03-01T00:00:00Z TO 2026-03-02T00:00:00Z}`, and an
/// `IN` set holding plain dates as a clause of one such range (or one
/// exact date-time) per element, any of them; `None` for every other node.
/// A plain date had meant its first microsecond: a value matched almost
/// nothing.
fn whole_days(node: &UserInputAst) -> Option<UserInputAst> {
    let UserInputAst::Leaf(leaf) = node else {
        return None;
    };
    let day = |value: &str| -> Option<UserInputLeaf> {
        let mut lower = value.to_string();
        if !widen_date(&mut lower) {
            return None;
        }
        let date = time::Date::parse(
            value,
            time::macros::format_description!("[year]-[month]-[day]"),
        )
        .ok()?;
        let upper = match date.next_day() {
            Some(next) => UserInputBound::Exclusive(format!("{next}T00:00:00Z")),
            None => UserInputBound::Unbounded,
        };
        Some(UserInputLeaf::Range {
            field: Some(field::CREATED_AT.to_string()),
            lower: UserInputBound::Inclusive(lower),
            upper,
        })
    };
    match leaf.as_ref() {
        UserInputLeaf::Literal(literal)
            if literal.field_name.as_deref() == Some(field::CREATED_AT) =>
        {
            day(&literal.phrase).map(|range| UserInputAst::Leaf(Box::new(range)))
        }
        UserInputLeaf::Set {
            field: Some(name),
            elements,
        } if name == field::CREATED_AT && elements.iter().any(|e| day(e).is_some()) => {
            let clauses = elements
                .iter()
                .map(|element| {
                    let leaf = day(element).unwrap_or_else(|| {
                        UserInputLeaf::Literal(UserInputLiteral {
                            field_name: Some(field::CREATED_AT.to_string()),
                            phrase: element.clone(),
                            delimiter: Delimiter::DoubleQuotes,
                            slop: 0,
                            prefix: false,
                        })
                    });
                    (Some(Occur::Should), UserInputAst::Leaf(Box::new(leaf)))
                })
                .collect();
            Some(UserInputAst::Clause(clauses))
        }
        _ => None,
    }
}

/// A plain date (`2026-03-01`) as the RFC 3339 date-time tantivy reads,
/// midnight UTC (as the CLI's `--after` takes one); returns whether it
/// was one.
fn widen_date(value: &mut String) -> bool {
    let b = value.as_bytes();
    let plain = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if plain {
        value.push_str("T00:00:00Z");
    }
    plain
}

/// Puts the values the query searches fields for in the form those fields
/// are indexed in: lower-case for `LOWER_CASE_FIELDS`, NFC for labels
/// (literals, `IN` sets and range bounds), and plain dates of `created_at`
/// as date-times (`widen_date`); returns whether it changed any.
fn fold_keyword_values(ast: &mut UserInputAst) -> bool {
    fn fold(value: &mut String, lower: bool) -> bool {
        let folded = if lower {
            value
                .bytes()
                .any(|b| b.is_ascii_uppercase())
                .then(|| value.to_ascii_lowercase())
        } else {
            match keyword_form(value) {
                std::borrow::Cow::Owned(nfc) => Some(nfc),
                std::borrow::Cow::Borrowed(_) => None,
            }
        };
        folded.map(|folded| *value = folded).is_some()
    }
    // Some(true): lower-case; Some(false): NFC; None: as typed.
    let folding = |field: Option<&str>| match field {
        Some(name) if LOWER_CASE_FIELDS.contains(&name) => Some(true),
        Some(name) if is_label_field(name) => Some(false),
        _ => None,
    };
    let mut changed = false;
    let mut pending = vec![ast];
    while let Some(node) = pending.pop() {
        if let Some(days) = whole_days(node) {
            *node = days;
            changed = true;
            continue;
        }
        match node {
            UserInputAst::Clause(children) => pending.extend(children.iter_mut().map(|(_, c)| c)),
            UserInputAst::Boost(inner, _) => pending.push(inner),
            UserInputAst::Leaf(leaf) => match leaf.as_mut() {
                UserInputLeaf::Range {
                    field: Some(field),
                    lower,
                    upper,
                } if field == field::CREATED_AT => {
                    for bound in [lower, upper] {
                        if let UserInputBound::Inclusive(value) | UserInputBound::Exclusive(value) =
                            bound
                        {
                            changed |= widen_date(value);
                        }
                    }
                }
                UserInputLeaf::Literal(literal) => {
                    if let Some(lower) = folding(literal.field_name.as_deref()) {
                        changed |= fold(&mut literal.phrase, lower);
                    }
                }
                UserInputLeaf::Set { field, elements } => {
                    if let Some(lower) = folding(field.as_deref()) {
                        for element in elements.iter_mut() {
                            changed |= fold(element, lower);
                        }
                    }
                }
                UserInputLeaf::Range {
                    field: Some(field),
                    lower,
                    upper,
                } if is_label_field(field) => {
                    for bound in [lower, upper] {
                        if let UserInputBound::Inclusive(value) | UserInputBound::Exclusive(value) =
                            bound
                        {
                            changed |= fold(value, false);
                        }
                    }
                }
                _ => {}
            },
        }
    }
    changed
}

/// Numeric fields of the query language (ranges checked as the filters
/// check theirs).
const NUMBER_FIELDS: &[&str] = &[
    field::NPS,
    field::CSAT,
    field::CES,
    field::RATING,
    field::SENTIMENT_SCORE,
];

/// Leaves the parser would take but that cannot mean what they say:
/// - `FIELD:*` (the field has a value) reads the field's fast column: the
///   parser takes any name, and an unknown field or one without a column
///   failed the search (an INTERNAL answer) instead of the query;
/// - a range on a number field whose lower bound is above its upper one, or
///   a bound that is not a number (`NaN`), which the filters refuse and
///   the query matched nothing with; a range without bounds (`[* TO *]`),
///   which matched nothing;
/// - `attributes.KEY` with a key no item can have (empty, or not 1 to
///   `MAX_ATTRIBUTE_KEY_BYTES` bytes of `[a-z0-9_]`), which matched nothing.
fn check_leaves(ast: &UserInputAst, text: &str) -> Result<(), IndexError> {
    let invalid = |name: &str, message: String| IndexError::InvalidQuery {
        position: text.find(name).unwrap_or(0),
        message,
    };
    for leaf in leaves(ast) {
        let theme_values = match leaf {
            UserInputLeaf::Literal(literal) => literal
                .field_name
                .as_deref()
                .map(|f| (f, std::slice::from_ref(&literal.phrase))),
            UserInputLeaf::Set {
                field: Some(field),
                elements,
            } => Some((field.as_str(), elements.as_slice())),
            _ => None,
        };
        if let Some((name, values)) = theme_values {
            for value in values {
                check_theme_value(name, value).map_err(|m| invalid(name, m))?;
            }
        }
        let name = match leaf {
            UserInputLeaf::Exists { field } => {
                let message = match has_value_column(field) {
                    Some(true) => continue,
                    Some(false) => {
                        format!("`{field}:*` is not supported: every item has a value there")
                    }
                    None => {
                        format!("unknown field `{field}`; fields are {}", query_fields())
                    }
                };
                return Err(invalid(field, message));
            }
            UserInputLeaf::Range {
                field: Some(field),
                lower: UserInputBound::Unbounded,
                upper: UserInputBound::Unbounded,
            } => {
                // tantivy's range of no bound matches nothing.
                return Err(invalid(
                    field,
                    format!(
                        "`{field}:[* TO *]` has no bound: `{field}:*` finds the items \
                         with a value"
                    ),
                ));
            }
            UserInputLeaf::Range {
                field: Some(field),
                lower,
                upper,
            } => {
                if NUMBER_FIELDS.contains(&field.as_str()) {
                    check_range(field, lower, upper).map_err(|m| invalid(field, m))?;
                } else if field == field::THEME || field == field::THEME_SENTIMENT {
                    // Ids have no order anyone means: `theme:[a TO z]`
                    // matched nothing without a word.
                    return Err(invalid(
                        field,
                        format!("`{field}` takes values, not ranges: `{field}:VALUE` or `{field}:IN [...]`"),
                    ));
                } else if field == field::CREATED_AT {
                    check_date_range(field, lower, upper).map_err(|m| invalid(field, m))?;
                }
                field
            }
            UserInputLeaf::Literal(literal) => match &literal.field_name {
                Some(field) => field,
                None => continue,
            },
            UserInputLeaf::Set {
                field: Some(field), ..
            } => field,
            _ => continue,
        };
        if let Some(key) = schema::attribute_key(name) {
            if !crate::domain::is_attribute_key(key) {
                return Err(invalid(
                    name,
                    format!(
                        "`{name}`: an attribute key is 1 to {} bytes of [a-z0-9_]",
                        crate::domain::limits::MAX_ATTRIBUTE_KEY_BYTES
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A value of `theme` (a theme id) or `theme_sentiment` (`THEME_ID.LABEL`)
/// as the filter takes it: one no item can have was searched for and
/// matched nothing (`theme:Delivery`, `theme_sentiment:delivery.awful`).
fn check_theme_value(field: &str, value: &str) -> Result<(), String> {
    let id = match field {
        field::THEME => value,
        field::THEME_SENTIMENT => {
            let labels = ["negative", "neutral", "positive"];
            match value.rsplit_once('.') {
                Some((id, label)) if labels.contains(&label) => id,
                _ => {
                    return Err(format!(
                        "`{field}:{value}`: expected THEME_ID.LABEL, LABEL one of {}",
                        labels.join(", ")
                    ))
                }
            }
        }
        _ => return Ok(()),
    };
    crate::domain::check_theme_id(field, id)
        .map_err(|r| format!("`{field}:{value}`: the theme id {}", r.reason))
}

/// A bound's value (None: unbounded).
fn bound_text(bound: &UserInputBound) -> Option<&str> {
    match bound {
        UserInputBound::Inclusive(v) | UserInputBound::Exclusive(v) => Some(v),
        UserInputBound::Unbounded => None,
    }
}

/// A `created_at` value as the query reads it: RFC 3339, or a plain date
/// (midnight UTC, `widen_date`).
fn read_date(value: &str) -> Option<time::OffsetDateTime> {
    let mut widened = value.to_string();
    widen_date(&mut widened);
    time::OffsetDateTime::parse(&widened, &time::format_description::well_known::Rfc3339).ok()
}

/// A date range's bounds (RFC 3339, as tantivy reads them, or plain dates):
/// the lower at most the upper. A bound that does not parse is left to tantivy's error.
fn check_date_range(
    field: &str,
    lower: &UserInputBound,
    upper: &UserInputBound,
) -> Result<(), String> {
    let value = |bound: &UserInputBound| {
        let text = bound_text(bound)?;
        read_date(text).map(|at| (at, text.to_string()))
    };
    if let (Some((min, min_text)), Some((max, max_text))) = (value(lower), value(upper)) {
        if min > max {
            return Err(format!(
                "`{field}`: range lower bound {min_text} is later than its upper bound {max_text}"
            ));
        }
        if min == max {
            check_not_empty(field, lower, upper)?;
        }
    }
    Ok(())
}

/// A number range's bounds: numbers, the lower at most the upper.
fn check_range(field: &str, lower: &UserInputBound, upper: &UserInputBound) -> Result<(), String> {
    let value = |bound: &UserInputBound| -> Result<Option<f64>, String> {
        let Some(v) = bound_text(bound) else {
            return Ok(None);
        };
        match v.parse::<f64>() {
            Ok(number) if number.is_nan() => {
                Err(format!("`{field}`: range bound `{v}` is not a number"))
            }
            Ok(number) => Ok(Some(number)),
            // Not a number at all: tantivy's own error names it.
            Err(_) => Ok(None),
        }
    };
    if let (Some(min), Some(max)) = (value(lower)?, value(upper)?) {
        if min > max {
            return Err(format!(
                "`{field}`: range lower bound {min} is greater than its upper bound {max}"
            ));
        }
        if min == max {
            check_not_empty(field, lower, upper)?;
        }
        // Scores are whole numbers: `nps:{5 TO 6}` holds none.
        if field != field::SENTIMENT_SCORE {
            let low = match lower {
                UserInputBound::Exclusive(_) => min.floor() + 1.0,
                _ => min.ceil(),
            };
            let high = match upper {
                UserInputBound::Exclusive(_) => max.ceil() - 1.0,
                _ => max.floor(),
            };
            if low > high {
                return Err(format!(
                    "`{field}`: the range holds no whole number (scores are whole numbers)"
                ));
            }
        }
    }
    Ok(())
}

/// A range whose bounds are equal holds a value only when both are
/// inclusive: `nps:{5 TO 5}` and `nps:[5 TO 5}` match nothing.
fn check_not_empty(
    field: &str,
    lower: &UserInputBound,
    upper: &UserInputBound,
) -> Result<(), String> {
    match (lower, upper) {
        (UserInputBound::Inclusive(_), UserInputBound::Inclusive(_)) => Ok(()),
        _ => Err(format!(
            "`{field}`: the range is empty (equal bounds, one of them excluded); \
             `{field}:[A TO A]` or `{field}:A` matches the value A"
        )),
    }
}

/// Rejects queries nested deeper than `MAX_QUERY_DEPTH`: open parentheses
/// outside phrases, plus a run of `NOT`s in front of one clause. Iterative, so
/// it is safe on any input; the position is the byte that goes too deep.
fn check_nesting(text: &str) -> Result<(), IndexError> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    // NOTs since the last clause started.
    let mut nots = 0usize;
    // The quote a phrase opened with: tantivy's grammar takes `"`, and `'`
    // where a term starts (a word may hold one: `don't`), each closed by its
    // own kind.
    let mut in_phrase: Option<u8> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\\' {
            i += 2; // an escaped character is part of a word
            continue;
        }
        if let Some(quote) = in_phrase {
            if b == quote {
                in_phrase = None;
            }
            i += 1;
            continue;
        }
        let word_start = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
        let term_start = i == 0
            || matches!(
                bytes[i - 1],
                b' ' | b'\t' | b'\n' | b'\r' | b'(' | b'+' | b'-' | b':'
            );
        match b {
            b'"' => {
                in_phrase = Some(b);
                nots = 0;
            }
            b'\'' if term_start => {
                in_phrase = Some(b);
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
    // A value tantivy cannot read names neither its field nor itself: the
    // first leaf of such a field whose value does not read is the one.
    let whole = |v: &str| v == "*" || v.parse::<i64>().is_ok();
    let number = |v: &str| v == "*" || v.parse::<f64>().is_ok();
    let date = |v: &str| v == "*" || read_date(v).is_some();
    let (bad, message) = match &error {
        QueryParserError::FieldDoesNotExist(field) => {
            let position = text.find(field.as_str()).unwrap_or(0);
            return IndexError::InvalidQuery {
                position,
                message: format!("unknown field `{field}`; fields are {}", query_fields()),
            };
        }
        // tantivy's own messages name Rust's error types
        // (`ParseIntError { kind: InvalidDigit }`).
        QueryParserError::ExpectedInt(_) => (
            bad_value(
                text,
                &[field::NPS, field::CSAT, field::CES, field::RATING],
                whole,
            ),
            "expected a whole number".to_string(),
        ),
        QueryParserError::ExpectedFloat(_) => (
            bad_value(text, &[field::SENTIMENT_SCORE], number),
            "expected a number".to_string(),
        ),
        QueryParserError::ExpectedBool(_) => (None, "expected true or false".to_string()),
        QueryParserError::DateFormatError(_) => (
            bad_value(text, &[field::CREATED_AT], date),
            "`created_at` takes RFC 3339 date-times (2026-03-01T09:30:00Z, \
             2026-03-01T09:30:00+02:00) or dates (2026-03-01, midnight UTC)"
                .to_string(),
        ),
        other => {
            return IndexError::InvalidQuery {
                position: 0,
                message: other.to_string(),
            }
        }
    };
    match bad {
        Some(BadValue {
            field,
            value,
            position,
        }) => IndexError::InvalidQuery {
            position,
            message: format!("bad value `{value}` for `{field}`: {message}"),
        },
        None => IndexError::InvalidQuery {
            position: 0,
            message: format!("bad value: {message}"),
        },
    }
}

/// A value of the query that its field cannot read, and where it is.
struct BadValue {
    field: &'static str,
    value: String,
    position: usize,
}

/// The first value of one of `fields` (a word, a range bound or a set's
/// element) that `reads` refuses, and its byte position in `text` (the
/// value's, found after its field's name; the name's when the value is
/// written otherwise, quoted or escaped).
fn bad_value(
    text: &str,
    fields: &[&'static str],
    reads: impl Fn(&str) -> bool,
) -> Option<BadValue> {
    let (ast, _) = parse_query_lenient(text);
    for leaf in leaves(&ast) {
        let (name, values): (&str, Vec<&str>) = match leaf {
            UserInputLeaf::Literal(literal) => match &literal.field_name {
                Some(name) => (name, vec![literal.phrase.as_str()]),
                None => continue,
            },
            UserInputLeaf::Range {
                field: Some(name),
                lower,
                upper,
            } => (
                name,
                [bound_text(lower), bound_text(upper)]
                    .into_iter()
                    .flatten()
                    .collect(),
            ),
            UserInputLeaf::Set {
                field: Some(name),
                elements,
            } => (name, elements.iter().map(String::as_str).collect()),
            _ => continue,
        };
        let Some(&field) = fields.iter().find(|f| **f == name) else {
            continue;
        };
        if let Some(value) = values.into_iter().find(|v| !reads(v)) {
            // The field's name where a word starts (`ces:` is not the end
            // of `attributes.sources:`), then its value after the `:`.
            let name = format!("{field}:");
            let named = text
                .match_indices(&name)
                .map(|(at, _)| at)
                .find(|&at| {
                    text[..at]
                        .chars()
                        .next_back()
                        .is_none_or(|c| c.is_whitespace() || "(+-".contains(c))
                })
                .unwrap_or(0);
            let after = named + name.len().min(text.len() - named);
            let position = text[after..].find(value).map_or(named, |at| after + at);
            return Some(BadValue {
                field,
                value: value.to_string(),
                position,
            });
        }
    }
    None
}

/// One clause of a filter. `key` (the field and its values) is set on the
/// clauses worth keeping as bits per segment (`filters::FilterCache`): the
/// few-valued fields and rating ranges a dashboard repeats; a customer id,
/// an attribute or a date range is matched afresh each time.
pub struct FilterClause {
    pub key: Option<String>,
    pub query: Box<dyn Query>,
}

impl FilterClause {
    pub fn cached(key: String, query: Box<dyn Query>) -> Self {
        FilterClause {
            key: Some(key),
            query,
        }
    }

    fn plain(query: Box<dyn Query>) -> Self {
        FilterClause { key: None, query }
    }
}

/// The filter as a list of non-scoring clauses (empty: no filter); a date
/// range reads the segments' date blocks from `columns`.
pub fn filter_clauses(
    fields: &Fields,
    columns: &Arc<ColumnCache>,
    filter: &SearchFilter,
) -> Vec<FilterClause> {
    let mut clauses: Vec<FilterClause> = Vec::new();
    // Alternatives as a disjunction of term queries: they iterate postings
    // lazily, where a TermSetQuery would first build a bitset of every
    // matching document (measured 4x slower on a common channel at 1M items).
    let mut any_of = |field: Field, values: Vec<String>| {
        let query: Box<dyn Query> = match values.len() {
            0 => return,
            1 => term(field, &values[0]),
            _ => Box::new(BooleanQuery::new(
                values
                    .iter()
                    .map(|v| (Occur::Should, term(field, v)))
                    .collect(),
            )),
        };
        // A set: the order the values came in does not matter.
        let mut sorted = values.clone();
        sorted.sort();
        let key = format!("{}={sorted:?}", field.field_id());
        clauses.push(FilterClause::cached(key, query));
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
    let labels = |values: &[String]| {
        values
            .iter()
            .map(|v| keyword_form(v).into_owned())
            .collect()
    };
    any_of(fields.product, labels(&filter.products));
    any_of(
        fields.language,
        filter
            .languages
            .iter()
            .map(|l| l.to_ascii_lowercase())
            .collect(),
    );
    any_of(fields.tags, labels(&filter.tags));
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
        clauses.push(FilterClause::plain(term(fields.customer_id, customer)));
    }
    for (key, value) in &filter.attributes {
        let mut t = Term::from_field_json_path(fields.attributes, key, false);
        t.append_type_and_str(&keyword_form(value));
        clauses.push(FilterClause::plain(Box::new(TermQuery::new(
            t,
            IndexRecordOption::Basic,
        ))));
    }
    if let Some(range) = filter.created_range() {
        clauses.push(FilterClause::plain(Box::new(CreatedRangeQuery::new(
            range,
            columns.clone(),
        ))));
    }
    let score = filter.sentiment_score;
    if score.min.is_some() || score.max.is_some() {
        let bound = |v: Option<f32>| match v {
            Some(v) => Bound::Included(Term::from_field_f64(fields.sentiment_score, f64::from(v))),
            None => Bound::Unbounded,
        };
        clauses.push(FilterClause::cached(
            range_key(fields.sentiment_score, score.min, score.max),
            Box::new(RangeQuery::new(bound(score.min), bound(score.max))),
        ));
    }
    for (field, range) in [
        (fields.nps, filter.nps),
        (fields.csat, filter.csat),
        (fields.ces, filter.ces),
        (fields.rating, filter.rating),
    ] {
        if let Some(query) = int_range(field, range) {
            clauses.push(FilterClause::cached(
                range_key(field, range.min, range.max),
                query,
            ));
        }
    }
    clauses
}

/// The cache key of a range filter on `field`.
fn range_key<T: std::fmt::Debug>(field: Field, min: Option<T>, max: Option<T>) -> String {
    format!("{}={min:?}..{max:?}", field.field_id())
}

/// The clauses as queries for `combine`: the cached ones ANDed into one
/// `CachedFilter`, the others as they are.
pub fn filter_queries(clauses: Vec<FilterClause>, cache: &Arc<FilterCache>) -> Vec<Box<dyn Query>> {
    let mut queries = Vec::new();
    let mut cached = Vec::new();
    for clause in clauses {
        match clause.key {
            Some(key) => cached.push((key, clause.query)),
            None => queries.push(clause.query),
        }
    }
    if !cached.is_empty() {
        queries.push(Box::new(CachedFilter::new(cached, cache.clone())));
    }
    queries
}

/// Tagged with `version` (indexed or confirmed since) as a cached filter
/// clause; the key carries the confirmations' generation.
pub fn taxonomy_version_clause(
    fields: &Fields,
    tags: &Arc<ConfirmedTags>,
    version: u64,
) -> FilterClause {
    FilterClause::cached(
        format!(
            "{}={version}@{}",
            fields.taxonomy_version.field_id(),
            tags.generation()
        ),
        taxonomy_version(fields, tags, version),
    )
}

/// `analysed` as a cached filter clause.
pub fn analysed_clause(fields: &Fields) -> FilterClause {
    FilterClause::cached(
        format!("{}=done", fields.analysis_status.field_id()),
        analysed(fields),
    )
}

/// Items created in `[start, end)`.
pub fn created_between(columns: &Arc<ColumnCache>, start: i64, end: i64) -> Box<dyn Query> {
    Box::new(CreatedRangeQuery::new((start, end), columns.clone()))
}

/// Items tagged with this taxonomy version: indexed with it, or confirmed
/// with it since (`tags`).
pub fn taxonomy_version(
    fields: &Fields,
    tags: &Arc<ConfirmedTags>,
    version: u64,
) -> Box<dyn Query> {
    Box::new(TaggedVersionQuery::new(
        fields.taxonomy_version,
        version,
        tags.clone(),
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

    /// Each text is INVALID_ARGUMENT, its message holding the needle and
    /// its position inside the text.
    fn assert_refused(parser: &QueryParser, cases: &[(&str, &str)]) {
        for &(text, needle) in cases {
            match parse_user_query(parser, text, true) {
                Err(IndexError::InvalidQuery { message, position }) => {
                    assert!(message.contains(needle), "{text}: {message}");
                    assert!(position < text.len());
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    /// The service's parser (`index::query_parser`: the query side's
    /// analyzers) over an empty index.
    fn parser() -> QueryParser {
        let (schema, fields) = super::super::schema::build_schema();
        let index = tantivy::Index::create_in_ram(schema);
        super::super::schema::register_analyzers(index.tokenizers());
        super::super::query_parser(&index, &fields)
    }

    /// A NOT inside a query (after AND / OR, or in parentheses) leaves
    /// every document but those it excludes: tantivy's grammar reads
    /// `router AND NOT wifi` as `(+router +(-wifi))`, whose inner clause
    /// alone matched nothing (so did the whole query). A query of
    /// exclusions alone is still refused.
    #[test]
    fn nested_exclusions_leave_every_other_document() {
        let texts = [
            "router wifi",
            "router",
            "wifi",
            "zebra stripes",
            "zebra",
            "router cable",
        ];
        let (parser, matching) = texts_index(&texts);
        let cases: [(&str, &[&str]); 9] = [
            ("router -wifi", &["router", "router cable"]),
            ("router AND NOT wifi", &["router", "router cable"]),
            ("NOT wifi AND router", &["router", "router cable"]),
            ("router AND (NOT wifi)", &["router", "router cable"]),
            ("router AND (NOT wifi AND NOT cable)", &["router"]),
            ("zebra NOT NOT stripes", &["zebra stripes"]),
            ("zebra -(NOT stripes)", &["zebra stripes"]),
            (
                "\"router wifi\" OR (NOT router AND NOT zebra)",
                &["router wifi", "wifi"],
            ),
            (
                "router OR NOT wifi",
                &[
                    "router",
                    "router cable",
                    "router wifi",
                    "zebra",
                    "zebra stripes",
                ],
            ),
        ];
        for pairs in [true, false] {
            for (query, expected) in cases {
                assert_eq!(
                    matching(&parser, query, pairs),
                    expected,
                    "{query} (pairs {pairs})"
                );
            }
            for refused in [
                "NOT wifi",
                "-wifi",
                "NOT wifi AND NOT router",
                "-(router wifi)",
            ] {
                let error = parse_user_query(&parser, refused, pairs).err();
                assert!(
                    matches!(&error, Some(IndexError::InvalidQuery { message, .. }) if message.contains("excluding")),
                    "{refused}: {error:?}"
                );
            }
        }
    }

    /// An index of `texts` (ids `i-0`, `i-1`, ...), the service's query
    /// parser over it, and which of the texts a query matches (sorted), with
    /// two-word phrases as pairs or not.
    #[allow(clippy::type_complexity)]
    fn texts_index<'t>(
        texts: &'t [&'t str],
    ) -> (
        QueryParser,
        impl Fn(&QueryParser, &str, bool) -> Vec<&'t str>,
    ) {
        let (index, fields, mut writer) = crate::index::test_index();
        for (seq, text) in texts.iter().enumerate() {
            let draft = crate::domain::FeedbackDraft {
                id: format!("i-{seq}"),
                text: text.to_string(),
                ..Default::default()
            };
            crate::index::add_test_item(
                &writer,
                &fields,
                seq as u64,
                draft,
                crate::domain::AnalysisState::Pending,
            );
        }
        writer.commit().unwrap();
        let searcher = index.reader().unwrap().searcher();
        let parser = super::super::query_parser(&index, &fields);
        let matching = move |parser: &QueryParser, query: &str, pairs: bool| -> Vec<&'t str> {
            let query =
                parse_user_query(parser, query, pairs).unwrap_or_else(|e| panic!("{query}: {e}"));
            let mut found: Vec<&str> = texts
                .iter()
                .enumerate()
                .filter(|(seq, _)| {
                    let id = Term::from_field_text(fields.id, &format!("i-{seq}"));
                    let one = BooleanQuery::new(vec![
                        (Occur::Must, query.box_clone()),
                        (
                            Occur::Must,
                            Box::new(TermQuery::new(id, IndexRecordOption::Basic)),
                        ),
                    ]);
                    searcher.search(&one, &tantivy::collector::Count).unwrap() == 1
                })
                .map(|(_, text)| *text)
                .collect();
            found.sort();
            found
        };
        (parser, matching)
    }

    /// Words inside Chinese, Japanese and Korean runs are found (schema 9:
    /// a run was one term), as words, phrases and pairs, and a character
    /// alone inside a run; pairs that are not adjacent in the text do not
    /// match.
    #[test]
    fn cjk_words_are_found_inside_runs() {
        let texts = [
            "配送が遅い",
            "配送は早い",
            "太贵了",
            "贵",
            "한국어 배송이 늦어요",
            "iPhone配送 late",
            "遅い配送",
            "good 贵了",
            "遅。がっかり",
        ];
        let (parser, matching) = texts_index(&texts);
        let cases: [(&str, &[&str]); 19] = [
            (
                "配送",
                &["iPhone配送 late", "遅い配送", "配送が遅い", "配送は早い"],
            ),
            ("贵", &["good 贵了", "太贵了", "贵"]),
            ("太", &["太贵了"]),
            ("配送が遅い", &["配送が遅い"]),
            ("\"配送が\"", &["配送が遅い"]),
            ("送が遅", &["配送が遅い"]),
            ("遅い", &["遅い配送", "配送が遅い"]),
            ("配送 遅い", &["遅い配送", "配送が遅い"]),
            ("\"遅い配送\"", &["遅い配送"]),
            ("배송", &["한국어 배송이 늦어요"]),
            ("iphone配送", &["iPhone配送 late"]),
            ("\"配送 late\"", &["iPhone配送 late"]),
            ("配遅", &[]),
            ("贵了 OR 早い", &["good 贵了", "太贵了", "配送は早い"]),
            // A lone character beside a word: the positions of `text`
            // decide, with pairs as without (the pairs missed these).
            ("\"iPhone 配\"", &["iPhone配送 late"]),
            ("\"good 贵\"", &["good 贵了"]),
            ("遅。が", &["遅。がっかり"]),
            (
                "\"配 送\"",
                &["iPhone配送 late", "遅い配送", "配送が遅い", "配送は早い"],
            ),
            ("\"贵 good\"", &[]),
        ];
        for pairs in [true, false] {
            for (query, expected) in cases {
                let mut expected = expected.to_vec();
                expected.sort();
                assert_eq!(
                    matching(&parser, query, pairs),
                    expected,
                    "{query} (pairs {pairs})"
                );
            }
        }
    }

    /// With pairs as without: random texts and phrases over a few CJK
    /// characters, a word and separators (the phrases' terms as `text`'s
    /// positions find them decide).
    #[test]
    fn cjk_phrases_find_the_same_with_pairs_as_without() {
        let pieces = ["配", "送", "贵", "了", "ok", " ", "。"];
        let mut next = crate::index::xorshift(0x5eed_cafe_f00d_0001);
        let mut pick = |n: usize| -> String {
            (0..n)
                .map(|_| pieces[(next() % pieces.len() as u64) as usize])
                .collect()
        };
        let texts: Vec<String> = (0..60).map(|i| pick(2 + i % 9)).collect();
        let queries: Vec<String> = (0..200)
            .map(|i| match i % 2 {
                0 => format!("\"{}\"", pick(2 + i % 4)),
                _ => pick(2 + i % 4),
            })
            .collect();
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let (parser, matching) = texts_index(&texts);
        let mut found = 0;
        for query in &queries {
            if query
                .trim_matches(|c: char| c == '"' || c == ' ' || c == '。')
                .is_empty()
            {
                continue;
            }
            let with = matching(&parser, query, true);
            assert_eq!(with, matching(&parser, query, false), "{query}");
            found += with.len();
        }
        assert!(found > 100, "{found}");
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
            parse_user_query(&parser, q, true).unwrap_or_else(|e| panic!("{q}: {e}"));
        }
    }

    /// The full path: every check, then the query.
    fn checked(parser: &QueryParser, text: &str) -> Result<Box<dyn Query>, IndexError> {
        check_nesting(text)?;
        parse_checked(parser, text, true)
    }

    #[test]
    fn plain_words_are_told_apart() {
        let longest = "x".repeat(TOKEN_BYTES_LIMIT - 1);
        for plain in [
            "refund",
            "late delivery",
            " été\t42\r\nnaïve ",
            "and or not",
            "日本",
            &longest,
        ] {
            assert!(is_plain(plain), "{plain:?}");
        }
        let many = "word ".repeat(MAX_QUERY_CLAUSES + 1);
        let long = format!("late {}", "x".repeat(TOKEN_BYTES_LIMIT));
        for not_plain in [
            "refund AND late",
            "NOT late",
            "TO",
            "a IN",
            "product:Acme",
            "\"late delivery\"",
            "-refund",
            "refund*",
            "(late)",
            "a\u{a0}b",
            "late\u{c}b",
            many.as_str(),
            long.as_str(),
        ] {
            assert!(!is_plain(not_plain), "{not_plain:?}");
        }
        // Words the analyzer drops: tantivy's parser refuses a text of them
        // alone (found by the property below), and so does the plain path.
        let dropped = "x".repeat(TOKEN_BYTES_LIMIT);
        let parser = parser();
        let text = format!("{dropped} {dropped}");
        assert_eq!(
            format!("{:?}", parse_user_query(&parser, &text, true).err()),
            format!("{:?}", checked(&parser, &text).err())
        );
        assert!(parse_user_query(&parser, &text, true).is_err());
    }

    proptest::proptest! {
        /// A plain text skips only checks it passes: the full path accepts
        /// it and builds the very query the plain path builds.
        #[test]
        fn plain_texts_skip_only_checks_they_pass(
            parts in proptest::collection::vec(
                (
                    // Mostly plain words, so long plain texts come up too.
                    proptest::prop_oneof![
                        12 => proptest::sample::select(vec![
                            "refund", "Late", "été", "42", "naïve", "日本", "and", "the",
                            // 63 and 64 bytes: the analyzer keeps the one, drops the other
                            "a123456789b123456789c123456789d123456789e123456789f123456789012",
                            "a123456789b123456789c123456789d123456789e123456789f1234567890123",
                        ]),
                        1 => proptest::sample::select(vec![
                            "AND", "NOT", "OR", "IN", "TO", "a:b", "(x", "x)", "\"q", "x*", "-y", "+z", "a^2",
                        ]),
                    ],
                    proptest::prop_oneof![
                        12 => proptest::sample::select(vec![" ", "\t", "\n", "\r", "  "]),
                        1 => proptest::strategy::Just("\u{a0}"),
                    ],
                ),
                0..40,
            )
        ) {
            let text: String = parts.iter().flat_map(|(w, s)| [*w, *s]).collect();
            let parser = parser();
            if is_plain(&text) && !text.trim().is_empty() {
                let full = checked(&parser, &text);
                proptest::prop_assert!(full.is_ok(), "{:?}: {:?}", text, full.err());
                let plain = parse_user_query(&parser, &text, true).unwrap();
                let grammar = tantivy::query_grammar::parse_query(&text).unwrap();
                proptest::prop_assert_eq!(plain_tree(&text), grammar);
                proptest::prop_assert_eq!(format!("{:?}", full.unwrap()), format!("{plain:?}"));
            }
        }
    }

    /// The `text_pairs` terms of a query, and whether it has `text` terms.
    fn pair_terms(query: &dyn Query) -> (Vec<String>, bool) {
        let fields = schema::build_schema().1;
        let mut pairs = Vec::new();
        let mut text = false;
        query.query_terms(&mut |term, _| {
            if term.field() == fields.text_pairs {
                pairs.push(term.value().as_str().unwrap().to_string());
            } else if term.field() == fields.text {
                text = true;
            }
        });
        (pairs, text)
    }

    /// A two-word phrase searches `text_pairs` (one term); a phrase with
    /// slop, a prefix, another word count or a dropped word between its
    /// words keeps searching `text` by positions.
    #[test]
    fn two_word_phrases_are_one_pair_term() {
        let parser = parser();
        let paired = [
            ("\"late refunds\"", vec!["late refund"]),
            ("text:\"Late Refund\"", vec!["late refund"]),
            ("wi-fi", vec!["wi fi"]),
            ("-\"late refund\" app", vec!["late refund"]),
            (
                "(\"late refund\" OR \"wi fi\")^2 AND channel:review",
                vec!["late refund", "wi fi"],
            ),
        ];
        for (text, pairs) in paired {
            let query =
                parse_user_query(&parser, text, true).unwrap_or_else(|e| panic!("{text}: {e}"));
            let (found, _) = pair_terms(&*query);
            assert_eq!(found, pairs, "{text}");
        }
        let long = "x".repeat(TOKEN_BYTES_LIMIT);
        for text in [
            "\"late refund\"~1".to_string(),
            "\"late refund\"*".to_string(),
            "\"very late refund\"~1".to_string(),
            "\"refund\"".to_string(),
            "late refund".to_string(),
            format!("\"late {long} refund\""),
        ] {
            let query =
                parse_user_query(&parser, &text, true).unwrap_or_else(|e| panic!("{text}: {e}"));
            let (found, text_terms) = pair_terms(&*query);
            assert!(found.is_empty() && text_terms, "{text}: {found:?}");
        }
        // An index without pairs (`--index-phrases off`): positions.
        let query = parse_user_query(&parser, "\"late refund\"", false).unwrap();
        let (found, text_terms) = pair_terms(&*query);
        assert!(found.is_empty() && text_terms, "{found:?}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// A two-word phrase finds through `text_pairs` exactly the
        /// documents tantivy's phrase query over `text` finds: texts of a
        /// few words (stems shared, a word the analyzer drops, punctuation,
        /// repeats), every phrase of two of their words.
        #[test]
        fn pair_phrases_find_what_phrase_queries_find(
            texts in proptest::collection::vec(
                proptest::collection::vec(
                    proptest::sample::select(vec![
                        "late", "Late", "refund", "refunds", "refunding", "app", "wi-fi",
                        "fi", "wi", "the", "é", "e", "!", "--",
                        "a123456789b123456789c123456789d123456789e123456789f1234567890123",
                    ]),
                    0..12,
                ),
                1..24,
            ),
        ) {
            let (index, fields, mut writer) = crate::index::test_index();
            for (seq, words) in texts.iter().enumerate() {
                crate::index::add_test_item(
                    &writer,
                    &fields,
                    seq as u64,
                    crate::domain::FeedbackDraft {
                        id: format!("i-{seq}"),
                        text: format!("x {}", words.join(" ")),
                        ..Default::default()
                    },
                    crate::domain::AnalysisState::Pending,
                );
            }
            writer.commit().unwrap();
            let searcher = index.reader().unwrap().searcher();
            let parser = parser();
            let words = ["late", "refunds", "app", "wi", "fi", "the", "é", "e"];
            let mut paired = 0;
            for first in words {
                for second in words {
                    let phrase = format!("\"{first} {second}\"");
                    // Alone, and in nested clauses.
                    let compound = format!("({phrase} OR (app AND wi)) AND NOT (refunds AND e)");
                    for text in [phrase, compound] {
                        let ours = parse_user_query(&parser, &text, true).unwrap();
                        let (pairs, _) = pair_terms(&*ours);
                        paired += pairs.len();
                        // tantivy's `X AND NOT Y` matches nothing: `X -Y`
                        // is what it means.
                        let theirs = parser.parse_query(&text.replace(" AND NOT ", " -")).unwrap();
                        let found = |q: &dyn Query| searcher.search(q, &tantivy::collector::DocSetCollector).unwrap();
                        proptest::prop_assert_eq!(found(&*ours), found(&*theirs), "{}", text);
                    }
                }
            }
            proptest::prop_assert_eq!(paired, 2 * words.len() * words.len());
            // Longer phrases: the same documents with the same scores.
            let top = tantivy::collector::TopDocs::with_limit(50).order_by_score();
            for (i, first) in words.iter().enumerate() {
                for (j, second) in words.iter().enumerate() {
                    let third = words[(i + 3 * j) % words.len()];
                    let phrase = format!("\"{first} {second} {third}\"");
                    let four = format!("\"{third} {first} {second} {first}\"");
                    let compound = format!("(app OR {phrase}) AND NOT \"refunds e late\"");
                    for text in [phrase, four, compound] {
                        let ours = parse_user_query(&parser, &text, true).unwrap();
                        let theirs = parser.parse_query(&text.replace(" AND NOT ", " -")).unwrap();
                        let found = |q: &dyn Query| searcher.search(q, &tantivy::collector::DocSetCollector).unwrap();
                        proptest::prop_assert_eq!(found(&*ours), found(&*theirs), "{}", text);
                        let ranked = |q: &dyn Query| searcher.search(q, &top).unwrap();
                        proptest::prop_assert_eq!(ranked(&*ours), ranked(&*theirs), "{}", text);
                    }
                }
            }
        }
    }

    /// A longer phrase keeps its phrase query and requires its distinct
    /// pairs of adjacent words (at most `MAX_PREFILTER_PAIRS`), none
    /// across a word the analyzer drops.
    #[test]
    fn longer_phrases_require_their_pairs() {
        let parser = parser();
        let long = "x".repeat(TOKEN_BYTES_LIMIT);
        let cases = [
            (
                "\"very late refund\"".to_string(),
                vec!["veri late", "late refund"],
            ),
            (
                "\"late refund\" AND \"very late refund\"".to_string(),
                vec!["late refund", "veri late", "late refund"],
            ),
            (
                "\"Late, LATE late refunds!\"".to_string(),
                vec!["late late", "late refund"],
            ),
            (format!("\"very late {long} refund\""), vec!["veri late"]),
            (
                "text:\"the wi-fi app\"".to_string(),
                vec!["the wi", "wi fi", "fi app"],
            ),
            (
                "\"a b c d e f g h i j k l\"".to_string(),
                vec!["a b", "b c", "c d", "d e", "e f", "f g", "g h", "h i"],
            ),
        ];
        for (text, pairs) in cases {
            let query =
                parse_user_query(&parser, &text, true).unwrap_or_else(|e| panic!("{text}: {e}"));
            let (found, text_terms) = pair_terms(&*query);
            assert_eq!(found, pairs, "{text}");
            assert!(text_terms, "{text}: the phrase itself stays");
        }
        // Not paired: a dropped word between, slop, a boost around the
        // phrase (tantivy's boost hides the mark: the phrase as it is),
        // a text that spells the mark.
        for text in [
            format!("\"late {long} refund\""),
            "\"very late refund\"~2".into(),
            "\"very late refund\"^2".into(),
            format!("\"very late refund\" OR id:\"{PREFILTER_MARK}0\""),
        ] {
            let query = parse_user_query(&parser, &text, true).unwrap();
            let (found, text_terms) = pair_terms(&*query);
            assert!(found.is_empty() && text_terms, "{text}: {found:?}");
        }
    }

    /// A searcher over one item of `text`.
    fn one_item_searcher(text: &str) -> tantivy::Searcher {
        let (index, fields, mut writer) = crate::index::test_index();
        crate::index::add_test_item(
            &writer,
            &fields,
            1,
            crate::domain::FeedbackDraft {
                id: "s-1".into(),
                text: text.into(),
                ..Default::default()
            },
            crate::domain::AnalysisState::Pending,
        );
        writer.commit().unwrap();
        index.reader().unwrap().searcher()
    }

    /// The BM25 statistics `query` asks a relevance page for (recorded, or
    /// replayed from `replay`), as a cursor would carry them.
    fn asked_stats(
        searcher: &tantivy::Searcher,
        query: &dyn Query,
        replay: Option<Vec<u64>>,
    ) -> Result<Vec<u64>, IndexError> {
        let stats = crate::index::cursor::FrozenStats::new(searcher, replay);
        let scoring =
            tantivy::query::EnableScoring::enabled_from_statistics_provider(&stats, searcher);
        // A replay the statistics refuse fails the weight; `finish` says why.
        let weighed = query.weight(scoring);
        let stats = stats.finish()?;
        weighed.unwrap();
        Ok(stats)
    }

    /// A cursor altered so that a term's document frequency exceeds the
    /// document total is refused as stale: tantivy's BM25 asserts the
    /// order, and a probe that edited a cursor panicked the search worker.
    #[test]
    fn altered_cursor_statistics_are_refused_not_scored() {
        let searcher = one_item_searcher("the refund was very late refund");
        let parser = parser();
        for text in ["late", "late refund", "\"very late refund\"", "late OR app"] {
            let query = parse_user_query(&parser, text, true).unwrap();
            let stats = asked_stats(&searcher, &*query, None).unwrap();
            assert_eq!(
                asked_stats(&searcher, &*query, Some(stats.clone())).unwrap(),
                stats
            );
            let mut refused = 0;
            for i in 0..stats.len() {
                for value in [0, 1_000_000] {
                    let mut altered = stats.clone();
                    altered[i] = value;
                    match asked_stats(&searcher, &*query, Some(altered)) {
                        Ok(_) => {}
                        Err(IndexError::InvalidCursor(_)) => refused += 1,
                        Err(other) => panic!("{text}: {other}"),
                    }
                }
            }
            assert!(refused >= 2, "{text}: {refused} refused");
        }
    }

    /// A long phrase's pairs score nothing and ask for no statistics: a
    /// relevance cursor carries what the phrase alone asks for.
    #[test]
    fn long_phrases_ask_for_no_more_statistics() {
        let searcher = one_item_searcher("the refund was very late refund");
        let parser = parser();
        let asked = |query: &dyn Query| asked_stats(&searcher, query, None).unwrap().len();
        for text in [
            "\"was very late refund\"",
            "(\"the refund was\" OR app) AND \"very late refund\"",
        ] {
            let ours = parse_user_query(&parser, text, true).unwrap();
            let (found, _) = pair_terms(&*ours);
            assert!(!found.is_empty(), "{text}");
            let theirs = parse_user_query(&parser, text, false).unwrap();
            assert!(asked(&*ours) > 0);
            assert_eq!(asked(&*ours), asked(&*theirs), "{text}");
        }
    }

    /// Every query within the limits fits a relevance cursor's
    /// statistics: a phrase asks for one value per word and two more, a
    /// term for three, and the byte limit bounds the words.
    #[test]
    fn the_longest_queries_fit_a_cursor() {
        let searcher = one_item_searcher("a b c d e f g h");
        let parser = parser();
        let letters = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"];
        let words = |n: usize| -> String {
            (0..n)
                .map(|i| letters[i % letters.len()])
                .collect::<Vec<_>>()
                .join(" ")
        };
        // One phrase of one-letter words filling the byte limit; 32
        // phrases; 32 terms of which two-word phrases.
        let one = format!("\"{}\"", words((MAX_QUERY_BYTES - 2).div_ceil(2)));
        let each = (MAX_QUERY_BYTES / MAX_QUERY_CLAUSES - 3).div_ceil(2);
        let many = vec![format!("\"{}\"", words(each)); MAX_QUERY_CLAUSES].join(" ");
        let pairs = vec!["\"a b\""; MAX_QUERY_CLAUSES].join(" ");
        for text in [one, many, pairs] {
            assert!(text.len() <= MAX_QUERY_BYTES, "{}", text.len());
            for phrase_pairs in [true, false] {
                let query = parse_user_query(&parser, &text, phrase_pairs).unwrap();
                let asked = asked_stats(&searcher, &*query, None);
                assert!(
                    asked.is_ok(),
                    "{} bytes, pairs {phrase_pairs}: {asked:?}",
                    text.len()
                );
                // And the page after replays them.
                assert!(asked_stats(&searcher, &*query, Some(asked.unwrap())).is_ok());
            }
        }
    }

    #[test]
    fn reports_the_position_of_a_syntax_error() {
        let parser = parser();
        match parse_user_query(&parser, "refund AND (late", true) {
            Err(IndexError::InvalidQuery { position, .. }) => assert!(position > 0),
            other => panic!("{other:?}"),
        }
        match parse_user_query(&parser, "colour:red", true) {
            Err(IndexError::InvalidQuery { position, message }) => {
                assert_eq!(position, 0);
                assert!(message.contains("colour"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    /// Found by the 40th session's probe: a value a field cannot read was
    /// reported at byte 0 without its field or itself, and a date-time's
    /// `:` gave the grammar's "parsed possible invalid field as term".
    #[test]
    fn value_errors_point_at_the_value() {
        let parser = parser();
        for (text, at, needle) in [
            ("late nps:abc", "abc", "bad value `abc` for `nps`"),
            // The value is found after its field's name, which holds it.
            ("late rating:a", "a", "bad value `a` for `rating`"),
            (
                "late rating:[1 TO in]",
                "in]",
                "bad value `in` for `rating`",
            ),
            ("nps:5 csat:x", "x", "bad value `x` for `csat`"),
            ("refund rating:[1 TO z]", "z", "bad value `z` for `rating`"),
            (
                "refund created_at:>2020-13",
                "2020-13",
                "bad value `2020-13` for `created_at`",
            ),
            ("sentiment_score:IN [0.5 high]", "high", "`sentiment_score`"),
        ] {
            match parse_user_query(&parser, text, true) {
                Err(IndexError::InvalidQuery { position, message }) => {
                    assert!(message.contains(needle), "{text}: {message}");
                    assert_eq!(position, text.rfind(at).unwrap(), "{text}: {message}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        for (text, needle) in [
            (
                "late created_at:2026-03-01T10:00:00Z",
                "created_at:\"2026-03-01T10:00:00Z\"",
            ),
            ("late code:E:42", "quote a value"),
            ("see https://example.com/a?b=1 now", "quote a URL"),
            ("see https://example.com", "quote a URL"),
        ] {
            match parse_user_query(&parser, text, true) {
                Err(IndexError::InvalidQuery { position, message }) => {
                    assert!(message.contains(needle), "{text}: {message}");
                    // Inside the word, or at the space before it.
                    let colon = text.find(':').unwrap();
                    let start = text[..colon].rfind(' ').unwrap();
                    let end = text[colon..].find(' ').map_or(text.len(), |at| colon + at);
                    assert!((start..=end).contains(&position), "{text}: {position}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        // What the message offers works.
        for text in [
            "late created_at:\"2026-03-01T10:00:00Z\"",
            "late created_at:>=2026-03-01T10:00:00Z",
            "late created_at:2026-03-01T10\\:00\\:00Z",
            "late attributes.code:\"E:42\"",
            "late \"code:E:42\"",
            "see \"https://example.com/a?b=1\" now",
            "late code\\:E\\:42",
        ] {
            assert!(parse_user_query(&parser, text, true).is_ok(), "{text}");
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
            // A `"` inside a single-quoted phrase opens no phrase (a probe
            // nested 31 levels, and boosts without bound, behind one).
            format!("'\"' {}a{}", "(a ".repeat(30), ")".repeat(30)),
            format!("'\"' {}a{}", "(".repeat(250), ")^2".repeat(250)),
        ] {
            match parse_user_query(&parser, &hostile, true) {
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
        parse_user_query(&parser, &deepest, true).unwrap();
        // Parentheses inside a phrase are text, not nesting.
        let phrase = format!("\"{}\"", "(".repeat(100));
        assert!(!matches!(
            parse_user_query(&parser, &phrase, true),
            Err(IndexError::InvalidQuery { ref message, .. }) if message.contains("nests deeper")
        ));
        parse_user_query(&parser, "NOT refund AND NOTE", true).unwrap();
        // A word's apostrophe opens no phrase: the parentheses after it count.
        let words = format!(
            "it's {}a{}",
            "(".repeat(MAX_QUERY_DEPTH + 1),
            ")".repeat(MAX_QUERY_DEPTH + 1)
        );
        assert!(matches!(
            parse_user_query(&parser, &words, true),
            Err(IndexError::InvalidQuery { ref message, .. }) if message.contains("nests deeper")
        ));
        // Single-quoted phrases hold parentheses as text too, and every
        // level within the limit may carry a boost.
        let phrase = format!("'{}' refund", "(".repeat(100));
        assert!(!matches!(
            parse_user_query(&parser, &phrase, true),
            Err(IndexError::InvalidQuery { ref message, .. }) if message.contains("nests deeper")
        ));
        let boosted = format!(
            "{}refund{}",
            "(".repeat(MAX_QUERY_DEPTH),
            ")^2".repeat(MAX_QUERY_DEPTH)
        );
        parse_user_query(&parser, &boosted, true).unwrap();
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
                let mut next = crate::index::xorshift(0x9e37_79b9_7f4a_7c15);
                for _ in 0..300 {
                    let mut q = String::new();
                    while q.len() < MAX_QUERY_BYTES - 8 {
                        q.push_str(pieces[(next() % pieces.len() as u64) as usize]);
                    }
                    let _ = parse_user_query(&parser, &q, true);
                }
            })
            .unwrap();
        handle.join().expect("parsing stayed within a 2 MiB stack");
    }

    /// Found by the fuzz target: a quote inside a word, a range, a regex or
    /// a single-quoted phrase hid parentheses (and `NOT`s) from
    /// `check_nesting`: `a" ` + 1,000 `(` overflowed a worker's stack again
    /// (the process aborted), `a" ` + 250 `NOT ` parsed 250 deep.
    #[test]
    fn texts_that_hide_parentheses_from_the_scan_are_refused() {
        let parens = "(".repeat(1000);
        let hidden = [
            format!("a\" {parens}"),
            format!("x:/\"/ {parens}"),
            format!("nps:[1 TO \"x {parens}"),
            format!("nps:>\" {parens}"),
            format!("a(\" {parens}"),
            format!("a\" {}x", "NOT ".repeat(250)),
            format!("{}x{}", "(')' ".repeat(100), ")".repeat(100)),
            format!("{}x{}", "( /)/ ".repeat(60), ")".repeat(60)),
        ];
        let handle = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || {
                let parser = parser();
                hidden
                    .into_iter()
                    .map(|text| {
                        let text = text[..text.len().min(MAX_QUERY_BYTES)].to_string();
                        let answer = parse_user_query(&parser, &text, true).map(|_| ());
                        (text, answer)
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap();
        for (text, answer) in handle.join().expect("no stack overflow") {
            match answer {
                Err(IndexError::InvalidQuery { message, .. }) => assert!(
                    !text.contains("NOT") || message.contains("nests deeper"),
                    "{text:?}: {message}"
                ),
                other => panic!("{text:?}: {other:?}"),
            }
        }
        // The check of the tree takes what the scan takes: groups that mix
        // AND and OR (two levels of clauses each), many parentheses in
        // phrases (parsed on the parser thread).
        let parser = parser();
        let deep = format!(
            "{}a{}",
            "(a OR b AND ".repeat(MAX_QUERY_DEPTH - 1),
            ")".repeat(MAX_QUERY_DEPTH - 1)
        );
        parse_user_query(&parser, &deep, true).unwrap();
        let many = "(\"(late)\") ".repeat(30);
        parse_user_query(&parser, &many, true).unwrap();
    }

    /// Found by the fuzz target: `FIELD:*` on an unknown field or on one
    /// without a fast column (`text`, `id`) parsed, then failed the search
    /// (an INTERNAL answer).
    #[test]
    fn value_tests_name_fields_that_have_values() {
        let parser = parser();
        assert_refused(
            &parser,
            &[
                ("colour:*", "unknown field `colour`"),
                ("TOtext:*", "unknown field `TOtext`"),
                ("refund text:*", "`text:*` is not supported"),
                ("id:*", "`id:*` is not supported"),
            ],
        );
        for text in [
            "channel:*",
            "attributes.region:*",
            "attributes:*",
            "nps:* refund",
        ] {
            parse_user_query(&parser, text, true).unwrap_or_else(|e| panic!("{text}: {e}"));
        }
    }

    /// Values of lower-case fields are lower-cased in the query as in the
    /// filters (`language:EN` matched nothing), on every path a text takes
    /// (plain tree, phrase pairs, exclusions completed); ranges the filters
    /// refuse and attribute keys no item can have are refused.
    #[test]
    fn keyword_values_fold_case_and_impossible_leaves_are_refused() {
        let (index, fields, writer) = crate::index::test_index();
        let drafts = [
            (
                "router on fire",
                "EN",
                crate::domain::Channel::Chat,
                Some(9),
            ),
            (
                "router is fine",
                "fr",
                crate::domain::Channel::Survey,
                Some(3),
            ),
        ];
        for (seq, (text, language, channel, nps)) in drafts.into_iter().enumerate() {
            let draft = crate::domain::FeedbackDraft {
                id: format!("i-{seq}"),
                text: text.to_string(),
                language: language.to_string(),
                channel: Some(channel),
                nps,
                ..Default::default()
            };
            crate::index::add_test_item(
                &writer,
                &fields,
                seq as u64,
                draft,
                crate::domain::AnalysisState::Pending,
            );
        }
        let mut writer = writer;
        writer.commit().unwrap();
        let searcher = index.reader().unwrap().searcher();
        let parser = super::super::query_parser(&index, &fields);
        for pairs in [false, true] {
            for (query, want) in [
                ("language:EN", 1),
                ("language:en", 1),
                ("language:FR OR channel:CHAT", 2),
                ("language:IN [EN DE]", 1),
                ("router AND NOT language:EN", 1),
                ("\"router on\" channel:Chat", 1),
                ("\"router on fire\" language:En", 1),
                ("channel:SURVEY -nps:9", 1),
            ] {
                let built = parse_user_query(&parser, query, pairs)
                    .unwrap_or_else(|e| panic!("{query}: {e}"));
                let count = searcher.search(&built, &tantivy::collector::Count).unwrap();
                assert_eq!(count, want, "{query} (pairs {pairs})");
            }
        }
        // No prefix or fuzzy forms: `*` after a word is dropped as
        // punctuation, and `router~2` is the phrase "router 2".
        for (query, want) in [
            ("router*", 2),
            ("rout*", 0),
            ("router~2", 0),
            ("\"router on\"~1", 1),
        ] {
            let built =
                parse_user_query(&parser, query, true).unwrap_or_else(|e| panic!("{query}: {e}"));
            let count = searcher.search(&built, &tantivy::collector::Count).unwrap();
            assert_eq!(count, want, "{query}");
        }
        // Case matters where values are the client's.
        let built = parse_user_query(&parser, "product:Router", true).unwrap();
        assert_eq!(
            searcher.search(&built, &tantivy::collector::Count).unwrap(),
            0
        );

        assert_refused(
            &parser,
            &[
                (
                    "nps:[9 TO 1]",
                    "lower bound 9 is greater than its upper bound 1",
                ),
                ("router sentiment_score:[NaN TO 1]", "`NaN` is not a number"),
                ("rating:{5 TO 2}", "greater than"),
                ("attributes.:x", "an attribute key is 1 to"),
                ("attributes.Plan:x", "an attribute key is 1 to"),
                ("attributes.bad-key:IN [a b]", "an attribute key is 1 to"),
                (
                    "late OR nps:[* TO *]",
                    "`nps:*` finds the items with a value",
                ),
                ("* -rating:{* TO *}", "has no bound"),
                (
                    "created_at:[2025-01-01T00:00:00Z TO 2020-01-01T00:00:00Z]",
                    "is later than its upper bound",
                ),
                ("nps:{5 TO 5}", "the range is empty"),
                ("nps:{5 TO 6}", "holds no whole number"),
                ("rating:{4 TO 5}", "holds no whole number"),
                ("theme:[a TO z]", "takes values, not ranges"),
                ("theme_sentiment:>x", "takes values, not ranges"),
                ("theme:Delivery", "the theme id may hold only a-z"),
                (
                    "late theme:IN [delivery Refunds]",
                    "the theme id may hold only",
                ),
                ("theme_sentiment:delivery.awful", "expected THEME_ID.LABEL"),
                ("theme_sentiment:delivery", "expected THEME_ID.LABEL"),
                (
                    "theme_sentiment:Delivery.negative",
                    "the theme id may hold only",
                ),
                ("late sentiment_score:[0.5 TO 0.5}", "the range is empty"),
                (
                    "created_at:{2020-01-01T00:00:00Z TO 2020-01-01T00:00:00Z]",
                    "the range is empty",
                ),
                ("created_at:[2025-01-01 TO 2020-01-01]", "is later than"),
                // tantivy's messages named Rust's types (`ParseIntError {
                // kind: InvalidDigit }`).
                (
                    "nps:[0.5 TO 1]",
                    "bad value `0.5` for `nps`: expected a whole number",
                ),
                (
                    "sentiment_score:>abc",
                    "bad value `abc` for `sentiment_score`: expected a number",
                ),
                ("created_at:>2020-13", "takes RFC 3339 date-times"),
            ],
        );
        for text in [
            "nps:[1 TO 9]",
            "nps:[5 TO 5]",
            "theme:delivery",
            "theme:*",
            "theme_sentiment:delivery-speed.negative",
            "theme:IN [delivery refunds]",
            "nps:{5 TO 7}",
            "sentiment_score:{0.1 TO 0.2}",
            "attributes.plan:x",
            "nps:>3",
            "created_at:[2020-01-01T00:00:00Z TO 2025-01-01T00:00:00+02:00]",
            "created_at:>2020-01-01T00:00:00Z",
            "created_at:[2020-01-01 TO 2025-01-01}",
            "created_at:>=2020-01-01",
        ] {
            parse_user_query(&parser, text, true).unwrap_or_else(|e| panic!("{text}: {e}"));
        }
        // A plain date is midnight UTC: the same query as its date-time.
        for (plain, full) in [
            (
                "created_at:[2020-01-01 TO 2025-01-01}",
                "created_at:[2020-01-01T00:00:00Z TO 2025-01-01T00:00:00Z}",
            ),
            (
                "late created_at:>2020-01-01",
                "late created_at:>2020-01-01T00:00:00Z",
            ),
            (
                "created_at:2020-01-01",
                "created_at:[2020-01-01T00:00:00Z TO 2020-01-02T00:00:00Z}",
            ),
            (
                "late created_at:IN [2020-01-01 \"2021-01-01T10:00:00Z\"]",
                "late (created_at:[2020-01-01T00:00:00Z TO 2020-01-02T00:00:00Z} OR created_at:\"2021-01-01T10:00:00Z\")",
            ),
        ] {
            let (a, b) = (
                parse_user_query(&parser, plain, true).unwrap(),
                parse_user_query(&parser, full, true).unwrap(),
            );
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "{plain}");
        }
    }

    /// Found by the fuzz target: the byte limit's position could fall inside
    /// a character (a client slicing the text there fails).
    #[test]
    fn the_byte_limit_points_at_a_character() {
        let parser = parser();
        let text = format!("{}\u{e9}tail", "a".repeat(MAX_QUERY_BYTES - 1));
        match parse_user_query(&parser, &text, true) {
            Err(IndexError::InvalidQuery { position, .. }) => {
                assert_eq!(position, MAX_QUERY_BYTES - 1)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn limits_length_and_clause_count() {
        let parser = parser();
        let long = "a".repeat(MAX_QUERY_BYTES + 1);
        assert!(parse_user_query(&parser, &long, true).is_err());
        let many: Vec<String> = (0..=MAX_QUERY_CLAUSES).map(|i| format!("w{i}")).collect();
        assert!(parse_user_query(&parser, &many.join(" "), true).is_err());
        let ok: Vec<String> = (0..MAX_QUERY_CLAUSES).map(|i| format!("w{i}")).collect();
        assert!(parse_user_query(&parser, &ok.join(" "), true).is_ok());
    }
}

/// Fuzz targets of the query language (`cargo test --lib fuzz`): whatever
/// the text, a search answers with hits or with `InvalidQuery` at a position
/// in the text, on a stack the size of a search worker's, and never nests
/// deeper than `MAX_QUERY_DEPTH`.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;
    use tantivy::query_grammar::{parse_query_lenient, UserInputAst};

    use super::*;
    use crate::domain::{SearchFilter, SearchQuery, SortOrder};
    use crate::fuzz::{long_string, nasty_char, nasty_string};
    use crate::index::fuzz_fixture;

    /// The stack of the threads searches run on (tokio's blocking pool).
    const WORKER_STACK_BYTES: usize = 2 * 1024 * 1024;

    /// Pieces of the grammar, and of texts that look like it.
    const PIECES: &[&str] = &[
        "(",
        ")",
        "((",
        "))",
        "\"",
        "'",
        "\\",
        "NOT ",
        "NOT",
        "AND ",
        "OR ",
        " AND",
        " OR",
        "-",
        "+",
        "*",
        "^",
        "^2",
        "^0",
        "^1e9",
        "^99999999999999999999",
        "~",
        "~2",
        "~4294967296",
        ":",
        " ",
        "  ",
        "\t",
        "\n",
        "\r\n",
        "[",
        "]",
        "{",
        "}",
        " TO ",
        "TO",
        "IN [",
        "IN",
        "<",
        ">",
        "<=",
        ">=",
        "/",
        "/a.*/",
        "/[/",
        "/(a+)+/",
        "!",
        "text:",
        "channel:",
        "journey_stage:",
        "product:",
        "language:",
        "tags:",
        "customer_id:",
        "attributes.region:",
        "attributes.:",
        "attributes:",
        "attributes.Region:",
        "attributes.a.b:",
        "created_at:",
        "nps:",
        "csat:",
        "ces:",
        "rating:",
        "sentiment:",
        "sentiment_score:",
        "analysis_status:",
        "theme:",
        "theme_sentiment:",
        "seq:",
        "id:",
        "taxonomy_version:",
        "colour:",
        "text :",
        "refund",
        "delivery",
        "late",
        "caf\u{e9}",
        "e\u{301}",
        "\u{1f600}",
        "emea",
        "review",
        "negative",
        "delivery.negative",
        "a",
        "x",
        "0",
        "-1",
        "6",
        "10",
        "1.5",
        "-0.5",
        "1e400",
        "NaN",
        "inf",
        "-inf",
        "99999999999999999999",
        "2026-03-14T09:21:05Z",
        "2026-03-14",
        "1970-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "-99999-01-01T00:00:00Z",
    ];

    /// Up to `max` pieces of the grammar, characters and short strings.
    fn soup(max: usize) -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            6 => prop::sample::select(PIECES).prop_map(String::from),
            1 => nasty_char().prop_map(String::from),
            1 => nasty_string(6),
        ];
        prop::collection::vec(piece, 0..=max).prop_map(|pieces| pieces.concat())
    }

    /// Pieces that change how what follows them is read: phrases, ranges,
    /// sets, regexes, escapes, words that hold quotes.
    const OPENERS: &[&str] = &[
        "\"",
        "'",
        "a\" ",
        "5\" ",
        "it's ",
        "don'",
        "\" ",
        "' ",
        "/",
        "x:/",
        "/ ",
        "[",
        "{",
        "nps:[1 TO ",
        "nps:[",
        "nps:>",
        "nps:<=",
        "x:IN [",
        "IN [\"",
        "\\",
        "text:\"",
        "-\"",
        "(\"",
        "*",
        "^",
        "~",
        "a(",
        "a:",
        " ",
    ];

    /// A unit that recurses in the grammar, repeated to about the byte
    /// limit, after pieces that may open a phrase, a range or a regex
    /// around it; then no closing parentheses, or as many (give or take).
    fn deep() -> impl Strategy<Value = String> {
        let unit = prop_oneof![
            3 => Just("("),
            1 => prop::sample::select(vec![
                "NOT ", "(NOT ", "-(", "+(", "text:(", "((a) ", "(a ", "(')' ", "(\")\" ",
                "( /)/ ", "(x:/)/ ", "(x:IN [)] ", "(nps:[1 TO )] ", "NOT (", "(a)^2 ", "( ",
                "(\\) ", "(a\\) ", "(a OR b AND ",
            ]),
        ];
        let prefix = prop_oneof![
            soup(4),
            prop::collection::vec(prop::sample::select(OPENERS), 1..4).prop_map(|p| p.concat()),
        ];
        let budget = prop_oneof![
            0usize..MAX_QUERY_BYTES,
            MAX_QUERY_BYTES - 64..MAX_QUERY_BYTES + 16
        ];
        let closing = prop_oneof![Just(None), (-2i64..=2).prop_map(Some)];
        (prefix, unit, budget, soup(2), closing).prop_map(
            |(prefix, unit, budget, suffix, closing)| {
                let opens = unit.matches('(').count();
                let per_unit = unit.len() + if closing.is_some() { opens } else { 0 };
                let room = budget.saturating_sub(prefix.len() + suffix.len());
                let body = unit.repeat(room / per_unit);
                let closers = closing.map_or(0, |delta| {
                    (body.matches('(').count() as i64 + delta).max(0) as usize
                });
                format!("{prefix}{body}{suffix}{}", ")".repeat(closers))
            },
        )
    }

    fn query(text: &str) -> SearchQuery {
        SearchQuery {
            text: text.to_string(),
            filter: SearchFilter::default(),
            sort: SortOrder::Relevance,
            limit: 2,
            cursor: None,
            facets: Vec::new(),
            similar_to: None,
            taxonomy_version: 1,
            total_hits_up_to: None,
            view: crate::domain::HitView::Full,
        }
    }

    /// Runs `work` on a thread with a search worker's stack; its panics are
    /// the caller's.
    fn on_worker_stack<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(WORKER_STACK_BYTES)
            .spawn(work)
            .expect("a thread")
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    /// A search of `text` the way the server runs one: the page, every
    /// item's snippet, and the next page.
    fn search(text: &str) -> Result<(), IndexError> {
        let index = fuzz_fixture();
        let first = query(text);
        let page = index.search(&first)?;
        for text in crate::index::fixture_texts() {
            let _ = page.snippet(&text);
        }
        if let Some(cursor) = page.next_cursor {
            index.search(&SearchQuery {
                cursor: Some(cursor),
                ..first
            })?;
        }
        Ok(())
    }

    /// Nesting of the grammar's tree: clauses in clauses (a group of one
    /// clause is that clause). Iterative, on a stack large enough for any
    /// 1 KiB text.
    fn tree_depth(text: &str) -> usize {
        let text = text.to_string();
        std::thread::Builder::new()
            .stack_size(256 * 1024 * 1024)
            .spawn(move || {
                let (ast, _) = parse_query_lenient(&text);
                let mut deepest = 0;
                let mut pending = vec![(&ast, 0)];
                while let Some((node, depth)) = pending.pop() {
                    match node {
                        UserInputAst::Clause(children) => {
                            deepest = deepest.max(depth + 1);
                            pending.extend(children.iter().map(|(_, child)| (child, depth + 1)));
                        }
                        UserInputAst::Boost(inner, _) => pending.push((inner, depth)),
                        UserInputAst::Leaf(_) => {}
                    }
                }
                deepest
            })
            .expect("a thread")
            .join()
            .expect("the grammar on a large stack")
    }

    /// The answer to `text`: hits within the limits, or `InvalidQuery` at a
    /// character boundary of the text; never another error (a search error
    /// is an INTERNAL answer), a panic or a stack overflow.
    fn check_answer(text: &str) -> Result<(), TestCaseError> {
        let owned = text.to_string();
        match on_worker_stack(move || search(&owned)) {
            Ok(()) => {
                prop_assert!(
                    text.len() <= MAX_QUERY_BYTES,
                    "{} bytes accepted",
                    text.len()
                );
                // A level of nesting makes at most two levels of clauses.
                let depth = tree_depth(text);
                prop_assert!(
                    depth <= 2 * (MAX_QUERY_DEPTH + 1),
                    "{text:?} accepted with clauses nested {depth} deep"
                );
            }
            Err(IndexError::InvalidQuery { position, message }) => {
                prop_assert!(
                    position <= text.len() && text.is_char_boundary(position),
                    "{text:?}: position {position}"
                );
                prop_assert!(!message.trim().is_empty());
            }
            Err(other) => prop_assert!(false, "{text:?}: {other}"),
        }
        Ok(())
    }

    proptest! {
        // A stack overflow aborts the process: each property runs in a
        // child process, so that proptest sees the crash, shrinks it and
        // saves it.
        #![proptest_config(ProptestConfig { fork: true, ..ProptestConfig::default() })]

        #[test]
        fn fuzz_any_text_is_answered(
            text in prop_oneof![3 => soup(48), 1 => nasty_string(200), 2 => deep()]
        ) {
            check_answer(&text)?;
        }

        #[test]
        fn fuzz_nesting_past_the_limit_is_refused(
            unit in prop::sample::select(vec!["(", "NOT ", "(NOT ", "-(", "+(", "text:(", "( "]),
            extra in 1usize..100_000,
            tail in soup(3),
        ) {
            let text = format!("{}refund{tail}", unit.repeat(MAX_QUERY_DEPTH + extra));
            let owned = text.clone();
            match on_worker_stack(move || search(&owned)) {
                Err(IndexError::InvalidQuery { message, .. }) => prop_assert!(
                    message.contains("nests deeper") || message.contains("bytes"),
                    "{message}"
                ),
                other => prop_assert!(false, "{} bytes: {other:?}", text.len()),
            }
        }
    }

    proptest! {
        #[test]
        fn fuzz_nesting_within_the_limit_is_answered(
            depth in 0..=MAX_QUERY_DEPTH,
            nots in prop::collection::vec(any::<bool>(), MAX_QUERY_DEPTH),
            words in prop::collection::vec("[a-z]{1,8}", MAX_QUERY_DEPTH + 1),
        ) {
            // depth levels, each a group or a NOT: `(w0 OR NOT (w1 OR ...))`.
            let mut text = words[depth].clone();
            for level in (0..depth).rev() {
                text = if nots[level] {
                    format!("{} AND NOT {text}", words[level])
                } else {
                    format!("({} OR {text})", words[level])
                };
            }
            let owned = text.clone();
            let answer = on_worker_stack(move || search(&owned));
            prop_assert!(answer.is_ok(), "{text:?}: {answer:?}");
        }

        #[test]
        fn fuzz_text_over_the_byte_limit_is_refused(text in long_string(MAX_QUERY_BYTES + 1, 200_000)) {
            prop_assume!(text.len() > MAX_QUERY_BYTES);
            match parse_user_query(&fuzz_fixture().shared.parser, &text, true) {
                Err(IndexError::InvalidQuery { position, message }) => {
                    // The start of the first character that does not fit.
                    prop_assert!(text.is_char_boundary(position), "{}", position);
                    prop_assert!(position <= MAX_QUERY_BYTES, "{}", position);
                    let next = text[position..].chars().next().map_or(0, char::len_utf8);
                    prop_assert!(position + next > MAX_QUERY_BYTES, "{}", position);
                    prop_assert!(message.contains("bytes"), "{}", message);
                }
                other => prop_assert!(false, "{} bytes: {:?}", text.len(), other.map(|_| ())),
            }
        }
    }

    /// 100,000 `(`: refused, and quickly, not a stack overflow.
    #[test]
    fn fuzz_a_hundred_thousand_parentheses_are_refused() {
        let text = "(".repeat(100_000);
        let owned = text.clone();
        assert!(matches!(
            on_worker_stack(move || search(&owned)),
            Err(IndexError::InvalidQuery {
                position: MAX_QUERY_BYTES,
                ..
            })
        ));
        let within_bytes = "(".repeat(MAX_QUERY_BYTES);
        assert!(matches!(
            on_worker_stack(move || search(&within_bytes)),
            Err(IndexError::InvalidQuery { ref message, .. }) if message.contains("nests deeper")
        ));
    }
}
