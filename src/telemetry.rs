//! Prometheus metrics, served as `GET /metrics` on the admin listener (no token, like `/healthz`).
//!
//! Every [`Service`](crate::service::Service) has a registry of its own instead of the
//! process-wide `metrics` recorder, so two servers in one process (the tests do that) count apart.
//! The read path holds its counters as handles resolved once, at start-up: counting a response
//! is an atomic add, with no label lookup. No label ever carries a key, a tenant or a session id.

use metrics::{Counter, Gauge, Key, KeyName, Label, Level, Metadata, Recorder, SharedString};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

use crate::vendor::{ApiId, PublicError};

/// The `Content-Type` of the exposition format `render` writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const VENDOR_REQUESTS: &str = "sessiond_vendor_requests_total";
const VENDOR_STORE_READS: &str = "sessiond_vendor_store_reads_total";
const ADMIN_REQUESTS: &str = "sessiond_admin_requests_total";
const CACHE_BYTES: &str = "sessiond_session_cache_bytes";
const CACHE_ENTRIES: &str = "sessiond_session_cache_entries";
const CACHE_CAPACITY: &str = "sessiond_session_cache_capacity_bytes";
const BUILD_INFO: &str = "sessiond_build_info";
const RSS: &str = "process_resident_memory_bytes";

/// The `api` label of requests to paths outside every api's prefix.
const NO_API: &str = "none";

/// The `metrics` metadata of every series (the Prometheus recorder ignores it).
static METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, None);

/// One service's metrics.
pub struct Telemetry {
    recorder: PrometheusRecorder,
    /// Responses of each api's vendor route, indexed like [`ApiId::ALL`].
    vendor: Vec<Outcomes>,
    /// 404s to paths that name no api.
    unrouted: Counter,
    /// GETs that read the store for their session, indexed like [`ApiId::ALL`].
    store_reads: Vec<Counter>,
    cache_bytes: Gauge,
    cache_entries: Gauge,
    cache_capacity: Gauge,
    rss: Gauge,
}

/// The counters of one api's vendor responses: one per outcome, each labelled with the status
/// code the vendor's contract gives it. Slot 0 is `ok`; an error's slot is 1 + its place in
/// [`PublicError::ALL`] (`error_slot`, a match rather than a search on the read path).
#[derive(Clone)]
pub struct Outcomes {
    /// `[ok, PublicError::ALL...]`.
    counters: [Counter; 1 + PublicError::ALL.len()],
}

impl Outcomes {
    /// Counts one answer.
    pub fn count(&self, outcome: Result<(), PublicError>) {
        let slot = match outcome {
            Ok(()) => 0,
            Err(kind) => 1 + error_slot(kind),
        };
        self.counters[slot].increment(1);
    }
}

fn error_slot(kind: PublicError) -> usize {
    match kind {
        PublicError::MissingCredential => 0,
        PublicError::InvalidCredential => 1,
        PublicError::MalformedId => 2,
        PublicError::NotFound => 3,
        PublicError::MethodNotAllowed => 4,
        PublicError::RouteNotFound => 5,
        PublicError::Internal => 6,
    }
}

fn error_label(kind: PublicError) -> &'static str {
    match kind {
        PublicError::MissingCredential => "missing_credential",
        PublicError::InvalidCredential => "invalid_credential",
        PublicError::MalformedId => "malformed_id",
        PublicError::NotFound => "not_found",
        PublicError::MethodNotAllowed => "method_not_allowed",
        PublicError::RouteNotFound => "route_not_found",
        PublicError::Internal => "internal",
    }
}

fn api_slot(api: ApiId) -> usize {
    ApiId::ALL
        .iter()
        .position(|a| *a == api)
        .expect("ApiId::ALL lists every api")
}

