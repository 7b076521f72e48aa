//! Fixed-rate (open-loop) HTTP/1.1 GET load generator for `bench/run.sh`, built so that the
//! latency percentiles it reports are the server's, not its own.
//!
//! Why not oha: `oha -q RATE --latency-correction` at 60 000 req/s keeps its core 83-90 % busy and
//! sends on tokio's 1 ms timer, so the p50 and p99 it reports there are mostly its own delays (the
//! server's service time is ~9 µs). This is one thread without an async runtime: C nonblocking
//! keep-alive connections (TCP_NODELAY) polled with epoll, every request pre-built at start, at
//! most one request in flight per connection (no pipelining).
//!
//! Schedule (wrk2's semantics): request k is due at `t0 + k / RATE`. A due request goes out on the
//! connection idle the longest; when none is idle it waits in a FIFO and goes out as soon as one
//! is. Its latency runs from its due time to the moment its whole response was read, so waiting in
//! the generator for a connection counts like waiting in the server (the coordinated-omission
//! correction); the send lag (actual send − due) is reported beside it.
//!
//! Timing: the loop polls epoll without sleeping from `--spin-us` (default 1000) before each due
//! time and while any answer is awaited; otherwise it sleeps on a timerfd (nanosecond resolution,
//! unlike epoll_wait's milliseconds). A sleeping core can wake tens of µs to milliseconds late
//! (measured on a KVM guest), which would delay sends and the reading of answers; so at ≥ 1000
//! req/s the generator keeps its core 100 % busy and `cpu_s` ≈ `seconds`. Its real work is
//! `busy_s`: the time spent sending and reading, without idle polls. `--spin-us 0` always sleeps
//! (precise only to the wake-up latency).
//!
//! The first `--warmup-seconds` (default 1) run the same schedule unrecorded. Requests due in the
//! measured `--seconds` are recorded; after them, the backlog still goes out and answers are
//! awaited for up to `--drain-seconds` (default 2); the measured requests still unanswered then
//! are `unfinished` (so are those whose connection failed).
//!
//! Usage: `loadgen_fixed --rate R --seconds S (--urls-from-file FILE | --url URL)
//! [--connections C] [-H 'Name: value']... [--warmup-seconds W] [--drain-seconds D] [--spin-us U]
//! [--seed S] [--latencies-out FILE]`, or `loadgen_fixed pool FILE...`
//!
//! Each request GETs a random line of FILE (full `http://HOST:PORT/path` URLs, all with one
//! host:port) with the `-H` headers. The sequence of lines follows `--seed` (default 0): one seed,
//! one sequence, so two servers can be sent the same requests; two runs against one server with a
//! cache want two seeds, or the second asks for what the first brought into it. Responses are
//! framed by Content-Length or chunked encoding; a server that closes a connection gets a new one
//! (`reconnects`). Prints one JSON line:
//! `{"rate","seconds","connections","requests","unfinished","achieved_rps","status":{"200":n,…},
//! "errors","reconnects","sent","latency_ms":{"p50","p90","p99","p99.9","max"},
//! "send_lag_ms":{"p50","p99","max"},"cpu_s","busy_s","stalls":{"count","total_ms","max_ms"}}`:
//! `requests` is the answered requests due
//! in the measured part (the sample of `status` and of the percentiles, exact by nearest rank);
//! `achieved_rps` the answers read during the measured part per second; `errors` (each described
//! on stderr, the first ten in full), `reconnects` and `sent` (requests sent) cover the whole run,
//! warm-up included; `cpu_s` is this process's user + system CPU during the measured part;
//! `stalls` are the loop's iterations during the measured part that took ≥ 0.5 ms without
//! sleeping: this process's core was taken from it, and every request due meanwhile counts the
//! stall in its latency, so a run with stalls measures the host as much as the server. Exits 1
//! when no measured request was answered, 2 on bad arguments.
//!
//! `--latencies-out FILE` also writes the latency of every measured request to FILE (nanoseconds,
//! little-endian u64, in ascending order). `loadgen_fixed pool FILE...` reads such files and
//! prints the percentiles of all their latencies together,
//! `{"files","requests","latency_ms":{"p50","p90","p99","p99.9","max"}}`: the p99 of several
//! alternated runs of one server is then the p99 of all their requests, rather than a median of
//! per-run p99s (each set by a few hundred requests, so by whichever host stall hit that run).

