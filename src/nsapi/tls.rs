//! TLS for the NetSapiens API: the roots a client trusts (the system's, the operator's
//! `--ca-file`, and a credential's `spec.caBundle`), and a certificate check that, when it
//! refuses a server, names the certificate it refused (subject and issuer), so that the
//! credential's condition can say which CA is missing. Nothing here ever falls back to
//! plain http or to an unchecked connection.

use std::fmt;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore};

/// Makes rustls' ring provider the process default, which the Kubernetes client and the
/// NetSapiens client both use. Harmless when one is installed already.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// At most this many certificates are taken from one PEM bundle.
pub const MAX_BUNDLE_CERTIFICATES: usize = 100;

/// The certificates of a PEM bundle; an error names what is wrong (never the content).
pub fn parse_pem_bundle(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut certs = Vec::new();
    for (i, cert) in CertificateDer::pem_slice_iter(pem.as_bytes()).enumerate() {
        let cert = cert.map_err(|e| format!("certificate {} is not valid PEM ({e})", i + 1))?;
        x509_parser::parse_x509_certificate(&cert)
            .map_err(|_| format!("certificate {} is not a valid X.509 certificate", i + 1))?;
        certs.push(cert);
        if certs.len() > MAX_BUNDLE_CERTIFICATES {
            return Err(format!(
                "more than {MAX_BUNDLE_CERTIFICATES} certificates in one bundle"
            ));
        }
    }
    if certs.is_empty() {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) in it".to_owned());
    }
    Ok(certs)
}

/// The system's trusted roots (as `SSL_CERT_FILE`/`SSL_CERT_DIR` or the platform say).
pub fn system_roots() -> Vec<CertificateDer<'static>> {
    let loaded = rustls_native_certs::load_native_certs();
    for error in &loaded.errors {
        tracing::warn!(%error, "could not load some of the system's CA certificates");
    }
    loaded.certs
}

/// A root store of `certs`; certificates that cannot be roots are skipped.
pub fn root_store(certs: &[CertificateDer<'static>]) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let (_, ignored) = roots.add_parsable_certificates(certs.iter().cloned());
    if ignored > 0 {
        tracing::debug!(ignored, "some CA certificates cannot be used as roots");
    }
    roots
}

/// A client configuration trusting `roots`, whose refusals name the certificate refused.
pub fn client_config(roots: RootCertStore) -> Result<ClientConfig, String> {
    let inner = WebPkiServerVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|e| format!("no usable CA certificate ({e})"))?;
    let mut config = ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NamingVerifier { inner }))
        .with_no_client_auth();
    // The HTTP client speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A server certificate that the roots do not vouch for (or that is otherwise invalid).
#[derive(Clone, Debug)]
pub struct UntrustedCertificate {
    /// The certificate's subject, e.g. `CN=portal.example.com, O=Example`.
    pub subject: String,
    /// Its issuer.
    pub issuer: String,
    /// What the check found, e.g. "invalid peer certificate: UnknownIssuer".
    pub reason: String,
}

impl fmt::Display for UntrustedCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "certificate subject \"{}\", issuer \"{}\": {}",
            self.subject, self.issuer, self.reason
        )
    }
}

impl std::error::Error for UntrustedCertificate {}

/// The untrusted certificate behind an error, if that is what it is (found anywhere in its
/// chain of sources, including inside I/O errors).
pub fn untrusted_in(error: &(dyn std::error::Error + 'static)) -> Option<UntrustedCertificate> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(found) = from_rustls(error) {
            return Some(found);
        }
        if let Some(inner) = error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            && let Some(found) = untrusted_in(inner)
        {
            return Some(found);
        }
        next = error.source();
    }
    None
}

fn from_rustls(error: &(dyn std::error::Error + 'static)) -> Option<UntrustedCertificate> {
    match error.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(other))) => {
            other.downcast_ref::<UntrustedCertificate>().cloned()
        }
        _ => None,
    }
}

/// The webpki check, naming the certificate when it refuses one.
#[derive(Debug)]
struct NamingVerifier {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for NamingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|error| match error {
                rustls::Error::InvalidCertificate(reason) => {
                    let (subject, issuer) = names(end_entity);
                    let named = UntrustedCertificate {
                        subject,
                        issuer,
                        reason: describe(&reason),
                    };
                    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(
                        Arc::new(named),
                    )))
                }
                other => other,
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// What a certificate check found, in words.
fn describe(reason: &CertificateError) -> String {
    match reason {
        CertificateError::UnknownIssuer => "issued by a CA that is not trusted".to_owned(),
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "it has expired".to_owned()
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "it is not valid yet".to_owned()
        }
        other => other.to_string(),
    }
}

/// A certificate's subject and issuer, as RFC 4514 strings.
fn names(cert: &CertificateDer<'_>) -> (String, String) {
    match x509_parser::parse_x509_certificate(cert) {
        Ok((_, parsed)) => (parsed.subject().to_string(), parsed.issuer().to_string()),
        Err(_) => ("(unreadable)".to_owned(), "(unreadable)".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_must_hold_certificates() {
        assert!(
            parse_pem_bundle("")
                .unwrap_err()
                .contains("no PEM certificate")
        );
        assert!(
            parse_pem_bundle("hello")
                .unwrap_err()
                .contains("no PEM certificate")
        );
        let broken = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(parse_pem_bundle(broken).is_err());
    }

    #[test]
    fn an_untrusted_certificate_is_found_inside_io_errors() {
        let named = UntrustedCertificate {
            subject: "CN=localhost".into(),
            issuer: "CN=Other CA".into(),
            reason: "issued by a CA that is not trusted".into(),
        };
        let rustls_error =
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(named))));
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls_error);
        let found = untrusted_in(&io).expect("found");
        assert_eq!(found.subject, "CN=localhost");
        assert_eq!(
            found.to_string(),
            "certificate subject \"CN=localhost\", issuer \"CN=Other CA\": issued by a CA that is not trusted"
        );
        let plain = std::io::Error::other("connection refused");
        assert!(untrusted_in(&plain).is_none());
    }
}