impl Telemetry {
    /// A registry holding every series the read path counts (at zero), described for `# HELP`.
    pub fn new(cache_capacity_bytes: u64) -> Telemetry {
        let recorder = PrometheusBuilder::new().build_recorder();
        describe(
            &recorder,
            VENDOR_REQUESTS,
            true,
            "Responses on the vendor routes, by api, outcome and HTTP status (api=\"none\": paths under no api's prefix).",
        );
        describe(
            &recorder,
            VENDOR_STORE_READS,
            true,
            "Vendor-route GETs that read the store for their session (not in the session cache, or cached for another tenant).",
        );
        describe(
            &recorder,
            ADMIN_REQUESTS,
            true,
            "Responses of the admin listener, by method, route template and HTTP status.",
        );
        describe(
            &recorder,
            CACHE_BYTES,
            false,
            "Bytes held by the session cache.",
        );
        describe(
            &recorder,
            CACHE_ENTRIES,
            false,
            "Sessions held by the session cache.",
        );
        describe(
            &recorder,
            CACHE_CAPACITY,
            false,
            "The session cache's bound in bytes (--cache-mb).",
        );
        describe(
            &recorder,
            BUILD_INFO,
            false,
            "Always 1; the label says which sessiond this is.",
        );
        describe(
            &recorder,
            RSS,
            false,
            "Resident memory of the process in bytes.",
        );

        let vendor = ApiId::ALL
            .iter()
            .map(|&api| {
                let profile = api.profile();
                let counter = |outcome: &'static str, status: u16| {
                    vendor_counter(&recorder, api.as_str(), outcome, status)
                };
                Outcomes {
                    counters: std::array::from_fn(|slot| match slot {
                        0 => counter("ok", 200),
                        _ => {
                            let kind = PublicError::ALL[slot - 1];
                            counter(error_label(kind), profile.error(kind).status)
                        }
                    }),
                }
            })
            .collect();
        let unrouted = vendor_counter(
            &recorder,
            NO_API,
            error_label(PublicError::RouteNotFound),
            404,
        );
        let store_reads = ApiId::ALL
            .iter()
            .map(|api| {
                recorder.register_counter(
                    &Key::from_parts(VENDOR_STORE_READS, vec![Label::new("api", api.as_str())]),
                    &METADATA,
                )
            })
            .collect();
        let gauge = |name: &'static str| recorder.register_gauge(&Key::from_name(name), &METADATA);
        let telemetry = Telemetry {
            cache_bytes: gauge(CACHE_BYTES),
            cache_entries: gauge(CACHE_ENTRIES),
            cache_capacity: gauge(CACHE_CAPACITY),
            rss: gauge(RSS),
            recorder,
            vendor,
            unrouted,
            store_reads,
        };
        telemetry.cache_capacity.set(cache_capacity_bytes as f64);
        telemetry
            .recorder
            .register_gauge(
                &Key::from_parts(
                    BUILD_INFO,
                    vec![Label::new("version", env!("CARGO_PKG_VERSION"))],
                ),
                &METADATA,
            )
            .set(1.0);
        telemetry
    }

    /// The counters of `api`'s vendor responses.
    pub fn vendor(&self, api: ApiId) -> Outcomes {
        self.vendor[api_slot(api)].clone()
    }

    /// Counts a 404 to a path that names no api.
    pub fn count_unrouted(&self) {
        self.unrouted.increment(1);
    }

    /// Counts a GET of `api` that read the store.
    pub fn count_store_read(&self, api: ApiId) {
        self.store_reads[api_slot(api)].increment(1);
    }

    /// Counts one response of the admin listener. `route` is the matched route template. A
    /// method other than HTTP's registered ones is counted as `other`: a label per method a
    /// client makes up (no token is needed to be counted) would grow the metrics without bound.
    pub fn count_admin(&self, method: &str, route: &str, status: u16) {
        const KNOWN: [&str; 9] = [
            "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
        ];
        let method = KNOWN.into_iter().find(|&m| m == method).unwrap_or("other");
        let labels = vec![
            Label::new("method", method),
            Label::new("route", route.to_owned()),
            Label::new("status", status.to_string()),
        ];
        self.recorder
            .register_counter(&Key::from_parts(ADMIN_REQUESTS, labels), &METADATA)
            .increment(1);
    }

    /// The exposition text, with the gauges read now: the session cache's `(bytes, entries)`
    /// and the process's resident memory.
    pub fn render(&self, cache_usage: (u64, usize)) -> String {
        self.cache_bytes.set(cache_usage.0 as f64);
        self.cache_entries.set(cache_usage.1 as f64);
        if let Some(rss) = resident_bytes() {
            self.rss.set(rss as f64);
        }
        self.recorder.handle().render()
    }
}

