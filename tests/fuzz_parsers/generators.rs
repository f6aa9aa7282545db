//! Input generators: tricky characters and strings, near-limit texts,
//! valid keys and their edits, key-like and time-like texts.

use super::*;

/// Characters that break naive parsers: controls, separators, escapes,
/// multi-byte and look-alike letters, zero-width and bidi marks.
pub fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => prop::sample::select(BASE62.iter().map(|&b| b as char).collect::<Vec<_>>()),
        2 => any::<char>(),
        3 => prop::sample::select(vec![
            '\0', '\n', '\r', '\t', '\u{7f}', '\u{85}', '\u{1b}', ' ', '\u{a0}', '\u{200b}',
            '\u{202e}', '\u{feff}', '\u{2028}', 'é', 'ß', '𝄞', 'ｋ', 'ѕ', '"', '\'', '\\', '/',
            '%', '_', '.', '-', '+', ':', 'T', 'Z', 'z', '{', '}', '[', ']', ',', '&', '=', '?',
            '#', ';',
        ]),
    ]
}

/// Strings of tricky characters, up to `max` characters.
pub fn tricky_string(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(tricky_char(), 0..=max).prop_map(|v| v.into_iter().collect())
}

/// Strings at and around the contract's limits (8, 128, 200, 256).
pub fn near_limit_string() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec![
            0usize, 1, 7, 8, 9, 127, 128, 129, 199, 200, 201, 255, 256, 257, 300, 2000,
        ]),
        prop::sample::select(vec!['a', 'Z', '7', '.', 'é', '𝄞', ' ', '\n', '\u{7f}', '-']),
        prop::sample::select(vec!["", " ", "\t", "  \n"]),
    )
        .prop_map(|(n, c, pad)| format!("{pad}{}{pad}", c.to_string().repeat(n)))
}

/// Arbitrary bytes as (lossy) text, arbitrary UTF-8, tricky characters,
/// near-limit strings.
pub fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..80)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        any::<String>(),
        tricky_string(64),
        near_limit_string(),
    ]
}

/// A well-formed key with a correct checksum.
pub fn valid_key() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(BASE62.to_vec()), 32).prop_map(|random| {
        let body = format!("ks_{}", String::from_utf8(random).unwrap());
        let sum = reference_checksum(&body);
        format!("{body}{sum}")
    })
}

/// One edit of a string: the mistakes people and attackers make.
#[derive(Debug, Clone)]
pub enum Edit {
    Replace(usize, char),
    Insert(usize, char),
    Delete(usize),
    Truncate(usize),
    Swap(usize, usize),
    FlipCase(usize),
    Pad(&'static str, &'static str),
    Wrap(&'static str),
    Repeat,
    Keep,
}

pub fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), tricky_char()).prop_map(|(i, c)| Edit::Replace(i, c)),
        (any::<usize>(), tricky_char()).prop_map(|(i, c)| Edit::Insert(i, c)),
        any::<usize>().prop_map(Edit::Delete),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), any::<usize>()).prop_map(|(i, j)| Edit::Swap(i, j)),
        any::<usize>().prop_map(Edit::FlipCase),
        (
            prop::sample::select(vec!["", " ", "\t", "\n", "\u{feff}", "x", "\""]),
            prop::sample::select(vec!["", " ", "\r\n", "\0", "\"", "/"]),
        )
            .prop_map(|(a, b)| Edit::Pad(a, b)),
        prop::sample::select(vec!["\"", "'", "<>", "  ", "ks_"]).prop_map(Edit::Wrap),
        Just(Edit::Repeat),
        Just(Edit::Keep),
    ]
}

pub fn apply(text: &str, e: &Edit) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    let n = chars.len();
    match *e {
        Edit::Replace(i, c) if n > 0 => chars[i % n] = c,
        Edit::Insert(i, c) => chars.insert(i % (n + 1), c),
        Edit::Delete(i) if n > 0 => {
            chars.remove(i % n);
        }
        Edit::Truncate(i) => chars.truncate(i % (n + 1)),
        Edit::Swap(i, j) if n > 0 => chars.swap(i % n, j % n),
        Edit::FlipCase(i) if n > 0 => {
            let c = chars[i % n];
            chars[i % n] = if c.is_ascii_lowercase() {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
        }
        Edit::Pad(a, b) => return format!("{a}{text}{b}"),
        Edit::Wrap(w) => return format!("{w}{text}{w}"),
        Edit::Repeat => return text.repeat(2),
        _ => {}
    }
    chars.into_iter().collect()
}

/// A valid key, or one with one or two edits.
pub fn key_like() -> impl Strategy<Value = String> {
    (valid_key(), edit(), edit(), 0..3u8).prop_map(|(k, a, b, n)| match n {
        0 => k,
        1 => apply(&k, &a),
        _ => apply(&apply(&k, &a), &b),
    })
}

/// Times shaped like RFC 3339 with every part possibly out of range.
pub fn time_like() -> impl Strategy<Value = String> {
    let date = (
        prop_oneof![0..=10_000i32, 1969..=2100i32],
        0..=13u32,
        0..=32u32,
    );
    let clock = (0..=25u32, 0..=61u32, 0..=61u32, 0..=12usize);
    let sep = prop::sample::select(vec!["T", "t", " ", "_", ""]);
    let zone = prop::sample::select(vec![
        "Z", "z", "", "+00:00", "-00:00", "+01:00", "-23:59", "+23:59", "+24:00", "+0100", "+01",
        "UTC", "-12:30",
    ]);
    (date, clock, sep, zone, edit(), any::<bool>()).prop_map(
        |((y, mo, d), (h, mi, s, frac), sep, zone, e, mangle)| {
            let frac = if frac == 0 {
                String::new()
            } else {
                format!(".{}", "123456789012".get(..frac).unwrap())
            };
            let t = format!("{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}:{s:02}{frac}{zone}");
            if mangle {
                apply(&t, &e)
            } else {
                t
            }
        },
    )
}
