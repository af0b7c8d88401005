//! Mutual TLS on every gRPC link: the `--tls-cert/--tls-key/--tls-ca` (or
//! `--insecure`) flags every server and client flattens into its config,
//! and the helpers that turn them into a tonic server builder and client
//! endpoints. Each party presents the certificate `pate certs` issued it
//! and accepts only peers signed by the same CA; what a peer may ask is
//! then decided by its role (see [`crate::auth`]). Clients also check the
//! server's role, so no other party's key can pose as the aggregator to a
//! student, or as a teacher to the aggregator.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig};

use crate::auth::Role;

/// Transport security flags, the same for the three binaries.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsArgs {
    /// This party's certificate (PEM), issued by `pate certs init`; served to
    /// clients and presented to servers.
    #[arg(long, env = "PATE_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "PATE_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// The deployment's CA certificate (PEM): peers must present a
    /// certificate it signed.
    #[arg(long, env = "PATE_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Plaintext gRPC with no authentication and no roles, for a trusted
    /// local network only (logs a warning). Without it, the three --tls-*
    /// files are required.
    #[arg(long, env = "PATE_INSECURE", conflicts_with_all = ["tls_cert", "tls_key", "tls_ca"])]
    pub insecure: bool,
}

/// Why the transport could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Neither TLS files nor --insecure.
    #[error("no transport security configured: pass --tls-cert, --tls-key and --tls-ca (create them with `pate certs init`), or --insecure for plaintext on a trusted local network")]
    NotConfigured,
    /// Some but not all of the three files.
    #[error("incomplete TLS configuration: {0} missing (all of --tls-cert, --tls-key and --tls-ca are needed)")]
    Incomplete(String),
    /// --insecure together with TLS files.
    #[error("--insecure conflicts with --tls-cert/--tls-key/--tls-ca: choose one")]
    Conflict,
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file is not the PEM it should be.
    #[error("{path} is not a PEM {what}")]
    NotPem {
        /// The file.
        path: PathBuf,
        /// What was expected.
        what: &'static str,
    },
    /// The certificate carries no usable role.
    #[error("{path}: {source}")]
    Role {
        /// The certificate file.
        path: PathBuf,
        /// Why it names no role.
        source: crate::auth::AuthError,
    },
    /// The CA file holds no usable certificate.
    #[error("{path}: no usable CA certificate ({reason})")]
    BadCa {
        /// The CA file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// tonic refused the configuration.
    #[error("TLS configuration: {0}")]
    Tonic(#[from] tonic::transport::Error),
    /// An address does not parse.
    #[error("bad address {addr:?}: {reason}")]
    BadAddress {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
}

struct Material {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Vec<u8>,
    roots: Arc<RootCertStore>,
    role: Role,
}

/// The kind of server a client means to reach: the handshake fails unless
/// the server's certificate names that role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerRole {
    /// `pate://aggregator` (what students connect to).
    Aggregator,
    /// Any `pate://teacher/<i>` (what the aggregator and the operator connect to).
    Teacher,
}

impl ServerRole {
    fn admits(self, role: &Role) -> bool {
        match self {
            ServerRole::Aggregator => *role == Role::Aggregator,
            ServerRole::Teacher => matches!(role, Role::Teacher(_)),
        }
    }
}

impl fmt::Display for ServerRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServerRole::Aggregator => "pate://aggregator",
            ServerRole::Teacher => "a pate://teacher/<i>",
        })
    }
}

/// WebPKI verification against the deployment's CA (chain, validity, host
/// name), then the role check.
#[derive(Debug)]
struct RoleVerifier {
    inner: Arc<WebPkiServerVerifier>,
    expect: ServerRole,
}

