//! TLS client configuration (rustls with the ring provider).
//!
//! Like mosquitto's clients: `ca_file` holds the trusted CA certificates (PEM), `cert_file` and
//! `key_file` an optional client certificate and its key (PEM), and `insecure` keeps verifying
//! the server's certificate chain but skips the check that the certificate names the host.

use crate::connection::ClientError;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// TLS settings of a connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file with the CA certificates to trust.
    pub ca_file: Option<PathBuf>,
    /// PEM file with the client certificate (chain), for brokers that require one.
    pub cert_file: Option<PathBuf>,
    /// PEM file with the client certificate's private key.
    pub key_file: Option<PathBuf>,
    /// Do not check that the server certificate names the host (the chain is still verified).
    pub insecure: bool,
    /// The name to verify the server certificate against; the host connected to by default.
    pub server_name: Option<String>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            ClientError::Tls(format!(
                "cannot read certificates from {}: {e}",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(ClientError::Tls(format!(
            "no PEM certificate found in {}",
            path.display()
        )));
    }
    Ok(certs)
}

impl TlsOptions {
    /// Loads the files and builds the rustls client configuration.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, ClientError> {
        let ca_file = self.ca_file.as_deref().ok_or_else(|| {
            ClientError::Tls("a CA file is needed to verify the server (--cafile)".into())
        })?;
        let mut roots = RootCertStore::empty();
        for cert in read_certs(ca_file)? {
            roots.add(cert).map_err(|e| {
                ClientError::Tls(format!("bad CA certificate in {}: {e}", ca_file.display()))
            })?;
        }
        let provider = provider();
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| ClientError::Tls(format!("CA certificates: {e}")))?;
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        let builder = if self.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoHostnameVerifier(verifier)))
        } else {
            builder.with_webpki_verifier(verifier)
        };
        let config = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                let certs = read_certs(cert)?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                    ClientError::Tls(format!(
                        "cannot read private key from {}: {e}",
                        key.display()
                    ))
                })?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| ClientError::Tls(format!("client certificate: {e}")))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(ClientError::Tls(
                    "a client certificate needs both --cert and --key".into(),
                ));
            }
        };
        Ok(Arc::new(config))
    }

    /// The server name to verify: `server_name`, else `host`.
    pub fn server_name(&self, host: &str) -> Result<ServerName<'static>, ClientError> {
        let name = self.server_name.as_deref().unwrap_or(host);
        ServerName::try_from(name.to_owned())
            .map_err(|_| ClientError::Tls(format!("invalid server name {name:?}")))
    }
}

/// Verifies the chain like webpki but accepts a certificate for another host name.
#[derive(Debug)]
struct NoHostnameVerifier(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for NoHostnameVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

    fn files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["client".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let write = |name: &str, text: String| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        (
            write("ca.pem", ca.pem()),
            write("client.pem", cert.pem()),
            write("client.key", key.serialize_pem()),
        )
    }

    #[test]
    fn loads_ca_and_client_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = files(dir.path());
        let mut opts = TlsOptions {
            ca_file: Some(ca),
            ..TlsOptions::default()
        };
        opts.client_config().unwrap();
        opts.insecure = true;
        opts.client_config().unwrap();
        opts.cert_file = Some(cert);
        opts.key_file = Some(key);
        let config = opts.client_config().unwrap();
        assert!(config.client_auth_cert_resolver.has_certs());
        assert!(opts.server_name("127.0.0.1").is_ok());
        assert!(opts.server_name("localhost").is_ok());
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, _key) = files(dir.path());
        let err = |o: TlsOptions| o.client_config().expect_err("an error").to_string();
        assert!(err(TlsOptions::default()).contains("CA file"));
        let missing = dir.path().join("missing.pem");
        assert!(
            err(TlsOptions {
                ca_file: Some(missing.clone()),
                ..TlsOptions::default()
            })
            .contains(&missing.display().to_string())
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem").unwrap();
        assert!(
            err(TlsOptions {
                ca_file: Some(empty),
                ..TlsOptions::default()
            })
            .contains("no PEM certificate")
        );
        assert!(
            err(TlsOptions {
                ca_file: Some(ca.clone()),
                cert_file: Some(cert.clone()),
                ..TlsOptions::default()
            })
            .contains("both --cert and --key")
        );
        // A certificate where the key should be.
        assert!(
            err(TlsOptions {
                ca_file: Some(ca),
                cert_file: Some(cert.clone()),
                key_file: Some(cert),
                ..TlsOptions::default()
            })
            .contains("private key")
        );
    }
}
