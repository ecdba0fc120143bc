//! Scaling out: several reactors on one port ([`Cluster`](crate::Cluster)), and publishes
//! carried between reactors or processes ([`Relay`](crate::Relay), and with the `redis` feature
//! [`RedisRelay`](crate::RedisRelay)).

pub(crate) mod cluster;
#[cfg(feature = "redis")]
pub(crate) mod redis;
