//! Ingest, Get, Delete, DeleteCustomer and IngestStream through the API.

use std::collections::HashMap;

use crate::helpers::*;
use verbatim::grpc::pb;

fn full_item(id: &str, text: &str) -> pb::Feedback {
    pb::Feedback {
        id: id.into(),
        text: text.into(),
        channel: pb::Channel::Review as i32,
        journey_stage: pb::JourneyStage::Onboarding as i32,
        product: "Northwind Router X2".into(),
        customer_id: "cust-1".into(),
        created_at: Some(prost_types::Timestamp {
            seconds: 1_767_225_600,
            nanos: 123_456_000,
        }),
        language: "EN".into(),
        nps: Some(3),
        csat: Some(2),
        ces: Some(6),
        rating: Some(1),
        tags: vec!["vip".into(), "churn-risk".into()],
        attributes: HashMap::from([
            ("region".into(), "emea".into()),
            ("plan".into(), "pro".into()),
        ]),
        ..Default::default()
    }
}

#[tokio::test]
async fn ingest_get_search_delete_round_trip() {
    let server = TestServer::spawn().await;
    let mut client = server.client().await;
    let word = unique_word("setup");
    let sent = full_item("rt-1", &format!("The router {word} setup failed twice"));
    let response = ingest(&mut client, vec![sent.clone()]).await;
    assert_eq!((response.accepted, response.rejected), (1, 0));
    assert_eq!(
        response.results[0].outcome,
        Some(pb::item_result::Outcome::Id("rt-1".into()))
    );

    let got = client
        .get(pb::GetRequest {
            ids: vec!["rt-1".into(), "nope".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.missing_ids, vec!["nope"]);
    let stored = &got.items[0];
    assert!(stored.ingested_at.is_some());
    let mut expected = sent.clone();
    expected.language = "en".into(); // stored lower-cased
    expected.ingested_at = stored.ingested_at;
    expected.analysis_status = pb::AnalysisStatus::Pending as i32; // analysis is off in this test
    assert_eq!(stored, &expected);

    let found = search_until(&mut client, search_request(&word), |r| r.total_hits == 1).await;
    assert_eq!(hit_ids(&found), vec!["rt-1"]);

    let deleted = client
        .delete(pb::DeleteRequest {
            ids: vec!["rt-1".into(), "never".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.deleted, 1);
    assert_eq!(deleted.missing_ids, vec!["never"]);
    let got = client
        .get(pb::GetRequest {
            ids: vec!["rt-1".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.items.is_empty());
    search_until(&mut client, search_request(&word), |r| {
        r.total_hits == 0 && r.hits.is_empty()
    })
    .await;
}

#[tokio::test]
async fn valid_items_are_stored_even_when_others_in_the_batch_are_rejected() {
    let server = TestServer::spawn().await;
    let mut client = server.client().await;
    let mut bad_score = item("b-2", "bad nps");
    bad_score.nps = Some(11);
    let mut bad_enum = item("b-4", "bad channel");
    bad_enum.channel = 99;
    let batch = vec![
        item("b-1", "fine one"),
        bad_score,
        item("b-3", "fine two"),
        bad_enum,
        item("", "   "),
        item("b-1", "duplicate of the first"),
    ];
    let response = ingest(&mut client, batch).await;
    assert_eq!((response.accepted, response.rejected), (2, 4));
    let outcome = |i: usize| response.results[i].outcome.clone().unwrap();
    let rejection_field = |i: usize| match outcome(i) {
        pb::item_result::Outcome::Rejection(r) => r.field,
        other => panic!("item {i} not rejected: {other:?}"),
    };
    assert_eq!(outcome(0), pb::item_result::Outcome::Id("b-1".into()));
    assert_eq!(rejection_field(1), "nps");
    assert_eq!(outcome(2), pb::item_result::Outcome::Id("b-3".into()));
    assert_eq!(rejection_field(3), "channel");
    assert_eq!(rejection_field(4), "text");
    assert_eq!(rejection_field(5), "id");
    for (i, r) in response.results.iter().enumerate() {
        assert_eq!(r.index as usize, i);
    }
    let got = client
        .get(pb::GetRequest {
            ids: vec!["b-1".into(), "b-2".into(), "b-3".into(), "b-4".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got.items
            .iter()
            .map(|i| i.text.as_str())
            .collect::<Vec<_>>(),
        vec!["fine one", "fine two"]
    );
    assert_eq!(got.missing_ids, vec!["b-2", "b-4"]);
}

#[tokio::test]
async fn re_ingesting_an_id_replaces_the_item_everywhere() {
    let server = TestServer::spawn().await;
    let mut client = server.client().await;
    let word = unique_word("idem");
    ingest(
        &mut client,
        vec![item("same", &format!("first wording {word}"))],
    )
    .await;
    search_until(&mut client, search_request(&word), |r| r.total_hits == 1).await;
    let mut second = item("same", &format!("second wording {word}"));
    second.customer_id = "cust-moved".into();
    ingest(&mut client, vec![second]).await;
    search_until(
        &mut client,
        search_request(&format!("second {word}")),
        |r| r.total_hits == 1,
    )
    .await;
    assert_eq!(
        search(&mut client, search_request(&word)).await.total_hits,
        1
    );
    assert_eq!(
        search(&mut client, search_request(&format!("first {word}")))
            .await
            .total_hits,
        0
    );
    let got = client
        .get(pb::GetRequest {
            ids: vec!["same".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.items[0].text, format!("second wording {word}"));
    // The customer index follows the new version: erasing the old customer
    // leaves the item alone, erasing the new one removes it.
    let erased = client
        .delete_customer(pb::DeleteCustomerRequest {
            customer_id: "".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(erased.code(), tonic::Code::InvalidArgument);
    let erased = client
        .delete_customer(pb::DeleteCustomerRequest {
            customer_id: "cust-moved".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(erased.deleted, 1);
}

#[tokio::test]
async fn generated_ids_are_ulids() {
    let server = TestServer::spawn().await;
    let mut client = server.client().await;
    let response = ingest(
        &mut client,
        vec![item("", "no id given"), item("", "nor here")],
    )
    .await;
    let ids: Vec<String> = response
        .results
        .iter()
        .map(|r| match r.outcome.clone().unwrap() {
            pb::item_result::Outcome::Id(id) => id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1]);
    for id in &ids {
        assert!(ulid::Ulid::from_string(id).is_ok(), "{id}");
    }
}

#[tokio::test]
async fn delete_customer_erases_store_index_and_snippets() {
    let server = TestServer::spawn().await;
    let mut client = server.client().await;
    let word = unique_word("erase");
    let mut items = Vec::new();
    for i in 0..5 {
        let mut it = item(
            &format!("c-{i}"),
            &format!("private complaint {word} number {i}"),
        );
        it.customer_id = if i < 3 {
            "subject".into()
        } else {
            "other".into()
        };
        items.push(it);
    }
    ingest(&mut client, items).await;
    search_until(&mut client, search_request(&word), |r| r.total_hits == 5).await;
    let erased = client
        .delete_customer(pb::DeleteCustomerRequest {
            customer_id: "subject".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(erased.deleted, 3);
    let got = client
        .get(pb::GetRequest {
            ids: (0..5).map(|i| format!("c-{i}")).collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.missing_ids, vec!["c-0", "c-1", "c-2"]);
    let mut request = search_request(&word);
    request.facets = vec!["customer_id".into()];
    let after = search_until(&mut client, request, |r| r.total_hits == 2).await;
    assert_eq!(hit_ids(&after).len(), 2);
    assert!(after
        .hits
        .iter()
        .all(|h| h.item.as_ref().unwrap().customer_id == "other"));
    assert!(after
        .hits
        .iter()
        .all(|h| h.snippet.as_ref().is_some_and(|s| s.html.contains("<b>"))));
    let customers: Vec<&str> = after.facets[0]
        .counts
        .iter()
        .map(|c| c.value.as_str())
        .collect();
    assert_eq!(customers, vec!["other"]);
    let mut by_customer = search_request("");
    by_customer.filter = Some(pb::Filter {
        customer_id: "subject".into(),
        ..Default::default()
    });
    assert_eq!(search(&mut client, by_customer).await.total_hits, 0);
}

#[tokio::test]
async fn ingest_stream_acks_every_message_in_order() {
    let server = TestServer::spawn().await;
    let mut client = server.client().await;
    let word = unique_word("stream");
    let messages: Vec<pb::IngestRequest> = (0..20)
        .map(|m| pb::IngestRequest {
            wait_for_analysis: false,
            items: (0..250)
                .map(|i| {
                    let mut it = item(&format!("s-{m}-{i}"), &format!("streamed {word} item {i}"));
                    if i == 7 {
                        it.csat = Some(0); // one rejection per message
                    }
                    it
                })
                .collect(),
        })
        .collect();
    let mut acks = client
        .ingest_stream(tokio_stream::iter(messages))
        .await
        .unwrap()
        .into_inner();
    let mut sequence = 0;
    while let Some(ack) = acks.message().await.unwrap() {
        assert_eq!(ack.sequence, sequence);
        assert_eq!((ack.accepted, ack.rejected), (249, 1));
        match &ack.results[7].outcome {
            Some(pb::item_result::Outcome::Rejection(r)) => assert_eq!(r.field, "csat"),
            other => panic!("{other:?}"),
        }
        sequence += 1;
    }
    assert_eq!(sequence, 20);
    search_until(&mut client, search_request(&word), |r| {
        r.total_hits == 20 * 249
    })
    .await;
}

#[tokio::test]
async fn a_bad_stream_message_ends_the_stream_after_the_acks_before_it() {
    let server = TestServer::spawn().await;
    let mut client = server.client().await;
    let good = |m: usize| pb::IngestRequest {
        items: (0..100)
            .map(|i| item(&format!("bs-{m}-{i}"), "fine"))
            .collect(),
        ..Default::default()
    };
    let messages = vec![good(0), good(1), pb::IngestRequest::default(), good(3)];
    let mut acks = client
        .ingest_stream(tokio_stream::iter(messages))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acks.message().await.unwrap().unwrap().sequence, 0);
    assert_eq!(acks.message().await.unwrap().unwrap().sequence, 1);
    let status = acks.message().await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let got = client
        .get(pb::GetRequest {
            ids: vec!["bs-1-99".into(), "bs-3-0".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got.missing_ids,
        vec!["bs-3-0"],
        "acknowledged batches stored, nothing after the bad one"
    );
}
