//! TLS setup for `wss://`: a certificate chain and key from PEM files, or a rustls config.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::ring;
use rustls::pki_types::pem::{PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{InconsistentKeys, ServerConfig};

use crate::error::{Error, TlsError};

/// How a server speaks TLS: a shared [`rustls::ServerConfig`], cheap to clone.
#[derive(Clone, Debug)]
pub struct TlsConfig {
    config: Arc<ServerConfig>,
}

impl TlsConfig {
    /// Loads a certificate chain and its private key from PEM files.
    ///
    /// `cert` holds the chain, leaf first. `key` holds the private key (PKCS#8, PKCS#1 or
    /// SEC1); with `None`, `cert` must hold both, as in a single combined `.pem`:
    /// `TlsConfig::from_pem_files("server.pem", None::<&str>)`.
    ///
    /// Fails, naming the file, when a file cannot be read, holds no certificate or no key, holds
    /// an encrypted key, or when the key does not match the leaf certificate. The config uses the
    /// `ring` provider, TLS 1.2 and 1.3, and offers ALPN `http/1.1`.
    ///
    /// # Errors
    ///
    /// [`Error::Tls`] naming the file and the problem.
    pub fn from_pem_files(
        cert: impl AsRef<Path>,
        key: Option<impl AsRef<Path>>,
    ) -> Result<TlsConfig, Error> {
        let cert_path = cert.as_ref();
        let key_path = key.as_ref().map_or(cert_path, |k| k.as_ref());
        let combined = key.is_none();
        let (certs, key) = if combined {
            read_pem(cert_path, true)?
        } else {
            (read_pem(cert_path, false)?.0, read_pem(key_path, true)?.1)
        };
        if certs.is_empty() {
            return Err(tls_error(Some(cert_path), TlsError::NoCertificate));
        }
        let Some(key) = key else {
            return Err(tls_error(
                Some(key_path),
                TlsError::NoPrivateKey { combined },
            ));
        };

        let provider = Arc::new(ring::default_provider());
        let signing_key = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| tls_error(Some(key_path), TlsError::UnusableKey(e)))?;
        let certified = CertifiedKey::new(certs, signing_key);
        match certified.keys_match() {
            // `Unknown`: the key cannot tell its public half; rustls accepts that too.
            Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
            Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
                let cert = cert_path.to_owned();
                return Err(tls_error(Some(key_path), TlsError::KeyMismatch { cert }));
            }
            Err(e) => {
                return Err(tls_error(Some(cert_path), TlsError::BadCertificate(e)));
            }
        }
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(None, TlsError::Rustls(e)))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsConfig::from_server_config(Arc::new(config)))
    }

    /// Uses a ready rustls config as it is: its ALPN list, versions and certificates are left
    /// alone (set `alpn_protocols` to `http/1.1` yourself if clients negotiate ALPN).
    pub fn from_server_config(config: Arc<ServerConfig>) -> TlsConfig {
        TlsConfig { config }
    }

    /// The rustls config each connection is made from.
    pub fn server_config(&self) -> &Arc<ServerConfig> {
        &self.config
    }
}

fn tls_error(path: Option<&Path>, cause: TlsError) -> Error {
    Error::Tls {
        path: path.map(PathBuf::from),
        cause,
    }
}

/// The certificates of a PEM file and, if `want_key`, its first private key.
fn read_pem(
    path: &Path,
    want_key: bool,
) -> Result<(Vec<CertificateDer<'static>>, Option<PrivateKeyDer<'static>>), Error> {
    let bytes = std::fs::read(path).map_err(|e| tls_error(Some(path), TlsError::Read(e)))?;
    if want_key && is_encrypted(&bytes) {
        let cause = TlsError::EncryptedKey {
            path: path.to_owned(),
        };
        return Err(tls_error(Some(path), cause));
    }
    let mut certs = Vec::new();
    let mut key = None;
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(&bytes) {
        let (kind, der) = section.map_err(|e| tls_error(Some(path), TlsError::Pem(e)))?;
        match kind {
            SectionKind::Certificate => certs.push(CertificateDer::from(der)),
            _ if want_key && key.is_none() => key = PrivateKeyDer::from_pem(kind, der),
            _ => {}
        }
    }
    Ok((certs, key))
}