impl ServerCertVerifier for RoleVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        match Role::from_cert_der(end_entity.as_ref()) {
            Ok(role) if self.expect.admits(&role) => Ok(verified),
            Ok(role) => Err(rustls::Error::General(format!("the server's certificate is {role}, expected {}", self.expect))),
            Err(e) => Err(rustls::Error::General(format!("the server's certificate: {e}"))),
        }
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

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn root_store(path: &Path, pem: &[u8]) -> Result<Arc<RootCertStore>, TlsError> {
    let bad = |reason: String| TlsError::BadCa { path: path.to_path_buf(), reason };
    let mut roots = RootCertStore::empty();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let block = block.map_err(|e| bad(e.to_string()))?;
        roots.add(CertificateDer::from(block.contents)).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in the file".to_string()));
    }
    Ok(Arc::new(roots))
}

/// The loaded transport: mutual TLS with one identity, or plaintext.
#[derive(Clone)]
pub struct Transport {
    tls: Option<Arc<Material>>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.tls {
            Some(m) => write!(f, "Transport(mtls as {})", m.role),
            None => f.write_str("Transport(insecure)"),
        }
    }
}

fn read(path: &Path, marker: &str, what: &'static str) -> Result<Vec<u8>, TlsError> {
    let data = std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })?;
    if !String::from_utf8_lossy(&data).contains(marker) {
        return Err(TlsError::NotPem { path: path.to_path_buf(), what });
    }
    Ok(data)
}

impl TlsArgs {
    /// The files of party `role` in a `pate certs` directory.
    pub fn for_party(dir: &Path, role: Role) -> TlsArgs {
        let (cert, key) = crate::certs::party_files(dir, role);
        TlsArgs { tls_cert: Some(cert), tls_key: Some(key), tls_ca: Some(dir.join("ca.pem")), insecure: false }
    }

    /// Plaintext.
    pub fn insecure() -> TlsArgs {
        TlsArgs { insecure: true, ..TlsArgs::default() }
    }

    /// The same settings as command-line flags, for a child process.
    pub fn to_args(&self) -> Vec<String> {
        if self.insecure {
            return vec!["--insecure".to_string()];
        }
        let mut out = Vec::new();
        for (flag, v) in [("--tls-cert", &self.tls_cert), ("--tls-key", &self.tls_key), ("--tls-ca", &self.tls_ca)] {
            if let Some(p) = v {
                out.extend([flag.to_string(), p.display().to_string()]);
            }
        }
        out
    }

    /// Reads and checks the files (or accepts --insecure, with a warning).
    pub fn load(&self) -> Result<Transport, TlsError> {
        let given = [("--tls-cert", &self.tls_cert), ("--tls-key", &self.tls_key), ("--tls-ca", &self.tls_ca)];
        let missing: Vec<&str> = given.iter().filter(|(_, v)| v.is_none()).map(|(f, _)| *f).collect();
        if self.insecure {
            if missing.len() < 3 {
                return Err(TlsError::Conflict);
            }
            tracing::warn!("--insecure: gRPC in plaintext with no authentication; anyone who reaches these ports can read the traffic and pose as any party");
            return Ok(Transport { tls: None });
        }
        match missing.len() {
            0 => {}
            3 => return Err(TlsError::NotConfigured),
            _ => return Err(TlsError::Incomplete(missing.join(", "))),
        }
        let (cert_path, key_path, ca_path) = (
            self.tls_cert.as_deref().unwrap_or(Path::new("")),
            self.tls_key.as_deref().unwrap_or(Path::new("")),
            self.tls_ca.as_deref().unwrap_or(Path::new("")),
        );
        let cert = read(cert_path, "BEGIN CERTIFICATE", "certificate")?;
        let key = read(key_path, "PRIVATE KEY", "private key")?;
        let ca = read(ca_path, "BEGIN CERTIFICATE", "certificate")?;
        let not_pem = || TlsError::NotPem { path: cert_path.to_path_buf(), what: "certificate" };
        let (_, der) = x509_parser::pem::parse_x509_pem(&cert).map_err(|_| not_pem())?;
        let role = Role::from_cert_der(&der.contents).map_err(|source| TlsError::Role { path: cert_path.to_path_buf(), source })?;
        let roots = root_store(ca_path, &ca)?;
        tracing::info!(identity = %role, "mutual TLS on");
        Ok(Transport { tls: Some(Arc::new(Material { cert, key, ca, roots, role })) })
    }
}

