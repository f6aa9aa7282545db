//! Where the data lives: a SQLite file (the default) or a PostgreSQL URL
//! (several servers on one database). One setting, `database`, takes
//! either, so an operator moves to PostgreSQL by changing one line.
//!
//! A URL may carry a password: [`PostgresUrl`]'s `Display` and `Debug`
//! print it as `***`, so neither a log line nor an error can show it.

use std::path::{Path, PathBuf};

/// The database setting.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL server.
    Postgres(PostgresUrl),
}

impl Database {
    /// Reads the setting: `postgres://` or `postgresql://` is a URL,
    /// anything else a file path.
    pub fn parse(text: &str) -> Database {
        match PostgresUrl::parse(text) {
            Some(url) => Database::Postgres(url),
            None => Database::Sqlite(PathBuf::from(text)),
        }
    }

    /// The SQLite file, when that is the engine.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Database::Sqlite(path) => Some(path),
            Database::Postgres(_) => None,
        }
    }

    /// The engine's name, as `/health` reports it.
    pub fn backend(&self) -> &'static str {
        match self {
            Database::Sqlite(_) => "sqlite",
            Database::Postgres(_) => "postgres",
        }
    }
}

impl Default for Database {
    fn default() -> Self {
        Database::Sqlite(PathBuf::from("keyseat.db"))
    }
}

impl From<PathBuf> for Database {
    fn from(path: PathBuf) -> Self {
        Database::Sqlite(path)
    }
}

impl From<&Path> for Database {
    fn from(path: &Path) -> Self {
        Database::Sqlite(path.to_path_buf())
    }
}

impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "{}", path.display()),
            Database::Postgres(url) => write!(f, "{url}"),
        }
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "Sqlite({path:?})"),
            Database::Postgres(url) => write!(f, "Postgres({url})"),
        }
    }
}

/// A PostgreSQL connection URL. Only [`PostgresUrl::expose`] gives the
/// text with its password; everything else prints it redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl(String);

impl PostgresUrl {
    /// A URL, if `text` is one (`postgres://` or `postgresql://`).
    pub fn parse(text: &str) -> Option<PostgresUrl> {
        let t = text.trim();
        let lower = t.get(..13).unwrap_or(t).to_ascii_lowercase();
        (lower.starts_with("postgres://") || lower.starts_with("postgresql://"))
            .then(|| PostgresUrl(t.to_owned()))
    }

    /// The URL as given, password and all: only for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password (in the user part, or a `password=`
    /// parameter) replaced by `***`.
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }
}

impl std::fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl std::fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgresUrl({})", self.redacted())
    }
}

/// `scheme://user:secret@host/db?password=secret` with both secrets as
/// `***`. The user part ends at the last `@` before the path, since a
/// password may itself contain `@` (percent-encoded or not).
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{hosts}"),
            None => format!("{userinfo}@{hosts}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if name.eq_ignore_ascii_case("password") => {
                        format!("{name}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_selects_postgres_and_anything_else_is_a_file() {
        assert_eq!(Database::parse("postgres://u@h/db").backend(), "postgres");
        assert_eq!(Database::parse("PostgreSQL://u@h/db").backend(), "postgres");
        assert_eq!(Database::parse("keyseat.db").backend(), "sqlite");
        assert_eq!(
            Database::parse("postgres.db").sqlite_path(),
            Some(Path::new("postgres.db"))
        );
    }

    #[test]
    fn the_password_is_never_shown() {
        for url in [
            "postgres://keyseat:s3cret@db1:5432,db2:5432/keyseat?target_session_attrs=read-write",
            "postgresql://keyseat:s3c@ret@db/keyseat",
            "postgres://keyseat@db/keyseat?password=s3cret&sslmode=require",
        ] {
            let db = Database::parse(url);
            for shown in [db.to_string(), format!("{db:?}")] {
                assert!(!shown.contains("s3c"), "{shown}");
                assert!(shown.contains("keyseat"), "{shown}");
            }
        }
        assert_eq!(
            PostgresUrl::parse("postgres://u:p@h/d?sslmode=require")
                .unwrap()
                .redacted(),
            "postgres://u:***@h/d?sslmode=require"
        );
        assert_eq!(
            PostgresUrl::parse("postgres://h/d").unwrap().redacted(),
            "postgres://h/d"
        );
    }
}
