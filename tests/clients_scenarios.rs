//! The shared client scenarios cannot drift: every scenario named in
//! docs/clients.md's table has a test of that name in each client's tests
//! (Rust, Python, TypeScript, and C once `clients/c` exists), unless the
//! document says it is not applicable to that client; and the document's
//! exit-code table is what both command-line entry points
//! (`src/cli/client.rs`, the Python client's `cli.py`) define. Reads files
//! only: no server, no interpreter.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const CLIENTS: [&str; 4] = ["Rust", "Python", "TypeScript", "C"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn docs() -> String {
    std::fs::read_to_string(root().join("docs/clients.md")).unwrap()
}

/// The scenario names: the first column of the table under `## Scenarios`.
fn scenarios(docs: &str) -> Vec<String> {
    let section = docs
        .split("\n## Scenarios")
        .nth(1)
        .expect("docs/clients.md has a `## Scenarios` section");
    let section = section.split("\n## ").next().unwrap();
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once("` |"))
        .map(|(name, _)| name.to_owned())
        .collect()
}

/// `(scenario, client)` pairs the document marks `` `NAME`: not
/// applicable to CLIENT because ... ``.
fn not_applicable(docs: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (before, after) in docs
        .split("`: not applicable to ")
        .zip(docs.split("`: not applicable to ").skip(1))
    {
        let name = before.rsplit('`').next().unwrap();
        let client = after.split_whitespace().next().unwrap_or("");
        if after.split_whitespace().nth(1) == Some("because") && CLIENTS.contains(&client) {
            found.push((name.to_owned(), client.to_owned()));
        }
    }
    found
}

/// Every file under `dir` whose name ends with one of `ends`.
fn files(dir: &Path, ends: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() && name != "node_modules" && name != ".venv" {
            out.extend(files(&path, ends));
        } else if ends.iter().any(|e| name.ends_with(e)) {
            out.push(path);
        }
    }
    out
}

fn text_of(dirs: &[&str], ends: &[&str]) -> String {
    dirs.iter()
        .flat_map(|d| files(&root().join(d), ends))
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether `text` holds `name` as a whole word followed by one of `after`.
fn named(text: &str, before: &str, name: &str, after: &[&str]) -> bool {
    let needle = format!("{before}{name}");
    text.match_indices(&needle).any(|(i, _)| {
        let rest = &text[i + needle.len()..];
        let word_start = i == 0
            || !before.is_empty()
            || !text[..i]
                .chars()
                .last()
                .is_some_and(|c| c.is_alphanumeric() || c == '_');
        word_start && after.iter().any(|a| rest.starts_with(a))
    })
}

/// Every scenario has a test of its name in every client, or a line saying
/// why it does not apply.
#[test]
fn every_scenario_is_a_test_of_its_name_in_every_client() {
    let docs = docs();
    let names = scenarios(&docs);
    assert!(
        names.len() >= 20,
        "the scenario table was not found: {names:?}"
    );
    let skipped = not_applicable(&docs);
    for (name, _) in &skipped {
        assert!(
            names.contains(name),
            "not applicable: {name} is no scenario"
        );
    }
    let rust = text_of(&["tests", "src/client"], &[".rs"]);
    let python = text_of(&["clients/python/tests"], &[".py"]);
    let typescript = text_of(&["clients/typescript/test"], &[".mjs", ".ts"]);
    let c_dir = root().join("clients/c");
    let c = c_dir
        .exists()
        .then(|| text_of(&["clients/c/tests"], &[".c", ".h", ".cc", ".cpp", ".sh"]));
    let mut missing = Vec::new();
    for name in &names {
        let has = |client: &str| -> Option<bool> {
            match client {
                "Rust" => Some(named(&rust, "fn ", name, &["("])),
                "Python" => Some(named(&python, "def test_", name, &["("])),
                "TypeScript" => Some(
                    named(&typescript, "test('", name, &["'"])
                        || named(&typescript, "test(\"", name, &["\""]),
                ),
                "C" => c.as_ref().map(|c| named(c, "", name, &["(", "\"", " ("])),
                _ => unreachable!(),
            }
        };
        for client in CLIENTS {
            let marked = skipped.iter().any(|(n, c)| n == name && c == client);
            match has(client) {
                Some(false) if !marked => missing.push(format!("{client}: {name}")),
                _ => {}
            }
        }
    }
    assert!(
        missing.is_empty(),
        "scenarios of docs/clients.md with no test of that name (write one, or add \
         \"`NAME`: not applicable to CLIENT because ...\" to docs/clients.md):\n  {}",
        missing.join("\n  ")
    );
}

/// The exit-code table of docs/clients.md: name -> code.
fn documented_exit_codes(docs: &str) -> BTreeMap<String, u8> {
    docs.lines()
        .filter_map(|l| {
            let mut cells = l.strip_prefix("| ")?.split(" | ");
            let code = cells.next()?.parse().ok()?;
            let name = cells.next()?.strip_prefix('`')?.strip_suffix('`')?;
            Some((name.to_owned(), code))
        })
        .collect()
}

/// `keyseat client` and `python -m keyseat_client` define the documented
/// exit codes, by the same names.
#[test]
fn the_exit_code_table_is_what_both_entry_points_define() {
    let table = documented_exit_codes(&docs());
    assert_eq!(table.len(), 12, "{table:?}");
    let rust = std::fs::read_to_string(root().join("src/cli/client.rs")).unwrap();
    let rust: BTreeMap<String, u8> = rust
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter_map(|l| l.split_once(": u8 = "))
        .map(|(name, v)| (name.to_owned(), v.trim_end_matches(';').parse().unwrap()))
        .collect();
    assert_eq!(rust, table, "src/cli/client.rs against docs/clients.md");
    let python =
        std::fs::read_to_string(root().join("clients/python/src/keyseat_client/cli.py")).unwrap();
    let python: BTreeMap<String, u8> = python
        .lines()
        .filter_map(|l| l.split_once(" = "))
        .filter(|(name, _)| table.contains_key(*name))
        .filter_map(|(name, v)| Some((name.to_owned(), v.parse().ok()?)))
        .collect();
    assert_eq!(python, table, "cli.py against docs/clients.md");
}

/// The parsers above, on a small document.
#[test]
fn the_document_is_read_as_written() {
    let doc = "\n## Scenarios\n| scenario | what |\n|---|---|\n| `one_thing` | x |\n\
               | `two` | y |\n\n## Other\n| `not_a_scenario` | z |\n| 3 | `SUPERSEDED` | w |\n\
               - `two`: not applicable to C because there is none.\n\
               - `NAME`: not applicable to CLIENT because ...\n";
    assert_eq!(scenarios(doc), ["one_thing", "two"]);
    assert_eq!(not_applicable(doc), [("two".into(), "C".into())]);
    assert_eq!(
        documented_exit_codes(doc),
        BTreeMap::from([("SUPERSEDED".into(), 3)])
    );
    assert!(named("fn two() {}", "fn ", "two", &["("]));
    assert!(!named("fn two_more() {}", "fn ", "two", &["("]));
    assert!(named("void two(void)", "", "two", &["("]));
    assert!(!named("void x_two(void)", "", "two", &["("]));
}
