//! Reaching PostgreSQL: the URL, TLS, the two pools, the migrations.
//!
//! The URL is libpq's (several hosts, `target_session_attrs=read-write`
//! for failover, `options`, ...), read by tokio-postgres, except for the
//! TLS parameters libpq has and the driver lacks, taken here:
//! `sslmode=disable | prefer | require | verify-ca | verify-full` and
//! `sslrootcert=FILE`. `prefer` (the default) and `require` encrypt
//! without checking the certificate, as libpq does; `verify-full` checks
//! the chain against `sslrootcert` or the operating system's trust store,
//! and the host name; `verify-ca` is taken as `verify-full` (stricter,
//! never weaker).
//!
//! Every connection sets timeouts so that an outage or a stuck peer
//! becomes a 503 within seconds rather than a request hanging: a lock
//! waited for at most `LOCK_TIMEOUT`, a statement at most
//! `STATEMENT_TIMEOUT`, and a transaction left open by a frozen server
//! (SIGSTOP) is cut by the database after `IDLE_IN_TRANSACTION`, releasing
//! the key it locked.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::SslMode;

use crate::config::PostgresUrl;
use crate::error::{Error, Result};
use crate::rules::Timing;

/// Which clock decides leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSource {
    /// The database's (every real deployment: server clocks may differ).
    Database,
    /// The caller's `now` (tests that drive time by hand).
    Caller,
}

/// How to run the PostgreSQL engine.
#[derive(Debug, Clone, Copy)]
pub struct PostgresOptions {
    /// The timeout every outage's lease floor grants.
    pub timing: Timing,
    /// Connections in the pool of durable writes and reads.
    pub pool_size: usize,
    /// Connections every heartbeat shares (pipelined; see `beats`).
    pub heartbeat_connections: usize,
    /// Which clock decides leases.
    pub time: TimeSource,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            timing: Timing::default(),
            pool_size: 16,
            heartbeat_connections: 4,
            time: TimeSource::Database,
        }
    }
}

mod embedded {
    refinery::embed_migrations!("migrations/postgres");
}

/// How long a start waits for another server's lock on the same key.
const LOCK_TIMEOUT_MS: u64 = 3_000;
/// The longest any statement may run.
const STATEMENT_TIMEOUT_MS: u64 = 10_000;
/// A transaction idle this long (its server frozen or gone) is ended by
/// the database.
const IDLE_IN_TRANSACTION_MS: u64 = 5_000;
/// How long a request waits for a pooled connection, or for a new one.
const POOL_WAIT: Duration = Duration::from_secs(3);

/// What the TLS parameters ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Tls {
    /// `sslmode=disable`.
    Off,
    /// `prefer` or `require`: encrypted, certificate not checked.
    Unverified { required: bool },
    /// `verify-full` (and `verify-ca`): chain and host name checked,
    /// against this CA file or the system's trust store.
    Verified { root_file: Option<String> },
}

/// The URL split into the driver's config and the TLS policy.
pub(super) fn parse(url: &PostgresUrl) -> Result<(tokio_postgres::Config, Tls)> {
    let text = url.expose();
    let (base, query) = match text.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (text, None),
    };
    let mut mode = "prefer".to_owned();
    let mut root_file = None;
    let mut kept = Vec::new();
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        match pair.split_once('=') {
            Some(("sslmode", v)) => mode = v.to_owned(),
            Some(("sslrootcert", v)) => root_file = Some(v.to_owned()),
            _ if pair.is_empty() => {}
            _ => kept.push(pair),
        }
    }
    let rebuilt = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let mut config: tokio_postgres::Config = rebuilt.parse().map_err(|e| {
        Error::Config(format!(
            "database URL {url} is not a PostgreSQL URL the driver accepts: {e}"
        ))
    })?;
    let tls = match mode.as_str() {
        "disable" => Tls::Off,
        "allow" | "prefer" => Tls::Unverified { required: false },
        "require" => Tls::Unverified { required: true },
        "verify-ca" | "verify-full" => Tls::Verified { root_file },
        other => {
            return Err(Error::Config(format!(
                "database URL {url}: sslmode={other} is not one of disable, prefer, require, \
                 verify-ca, verify-full"
            )))
        }
    };
    config.ssl_mode(match tls {
        Tls::Off => SslMode::Disable,
        Tls::Unverified { required: false } => SslMode::Prefer,
        _ => SslMode::Require,
    });
    if config.get_application_name().is_none() {
        config.application_name("keyseat");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(POOL_WAIT);
    }
    let own = format!(
        "-c client_min_messages=warning -c lock_timeout={LOCK_TIMEOUT_MS} -c statement_timeout={STATEMENT_TIMEOUT_MS} \
         -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}"
    );
    let options = match config.get_options() {
        Some(given) => format!("{own} {given}"),
        None => own,
    };
    config.options(&options);
    Ok((config, tls))
}

