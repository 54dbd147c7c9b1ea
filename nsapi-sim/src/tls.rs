//! HTTPS for the simulator: a test CA made fresh at start, a server certificate it signs for
//! `localhost`, `127.0.0.1` and `::1`, and a second, unrelated CA with its own certificate for
//! the same names, served instead while `tls_untrusted` is set (to play "unknown issuer").
//! Keys live in memory only; nothing is written to disk.

use std::io;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

/// The names the server certificate is valid for.
pub(crate) const SERVER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// One CA and the server configuration whose certificate it signed.
struct Authority {
    ca_pem: String,
    config: Arc<ServerConfig>,
}

/// The simulator's TLS material: the trusted CA (handed to tests) and the unknown one.
pub(crate) struct Tls {
    trusted: Authority,
    untrusted: Authority,
}

fn tls_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("TLS setup: {e}"))
}

impl Tls {
    /// Make both CAs and their server certificates (ECDSA P-256, with ring).
    pub fn generate() -> io::Result<Tls> {
        let suffix = format!("{:08x}", rand::random::<u32>());
        Ok(Tls {
            trusted: Authority::generate(&format!("nsapi-sim test CA {suffix}"))?,
            untrusted: Authority::generate(&format!("nsapi-sim untrusted CA {suffix}"))?,
        })
    }

    /// The PEM of the CA that signs the certificate served normally.
    pub fn ca_pem(&self) -> &str {
        &self.trusted.ca_pem
    }

    /// The PEM of the other CA, whose certificate is served while `untrusted` is set.
    pub fn untrusted_ca_pem(&self) -> &str {
        &self.untrusted.ca_pem
    }

    /// The acceptor for one new connection.
    pub fn acceptor(&self, untrusted: bool) -> TlsAcceptor {
        let authority = if untrusted {
            &self.untrusted
        } else {
            &self.trusted
        };
        TlsAcceptor::from(authority.config.clone())
    }
}

impl Authority {
    fn generate(ca_name: &str) -> io::Result<Authority> {
        let mut ca_params = CertificateParams::default();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, ca_name);
        ca_params
            .distinguished_name
            .push(DnType::OrganizationName, "nsapi-sim");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(tls_error)?)
            .map_err(tls_error)?;

        let names: Vec<String> = SERVER_NAMES.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).map_err(tls_error)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(tls_error)?;
        let cert = params.signed_by(&key, &ca).map_err(tls_error)?;

        let chain = vec![CertificateDer::from(cert.der().to_vec())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(tls_error)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(tls_error)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Authority {
            ca_pem: ca.pem(),
            config: Arc::new(config),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_two_distinct_cas() {
        let tls = Tls::generate().unwrap();
        assert!(tls.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(
            tls.untrusted_ca_pem()
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
        assert_ne!(tls.ca_pem(), tls.untrusted_ca_pem());
    }
}
