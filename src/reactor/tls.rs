//! TLS setup for `wss://`: a certificate chain and its private key, from PEM files or PEM text,
//! and the PEM reading the client's CA files share.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::ring;
use rustls::pki_types::pem::{PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{InconsistentKeys, ServerConfig};

use crate::error::{Error, TlsError};

/// How a server speaks TLS: its certificate chain and private key, with the `ring` provider,
/// TLS 1.2 and 1.3 and ALPN `http/1.1`. Cheap to clone.
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
    /// # Errors
    ///
    /// [`Error::Tls`] naming the file and the problem: a file cannot be read, holds no
    /// certificate or no key, holds an encrypted key, or the key does not match the leaf
    /// certificate.
    pub fn from_pem_files(
        cert: impl AsRef<Path>,
        key: Option<impl AsRef<Path>>,
    ) -> Result<TlsConfig, Error> {
        let cert_path = cert.as_ref();
        let cert_text = read_file(cert_path)?;
        let cert = Pem {
            text: &cert_text,
            path: Some(cert_path),
        };
        match key {
            None => TlsConfig::build(&cert, &cert, true),
            Some(key_path) => {
                let key_path = key_path.as_ref();
                let key_text = read_file(key_path)?;
                let key = Pem {
                    text: &key_text,
                    path: Some(key_path),
                };
                TlsConfig::build(&cert, &key, false)
            }
        }
    }

    /// Takes a certificate chain (leaf first) and its private key from PEM text held in
    /// memory (a secret that is not on disk, say); both may be the same text.
    ///
    /// # Errors
    ///
    /// [`Error::Tls`] with no path, for the same problems as
    /// [`from_pem_files`](Self::from_pem_files).
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<TlsConfig, Error> {
        let pem = |text| Pem { text, path: None };
        TlsConfig::build(&pem(cert), &pem(key), false)
    }

    /// The config of the chain in `cert` and the first private key in `key`; `combined` when
    /// no key file was given.
    fn build(cert: &Pem<'_>, key: &Pem<'_>, combined: bool) -> Result<TlsConfig, Error> {
        let certs = cert.certificates()?;
        if certs.is_empty() {
            return Err(cert.error(TlsError::NoCertificate));
        }
        let Some(private_key) = key.private_key()? else {
            return Err(key.error(TlsError::NoPrivateKey { combined }));
        };
        let provider = Arc::new(ring::default_provider());
        let signing_key = provider
            .key_provider
            .load_private_key(private_key)
            .map_err(|e| key.error(TlsError::UnusableKey(e.into())))?;
        let certified = CertifiedKey::new(certs, signing_key);
        match certified.keys_match() {
            // `Unknown`: the key cannot tell its public half; rustls accepts that too.
            Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
            Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
                let cert = cert.path.map(Path::to_owned);
                return Err(key.error(TlsError::KeyMismatch { cert }));
            }
            Err(e) => return Err(cert.error(TlsError::BadCertificate(e.into()))),
        }
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsConfig {
            config: Arc::new(config),
        })
    }

    /// The rustls config each connection is made from.
    pub(crate) fn server_config(&self) -> &Arc<ServerConfig> {
        &self.config
    }
}

/// The bytes of the file at `path`; the error names it.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| tls_error(Some(path), TlsError::Read(e)))
}

fn tls_error(path: Option<&Path>, cause: TlsError) -> Error {
    Error::Tls {
        path: path.map(PathBuf::from),
        cause,
    }
}

/// PEM text and the file it came from, if any, which its errors name.
pub(crate) struct Pem<'a> {
    /// The text.
    pub(crate) text: &'a [u8],
    /// Its file.
    pub(crate) path: Option<&'a Path>,
}

impl Pem<'_> {
    /// The [`Error::Tls`] of `cause` in this text.
    pub(crate) fn error(&self, cause: TlsError) -> Error {
        tls_error(self.path, cause)
    }

    /// The PEM sections, in order.
    fn sections(&self) -> impl Iterator<Item = Result<(SectionKind, Vec<u8>), Error>> + '_ {
        <(SectionKind, Vec<u8>)>::pem_slice_iter(self.text)
            .map(|section| section.map_err(|e| self.error(TlsError::Pem(e.into()))))
    }

    /// The certificates, in order.
    pub(crate) fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, Error> {
        let mut certs = Vec::new();
        for section in self.sections() {
            let (kind, der) = section?;
            if kind == SectionKind::Certificate {
                certs.push(CertificateDer::from(der));
            }
        }
        Ok(certs)
    }

    /// The first private key; an encrypted one is refused.
    fn private_key(&self) -> Result<Option<PrivateKeyDer<'static>>, Error> {
        if is_encrypted(self.text) {
            let path = self.path.map(Path::to_owned);
            return Err(self.error(TlsError::EncryptedKey { path }));
        }
        for section in self.sections() {
            let (kind, der) = section?;
            if let Some(key) = PrivateKeyDer::from_pem(kind, der) {
                return Ok(Some(key));
            }
        }
        Ok(None)
    }
}

/// Whether PEM text holds a PKCS#8 encrypted key or a traditional (OpenSSL) encrypted one.
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
    fn pem_text_in_memory_serves_and_its_errors_name_no_file() {
        let ck = self_signed();
        let (cert, key) = (ck.cert.pem(), ck.signing_key.serialize_pem());
        let tls = TlsConfig::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        assert_eq!(
            tls.server_config().alpn_protocols,
            vec![b"http/1.1".to_vec()]
        );
        let both = format!("{key}{cert}");
        TlsConfig::from_pem(both.as_bytes(), both.as_bytes()).unwrap();

        let other_key = self_signed().signing_key.serialize_pem();
        let cases = [
            (key.as_str(), key.as_str(), "no certificate"),
            (cert.as_str(), cert.as_str(), "no private key"),
            (
                cert.as_str(),
                other_key.as_str(),
                "does not match the first certificate",
            ),
            (
                cert.as_str(),
                "-----BEGIN PRIVATE KEY-----\nMIIB\n",
                "not valid PEM",
            ),
        ];
        for (cert, key, want) in cases {
            let err = TlsConfig::from_pem(cert.as_bytes(), key.as_bytes()).unwrap_err();
            assert!(matches!(err, Error::Tls { path: None, .. }), "{err:?}");
            let text = err.to_string();
            assert!(text.starts_with("TLS: ") && text.contains(want), "{text}");
        }
        let encrypted = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBX\n\
                         -----END ENCRYPTED PRIVATE KEY-----\n";
        let err = TlsConfig::from_pem(cert.as_bytes(), encrypted.as_bytes()).unwrap_err();
        assert!(
            err.to_string().contains("openssl pkey -in key.pem"),
            "{err}"
        );
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
            matches!(&err, Error::Tls { cause: TlsError::KeyMismatch { cert: c }, .. }
                if c.as_deref() == Some(&*cert)),
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
        // The TLS library's own error is the cause's source, not a public type of wsloop's.
        let err = TlsConfig::from_pem_files(&cert, Some(&junk)).unwrap_err();
        let Error::Tls { cause, .. } = &err else {
            panic!("{err:?}")
        };
        assert!(matches!(cause, TlsError::UnusableKey(_)), "{cause:?}");
        let source = std::error::Error::source(cause).expect("a source");
        assert!(text.ends_with(&source.to_string()), "{text} / {source}");
    }
}