/// The rustls connector for a policy.
pub(super) fn connector(tls: &Tls) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS setup failed: {e}")))?;
    let config = match tls {
        Tls::Verified { root_file } => {
            let mut roots = rustls::RootCertStore::empty();
            let certs = match root_file {
                Some(file) => crate::trust::pem_certificates(std::path::Path::new(file))
                    .map_err(|e| Error::Config(format!("sslrootcert {file} {e}")))?,
                None => crate::trust::system_roots(),
            };
            let (added, _ignored) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(Error::Config(
                    "sslmode=verify-full: no CA certificate found (set sslrootcert=FILE or \
                     install the CA in the system trust store)"
                        .into(),
                ));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        _ => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(unverified::AnyCertificate(provider)))
            .with_no_client_auth(),
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// `config` with `extra` added to its options.
pub(super) fn with_options(config: &tokio_postgres::Config, extra: &str) -> tokio_postgres::Config {
    let mut config = config.clone();
    let options = format!("{} {extra}", config.get_options().unwrap_or_default());
    config.options(&options);
    config
}

/// One connection on `config`, driven by a task on the current runtime.
pub(super) async fn connect(
    config: &tokio_postgres::Config,
    tls: &Tls,
) -> Result<tokio_postgres::Client> {
    let client = match tls {
        Tls::Off => {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            client
        }
        _ => {
            let (client, connection) = config.connect(connector(tls)?).await?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            client
        }
    };
    Ok(client)
}

/// A pool on `config`, with `extra` added to each connection's options.
pub(super) fn pool(
    config: &tokio_postgres::Config,
    tls: &Tls,
    size: usize,
    extra: Option<&str>,
) -> Result<Pool> {
    let config = match extra {
        Some(extra) => with_options(config, extra),
        None => config.clone(),
    };
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match tls {
        Tls::Off => Manager::from_config(config, tokio_postgres::NoTls, manager_config),
        _ => Manager::from_config(config, connector(tls)?, manager_config),
    };
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(POOL_WAIT))
        .recycle_timeout(Some(POOL_WAIT))
        .build()
        .map_err(|e| Error::Config(format!("database pool: {e}")))
}

/// Applies pending migrations on one connection of `pool`. Servers
/// starting together take turns: each holds a row lock on a one-row
/// table while it migrates (row locks, not advisory locks, so the same
/// SQL runs on CockroachDB and YugabyteDB).
pub(super) async fn migrate(pool: &Pool, shown: &PostgresUrl) -> Result<()> {
    let fail = |e: tokio_postgres::Error| -> Error {
        if crate::error::postgres_is_outage(&e) {
            Error::Unavailable(format!(
                "cannot reach the database {shown}: {}",
                crate::error::postgres_message(&e)
            ))
        } else {
            Error::Database(format!(
                "cannot migrate the database {shown}: {}",
                crate::error::postgres_message(&e)
            ))
        }
    };
    let mut guard = pool.get().await.map_err(|e| pool_error(e, shown))?;
    // Two servers creating the table at once can collide in the catalog;
    // the loser's retry finds it made.
    for attempt in 0..3 {
        match guard
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS keyseat_migration_lock (id INTEGER PRIMARY KEY); \
                 INSERT INTO keyseat_migration_lock (id) VALUES (1) ON CONFLICT DO NOTHING",
            )
            .await
        {
            Ok(()) => break,
            Err(e) if attempt < 2 && e.as_db_error().is_some() => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => return Err(fail(e)),
        }
    }
    let lock = guard.transaction().await.map_err(fail)?;
    lock.execute(
        "SELECT id FROM keyseat_migration_lock WHERE id = 1 FOR UPDATE",
        &[],
    )
    .await
    .map_err(fail)?;
    let mut migrator = pool.get().await.map_err(|e| pool_error(e, shown))?;
    let client: &mut tokio_postgres::Client = &mut migrator;
    embedded::migrations::runner()
        .set_migration_table_name("refinery_schema_history")
        .run_async(client)
        .await
        .map_err(|e| Error::Database(format!("cannot migrate the database {shown}: {e}")))?;
    lock.commit().await.map_err(fail)?;
    Ok(())
}