use std::collections::{BTreeMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::time::{TimeSpec, TimeValLike};
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use serde_json::{Value, json};

const USAGE: &str = "usage: loadgen_fixed --rate R --seconds S (--urls-from-file FILE | --url URL) \
                     [--connections C] [-H 'Name: value']... [--warmup-seconds W] \
                     [--drain-seconds D] [--spin-us U] [--seed S] [--latencies-out FILE]\n\
                     or: loadgen_fixed pool FILE...";

/// Read buffer per connection. Bodies stream through it; only a response head or a chunk-size
/// line has to fit whole.
const READ_BUF: usize = 64 * 1024;
/// The epoll token of the timer; connections use their index.
const TIMER: u64 = u64::MAX;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a connection that could not reconnect waits before the next attempt.
const RETRY_AFTER: Duration = Duration::from_millis(100);
/// A loop iteration that did not sleep and took this long was stalled: sending and reading the
/// answers of all 64 connections once takes well under it.
const STALL: Duration = Duration::from_micros(500);
/// Errors described on stderr one by one; the rest are only counted.
const ERRORS_SHOWN: u64 = 10;

fn usage() -> ! {
    eprintln!("{USAGE}");
    std::process::exit(2)
}

fn fail(msg: &str) -> ! {
    eprintln!("loadgen_fixed: {msg}");
    std::process::exit(1)
}

struct Args {
    rate: f64,
    seconds: f64,
    connections: usize,
    urls_file: Option<String>,
    url: Option<String>,
    headers: Vec<String>,
    warmup: f64,
    drain: f64,
    spin: Duration,
    seed: u64,
    latencies_out: Option<String>,
}

fn parse_args() -> Args {
    let mut a = Args {
        rate: 0.0,
        seconds: 0.0,
        connections: 64,
        urls_file: None,
        url: None,
        headers: Vec::new(),
        warmup: 1.0,
        drain: 2.0,
        spin: Duration::from_micros(1000),
        seed: 0,
        latencies_out: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let v = args.next().unwrap_or_else(|| usage());
        let num = |v: &str| -> f64 {
            match v.parse::<f64>() {
                Ok(x) if x.is_finite() && x >= 0.0 => x,
                _ => usage(),
            }
        };
        match flag.as_str() {
            "--rate" => a.rate = num(&v),
            "--seconds" => a.seconds = num(&v),
            "--connections" => a.connections = v.parse().unwrap_or_else(|_| usage()),
            "--urls-from-file" => a.urls_file = Some(v),
            "--url" => a.url = Some(v),
            "-H" | "--header" if v.contains(':') => a.headers.push(v),
            "--warmup-seconds" => a.warmup = num(&v),
            "--drain-seconds" => a.drain = num(&v),
            "--spin-us" => a.spin = Duration::from_secs_f64(num(&v) / 1e6),
            "--seed" => a.seed = v.parse().unwrap_or_else(|_| usage()),
            "--latencies-out" => a.latencies_out = Some(v),
            _ => usage(),
        }
    }
    if a.rate <= 0.0 || a.seconds <= 0.0 || a.connections == 0 {
        usage()
    }
    if a.urls_file.is_some() == a.url.is_some() {
        usage()
    }
    a
}

/// Every request this run can send, pre-built: one `GET` per URL, stored back to back.
struct Requests {
    addr: SocketAddr,
    bytes: Vec<u8>,
    /// `ends[i]` is where request i ends in `bytes`; it starts where request i − 1 ends.
    ends: Vec<usize>,
}

impl Requests {
    fn len(&self) -> usize {
        self.ends.len()
    }

    fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }
}

/// Splits `http://authority/path?query` into its authority and path (`/` when absent).
fn split_url(url: &str) -> Result<(&str, &str), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("{url}: no host"));
    }
    Ok((authority, path))
}

fn load_requests(args: &Args) -> Result<Requests, String> {
    let text = match (&args.urls_file, &args.url) {
        (Some(file), _) => {
            std::fs::read_to_string(file).map_err(|e| format!("reading {file}: {e}"))?
        }
        (None, Some(url)) => url.clone(),
        (None, None) => unreachable!("parse_args requires one of them"),
    };
    let has_host = args.headers.iter().any(|h| {
        h.split(':')
            .next()
            .is_some_and(|n| n.trim().eq_ignore_ascii_case("host"))
    });
    let mut headers = String::new();
    for h in &args.headers {
        headers.push_str(h.trim());
        headers.push_str("\r\n");
    }
    let mut authority: Option<&str> = None;
    let (mut bytes, mut ends) = (Vec::new(), Vec::new());
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (auth, path) = split_url(line).map_err(|e| format!("line {}: {e}", n + 1))?;
        match authority {
            None => authority = Some(auth),
            Some(first) if first != auth => {
                return Err(format!(
                    "line {}: host:port {auth} differs from {first} (all URLs must share one)",
                    n + 1
                ));
            }
            Some(_) => {}
        }
        bytes.extend_from_slice(b"GET ");
        bytes.extend_from_slice(path.as_bytes());
        bytes.extend_from_slice(b" HTTP/1.1\r\n");
        if !has_host {
            bytes.extend_from_slice(b"Host: ");
            bytes.extend_from_slice(auth.as_bytes());
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(headers.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        ends.push(bytes.len());
    }
    let authority = authority.ok_or("no URL to request (the list is empty)")?;
    let with_port = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("resolving {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("resolving {authority}: no address"))?;
    Ok(Requests { addr, bytes, ends })
}

/// xorshift64*: the URL of each request. Seeded by `--seed`, so runs with one seed pick the same
/// sequence.
struct Rng(u64);

impl Rng {
    /// The generator for `seed`: the seed's splitmix64 mix (xorshift's state must not be 0).
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)).max(1))
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32;
        ((x * n as u64) >> 32) as usize
    }
}

