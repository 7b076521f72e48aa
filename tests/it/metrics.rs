//! `GET /metrics` on the admin listener: every vendor answer counted once, under its api, its
//! outcome and the status the vendor's contract gives it; the GETs that read the store; admin
//! responses by route template; never a key, a tenant or a session id.

use std::collections::HashMap;

use reqwest::Method;
use sessiond::ApiId;
use sessiond::vendor::PublicError;

use crate::common::{Client, TestServer, vendor_path};

per_api!(vendor_answers_are_counted_once_under_their_outcome);
per_backend!(metrics_need_no_token_and_name_no_secret_tenant_or_id);

/// The samples of a scrape: series (name and labels, as written) → value.
struct Scrape(HashMap<String, f64>);

impl Scrape {
    async fn of(server: &Client) -> Scrape {
        let reply = Client::send(server.http().get(server.admin_url("/metrics"))).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(
            reply.content_type(),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        Scrape(parse(&reply.text()))
    }

    fn get(&self, series: &str) -> f64 {
        *self
            .0
            .get(series)
            .unwrap_or_else(|| panic!("no series {series} in {:?}", self.0.keys()))
    }

    fn vendor(&self, api: &str, outcome: &str, status: u16) -> f64 {
        self.get(&format!(
            r#"sessiond_vendor_requests_total{{api="{api}",outcome="{outcome}",status="{status}"}}"#
        ))
    }

    fn store_reads(&self, api: ApiId) -> f64 {
        self.get(&format!(
            r#"sessiond_vendor_store_reads_total{{api="{api}"}}"#
        ))
    }
}

/// Parses the text exposition format: `# HELP`/`# TYPE` comments, blank lines, and samples
/// `name{labels} value`, one per line; each series once.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a value: {line:?}"));
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "{series} twice"
        );
    }
    samples
}

async fn vendor_answers_are_counted_once_under_their_outcome(api: ApiId) {
    let (server, session) = TestServer::with_one_session(api).await;
    let profile = api.profile();
    let status = |kind: PublicError| profile.error(kind).status;
    let name = api.as_str();
    let before = Scrape::of(&server).await;

    for _ in 0..3 {
        server
            .public_get(api, &session.id, Some(&session.key))
            .await
            .expect(200);
    }
    server.public_get(api, &session.id, None).await;
    server
        .public_get(api, &session.id, Some(&format!("sk_{api}_wrong")))
        .await;
    server
        .public_get(api, &profile.new_session_id(), Some(&session.key))
        .await;
    server
        .public_request(
            api,
            Method::DELETE,
            &vendor_path(api, &session.id),
            Some(&session.key),
        )
        .await;
    server
        .public_raw(Method::GET, &format!("/{api}/nope"))
        .await;
    server.public_raw(Method::GET, "/nope").await;

    let after = Scrape::of(&server).await;
    let counted = |outcome: &str, status: u16| {
        after.vendor(name, outcome, status) - before.vendor(name, outcome, status)
    };
    assert_eq!(counted("ok", 200), 3.0);
    for (outcome, kind, times) in [
        ("missing_credential", PublicError::MissingCredential, 1.0),
        ("invalid_credential", PublicError::InvalidCredential, 1.0),
        ("not_found", PublicError::NotFound, 1.0),
        ("method_not_allowed", PublicError::MethodNotAllowed, 1.0),
        ("route_not_found", PublicError::RouteNotFound, 1.0),
        ("malformed_id", PublicError::MalformedId, 0.0),
        ("internal", PublicError::Internal, 0.0),
    ] {
        assert_eq!(counted(outcome, status(kind)), times, "{api} {outcome}");
    }
    assert_eq!(
        after.vendor("none", "route_not_found", 404)
            - before.vendor("none", "route_not_found", 404),
        1.0
    );
    // Every other api's series stayed where they were.
    for other in ApiId::ALL.into_iter().filter(|a| *a != api) {
        assert_eq!(
            after.vendor(other.as_str(), "ok", 200),
            before.vendor(other.as_str(), "ok", 200)
        );
        assert_eq!(after.store_reads(other), before.store_reads(other));
    }
    // The unknown id read the store (there is no negative cache), and so did at least the first
    // of the three GETs (a create leaves nothing in the cache). On SQLite nothing else evicts the
    // session, so the other two were cache hits; on PostgreSQL the create's own notification may
    // evict it once more, after the first GET filled it.
    let reads = after.store_reads(api) - before.store_reads(api);
    match server.storage().backend() {
        crate::common::Backend::Sqlite => assert_eq!(reads, 2.0),
        crate::common::Backend::Postgres => assert!((2.0..=3.0).contains(&reads), "{reads}"),
    }
}

async fn metrics_need_no_token_and_name_no_secret_tenant_or_id() {
    let (server, session) = TestServer::with_one_session(ApiId::Anam).await;
    server
        .public_get(ApiId::Anam, &session.id, Some(&session.key))
        .await
        .expect(200);
    let scrape = Scrape::of(&server).await;
    let text = scrape.0.keys().cloned().collect::<Vec<_>>().join("\n");
    for secret in [
        session.key.as_str(),
        &session.id,
        &session.tenant,
        crate::common::ADMIN_TOKEN,
    ] {
        assert!(!text.contains(secret), "{secret} in the metrics");
    }
    // The admin requests of the set-up, counted by route template.
    assert!(
        scrape.get(
            r#"sessiond_admin_requests_total{method="POST",route="/admin/v1/{api}/tenants/{tenant}/sessions",status="201"}"#
        ) >= 1.0
    );
    assert!(scrape.get("sessiond_session_cache_entries") >= 1.0);
    assert!(scrape.get("sessiond_session_cache_bytes") >= session.body.len() as f64);
    assert!(scrape.get("process_resident_memory_bytes") > 0.0);
    assert_eq!(
        scrape.get(&format!(
            r#"sessiond_build_info{{version="{}"}}"#,
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
}
