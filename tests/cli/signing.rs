//! `signing-key show` and `rotate` (docs/api.md, "Signed answers"), and a
//! key kept in a PEM file made by openssl (`signing_key_file`).

use super::*;

fn jwks(db: &OsStr, env: &[(&str, &str)]) -> Value {
    let out = run_env(db, &["signing-key", "show"], env);
    serde_json::from_str(&ok(&out)).expect("a JWK set")
}

/// `show` makes the first key once and prints it as a JWK set; `--pin`
/// prints its `x`; `rotate` puts a new key first and keeps the old one
/// listed, and only public halves are ever printed.
#[test]
fn show_and_rotate_list_the_public_keys() {
    let db = fresh_db();
    let first = jwks(db.path(), &[]);
    assert_eq!(first, jwks(db.path(), &[]), "made once");
    let keys = first["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kty"], "OKP");
    assert_eq!(keys[0]["crv"], "Ed25519");
    let pin = ok(&run(db.path(), &["signing-key", "show", "--pin"]));
    assert_eq!(pin.trim(), keys[0]["x"].as_str().unwrap());
    assert_eq!(pin.trim().len(), 43);

    let rotated: Value =
        serde_json::from_str(&ok(&run(db.path(), &["signing-key", "rotate", "--json"]))).unwrap();
    assert!(rotated.get("d").is_none(), "no private member: {rotated}");
    let after = jwks(db.path(), &[]);
    let kids: Vec<&str> = after["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(
        kids,
        [
            rotated["kid"].as_str().unwrap(),
            keys[0]["kid"].as_str().unwrap()
        ]
    );
    let text = ok(&run(db.path(), &["signing-key", "rotate"]));
    assert!(text.starts_with("new signing key: "), "{text}");
    // With no overlap, keys rotated out are no longer listed.
    let now_only = jwks(db.path(), &[("KEYSEAT_SIGNING_KEY_OVERLAP_DAYS", "0")]);
    assert_eq!(now_only["keys"].as_array().unwrap().len(), 1);
}

/// A key in a PKCS#8 PEM file made by openssl is the one listed (its public
/// half as openssl prints it); `rotate` refuses with a one-line reason; a
/// file that is not such a key is a clear error naming the setting.
#[test]
fn a_key_file_made_by_openssl_is_used_and_not_rotated() {
    let db = fresh_db();
    let dir = TempDir::new().unwrap();
    let pem = dir.path().join("signing.pem");
    let made = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&pem)
        .output()
        .expect("openssl (Debian's openssl package)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    // openssl's own view of the public key: the last 32 bytes of the DER.
    let der = Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&pem)
        .output()
        .unwrap();
    assert!(der.status.success());
    let public = &der.stdout[der.stdout.len() - 32..];
    let file = pem.to_str().unwrap();
    let env = [("KEYSEAT_SIGNING_KEY_FILE", file)];
    let set = jwks(db.path(), &env);
    let x = set["keys"][0]["x"].as_str().unwrap();
    use base64::Engine;
    assert_eq!(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(x)
            .unwrap(),
        public
    );
    assert_eq!(set["keys"].as_array().unwrap().len(), 1);
    let line = fails_with_2(&run_env(db.path(), &["signing-key", "rotate"], &env));
    assert!(line.contains("signing_key_file"), "{line}");

    std::fs::write(&pem, "not a key\n").unwrap();
    let line = fails_with_2(&run_env(db.path(), &["signing-key", "show"], &env));
    assert!(
        line.contains("signing_key_file") && line.contains("openssl genpkey"),
        "{line}"
    );
    let gone = dir.path().join("missing.pem");
    let env = [("KEYSEAT_SIGNING_KEY_FILE", gone.to_str().unwrap())];
    let line = fails_with_2(&run_env(db.path(), &["signing-key", "show"], &env));
    assert!(line.contains("cannot read signing_key_file"), "{line}");
}

/// A bad overlap is a configuration error naming the setting.
#[test]
fn a_bad_overlap_is_refused() {
    let db = fresh_db();
    for bad in ["-1", "3651", "many"] {
        let line = fails_with_2(&run_env(
            db.path(),
            &["signing-key", "show"],
            &[("KEYSEAT_SIGNING_KEY_OVERLAP_DAYS", bad)],
        ));
        assert!(line.contains("signing_key_overlap_days"), "{bad}: {line}");
    }
}