/// When each request is due and which ones are measured.
struct Schedule {
    t0: Instant,
    rate: f64,
    /// The first request due in the measured part.
    first_measured: u64,
    /// Requests in the whole schedule (warm-up + measured).
    total: u64,
    measure_from: Instant,
    measure_to: Instant,
    drain_to: Instant,
}

impl Schedule {
    fn new(t0: Instant, args: &Args) -> Schedule {
        let measure_from = t0 + Duration::from_secs_f64(args.warmup);
        let measure_to = measure_from + Duration::from_secs_f64(args.seconds);
        Schedule {
            t0,
            rate: args.rate,
            first_measured: (args.warmup * args.rate).ceil() as u64,
            total: ((args.warmup + args.seconds) * args.rate).ceil() as u64,
            measure_from,
            measure_to,
            drain_to: measure_to + Duration::from_secs_f64(args.drain),
        }
    }

    fn due(&self, k: u64) -> Instant {
        self.t0 + Duration::from_nanos((k as f64 * 1e9 / self.rate) as u64)
    }

    /// How many requests are due at `now`.
    fn due_count(&self, now: Instant) -> u64 {
        if now < self.t0 {
            return 0;
        }
        let elapsed = now.duration_since(self.t0).as_nanos() as f64;
        ((elapsed * self.rate / 1e9) as u64 + 1).min(self.total)
    }

    fn measured(&self, k: u64) -> bool {
        k >= self.first_measured
    }

    fn measured_count(&self) -> u64 {
        self.total - self.first_measured
    }
}

/// Where the parser of a connection is in the current response.
#[derive(Clone, Copy)]
enum Resp {
    Head,
    /// `left` bytes of the body still to come: the whole body (Content-Length), or one chunk's.
    Data {
        status: u16,
        left: u64,
        chunked: bool,
    },
    ChunkSize {
        status: u16,
    },
    ChunkEnd {
        status: u16,
    },
    Trailer {
        status: u16,
    },
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The status of a response head (status line and fields, without the blank line) and the parser
/// state of its body.
fn parse_head(head: &[u8]) -> Result<Resp, String> {
    let text = std::str::from_utf8(head).map_err(|_| "response head is not UTF-8".to_string())?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|s| s.get(2..5))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    if status < 200 {
        return Err(format!("unexpected informational response {status}"));
    }
    let (mut length, mut chunked) = (None, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<u64>()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
            if !chunked {
                return Err(format!("unsupported Transfer-Encoding {value:?}"));
            }
        }
    }
    Ok(match (chunked, length) {
        (true, _) => Resp::ChunkSize { status },
        (false, Some(left)) => Resp::Data {
            status,
            left,
            chunked: false,
        },
        (false, None) if status == 204 || status == 304 => Resp::Data {
            status,
            left: 0,
            chunked: false,
        },
        (false, None) => {
            return Err(format!(
                "{status} response with neither Content-Length nor chunked encoding \
                 (a body ended by closing the connection is not supported)"
            ));
        }
    })
}

fn parse_chunk_size(line: &[u8]) -> Result<u64, String> {
    let text = std::str::from_utf8(line).unwrap_or_default();
    let hex = text.split(';').next().unwrap_or_default().trim();
    u64::from_str_radix(hex, 16).map_err(|_| format!("bad chunk-size line {text:?}"))
}

impl Resp {
    /// Parses what it can of `data`, the unparsed bytes: how many it consumed, and the status
    /// once the response is complete (the parser is then ready for the next one).
    fn feed(&mut self, data: &[u8]) -> Result<(usize, Option<u16>), String> {
        let mut pos = 0;
        loop {
            let rest = &data[pos..];
            match *self {
                Resp::Head => {
                    let Some(end) = find(rest, b"\r\n\r\n") else {
                        return Ok((pos, None));
                    };
                    *self = parse_head(&rest[..end])?;
                    pos += end + 4;
                }
                Resp::Data {
                    status,
                    left,
                    chunked,
                } => {
                    let n = left.min(rest.len() as u64);
                    pos += n as usize;
                    if n < left {
                        *self = Resp::Data {
                            status,
                            left: left - n,
                            chunked,
                        };
                        return Ok((pos, None));
                    }
                    if !chunked {
                        *self = Resp::Head;
                        return Ok((pos, Some(status)));
                    }
                    *self = Resp::ChunkEnd { status };
                }
                Resp::ChunkSize { status } => {
                    let Some(end) = find(rest, b"\r\n") else {
                        return Ok((pos, None));
                    };
                    let size = parse_chunk_size(&rest[..end])?;
                    pos += end + 2;
                    *self = if size == 0 {
                        Resp::Trailer { status }
                    } else {
                        Resp::Data {
                            status,
                            left: size,
                            chunked: true,
                        }
                    };
                }
                Resp::ChunkEnd { status } => {
                    if rest.len() < 2 {
                        return Ok((pos, None));
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err("chunk data not followed by CRLF".to_string());
                    }
                    pos += 2;
                    *self = Resp::ChunkSize { status };
                }
                Resp::Trailer { status } => {
                    let Some(end) = find(rest, b"\r\n") else {
                        return Ok((pos, None));
                    };
                    pos += end + 2;
                    if end == 0 {
                        *self = Resp::Head;
                        return Ok((pos, Some(status)));
                    }
                }
            }
        }
    }
}

