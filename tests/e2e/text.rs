//! Real-world text: cp1252 mojibake (C1 control characters such as U+0096),
//! stray control characters and decomposed accents are accepted, stored as
//! sent, and searched and analysed in their normalised form; only what cannot
//! be text (NUL) is refused.

use verbatim::grpc::pb;

use crate::helpers::*;

/// The code points `[start, end)` of `text`.
fn slice(text: &str, start: u32, end: u32) -> String {
    text.chars()
        .skip(start as usize)
        .take((end - start) as usize)
        .collect()
}

fn rejection(result: &pb::ItemResult) -> Option<&pb::Rejection> {
    match &result.outcome {
        Some(pb::item_result::Outcome::Rejection(r)) => Some(r),
        _ => None,
    }
}

/// Reproduction: 8 of 3,000 public review sentences carry U+0096 / U+0092
/// from a cp1252 file read as latin-1, and every one was refused with
/// "must not contain control character".
#[tokio::test]
async fn mojibake_is_stored_as_sent_and_searched_in_normalised_form() {
    let server = TestServer::spawn().await;
    let mut client = server.client().await;
    let mojibake = "Price went up \u{96} don\u{92}t buy the \u{8A}koda trim";
    let decomposed = "A nai\u{308}ve setup wizard\u{1B}[2J\u{7}";
    let response = ingest(
        &mut client,
        vec![
            item("mojibake", mojibake),
            item("decomposed", decomposed),
            item("nul", "nul\u{0}byte"),
            item("only-controls", "\u{7}\u{1B}\u{81}"),
        ],
    )
    .await;
    assert_eq!(
        (response.accepted, response.rejected),
        (2, 2),
        "{response:?}"
    );
    let nul = rejection(&response.results[2]).expect("NUL is refused");
    assert_eq!(nul.field, "text");
    assert!(
        nul.reason.contains("U+0000") && nul.reason.contains("at byte 3"),
        "{nul:?}"
    );
    let empty = rejection(&response.results[3]).expect("only controls: empty");
    assert_eq!(empty.field, "text");
    assert!(empty.reason.contains("empty"), "{empty:?}");

    // Get returns the text byte for byte as it was sent.
    let got = client
        .get(pb::GetRequest {
            ids: vec!["mojibake".into(), "decomposed".into()],
            ..Default::default()
        })
        .await
        .expect("Get")
        .into_inner();
    assert_eq!(got.items[0].text.as_bytes(), mojibake.as_bytes());
    assert_eq!(got.items[1].text.as_bytes(), decomposed.as_bytes());

    // The index saw "Škoda" (U+008A read as cp1252) and "naïve" (composed):
    // before, neither word was a token ("koda", "nai" + "ve").
    for (query, id) in [
        ("skoda", "mojibake"),
        ("Škoda", "mojibake"),
        ("naive", "decomposed"),
    ] {
        let found = search_until(&mut client, search_request(query), |r| r.total_hits == 1).await;
        assert_eq!(hit_ids(&found), [id], "{query}");
    }
    // The snippet is cut from the normalised text.
    let found = search(&mut client, search_request("skoda")).await;
    let snippet = found.hits[0].snippet.as_ref().expect("a snippet");
    assert!(
        snippet.fragment.contains("up – don’t buy the Škoda"),
        "{:?}",
        snippet.fragment
    );
    assert!(!snippet.fragment.chars().any(char::is_control));
    let highlighted = &snippet.highlights[0];
    assert_eq!(
        &snippet.fragment[highlighted.start as usize..highlighted.end as usize],
        "Škoda"
    );

    // The CLI prints texts normalised: no escape sequence reaches a terminal.
    let output = std::process::Command::new(BIN)
        .args(["search", "--server", &server.addr.to_string()])
        .output()
        .expect("run verbatim search");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("don’t buy the Škoda"), "{stdout}");
    assert!(stdout.contains("A naïve setup wizard [2J"), "{stdout}");
    assert!(
        !stdout.chars().any(|c| c.is_control() && c != '\n'),
        "{stdout:?}"
    );
}

