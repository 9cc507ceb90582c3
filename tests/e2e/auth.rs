//! API keys, roles and tenants through the real binary: every RPC with no
//! key, a wrong key, a revoked key, a key without the role; tenants that
//! never see each other's items; keys added and revoked while serving.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tonic::Code;
use verbatim::grpc::pb;

use crate::helpers::{add_key, authed, item, search_request, TestServer, BIN};

fn keys(data_dir: &Path, args: &[&str]) -> String {
    let output = Command::new(BIN)
        .arg("keys")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .expect("run verbatim keys");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn key_id(token: &str) -> String {
    token[3..15].to_string()
}

const RPCS: [&str; 14] = [
    "Ingest",
    "IngestStream",
    "Get",
    "Delete",
    "DeleteCustomer",
    "Search",
    "Report",
    "Stats",
    "Analyze",
    "AnalyzeStream",
    "UpsertTheme",
    "ListThemes",
    "DeleteTheme",
    "DiscoverThemes",
];

/// The role each RPC needs (None: any valid key).
fn needs(rpc: &str) -> Option<&'static str> {
    match rpc {
        "Ingest" | "IngestStream" => Some("ingest"),
        "Get" | "Search" | "Report" | "Stats" | "ListThemes" | "DiscoverThemes" => Some("read"),
        "Delete" | "DeleteCustomer" | "UpsertTheme" | "DeleteTheme" => Some("admin"),
        "Analyze" | "AnalyzeStream" => None,
        other => panic!("unknown rpc {other}"),
    }
}

/// Calls `rpc` with an empty request: the key is checked before the
/// request's content, so the code tells whether the key was let in.
async fn call(server: &TestServer, rpc: &str, token: Option<&str>) -> Code {
    let mut client = server.client().await;
    let result: Result<(), tonic::Status> = match rpc {
        "Ingest" => client
            .ingest(authed(pb::IngestRequest::default(), token))
            .await
            .map(drop),
        "IngestStream" => match client
            .ingest_stream(authed(
                tokio_stream::iter(vec![pb::IngestRequest::default()]),
                token,
            ))
            .await
        {
            Ok(response) => response.into_inner().message().await.map(drop),
            Err(status) => Err(status),
        },
        "Get" => client
            .get(authed(pb::GetRequest::default(), token))
            .await
            .map(drop),
        "Delete" => client
            .delete(authed(pb::DeleteRequest::default(), token))
            .await
            .map(drop),
        "DeleteCustomer" => client
            .delete_customer(authed(pb::DeleteCustomerRequest::default(), token))
            .await
            .map(drop),
        "Search" => client
            .search(authed(pb::SearchRequest::default(), token))
            .await
            .map(drop),
        "Report" => client
            .report(authed(pb::ReportRequest::default(), token))
            .await
            .map(drop),
        "Stats" => client
            .stats(authed(pb::StatsRequest::default(), token))
            .await
            .map(drop),
        "Analyze" => client
            .analyze(authed(pb::AnalyzeRequest::default(), token))
            .await
            .map(drop),
        "AnalyzeStream" => match client
            .analyze_stream(authed(
                tokio_stream::iter(vec![pb::AnalyzeRequest::default()]),
                token,
            ))
            .await
        {
            Ok(response) => response.into_inner().message().await.map(drop),
            Err(status) => Err(status),
        },
        "UpsertTheme" => client
            .upsert_theme(authed(pb::UpsertThemeRequest::default(), token))
            .await
            .map(drop),
        "ListThemes" => client
            .list_themes(authed(pb::ListThemesRequest::default(), token))
            .await
            .map(drop),
        "DeleteTheme" => client
            .delete_theme(authed(pb::DeleteThemeRequest::default(), token))
            .await
            .map(drop),
        "DiscoverThemes" => client
            .discover_themes(authed(pb::DiscoverThemesRequest::default(), token))
            .await
            .map(drop),
        other => panic!("unknown rpc {other}"),
    };
    match result {
        Ok(()) => Code::Ok,
        Err(status) => status.code(),
    }
}

fn let_in(code: Code) -> bool {
    !matches!(code, Code::Unauthenticated | Code::PermissionDenied)
}