/// The request a connection is serving.
struct InFlight {
    /// Its place in the schedule.
    k: u64,
    /// Which pre-built request.
    req: usize,
    /// How many of its bytes are written.
    written: usize,
}

/// One keep-alive connection, its read buffer and response parser.
struct Conn {
    /// None while it could not reconnect.
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    /// `buf[start..filled]` is read but not yet parsed.
    start: usize,
    filled: usize,
    resp: Resp,
    inflight: Option<InFlight>,
    /// In the idle FIFO (possibly dead: the FIFO drops those when it reaches them).
    idle: bool,
    /// Registered for EPOLLOUT: a request did not fit in the socket buffer at once.
    want_out: bool,
}

/// What the run measured; `latencies_ns`, `lags_ns` and `status` are of measured requests only.
#[derive(Default)]
struct Stats {
    latencies_ns: Vec<u64>,
    lags_ns: Vec<u64>,
    status: BTreeMap<u16, u64>,
    /// Answers read during the measured part, whatever their due time.
    answered_in_window: u64,
    errors: u64,
    reconnects: u64,
    /// Requests sent over the whole run, warm-up included.
    sent: u64,
}

impl Stats {
    fn error(&mut self, msg: &str) {
        self.errors += 1;
        if self.errors <= ERRORS_SHOWN {
            eprintln!("loadgen_fixed: {msg}");
        }
    }
}

/// The measured part as the loop saw it.
#[derive(Default)]
struct Window {
    /// This process's CPU time when the measured part began and ended.
    cpu_from: Option<Duration>,
    cpu_to: Option<Duration>,
    /// Time the loop spent sending and reading in it (not polling or sleeping).
    busy: Duration,
    /// Iterations of the loop that, without sleeping, took at least `STALL`: the generator's own
    /// core was taken from it (by the host or another process) while requests fell due.
    stalls: u64,
    stalled: Duration,
    stall_max: Duration,
}

impl Window {
    fn update(&mut self, now: Instant, s: &Schedule) {
        if self.cpu_from.is_none() && now >= s.measure_from {
            self.cpu_from = Some(cpu_now());
        }
        if self.cpu_to.is_none() && now >= s.measure_to {
            self.cpu_to = Some(cpu_now());
        }
    }

    fn add_busy(&mut self, from: Instant, to: Instant) {
        if self.cpu_from.is_some() && self.cpu_to.is_none() {
            self.busy += to.saturating_duration_since(from);
        }
    }

    fn add_iteration(&mut self, from: Instant, to: Instant) {
        let took = to.saturating_duration_since(from);
        if took >= STALL && self.cpu_from.is_some() && self.cpu_to.is_none() {
            self.stalls += 1;
            self.stalled += took;
            self.stall_max = self.stall_max.max(took);
        }
    }

    fn cpu(&self) -> Duration {
        let from = self.cpu_from.unwrap_or_else(cpu_now);
        self.cpu_to.unwrap_or_else(cpu_now).saturating_sub(from)
    }
}

/// The generator: the connections, the FIFO of idle ones, the timer, and what was measured.
struct Gen {
    epoll: Epoll,
    timer: TimerFd,
    /// The instant the timer is armed to fire at, if armed.
    armed: Option<Instant>,
    spin: Duration,
    reqs: Requests,
    conns: Vec<Conn>,
    idle: VecDeque<usize>,
    dead: usize,
    retry_at: Instant,
    in_flight: usize,
    rng: Rng,
    stats: Stats,
}

fn ns(d: Duration) -> u64 {
    d.as_nanos() as u64
}

fn cpu_now() -> Duration {
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let us = u.user_time().num_microseconds() + u.system_time().num_microseconds();
            Duration::from_micros(us.max(0) as u64)
        }
        Err(e) => fail(&format!("getrusage: {e}")),
    }
}

