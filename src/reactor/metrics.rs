//! What a running server counts, for operators: connections, refusals, traffic, closes and
//! memory; read as a [`Metrics`] snapshot from [`Server::metrics`](crate::Server::metrics) or
//! [`Handle::metrics`](crate::Handle::metrics), written in Prometheus' text format.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::proto::connection::Refusals;
use crate::CloseReason;

/// A snapshot of a server's counters (totals since it started) and gauges (now). Summed
/// over the reactors of a [`Cluster`](crate::Cluster) by
/// [`ClusterHandle::metrics`](crate::ClusterHandle::metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// Connections open now (upgraded, not yet closed).
    pub connections_open: u64,
    /// TCP connections accepted.
    pub connections_accepted: u64,
    /// Connections refused with 503 (or, past the refusals pending, dropped) for
    /// `max_connections`.
    pub refused_limit: u64,
    /// Upgrade requests refused for an `Origin` not in `allowed_origins` (403).
    pub refused_origin: u64,
    /// Upgrade requests refused (bad handshakes, origins, the application's refusals, plain
    /// HTTP pages), by HTTP status.
    pub handshake_failures: BTreeMap<u16, u64>,
    /// TLS handshakes that failed.
    pub tls_handshakes_failed: u64,
    /// Messages received (whole, after reassembly and inflation).
    pub messages_in: u64,
    /// Bytes read from sockets (TLS records decrypted: the WebSocket bytes).
    pub bytes_in: u64,
    /// Messages sent to one connection (a broadcast counts once per recipient).
    pub messages_out: u64,
    /// Bytes written to sockets (before TLS).
    pub bytes_out: u64,
    /// Connections closed, by why (`closed`, `protocol_error`, `overflow`, `timed_out`,
    /// `disconnected`) and close code (the peer's in a close handshake, ours otherwise; none
    /// without a close frame).
    pub closes: BTreeMap<(&'static str, Option<u16>), u64>,
    /// Bytes the reactor buffers now: input kept for partial frames and unfinished
    /// messages, and the write queues (what `max_buffered` bounds).
    pub bytes_buffered: u64,
    /// Connections shed to keep the reactor within `max_buffered`.
    pub connections_shed: u64,
}

impl Metrics {
    /// Adds `other`'s counts and gauges to these (the reactors of one process).
    pub fn add(&mut self, other: &Metrics) {
        self.connections_open += other.connections_open;
        self.connections_accepted += other.connections_accepted;
        self.refused_limit += other.refused_limit;
        self.refused_origin += other.refused_origin;
        self.tls_handshakes_failed += other.tls_handshakes_failed;
        self.messages_in += other.messages_in;
        self.bytes_in += other.bytes_in;
        self.messages_out += other.messages_out;
        self.bytes_out += other.bytes_out;
        self.bytes_buffered += other.bytes_buffered;
        self.connections_shed += other.connections_shed;
        for (status, n) in &other.handshake_failures {
            *self.handshake_failures.entry(*status).or_default() += n;
        }
        for (key, n) in &other.closes {
            *self.closes.entry(*key).or_default() += n;
        }
    }

