//! Python's `html.unescape` (CPython 3.11 `html/__init__.py`), exactly: the HTML5 entity table,
//! the longest-prefix rule for names without `;`, numeric references with the windows-1252
//! remapping and the dropped invalid code points.

/// Look up an HTML5 entity name as Python's `html.entities.html5` does: `name` without the `&`,
/// with its `;` where it has one (`"amp;"`, `"amp"`). The table is the WHATWG `entities.json`, the
/// same 2,231 entries as Python's.
fn html5_entity(name: &str) -> Option<&'static str> {
    let mut key = Vec::with_capacity(name.len() + 1);
    key.push(b'&');
    key.extend_from_slice(name.as_bytes());
    htmlize::ENTITIES
        .get(key.as_slice())
        .map(|v| std::str::from_utf8(v).expect("entity table is UTF-8"))
}

/// Python's `html._invalid_charrefs`: numeric references remapped as browsers do.
fn invalid_charref(num: u32) -> Option<char> {
    const CP1252_80_9F: [char; 32] = [
        '\u{20ac}', '\u{81}', '\u{201a}', '\u{192}', '\u{201e}', '\u{2026}', '\u{2020}',
        '\u{2021}', '\u{2c6}', '\u{2030}', '\u{160}', '\u{2039}', '\u{152}', '\u{8d}', '\u{17d}',
        '\u{8f}', '\u{90}', '\u{2018}', '\u{2019}', '\u{201c}', '\u{201d}', '\u{2022}', '\u{2013}',
        '\u{2014}', '\u{2dc}', '\u{2122}', '\u{161}', '\u{203a}', '\u{153}', '\u{9d}', '\u{17e}',
        '\u{178}',
    ];
    match num {
        0x00 => Some('\u{fffd}'),
        0x0d => Some('\r'),
        0x80..=0x9f => Some(CP1252_80_9F[(num - 0x80) as usize]),
        _ => None,
    }
}

/// Python's `html._invalid_codepoints`: numeric references that decode to nothing.
fn is_invalid_codepoint(num: u32) -> bool {
    matches!(num, 0x1..=0x8 | 0xb | 0xe..=0x1f | 0x7f..=0x9f | 0xfdd0..=0xfdef)
        || (num & 0xfffe == 0xfffe && num <= 0x10ffff)
}

/// Decode a numeric character reference the way Python's `html._replace_charref` does.
fn numeric_charref(digits: &str, radix: u32) -> String {
    // int() of an arbitrarily long digit string: anything above 0x10FFFF gives U+FFFD.
    let trimmed = digits.trim_start_matches('0');
    let num = if trimmed.len() > 8 {
        u32::MAX
    } else if trimmed.is_empty() {
        0
    } else {
        u32::from_str_radix(trimmed, radix).unwrap_or(u32::MAX)
    };
    if let Some(c) = invalid_charref(num) {
        return c.to_string();
    }
    if (0xd800..=0xdfff).contains(&num) || num > 0x10ffff {
        return '\u{fffd}'.to_string();
    }
    if is_invalid_codepoint(num) {
        return String::new();
    }
    char::from_u32(num).map(String::from).unwrap_or_default()
}

/// Python's `html.unescape(s)` (CPython 3.11 `html/__init__.py`), exactly.
///
/// Matches `&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)` left to right. Named
/// references use the HTML5 table; a name that is not an entity is replaced by its longest prefix
/// (of at least 2 characters) that is one (only the legacy names without `;` such as `amp`, `lt`,
/// `eacute` can match that way), else left as it is.
pub fn html_unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        match charref_at(after) {
            Some((consumed, replacement)) => {
                out.push_str(&replacement);
                rest = &after[consumed..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Try the `_charref` regex right after an `&`. Returns (bytes consumed after the `&`, replacement).
fn charref_at(after: &str) -> Option<(usize, String)> {
    let bytes = after.as_bytes();
    if bytes.first() == Some(&b'#') {
        let dec = bytes[1..].iter().take_while(|b| b.is_ascii_digit()).count();
        if dec > 0 {
            let digits = &after[1..1 + dec];
            let mut consumed = 1 + dec;
            if bytes.get(consumed) == Some(&b';') {
                consumed += 1;
            }
            return Some((consumed, numeric_charref(digits, 10)));
        }
        if matches!(bytes.get(1), Some(b'x') | Some(b'X')) {
            let hex = bytes[2..]
                .iter()
                .take_while(|b| b.is_ascii_hexdigit())
                .count();
            if hex > 0 {
                let digits = &after[2..2 + hex];
                let mut consumed = 2 + hex;
                if bytes.get(consumed) == Some(&b';') {
                    consumed += 1;
                }
                return Some((consumed, numeric_charref(digits, 16)));
            }
        }
        // '#' cannot start a name: no match.
        return None;
    }
    // Named: [^\t\n\f <&#;]{1,32};?
    let mut end = 0;
    let mut nchars = 0;
    for (i, c) in after.char_indices() {
        if nchars == 32 || matches!(c, '\t' | '\n' | '\x0c' | ' ' | '<' | '&' | '#' | ';') {
            break;
        }
        end = i + c.len_utf8();
        nchars += 1;
    }
    if nchars == 0 {
        return None;
    }
    let mut consumed = end;
    if after[end..].starts_with(';') {
        consumed += 1;
    }
    let s = &after[..consumed];
    if let Some(v) = html5_entity(s) {
        return Some((consumed, v.to_string()));
    }
    // Longest prefix s[:x] for x in len(s)-1 down to 2 (in characters).
    let char_starts: Vec<usize> = s.char_indices().map(|(i, _)| i).collect();
    let n = char_starts.len();
    for x in (2..n).rev() {
        let cut = char_starts[x];
        if let Some(v) = html5_entity(&s[..cut]) {
            return Some((consumed, format!("{v}{}", &s[cut..])));
        }
    }
    Some((consumed, format!("&{s}")))
}