#[tokio::test]
async fn every_rpc_checks_the_key_and_its_role() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let ingest = add_key(&data, "acme", &["ingest"]);
    let read = add_key(&data, "acme", &["read"]);
    let admin = add_key(&data, "acme", &["admin"]);
    let revoked = add_key(&data, "acme", &["admin"]);
    keys(&data, &["revoke", &key_id(&revoked)]);
    let server = TestServer::spawn_in(&data, &[]).await;
    assert!(server.log_text().contains("API keys required"));

    let unknown = format!("vb_{}_AAAA", "0123456789ab");
    let mut forged = admin.clone();
    forged.pop();
    forged.push(if admin.ends_with('A') { 'B' } else { 'A' });
    for rpc in RPCS {
        for (what, token) in [
            ("no key", None),
            ("garbage", Some("hello")),
            ("unknown key", Some(unknown.as_str())),
            ("forged secret", Some(forged.as_str())),
            ("revoked key", Some(revoked.as_str())),
        ] {
            assert_eq!(
                call(&server, rpc, token).await,
                Code::Unauthenticated,
                "{rpc} with {what}"
            );
        }
        for (role, token) in [("ingest", &ingest), ("read", &read), ("admin", &admin)] {
            let code = call(&server, rpc, Some(token)).await;
            let allowed = match needs(rpc) {
                None => true,
                Some(need) => need == role || role == "admin",
            };
            if allowed {
                assert!(let_in(code), "{rpc} with a {role} key: {code:?}");
            } else {
                assert_eq!(code, Code::PermissionDenied, "{rpc} with a {role} key");
            }
        }
    }
    // Health stays open.
    assert_eq!(
        server.health().await,
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    // The message says what to do, and never echoes the token.
    let status = server
        .client()
        .await
        .search(authed(pb::SearchRequest::default(), None))
        .await
        .unwrap_err();
    assert!(
        status.message().contains("authorization: Bearer"),
        "{status:?}"
    );
    let status = server
        .client()
        .await
        .search(authed(pb::SearchRequest::default(), Some(&ingest)))
        .await
        .unwrap_err();
    assert!(status.message().contains("read role"), "{status:?}");
    assert!(
        !server.log_text().contains(&admin[15..]),
        "a token in the log"
    );
}

async fn ingest_as(
    server: &TestServer,
    token: &str,
    items: Vec<pb::Feedback>,
) -> pb::IngestResponse {
    server
        .client()
        .await
        .ingest(authed(
            pb::IngestRequest {
                items,
                ..Default::default()
            },
            Some(token),
        ))
        .await
        .expect("Ingest")
        .into_inner()
}

async fn search_as(server: &TestServer, token: &str, query: &str) -> pb::SearchResponse {
    server
        .client()
        .await
        .search(authed(
            pb::SearchRequest {
                query: query.into(),
                ..Default::default()
            },
            Some(token),
        ))
        .await
        .expect("Search")
        .into_inner()
}