/// Checks that the schema is there and complete (every command but
/// `serve` and `migrate`, so a mistyped URL is not a new empty database).
pub(super) async fn check_migrated(pool: &Pool, shown: &PostgresUrl) -> Result<()> {
    let client = pool.get().await.map_err(|e| pool_error(e, shown))?;
    let applied: Option<i32> = client
        .query_opt(
            "SELECT MAX(version) FROM refinery_schema_history \
             WHERE to_regclass('refinery_schema_history') IS NOT NULL",
            &[],
        )
        .await
        .ok()
        .flatten()
        .and_then(|row| row.get(0));
    let newest = embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| m.version())
        .max()
        .unwrap_or(0);
    match applied {
        Some(v) if v >= newest => Ok(()),
        Some(v) => Err(Error::Database(format!(
            "the database {shown} is at schema version {v}, older than this keyseat's \
             {newest}; run `keyseat migrate --database URL` (or start `keyseat serve`) to \
             upgrade it"
        ))),
        None => Err(Error::Database(format!(
            "the database {shown} has no keyseat schema; create it with `keyseat migrate \
             --database URL` (or start `keyseat serve` on it)"
        ))),
    }
}

/// Whether a pool failure means the database could not be reached (a
/// refused or broken connection, or none made in time), rather than every
/// connection being busy.
pub(super) fn pool_lost_contact(e: &deadpool_postgres::PoolError) -> bool {
    use deadpool_postgres::{PoolError, TimeoutType};
    match e {
        PoolError::Backend(e) => crate::error::postgres_is_outage(e),
        PoolError::Timeout(kind) => !matches!(kind, TimeoutType::Wait),
        _ => false,
    }
}

/// A pool failure as an error an operator reads: the database is away
/// (503), never a fault of the request.
pub(super) fn pool_error(e: deadpool_postgres::PoolError, shown: &PostgresUrl) -> Error {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Backend(e) if !crate::error::postgres_is_outage(&e) => Error::Database(format!(
            "cannot use the database {shown}: {}",
            crate::error::postgres_message(&e)
        )),
        PoolError::Backend(e) => Error::Unavailable(format!(
            "cannot reach the database {shown}: {}",
            crate::error::postgres_message(&e)
        )),
        PoolError::Timeout(_) => {
            Error::Unavailable(format!("the database {shown} did not answer in time"))
        }
        other => Error::Unavailable(format!("database {shown}: {other}")),
    }
}

/// A verifier for `sslmode=prefer|require`: any certificate, as libpq
/// does in those modes; the handshake's signatures are still checked by
/// rustls's own code, so the session is encrypted to whoever holds the
/// certificate's key.
mod unverified {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};
    use std::sync::Arc;

    #[derive(Debug)]
    pub(super) struct AnyCertificate(pub(super) Arc<CryptoProvider>);

    impl ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> PostgresUrl {
        PostgresUrl::parse(text).expect("a URL")
    }

    #[test]
    fn tls_parameters_the_driver_lacks_are_read_here() {
        let (config, tls) = parse(&url(
            "postgres://ks:pw@db1:5432,db2:5433/keyseat?sslmode=verify-full&sslrootcert=/ca.pem&target_session_attrs=read-write",
        ))
        .expect("parses");
        assert_eq!(
            tls,
            Tls::Verified {
                root_file: Some("/ca.pem".into())
            }
        );
        assert_eq!(config.get_hosts().len(), 2);
        assert_eq!(config.get_dbname(), Some("keyseat"));
        let (_, tls) = parse(&url("postgres://ks@db/keyseat")).expect("parses");
        assert_eq!(tls, Tls::Unverified { required: false });
        let (_, tls) = parse(&url("postgres://ks@db/keyseat?sslmode=disable")).expect("parses");
        assert_eq!(tls, Tls::Off);
    }

    #[test]
    fn a_bad_url_is_a_clear_error_without_the_password() {
        let e = parse(&url("postgres://ks:hunter2@db/keyseat?sslmode=maybe"))
            .expect_err("refused")
            .to_string();
        assert!(e.contains("sslmode=maybe"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let e = parse(&url("postgres://ks:hunter2@db:notaport/keyseat"))
            .expect_err("refused")
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn every_connection_bounds_its_waits() {
        let (config, _) =
            parse(&url("postgres://ks@db/keyseat?options=-c%20work_mem%3D8MB")).expect("parses");
        let options = config.get_options().expect("options");
        assert!(options.contains("lock_timeout=3000"), "{options}");
        assert!(
            options.contains("idle_in_transaction_session_timeout"),
            "{options}"
        );
        assert!(options.contains("work_mem"), "{options}");
    }
}
