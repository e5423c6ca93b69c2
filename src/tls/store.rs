//! TLS: parsing PEM pairs into rustls keys, the swappable certificate behind every new
//! handshake, and the rustls server config (TLS 1.2 and 1.3, ALPN h2 and http/1.1).

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("no certificate found in the PEM data")]
    NoCertificate,
    #[error("cannot parse the certificate PEM: {0}")]
    CertPem(String),
    #[error("cannot parse the private key PEM: {0}")]
    KeyPem(String),
    #[error("unusable certificate/key pair: {0}")]
    Pair(rustls::Error),
    #[error("cannot read the certificate's validity: {0}")]
    Validity(String),
    #[error("client CA: {0}")]
    ClientCa(String),
    #[error("TLS configuration: {0}")]
    Config(rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A serving certificate chain and key, checked to belong together.
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    /// The leaf's notBefore and notAfter, as Unix times.
    pub not_before: i64,
    pub not_after: i64,
}

/// Parses a PEM chain (leaf first, then intermediates) and its private key.
pub fn load_pair(cert_pem: &[u8], key_pem: &[u8]) -> Result<Loaded, TlsError> {
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::CertPem(e.to_string()))?;
    let leaf = certs.first().ok_or(TlsError::NoCertificate)?;
    let (_, parsed) =
        x509_parser::parse_x509_certificate(leaf).map_err(|e| TlsError::Validity(e.to_string()))?;
    let not_before = parsed.validity().not_before.timestamp();
    let not_after = parsed.validity().not_after.timestamp();
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::KeyPem(e.to_string()))?;
    let key = CertifiedKey::from_der(certs, key, &provider()).map_err(TlsError::Pair)?;
    Ok(Loaded {
        key: Arc::new(key),
        not_before,
        not_after,
    })
}

/// The certificate in force; a reload swaps it, and each new handshake reads it.
#[derive(Debug)]
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    pub fn new(key: Arc<CertifiedKey>) -> CertStore {
        CertStore {
            current: RwLock::new(key),
        }
    }

    pub fn set(&self, key: Arc<CertifiedKey>) {
        // A poisoned lock still holds a valid Arc: replace it rather than give up.
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = key;
    }

    pub(crate) fn get(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

/// Whether a client that trusts the CAs in `bundle_pem` (the webhook configuration's
/// caBundle) accepts `cert_pem` for `name` now, as kube-apiserver checks it.
pub fn trusted_by(cert_pem: &[u8], bundle_pem: &[u8], name: &str) -> bool {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(bundle_pem).flatten() {
        let _ = roots.add(cert);
    }
    let Ok(leaf) = CertificateDer::from_pem_slice(cert_pem) else {
        return false;
    };
    let Ok(name) = rustls::pki_types::ServerName::try_from(name.to_string()) else {
        return false;
    };
    let Ok(verifier) =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
    else {
        return false;
    };
    verifier
        .verify_server_cert(&leaf, &[], &name, &[], UnixTime::now())
        .is_ok()
}

/// A verifier of client certificates signed by the CAs in `pem`.
pub fn client_verifier(pem: &[u8]) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| TlsError::ClientCa(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| TlsError::ClientCa(e.to_string()))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| TlsError::ClientCa(e.to_string()))
}

/// The client-certificate verifier in force; a reload of `--client-ca` swaps it and each
/// new handshake uses the current one. It sends no CA hints (they would have to outlive a
/// swap); clients such as kube-apiserver present their configured certificate anyway.
///
/// With an allow-list of names, a certificate the CA signed is accepted only when its
/// subject's common name or one of its DNS names is on the list: a CA that also signs other
/// clients' certificates (a cluster's front-proxy or client CA) does not admit them all.
#[derive(Debug)]
pub struct ClientCa {
    current: RwLock<Arc<dyn ClientCertVerifier>>,
    allowed_names: Vec<String>,
}

impl ClientCa {
    pub fn new(verifier: Arc<dyn ClientCertVerifier>, allowed_names: Vec<String>) -> ClientCa {
        ClientCa {
            current: RwLock::new(verifier),
            allowed_names,
        }
    }

    pub fn set(&self, verifier: Arc<dyn ClientCertVerifier>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = verifier;
    }

    fn get(&self) -> Arc<dyn ClientCertVerifier> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn name_allowed(&self, end_entity: &CertificateDer<'_>) -> bool {
        self.allowed_names.is_empty()
            || certificate_names(end_entity)
                .iter()
                .any(|n| self.allowed_names.contains(n))
    }
}

/// The subject's common names and the DNS names of a certificate (none if it does not parse).
fn certificate_names(der: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push((*dns).to_string());
            }
        }
    }
    names
}

impl ClientCertVerifier for ClientCa {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .get()
            .verify_client_cert(end_entity, intermediates, now)?;
        if !self.name_allowed(end_entity) {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.get().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.get().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.get().supported_verify_schemes()
    }
}

