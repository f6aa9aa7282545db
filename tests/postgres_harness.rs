//! The PostgreSQL test helpers themselves (tests/common/postgres.rs and
//! .ci/postgres.sh): the engine's tests trust them to give each test its own
//! database and to really take a cluster down and back up.
//!
//! Needs KEYSEAT_TEST_POSTGRES_URL (`bash .ci/postgres.sh start /tmp/ks-pg`
//! prints one) and PostgreSQL's binaries; skips without them, except under
//! CI=true.

mod common;

use common::postgres::{self, Cluster};

async fn select_one(url: &str) -> Result<i32, tokio_postgres::Error> {
    let client = postgres::try_connect(url).await?;
    let row = client.query_one("SELECT 1", &[]).await?;
    Ok(row.get(0))
}

async fn current_database(url: &str) -> String {
    let client = postgres::connect(url).await;
    let row = client
        .query_one("SELECT current_database()", &[])
        .await
        .expect("current_database()");
    row.get(0)
}

#[tokio::test]
async fn fresh_databases_are_distinct_and_accept_queries() {
    let Some(a) = postgres::fresh_database().await else {
        return;
    };
    let b = postgres::fresh_database().await.expect("a second database");
    assert_ne!(a, b);
    for url in [&a, &b] {
        assert_eq!(
            select_one(url).await.map_err(|e| postgres::describe(&e)),
            Ok(1)
        );
    }
    let (name_a, name_b) = (current_database(&a).await, current_database(&b).await);
    assert_ne!(name_a, name_b);
    for name in [&name_a, &name_b] {
        assert!(
            name.len() == "ks_test_".len() + 16
                && name.starts_with("ks_test_")
                && name["ks_test_".len()..]
                    .chars()
                    .all(|c| c.is_ascii_hexdigit()),
            "{name}"
        );
    }
    // A table made in one is not in the other.
    let client_a = postgres::connect(&a).await;
    client_a
        .batch_execute("CREATE TABLE only_in_a (x int)")
        .await
        .expect("create table");
    let client_b = postgres::connect(&b).await;
    let found: i64 = client_b
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'only_in_a'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(found, 0);
}

#[test]
fn with_database_replaces_only_the_database_name() {
    let cases = [
        (
            "postgres://keyseat:pw@127.0.0.1:5432/postgres",
            "postgres://keyseat:pw@127.0.0.1:5432/ks_test_x",
        ),
        (
            "postgres://keyseat:pw@127.0.0.1:5432",
            "postgres://keyseat:pw@127.0.0.1:5432/ks_test_x",
        ),
        (
            "postgresql://u@db.example:5432/app?sslmode=verify-full&connect_timeout=5",
            "postgresql://u@db.example:5432/ks_test_x?sslmode=verify-full&connect_timeout=5",
        ),
        (
            "postgres://u:p@h/app?dbname=other&sslmode=disable",
            "postgres://u:p@h/ks_test_x?sslmode=disable",
        ),
        (
            "postgres://u:p@h/?dbname=other",
            "postgres://u:p@h/ks_test_x",
        ),
    ];
    for (url, want) in cases {
        assert_eq!(postgres::with_database(url, "ks_test_x"), want, "{url}");
    }
    assert_eq!(
        postgres::redacted("postgres://keyseat:secret@127.0.0.1:1/postgres?x=1"),
        "postgres://keyseat:***@127.0.0.1:1/postgres?x=1"
    );
    assert_eq!(
        postgres::redacted("postgres://keyseat@127.0.0.1:1/postgres"),
        "postgres://keyseat@127.0.0.1:1/postgres"
    );
}

#[tokio::test]
async fn a_cluster_stopped_refuses_connections_and_starts_again_on_the_same_url() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let url = cluster.url().to_owned();
    assert!(
        url.starts_with("postgres://keyseat:"),
        "{}",
        postgres::redacted(&url)
    );
    assert_eq!(
        select_one(&url).await.map_err(|e| postgres::describe(&e)),
        Ok(1)
    );
    let held = postgres::connect(&url).await;

    cluster.stop_immediate();
    assert!(
        select_one(&url).await.is_err(),
        "a stopped cluster accepted a connection"
    );
    assert!(
        held.query_one("SELECT 1", &[]).await.is_err(),
        "a connection survived an immediate stop"
    );

    cluster.start_again();
    assert_eq!(cluster.url(), url);
    assert_eq!(
        select_one(&url).await.map_err(|e| postgres::describe(&e)),
        Ok(1)
    );
    // A database made before a clean stop is still there after it.
    let db = postgres::create_database(&url).await;
    cluster.stop_fast();
    cluster.start_again();
    assert_eq!(
        select_one(&db).await.map_err(|e| postgres::describe(&e)),
        Ok(1)
    );
}

#[test]
fn a_dropped_cluster_is_destroyed() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let dir = cluster.dir().to_owned();
    assert!(dir.join("data/PG_VERSION").exists());
    drop(cluster);
    assert!(!dir.exists(), "{} is still there", dir.display());
}
