//! TLS for listeners: a rustls server configuration built from PEM files (ring provider, TLS 1.2
//! and 1.3 only, optional or required client certificates checked against a CA), held in an
//! [`ArcSwap`] so that a reload changes what new handshakes see while established connections
//! keep the configuration they were made with.

use crate::cert::subject_cn;
use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// The protocol versions offered: TLS 1.3 and 1.2; 1.0 and 1.1 are not implemented by rustls.
pub static PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// TLS settings of one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM file with the server certificate chain (leaf first).
    pub cert: PathBuf,
    /// PEM file with the server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM file with the CA certificates that client certificates must chain to. Without it no
    /// client certificate is asked for.
    pub ca: Option<PathBuf>,
    /// Refuse clients that present no valid certificate (needs `ca`). When false and `ca` is
    /// set, a certificate is asked for, checked when given, and optional.
    pub require_client_cert: bool,
    /// Use the client certificate's subject CN as the MQTT username (Mosquitto's
    /// `use_identity_as_username`; needs `ca`). See [`crate::Accepted::cert_username`].
    pub cn_as_username: bool,
}

impl TlsSettings {
    /// Server-only TLS with `cert` and `key`.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            cert: cert.into(),
            key: key.into(),
            ca: None,
            require_client_cert: false,
            cn_as_username: false,
        }
    }

    fn files(&self) -> impl Iterator<Item = &Path> {
        [
            Some(self.cert.as_path()),
            Some(self.key.as_path()),
            self.ca.as_deref(),
        ]
        .into_iter()
        .flatten()
    }
}

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: bad PEM: {source}", path.display())]
    Pem {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{}: no PEM certificate found", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: no PEM private key found", path.display())]
    NoKey { path: PathBuf },
    #[error("CA file {}: {source}", path.display())]
    Ca {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("certificate and key rejected: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("require_client_cert needs a CA file (ca) to check client certificates against")]
    ClientCertWithoutCa,
    #[error("cn_as_username needs a CA file (ca): only verified certificates can name a user")]
    CnAsUsernameWithoutCa,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a whole file first, so that a certificate and key replaced while we read are at worst
/// a mismatching pair (which rustls refuses), never half a file.
fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|source| match source {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_owned(),
        },
        source => TlsError::Pem {
            path: path.to_owned(),
            source,
        },
    })
}

fn client_verifier(
    settings: &TlsSettings,
    provider: &Arc<CryptoProvider>,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, TlsError> {
    let Some(ca) = &settings.ca else {
        if settings.require_client_cert {
            return Err(TlsError::ClientCertWithoutCa);
        }
        if settings.cn_as_username {
            return Err(TlsError::CnAsUsernameWithoutCa);
        }
        return Ok(None);
    };
    let mut roots = RootCertStore::empty();
    for cert in certs(ca)? {
        roots.add(cert).map_err(|source| TlsError::Ca {
            path: ca.clone(),
            source,
        })?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let builder = if settings.require_client_cert {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    Ok(Some(builder.build()?))
}

/// Builds a rustls server configuration from the files named in `settings`.
pub fn build_config(settings: &TlsSettings) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let chain = certs(&settings.cert)?;
    let key = key(&settings.key)?;
    let verifier = client_verifier(settings, &provider)?;
    let builder =
        ServerConfig::builder_with_provider(provider).with_protocol_versions(PROTOCOL_VERSIONS)?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    // Checks that the key matches the leaf certificate.
    Ok(builder.with_single_cert(chain, key)?)
}

/// Size and modification time of each file, to notice replaced files.
type Fingerprint = Vec<Option<(SystemTime, u64)>>;

fn fingerprint(settings: &TlsSettings) -> Fingerprint {
    settings
        .files()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

/// A TLS server configuration that can be reloaded from its files without a restart.
pub struct ReloadableTls {
    settings: TlsSettings,
    config: ArcSwap<ServerConfig>,
    /// The files' fingerprint when last (re)loaded or tried.
    seen: Mutex<Fingerprint>,
}

impl std::fmt::Debug for ReloadableTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadableTls")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl ReloadableTls {
    /// Loads the files; fails if they do not make a usable configuration.
    pub fn new(settings: TlsSettings) -> Result<Self, TlsError> {
        let seen = fingerprint(&settings);
        let config = build_config(&settings)?;
        Ok(Self {
            settings,
            config: ArcSwap::from_pointee(config),
            seen: Mutex::new(seen),
        })
    }

    /// The settings this configuration is built from.
    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }

    /// The configuration new handshakes use.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.load_full()
    }

    /// Reads the files again and, if they make a valid configuration, uses it for new
    /// handshakes. On error the previous configuration stays in use. Established connections
    /// are never affected. Reads files synchronously (they are small).
    pub fn reload(&self) -> Result<(), TlsError> {
        let seen = fingerprint(&self.settings);
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = seen;
        let config = build_config(&self.settings)?;
        self.config.store(Arc::new(config));
        Ok(())
    }

    /// Reloads if any file's size or modification time changed since the last load or attempt;
    /// `Ok(true)` when a new configuration is in use. A failed attempt is not repeated until the
    /// files change again.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = fingerprint(&self.settings);
        if *self.seen.lock().unwrap_or_else(|e| e.into_inner()) == now {
            return Ok(false);
        }
        self.reload().map(|()| true)
    }

    /// Polls the files every `every` and reloads when they change, logging the outcome. Stops
    /// when the configuration is dropped. Needs a tokio runtime.
    pub fn spawn_watcher(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(tls) = weak.upgrade() else { return };
                match tls.reload_if_changed() {
                    Ok(true) => {
                        tracing::info!(cert = %tls.settings.cert.display(), "TLS certificates reloaded")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "TLS files changed but cannot be loaded; keeping the previous ones")
                    }
                }
            }
        })
    }

    /// Runs the server side of a TLS handshake on `io` with the current configuration. Returns
    /// the stream and the subject CN of the client's certificate when it presented one (it has
    /// then been verified against the CA). The caller bounds the time it may take.
    pub async fn accept<IO>(&self, io: IO) -> io::Result<(TlsStream<IO>, Option<String>)>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let stream = TlsAcceptor::from(self.config()).accept(io).await?;
        let cn = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| subject_cn(c));
        Ok((stream, cn))
    }
}
