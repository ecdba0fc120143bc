//! Time as the protocol core counts it: [`Millis`] since an endpoint's clock started, 8 bytes in
//! a connection instead of an `Instant`'s 16.

use std::time::Duration;

/// Milliseconds since an endpoint's clock started (see
/// [`Endpoint::instant`](crate::proto::connection::Endpoint::instant)).
pub type Millis = u64;

/// `d` in milliseconds, rounded up and one more, so that a deadline computed from a time
/// rounded down never comes early.
pub(crate) fn span(d: Duration) -> Millis {
    let ms = d.as_nanos().div_ceil(1_000_000) + 1;
    Millis::try_from(ms).unwrap_or(Millis::MAX / 2)
}
