//! What the client trusts over `https://` and what a refused certificate
//! is called.
//!
//! The roots are the operating system's store ([`crate::trust`]: the
//! distribution's bundle, or `SSL_CERT_FILE`/`SSL_CERT_DIR` when set, the
//! keychain on macOS, the certificate store on Windows) plus any CA file
//! the app adds ([`super::Client::ca_file`], `--ca-file`), so a private CA
//! that curl and the Python client trust is trusted here too. A machine
//! with no store to read (a bare container) keeps the bundled Mozilla
//! roots it had before.
//!
//! A certificate that does not verify is a [`CertificateProblem`], never a
//! transport failure: it is not retried, since it does not heal within a
//! lease, and it is named (unknown issuer, another name, expired).

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use ureq::tls::{Certificate, RootCerts, TlsConfig};

/// Why the server's TLS certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateProblem {
    /// Signed by a CA this client does not trust (a private CA not added
    /// with `ca_file` or to the system store, or a self-signed one).
    UnknownIssuer,
    /// Valid, but for other names than the one in the server URL.
    WrongName {
        /// The names the certificate is for (when the TLS library says).
        presented: Vec<String>,
    },
    /// Past its end date.
    Expired,
    /// Before its start date (or this machine's clock is behind).
    NotValidYet,
    /// Another verification failure (revoked, bad signature, wrong use…).
    Other(String),
}

impl std::fmt::Display for CertificateProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the server's certificate is not trusted: ")?;
        match self {
            CertificateProblem::UnknownIssuer => f.write_str(
                "unknown issuer; pass --ca-file or add the CA to the system store",
            ),
            CertificateProblem::WrongName { presented } if presented.is_empty() => f.write_str(
                "it is for another name; use the name the certificate was made for in the server URL",
            ),
            CertificateProblem::WrongName { presented } => write!(
                f,
                "it is for another name ({}); use that name in the server URL or fix the certificate",
                presented.join(", ")
            ),
            CertificateProblem::Expired => {
                f.write_str("it has expired; the server's certificate must be renewed")
            }
            CertificateProblem::NotValidYet => {
                f.write_str("it is not valid yet; check this machine's clock")
            }
            CertificateProblem::Other(detail) => f.write_str(detail),
        }
    }
}

/// The certificate problem behind a failed call, if that is what it was:
/// rustls' verdict, as ureq passes it on (directly, or inside the I/O error
/// of the handshake).
pub(super) fn certificate_problem(e: &ureq::Error) -> Option<CertificateProblem> {
    let tls = match e {
        ureq::Error::Rustls(e) => e,
        ureq::Error::Io(io) => io.get_ref()?.downcast_ref::<rustls::Error>()?,
        _ => return None,
    };
    let rustls::Error::InvalidCertificate(cert) = tls else {
        return None;
    };
    use rustls::CertificateError as C;
    Some(match cert {
        C::UnknownIssuer => CertificateProblem::UnknownIssuer,
        C::NotValidForName => CertificateProblem::WrongName { presented: vec![] },
        C::NotValidForNameContext { presented, .. } => CertificateProblem::WrongName {
            presented: presented.iter().filter_map(|n| plain_name(n)).collect(),
        },
        C::Expired | C::ExpiredContext { .. } => CertificateProblem::Expired,
        C::NotValidYet | C::NotValidYetContext { .. } => CertificateProblem::NotValidYet,
        other => CertificateProblem::Other(other.to_string()),
    })
}

/// A name as rustls shows it (`DnsName("a.example")`, `IpAddress(10.0.0.1)`)
/// as an operator writes it; None for kinds a URL cannot name.
fn plain_name(shown: &str) -> Option<String> {
    let (kind, rest) = shown.split_once('(')?;
    let inner = rest.strip_suffix(')')?.trim_matches('"');
    matches!(kind, "DnsName" | "IpAddress" | "UniformResourceIdentifier").then(|| inner.to_owned())
}

/// The TLS settings of an agent: the system store plus `extra` CAs.
pub(super) fn config(extra: &[CertificateDer<'static>]) -> TlsConfig {
    let system = crate::trust::system_roots();
    if system.is_empty() && extra.is_empty() {
        return TlsConfig::builder().root_certs(RootCerts::WebPki).build();
    }
    let roots: Vec<Certificate<'static>> = system
        .iter()
        .chain(extra)
        .map(|der| Certificate::from_der(der).to_owned())
        .collect();
    TlsConfig::builder()
        .root_certs(RootCerts::Specific(Arc::new(roots)))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_shown_as_written() {
        assert_eq!(
            plain_name("DnsName(\"a.example\")").as_deref(),
            Some("a.example")
        );
        assert_eq!(
            plain_name("IpAddress(10.0.0.1)").as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(plain_name("DirectoryName"), None);
        assert_eq!(plain_name("Unsupported(0x80)"), None);
        let wrong = CertificateProblem::WrongName {
            presented: vec!["a.example".into(), "b.example".into()],
        };
        assert_eq!(
            wrong.to_string(),
            "the server's certificate is not trusted: it is for another name (a.example, \
             b.example); use that name in the server URL or fix the certificate"
        );
    }
}
