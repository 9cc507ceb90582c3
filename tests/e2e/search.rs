//! Search: query language, filters on every structured field, facets, sorts,
//! snippets and cursor pagination.

use std::collections::{HashMap, HashSet};

use crate::helpers::*;
use verbatim::grpc::pb;

fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

/// Ten items with known fields; every query below states its expected hits.
fn corpus(word: &str) -> Vec<pb::Feedback> {
    let row = |id: &str,
               text: &str,
               channel: pb::Channel,
               stage: pb::JourneyStage,
               product: &str,
               day: i64,
               nps: Option<i32>,
               tags: &[&str],
               region: &str,
               lang: &str| pb::Feedback {
        id: id.into(),
        text: format!("{text} {word}"),
        channel: channel as i32,
        journey_stage: stage as i32,
        product: product.into(),
        customer_id: format!("cust-{id}"),
        created_at: ts(1_767_225_600 + day * 86_400),
        language: lang.into(),
        nps,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        attributes: HashMap::from([("region".to_string(), region.to_string())]),
        ..Default::default()
    };
    use pb::Channel::*;
    use pb::JourneyStage::*;
    vec![
        row(
            "s1",
            "They refunded my money quickly",
            Review,
            Support,
            "Router",
            1,
            Some(9),
            &["vip"],
            "emea",
            "en",
        ),
        row(
            "s2",
            "Still waiting for a refund after six weeks",
            SupportTicket,
            Support,
            "Router",
            2,
            Some(1),
            &["churn-risk"],
            "amer",
            "en",
        ),
        row(
            "s3",
            "Late delivery and the box was damaged",
            Review,
            Purchase,
            "TV Box",
            3,
            Some(4),
            &[],
            "emea",
            "en",
        ),
        row(
            "s4",
            "The delivery was late but support was kind",
            Survey,
            Purchase,
            "TV Box",
            4,
            Some(7),
            &["vip"],
            "apac",
            "en",
        ),
        row(
            "s5",
            "Setup of the app was easy",
            Survey,
            Onboarding,
            "App",
            5,
            Some(10),
            &[],
            "emea",
            "en",
        ),
        row(
            "s6",
            "Login keeps failing on the app",
            Chat,
            Usage,
            "App",
            6,
            Some(2),
            &["churn-risk", "vip"],
            "amer",
            "en",
        ),
        row(
            "s7",
            "Lieferung kam zu spät",
            Email,
            Purchase,
            "TV Box",
            7,
            None,
            &[],
            "emea",
            "de",
        ),
        row(
            "s8",
            "Billing charged me twice",
            SupportTicket,
            Support,
            "Fiber",
            8,
            Some(0),
            &[],
            "amer",
            "en",
        ),
        row(
            "s9",
            "Great speed, fair price",
            Social,
            Usage,
            "Fiber",
            9,
            Some(9),
            &[],
            "apac",
            "en",
        ),
        row(
            "s10",
            "Price went up again at renewal",
            Email,
            Renewal,
            "Fiber",
            10,
            Some(5),
            &["churn-risk"],
            "emea",
            "en",
        ),
    ]
}

