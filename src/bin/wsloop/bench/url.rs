//! The target: a `ws://` or `wss://` URL, IPv4, IPv6 (`[::1]`) or a host name.

use std::net::{SocketAddr, ToSocketAddrs};

/// A parsed target URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `wss://`.
    pub tls: bool,
    /// The host as written (brackets removed from an IPv6 address).
    pub host: String,
    /// The `Host` header: host and port as written.
    pub authority: String,
    /// Path and query, at least `/`.
    pub path: String,
    /// Where to connect (the first address the host resolves to).
    pub addr: SocketAddr,
}

impl Target {
    /// Parses and resolves `url`.
    pub fn parse(url: &str) -> Result<Target, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("ws://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("wss://") {
            (true, rest)
        } else {
            return Err(format!("{url:?} is not a ws:// or wss:// URL"));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('?') => (&rest[..i], format!("/{}", &rest[i..])),
            Some(i) => (&rest[..i], rest[i..].to_owned()),
            None => (rest, "/".to_owned()),
        };
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{url:?}: unclosed [ in the host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p,
                None if after.is_empty() => "",
                None => return Err(format!("{url:?}: junk after the IPv6 address")),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, p),
                None => (authority, ""),
            }
        };
        if host.is_empty() {
            return Err(format!("{url:?}: no host"));
        }
        let port: u16 = if port.is_empty() {
            default_port
        } else {
            port.parse()
                .map_err(|_| format!("{url:?}: bad port {port:?}"))?
        };
        let addr = (host, port)
            .to_socket_addrs()
            .map_err(|e| format!("{host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host}: no address"))?;
        Ok(Target {
            tls,
            host: host.to_owned(),
            authority: authority.to_owned(),
            path,
            addr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = Target::parse("ws://127.0.0.1:9001/chat?x=1").unwrap();
        assert_eq!((t.tls, t.path.as_str()), (false, "/chat?x=1"));
        assert_eq!(t.addr, "127.0.0.1:9001".parse().unwrap());
        let t = Target::parse("wss://[::1]:9443").unwrap();
        assert_eq!(
            (t.tls, t.host.as_str(), t.path.as_str()),
            (true, "::1", "/")
        );
        assert_eq!(t.addr, "[::1]:9443".parse().unwrap());
        assert_eq!(t.authority, "[::1]:9443");
        assert_eq!(Target::parse("ws://[::1]").unwrap().addr.port(), 80);
        assert_eq!(Target::parse("ws://127.0.0.1?a").unwrap().path, "/?a");
        assert!(Target::parse("http://x/").is_err());
        assert!(Target::parse("ws://[::1/").is_err());
        assert!(Target::parse("ws://127.0.0.1:x/").is_err());
    }
}
