//! A client socket under mio: plain TCP, or TLS (rustls) over it, behind one small interface.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mio::net::TcpStream;
use nix::errno::Errno;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use socket2::{Domain, Protocol, Socket, Type};

/// A non-blocking client socket.
pub enum Transport {
    /// `ws://`.
    Plain(TcpStream),
    /// `wss://`.
    Tls(Box<(TcpStream, ClientConnection)>),
}

/// How to speak TLS: the rustls config and the name the server's certificate must carry.
#[derive(Clone)]
pub struct Tls {
    /// Shared by every connection.
    pub config: Arc<ClientConfig>,
    /// The server's name (or IP address).
    pub name: ServerName<'static>,
}

impl Transport {
    /// Starts connecting to `addr`, from `source` if given (completion shows as
    /// writability).
    pub fn connect(
        addr: SocketAddr,
        source: Option<IpAddr>,
        tls: Option<&Tls>,
    ) -> io::Result<Transport> {
        let sock = match source {
            None => TcpStream::connect(addr)?,
            Some(ip) => connect_from(ip, addr)?,
        };
        Ok(match tls {
            None => Transport::Plain(sock),
            Some(t) => {
                let conn = ClientConnection::new(t.config.clone(), t.name.clone())
                    .map_err(io::Error::other)?;
                Transport::Tls(Box::new((sock, conn)))
            }
        })
    }

    /// The socket, to register with a poll.
    pub fn socket(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => &mut t.0,
        }
    }

    /// Whether the TCP connect completed (`Ok(false)`: still in progress).
    pub fn connected(&mut self) -> io::Result<bool> {
        let sock = self.socket();
        if let Some(e) = sock.take_error()? {
            return Err(e);
        }
        match sock.peer_addr() {
            Ok(_) => {
                sock.set_nodelay(true)?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether a read shorter than the buffer proves the socket drained (plain TCP only: TLS
    /// hands out decrypted records one at a time).
    pub fn short_read_drains(&self) -> bool {
        matches!(self, Transport::Plain(_))
    }

    /// Reads what is there; `Ok(0)` at the end of the stream, `WouldBlock` when drained.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (sock, tls) = match self {
            Transport::Plain(s) => return s.read(buf),
            Transport::Tls(t) => (&mut t.0, &mut t.1),
        };
        loop {
            match tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            let n = tls.read_tls(sock)?;
            tls.process_new_packets().map_err(io::Error::other)?;
            flush_tls(sock, tls)?;
            if n == 0 {
                return match tls.reader().read(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                    other => other,
                };
            }
        }
    }

    /// Writes some of `buf`; `WouldBlock` when nothing could be taken.
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (sock, tls) = match self {
            Transport::Plain(s) => return s.write(buf),
            Transport::Tls(t) => (&mut t.0, &mut t.1),
        };
        let mut n = tls.writer().write(buf)?;
        let drained = flush_tls(sock, tls)?;
        if n == 0 && drained {
            n = tls.writer().write(buf)?;
            flush_tls(sock, tls)?;
        }
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    /// Whether TLS has records queued that the socket did not take (plain TCP: never).
    pub fn wants_write(&self) -> bool {
        matches!(self, Transport::Tls(t) if t.1.wants_write())
    }

    /// Writes what TLS has queued (the handshake, encrypted records); a no-op for plain TCP.
    pub fn flush(&mut self) -> io::Result<()> {
        if let Transport::Tls(t) = self {
            let (sock, tls) = (&mut t.0, &mut t.1);
            flush_tls(sock, tls)?;
        }
        Ok(())
    }
}

/// Starts connecting to `addr` from address `ip` (the kernel picks the port: binding fails
/// with `AddrInUse` when the address has none left).
fn connect_from(ip: IpAddr, addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::new(ip, 0).into())?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(Errno::EINPROGRESS as i32) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// Writes TLS records until none are left (`Ok(true)`) or the socket is full (`Ok(false)`).
fn flush_tls(sock: &mut TcpStream, tls: &mut ClientConnection) -> io::Result<bool> {
    while tls.wants_write() {
        match tls.write_tls(sock) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Where the system's CA bundle usually is (Debian, Fedora, openSUSE, Alpine).
const SYSTEM_CAS: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The rustls client config: trusting the CAs in `cafile` (or the system's bundle), or with
/// `insecure` any certificate at all.
pub fn client_config(insecure: bool, cafile: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        let path = match cafile {
            Some(p) => p.to_path_buf(),
            None => SYSTEM_CAS
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
                .ok_or("no system CA bundle found: give --cafile PEM (or --insecure)")?,
        };
        let mut roots = RootCertStore::empty();
        let certs =
            CertificateDer::pem_file_iter(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        if roots.is_empty() {
            return Err(format!("{}: no certificate found", path.display()));
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// The name to check the server's certificate against: the URL's host.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_owned()).map_err(|e| format!("{host}: {e}"))
}

/// `--insecure`: a verifier that accepts every certificate (signatures are still checked, so
/// that the handshake itself is sound).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
