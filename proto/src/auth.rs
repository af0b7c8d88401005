//! Who is calling: the role and index a party's certificate carries (a SAN
//! URI `pate://aggregator`, `pate://teacher/<i>` or `pate://student/<j>`),
//! read from the peer certificate the TLS handshake already verified, and
//! the interceptor each server puts in front of its service so that only
//! the right role reaches a handler.

use std::fmt;

use tonic::{Request, Status};
use x509_parser::extensions::GeneralName;

/// URI scheme of the role SANs.
pub const ROLE_SCHEME: &str = "pate://";

/// A party of a PATE deployment, as its certificate names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// The trusted curator: the only party teachers answer.
    Aggregator,
    /// Teacher `i` (0-based, equal to its partition index).
    Teacher(u32),
    /// Student `j`: the only parties the aggregator labels for.
    Student(u32),
}

impl Role {
    /// The SAN URI that carries this role, e.g. `pate://teacher/3`.
    pub fn uri(&self) -> String {
        match self {
            Role::Aggregator => format!("{ROLE_SCHEME}aggregator"),
            Role::Teacher(i) => format!("{ROLE_SCHEME}teacher/{i}"),
            Role::Student(j) => format!("{ROLE_SCHEME}student/{j}"),
        }
    }

    /// The party's name: file stem of its certificate, DNS name in its
    /// server certificate, docker-compose service name (`teacher-3`).
    pub fn name(&self) -> String {
        match self {
            Role::Aggregator => "aggregator".to_string(),
            Role::Teacher(i) => format!("teacher-{i}"),
            Role::Student(j) => format!("student-{j}"),
        }
    }

    /// Parses a role SAN URI; `None` for anything else.
    pub fn from_uri(uri: &str) -> Option<Role> {
        let rest = uri.strip_prefix(ROLE_SCHEME)?;
        let index = |s: &str| s.parse::<u32>().ok().filter(|_| !s.starts_with('+'));
        match rest.split_once('/') {
            None if rest == "aggregator" => Some(Role::Aggregator),
            Some(("teacher", i)) => index(i).map(Role::Teacher),
            Some(("student", j)) => index(j).map(Role::Student),
            _ => None,
        }
    }

    /// The one role a DER certificate names. A certificate with no role, or
    /// with two (which `pate certs` never issues), names none.
    pub fn from_cert_der(der: &[u8]) -> Result<Role, AuthError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| AuthError::BadCertificate(e.to_string()))?;
        let san = cert.subject_alternative_name().map_err(|e| AuthError::BadCertificate(e.to_string()))?;
        let roles: Vec<Role> = san
            .into_iter()
            .flat_map(|ext| ext.value.general_names.iter())
            .filter_map(|n| match n {
                GeneralName::URI(uri) => Role::from_uri(uri),
                _ => None,
            })
            .collect();
        match roles.as_slice() {
            [role] => Ok(*role),
            [] => Err(AuthError::NoRole),
            _ => Err(AuthError::ManyRoles(roles.iter().map(Role::uri).collect::<Vec<_>>().join(", "))),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

/// Why a caller could not be identified.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// A TLS connection without a client certificate (mutual TLS forbids it).
    #[error("no client certificate: every party must present the certificate `pate certs` issued it")]
    NoCertificate,
    /// The certificate does not parse.
    #[error("client certificate does not parse: {0}")]
    BadCertificate(String),
    /// The certificate names no `pate://` role.
    #[error("client certificate names no pate:// role")]
    NoRole,
    /// The certificate names several roles.
    #[error("client certificate names several roles ({0})")]
    ManyRoles(String),
}

impl From<AuthError> for Status {
    fn from(err: AuthError) -> Self {
        Status::unauthenticated(err.to_string())
    }
}

/// Who made a request, as the transport established it; handlers find it
/// in the request's extensions, put there by [`RequireRole`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Caller {
    /// Plaintext (`--insecure`): nobody is identified. The aggregator
    /// treats all such callers as one anonymous student.
    Anonymous,
    /// A party whose certificate the CA signed.
    Party(Role),
}

impl Caller {
    /// The caller of `req`, as [`RequireRole`] recorded it.
    pub fn of<T>(req: &Request<T>) -> Result<Caller, Status> {
        req.extensions()
            .get::<Caller>()
            .copied()
            .ok_or_else(|| Status::internal("no caller identity on the request (server built without its role check)"))
    }

    /// A stable key for accounting: the role URI, or `anonymous`.
    pub fn key(&self) -> String {
        match self {
            Caller::Anonymous => "anonymous".to_string(),
            Caller::Party(role) => role.uri(),
        }
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// The interceptor in front of a service: identifies the caller from its
/// verified certificate, refuses roles the service does not answer with
/// PERMISSION_DENIED, and leaves a [`Caller`] in the request's extensions.
#[derive(Clone, Copy)]
pub struct RequireRole {
    tls: bool,
    allow: fn(&Role) -> bool,
    service: &'static str,
    allowed: &'static str,
}

impl RequireRole {
    /// A teacher answers only the aggregator. `tls` is false only under
    /// `--insecure`, where nobody can be identified and everyone passes.
    pub fn aggregator_only(tls: bool) -> Self {
        RequireRole { tls, allow: |r| *r == Role::Aggregator, service: "teacher", allowed: "the aggregator" }
    }

    /// The aggregator labels only for students.
    pub fn students_only(tls: bool) -> Self {
        RequireRole { tls, allow: |r| matches!(r, Role::Student(_)), service: "aggregator", allowed: "students" }
    }

    fn identify(&self, req: &Request<()>) -> Result<Caller, Status> {
        if !self.tls {
            return Ok(Caller::Anonymous);
        }
        let certs = req.peer_certs().ok_or(AuthError::NoCertificate)?;
        let leaf = certs.first().ok_or(AuthError::NoCertificate)?;
        let role = Role::from_cert_der(leaf.as_ref())?;
        if !(self.allow)(&role) {
            tracing::warn!(caller = %role, service = self.service, "refused a caller of the wrong role");
            return Err(Status::permission_denied(format!(
                "the {} answers only {}; this certificate is {role}",
                self.service, self.allowed
            )));
        }
        Ok(Caller::Party(role))
    }
}

impl tonic::service::Interceptor for RequireRole {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let caller = self.identify(&req)?;
        req.extensions_mut().insert(caller);
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_uris_round_trip_and_reject_lookalikes() {
        for role in [Role::Aggregator, Role::Teacher(0), Role::Teacher(17), Role::Student(3)] {
            assert_eq!(Role::from_uri(&role.uri()), Some(role));
        }
        for bad in ["pate://aggregator/0", "pate://teacher", "pate://teacher/", "pate://teacher/-1", "pate://teacher/+1",
            "pate://student/x", "http://aggregator", "pate://root", "pate://teacher/1/2"] {
            assert_eq!(Role::from_uri(bad), None, "{bad}");
        }
        assert_eq!(Role::Teacher(2).name(), "teacher-2");
    }

    #[test]
    fn insecure_callers_are_anonymous_and_pass() {
        let mut check = RequireRole::aggregator_only(false);
        let req = tonic::service::Interceptor::call(&mut check, Request::new(())).expect("insecure passes");
        assert_eq!(Caller::of(&req).expect("caller"), Caller::Anonymous);
    }

    #[test]
    fn tls_without_a_peer_certificate_is_unauthenticated() {
        let mut check = RequireRole::students_only(true);
        let err = tonic::service::Interceptor::call(&mut check, Request::new(())).expect_err("no certificate");
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    }
}
