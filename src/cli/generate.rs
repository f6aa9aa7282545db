//! `keyseat generate --out DIR` (hidden): shell completions and man pages
//! written from the clap definition itself, so what the package installs
//! cannot drift from the commands. `packaging/build-deb` runs it.
//!
//! `DIR/completions/` gets `keyseat.bash`, `_keyseat` (zsh) and
//! `keyseat.fish`; `DIR/man/` gets `keyseat.1` and one page per
//! subcommand (`keyseat-keys-create.1`, …), as git does.

use std::path::Path;

use clap::CommandFactory;
use clap_complete::Shell;

use super::Cli;
use crate::error::{Error, Result};

/// The shells completions are written for, with each one's file name.
const SHELLS: [(Shell, &str); 3] = [
    (Shell::Bash, "keyseat.bash"),
    (Shell::Zsh, "_keyseat"),
    (Shell::Fish, "keyseat.fish"),
];

/// The completion script for `shell`.
pub fn completions(shell: Shell) -> Vec<u8> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "keyseat", &mut out);
    out
}

/// Every man page as (file name, roff text): the command's and one per
/// visible subcommand, nested ones included.
pub fn man_pages() -> Vec<(String, Vec<u8>)> {
    fn walk(cmd: clap::Command, pages: &mut Vec<(String, Vec<u8>)>) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub.clone(), pages);
        }
        let man = clap_mangen::Man::new(cmd);
        let mut text = Vec::new();
        man.render(&mut text)
            .expect("rendering into memory cannot fail");
        pages.push((man.get_filename(), text));
    }
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut pages = Vec::new();
    walk(cmd, &mut pages);
    pages
}

/// Writes the completions and man pages under `out`.
pub fn run(out: &Path) -> Result<()> {
    let write = |path: &Path, bytes: &[u8]| {
        std::fs::write(path, bytes)
            .map_err(|e| Error::Internal(format!("cannot write {}: {e}", path.display())))
    };
    for (dir, files) in [
        (
            "completions",
            SHELLS
                .iter()
                .map(|(shell, name)| (name.to_string(), completions(*shell)))
                .collect::<Vec<_>>(),
        ),
        ("man", man_pages()),
    ] {
        let dir = out.join(dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::Internal(format!("cannot create {}: {e}", dir.display())))?;
        for (name, bytes) in files {
            write(&dir.join(name), &bytes)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every visible subcommand as its path of names (`["keys",
    /// "create"]`), read from the clap definition so the list cannot go
    /// stale.
    fn subcommand_paths() -> Vec<Vec<String>> {
        fn walk(cmd: &clap::Command, prefix: &[String], out: &mut Vec<Vec<String>>) {
            for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
                let mut path = prefix.to_vec();
                path.push(sub.get_name().to_owned());
                walk(sub, &path, out);
                out.push(path);
            }
        }
        let mut cmd = Cli::command().disable_help_subcommand(true);
        cmd.build();
        let mut out = Vec::new();
        walk(&cmd, &[], &mut out);
        out
    }

    /// Whether `word` stands in `text` as a word of its own (not only
    /// inside a longer name such as `signing-key`'s `key`).
    fn has_word(text: &str, word: &str) -> bool {
        let part = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        text.match_indices(word).any(|(at, _)| {
            let before = text[..at].chars().next_back();
            let after = text[at + word.len()..].chars().next();
            !before.is_some_and(part) && !after.is_some_and(part)
        })
    }

    /// The definition has the commands the README documents (so the walk
    /// below checks something), and no hidden one leaks into the list.
    #[test]
    fn the_subcommand_list_comes_from_the_definition() {
        let paths = subcommand_paths();
        for expected in [
            &["serve"][..],
            &["keys", "create"],
            &["signing-key", "rotate"],
        ] {
            assert!(
                paths.iter().any(|p| p == expected),
                "{expected:?} not in {paths:?}"
            );
        }
        assert!(!paths.iter().any(|p| p[0] == "generate"), "{paths:?}");
    }

    /// Each shell's completions name every subcommand, nested ones too.
    #[test]
    fn completions_mention_every_subcommand() {
        for (shell, _) in SHELLS {
            let text = String::from_utf8(completions(shell)).unwrap();
            for path in subcommand_paths() {
                let name = path.last().unwrap();
                assert!(has_word(&text, name), "{shell} completions lack {path:?}");
            }
        }
    }

    /// There is a man page for every subcommand, and its parent's page
    /// lists it.
    #[test]
    fn man_pages_cover_every_subcommand() {
        let pages = man_pages();
        let page = |name: &str| {
            pages
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, text)| String::from_utf8(text.clone()).unwrap())
                .unwrap_or_else(|| panic!("no man page {name}"))
        };
        assert!(page("keyseat.1").contains(".TH keyseat 1"));
        for path in subcommand_paths() {
            let own = format!("keyseat-{}.1", path.join("-"));
            assert!(page(&own).contains(&format!(".TH keyseat-{}", path.join("-"))));
            let parent = match &path[..path.len() - 1] {
                [] => "keyseat.1".to_owned(),
                up => format!("keyseat-{}.1", up.join("-")),
            };
            // roff writes a dash as `\-`; the page lists `keyseat-keys-create(1)`.
            let listed = format!("keyseat-{}(1)", path.join("-"));
            assert!(
                page(&parent).replace("\\-", "-").contains(&listed),
                "{parent} does not list {listed}"
            );
        }
        assert_eq!(pages.len(), subcommand_paths().len() + 1);
    }

    /// `generate --out DIR` writes the files the package installs.
    #[test]
    fn writes_the_packaged_files() {
        let dir = tempfile::tempdir().unwrap();
        run(dir.path()).unwrap();
        for file in [
            "completions/keyseat.bash",
            "completions/_keyseat",
            "completions/keyseat.fish",
            "man/keyseat.1",
            "man/keyseat-serve.1",
        ] {
            let meta =
                std::fs::metadata(dir.path().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert!(meta.len() > 0, "{file} is empty");
        }
    }
}