/// Sentence and theme spans count code points of the text as sent, whether
/// normalising kept every position (C1 and controls map one for one) or NFC
/// merged code points (the spans are mapped back).
#[tokio::test]
async fn analysis_spans_index_into_the_text_as_sent() {
    let server = TestServer::spawn_with_analysis(&[]).await;
    let mut client = server.client().await;
    // U+0085 reads as "…", which ends a sentence.
    let one_for_one = "Delivery was late \u{96} again\u{85} The driver didn\u{92}t even knock. Support was helpful though!";
    let one_for_one_sentences = [
        "Delivery was late \u{96} again\u{85}",
        "The driver didn\u{92}t even knock.",
        "Support was helpful though!",
    ];
    let merged = "The cafe\u{301} was cold \u{96} awful. Tre\u{300}s bien, the staff were lovely\u{1}! Would come back.";
    let merged_sentences = [
        "The cafe\u{301} was cold \u{96} awful.",
        "Tre\u{300}s bien, the staff were lovely\u{1}!",
        "Would come back.",
    ];
    let response = client
        .ingest(pb::IngestRequest {
            items: vec![item("one-for-one", one_for_one), item("merged", merged)],
            wait_for_analysis: true,
        })
        .await
        .expect("Ingest")
        .into_inner();
    assert_eq!(response.accepted, 2, "{response:?}");
    let got = client
        .get(pb::GetRequest {
            ids: vec!["one-for-one".into(), "merged".into()],
            ..Default::default()
        })
        .await
        .expect("Get")
        .into_inner();
    for (stored, (text, sentences)) in got.items.iter().zip([
        (one_for_one, &one_for_one_sentences),
        (merged, &merged_sentences),
    ]) {
        assert_eq!(stored.text, text);
        let analysis = stored.analysis.as_ref().expect("analysed");
        let found: Vec<String> = analysis
            .sentences
            .iter()
            .map(|s| slice(text, s.start, s.end))
            .collect();
        assert_eq!(found, sentences, "{text:?}");
        let length = text.chars().count() as u32;
        for mention in &analysis.themes {
            for span in &mention.spans {
                assert!(span.start < span.end && span.end <= length, "{mention:?}");
                let carried = slice(text, span.start, span.end);
                assert!(
                    sentences.iter().any(|s| s.contains(carried.trim())),
                    "theme span {carried:?} is not inside a sentence"
                );
            }
        }
    }

    // Analyze: the same spans for the same texts, and NUL refused.
    let results = client
        .analyze(pb::AnalyzeRequest {
            texts: vec![one_for_one.into(), merged.into(), "nul\u{0}byte".into()],
            include_embeddings: false,
        })
        .await
        .expect("Analyze")
        .into_inner()
        .results;
    for (result, (text, sentences)) in results.iter().zip([
        (one_for_one, &one_for_one_sentences),
        (merged, &merged_sentences),
    ]) {
        let Some(pb::text_result::Outcome::Analysis(analysis)) = &result.outcome else {
            panic!("not analysed: {result:?}");
        };
        let found: Vec<String> = analysis
            .sentences
            .iter()
            .map(|s| slice(text, s.start, s.end))
            .collect();
        assert_eq!(found, sentences, "{text:?}");
        assert!(
            analysis
                .keyphrases
                .iter()
                .all(|k| !k.text.chars().any(char::is_control)),
            "{:?}",
            analysis.keyphrases
        );
    }
    match &results[2].outcome {
        Some(pb::text_result::Outcome::Rejection(r)) => {
            assert_eq!(r.field, "text");
            assert!(r.reason.contains("U+0000"), "{r:?}");
        }
        other => panic!("NUL was not refused: {other:?}"),
    }
}

