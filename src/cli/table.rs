//! Plain-text tables for the CLI's human output.

/// Renders rows under headers, columns padded to their widest cell.
/// Control characters in cells (stored before input validation existed, or
/// by a future path that forgets it) are shown escaped, so a device name can
/// never forge a row or send escape codes to the operator's terminal.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|c| printable(c)).collect())
        .collect();
    let rows = &rows;
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// Escapes control characters and hidden ones ([`crate::input::printable`]),
/// which input refuses but a database from an earlier release may hold.
pub fn printable(text: &str) -> String {
    crate::input::printable(text)
}

/// A cell for an optional value.
pub fn opt(value: Option<impl ToString>) -> String {
    value.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn aligns_columns() {
        let t = super::render(
            &["A", "BB"],
            &[vec!["xxx".into(), "y".into()], vec!["z".into(), "-".into()]],
        );
        assert_eq!(t, "A    BB\nxxx  y\nz    -");
    }

    #[test]
    fn control_characters_cannot_forge_rows() {
        let t = super::render(&["A"], &[vec!["evil\nrow\u{1b}[31m".into()]]);
        assert_eq!(t.lines().count(), 2);
        assert!(!t.contains('\u{1b}'));
    }

    /// A stored right-to-left override or zero-width space is shown as its
    /// code point, so a row cannot pass for another.
    #[test]
    fn invisible_characters_are_shown_escaped() {
        let t = super::render(&["A"], &[vec!["fp\u{202e}1\u{200b}\u{feff}".into()]]);
        assert_eq!(t, "A\nfp\\u{202e}1\\u{200b}\\u{feff}");
    }
}
