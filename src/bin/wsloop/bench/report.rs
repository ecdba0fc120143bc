//! The summary of a run: a human table ending with one `key=value` line, or JSON.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::stats::{new_histogram, Cause, CpuUse, Outcome};
use super::{BenchArgs, Mode, Plan};

/// Latency percentiles, in microseconds.
#[derive(Debug, Serialize)]
pub struct Percentiles {
    count: u64,
    min: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
    mean: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Percentiles {
        let us = |ns: u64| ns as f64 / 1e3;
        Percentiles {
            count: h.len(),
            min: us(h.min()),
            p50: us(h.value_at_quantile(0.5)),
            p90: us(h.value_at_quantile(0.9)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            mean: h.mean() / 1e3,
        }
    }

    fn line(&self) -> String {
        format!(
            "min {:.1}  p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  mean {:.1}",
            self.min, self.p50, self.p90, self.p99, self.p999, self.max, self.mean
        )
    }
}

/// CPU use over the window (in connect mode: while connecting), in percent of one core.
#[derive(Debug, Serialize)]
pub struct Cpu {
    client_pct: f64,
    server_pct: Option<f64>,
    server_us_per_msg: Option<f64>,
    /// Connect and churn modes: per connection opened (churn: closed within the window).
    client_us_per_conn: Option<f64>,
    server_us_per_conn: Option<f64>,
    /// What neither process was charged with: other processes and hypervisor steal.
    other_pct: Option<f64>,
}

/// What a run measured, for people and for machines.
#[derive(Debug, Serialize)]
pub struct Summary {
    mode: &'static str,
    url: String,
    conns: usize,
    threads: usize,
    size: usize,
    binary: bool,
    deflate: bool,
    /// Closed loop: messages in flight per connection.
    inflight: Option<usize>,
    /// Open loop: messages per second asked for.
    rate: Option<usize>,
    publishers: Option<usize>,
    established: usize,
    failed: usize,
    connect_seconds: f64,
    handshakes_per_s: f64,
    /// Churn: connections opened, upgraded, used and closed within the window, and per second.
    cycles: u64,
    conns_per_s: f64,
    /// Local addresses connected from (0: the kernel's choice).
    sources: usize,
    /// Failed connections by cause.
    failures: BTreeMap<&'static str, u64>,
    handshake_us: Percentiles,
    window_seconds: f64,
    /// Messages sent (in fan-out: published).
    sent: u64,
    /// Echoes (fan-out: deliveries) verified within the window.
    messages: u64,
    msgs_per_s: f64,
    mbytes_per_s: f64,
    latency_us: Percentiles,
    /// Echoes (fan-out: deliveries) that never came.
    lost: u64,
    cpu: Cpu,
    /// Failed connections, lost or wrong echoes, protocol errors.
    pub errors: u64,
    first_errors: Vec<String>,
}

impl Summary {
    /// Adds up the threads' outcomes.
    pub fn new(args: &BenchArgs, plan: &Plan, outcomes: &[Outcome]) -> Summary {
        let (mut latency, mut handshakes) = (new_histogram(), new_histogram());
        let mut first_errors = Vec::new();
        for o in outcomes {
            let _ = latency.add(&o.latency);
            let _ = handshakes.add(&o.handshakes);
            first_errors.extend(o.first_errors.iter().cloned());
        }
        first_errors.truncate(10);
        let sum = |f: fn(&Outcome) -> u64| outcomes.iter().map(f).sum::<u64>();
        let max = |f: fn(&Outcome) -> f64| outcomes.iter().map(f).fold(0.0, f64::max);
        let established = sum(|o| o.established as u64) as usize;
        let messages = sum(|o| o.counted);
        let window = max(|o| o.window_secs);
        let connect = max(|o| o.connect_secs);
        let rate = per_second(messages, window);
        let closed_loop = plan.mode == Mode::Echo && plan.rate.is_none();
        let churn = plan.mode == Mode::Churn;
        let cycles = sum(|o| o.cycles);
        let mut failures = BTreeMap::new();
        for (cause, n) in outcomes.iter().flat_map(|o| &o.failures) {
            *failures.entry(cause.name()).or_default() += n;
        }
        // Connect mode measures CPU while connecting; the others over the window.
        let (cpu_secs, per_conn) = match plan.mode {
            Mode::Connect => (connect, established as u64),
            Mode::Churn => (window, cycles),
            Mode::Echo | Mode::Fanout => (window, 0),
        };
        let per = |secs: f64, n: u64| (n > 0).then(|| secs * 1e6 / n as f64);
        let cpu = outcomes.first().map_or(
            CpuUse {
                client: 0.0,
                server: None,
                machine: None,
            },
            |o| o.cpu,
        );
        let pct = |secs: f64| {
            if cpu_secs > 0.0 {
                secs / cpu_secs * 100.0
            } else {
                0.0
            }
        };
        Summary {
            mode: match plan.mode {
                Mode::Echo => "echo",
                Mode::Connect => "connect",
                Mode::Fanout => "fanout",
                Mode::Churn => "churn",
            },
            url: args.url.clone(),
            conns: args.conns,
            threads: outcomes.len(),
            size: args.size,
            binary: args.binary,
            deflate: args.deflate,
            inflight: closed_loop.then_some(args.inflight),
            rate: plan.rate.map(|_| args.rate.unwrap_or(1000)),
            publishers: (plan.mode == Mode::Fanout).then_some(args.publishers),
            established,
            failed: sum(|o| o.failed as u64) as usize,
            connect_seconds: connect,
            handshakes_per_s: per_second(established as u64, if churn { window } else { connect }),
            cycles,
            conns_per_s: per_second(cycles, window),
            sources: plan.sources.len(),
            failures,
            handshake_us: Percentiles::of(&handshakes),
            window_seconds: window,
            sent: sum(|o| o.sent),
            messages,
            msgs_per_s: rate,
            mbytes_per_s: rate * args.size as f64 / 1e6,
            latency_us: Percentiles::of(&latency),
            lost: sum(|o| o.lost),
            cpu: Cpu {
                client_pct: pct(cpu.client),
                server_pct: cpu.server.map(pct),
                server_us_per_msg: cpu
                    .server
                    .filter(|_| messages > 0)
                    .map(|s| s * 1e6 / messages as f64),
                client_us_per_conn: per(cpu.client, per_conn),
                server_us_per_conn: cpu.server.and_then(|s| per(s, per_conn)),
                other_pct: cpu
                    .machine
                    .map(|m| pct(m - cpu.client - cpu.server.unwrap_or(0.0))),
            },
            errors: sum(|o| o.errors),
            first_errors,
        }
    }