/// The server config: certificates from `store`; client certificates required and verified
/// by `client_ca` when given.
pub fn server_config(
    store: Arc<CertStore>,
    client_ca: Option<Arc<ClientCa>>,
) -> Result<ServerConfig, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(verifier) => builder.with_client_cert_verifier(verifier),
    };
    let mut config = builder.with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Why a TLS handshake failed: a small fixed set, for the metric's `reason` label and the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// mTLS is on and the client sent no certificate.
    NoClientCertificate,
    /// The client's certificate is not signed by the client CA.
    UnknownCa,
    /// The client's certificate is unusable: expired, not X.509 v3, wrong usage, malformed.
    BadCertificate,
    /// Not TLS, no common version or cipher, a bad message or a fatal alert from the client.
    Protocol,
    /// The client went away mid-handshake (TCP probes, scanners).
    Closed,
    /// The handshake did not finish in time.
    Timeout,
    /// mTLS with an allow-list: the client's certificate, signed by the CA, names no one on it.
    NameNotAllowed,
}

impl HandshakeFailure {
    pub const ALL: [HandshakeFailure; 7] = [
        HandshakeFailure::NoClientCertificate,
        HandshakeFailure::UnknownCa,
        HandshakeFailure::BadCertificate,
        HandshakeFailure::Protocol,
        HandshakeFailure::Closed,
        HandshakeFailure::Timeout,
        HandshakeFailure::NameNotAllowed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::NoClientCertificate => "no-client-certificate",
            HandshakeFailure::UnknownCa => "unknown-ca",
            HandshakeFailure::BadCertificate => "bad-certificate",
            HandshakeFailure::Protocol => "protocol",
            HandshakeFailure::Closed => "closed",
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::NameNotAllowed => "name-not-allowed",
        }
    }

    /// The reason for an error of `TlsAcceptor::accept`.
    pub fn of(error: &std::io::Error) -> HandshakeFailure {
        match error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        {
            Some(rustls::Error::NoCertificatesPresented) => HandshakeFailure::NoClientCertificate,
            Some(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)) => {
                HandshakeFailure::UnknownCa
            }
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )) => HandshakeFailure::NameNotAllowed,
            Some(rustls::Error::InvalidCertificate(_)) => HandshakeFailure::BadCertificate,
            Some(_) => HandshakeFailure::Protocol,
            None => HandshakeFailure::Closed,
        }
    }

    /// A refusal says something about the client's TLS setup that an operator should see;
    /// closed and timed-out handshakes are counted only.
    pub fn is_refusal(self) -> bool {
        !matches!(self, HandshakeFailure::Closed | HandshakeFailure::Timeout)
    }
}

/// At most one log line per interval, however many events: a scanner cannot flood the log.
pub struct RateLimit {
    interval: Duration,
    /// When the last line was written, and the events held back since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl RateLimit {
    pub fn new(interval: Duration) -> RateLimit {
        RateLimit {
            interval,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(held back since the last line)` when a line may be written at `now`.
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (last, held) = &mut *state;
        if last.is_some_and(|t| now.duration_since(t) < self.interval) {
            *held += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_a_generated_pair_and_rejects_a_mismatched_one() {
        let a = crate::tls::generate::generate(&["localhost".into()]).unwrap();
        let b = crate::tls::generate::generate(&["localhost".into()]).unwrap();
        let loaded = load_pair(a.cert_pem.as_bytes(), a.key_pem.as_bytes()).unwrap();
        assert!(loaded.not_after > 1_700_000_000);
        let err = load_pair(a.cert_pem.as_bytes(), b.key_pem.as_bytes())
            .err()
            .unwrap();
        assert!(matches!(err, TlsError::Pair(_)), "{err}");
        assert!(matches!(
            load_pair(b"", a.key_pem.as_bytes()).err().unwrap(),
            TlsError::NoCertificate
        ));
    }

    #[test]
    fn chain_with_intermediate_is_accepted() {
        let a = crate::tls::generate::generate(&["localhost".into()]).unwrap();
        let chain = format!("{}{}", a.cert_pem, a.ca_pem);
        let loaded = load_pair(chain.as_bytes(), a.key_pem.as_bytes()).unwrap();
        assert_eq!(loaded.key.cert.len(), 2);
    }

    #[test]
    fn rate_limit_admits_one_line_per_interval_and_counts_the_rest() {
        let limit = RateLimit::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limit.admit(t0), Some(0));
        for i in 1..=5 {
            assert_eq!(limit.admit(t0 + Duration::from_secs(i)), None);
        }
        assert_eq!(limit.admit(t0 + Duration::from_secs(10)), Some(5));
        assert_eq!(limit.admit(t0 + Duration::from_secs(11)), None);
    }

    #[test]
    fn handshake_failures_are_classified_from_the_rustls_error() {
        use std::io::{Error, ErrorKind};
        let of = |e: rustls::Error| HandshakeFailure::of(&Error::new(ErrorKind::InvalidData, e));
        assert_eq!(
            of(rustls::Error::NoCertificatesPresented),
            HandshakeFailure::NoClientCertificate
        );
        assert_eq!(
            of(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            )),
            HandshakeFailure::UnknownCa
        );
        assert_eq!(
            of(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Expired
            )),
            HandshakeFailure::BadCertificate
        );
        assert_eq!(of(rustls::Error::DecryptError), HandshakeFailure::Protocol);
        assert_eq!(
            HandshakeFailure::of(&Error::from(ErrorKind::UnexpectedEof)),
            HandshakeFailure::Closed
        );
        assert!(
            !HandshakeFailure::Timeout.is_refusal() && HandshakeFailure::UnknownCa.is_refusal()
        );
    }
}
