//! The failover's database: the test's own primary (a
//! [`Cluster`](crate::common::postgres::Cluster), so killing it harms no
//! other test) and a synchronous streaming replica of it, run with the
//! PostgreSQL binaries and as the user .ci/postgres.sh uses, and the
//! two-host URL docs/high-availability.md tells servers to use.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;
use crate::host::running_as_root;
use crate::topology::database_password;

/// The failover's databases: the primary and its synchronous replica,
/// and the URL that lists both.
pub struct Failover {
    // First, so that it is dropped (stopped) before its primary.
    pub replica: Replica,
    pub primary: common::postgres::Cluster,
    /// The two-host URL of [`two_host_url`] on a fresh database.
    pub url: String,
}

impl Failover {
    /// None (the test skips) without PostgreSQL.
    pub fn start(rt: &tokio::runtime::Runtime) -> Option<Failover> {
        let primary = common::postgres::Cluster::start()?;
        let primary_db = rt.block_on(common::postgres::create_database(primary.url()));
        let password = database_password(&primary_db).unwrap();
        let primary_port = cluster_port(&primary);
        let replica = Replica::start(primary_port, &password);
        // Synchronous: an acknowledged start or end is on the replica too.
        rt.block_on(make_synchronous(primary.url()));
        let url = two_host_url(&primary_db, primary_port, replica.port);
        Some(Failover {
            replica,
            primary,
            url,
        })
    }
}

/// A streaming replica of a test cluster (`pg_basebackup -R`), on a port
/// of its own; stopped and removed on drop.
pub struct Replica {
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
}

impl Replica {
    /// Copies the primary at 127.0.0.1:`primary_port` and starts streaming.
    pub fn start(primary_port: u16, password: &str) -> Replica {
        let bin = pg_bin();
        let dir = tempfile::Builder::new()
            .prefix("ks-pg-replica-")
            .tempdir_in("/tmp")
            .unwrap();
        if running_as_root() {
            run_ok(
                Command::new("chown")
                    .arg(format!("{}:", pg_user()))
                    .arg(dir.path()),
            );
        }
        let data = dir.path().join("data");
        run_ok(
            as_pg_owner(bin.join("pg_basebackup"))
                .current_dir(dir.path())
                .env("PGPASSWORD", password)
                .args(["-h", "127.0.0.1", "-U", "keyseat", "-X", "stream", "-R"])
                .args(["-c", "fast", "-p"])
                .arg(primary_port.to_string())
                .arg("-D")
                .arg(&data),
        );
        let port = common::free_port();
        let replica = Replica { dir, port, bin };
        run_ok(
            as_pg_owner(replica.bin.join("pg_ctl"))
                .current_dir(replica.dir.path())
                .arg("start")
                .arg("-D")
                .arg(&data)
                .args(["-w", "-t", "60", "-l"])
                .arg(replica.dir.path().join("log"))
                .arg("-o")
                .arg(format!(
                    "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories='{}' \
                     -c fsync=off -c max_connections=300",
                    replica.dir.path().display()
                ))
                .stdout(Stdio::null()),
        );
        replica
    }

    fn pg_ctl(&self, args: &[&str]) -> Command {
        let mut cmd = as_pg_owner(self.bin.join("pg_ctl"));
        cmd.current_dir(self.dir.path())
            .args(args)
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .stdout(Stdio::null());
        cmd
    }

    /// `pg_ctl promote -w`: the replica becomes a primary.
    pub fn promote(&self) {
        run_ok(&mut self.pg_ctl(&["promote", "-w", "-t", "60"]));
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w"]).status();
    }
}

/// Makes the primary at `primary_url` wait for its replica
/// (`synchronous_standby_names = '*'`), so that an acknowledged start or
/// end is on the replica too; returns once the replica streams in sync.
async fn make_synchronous(primary_url: &str) {
    let admin = common::postgres::connect(primary_url).await;
    for sql in [
        "ALTER SYSTEM SET synchronous_standby_names = '*'",
        "SELECT pg_reload_conf()",
    ] {
        admin.batch_execute(sql).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let sync: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_replication \
                 WHERE state = 'streaming' AND sync_state = 'sync'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if sync == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica never became synchronous"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The database URL of docs/high-availability.md: both hosts, the primary
/// first, and `target_session_attrs=read-write`, so a server finds
/// whichever of them is the primary now.
fn two_host_url(primary_db: &str, primary_port: u16, replica_port: u16) -> String {
    let primary_host = format!("127.0.0.1:{primary_port}");
    assert_eq!(primary_db.matches(&primary_host).count(), 1, "{primary_db}");
    primary_db.replace(
        &primary_host,
        &format!("{primary_host},127.0.0.1:{replica_port}"),
    ) + "?target_session_attrs=read-write"
}

/// The port a cluster of .ci/postgres.sh listens on (its `port` file).
fn cluster_port(cluster: &common::postgres::Cluster) -> u16 {
    std::fs::read_to_string(cluster.dir().join("port"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The PostgreSQL binaries' directory, as .ci/postgres.sh finds it
/// (`KEYSEAT_PG_BIN`, else the newest /usr/lib/postgresql/*/bin).
fn pg_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("KEYSEAT_PG_BIN").filter(|b| !b.is_empty()) {
        return PathBuf::from(bin);
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_basebackup").exists().then_some((version, bin))
        })
        .max();
    match newest {
        Some((_, bin)) => bin,
        None => PathBuf::new(), // on PATH
    }
}

/// The unprivileged user .ci/postgres.sh runs PostgreSQL as, under root.
fn pg_user() -> String {
    std::env::var("KEYSEAT_PG_USER").unwrap_or_else(|_| "keyseat-pg".into())
}

/// A command run as the owner of the test's clusters: as root, the
/// unprivileged user .ci/postgres.sh runs PostgreSQL as.
fn as_pg_owner(program: PathBuf) -> Command {
    if running_as_root() {
        let mut cmd = Command::new("runuser");
        cmd.arg("-u").arg(pg_user()).arg("--").arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

#[track_caller]
fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