/// Found by probing: a product, tag or attribute value sent decomposed
/// ("Cafe" + U+0301) was found only by a filter spelling it decomposed, and
/// facets listed the two spellings as two values.
#[tokio::test]
async fn labels_match_in_either_unicode_spelling() {
    let server = TestServer::spawn().await;
    let mut client = server.client().await;
    let word = unique_word("label");
    let (nfd, nfc) = ("Cafe\u{301} Cre\u{300}me", "Caf\u{e9} Cr\u{e8}me");
    let (tag_nfd, tag_nfc) = ("the\u{301}", "th\u{e9}");
    let (region_nfd, region_nfc) = ("I\u{302}le", "\u{ce}le");
    let labelled =
        |id: &str, product: &str, tags: Vec<&str>, region: &str, customer: &str| pb::Feedback {
            product: product.into(),
            tags: tags.into_iter().map(String::from).collect(),
            attributes: [("region".to_string(), region.to_string())].into(),
            customer_id: customer.into(),
            ..item(id, &format!("{word} tasted fine"))
        };
    let response = ingest(
        &mut client,
        vec![
            // Two spellings of one tag in one item are one tag.
            labelled("decomposed", nfd, vec![tag_nfd, tag_nfc], region_nfd, nfd),
            labelled("composed", nfc, vec![tag_nfc], region_nfc, nfc),
        ],
    )
    .await;
    assert_eq!(response.accepted, 2, "{response:?}");
    let both = vec!["composed".to_string(), "decomposed".to_string()];
    let mut request = search_request(&word);
    request.facets = vec!["product".into(), "tags".into(), "attributes.region".into()];
    let all = search_until(&mut client, request, |r| r.total_hits == 2).await;
    for field in ["product", "tags", "attributes.region"] {
        let facet = all.facets.iter().find(|f| f.field == field).unwrap();
        assert_eq!(facet.counts.len(), 1, "one value: {facet:?}");
        assert_eq!(facet.counts[0].count, 2, "{facet:?}");
    }
    // The store keeps each value as sent.
    let got = client
        .get(pb::GetRequest {
            ids: vec!["decomposed".into()],
            ..Default::default()
        })
        .await
        .expect("Get")
        .into_inner();
    let got = &got.items[0];
    assert_eq!(
        (got.product.as_str(), got.tags.clone()),
        (nfd, vec![tag_nfd.to_string()])
    );

    for spelling in [nfd, nfc] {
        // A backslash before an accent keeps the text NFC as typed; the
        // value read from it is not.
        let escaped = spelling
            .replace('\u{301}', "\\\u{301}")
            .replace('\u{300}', "\\\u{300}");
        for query in [
            format!("{word} product:\"{spelling}\""),
            format!("{word} product:IN [\"{spelling}\"]"),
            format!("{word} product:\"{escaped}\""),
        ] {
            let found = search(&mut client, search_request(&query)).await;
            let mut ids = hit_ids(&found);
            ids.sort();
            assert_eq!(ids, both, "{query}");
        }
        let filter = pb::Filter {
            products: vec![spelling.into()],
            ..Default::default()
        };
        let mut request = search_request(&word);
        request.filter = Some(filter);
        assert_eq!(
            search(&mut client, request).await.total_hits,
            2,
            "{spelling}"
        );
    }
    for (tag, region) in [(tag_nfd, region_nfd), (tag_nfc, region_nfc)] {
        let query = format!("{word} tags:{tag} attributes.region:{region}");
        assert_eq!(
            search(&mut client, search_request(&query)).await.total_hits,
            2,
            "{query}"
        );
        let mut request = search_request(&word);
        request.filter = Some(pb::Filter {
            tags: vec![tag.into()],
            attributes: [("region".to_string(), region.to_string())].into(),
            ..Default::default()
        });
        assert_eq!(search(&mut client, request).await.total_hits, 2, "{tag}");
    }
    // A customer id is an identifier: matched exactly, as DeleteCustomer
    // matches it.
    let query = format!("{word} customer_id:\"{nfc}\"");
    assert_eq!(
        hit_ids(&search(&mut client, search_request(&query)).await),
        vec!["composed"]
    );
}