async fn seeded() -> (TestServer, Client, String) {
    let server = TestServer::spawn().await;
    let mut client = server.client().await;
    let word = unique_word("corpus");
    let response = ingest(&mut client, corpus(&word)).await;
    assert_eq!(response.accepted, 10);
    search_until(&mut client, search_request(&word), |r| r.total_hits == 10).await;
    (server, client, word)
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

async fn ids_for(client: &mut Client, query: &str, filter: pb::Filter) -> Vec<String> {
    let mut request = search_request(query);
    request.filter = Some(filter);
    request.limit = 100;
    let response = search(client, request).await;
    assert_eq!(response.total_hits as usize, response.hits.len());
    sorted(hit_ids(&response))
}

fn ids(list: &[&str]) -> Vec<String> {
    sorted(list.iter().map(|s| s.to_string()).collect())
}

#[tokio::test]
async fn query_language() {
    let (_server, mut client, word) = seeded().await;
    let none = pb::Filter::default;
    // stemming: "refunds" finds "refunded" and "refund" (s1, s2)
    assert_eq!(
        ids_for(&mut client, "refunds", none()).await,
        ids(&["s1", "s2"])
    );
    // case folding
    assert_eq!(ids_for(&mut client, "BILLING", none()).await, ids(&["s8"]));
    // AND is the default: both words (s3, s4)
    assert_eq!(
        ids_for(&mut client, "late delivery", none()).await,
        ids(&["s3", "s4"])
    );
    // phrase: only the exact sequence (s3)
    assert_eq!(
        ids_for(&mut client, "\"late delivery\"", none()).await,
        ids(&["s3"])
    );
    // OR, NOT, grouping
    assert_eq!(
        ids_for(&mut client, "login OR billing", none()).await,
        ids(&["s6", "s8"])
    );
    assert_eq!(
        ids_for(&mut client, "delivery -damaged", none()).await,
        ids(&["s4"])
    );
    assert_eq!(
        ids_for(&mut client, "(price OR speed) AND renewal", none()).await,
        ids(&["s10"])
    );
    // field:value on keyword fields
    assert_eq!(
        ids_for(&mut client, &format!("{word} AND channel:email"), none()).await,
        ids(&["s7", "s10"])
    );
    assert_eq!(
        ids_for(&mut client, "tags:vip", none()).await,
        ids(&["s1", "s4", "s6"])
    );
    assert_eq!(
        ids_for(&mut client, "attributes.region:apac", none()).await,
        ids(&["s4", "s9"])
    );
    assert_eq!(
        ids_for(&mut client, "nps:[0 TO 2]", none()).await,
        ids(&["s2", "s6", "s8"])
    );
    // Unicode words with accent folding: "spat" finds "spät"
    assert_eq!(ids_for(&mut client, "spät", none()).await, ids(&["s7"]));
    assert_eq!(ids_for(&mut client, "spat", none()).await, ids(&["s7"]));
}

#[tokio::test]
async fn filters_on_every_structured_field() {
    let (_server, mut client, word) = seeded().await;
    let f = pb::Filter::default;
    let all = |filter| (word.clone(), filter);
    let cases: Vec<((String, pb::Filter), Vec<String>)> = vec![
        (
            all(pb::Filter {
                channels: vec![pb::Channel::Review as i32, pb::Channel::Chat as i32],
                ..f()
            }),
            ids(&["s1", "s3", "s6"]),
        ),
        (
            all(pb::Filter {
                journey_stages: vec![pb::JourneyStage::Support as i32],
                ..f()
            }),
            ids(&["s1", "s2", "s8"]),
        ),
        (
            all(pb::Filter {
                products: vec!["Fiber".into()],
                ..f()
            }),
            ids(&["s8", "s9", "s10"]),
        ),
        (
            all(pb::Filter {
                languages: vec!["DE".into()],
                ..f()
            }),
            ids(&["s7"]),
        ),
        (
            all(pb::Filter {
                tags: vec!["churn-risk".into(), "vip".into()],
                ..f()
            }),
            ids(&["s1", "s2", "s4", "s6", "s10"]),
        ),
        (
            all(pb::Filter {
                attributes: HashMap::from([("region".into(), "amer".into())]),
                ..f()
            }),
            ids(&["s2", "s6", "s8"]),
        ),
        (
            all(pb::Filter {
                customer_id: "cust-s5".into(),
                ..f()
            }),
            ids(&["s5"]),
        ),
        // day 3 inclusive .. day 5 exclusive
        (
            all(pb::Filter {
                created_after: ts(1_767_225_600 + 3 * 86_400),
                created_before: ts(1_767_225_600 + 5 * 86_400),
                ..f()
            }),
            ids(&["s3", "s4"]),
        ),
        // detractors: NPS 0-6 (s7 has no NPS and never matches a range)
        (
            all(pb::Filter {
                nps: Some(pb::IntRange {
                    min: None,
                    max: Some(6),
                }),
                ..f()
            }),
            ids(&["s2", "s3", "s6", "s8", "s10"]),
        ),
        (
            all(pb::Filter {
                nps: Some(pb::IntRange {
                    min: Some(9),
                    max: None,
                }),
                ..f()
            }),
            ids(&["s1", "s5", "s9"]),
        ),
        // fields combine with AND
        (
            all(pb::Filter {
                products: vec!["TV Box".into()],
                channels: vec![pb::Channel::Review as i32],
                ..f()
            }),
            ids(&["s3"]),
        ),
        (
            (
                "refund".into(),
                pb::Filter {
                    tags: vec!["vip".into()],
                    ..f()
                },
            ),
            ids(&["s1"]),
        ),
    ];
    for (i, ((query, filter), expected)) in cases.into_iter().enumerate() {
        assert_eq!(
            ids_for(&mut client, &query, filter).await,
            expected,
            "case {i}"
        );
    }
}

/// Filters on few-valued fields are cached as bits per index segment: the
/// same filter asked again must follow every write (an item moved out of
/// the filter by an update, a delete, a new item) and agree with the query
/// language's own form of it, which is not cached.
#[tokio::test]
async fn a_repeated_filter_follows_updates_deletes_and_new_items() {
    let (_server, mut client, word) = seeded().await;
    let filter = || pb::Filter {
        channels: vec![pb::Channel::Review as i32],
        nps: Some(pb::IntRange {
            min: None,
            max: Some(9),
        }),
        ..Default::default()
    };
    let unfiltered = format!("{word} AND channel:review AND nps:[0 TO 9]");
    assert_eq!(
        ids_for(&mut client, &word, filter()).await,
        ids(&["s1", "s3"])
    );
    assert_eq!(ids_for(&mut client, "", filter()).await, ids(&["s1", "s3"]));

    // s1 leaves the filter (now a chat), s3 is deleted, s12 joins it.
    let mut rows = corpus(&word);
    let mut moved = rows.remove(0);
    moved.channel = pb::Channel::Chat as i32;
    let mut joined = rows[1].clone();
    joined.id = "s12".into();
    joined.channel = pb::Channel::Review as i32;
    assert_eq!(ingest(&mut client, vec![moved, joined]).await.accepted, 2);
    client
        .delete(pb::DeleteRequest {
            ids: vec!["s3".into()],
        })
        .await
        .expect("Delete");
    let mut request = search_request(&word);
    request.filter = Some(filter());
    request.limit = 100;
    let response = search_until(&mut client, request, |r| {
        sorted(hit_ids(r)) == ids(&["s12"])
    })
    .await;
    assert_eq!(response.total_hits, 1);
    assert_eq!(ids_for(&mut client, "", filter()).await, ids(&["s12"]));
    assert_eq!(
        ids_for(&mut client, &unfiltered, pb::Filter::default()).await,
        ids(&["s12"])
    );
}

/// A delete is acknowledged before the index applies it: until then the
/// index still lists the item, and no view may return it (ids alone skip
/// the store only while the index has applied every removal).
#[tokio::test]
async fn a_deleted_item_leaves_every_view_before_the_index_applies_it() {
    // Commits at most every 4 s: the delete below waits that long for one.
    let server = TestServer::spawn_with(&["--refresh-interval-ms", "4000"]).await;
    let mut client = server.client().await;
    let items = ["rm-1", "rm-2", "rm-3"]
        .iter()
        .map(|id| pb::Feedback {
            id: id.to_string(),
            text: format!("zebracorn parcel {id}"),
            ..Default::default()
        })
        .collect();
    assert_eq!(ingest(&mut client, items).await.accepted, 3);
    let request = |view: pb::HitView| pb::SearchRequest {
        query: "zebracorn".into(),
        sort: pb::SortOrder::Newest as i32,
        view: view as i32,
        ..Default::default()
    };
    search_until(&mut client, request(pb::HitView::Ids), |r| {
        r.total_hits == 3
    })
    .await;
    client
        .delete(pb::DeleteRequest {
            ids: vec!["rm-2".into()],
        })
        .await
        .expect("Delete");
    for view in [pb::HitView::Ids, pb::HitView::Summary, pb::HitView::Full] {
        let response = search(&mut client, request(view)).await;
        assert_eq!(
            response.total_hits, 3,
            "the index applied the delete already (a commit within 4 s of the last): this test then checks nothing"
        );
        assert_eq!(
            sorted(hit_ids(&response)),
            ids(&["rm-1", "rm-3"]),
            "{view:?}"
        );
    }
    let response = search_until(&mut client, request(pb::HitView::Ids), |r| {
        r.total_hits == 2
    })
    .await;
    assert_eq!(sorted(hit_ids(&response)), ids(&["rm-1", "rm-3"]));
}

#[tokio::test]
async fn facets_sorts_and_snippets() {
    let (_server, mut client, word) = seeded().await;
    let mut request = search_request(&word);
    request.facets = vec![
        "channel".into(),
        "tags".into(),
        "attributes.region".into(),
        "product".into(),
    ];
    let response = search(&mut client, request).await;
    let facet = |field: &str| -> HashMap<String, u64> {
        response
            .facets
            .iter()
            .find(|f| f.field == field)
            .unwrap_or_else(|| panic!("facet {field}"))
            .counts
            .iter()
            .map(|c| (c.value.clone(), c.count))
            .collect()
    };
    assert_eq!(facet("channel")["review"], 2);
    assert_eq!(facet("channel")["support_ticket"], 2);
    assert_eq!(facet("tags")["vip"], 3);
    assert_eq!(facet("tags")["churn-risk"], 3);
    assert_eq!(facet("attributes.region")["emea"], 5);
    assert_eq!(facet("product")["TV Box"], 3);

    let mut newest = search_request(&word);
    newest.sort = pb::SortOrder::Newest as i32;
    newest.limit = 3;
    assert_eq!(
        hit_ids(&search(&mut client, newest).await),
        vec!["s10", "s9", "s8"]
    );
    let mut oldest = search_request("");
    oldest.sort = pb::SortOrder::Oldest as i32;
    oldest.limit = 2;
    assert_eq!(
        hit_ids(&search(&mut client, oldest).await),
        vec!["s1", "s2"]
    );

    let response = search(&mut client, search_request("\"late delivery\"")).await;
    let snippet = response.hits[0].snippet.as_ref().expect("snippet");
    assert!(
        snippet.html.contains("<b>Late</b> <b>delivery</b>"),
        "{}",
        snippet.html
    );
    for range in &snippet.highlights {
        let highlighted = &snippet.fragment[range.start as usize..range.end as usize];
        assert!(["Late", "delivery"].contains(&highlighted), "{highlighted}");
    }
    assert!(response.hits[0].score > 0.0);
}

#[tokio::test]
async fn cursor_pages_are_stable_while_items_arrive() {
    let server = TestServer::spawn().await;
    let mut client = server.client().await;
    let word = unique_word("page");
    // 45 items, several sharing a timestamp so ties must be broken
    // consistently; the word repeats 1-3 times, so relevance scores both
    // differ and tie.
    let items: Vec<pb::Feedback> = (0..45)
        .map(|i| pb::Feedback {
            created_at: ts(1_700_000_000 + (i / 3) as i64),
            ..item(
                &format!("p-{i:02}"),
                &format!("paged {} entry", vec![word.as_str(); 1 + i % 3].join(" ")),
            )
        })
        .collect();
    ingest(&mut client, items).await;
    search_until(&mut client, search_request(&word), |r| r.total_hits == 45).await;
    let mut late_batch = 0;
    for sort in [
        pb::SortOrder::Newest,
        pb::SortOrder::Oldest,
        pb::SortOrder::Relevance,
        pb::SortOrder::MostNegative,
        pb::SortOrder::MostPositive,
    ] {
        // Each collector: the page alone (relevance prunes), with facets in
        // the same pass, and with a bounded count.
        for variant in ["plain", "facets", "bounded count"] {
            let mut request = search_request(&word);
            request.sort = sort as i32;
            request.limit = 10;
            let mut expected_total = (45, false);
            match variant {
                "facets" => request.facets = vec!["channel".into()],
                "bounded count" => {
                    request.track_total_hits_up_to = 20;
                    expected_total = (20, true);
                }
                _ => {}
            }
            let mut seen = Vec::new();
            let mut pages = 0;
            loop {
                let response = search(&mut client, request.clone()).await;
                assert_eq!(
                    (response.total_hits, response.total_hits_is_lower_bound),
                    expected_total,
                    "{sort:?} {variant}"
                );
                if variant == "facets" {
                    assert_eq!(response.facets[0].counts[0].count, 45, "{sort:?}");
                }
                seen.extend(hit_ids(&response));
                pages += 1;
                if pages == 1 {
                    // New items arrive between pages; they do not match.
                    late_batch += 1;
                    let late: Vec<pb::Feedback> = (0..5)
                        .map(|i| pb::Feedback {
                            created_at: ts(1_800_000_000 + i),
                            ..item(&format!("late-{late_batch}-{i}"), &format!("unrelated {i}"))
                        })
                        .collect();
                    ingest(&mut client, late).await;
                    // ... and are searchable before the next page: they
                    // change the BM25 statistics (document count, average
                    // length), which must not move relevance keys.
                    search_until(&mut client, search_request("unrelated"), |r| {
                        r.total_hits == 5 * late_batch
                    })
                    .await;
                }
                if response.next_cursor.is_empty() {
                    break;
                }
                request.cursor = response.next_cursor;
            }
            assert_eq!(pages, 5, "{sort:?} {variant}");
            assert_eq!(
                seen.len(),
                45,
                "{sort:?} {variant}: every item exactly once"
            );
            assert_eq!(
                seen.iter().collect::<HashSet<_>>().len(),
                45,
                "{sort:?} {variant}: no duplicates"
            );
            // The pages concatenated are one long page.
            let mut long = search_request(&word);
            long.sort = sort as i32;
            long.limit = 100;
            assert_eq!(
                hit_ids(&search(&mut client, long).await),
                seen,
                "{sort:?} {variant}: pages = one long page"
            );
            if sort == pb::SortOrder::Oldest {
                let mut expected = seen.clone();
                expected.sort();
                assert_eq!(seen, expected, "oldest first, ties in ingest order");
            }
        }
    }
    // A cursor is bound to its query.
    let mut first = search_request(&word);
    first.limit = 10;
    let cursor = search(&mut client, first).await.next_cursor;
    let mut other = search_request("entry");
    other.cursor = cursor;
    let status = client.search(other).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn date_filters_are_exact_to_the_microsecond() {
    let server = TestServer::spawn().await;
    let mut client = server.client().await;
    let at = |nanos: i32| {
        Some(prost_types::Timestamp {
            seconds: 1_767_225_600,
            nanos,
        })
    };
    let items = vec![
        pb::Feedback {
            created_at: at(200_000_000),
            ..item("d-early", "same second early")
        },
        pb::Feedback {
            created_at: at(700_000_000),
            ..item("d-late", "same second late")
        },
    ];
    ingest(&mut client, items).await;
    search_until(&mut client, search_request("second"), |r| r.total_hits == 2).await;
    let mut after = search_request("second");
    after.filter = Some(pb::Filter {
        created_after: at(500_000_000),
        ..Default::default()
    });
    assert_eq!(hit_ids(&search(&mut client, after).await), vec!["d-late"]);
    let mut before = search_request("second");
    before.filter = Some(pb::Filter {
        created_before: at(700_000_000),
        ..Default::default()
    });
    assert_eq!(hit_ids(&search(&mut client, before).await), vec!["d-early"]);
}

/// Every call answers with a request id (the client's `x-request-id`, or a
/// new ULID, errors included) and the server's log lines of that call
/// carry it.
#[tokio::test]
async fn every_call_has_a_request_id_in_its_answer_and_its_logs() {
    let server = TestServer::spawn().await;
    let mut client = server.client().await;

    let mut request = tonic::Request::new(search_request(""));
    request
        .metadata_mut()
        .insert("x-request-id", "e2e-search-1".parse().unwrap());
    let response = client.search(request).await.expect("Search");
    assert_eq!(
        response.metadata().get("x-request-id").unwrap(),
        "e2e-search-1"
    );

    let status = client
        .search(search_request("(unclosed"))
        .await
        .expect_err("malformed query");
    let generated = status
        .metadata()
        .get("x-request-id")
        .expect("an id on an error answer too")
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(generated.len(), 26, "a ULID: {generated}");
    assert!(ulid::Ulid::from_string(&generated).is_ok());

    // An unusable client id (a space) is replaced, not echoed.
    let mut request = tonic::Request::new(search_request(""));
    request
        .metadata_mut()
        .insert("x-request-id", "two words".parse().unwrap());
    let response = client.search(request).await.expect("Search");
    assert_ne!(
        response.metadata().get("x-request-id").unwrap(),
        "two words"
    );

    // A call that logs: the erasure's log line carries its request id.
    let mut request = tonic::Request::new(pb::DeleteCustomerRequest {
        customer_id: "cust-request-id".into(),
    });
    request
        .metadata_mut()
        .insert("x-request-id", "e2e-erasure-7".parse().unwrap());
    client
        .delete_customer(request)
        .await
        .expect("DeleteCustomer");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let log = server.log_text();
        if log
            .lines()
            .any(|l| l.contains("e2e-erasure-7") && l.contains("DeleteCustomer"))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no log line with the request id:\n{log}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Searches and reports run on a bounded pool: with one thread and one
/// waiting slot, a burst of concurrent reports gets answers and
/// RESOURCE_EXHAUSTED refusals naming the flags, nothing else.
#[tokio::test]
async fn a_full_read_pool_refuses_at_once_with_resource_exhausted() {
    let server = TestServer::spawn_with(&["--search-threads", "1", "--search-queue", "1"]).await;
    let mut client = server.client().await;
    for batch in 0..20 {
        let items = (0..1000)
            .map(|i| {
                let mut it = item(&format!("pool-{batch}-{i}"), "the pool test comment");
                it.nps = Some(i % 11);
                it.tags = vec![format!("t{}", i % 50)];
                it
            })
            .collect();
        ingest(&mut client, items).await;
    }
    search_until(&mut client, search_request(""), |r| r.total_hits == 20_000).await;
    let calls = (0..24).map(|_| {
        let mut client = client.clone();
        async move {
            client
                .report(pb::ReportRequest {
                    segment: "channel".into(),
                    ..Default::default()
                })
                .await
        }
    });
    let results = futures::future::join_all(calls).await;
    let mut answered = 0;
    let mut refused = 0;
    for result in results {
        match result {
            Ok(r) => {
                assert_eq!(r.into_inner().items, 20_000);
                answered += 1;
            }
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                assert!(status.message().contains("--search-queue"), "{status:?}");
                refused += 1;
            }
        }
    }
    assert!(
        answered >= 2,
        "the running and the waiting call are answered"
    );
    assert!(
        refused >= 1,
        "a burst of 24 beyond 1 thread + 1 waiting is refused"
    );
}

/// `--index-phrases off` keeps an index without `text_pairs` in its own
/// folder and searches phrases by positions; switching on rebuilds the
/// paired index from the store and removes the other one. Both find the
/// same items for two-word phrases, a hyphenated word and a longer phrase.
#[tokio::test]
async fn index_phrases_off_and_on_find_the_same_items() {
    /// Waits for the four items, then checks every phrase's items, and
    /// returns the index folders.
    async fn phrases_found(server: &TestServer) -> Vec<String> {
        let mut client = server.client().await;
        search_until(&mut client, search_request("delivery OR deliveries"), |r| {
            r.total_hits == 4
        })
        .await;
        let expected = [
            ("\"late delivery\"", vec!["p1", "p3", "p4"]),
            ("\"delivery late\"", vec!["p3"]),
            ("wi-fi", vec!["p1"]),
            ("\"very late delivery\"", vec!["p3"]),
            ("\"delivery was\"", vec!["p2"]),
        ];
        for (query, want) in &expected {
            assert_eq!(
                ids_for(&mut client, query, pb::Filter::default()).await,
                ids(want),
                "{query}"
            );
        }
        let mut names: Vec<String> = std::fs::read_dir(server.data_dir.join("index"))
            .expect("the index folder")
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('v') && n[1..2].chars().all(|c| c.is_ascii_digit()))
            .collect();
        names.sort();
        names
    }

    let mut server = TestServer::spawn_with(&["--index-phrases", "off"]).await;
    let mut client = server.client().await;
    let items = vec![
        item("p1", "Late delivery again, and the Wi-Fi drops"),
        item("p2", "The delivery was late"),
        item("p3", "wifi is fine, delivery late, very late delivery"),
        item("p4", "late deliveries hurt"),
    ];
    assert_eq!(ingest(&mut client, items).await.accepted, 4);
    let off = phrases_found(&server).await;
    assert!(off.len() == 1 && off[0].ends_with("-nopairs"), "{off:?}");

    server.terminate();
    server.restart_with(&[]).await;
    let on = phrases_found(&server).await;
    assert!(on.len() == 1 && !on[0].contains('-'), "{on:?}");
}
