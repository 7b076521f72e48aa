//! Durable-write load generator for `bench/run.sh`: N concurrent clients POST a session document
//! to the admin API for a fixed time and count the acknowledged creates (HTTP 201). sessiond
//! answers 201 only after the group commit that holds the write (`synchronous = FULL`), so
//! 201s per second is the durable create rate.
//!
//! Usage: `loadgen_writes --url URL --token TOKEN [--body JSON] [--concurrency N] [--seconds S]`
//! Prints one line: `created=… errors=… seconds=… rate=… p50_ms=… p99_ms=… max_ms=…`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn usage() -> ! {
    eprintln!(
        "usage: loadgen_writes --url URL --token TOKEN [--body JSON] [--concurrency N] [--seconds S]"
    );
    std::process::exit(2)
}

#[derive(Default)]
struct Tally {
    created: u64,
    errors: u64,
    first_error: Option<String>,
    latencies_us: Vec<u64>,
}

#[tokio::main]
async fn main() {
    let mut url = None;
    let mut token = None;
    let mut body = String::from("{}");
    let mut concurrency: usize = 64;
    let mut seconds: f64 = 5.0;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--url" => url = Some(v),
            "--token" => token = Some(v),
            "--body" => body = v,
            "--concurrency" => concurrency = v.parse().unwrap_or_else(|_| usage()),
            "--seconds" => seconds = v.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    let (Some(url), Some(token)) = (url, token) else {
        usage()
    };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .expect("http client");
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (client, url, token, body, stop) = (
            client.clone(),
            url.clone(),
            token.clone(),
            body.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut t = Tally::default();
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let r = client
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                match r {
                    Ok(resp) if resp.status().as_u16() == 201 => {
                        // Read the whole body: the write counts once the client has its answer.
                        let _ = resp.bytes().await;
                        t.created += 1;
                        t.latencies_us.push(t0.elapsed().as_micros() as u64);
                    }
                    Ok(resp) => {
                        t.errors += 1;
                        if t.first_error.is_none() {
                            let status = resp.status();
                            let text = resp.text().await.unwrap_or_default();
                            t.first_error = Some(format!("{status}: {text}"));
                        }
                    }
                    Err(e) => {
                        t.errors += 1;
                        if t.first_error.is_none() {
                            t.first_error = Some(e.to_string());
                        }
                    }
                }
            }
            t
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Tally::default();
    for task in tasks {
        let t = task.await.expect("client task");
        all.created += t.created;
        all.errors += t.errors;
        all.first_error = all.first_error.or(t.first_error);
        all.latencies_us.extend(t.latencies_us);
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.latencies_us.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((all.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        all.latencies_us[i] as f64 / 1000.0
    };
    if let Some(e) = &all.first_error {
        eprintln!("loadgen_writes: first error: {e}");
    }
    println!(
        "created={} errors={} seconds={:.3} rate={:.0} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        all.created,
        all.errors,
        elapsed,
        all.created as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        pct(1.0),
    );
}
