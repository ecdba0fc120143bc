//! A self-signed certificate for `localhost` and 127.0.0.1 in a directory of its own (removed on
//! drop), with a server config for wsloop and a client config that trusts it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use wsloop::TlsConfig;

/// A certificate and its key as PEM files.
pub struct Cert {
    dir: PathBuf,
    der: rustls::pki_types::CertificateDer<'static>,
}

impl Cert {
    /// A new certificate in a new directory under the system's temporary one.
    pub fn new() -> Cert {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let names = vec!["localhost".into(), "127.0.0.1".into()];
        let ck = rcgen::generate_simple_self_signed(names).unwrap();
        let dir = std::env::temp_dir().join(format!(
            "wsloop-cert-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cert.pem"), ck.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
        Cert {
            dir,
            der: ck.cert.der().clone(),
        }
    }

    /// The certificate's PEM file.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    /// The key's PEM file.
    pub fn key_path(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    /// wsloop's TLS config serving this certificate.
    pub fn server_config(&self) -> TlsConfig {
        TlsConfig::from_pem_files(self.cert_path(), Some(self.key_path())).unwrap()
    }

    /// A rustls client config that trusts this certificate only (ALPN `http/1.1`).
    pub fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl Drop for Cert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
