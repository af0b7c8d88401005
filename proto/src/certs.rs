//! Provisioning: one deployment CA and a certificate per party, each with
//! its role in a SAN URI (`pate://aggregator`, `pate://teacher/<i>`,
//! `pate://student/<j>`). `pate certs init` and `pate certs issue` are thin
//! wrappers; the lab and the tests call these functions directly.
//!
//! Layout of a certificate directory: `ca.pem`, `ca.key`, and for every
//! party `<name>.pem` / `<name>.key` with `<name>` one of `aggregator`,
//! `teacher-<i>`, `student-<j>`. Private keys are written 0600.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::auth::Role;

/// Days a party certificate is valid.
const PARTY_DAYS: i64 = 825;
/// Days the CA is valid.
const CA_DAYS: i64 = 3650;

/// Why provisioning failed.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A deployment needs at least one teacher and one student.
    #[error("a deployment needs at least one {0}: pass --{0}s N with N >= 1")]
    NoParties(&'static str),
    /// The CA exists and overwriting it would orphan every issued certificate.
    #[error("{0} already exists: refusing to replace the CA (every certificate it issued would stop working); pass --force to start over, or `pate certs issue` to add a party")]
    CaExists(PathBuf),
    /// The party's files exist.
    #[error("{0} already exists: pass --force to reissue it")]
    PartyExists(PathBuf),
    /// The CA to issue from is missing.
    #[error("no CA in {dir}: run `pate certs init --out {dir}` first ({source})")]
    NoCa {
        /// The directory given.
        dir: String,
        /// The read error.
        source: std::io::Error,
    },
    /// A --san value is neither a DNS name nor an IP address.
    #[error("bad --san {0:?}: {1}")]
    BadSan(String, String),
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// Writing a file failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    // An hour of slack for clocks that lag the provisioning host.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "pate deployment CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    validity(&mut params, CA_DAYS);
    params
}

fn san(name: &str) -> Result<SanType, CertError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    // rcgen accepts any IA5 string; a host name is letters, digits, '-' and
    // '.' (RFC 1123), so a typo such as a space is caught here, not by a
    // handshake failing later.
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if !valid {
        return Err(CertError::BadSan(name.to_string(), "not a DNS name or IP address".into()));
    }
    let dns = name.try_into().map_err(|e: rcgen::Error| CertError::BadSan(name.to_string(), e.to_string()))?;
    Ok(SanType::DnsName(dns))
}

/// The certificate parameters of one party. Servers (aggregator, teachers)
/// are valid for localhost, 127.0.0.1, their name and every extra SAN, and
/// may also act as clients (the aggregator calls the teachers). Students
/// are clients only: no server names, no server usage, so a student's
/// certificate cannot pass for a server's.
fn party_params(role: Role, extra_sans: &[String]) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, role.name());
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let uri = role.uri().try_into().map_err(|e: rcgen::Error| CertError::BadSan(role.uri(), e.to_string()))?;
    params.subject_alt_names.push(SanType::URI(uri));
    let server = !matches!(role, Role::Student(_));
    if server {
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        for name in ["localhost", "127.0.0.1", role.name().as_str()] {
            params.subject_alt_names.push(san(name)?);
        }
    } else {
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    }
    for name in extra_sans {
        params.subject_alt_names.push(san(name)?);
    }
    validity(&mut params, PARTY_DAYS);
    Ok(params)
}

/// Writes `data` to `path`; `secret` files get mode 0600 from creation on
/// (never world-readable, not even for an instant).
fn write_file(path: &Path, data: &str, secret: bool) -> Result<(), CertError> {
    let err = |source| CertError::Write { path: path.to_path_buf(), source };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(err)?;
    // An existing file keeps its old mode through open(): tighten it.
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    }
    f.write_all(data.as_bytes()).map_err(err)
}

/// The files of one party in `dir`: (certificate, key).
pub fn party_files(dir: &Path, role: Role) -> (PathBuf, PathBuf) {
    (dir.join(format!("{}.pem", role.name())), dir.join(format!("{}.key", role.name())))
}

fn issue_with(dir: &Path, issuer: &Issuer<'_, KeyPair>, role: Role, sans: &[String]) -> Result<(), CertError> {
    let key = KeyPair::generate()?;
    let cert = party_params(role, sans)?.signed_by(&key, issuer)?;
    let (pem, key_path) = party_files(dir, role);
    write_file(&key_path, &key.serialize_pem(), true)?;
    write_file(&pem, &cert.pem(), false)
}