    /// The summary as one line of JSON.
    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// Prints the table and the `key=value` line.
    pub fn print(&self) {
        let how = match (self.inflight, self.rate) {
            (Some(k), _) => format!("closed loop, {k} in flight per connection"),
            _ if self.mode == "churn" => {
                let rate = self
                    .rate
                    .map_or("as fast as they close".into(), |r| format!("{r}/s"));
                format!(
                    "one message each, opened {rate} from {} source addresses",
                    self.sources
                )
            }
            (None, Some(r)) => format!("open loop, {r} msg/s"),
            (None, None) => "idle".into(),
        };
        println!(
            "{} {}: {} connections ({} failed) on {} thread{}, {} B {} messages{}, {how}",
            self.mode,
            self.url,
            self.established,
            self.failed,
            self.threads,
            if self.threads == 1 { "" } else { "s" },
            self.size,
            if self.binary { "binary" } else { "text" },
            if self.deflate {
                ", permessage-deflate"
            } else {
                ""
            },
        );
        println!(
            "  handshakes:  {:.0}/s over {:.2} s; latency us: {}",
            self.handshakes_per_s,
            if self.mode == "churn" {
                self.window_seconds
            } else {
                self.connect_seconds
            },
            self.handshake_us.line()
        );
        if self.mode == "churn" {
            println!(
                "  connections: {} opened, used and closed in {:.2} s: {:.0}/s",
                self.cycles, self.window_seconds, self.conns_per_s
            );
        }
        if !self.failures.is_empty() {
            let causes: Vec<String> = (self.failures.iter())
                .map(|(cause, n)| format!("{n} {cause}"))
                .collect();
            println!("  failed connections by cause: {}", causes.join(", "));
        }
        if self.failures.contains_key(Cause::NoPort.name()) {
            println!(
                "  local ports ran out (EADDRNOTAVAIL): connect from more addresses (--source)"
            );
        }
        if self.mode == "churn" {
            println!(
                "  echoes:  {} verified in {:.2} s; latency us: {}",
                self.messages,
                self.window_seconds,
                self.latency_us.line()
            );
        } else if self.mode != "connect" {
            let what = if self.mode == "fanout" {
                "deliveries"
            } else {
                "echoes"
            };
            println!(
                "  {what}:  {} verified in {:.2} s: {:.0}/s, {:.2} MB/s ({} messages sent, {} \
                 {what} lost)",
                self.messages,
                self.window_seconds,
                self.msgs_per_s,
                self.mbytes_per_s,
                self.sent,
                self.lost
            );
            println!("  latency us:  {}", self.latency_us.line());
        }
        let opt = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.1}"));
        let (per, unit) = match self.mode {
            "connect" | "churn" => (self.cpu.server_us_per_conn, "connection"),
            _ => (self.cpu.server_us_per_msg, "message"),
        };
        println!(
            "  CPU % of a core: client {:.0}, server {} ({} us per {unit}), everything else {}",
            self.cpu.client_pct,
            opt(self.cpu.server_pct),
            per.map_or("n/a".into(), |v| format!("{v:.3}")),
            opt(self.cpu.other_pct),
        );
        println!("  errors: {}", self.errors);
        for e in &self.first_errors {
            println!("    {e}");
        }
        let nan = |v: Option<f64>| v.unwrap_or(f64::NAN);
        println!(
            "bench={} conns={} established={} size={} inflight={} seconds={:.2} msgs_per_s={:.0} \
             mbytes_per_s={:.2} p50_us={:.1} p99_us={:.1} p999_us={:.1} handshakes_per_s={:.0} \
             handshake_p99_us={:.1} lost={} errors={} server_cpu_us_per_msg={:.3} server_cpu_pct={:.1} \
             client_cpu_pct={:.1} other_cpu_pct={:.1} failed={} conns_per_s={:.0} \
             handshake_p50_us={:.1} server_cpu_us_per_conn={:.2} client_cpu_us_per_conn={:.2}",
            self.mode,
            self.conns,
            self.established,
            self.size,
            self.inflight.unwrap_or(0),
            self.window_seconds,
            self.msgs_per_s,
            self.mbytes_per_s,
            self.latency_us.p50,
            self.latency_us.p99,
            self.latency_us.p999,
            self.handshakes_per_s,
            self.handshake_us.p99,
            self.lost,
            self.errors,
            nan(self.cpu.server_us_per_msg),
            nan(self.cpu.server_pct),
            self.cpu.client_pct,
            nan(self.cpu.other_pct),
            self.failed,
            self.conns_per_s,
            self.handshake_us.p50,
            nan(self.cpu.server_us_per_conn),
            nan(self.cpu.client_us_per_conn),
        );
    }
}

/// `n` per second over `secs` (0 over no time).
fn per_second(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}