/// Opens a keep-alive connection and registers it with epoll under `token`.
fn connect(epoll: &Epoll, addr: SocketAddr, token: usize) -> Result<TcpStream, String> {
    let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    stream
        .set_nodelay(true)
        .and_then(|()| stream.set_nonblocking(true))
        .map_err(|e| format!("setting up the connection to {addr}: {e}"))?;
    let ev = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP, token as u64);
    epoll
        .add(&stream, ev)
        .map_err(|e| format!("epoll_ctl(ADD): {e}"))?;
    Ok(stream)
}

impl Gen {
    fn new(reqs: Requests, args: &Args) -> Result<Gen, String> {
        let epoll =
            Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| format!("epoll: {e}"))?;
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .map_err(|e| format!("timerfd: {e}"))?;
        // Edge-triggered and never read: each expiry is one event, and re-arming resets it.
        let ev = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, TIMER);
        epoll
            .add(&timer, ev)
            .map_err(|e| format!("epoll_ctl(ADD timer): {e}"))?;
        let mut conns = Vec::with_capacity(args.connections);
        for i in 0..args.connections {
            conns.push(Conn {
                stream: Some(connect(&epoll, reqs.addr, i)?),
                buf: vec![0; READ_BUF],
                start: 0,
                filled: 0,
                resp: Resp::Head,
                inflight: None,
                idle: true,
                want_out: false,
            });
        }
        Ok(Gen {
            epoll,
            timer,
            armed: None,
            spin: args.spin,
            reqs,
            idle: (0..args.connections).collect(),
            conns,
            dead: 0,
            retry_at: Instant::now(),
            in_flight: 0,
            rng: Rng::new(args.seed),
            stats: Stats::default(),
        })
    }

    /// Runs the whole schedule; returns what it saw of the measured part.
    fn run(&mut self, s: &Schedule) -> Window {
        let cap = s.measured_count() as usize;
        self.stats.latencies_ns.reserve(cap);
        self.stats.lags_ns.reserve(cap);
        let mut events = vec![EpollEvent::empty(); self.conns.len() + 1];
        let mut w = Window::default();
        let mut sent: u64 = 0;
        // When the last epoll_wait returned events, if it did: handling them is work.
        let mut events_at = None;
        // When the last iteration began, if it did not sleep in epoll_wait.
        let mut spun_from = None;
        loop {
            let now = Instant::now();
            if let Some(t) = spun_from.take() {
                w.add_iteration(t, now);
            }
            if let Some(t) = events_at.take() {
                w.add_busy(t, now);
            }
            w.update(now, s);
            let due = s.due_count(now);
            let before = sent;
            while sent < due {
                let Some(i) = self.pop_idle() else { break };
                self.send(i, sent, s);
                sent += 1;
            }
            if sent > before {
                w.add_busy(now, Instant::now());
            }
            let finished = sent == s.total && self.in_flight == 0 && w.cpu_to.is_some();
            if finished || now >= s.drain_to {
                self.stats.sent = sent;
                return w;
            }
            if self.dead > 0 && now >= self.retry_at {
                self.retry_dead();
            }
            let timeout = self.timeout_until(now, self.next_wake(s, due, &w));
            if timeout == EpollTimeout::ZERO {
                spun_from = Some(now);
            }
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => fail(&format!("epoll_wait: {e}")),
            };
            if n > 0 {
                events_at = Some(Instant::now());
            }
            for ev in &events[..n] {
                if ev.data() == TIMER {
                    self.armed = None;
                    continue;
                }
                let i = ev.data() as usize;
                if ev.events().contains(EpollFlags::EPOLLOUT) {
                    self.write_some(i);
                }
                if ev.events().intersects(!EpollFlags::EPOLLOUT) {
                    // EPOLLIN, EPOLLRDHUP, EPOLLHUP, EPOLLERR: the read says which.
                    self.read_some(i, s);
                }
            }
        }
    }

    /// The next instant the loop has something to do that no socket will tell it about. `due`
    /// requests are due; a new one matters only while a connection is idle to take it.
    fn next_wake(&self, s: &Schedule, due: u64, w: &Window) -> Instant {
        let mut wake = s.drain_to;
        if due < s.total && !self.idle.is_empty() {
            wake = wake.min(s.due(due));
        }
        if w.cpu_from.is_none() {
            wake = wake.min(s.measure_from);
        }
        if w.cpu_to.is_none() {
            wake = wake.min(s.measure_to);
        }
        if self.dead > 0 {
            wake = wake.min(self.retry_at);
        }
        wake
    }

    /// The epoll timeout that wakes the loop `spin` before `wake` (through the timer) or, closer
    /// than that, does not sleep at all. Nor does it while an answer is awaited (unless `spin` is
    /// 0): a sleeping core can wake late, and the answer's time would be late with it.
    fn timeout_until(&mut self, now: Instant, wake: Instant) -> EpollTimeout {
        if self.in_flight > 0 && !self.spin.is_zero() {
            return EpollTimeout::ZERO;
        }
        let Some(fire_at) = wake.checked_sub(self.spin) else {
            return EpollTimeout::ZERO;
        };
        let sleep = fire_at.saturating_duration_since(now);
        if sleep < Duration::from_micros(1) {
            return EpollTimeout::ZERO;
        }
        if self.armed != Some(fire_at) {
            let when = Expiration::OneShot(TimeSpec::from_duration(sleep));
            if let Err(e) = self.timer.set(when, TimerSetTimeFlags::empty()) {
                fail(&format!("timerfd_settime: {e}"));
            }
            self.armed = Some(fire_at);
        }
        EpollTimeout::NONE
    }

    fn pop_idle(&mut self) -> Option<usize> {
        while let Some(i) = self.idle.pop_front() {
            self.conns[i].idle = false;
            if self.conns[i].stream.is_some() {
                return Some(i);
            }
        }
        None
    }

    fn push_idle(&mut self, i: usize) {
        if !self.conns[i].idle {
            self.conns[i].idle = true;
            self.idle.push_back(i);
        }
    }

    fn send(&mut self, i: usize, k: u64, s: &Schedule) {
        let req = self.rng.below(self.reqs.len());
        let now = Instant::now();
        if s.measured(k) {
            let lag = now.saturating_duration_since(s.due(k));
            self.stats.lags_ns.push(ns(lag));
        }
        self.conns[i].inflight = Some(InFlight { k, req, written: 0 });
        self.in_flight += 1;
        self.write_some(i);
    }

    /// Writes what the socket takes of the connection's request; asks epoll for EPOLLOUT while
    /// some of it is left.
    fn write_some(&mut self, i: usize) {
        let c = &mut self.conns[i];
        let (Some(stream), Some(f)) = (c.stream.as_mut(), c.inflight.as_mut()) else {
            return;
        };
        let req = self.reqs.get(f.req);
        let mut blocked = false;
        while f.written < req.len() {
            match stream.write(&req[f.written..]) {
                Ok(0) => return self.drop_conn(i, Some("write: connection closed".into())),
                Ok(n) => f.written += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    blocked = true;
                    break;
                }
                Err(e) => return self.drop_conn(i, Some(format!("write: {e}"))),
            }
        }
        if blocked != c.want_out {
            let mut flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
            if blocked {
                flags |= EpollFlags::EPOLLOUT;
            }
            let mut ev = EpollEvent::new(flags, i as u64);
            if let Err(e) = self.epoll.modify(&*stream, &mut ev) {
                fail(&format!("epoll_ctl(MOD): {e}"));
            }
            c.want_out = blocked;
        }
    }

    /// Reads what the connection has, completing its response when all of it is there.
    fn read_some(&mut self, i: usize, s: &Schedule) {
        loop {
            let c = &mut self.conns[i];
            let Some(stream) = c.stream.as_mut() else {
                return;
            };
            if c.filled == c.buf.len() {
                if c.start == 0 {
                    let msg = format!("a response head or chunk line is over {READ_BUF} bytes");
                    return self.drop_conn(i, Some(msg));
                }
                c.buf.copy_within(c.start..c.filled, 0);
                c.filled -= c.start;
                c.start = 0;
            }
            let n = match stream.read(&mut c.buf[c.filled..]) {
                Ok(0) => {
                    let msg = (c.inflight.is_some() || c.filled > c.start)
                        .then(|| "the server closed the connection mid-response".to_string());
                    return self.drop_conn(i, msg);
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => return self.drop_conn(i, Some(format!("read: {e}"))),
            };
            let read_at = Instant::now();
            let short = c.filled + n < c.buf.len();
            c.filled += n;
            if c.inflight.is_none() {
                return self
                    .drop_conn(i, Some("bytes from the server with no request sent".into()));
            }
            let status = match c.resp.feed(&c.buf[c.start..c.filled]) {
                Ok((used, status)) => {
                    c.start += used;
                    status
                }
                Err(e) => return self.drop_conn(i, Some(format!("bad response: {e}"))),
            };
            if c.start == c.filled {
                (c.start, c.filled) = (0, 0);
            }
            if let Some(status) = status {
                if c.filled > 0 {
                    let msg = "bytes after the response (none were asked for)".to_string();
                    return self.drop_conn(i, Some(msg));
                }
                let k = c.inflight.take().map_or(0, |f| f.k);
                self.in_flight -= 1;
                self.push_idle(i);
                self.record(k, status, read_at, s);
                return;
            }
            if short {
                // Most likely all there was; level-triggered epoll reports it again otherwise.
                return;
            }
        }
    }

    fn record(&mut self, k: u64, status: u16, read_at: Instant, s: &Schedule) {
        if read_at >= s.measure_from && read_at < s.measure_to {
            self.stats.answered_in_window += 1;
        }
        if s.measured(k) {
            let latency = read_at.saturating_duration_since(s.due(k));
            self.stats.latencies_ns.push(ns(latency));
            *self.stats.status.entry(status).or_default() += 1;
        }
    }

    /// Closes connection i (counting `error` if given; its request in flight is lost) and opens
    /// it again.
    fn drop_conn(&mut self, i: usize, error: Option<String>) {
        if let Some(msg) = error {
            self.stats.error(&format!("connection {i}: {msg}"));
        }
        let c = &mut self.conns[i];
        if c.inflight.take().is_some() {
            self.in_flight -= 1;
        }
        c.stream = None; // closing the socket also takes it out of the epoll set
        (c.start, c.filled, c.resp, c.want_out) = (0, 0, Resp::Head, false);
        self.dead += 1;
        self.reconnect(i);
    }

    fn reconnect(&mut self, i: usize) {
        match connect(&self.epoll, self.reqs.addr, i) {
            Ok(stream) => {
                self.conns[i].stream = Some(stream);
                self.dead -= 1;
                self.stats.reconnects += 1;
                self.push_idle(i);
            }
            Err(e) => {
                self.stats.error(&format!("connection {i}: {e}"));
                self.retry_at = Instant::now() + RETRY_AFTER;
            }
        }
    }

    fn retry_dead(&mut self) {
        for i in 0..self.conns.len() {
            if self.conns[i].stream.is_none() {
                self.reconnect(i);
            }
        }
    }
}

