//! The test's own certificate authority, made with the openssl command
//! line as an operator would: a CA, and server certificates it signs for
//! 127.0.0.1 (good), for another name only (wrong name), and one that
//! expired in 2020 (made with `openssl ca`, which takes dates, on every
//! OpenSSL 3). EC P-256 keys: quick to make.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A server certificate and its key.
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub struct Pki {
    /// The CA's certificate (PEM): what `--ca-file` is given.
    pub ca: PathBuf,
    /// For 127.0.0.1 and localhost, valid now.
    pub good: Leaf,
    /// For `wrong.example` only.
    pub wrong_name: Leaf,
    /// For 127.0.0.1, valid on 1 January 2020 only.
    pub expired: Leaf,
}

/// The extensions of a server certificate for `names` (strict verifiers,
/// as Python's ssl since 3.13, want the key identifiers).
fn leaf_extensions(names: &str) -> String {
    format!(
        "basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\n\
         subjectKeyIdentifier=hash\n\
         authorityKeyIdentifier=keyid\n\
         subjectAltName={names}\n"
    )
}

/// A request config with no prompts, so no system openssl.cnf is read.
const REQ_CONF: &str = "[req]\n\
    distinguished_name = dn\n\
    prompt = no\n\
    x509_extensions = ca\n\
    [dn]\n\
    CN = keyseat test CA\n\
    [ca]\n\
    basicConstraints = critical,CA:TRUE\n\
    keyUsage = critical,keyCertSign,cRLSign\n\
    subjectKeyIdentifier = hash\n\
    authorityKeyIdentifier = keyid:always\n";

/// `openssl ca`'s minimal configuration: its database in `dir`.
const CA_CONF: &str = "[ca]\n\
    default_ca = d\n\
    [d]\n\
    database = index.txt\n\
    new_certs_dir = .\n\
    serial = serial\n\
    default_md = sha256\n\
    policy = p\n\
    unique_subject = no\n\
    [p]\n\
    commonName = supplied\n";

impl Pki {
    /// Makes everything in `dir` with `openssl`.
    pub fn make(openssl: &Path, dir: &Path) -> Pki {
        let run = |args: &[&str]| {
            let out = Command::new(openssl)
                .args(args)
                .current_dir(dir)
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        std::fs::write(dir.join("req.cnf"), REQ_CONF).unwrap();
        std::fs::write(dir.join("ca.cnf"), CA_CONF).unwrap();
        std::fs::write(dir.join("index.txt"), "").unwrap();
        std::fs::write(dir.join("serial"), "1000\n").unwrap();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        run(&[
            &["req", "-x509", "-config", "req.cnf", "-nodes", "-days", "3"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem"],
        ]
        .concat());
        let request = |name: &str, names: &str| {
            std::fs::write(dir.join(format!("{name}.ext")), leaf_extensions(names)).unwrap();
            let subject = format!("/CN={name}");
            run(&[
                &[
                    "req", "-new", "-config", "req.cnf", "-nodes", "-subj", &subject,
                ][..],
                &ec,
                &[
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                ],
            ]
            .concat());
            Leaf {
                cert: dir.join(format!("{name}.pem")),
                key: dir.join(format!("{name}.key")),
            }
        };
        let good = request("good", "IP:127.0.0.1,DNS:localhost");
        let wrong_name = request("wrong", "DNS:wrong.example");
        let expired = request("expired", "IP:127.0.0.1,DNS:localhost");
        for name in ["good", "wrong"] {
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.pem"),
            ]);
        }
        run(&[
            "ca",
            "-batch",
            "-config",
            "ca.cnf",
            "-cert",
            "ca.pem",
            "-keyfile",
            "ca.key",
            "-in",
            "expired.csr",
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20200102000000Z",
            "-extfile",
            "expired.ext",
            "-out",
            "expired.pem",
        ]);
        Pki {
            ca: dir.join("ca.pem"),
            good,
            wrong_name,
            expired,
        }
    }
}