fn describe(recorder: &PrometheusRecorder, name: &'static str, counter: bool, help: &'static str) {
    let (name, help) = (KeyName::from(name), SharedString::from(help));
    if counter {
        recorder.describe_counter(name, None, help);
    } else {
        recorder.describe_gauge(name, None, help);
    }
}

fn vendor_counter(
    recorder: &PrometheusRecorder,
    api: &'static str,
    outcome: &'static str,
    status: u16,
) -> Counter {
    let labels = vec![
        Label::new("api", api),
        Label::new("outcome", outcome),
        Label::new("status", status.to_string()),
    ];
    recorder.register_counter(&Key::from_parts(VENDOR_REQUESTS, labels), &METADATA)
}

/// `VmRSS` of `/proc/self/status`, where there is one (Linux).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn error_slots_follow_the_order_of_public_error_all() {
        for (slot, kind) in PublicError::ALL.into_iter().enumerate() {
            assert_eq!(error_slot(kind), slot, "{kind:?}");
        }
    }

    #[test]
    fn every_vendor_series_starts_at_zero_with_the_contracts_status() {
        let t = Telemetry::new(1 << 20);
        let text = t.render((0, 0));
        // Anam answers a missing credential with 401, Alcamine's unknown route with 404.
        for (api, outcome, status) in [
            ("anam", "ok", 200),
            (
                "anam",
                "missing_credential",
                ApiId::Anam
                    .profile()
                    .error(PublicError::MissingCredential)
                    .status,
            ),
            ("alcamine", "route_not_found", 404),
            ("none", "route_not_found", 404),
        ] {
            let series = format!(
                "{VENDOR_REQUESTS}{{api=\"{api}\",outcome=\"{outcome}\",status=\"{status}\"}}"
            );
            assert_eq!(value(&text, &series), Some(0.0), "{series} in\n{text}");
        }
        assert_eq!(value(&text, CACHE_CAPACITY), Some(1_048_576.0));
    }

    #[test]
    fn made_up_methods_share_one_series() {
        let t = Telemetry::new(0);
        for method in ["FOO1", "FOO2", &"X".repeat(5000), "GET"] {
            t.count_admin(method, "/admin/v1/{api}/tenants", 405);
        }
        let text = t.render((0, 0));
        let series = |m: &str| {
            format!(
                r#"{ADMIN_REQUESTS}{{method="{m}",route="/admin/v1/{{api}}/tenants",status="405"}}"#
            )
        };
        assert_eq!(value(&text, &series("other")), Some(3.0), "{text}");
        assert_eq!(value(&text, &series("GET")), Some(1.0), "{text}");
        assert!(!text.contains("FOO") && !text.contains("XXXX"), "{text}");
    }

    #[test]
    fn counts_land_on_their_own_series_and_registries_do_not_share() {
        let (a, b) = (Telemetry::new(0), Telemetry::new(0));
        let anam = a.vendor(ApiId::Anam);
        anam.count(Ok(()));
        anam.count(Ok(()));
        anam.count(Err(PublicError::NotFound));
        a.count_store_read(ApiId::Anam);
        a.count_admin("POST", "/admin/v1/{api}/tenants", 201);
        let text = a.render((10, 1));
        let not_found = ApiId::Anam.profile().error(PublicError::NotFound).status;
        let ok = format!(r#"{VENDOR_REQUESTS}{{api="anam",outcome="ok",status="200"}}"#);
        let nf =
            format!(r#"{VENDOR_REQUESTS}{{api="anam",outcome="not_found",status="{not_found}"}}"#);
        assert_eq!(value(&text, &ok), Some(2.0));
        assert_eq!(value(&text, &nf), Some(1.0));
        assert_eq!(
            value(&text, &format!(r#"{VENDOR_STORE_READS}{{api="anam"}}"#)),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                &format!(
                    r#"{ADMIN_REQUESTS}{{method="POST",route="/admin/v1/{{api}}/tenants",status="201"}}"#
                )
            ),
            Some(1.0)
        );
        assert_eq!(value(&text, CACHE_BYTES), Some(10.0));
        assert_eq!(value(&b.render((0, 0)), &ok), Some(0.0));
    }
}