/// Creates `out` with a fresh CA, the aggregator, `teachers` teachers and
/// `students` students; `sans` are added to every server certificate.
/// An existing CA is kept (an error) unless `force`. Returns the roles
/// issued.
pub fn init(out: &Path, teachers: u32, students: u32, sans: &[String], force: bool) -> Result<Vec<Role>, CertError> {
    if teachers == 0 {
        return Err(CertError::NoParties("teacher"));
    }
    if students == 0 {
        return Err(CertError::NoParties("student"));
    }
    let ca_pem = out.join("ca.pem");
    if !force && (ca_pem.exists() || out.join("ca.key").exists()) {
        return Err(CertError::CaExists(ca_pem));
    }
    std::fs::create_dir_all(out).map_err(|source| CertError::Write { path: out.to_path_buf(), source })?;
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params().self_signed(&ca_key)?;
    write_file(&out.join("ca.key"), &ca_key.serialize_pem(), true)?;
    write_file(&ca_pem, &ca_cert.pem(), false)?;
    let issuer = Issuer::new(ca_params(), ca_key);
    let roles: Vec<Role> = std::iter::once(Role::Aggregator)
        .chain((0..teachers).map(Role::Teacher))
        .chain((0..students).map(Role::Student))
        .collect();
    for &role in &roles {
        issue_with(out, &issuer, role, sans)?;
    }
    Ok(roles)
}

/// Issues one more party from the CA in `ca_dir` (its files must not exist
/// unless `force`).
pub fn issue(ca_dir: &Path, role: Role, sans: &[String], force: bool) -> Result<(), CertError> {
    let no_ca = |source| CertError::NoCa { dir: ca_dir.display().to_string(), source };
    let ca_pem = std::fs::read_to_string(ca_dir.join("ca.pem")).map_err(no_ca)?;
    let ca_key = std::fs::read_to_string(ca_dir.join("ca.key")).map_err(no_ca)?;
    let (pem, key) = party_files(ca_dir, role);
    for path in [&pem, &key] {
        if !force && path.exists() {
            return Err(CertError::PartyExists(path.clone()));
        }
    }
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, KeyPair::from_pem(&ca_key)?)?;
    issue_with(ca_dir, &issuer, role, sans)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role_of(path: &Path) -> Role {
        let pem = std::fs::read(path).expect("read pem");
        let (_, der) = x509_parser::pem::parse_x509_pem(&pem).expect("pem");
        Role::from_cert_der(&der.contents).expect("role")
    }

    #[test]
    fn init_writes_every_party_with_its_role_and_private_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let roles = init(dir.path(), 2, 1, &["pate.example".into()], false).expect("init");
        assert_eq!(roles, vec![Role::Aggregator, Role::Teacher(0), Role::Teacher(1), Role::Student(0)]);
        for role in roles {
            let (pem, key) = party_files(dir.path(), role);
            assert_eq!(role_of(&pem), role);
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&key).expect("key").permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", key.display());
            }
        }
        let text = std::fs::read(dir.path().join("teacher-1.pem")).expect("pem");
        let (_, der) = x509_parser::pem::parse_x509_pem(&text).expect("pem");
        let cert = der.parse_x509().expect("x509");
        let names = format!("{:?}", cert.subject_alternative_name().expect("san").expect("san").value.general_names);
        for want in ["teacher-1", "localhost", "pate.example", "pate://teacher/1"] {
            assert!(names.contains(want), "{names} lacks {want}");
        }
    }

    #[test]
    fn init_refuses_to_replace_a_ca_and_empty_deployments() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(init(dir.path(), 0, 1, &[], false), Err(CertError::NoParties("teacher"))));
        assert!(matches!(init(dir.path(), 1, 0, &[], false), Err(CertError::NoParties("student"))));
        init(dir.path(), 1, 1, &[], false).expect("init");
        let before = std::fs::read(dir.path().join("ca.pem")).expect("ca");
        assert!(matches!(init(dir.path(), 1, 1, &[], false), Err(CertError::CaExists(_))));
        assert_eq!(std::fs::read(dir.path().join("ca.pem")).expect("ca"), before, "the CA is untouched");
        init(dir.path(), 1, 1, &[], true).expect("forced");
        assert_ne!(std::fs::read(dir.path().join("ca.pem")).expect("ca"), before);
    }

    #[test]
    fn issue_adds_a_party_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        init(dir.path(), 1, 1, &[], false).expect("init");
        issue(dir.path(), Role::Teacher(5), &[], false).expect("issue");
        assert_eq!(role_of(&dir.path().join("teacher-5.pem")), Role::Teacher(5));
        assert!(matches!(issue(dir.path(), Role::Teacher(5), &[], false), Err(CertError::PartyExists(_))));
        let empty = tempfile::tempdir().expect("tempdir");
        assert!(matches!(issue(empty.path(), Role::Student(0), &[], false), Err(CertError::NoCa { .. })));
        assert!(matches!(issue(dir.path(), Role::Student(9), &["bad name!".into()], false), Err(CertError::BadSan(..))));
    }
}