/// For each (query, ids, highlight): the query finds exactly those items,
/// and, unless `highlight` is empty, the first hit's first highlight is
/// that text as written, bold in the HTML.
async fn found_and_highlighted(client: &mut Client, cases: &[(&str, &[&str], &str)]) {
    for &(query, ids, highlight) in cases {
        let found = search_until(client, search_request(query), |r| {
            r.total_hits == ids.len() as u64
        })
        .await;
        let mut got = hit_ids(&found);
        got.sort();
        assert_eq!(got, ids, "{query}");
        if highlight.is_empty() {
            continue;
        }
        let snippet = found.hits[0].snippet.as_ref().expect("a snippet");
        let first = &snippet.highlights[0];
        assert_eq!(
            &snippet.fragment[first.start as usize..first.end as usize],
            highlight,
            "{query}: {snippet:?}"
        );
        assert!(
            snippet.html.contains(&format!("<b>{highlight}</b>")),
            "{query}: {}",
            snippet.html
        );
    }
}

/// Chinese, Japanese and Korean words are found inside the runs they are
/// written in, and highlighted there. Before schema 9 a run without spaces
/// was one term: "配送" (delivery) found nothing in "配送が遅い", and a run
/// of 22 characters or more was dropped from the index as too long.
#[tokio::test]
async fn cjk_words_are_found_and_highlighted_inside_runs() {
    let server = TestServer::spawn().await;
    let mut client = server.client().await;
    let long_zh = "这个产品的质量非常好但是物流太慢了我们等了两个星期才收到";
    let response = ingest(
        &mut client,
        vec![
            item("ja", "配送が遅いので二度と注文しません。"),
            item("zh", "太贵了，质量也不好"),
            item("zh-long", long_zh),
            item("ko", "배송이 너무 늦어요"),
            item("en", "late delivery, again"),
        ],
    )
    .await;
    assert_eq!(response.accepted, 5, "{response:?}");
    found_and_highlighted(
        &mut client,
        &[
            ("配送", &["ja"][..], "配送"),
            ("配送が遅い", &["ja"], "配送が遅い"),
            ("贵", &["zh"], "贵"),
            ("质量", &["zh", "zh-long"], "质量"),
            ("物流 慢", &["zh-long"], "物流"),
            ("배송", &["ko"], "배송"),
            ("注文 OR delivery", &["en", "ja"], ""),
        ],
    )
    .await;
    // Characters that are not adjacent in the text are not a phrase.
    let found = search(&mut client, search_request("\"配遅\"")).await;
    assert_eq!(found.total_hits, 0);
}

/// Half-width kana (older systems' exports, receipts, SMS) are the words of
/// their full-width forms, both ways, and highlighted as written; a sound
/// mark is one character with its kana (ﾀﾞ is ダ). Before schema 10
/// "コーヒー" found nothing in "ｺｰﾋｰ".
#[tokio::test]
async fn half_width_kana_are_found_by_their_full_width_forms() {
    let server = TestServer::spawn().await;
    let mut client = server.client().await;
    let response = ingest(
        &mut client,
        vec![
            item("half", "ｺｰﾋｰｶｯﾌﾟがﾀﾞﾒでした"),
            item("full", "パスワードがダメ"),
        ],
    )
    .await;
    assert_eq!(response.accepted, 2, "{response:?}");
    found_and_highlighted(
        &mut client,
        &[
            ("コーヒーカップ", &["half"][..], "ｺｰﾋｰｶｯﾌﾟ"),
            ("ｺｰﾋｰ", &["half"], "ｺｰﾋｰ"),
            ("ﾊﾟｽﾜｰﾄﾞ", &["full"], "パスワード"),
            ("\"ｶｯﾌﾟがﾀﾞﾒ\"", &["half"], "ｶｯﾌﾟがﾀﾞﾒ"),
            ("ダメ", &["full", "half"], ""),
        ],
    )
    .await;
    // ﾀ alone is タ, not ダ.
    let found = search(&mut client, search_request("タメ")).await;
    assert_eq!(found.total_hits, 0, "{found:?}");
}
