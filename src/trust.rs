//! The certificates our TLS connections trust: the operating system's
//! store, and CA files an operator names. Shared by the PostgreSQL engine
//! (`sslrootcert`) and the [`client`](crate::client) (`ca_file`), so both
//! read the store and PEM files the same way.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// The operating system's trusted CA certificates, by rustls-native-certs:
/// on Linux and the BSDs the distribution's bundle (`/etc/ssl/certs` and
/// the like), replaced by `SSL_CERT_FILE` and/or `SSL_CERT_DIR` when set
/// (the OpenSSL convention curl and Python follow); on macOS and Windows
/// the system keychain or certificate store. Unreadable entries are left
/// out; an empty list means the machine has no store this can read.
pub fn system_roots() -> Vec<CertificateDer<'static>> {
    rustls_native_certs::load_native_certs().certs
}

/// The certificates of a PEM file (`-----BEGIN CERTIFICATE-----` blocks).
/// The error completes a sentence that starts with the file's name:
/// "cannot be read: …", "is not PEM certificates: …", "holds no
/// certificate".
pub fn pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot be read: {e}"))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("is not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A missing file, a file that is not PEM and an empty one are each
    /// told apart, never a panic.
    #[test]
    fn bad_ca_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = pem_certificates(&dir.path().join("nope.pem")).unwrap_err();
        assert!(missing.starts_with("cannot be read:"), "{missing}");
        let text = dir.path().join("text.pem");
        std::fs::write(&text, "not a certificate\n").unwrap();
        let none = pem_certificates(&text).unwrap_err();
        assert!(none.starts_with("holds no certificate"), "{none}");
        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let bad = pem_certificates(&broken).unwrap_err();
        assert!(bad.starts_with("is not PEM certificates:"), "{bad}");
    }
}