impl Transport {
    /// Plaintext, without the warning (in-process experiments that never
    /// open a port to anyone else).
    pub fn plaintext() -> Transport {
        Transport { tls: None }
    }

    /// Whether mutual TLS is on.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// This party's role, from its own certificate (`None` in plaintext).
    pub fn role(&self) -> Option<Role> {
        self.tls.as_ref().map(|m| m.role)
    }

    /// A server builder that, with TLS, presents this party's certificate
    /// and requires a client certificate signed by the CA.
    pub fn server(&self) -> Result<Server, TlsError> {
        let builder = Server::builder();
        let Some(m) = &self.tls else { return Ok(builder) };
        let config = ServerTlsConfig::new()
            .identity(Identity::from_pem(&m.cert, &m.key))
            .client_ca_root(Certificate::from_pem(&m.ca))
            .client_auth_optional(false);
        Ok(builder.tls_config(config)?)
    }

    /// A client endpoint for `addr` (`host:port`, or a URL whose scheme is
    /// replaced): with TLS it is `https`, checks the server's certificate
    /// against the CA, the host name and the role `server`, and presents
    /// this party's own.
    pub fn endpoint(&self, addr: &str, server: ServerRole) -> Result<Endpoint, TlsError> {
        let hostport = addr.split_once("://").map_or(addr, |(_, rest)| rest);
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let bad = |e: &dyn std::fmt::Display| TlsError::BadAddress { addr: addr.to_string(), reason: e.to_string() };
        let ep = Endpoint::from_shared(format!("{scheme}://{hostport}")).map_err(|e| bad(&e))?;
        let Some(m) = &self.tls else { return Ok(ep) };
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::clone(&m.roots), Arc::new(rustls::crypto::ring::default_provider()))
            .build()
            .map_err(|e| TlsError::BadCa { path: PathBuf::from("--tls-ca"), reason: e.to_string() })?;
        let verifier = Arc::new(RoleVerifier { inner, expect: server });
        let config = ClientTlsConfig::new().identity(Identity::from_pem(&m.cert, &m.key));
        Ok(ep.tls_config_with_verifier(config, verifier)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neither_tls_nor_insecure_is_a_clear_error() {
        assert!(matches!(TlsArgs::default().load(), Err(TlsError::NotConfigured)));
        let partial = TlsArgs { tls_cert: Some("a.pem".into()), ..TlsArgs::default() };
        let err = partial.load().expect_err("incomplete");
        assert!(err.to_string().contains("--tls-key, --tls-ca missing"), "{err}");
        let both = TlsArgs { insecure: true, ..partial };
        assert!(matches!(both.load(), Err(TlsError::Conflict)));
        assert!(!TlsArgs::insecure().load().expect("insecure").is_tls());
    }

    #[test]
    fn loads_a_provisioned_party_and_refuses_swapped_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        crate::certs::init(dir.path(), 1, 1, &[], false).expect("init");
        let args = TlsArgs::for_party(dir.path(), Role::Teacher(0));
        let t = args.load().expect("load");
        assert_eq!(t.role(), Some(Role::Teacher(0)));
        assert_eq!(args.to_args().len(), 6);
        let swapped = TlsArgs { tls_key: args.tls_cert.clone(), ..args };
        assert!(matches!(swapped.load(), Err(TlsError::NotPem { what: "private key", .. })));
    }

    #[tokio::test]
    async fn endpoints_use_https_only_with_tls() {
        let ep = Transport::plaintext().endpoint("127.0.0.1:1", ServerRole::Teacher).expect("endpoint");
        assert_eq!(ep.uri().scheme_str(), Some("http"));
        let dir = tempfile::tempdir().expect("tempdir");
        crate::certs::init(dir.path(), 1, 1, &[], false).expect("init");
        let t = TlsArgs::for_party(dir.path(), Role::Aggregator).load().expect("load");
        let ep = t.endpoint("http://127.0.0.1:1", ServerRole::Teacher).expect("endpoint");
        assert_eq!(ep.uri().scheme_str(), Some("https"), "an http:// address is upgraded, never sent in clear");
        assert!(t.server().is_ok());
    }
}