/// Nearest-rank percentile of sorted nanoseconds, in milliseconds; null without samples.
fn pct_ms(sorted: &[u64], p: f64) -> Value {
    if sorted.is_empty() {
        return Value::Null;
    }
    // The tolerance keeps a product like 0.999 × 1000 = 999.0000000000001 at rank 999.
    let rank = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
    json!(sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1e6)
}

/// The latency percentiles of sorted nanoseconds, as `"latency_ms"` reports them.
fn latency_ms(sorted: &[u64]) -> Value {
    json!({
        "p50": pct_ms(sorted, 50.0),
        "p90": pct_ms(sorted, 90.0),
        "p99": pct_ms(sorted, 99.0),
        "p99.9": pct_ms(sorted, 99.9),
        "max": pct_ms(sorted, 100.0),
    })
}

/// `--latencies-out`'s format: each latency in nanoseconds as a little-endian u64.
fn write_latencies(path: &str, ns: &[u64]) -> Result<(), String> {
    let bytes: Vec<u8> = ns.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).map_err(|e| format!("writing {path}: {e}"))
}

fn read_latencies(path: &str) -> Result<Vec<u64>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("reading {path}: {e}"))?;
    if bytes.len() % 8 != 0 {
        return Err(format!(
            "{path}: {} bytes is not a whole number of latencies",
            bytes.len()
        ));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("chunks of 8")))
        .collect())
}