async fn search_until_as(
    server: &TestServer,
    token: &str,
    query: &str,
    hits: u64,
) -> pb::SearchResponse {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let response = search_as(server, token, query).await;
        if response.total_hits == hits || Instant::now() > deadline {
            return response;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn tenants_never_see_each_other() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let acme = add_key(&data, "acme", &["admin"]);
    let globex = add_key(&data, "globex", &["admin"]);
    let mut server = TestServer::spawn_in(&data, &[]).await;

    let mut a = item("shared-id", "acme parcel arrived crushed");
    a.customer_id = "cust-1".into();
    let mut g = item("shared-id", "globex invoice was wrong");
    g.customer_id = "cust-1".into();
    assert_eq!(ingest_as(&server, &acme, vec![a]).await.accepted, 1);
    assert_eq!(ingest_as(&server, &globex, vec![g]).await.accepted, 1);
    assert_eq!(
        search_until_as(&server, &acme, "crushed", 1)
            .await
            .total_hits,
        1
    );
    assert_eq!(
        search_until_as(&server, &globex, "invoice", 1)
            .await
            .total_hits,
        1
    );
    // The same id holds each tenant's own item; searches see only their own.
    assert_eq!(search_as(&server, &globex, "crushed").await.total_hits, 0);
    assert_eq!(search_as(&server, &acme, "invoice").await.total_hits, 0);
    let got = server
        .client()
        .await
        .get(authed(
            pb::GetRequest {
                ids: vec!["shared-id".into()],
                ..Default::default()
            },
            Some(&globex),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.items[0].text, "globex invoice was wrong");
    // Stats and reports count only the caller's items.
    let stats = server
        .client()
        .await
        .stats(authed(pb::StatsRequest::default(), Some(&acme)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.items, 1);
    // A foreign id is NOT_FOUND-shaped: missing, as if it never existed.
    let mut only_acme = item("acme-only", "acme only item");
    only_acme.customer_id = "cust-2".into();
    ingest_as(&server, &acme, vec![only_acme]).await;
    let got = server
        .client()
        .await
        .get(authed(
            pb::GetRequest {
                ids: vec!["acme-only".into()],
                ..Default::default()
            },
            Some(&globex),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(got.items.is_empty());
    assert_eq!(got.missing_ids, ["acme-only"]);
    let deleted = server
        .client()
        .await
        .delete(authed(
            pb::DeleteRequest {
                ids: vec!["acme-only".into()],
            },
            Some(&globex),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.deleted, 0);
    // Erasure in one tenant leaves the other's customer of the same id alone.
    let erased = server
        .client()
        .await
        .delete_customer(authed(
            pb::DeleteCustomerRequest {
                customer_id: "cust-1".into(),
            },
            Some(&globex),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(erased.deleted, 1);
    assert_eq!(
        search_until_as(&server, &globex, "invoice", 0)
            .await
            .total_hits,
        0
    );
    assert_eq!(search_as(&server, &acme, "crushed").await.total_hits, 1);
    // Per-tenant taxonomies: a theme created in one is absent in the other.
    server
        .client()
        .await
        .upsert_theme(authed(
            pb::UpsertThemeRequest {
                theme: Some(pb::Theme {
                    id: "packaging".into(),
                    name: "Packaging".into(),
                    description: "Boxes and packaging.".into(),
                    examples: vec!["the box arrived crushed".into()],
                    ..Default::default()
                }),
            },
            Some(&acme),
        ))
        .await
        .expect("UpsertTheme");
    let themes = |token: String| {
        let server = &server;
        async move {
            server
                .client()
                .await
                .list_themes(authed(pb::ListThemesRequest {}, Some(&token)))
                .await
                .unwrap()
                .into_inner()
                .themes
                .into_iter()
                .map(|t| t.id)
                .collect::<Vec<_>>()
        }
    };
    assert!(themes(acme.clone())
        .await
        .contains(&"packaging".to_string()));
    assert!(!themes(globex.clone())
        .await
        .contains(&"packaging".to_string()));
    // The data of each tenant lives in its own folder and comes back after a crash.
    assert!(data.join("tenants/acme").is_dir() && data.join("tenants/globex").is_dir());
    server.kill9();
    server.restart().await;
    assert_eq!(
        search_until_as(&server, &acme, "crushed", 1)
            .await
            .total_hits,
        1
    );
    assert_eq!(search_as(&server, &globex, "crushed").await.total_hits, 0);
    // `reindex` rebuilds every tenant's index, not only the default one's.
    server.terminate();
    let reindexed = crate::helpers::reindex_offline(&data);
    for line in [
        "tenant default: reindexed 0 items",
        "tenant acme: reindexed 2 items",
        "tenant globex: reindexed 0 items",
    ] {
        assert!(reindexed.contains(line), "{reindexed}");
    }
    server.restart().await;
    assert_eq!(
        search_until_as(&server, &acme, "crushed", 1)
            .await
            .total_hits,
        1
    );
}

/// Found by the 41st session's read-through: one tenant whose store could
/// not be opened (here: damaged) stopped the whole server's start, so every
/// other tenant was down with it. Now the server starts, the other tenants
/// are served, the damaged one's calls answer UNAVAILABLE naming the cause,
/// and each call tries to open it again: once the file is repaired, it is
/// served without a restart.
#[tokio::test]
async fn a_tenant_that_cannot_be_opened_keeps_no_other_tenant_down() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let acme = add_key(&data, "acme", &["admin"]);
    let globex = add_key(&data, "globex", &["admin"]);
    let mut server = TestServer::spawn_in(&data, &[]).await;
    assert_eq!(
        ingest_as(
            &server,
            &acme,
            vec![item("a-1", "acme parcel arrived crushed")]
        )
        .await
        .accepted,
        1
    );
    assert_eq!(
        ingest_as(
            &server,
            &globex,
            vec![item("g-1", "globex invoice was wrong")]
        )
        .await
        .accepted,
        1
    );
    server.terminate();
    let store = data.join("tenants/acme/store.redb");
    let good = std::fs::read(&store).unwrap();
    std::fs::write(&store, vec![0xA5u8; good.len()]).unwrap();

    server.restart().await;
    assert_eq!(
        search_until_as(&server, &globex, "invoice", 1)
            .await
            .total_hits,
        1
    );
    let status = server
        .client()
        .await
        .search(authed(search_request("crushed"), Some(&acme)))
        .await
        .expect_err("acme's store is damaged");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("tenant acme cannot be opened"),
        "{status:?}"
    );
    assert!(server.log_text().contains("cannot open tenant"));

    // Another call at once gets the same answer without an open (a broken
    // tenant is tried again at most every 2 s).
    let again = server
        .client()
        .await
        .search(authed(search_request("crushed"), Some(&acme)))
        .await
        .expect_err("acme's store is still damaged");
    assert!(again.message().contains("at most every 2 s"), "{again:?}");

    std::fs::write(&store, &good).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let searched = server
            .client()
            .await
            .search(authed(search_request("crushed"), Some(&acme)))
            .await;
        match searched {
            Ok(found) if found.get_ref().total_hits == 1 => break,
            Ok(_) => {}
            Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        }
        assert!(Instant::now() < deadline, "acme not served once repaired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A call without a valid key is refused from its headers: its body is not
/// read (a probe's undecodable body got INVALID_ARGUMENT instead of
/// UNAUTHENTICATED, and an idle 16 MiB upload held the request byte budget
/// that callers with keys needed).
#[tokio::test]
async fn a_call_without_a_key_is_refused_before_its_body() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let admin = add_key(&data, "acme", &["admin"]);
    let server = TestServer::spawn_in(&data, &["--max-inflight-request-mb", "17"]).await;
    // Invalid UTF-8 in a string field: only the headers can have been
    // looked at for the answer to be UNAUTHENTICATED.
    use crate::helpers::{RawFeedback, RawIngestRequest};
    let garbage = RawIngestRequest {
        items: vec![RawFeedback {
            id: "bad-utf8".into(),
            text: vec![0x66, 0xff, 0xfe],
        }],
    };
    let send = |token: Option<String>| {
        let garbage = garbage.clone();
        let server = &server;
        async move {
            let mut grpc = tonic::client::Grpc::new(server.channel().await);
            grpc.ready().await.unwrap();
            grpc.unary::<_, pb::IngestResponse, _>(
                authed(garbage, token.as_deref()),
                http::uri::PathAndQuery::from_static("/verbatim.v1.FeedbackService/Ingest"),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .unwrap_err()
        }
    };
    for token in [None, Some(format!("vb_{}_AAAA", "0123456789ab"))] {
        let status = send(token).await;
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    // With a key, the same body is the request's fault.
    let status = send(Some(admin)).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    // Health needs no key.
    assert_eq!(
        server.health().await,
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
}

#[tokio::test]
async fn keys_change_without_a_restart() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let first = add_key(&data, "default", &["read"]);
    let server = TestServer::spawn_in(&data, &[]).await;
    let status = |token: String| {
        let server = &server;
        async move { call(server, "Stats", Some(&token)).await }
    };
    assert_eq!(status(first.clone()).await, Code::Ok);

    let until = |want: Code, token: String| {
        let status = &status;
        async move {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let code = status(token.clone()).await;
                if code == want {
                    return;
                }
                assert!(Instant::now() < deadline, "still {code:?}, want {want:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let second = add_key(&data, "default", &["read"]);
    until(Code::Ok, second.clone()).await;
    keys(&data, &["revoke", &key_id(&first)]);
    until(Code::Unauthenticated, first.clone()).await;
    // Rotation: a new token with the same tenant and roles, the old one revoked.
    let output = keys(&data, &["rotate", &key_id(&second)]);
    let third = output.lines().last().unwrap().to_string();
    assert!(output.contains(&format!("revoked the key it replaces: {}", key_id(&second))));
    until(Code::Ok, third.clone()).await;
    until(Code::Unauthenticated, second.clone()).await;
    // `keys list` shows ids, tenants, roles and status, never a token.
    let list = keys(&data, &["list"]);
    for token in [&first, &second, &third] {
        assert!(list.contains(&key_id(token)), "{list}");
        assert!(!list.contains(&token[16..]), "a token in `keys list`");
    }
    assert_eq!(list.matches("revoked").count(), 2, "{list}");
    let file = std::fs::read_to_string(data.join("keys.toml")).unwrap();
    assert!(!file.contains(&third[16..]));
}

#[tokio::test]
async fn cli_sends_the_token_and_explains_a_refusal() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let token = add_key(&data, "default", &["read"]);
    let server = TestServer::spawn_in(&data, &[]).await;
    let addr = format!("http://{}", server.addr);
    let run = |token: Option<&str>| {
        let mut command = Command::new(BIN);
        command.args(["search", "--server", &addr, "anything"]);
        command.env_remove("VERBATIM_TOKEN");
        if let Some(token) = token {
            command.env("VERBATIM_TOKEN", token);
        }
        command.output().unwrap()
    };
    let ok = run(Some(&token));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let refused = run(None);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("missing API key"), "{stderr}");
}

#[test]
fn no_keys_on_a_public_address_is_refused() {
    let temp = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--analysis",
            "off",
            "--data-dir",
        ])
        .arg(temp.path().join("data"))
        .env_remove("VERBATIM_AUTH")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no API keys") && stderr.contains("--auth off"),
        "{stderr}"
    );
}

#[tokio::test]
async fn anonymous_local_use_says_so_loudly() {
    let server = TestServer::spawn().await;
    assert!(server.log_text().contains("AUTHENTICATION IS OFF"));
    assert_eq!(call(&server, "Stats", None).await, Code::Ok);
}

/// Health follows every tenant's store, not only the default one's (a full
/// disk refused a tenant's writes while health said SERVING), and a tenant
/// first opened while the disk is full opens once there is room again (a
/// half-opened tenant kept its store's file lock: "in use by another
/// process" until a restart).
#[tokio::test]
async fn every_tenant_counts_for_health_on_a_full_disk() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let Some(disk) = crate::helpers::Tmpfs::mount(24) else {
        return;
    };
    let data = disk.path().join("data");
    let acme = add_key(&data, "acme", &["admin"]);
    let globex = add_key(&data, "globex", &["admin"]);
    let server =
        TestServer::spawn_in(&data, &["--index-memory-mb", "16", "--index-threads", "1"]).await;
    assert_eq!(
        ingest_as(&server, &acme, vec![item("a-0", "first parcel")])
            .await
            .accepted,
        1
    );
    let filler = disk.fill();
    let mut client = server.client().await;
    let text = "lorem ipsum dolor sit amet ".repeat(20);
    let mut refused = None;
    for n in 0..400 {
        let items = (0..10)
            .map(|i| item(&format!("a-{n}-{i}"), &text))
            .collect();
        let request = authed(
            pb::IngestRequest {
                items,
                ..Default::default()
            },
            Some(&acme),
        );
        if let Err(status) = client.ingest(request).await {
            refused = Some(status);
            break;
        }
    }
    let refused = refused.expect("a full disk refuses acme's writes");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    server.health_becomes(ServingStatus::NotServing).await;
    // globex's first call opens its store on the full disk: refused, or
    // (if it fits) stored.
    let globex_item = |id: &str| {
        authed(
            pb::IngestRequest {
                items: vec![item(id, "globex invoice")],
                ..Default::default()
            },
            Some(&globex),
        )
    };
    if let Err(status) = client.ingest(globex_item("g-0")).await {
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
    std::fs::remove_file(&filler).unwrap();
    server
        .health_becomes_within(ServingStatus::Serving, Duration::from_secs(20))
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match client.ingest(globex_item("g-1")).await {
            Ok(response) => {
                assert_eq!(response.into_inner().accepted, 1);
                break;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(
                    Instant::now() < deadline,
                    "globex still refused once there is room: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    assert_eq!(
        search_until_as(&server, &globex, "invoice", 1)
            .await
            .total_hits,
        1
    );
}

/// Reproduction (36th session probe): a key added to a server that was
/// anonymous only because it started without keys was ignored: calls
/// without a key went on, and the new read-only key of tenant acme could
/// ingest, into the default tenant. Now the first key turns keys on, as a
/// restart with it would; `--auth off` stays anonymous on purpose.
#[tokio::test]
async fn a_key_added_to_a_keyless_server_turns_keys_on() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let server = TestServer::spawn_in(&data, &[]).await;
    assert_eq!(call(&server, "Stats", None).await, Code::Ok);
    let reader = add_key(&data, "acme", &["read"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while call(&server, "Stats", None).await != Code::Unauthenticated {
        assert!(Instant::now() < deadline, "still anonymous");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Logged as the keys take effect: the line may reach the log reader
    // just after the first refused call.
    server
        .wait_for_log("API keys are required from now on", Duration::from_secs(5))
        .await;
    assert_eq!(call(&server, "Stats", Some(&reader)).await, Code::Ok);
    assert_eq!(
        call(&server, "Ingest", Some(&reader)).await,
        Code::PermissionDenied
    );
    // The scheme is case-insensitive; another scheme says so.
    let mut client = server.client().await;
    let mut request = tonic::Request::new(pb::StatsRequest::default());
    let value = format!("BEARER {reader}");
    request
        .metadata_mut()
        .insert("authorization", value.parse().unwrap());
    client.stats(request).await.expect("BEARER is Bearer");
    let mut request = tonic::Request::new(pb::StatsRequest::default());
    request
        .metadata_mut()
        .insert("authorization", format!("Basic {reader}").parse().unwrap());
    let status = client.stats(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("scheme"), "{status:?}");
}

/// Reproduction (36th session probe): a key revoked while a stream was
/// open went on writing through it for as long as the stream lasted. Now
/// each message checks the key again: the stream ends UNAUTHENTICATED at
/// the first message after the revocation, which is not stored.
#[tokio::test]
async fn a_revoked_key_ends_its_open_stream() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let ingest = add_key(&data, "acme", &["ingest"]);
    let admin = add_key(&data, "acme", &["admin"]);
    let server = TestServer::spawn_in(&data, &[]).await;
    let mut client = server.client().await;
    let (send, receive) = tokio::sync::mpsc::channel(4);
    let message = |id: &str| pb::IngestRequest {
        items: vec![item(id, "streamed after the key was revoked?")],
        ..Default::default()
    };
    send.send(message("st-0")).await.unwrap();
    let mut acks = client
        .ingest_stream(authed(
            tokio_stream::wrappers::ReceiverStream::new(receive),
            Some(&ingest),
        ))
        .await
        .expect("stream opened")
        .into_inner();
    let first = acks.message().await.expect("first ack").expect("an ack");
    assert_eq!(first.accepted, 1);

    keys(&data, &["revoke", &key_id(&ingest)]);
    // Once the server has re-read the file, new calls are refused...
    let deadline = Instant::now() + Duration::from_secs(5);
    while call(&server, "Ingest", Some(&ingest)).await != Code::Unauthenticated {
        assert!(Instant::now() < deadline, "the key still works");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...and so is the open stream's next message.
    send.send(message("st-1")).await.unwrap();
    let status = acks.message().await.expect_err("the stream ends");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let found = client
        .get(authed(
            pb::GetRequest {
                ids: vec!["st-0".into(), "st-1".into()],
                ..Default::default()
            },
            Some(&admin),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.missing_ids, vec!["st-1".to_string()]);
}