/// Whether a PEM file holds a PKCS#8 encrypted key or a traditional (OpenSSL) encrypted one.
fn is_encrypted(pem: &[u8]) -> bool {
    let has = |needle: &[u8]| pem.windows(needle.len()).any(|w| w == needle);
    has(b"-----BEGIN ENCRYPTED PRIVATE KEY-----") || has(b"Proc-Type: 4,ENCRYPTED")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of its own under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!("wsloop-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        /// Writes `text` to `name` in the directory and returns its path.
        fn file(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, text).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn self_signed() -> rcgen::CertifiedKey<rcgen::KeyPair> {
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap()
    }

    /// The `Display` of the error `from_pem_files` gives, which must name `path`.
    fn error_for(cert: &Path, key: Option<&Path>, path: &Path) -> String {
        let err = TlsConfig::from_pem_files(cert, key).unwrap_err();
        let Error::Tls { path: Some(p), .. } = &err else {
            panic!("unexpected error: {err}");
        };
        assert_eq!(p, path);
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        text
    }

    #[test]
    fn loads_cert_and_key_files() {
        let dir = TempDir::new("tls-two-files");
        let ck = self_signed();
        let cert = dir.file("cert.pem", &ck.cert.pem());
        let key = dir.file("key.pem", &ck.signing_key.serialize_pem());
        let tls = TlsConfig::from_pem_files(&cert, Some(&key)).unwrap();
        assert_eq!(
            tls.server_config().alpn_protocols,
            vec![b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn loads_combined_file_in_either_order() {
        let dir = TempDir::new("tls-combined");
        let ck = self_signed();
        let (cert, key) = (ck.cert.pem(), ck.signing_key.serialize_pem());
        let a = dir.file("a.pem", &format!("{cert}{key}"));
        let b = dir.file("b.pem", &format!("{key}\n{cert}"));
        TlsConfig::from_pem_files(&a, None::<&Path>).unwrap();
        TlsConfig::from_pem_files(&b, None::<&Path>).unwrap();
    }

    #[test]
    fn server_config_is_left_alone() {
        let ck = self_signed();
        let key = PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
        let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![ck.cert.der().clone()], key)
            .unwrap();
        let tls = TlsConfig::from_server_config(Arc::new(config));
        assert!(tls.server_config().alpn_protocols.is_empty());
    }

    #[test]
    fn missing_file_is_named() {
        let dir = TempDir::new("tls-missing");
        let ck = self_signed();
        let cert = dir.file("cert.pem", &ck.cert.pem());
        let missing = dir.0.join("nope.pem");
        let text = error_for(&cert, Some(&missing), &missing);
        assert!(text.contains("cannot read"), "{text}");
        let text = error_for(&missing, None, &missing);
        assert!(text.contains("cannot read"), "{text}");
    }

    #[test]
    fn file_without_certificate() {
        let dir = TempDir::new("tls-no-cert");
        let key = dir.file("key.pem", &self_signed().signing_key.serialize_pem());
        let text = error_for(&key, Some(&key), &key);
        assert!(text.contains("no certificate"), "{text}");
    }

    #[test]
    fn file_without_key() {
        let dir = TempDir::new("tls-no-key");
        let cert = dir.file("cert.pem", &self_signed().cert.pem());
        let text = error_for(&cert, None, &cert);
        assert!(text.contains("no private key"), "{text}");
        assert!(text.contains("must hold both"), "{text}");
        let other = dir.file("other.pem", &self_signed().cert.pem());
        let text = error_for(&cert, Some(&other), &other);
        assert!(text.contains("no private key"), "{text}");
    }

    #[test]
    fn encrypted_keys_are_explained() {
        let dir = TempDir::new("tls-encrypted");
        let cert = dir.file("cert.pem", &self_signed().cert.pem());
        let pkcs8 = dir.file(
            "pkcs8.pem",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0wSjAp\n\
             -----END ENCRYPTED PRIVATE KEY-----\n",
        );
        let traditional = dir.file(
            "rsa.pem",
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\
             DEK-Info: AES-128-CBC,0123456789ABCDEF0123456789ABCDEF\n\nMIIEpAIBAAKCAQEA\n\
             -----END RSA PRIVATE KEY-----\n",
        );
        for key in [&pkcs8, &traditional] {
            let text = error_for(&cert, Some(key), key);
            assert!(text.contains("encrypted"), "{text}");
            assert!(text.contains("openssl pkey -in"), "{text}");
        }
    }

    #[test]
    fn mismatched_key_is_refused() {
        let dir = TempDir::new("tls-mismatch");
        let cert = dir.file("cert.pem", &self_signed().cert.pem());
        let key = dir.file("key.pem", &self_signed().signing_key.serialize_pem());
        let text = error_for(&cert, Some(&key), &key);
        assert!(text.contains("does not match"), "{text}");
        assert!(text.contains(&cert.display().to_string()), "{text}");
        let err = TlsConfig::from_pem_files(&cert, Some(&key)).unwrap_err();
        assert!(
            matches!(&err, Error::Tls { cause: TlsError::KeyMismatch { cert: c }, .. } if *c == cert),
            "{err:?}"
        );
    }

    #[test]
    fn malformed_pem_and_bad_key() {
        let dir = TempDir::new("tls-malformed");
        let cert = dir.file("cert.pem", &self_signed().cert.pem());
        let open = dir.file("open.pem", "-----BEGIN PRIVATE KEY-----\nMIIB\n");
        let text = error_for(&cert, Some(&open), &open);
        assert!(text.contains("not valid PEM"), "{text}");
        let junk = dir.file(
            "junk.pem",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        );
        let text = error_for(&cert, Some(&junk), &junk);
        assert!(text.contains("unusable private key"), "{text}");
    }
}
