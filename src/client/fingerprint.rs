//! A stable, privacy-preserving device fingerprint: the operating system's
//! machine id, hashed with SHA-256 under an application-chosen salt, so the
//! server never sees a raw hardware id and two vendors' apps on one machine
//! produce unrelated fingerprints.

use sha2::{Digest, Sha256};

/// The fingerprint of this machine for an application (`app` is any stable
/// string of the vendor's, e.g. `"com.example.solver"`), or `None` if the
/// system offers no machine id. 32 hex characters.
pub fn machine_fingerprint(app: &str) -> Option<String> {
    let id = machine_id()?;
    Some(hash(app, &id))
}

fn hash(app: &str, machine_id: &str) -> String {
    let digest = Sha256::digest(format!("keyseat-fingerprint-v1\0{app}\0{machine_id}").as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

fn machine_id() -> Option<String> {
    let from_files = ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .find(|s| !s.is_empty());
    if from_files.is_some() {
        return from_files;
    }
    if cfg!(target_os = "macos") {
        let out = std::process::Command::new("ioreg")
            .args(["-rd1", "-c", "IOPlatformExpertDevice"])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        return text
            .lines()
            .find(|l| l.contains("IOPlatformUUID"))
            .and_then(|l| l.split('"').nth(3))
            .map(str::to_owned);
    }
    if cfg!(windows) {
        let out = std::process::Command::new("reg")
            .args([
                "query",
                r"HKLM\SOFTWARE\Microsoft\Cryptography",
                "/v",
                "MachineGuid",
            ])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        return text
            .lines()
            .find(|l| l.contains("MachineGuid"))
            .and_then(|l| l.split_whitespace().last())
            .map(str::to_owned);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SHA-256 of `keyseat-fingerprint-v1\0<app>\0<machine id>`, its first
    /// 16 bytes in hex.
    #[test]
    fn the_fingerprint_is_a_salted_hash() {
        let a = hash("app-one", "machine-1");
        // The same in every client (docs/clients.md).
        assert_eq!(a, "33a21275881bd82f47bb2023d4c863c2");
        assert_eq!(a, hash("app-one", "machine-1"), "stable");
        assert_ne!(a, hash("app-two", "machine-1"), "per application");
        assert_ne!(a, hash("app-one", "machine-2"), "per machine");
        assert!(!a.contains("machine"));
    }

    #[test]
    fn this_machine_has_a_stable_fingerprint_if_any() {
        if let Some(fp) = machine_fingerprint("test") {
            assert_eq!(Some(fp), machine_fingerprint("test"));
        }
    }
}