/// `loadgen_fixed pool FILE...`: the percentiles of all the files' latencies together.
fn pool(files: &[String]) -> Result<Value, String> {
    let mut all = Vec::new();
    for f in files {
        all.extend(read_latencies(f)?);
    }
    all.sort_unstable();
    Ok(json!({ "files": files.len(), "requests": all.len(), "latency_ms": latency_ms(&all) }))
}

fn report(args: &Args, s: &Schedule, stats: &mut Stats, w: &Window) -> Value {
    stats.latencies_ns.sort_unstable();
    stats.lags_ns.sort_unstable();
    let (lat, lag) = (&stats.latencies_ns, &stats.lags_ns);
    let status: serde_json::Map<String, Value> = stats
        .status
        .iter()
        .map(|(code, n)| (code.to_string(), json!(n)))
        .collect();
    json!({
        "rate": args.rate,
        "seconds": args.seconds,
        "connections": args.connections,
        "requests": lat.len(),
        "unfinished": s.measured_count() - lat.len() as u64,
        "achieved_rps": (stats.answered_in_window as f64 / args.seconds).round(),
        "status": status,
        "errors": stats.errors,
        "reconnects": stats.reconnects,
        "sent": stats.sent,
        "latency_ms": latency_ms(lat),
        "send_lag_ms": {
            "p50": pct_ms(lag, 50.0),
            "p99": pct_ms(lag, 99.0),
            "max": pct_ms(lag, 100.0),
        },
        "cpu_s": w.cpu().as_secs_f64(),
        "busy_s": w.busy.as_secs_f64(),
        "stalls": {
            "count": w.stalls,
            "total_ms": w.stalled.as_secs_f64() * 1e3,
            "max_ms": w.stall_max.as_secs_f64() * 1e3,
        },
    })
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("pool") {
        if argv.len() < 2 {
            usage()
        }
        println!("{}", pool(&argv[1..]).unwrap_or_else(|e| fail(&e)));
        return;
    }
    let args = parse_args();
    let reqs = load_requests(&args).unwrap_or_else(|e| fail(&e));
    let mut generator = Gen::new(reqs, &args).unwrap_or_else(|e| fail(&e));
    let schedule = Schedule::new(Instant::now(), &args);
    let window = generator.run(&schedule);
    let stats = &mut generator.stats;
    if stats.errors > ERRORS_SHOWN {
        eprintln!(
            "loadgen_fixed: {} errors in all ({ERRORS_SHOWN} shown)",
            stats.errors
        );
    }
    let answered = stats.latencies_ns.len();
    println!("{}", report(&args, &schedule, stats, &window));
    if let Some(path) = &args.latencies_out {
        // `report` sorted them.
        write_latencies(path, &stats.latencies_ns).unwrap_or_else(|e| fail(&e));
    }
    if answered == 0 {
        fail("no request of the measured part was answered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One seed, one sequence of lines; another seed, another; 0 is a seed like the others.
    #[test]
    fn the_seed_decides_the_sequence() {
        let draws = |seed| {
            let mut rng = Rng::new(seed);
            (0..64).map(|_| rng.below(1000)).collect::<Vec<_>>()
        };
        assert_eq!(draws(2), draws(2));
        assert_ne!(draws(1), draws(2));
        let zero = draws(0);
        assert!(zero.iter().any(|&i| i != zero[0]), "{zero:?}");
        assert!(zero.iter().all(|&i| i < 1000));
    }

    /// Feeds `data` to one parser `step` bytes at a time, as reads would deliver it; returns the
    /// statuses of the responses it completed.
    fn parse_in_pieces(data: &[u8], step: usize) -> Result<Vec<u16>, String> {
        let (mut resp, mut buf, mut done) = (Resp::Head, Vec::new(), Vec::new());
        for piece in data.chunks(step) {
            buf.extend_from_slice(piece);
            loop {
                let (used, status) = resp.feed(&buf)?;
                buf.drain(..used);
                match status {
                    Some(s) => done.push(s),
                    None => break,
                }
            }
        }
        assert!(buf.is_empty(), "unparsed bytes left: {buf:?}");
        Ok(done)
    }

    #[test]
    fn parses_length_chunked_and_empty_bodies_split_anywhere() {
        let data = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 5\r\n\r\nhello\
HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: 1\r\n\r\n\
HTTP/1.1 204 No Content\r\n\r\n\
HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        for step in 1..=data.len() {
            assert_eq!(
                parse_in_pieces(data, step),
                Ok(vec![200, 404, 204, 200]),
                "step {step}"
            );
        }
    }

    #[test]
    fn rejects_what_it_cannot_frame() {
        let cases: [(&[u8], &str); 4] = [
            (
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nbody",
                "neither Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                "chunk-size",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                "Transfer-Encoding",
            ),
            (b"SSH-2.0-OpenSSH\r\n\r\n", "status line"),
        ];
        for (response, error) in cases {
            let got = parse_in_pieces(response, 64).unwrap_err();
            assert!(got.contains(error), "{got:?} should mention {error:?}");
        }
    }

    #[test]
    fn urls_split_into_authority_and_path() {
        assert_eq!(
            split_url("http://127.0.0.1:8080/a/b?c=d"),
            Ok(("127.0.0.1:8080", "/a/b?c=d"))
        );
        assert_eq!(split_url("http://localhost:80"), Ok(("localhost:80", "/")));
        assert!(split_url("https://x/").is_err());
    }

    /// Pooling two runs' files gives the percentiles of their latencies together, not of
    /// either run alone.
    #[test]
    fn pooled_percentiles_are_of_all_latencies() {
        let dir = std::env::temp_dir().join(format!("loadgen_fixed_pool_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a"), dir.join("b"));
        let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
        // Run a: 100 answers in 1 ms and one in 50 ms; run b: 99 in 2 ms.
        let mut run_a: Vec<u64> = vec![1_000_000; 100];
        run_a.push(50_000_000);
        write_latencies(a, &run_a).unwrap();
        write_latencies(b, &[2_000_000; 99]).unwrap();
        let pooled = pool(&[a.to_string(), b.to_string()]).unwrap();
        assert_eq!(pooled["requests"], json!(200));
        assert_eq!(pooled["latency_ms"]["p50"], json!(1.0));
        assert_eq!(pooled["latency_ms"]["p99"], json!(2.0));
        assert_eq!(pooled["latency_ms"]["max"], json!(50.0));
        std::fs::write(a, [0u8; 12]).unwrap();
        assert!(
            pool(&[a.to_string()])
                .unwrap_err()
                .contains("not a whole number")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let ns: Vec<u64> = (1..=1000).map(|i| i * 1_000_000).collect();
        assert_eq!(pct_ms(&ns, 50.0), json!(500.0));
        assert_eq!(pct_ms(&ns, 99.9), json!(999.0));
        assert_eq!(pct_ms(&ns, 100.0), json!(1000.0));
        assert_eq!(pct_ms(&ns[..1], 50.0), json!(1.0));
        assert_eq!(pct_ms(&[], 50.0), Value::Null);
    }
}