    /// The metrics in the Prometheus text exposition format (version 0.0.4), each named
    /// `wsloop_…`, for a `GET /metrics` answer.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        let mut one = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP wsloop_{name} {help}");
            let _ = writeln!(out, "# TYPE wsloop_{name} {kind}");
            let _ = writeln!(out, "wsloop_{name} {value}");
        };
        one(
            "connections_open",
            "gauge",
            "Connections open now.",
            self.connections_open,
        );
        one(
            "connections_accepted_total",
            "counter",
            "TCP connections accepted.",
            self.connections_accepted,
        );
        one(
            "bytes_buffered",
            "gauge",
            "Bytes the reactors buffer (partial input and write queues).",
            self.bytes_buffered,
        );
        one(
            "connections_shed_total",
            "counter",
            "Connections shed to stay within max_buffered.",
            self.connections_shed,
        );
        one(
            "tls_handshakes_failed_total",
            "counter",
            "TLS handshakes that failed.",
            self.tls_handshakes_failed,
        );
        one(
            "messages_in_total",
            "counter",
            "Messages received.",
            self.messages_in,
        );
        one("bytes_in_total", "counter", "Bytes read.", self.bytes_in);
        one(
            "messages_out_total",
            "counter",
            "Messages sent, per recipient.",
            self.messages_out,
        );
        one(
            "bytes_out_total",
            "counter",
            "Bytes written.",
            self.bytes_out,
        );
        out.push_str("# HELP wsloop_connections_refused_total Connections refused, by reason.\n");
        out.push_str("# TYPE wsloop_connections_refused_total counter\n");
        let refused = [
            ("limit", self.refused_limit),
            ("origin", self.refused_origin),
            ("bad_handshake", self.bad_handshakes()),
        ];
        for (reason, n) in refused {
            let _ = writeln!(
                out,
                "wsloop_connections_refused_total{{reason=\"{reason}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP wsloop_handshake_failures_total Upgrade requests refused, by HTTP status.\n",
        );
        out.push_str("# TYPE wsloop_handshake_failures_total counter\n");
        for (status, n) in &self.handshake_failures {
            let _ = writeln!(
                out,
                "wsloop_handshake_failures_total{{status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP wsloop_closes_total Connections closed, by why and close code.\n");
        out.push_str("# TYPE wsloop_closes_total counter\n");
        for ((why, code), n) in &self.closes {
            let code = code.map_or_else(|| "none".to_owned(), |c| c.to_string());
            let _ = writeln!(
                out,
                "wsloop_closes_total{{why=\"{why}\",code=\"{code}\"}} {n}"
            );
        }
        out
    }

    /// Refusals for a request that broke RFC 6455 (the 4xx statuses but 403 and 404, which
    /// origins and applications answer).
    fn bad_handshakes(&self) -> u64 {
        (self.handshake_failures.iter())
            .filter(|(status, _)| (400..500).contains(*status) && !matches!(status, 403 | 404))
            .map(|(_, n)| n)
            .sum()
    }
}

/// The reactor's own counters (the endpoint keeps the refusals); plain integers, bumped on
/// the reactor's thread.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) accepted: u64,
    pub(crate) refused_limit: u64,
    pub(crate) tls_failed: u64,
    pub(crate) messages_in: u64,
    pub(crate) bytes_in: u64,
    pub(crate) messages_out: u64,
    pub(crate) bytes_out: u64,
    pub(crate) shed: u64,
    pub(crate) closes: BTreeMap<(&'static str, Option<u16>), u64>,
}

impl Counters {
    /// Counts a connection's end as the application is told it.
    pub(crate) fn closed(&mut self, why: &CloseReason<'_>) {
        let key = match why {
            CloseReason::Closed { code, .. } => ("closed", code.map(|c| c.0)),
            CloseReason::ProtocolError(e) => ("protocol_error", Some(e.close_code().0)),
            CloseReason::Overflow => ("overflow", None),
            CloseReason::TimedOut => ("timed_out", None),
            _ => ("disconnected", None),
        };
        *self.closes.entry(key).or_default() += 1;
    }

    /// The snapshot, with the endpoint's `refusals` and the gauges.
    pub(crate) fn snapshot(&self, refusals: &Refusals, open: u64, buffered: u64) -> Metrics {
        Metrics {
            connections_open: open,
            connections_accepted: self.accepted,
            refused_limit: self.refused_limit,
            refused_origin: refusals.origin,
            handshake_failures: refusals.by_status.iter().copied().collect(),
            tls_handshakes_failed: self.tls_failed,
            messages_in: self.messages_in,
            bytes_in: self.bytes_in,
            messages_out: self.messages_out,
            bytes_out: self.bytes_out,
            closes: self.closes.clone(),
            bytes_buffered: buffered,
            connections_shed: self.shed,
        }
    }
}
