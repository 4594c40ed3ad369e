//! Caption clean-up done before BPE, ported from Python so that the ids match open_clip.
//!
//! open_clip (`open_clip/tokenizer.py`, `SimpleTokenizer` with the default `clean="lower"`) and
//! IRRA (`utils/simple_tokenizer.py`) both run
//!
//! ```python
//! text = ftfy.fix_text(text)
//! text = html.unescape(html.unescape(text)).strip()   # basic_clean
//! text = " ".join(text.split()).strip()               # whitespace_clean
//! text = text.lower()
//! ```
//!
//! [`clean_caption`] is that whole chain. Each step is also public:
//!
//! * [`fix_text`]: a port of `ftfy.fix_text` (ftfy 6.3.1) with its default configuration. Ported:
//!   splitting into lines (the `unescape_html="auto"` switch turns off for the rest of the text at
//!   the first line holding a `<`), ftfy's own `unescape_html` (including the upper-cased entities
//!   such as `&EACUTE;`), the whole `fix_encoding` mojibake repair (the `is_bad` badness heuristic,
//!   all ten single-byte encodings ftfy tries: latin-1, sloppy windows-1250/1251/1252/1253/1254/1257,
//!   iso-8859-2, macroman and cp437; `restore_byte_a0`, `replace_lossy_sequences`, the
//!   `utf-8-variants` decoder for CESU-8 and Java's `\xc0\x80`, `decode_inconsistent_utf8`, the
//!   latin-1 to windows-1252 step), `fix_c1_controls`, `fix_latin_ligatures`,
//!   `fix_character_width`, `uncurl_quotes`, `fix_line_breaks`, `remove_terminal_escapes`,
//!   `remove_control_chars` and NFC normalisation, repeated until nothing changes, as ftfy does.
//!   Not ported: `fix_surrogates` (a Rust `&str` cannot hold a surrogate) and the
//!   `max_decode_length` segmenting of lines longer than 1,000,000 characters. Known differences:
//!   Rust's `regex` and Unicode tables are Unicode 16 while Python 3.11's are Unicode 14, so
//!   characters assigned after Unicode 14 can be classified differently.
//! * [`html_unescape`]: Python's `html.unescape` exactly (the HTML5 entity table including names
//!   without a semicolon such as `&amp`, the longest-prefix rule, numeric references, the
//!   windows-1252 remapping of `&#128;`..`&#159;`, dropped invalid code points).
//! * [`whitespace_clean`] and [`py_strip`]: Python's `str.split()`/`str.strip()` whitespace, which is
//!   Unicode `White_Space` plus U+001C..U+001F (and includes U+00A0 NO-BREAK SPACE).
//! * Lower-casing uses Rust's `str::to_lowercase`, which like Python's `str.lower` applies the full
//!   case mapping, final sigma included.

use std::collections::HashMap;
use std::sync::OnceLock;

use regex::Regex;
use regex::bytes::Regex as BytesRegex;
use unicode_normalization::UnicodeNormalization;

/// The whole open_clip clean-up: `whitespace_clean(basic_clean(text)).lower()`.
///
/// Equivalent of `open_clip.tokenizer._clean_lower` (and of the clean-up inside IRRA's
/// `SimpleTokenizer.encode`). The result contains no leading, trailing or repeated whitespace and
/// is lower-case; it is empty when the caption has no visible content.
pub fn clean_caption(text: &str) -> String {
    whitespace_clean(&basic_clean(text)).to_lowercase()
}

/// open_clip/CLIP `basic_clean`: `html.unescape(html.unescape(ftfy.fix_text(text))).strip()`.
pub fn basic_clean(text: &str) -> String {
    let fixed = fix_text(text);
    let once = html_unescape(&fixed);
    let twice = html_unescape(&once);
    py_strip(&twice).to_string()
}

/// open_clip/CLIP `whitespace_clean`: `" ".join(text.split()).strip()`.
///
/// Splits on Python whitespace ([`is_py_space`]) and joins the non-empty pieces with one space.
pub fn whitespace_clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for piece in text.split(is_py_space).filter(|p| !p.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(piece);
    }
    out
}

/// Python's `str.isspace()` for one character: Unicode `White_Space` plus U+001C..=U+001F.
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()` with no argument.
pub fn py_strip(text: &str) -> &str {
    text.trim_matches(is_py_space)
}

// ---------------------------------------------------------------------------------------------
// html.unescape
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// ftfy.fix_text
// ---------------------------------------------------------------------------------------------

/// A port of `ftfy.fix_text(text)` with ftfy 6.3.1's default `TextFixerConfig` (see the module
/// docs for what is covered).
///
/// The text is fixed line by line (each segment ends after a `\n`). ftfy's HTML unescaping
/// (`unescape_html="auto"`) is switched off for the rest of the text from the first line that
/// contains `<`.
pub fn fix_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut unescape = true;
    for segment in text.split_inclusive('\n') {
        if unescape && segment.contains('<') {
            unescape = false;
        }
        out.push_str(&fix_segment(segment, unescape));
    }
    out
}

/// `ftfy.fix_and_explain` on one segment: apply every fixer, repeat until nothing changes.
fn fix_segment(text: &str, unescape_html: bool) -> String {
    let mut text = text.to_string();
    loop {
        let orig = text.clone();
        if unescape_html {
            text = ftfy_unescape_html(&text);
        }
        text = fix_encoding(&text);
        text = fix_c1_controls(&text);
        text = fix_latin_ligatures(&text);
        text = fix_character_width(&text);
        text = uncurl_quotes(&text);
        text = fix_line_breaks(&text);
        text = remove_terminal_escapes(&text);
        text = remove_control_chars(&text);
        text = text.nfc().collect();
        if text == orig {
            return text;
        }
    }
}

/// ftfy's `HTML_ENTITIES`: `&name;` for every HTML5 name with a semicolon, plus the upper-cased
/// form of every all-lower-case name whose upper-cased form is not itself decoded by
/// `html.unescape` (`&EACUTE;` -> `É`).
fn ftfy_html_entities() -> &'static HashMap<String, String> {
    static MAP: OnceLock<HashMap<String, String>> = OnceLock::new();
    MAP.get_or_init(|| {
        let mut m = HashMap::new();
        for (k, v) in htmlize::ENTITIES.entries() {
            if !k.ends_with(b";") {
                continue;
            }
            let key = std::str::from_utf8(k).expect("entity names are UTF-8");
            let val = std::str::from_utf8(v).expect("entity values are UTF-8");
            m.insert(key.to_string(), val.to_string());
            let name = &key[1..];
            if name == name.to_lowercase() {
                let upper = format!("&{}", name.to_uppercase());
                if html_unescape(&upper) == upper {
                    m.insert(upper, val.to_uppercase());
                }
            }
        }
        m
    })
}

/// `ftfy.fixes.unescape_html`: replace `&#?[0-9A-Za-z]{1,24};` when it is a known entity, or a
/// numeric reference that decodes to something without a `;`.
fn ftfy_unescape_html(text: &str) -> String {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| Regex::new(r"&#?[0-9A-Za-z]{1,24};").expect("valid regex"));
    if !text.contains('&') {
        return text.to_string();
    }
    re.replace_all(text, |caps: &regex::Captures| {
        let m = &caps[0];
        if let Some(v) = ftfy_html_entities().get(m) {
            v.clone()
        } else if m.starts_with("&#") {
            let unescaped = html_unescape(m);
            if unescaped.contains(';') {
                m.to_string()
            } else {
                unescaped
            }
        } else {
            m.to_string()
        }
    })
    .into_owned()
}

/// One of ftfy's single-byte encodings, with its decode table and its (inverse) encode map.
struct Charmap {
    name: &'static str,
    decode: [char; 256],
    encode: HashMap<char, u8>,
}

fn charmaps() -> &'static [Charmap] {
    static MAPS: OnceLock<Vec<Charmap>> = OnceLock::new();
    MAPS.get_or_init(|| {
        CHARMAP_ENCODINGS
            .iter()
            .map(|(name, table)| {
                let chars: Vec<char> = table.chars().collect();
                let decode: [char; 256] = chars.try_into().expect("256 chars per encoding");
                let encode = decode
                    .iter()
                    .enumerate()
                    .map(|(b, &c)| (c, b as u8))
                    .collect();
                Charmap {
                    name,
                    decode,
                    encode,
                }
            })
            .collect()
    })
}

impl Charmap {
    /// `text.encode(name)` if every character is encodable (ftfy's `possible_encoding`).
    fn encode(&self, text: &str) -> Option<Vec<u8>> {
        text.chars().map(|c| self.encode.get(&c).copied()).collect()
    }
}

fn badness_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(BADNESS_RE).expect("valid badness regex"))
}

/// `ftfy.badness.is_bad`: does the text contain a character sequence typical of mojibake?
pub fn is_bad(text: &str) -> bool {
    badness_re().is_match(text)
}

/// `ftfy.fix_encoding`: undo mojibake (UTF-8 bytes decoded with a single-byte encoding), repeated
/// until the text stops changing.
pub fn fix_encoding(text: &str) -> String {
    let mut text = text.to_string();
    loop {
        let next = fix_encoding_one_step(&text);
        if next == text {
            return text;
        }
        text = next;
    }
}

/// `ftfy._fix_encoding_one_step_and_explain` without the explanation.
fn fix_encoding_one_step(text: &str) -> String {
    if text.is_empty() || text.is_ascii() || !is_bad(text) {
        return text.to_string();
    }
    let mut latin1_possible = false;
    for cm in charmaps() {
        let Some(mut bytes) = cm.encode(text) else {
            continue;
        };
        if cm.name == "latin-1" {
            latin1_possible = true;
        }
        if cm.name != "macroman" && altered_utf8_re().is_match(&bytes) {
            bytes = restore_byte_a0(&bytes);
        }
        if cm.name.starts_with("sloppy") {
            bytes = lossy_utf8_re()
                .replace_all(&bytes, "\u{fffd}".as_bytes())
                .into_owned();
        }
        let decoded = if bytes.contains(&0xed) || bytes.contains(&0xc0) {
            decode_utf8_variants(&bytes)
        } else {
            String::from_utf8(bytes).ok()
        };
        if let Some(fixed) = decoded {
            return fixed;
        }
    }
    if utf8_detector_find(text, 0).is_some() {
        let fixed = decode_inconsistent_utf8(text);
        if fixed != text {
            return fixed;
        }
    }
    // ftfy checks `"windows-1252" in possible_1byte_encodings`, which never holds (the list holds
    // "sloppy-windows-1252"), so this is always the "C1 controls meant as windows-1252" branch:
    // text.encode("latin-1").decode("windows-1252"), which fails on the 5 undefined bytes.
    if latin1_possible {
        let strict_undefined = ['\u{81}', '\u{8d}', '\u{8f}', '\u{90}', '\u{9d}'];
        if !text.chars().any(|c| strict_undefined.contains(&c)) {
            let fixed = fix_c1_controls(text);
            if fixed != text {
                return fixed;
            }
        }
    }
    if text.chars().any(is_c1) {
        return fix_c1_controls(text);
    }
    text.to_string()
}

fn is_c1(c: char) -> bool {
    ('\u{80}'..='\u{9f}').contains(&c)
}

/// `ftfy.fixes.fix_c1_controls`: read each C1 control character as its windows-1252 byte.
pub fn fix_c1_controls(text: &str) -> String {
    if !text.chars().any(is_c1) {
        return text.to_string();
    }
    let sloppy1252 = &charmaps()[1];
    debug_assert_eq!(sloppy1252.name, "sloppy-windows-1252");
    text.chars()
        .map(|c| {
            if is_c1(c) {
                sloppy1252.decode[c as usize]
            } else {
                c
            }
        })
        .collect()
}

fn altered_utf8_re() -> &'static BytesRegex {
    static RE: OnceLock<BytesRegex> = OnceLock::new();
    RE.get_or_init(|| {
        BytesRegex::new(
            r"(?-u:[\xc2\xc3\xc5\xce\xd0\xd9][ ]|[\xe2\xe3][ ][\x80-\x84\x86-\x9f\xa1-\xbf]|[\xe0-\xe3][\x80-\x84\x86-\x9f\xa1-\xbf][ ]|[\xf0][ ][\x80-\xbf][\x80-\xbf]|[\xf0][\x80-\xbf][ ][\x80-\xbf]|[\xf0][\x80-\xbf][\x80-\xbf][ ])",
        )
        .expect("valid regex")
    })
}

fn lossy_utf8_re() -> &'static BytesRegex {
    static RE: OnceLock<BytesRegex> = OnceLock::new();
    RE.get_or_init(|| {
        BytesRegex::new(
            r"(?-u:[\xc2-\xdf][\x1a]|[\xc2-\xc3][?]|\xed[\xa0-\xaf][\x1a?]\xed[\xb0-\xbf][\x1a?\x80-\xbf]|\xed[\xa0-\xaf][\x1a?\x80-\xbf]\xed[\xb0-\xbf][\x1a?]|[\xe0-\xef][\x1a?][\x1a\x80-\xbf]|[\xe0-\xef][\x1a\x80-\xbf][\x1a?]|[\xf0-\xf4][\x1a?][\x1a\x80-\xbf][\x1a\x80-\xbf]|[\xf0-\xf4][\x1a\x80-\xbf][\x1a?][\x1a\x80-\xbf]|[\xf0-\xf4][\x1a\x80-\xbf][\x1a\x80-\xbf][\x1a?]|\x1a)",
        )
        .expect("valid regex")
    })
}

/// `ftfy.fixes.restore_byte_a0`: put back the 0xA0 bytes that became spaces in UTF-8 mojibake.
fn restore_byte_a0(bytes: &[u8]) -> Vec<u8> {
    // A_GRAVE_WORD_RE = b"\xc3 (?! |quele|quela|quilo|s )" -> b"\xc3\xa0 "
    let mut out = Vec::with_capacity(bytes.len() + 4);
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == 0xc3 && bytes.get(i + 1) == Some(&b' ') {
            let rest = &bytes[i + 2..];
            let excluded = [&b" "[..], b"quele", b"quela", b"quilo", b"s "]
                .iter()
                .any(|p| rest.starts_with(p));
            if !excluded {
                out.extend_from_slice(b"\xc3\xa0 ");
                i += 2;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    altered_utf8_re()
        .replace_all(&out, |caps: &regex::bytes::Captures| {
            caps[0]
                .iter()
                .map(|&b| if b == b' ' { 0xa0 } else { b })
                .collect::<Vec<u8>>()
        })
        .into_owned()
}

/// ftfy's `utf-8-variants` codec: UTF-8 plus CESU-8 surrogate pairs and Java's `\xc0\x80` NUL.
/// `None` where Python would raise `UnicodeDecodeError`.
fn decode_utf8_variants(bytes: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(bytes.len());
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == 0xc0 && bytes.get(i + 1) == Some(&0x80) {
            out.push_str(std::str::from_utf8(&bytes[start..i]).ok()?);
            out.push('\0');
            i += 2;
            start = i;
        } else if b == 0xed
            && i + 6 <= bytes.len()
            && (0xa0..=0xaf).contains(&bytes[i + 1])
            && (0x80..=0xbf).contains(&bytes[i + 2])
            && bytes[i + 3] == 0xed
            && (0xb0..=0xbf).contains(&bytes[i + 4])
            && (0x80..=0xbf).contains(&bytes[i + 5])
        {
            out.push_str(std::str::from_utf8(&bytes[start..i]).ok()?);
            let cp = (((bytes[i + 1] & 0x0f) as u32) << 16)
                + (((bytes[i + 2] & 0x3f) as u32) << 10)
                + (((bytes[i + 4] & 0x0f) as u32) << 6)
                + ((bytes[i + 5] & 0x3f) as u32)
                + 0x10000;
            out.push(char::from_u32(cp)?);
            i += 6;
            start = i;
        } else {
            i += 1;
        }
    }
    out.push_str(std::str::from_utf8(&bytes[start..]).ok()?);
    Some(out)
}

fn utf8_detector_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(UTF8_DETECTOR_RE).expect("valid utf8 detector regex"))
}

fn utf8_continuation_strict_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(UTF8_CONTINUATION_STRICT).expect("valid class regex"))
}

/// Next match of `UTF8_DETECTOR_RE` at or after byte `pos`, honouring its negative look-behind
/// (the character before the match must not be a strict UTF-8 continuation look-alike).
fn utf8_detector_find(text: &str, mut pos: usize) -> Option<(usize, usize)> {
    while pos <= text.len() {
        let m = utf8_detector_re().find_at(text, pos)?;
        let ok = match text[..m.start()].chars().next_back() {
            None => true,
            Some(prev) => {
                let mut buf = [0u8; 4];
                !utf8_continuation_strict_re().is_match(prev.encode_utf8(&mut buf))
            }
        };
        if ok {
            return Some((m.start(), m.end()));
        }
        let c = text[m.start()..].chars().next()?;
        pos = m.start() + c.len_utf8();
    }
    None
}

/// `ftfy.fixes.decode_inconsistent_utf8`: fix mojibake fragments embedded in otherwise fine text.
fn decode_inconsistent_utf8(text: &str) -> String {
    let total = text.chars().count();
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    let mut pos = 0;
    while let Some((s, e)) = utf8_detector_find(text, pos) {
        out.push_str(&text[last..s]);
        let sub = &text[s..e];
        if sub.chars().count() < total && is_bad(sub) {
            out.push_str(&fix_encoding(sub));
        } else {
            out.push_str(sub);
        }
        last = e;
        pos = e;
    }
    out.push_str(&text[last..]);
    out
}

/// `ftfy.fixes.fix_latin_ligatures`: ﬁ -> fi, ĳ -> ij, ǆ -> dž, ...
pub fn fix_latin_ligatures(text: &str) -> String {
    fn lig(c: char) -> Option<&'static str> {
        Some(match c {
            'Ĳ' => "IJ",
            'ĳ' => "ij",
            'ŉ' => "ʼn",
            'Ǳ' => "DZ",
            'ǲ' => "Dz",
            'ǳ' => "dz",
            'Ǆ' => "DŽ",
            'ǅ' => "Dž",
            'ǆ' => "dž",
            'Ǉ' => "LJ",
            'ǈ' => "Lj",
            'ǉ' => "lj",
            'Ǌ' => "NJ",
            'ǋ' => "Nj",
            'ǌ' => "nj",
            'ﬀ' => "ff",
            'ﬁ' => "fi",
            'ﬂ' => "fl",
            'ﬃ' => "ffi",
            'ﬄ' => "ffl",
            'ﬅ' => "ſt",
            'ﬆ' => "st",
            _ => return None,
        })
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match lig(c) {
            Some(s) => out.push_str(s),
            None => out.push(c),
        }
    }
    out
}

/// `ftfy.fixes.fix_character_width`: U+3000 -> space, and every character in U+FF01..U+FFEF
/// (full-width ASCII, half-width katakana/hangul, ...) -> its NFKC form.
pub fn fix_character_width(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '\u{3000}' {
            out.push(' ');
        } else if ('\u{ff01}'..='\u{ffef}').contains(&c) {
            out.extend(std::iter::once(c).nfkc());
        } else {
            out.push(c);
        }
    }
    out
}

/// `ftfy.fixes.uncurl_quotes`: U+02BC and U+2018..U+201B -> `'`; U+201C..U+201F -> `"`.
pub fn uncurl_quotes(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\u{2bc}' | '\u{2018}'..='\u{201b}' => '\'',
            '\u{201c}'..='\u{201f}' => '"',
            _ => c,
        })
        .collect()
}

/// `ftfy.fixes.fix_line_breaks`: CRLF, CR, U+2028, U+2029 and U+0085 -> `\n`.
pub fn fix_line_breaks(text: &str) -> String {
    text.replace("\r\n", "\n")
        .replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n")
}

/// `ftfy.fixes.remove_terminal_escapes`: drop ANSI escapes `\x1b[` digits/`;` letter.
pub fn remove_terminal_escapes(text: &str) -> String {
    static RE: OnceLock<Regex> = OnceLock::new();
    if !text.contains('\u{1b}') {
        return text.to_string();
    }
    let re = RE.get_or_init(|| Regex::new(r"\x1b\[(?:\d|;)*[a-zA-Z]").expect("valid regex"));
    re.replace_all(text, "").into_owned()
}

/// `ftfy.fixes.remove_control_chars`: drop U+0000..U+0008, U+000B, U+000E..U+001F, U+007F,
/// U+206A..U+206F, U+FEFF and U+FFF9..U+FFFC.
pub fn remove_control_chars(text: &str) -> String {
    text.chars()
        .filter(|&c| {
            !matches!(c,
                '\u{0}'..='\u{8}'
                | '\u{b}'
                | '\u{e}'..='\u{1f}'
                | '\u{7f}'
                | '\u{206a}'..='\u{206f}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffc}')
        })
        .collect()
}

// BEGIN GENERATED FTFY TABLES
// Generated by fixtures/tokenizer/gen_ftfy_tables.py from ftfy 6.3.1; do not edit.

/// ftfy's single-byte encodings, in the order ftfy tries them: (name, the 256 chars bytes 0..=255 decode to).
#[rustfmt::skip]
pub(crate) const CHARMAP_ENCODINGS: [(&str, &str); 10] = [
    ("latin-1", "\u{0}\u{1}\u{2}\u{3}\u{4}\u{5}\u{6}\u{7}\u{8}\u{9}\u{a}\u{b}\u{c}\u{d}\u{e}\u{f}\u{10}\u{11}\u{12}\u{13}\u{14}\u{15}\u{16}\u{17}\u{18}\u{19}\u{1a}\u{1b}\u{1c}\u{1d}\u{1e}\u{1f} !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~\u{7f}\u{80}\u{81}\u{82}\u{83}\u{84}\u{85}\u{86}\u{87}\u{88}\u{89}\u{8a}\u{8b}\u{8c}\u{8d}\u{8e}\u{8f}\u{90}\u{91}\u{92}\u{93}\u{94}\u{95}\u{96}\u{97}\u{98}\u{99}\u{9a}\u{9b}\u{9c}\u{9d}\u{9e}\u{9f}\u{a0}\u{a1}\u{a2}\u{a3}\u{a4}\u{a5}\u{a6}\u{a7}\u{a8}\u{a9}\u{aa}\u{ab}\u{ac}\u{ad}\u{ae}\u{af}\u{b0}\u{b1}\u{b2}\u{b3}\u{b4}\u{b5}\u{b6}\u{b7}\u{b8}\u{b9}\u{ba}\u{bb}\u{bc}\u{bd}\u{be}\u{bf}\u{c0}\u{c1}\u{c2}\u{c3}\u{c4}\u{c5}\u{c6}\u{c7}\u{c8}\u{c9}\u{ca}\u{cb}\u{cc}\u{cd}\u{ce}\u{cf}\u{d0}\u{d1}\u{d2}\u{d3}\u{d4}\u{d5}\u{d6}\u{d7}\u{d8}\u{d9}\u{da}\u{db}\u{dc}\u{dd}\u{de}\u{df}\u{e0}\u{e1}\u{e2}\u{e3}\u{e4}\u{e5}\u{e6}\u{e7}\u{e8}\u{e9}\u{ea}\u{eb}\u{ec}\u{ed}\u{ee}\u{ef}\u{f0}\u{f1}\u{f2}\u{f3}\u{f4}\u{f5}\u{f6}\u{f7}\u{f8}\u{f9}\u{fa}\u{fb}\u{fc}\u{fd}\u{fe}\u{ff}"),
    ("sloppy-windows-1252", "\u{0}\u{1}\u{2}\u{3}\u{4}\u{5}\u{6}\u{7}\u{8}\u{9}\u{a}\u{b}\u{c}\u{d}\u{e}\u{f}\u{10}\u{11}\u{12}\u{13}\u{14}\u{15}\u{16}\u{17}\u{18}\u{19}\u{fffd}\u{1b}\u{1c}\u{1d}\u{1e}\u{1f} !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~\u{7f}\u{20ac}\u{81}\u{201a}\u{192}\u{201e}\u{2026}\u{2020}\u{2021}\u{2c6}\u{2030}\u{160}\u{2039}\u{152}\u{8d}\u{17d}\u{8f}\u{90}\u{2018}\u{2019}\u{201c}\u{201d}\u{2022}\u{2013}\u{2014}\u{2dc}\u{2122}\u{161}\u{203a}\u{153}\u{9d}\u{17e}\u{178}\u{a0}\u{a1}\u{a2}\u{a3}\u{a4}\u{a5}\u{a6}\u{a7}\u{a8}\u{a9}\u{aa}\u{ab}\u{ac}\u{ad}\u{ae}\u{af}\u{b0}\u{b1}\u{b2}\u{b3}\u{b4}\u{b5}\u{b6}\u{b7}\u{b8}\u{b9}\u{ba}\u{bb}\u{bc}\u{bd}\u{be}\u{bf}\u{c0}\u{c1}\u{c2}\u{c3}\u{c4}\u{c5}\u{c6}\u{c7}\u{c8}\u{c9}\u{ca}\u{cb}\u{cc}\u{cd}\u{ce}\u{cf}\u{d0}\u{d1}\u{d2}\u{d3}\u{d4}\u{d5}\u{d6}\u{d7}\u{d8}\u{d9}\u{da}\u{db}\u{dc}\u{dd}\u{de}\u{df}\u{e0}\u{e1}\u{e2}\u{e3}\u{e4}\u{e5}\u{e6}\u{e7}\u{e8}\u{e9}\u{ea}\u{eb}\u{ec}\u{ed}\u{ee}\u{ef}\u{f0}\u{f1}\u{f2}\u{f3}\u{f4}\u{f5}\u{f6}\u{f7}\u{f8}\u{f9}\u{fa}\u{fb}\u{fc}\u{fd}\u{fe}\u{ff}"),
    ("sloppy-windows-1251", "\u{0}\u{1}\u{2}\u{3}\u{4}\u{5}\u{6}\u{7}\u{8}\u{9}\u{a}\u{b}\u{c}\u{d}\u{e}\u{f}\u{10}\u{11}\u{12}\u{13}\u{14}\u{15}\u{16}\u{17}\u{18}\u{19}\u{fffd}\u{1b}\u{1c}\u{1d}\u{1e}\u{1f} !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~\u{7f}\u{402}\u{403}\u{201a}\u{453}\u{201e}\u{2026}\u{2020}\u{2021}\u{20ac}\u{2030}\u{409}\u{2039}\u{40a}\u{40c}\u{40b}\u{40f}\u{452}\u{2018}\u{2019}\u{201c}\u{201d}\u{2022}\u{2013}\u{2014}\u{98}\u{2122}\u{459}\u{203a}\u{45a}\u{45c}\u{45b}\u{45f}\u{a0}\u{40e}\u{45e}\u{408}\u{a4}\u{490}\u{a6}\u{a7}\u{401}\u{a9}\u{404}\u{ab}\u{ac}\u{ad}\u{ae}\u{407}\u{b0}\u{b1}\u{406}\u{456}\u{491}\u{b5}\u{b6}\u{b7}\u{451}\u{2116}\u{454}\u{bb}\u{458}\u{405}\u{455}\u{457}\u{410}\u{411}\u{412}\u{413}\u{414}\u{415}\u{416}\u{417}\u{418}\u{419}\u{41a}\u{41b}\u{41c}\u{41d}\u{41e}\u{41f}\u{420}\u{421}\u{422}\u{423}\u{424}\u{425}\u{426}\u{427}\u{428}\u{429}\u{42a}\u{42b}\u{42c}\u{42d}\u{42e}\u{42f}\u{430}\u{431}\u{432}\u{433}\u{434}\u{435}\u{436}\u{437}\u{438}\u{439}\u{43a}\u{43b}\u{43c}\u{43d}\u{43e}\u{43f}\u{440}\u{441}\u{442}\u{443}\u{444}\u{445}\u{446}\u{447}\u{448}\u{449}\u{44a}\u{44b}\u{44c}\u{44d}\u{44e}\u{44f}"),
    ("sloppy-windows-1250", "\u{0}\u{1}\u{2}\u{3}\u{4}\u{5}\u{6}\u{7}\u{8}\u{9}\u{a}\u{b}\u{c}\u{d}\u{e}\u{f}\u{10}\u{11}\u{12}\u{13}\u{14}\u{15}\u{16}\u{17}\u{18}\u{19}\u{fffd}\u{1b}\u{1c}\u{1d}\u{1e}\u{1f} !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~\u{7f}\u{20ac}\u{81}\u{201a}\u{83}\u{201e}\u{2026}\u{2020}\u{2021}\u{88}\u{2030}\u{160}\u{2039}\u{15a}\u{164}\u{17d}\u{179}\u{90}\u{2018}\u{2019}\u{201c}\u{201d}\u{2022}\u{2013}\u{2014}\u{98}\u{2122}\u{161}\u{203a}\u{15b}\u{165}\u{17e}\u{17a}\u{a0}\u{2c7}\u{2d8}\u{141}\u{a4}\u{104}\u{a6}\u{a7}\u{a8}\u{a9}\u{15e}\u{ab}\u{ac}\u{ad}\u{ae}\u{17b}\u{b0}\u{b1}\u{2db}\u{142}\u{b4}\u{b5}\u{b6}\u{b7}\u{b8}\u{105}\u{15f}\u{bb}\u{13d}\u{2dd}\u{13e}\u{17c}\u{154}\u{c1}\u{c2}\u{102}\u{c4}\u{139}\u{106}\u{c7}\u{10c}\u{c9}\u{118}\u{cb}\u{11a}\u{cd}\u{ce}\u{10e}\u{110}\u{143}\u{147}\u{d3}\u{d4}\u{150}\u{d6}\u{d7}\u{158}\u{16e}\u{da}\u{170}\u{dc}\u{dd}\u{162}\u{df}\u{155}\u{e1}\u{e2}\u{103}\u{e4}\u{13a}\u{107}\u{e7}\u{10d}\u{e9}\u{119}\u{eb}\u{11b}\u{ed}\u{ee}\u{10f}\u{111}\u{144}\u{148}\u{f3}\u{f4}\u{151}\u{f6}\u{f7}\u{159}\u{16f}\u{fa}\u{171}\u{fc}\u{fd}\u{163}\u{2d9}"),
    ("sloppy-windows-1253", "\u{0}\u{1}\u{2}\u{3}\u{4}\u{5}\u{6}\u{7}\u{8}\u{9}\u{a}\u{b}\u{c}\u{d}\u{e}\u{f}\u{10}\u{11}\u{12}\u{13}\u{14}\u{15}\u{16}\u{17}\u{18}\u{19}\u{fffd}\u{1b}\u{1c}\u{1d}\u{1e}\u{1f} !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~\u{7f}\u{20ac}\u{81}\u{201a}\u{192}\u{201e}\u{2026}\u{2020}\u{2021}\u{88}\u{2030}\u{8a}\u{2039}\u{8c}\u{8d}\u{8e}\u{8f}\u{90}\u{2018}\u{2019}\u{201c}\u{201d}\u{2022}\u{2013}\u{2014}\u{98}\u{2122}\u{9a}\u{203a}\u{9c}\u{9d}\u{9e}\u{9f}\u{a0}\u{385}\u{386}\u{a3}\u{a4}\u{a5}\u{a6}\u{a7}\u{a8}\u{a9}\u{aa}\u{ab}\u{ac}\u{ad}\u{ae}\u{2015}\u{b0}\u{b1}\u{b2}\u{b3}\u{384}\u{b5}\u{b6}\u{b7}\u{388}\u{389}\u{38a}\u{bb}\u{38c}\u{bd}\u{38e}\u{38f}\u{390}\u{391}\u{392}\u{393}\u{394}\u{395}\u{396}\u{397}\u{398}\u{399}\u{39a}\u{39b}\u{39c}\u{39d}\u{39e}\u{39f}\u{3a0}\u{3a1}\u{d2}\u{3a3}\u{3a4}\u{3a5}\u{3a6}\u{3a7}\u{3a8}\u{3a9}\u{3aa}\u{3ab}\u{3ac}\u{3ad}\u{3ae}\u{3af}\u{3b0}\u{3b1}\u{3b2}\u{3b3}\u{3b4}\u{3b5}\u{3b6}\u{3b7}\u{3b8}\u{3b9}\u{3ba}\u{3bb}\u{3bc}\u{3bd}\u{3be}\u{3bf}\u{3c0}\u{3c1}\u{3c2}\u{3c3}\u{3c4}\u{3c5}\u{3c6}\u{3c7}\u{3c8}\u{3c9}\u{3ca}\u{3cb}\u{3cc}\u{3cd}\u{3ce}\u{ff}"),
    ("sloppy-windows-1254", "\u{0}\u{1}\u{2}\u{3}\u{4}\u{5}\u{6}\u{7}\u{8}\u{9}\u{a}\u{b}\u{c}\u{d}\u{e}\u{f}\u{10}\u{11}\u{12}\u{13}\u{14}\u{15}\u{16}\u{17}\u{18}\u{19}\u{fffd}\u{1b}\u{1c}\u{1d}\u{1e}\u{1f} !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~\u{7f}\u{20ac}\u{81}\u{201a}\u{192}\u{201e}\u{2026}\u{2020}\u{2021}\u{2c6}\u{2030}\u{160}\u{2039}\u{152}\u{8d}\u{8e}\u{8f}\u{90}\u{2018}\u{2019}\u{201c}\u{201d}\u{2022}\u{2013}\u{2014}\u{2dc}\u{2122}\u{161}\u{203a}\u{153}\u{9d}\u{9e}\u{178}\u{a0}\u{a1}\u{a2}\u{a3}\u{a4}\u{a5}\u{a6}\u{a7}\u{a8}\u{a9}\u{aa}\u{ab}\u{ac}\u{ad}\u{ae}\u{af}\u{b0}\u{b1}\u{b2}\u{b3}\u{b4}\u{b5}\u{b6}\u{b7}\u{b8}\u{b9}\u{ba}\u{bb}\u{bc}\u{bd}\u{be}\u{bf}\u{c0}\u{c1}\u{c2}\u{c3}\u{c4}\u{c5}\u{c6}\u{c7}\u{c8}\u{c9}\u{ca}\u{cb}\u{cc}\u{cd}\u{ce}\u{cf}\u{11e}\u{d1}\u{d2}\u{d3}\u{d4}\u{d5}\u{d6}\u{d7}\u{d8}\u{d9}\u{da}\u{db}\u{dc}\u{130}\u{15e}\u{df}\u{e0}\u{e1}\u{e2}\u{e3}\u{e4}\u{e5}\u{e6}\u{e7}\u{e8}\u{e9}\u{ea}\u{eb}\u{ec}\u{ed}\u{ee}\u{ef}\u{11f}\u{f1}\u{f2}\u{f3}\u{f4}\u{f5}\u{f6}\u{f7}\u{f8}\u{f9}\u{fa}\u{fb}\u{fc}\u{131}\u{15f}\u{ff}"),
    ("sloppy-windows-1257", "\u{0}\u{1}\u{2}\u{3}\u{4}\u{5}\u{6}\u{7}\u{8}\u{9}\u{a}\u{b}\u{c}\u{d}\u{e}\u{f}\u{10}\u{11}\u{12}\u{13}\u{14}\u{15}\u{16}\u{17}\u{18}\u{19}\u{fffd}\u{1b}\u{1c}\u{1d}\u{1e}\u{1f} !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~\u{7f}\u{20ac}\u{81}\u{201a}\u{83}\u{201e}\u{2026}\u{2020}\u{2021}\u{88}\u{2030}\u{8a}\u{2039}\u{8c}\u{a8}\u{2c7}\u{b8}\u{90}\u{2018}\u{2019}\u{201c}\u{201d}\u{2022}\u{2013}\u{2014}\u{98}\u{2122}\u{9a}\u{203a}\u{9c}\u{af}\u{2db}\u{9f}\u{a0}\u{a1}\u{a2}\u{a3}\u{a4}\u{a5}\u{a6}\u{a7}\u{d8}\u{a9}\u{156}\u{ab}\u{ac}\u{ad}\u{ae}\u{c6}\u{b0}\u{b1}\u{b2}\u{b3}\u{b4}\u{b5}\u{b6}\u{b7}\u{f8}\u{b9}\u{157}\u{bb}\u{bc}\u{bd}\u{be}\u{e6}\u{104}\u{12e}\u{100}\u{106}\u{c4}\u{c5}\u{118}\u{112}\u{10c}\u{c9}\u{179}\u{116}\u{122}\u{136}\u{12a}\u{13b}\u{160}\u{143}\u{145}\u{d3}\u{14c}\u{d5}\u{d6}\u{d7}\u{172}\u{141}\u{15a}\u{16a}\u{dc}\u{17b}\u{17d}\u{df}\u{105}\u{12f}\u{101}\u{107}\u{e4}\u{e5}\u{119}\u{113}\u{10d}\u{e9}\u{17a}\u{117}\u{123}\u{137}\u{12b}\u{13c}\u{161}\u{144}\u{146}\u{f3}\u{14d}\u{f5}\u{f6}\u{f7}\u{173}\u{142}\u{15b}\u{16b}\u{fc}\u{17c}\u{17e}\u{2d9}"),
    ("iso-8859-2", "\u{0}\u{1}\u{2}\u{3}\u{4}\u{5}\u{6}\u{7}\u{8}\u{9}\u{a}\u{b}\u{c}\u{d}\u{e}\u{f}\u{10}\u{11}\u{12}\u{13}\u{14}\u{15}\u{16}\u{17}\u{18}\u{19}\u{1a}\u{1b}\u{1c}\u{1d}\u{1e}\u{1f} !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~\u{7f}\u{80}\u{81}\u{82}\u{83}\u{84}\u{85}\u{86}\u{87}\u{88}\u{89}\u{8a}\u{8b}\u{8c}\u{8d}\u{8e}\u{8f}\u{90}\u{91}\u{92}\u{93}\u{94}\u{95}\u{96}\u{97}\u{98}\u{99}\u{9a}\u{9b}\u{9c}\u{9d}\u{9e}\u{9f}\u{a0}\u{104}\u{2d8}\u{141}\u{a4}\u{13d}\u{15a}\u{a7}\u{a8}\u{160}\u{15e}\u{164}\u{179}\u{ad}\u{17d}\u{17b}\u{b0}\u{105}\u{2db}\u{142}\u{b4}\u{13e}\u{15b}\u{2c7}\u{b8}\u{161}\u{15f}\u{165}\u{17a}\u{2dd}\u{17e}\u{17c}\u{154}\u{c1}\u{c2}\u{102}\u{c4}\u{139}\u{106}\u{c7}\u{10c}\u{c9}\u{118}\u{cb}\u{11a}\u{cd}\u{ce}\u{10e}\u{110}\u{143}\u{147}\u{d3}\u{d4}\u{150}\u{d6}\u{d7}\u{158}\u{16e}\u{da}\u{170}\u{dc}\u{dd}\u{162}\u{df}\u{155}\u{e1}\u{e2}\u{103}\u{e4}\u{13a}\u{107}\u{e7}\u{10d}\u{e9}\u{119}\u{eb}\u{11b}\u{ed}\u{ee}\u{10f}\u{111}\u{144}\u{148}\u{f3}\u{f4}\u{151}\u{f6}\u{f7}\u{159}\u{16f}\u{fa}\u{171}\u{fc}\u{fd}\u{163}\u{2d9}"),
    ("macroman", "\u{0}\u{1}\u{2}\u{3}\u{4}\u{5}\u{6}\u{7}\u{8}\u{9}\u{a}\u{b}\u{c}\u{d}\u{e}\u{f}\u{10}\u{11}\u{12}\u{13}\u{14}\u{15}\u{16}\u{17}\u{18}\u{19}\u{1a}\u{1b}\u{1c}\u{1d}\u{1e}\u{1f} !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~\u{7f}\u{c4}\u{c5}\u{c7}\u{c9}\u{d1}\u{d6}\u{dc}\u{e1}\u{e0}\u{e2}\u{e4}\u{e3}\u{e5}\u{e7}\u{e9}\u{e8}\u{ea}\u{eb}\u{ed}\u{ec}\u{ee}\u{ef}\u{f1}\u{f3}\u{f2}\u{f4}\u{f6}\u{f5}\u{fa}\u{f9}\u{fb}\u{fc}\u{2020}\u{b0}\u{a2}\u{a3}\u{a7}\u{2022}\u{b6}\u{df}\u{ae}\u{a9}\u{2122}\u{b4}\u{a8}\u{2260}\u{c6}\u{d8}\u{221e}\u{b1}\u{2264}\u{2265}\u{a5}\u{b5}\u{2202}\u{2211}\u{220f}\u{3c0}\u{222b}\u{aa}\u{ba}\u{3a9}\u{e6}\u{f8}\u{bf}\u{a1}\u{ac}\u{221a}\u{192}\u{2248}\u{2206}\u{ab}\u{bb}\u{2026}\u{a0}\u{c0}\u{c3}\u{d5}\u{152}\u{153}\u{2013}\u{2014}\u{201c}\u{201d}\u{2018}\u{2019}\u{f7}\u{25ca}\u{ff}\u{178}\u{2044}\u{20ac}\u{2039}\u{203a}\u{fb01}\u{fb02}\u{2021}\u{b7}\u{201a}\u{201e}\u{2030}\u{c2}\u{ca}\u{c1}\u{cb}\u{c8}\u{cd}\u{ce}\u{cf}\u{cc}\u{d3}\u{d4}\u{f8ff}\u{d2}\u{da}\u{db}\u{d9}\u{131}\u{2c6}\u{2dc}\u{af}\u{2d8}\u{2d9}\u{2da}\u{b8}\u{2dd}\u{2db}\u{2c7}"),
    ("cp437", "\u{0}\u{1}\u{2}\u{3}\u{4}\u{5}\u{6}\u{7}\u{8}\u{9}\u{a}\u{b}\u{c}\u{d}\u{e}\u{f}\u{10}\u{11}\u{12}\u{13}\u{14}\u{15}\u{16}\u{17}\u{18}\u{19}\u{1a}\u{1b}\u{1c}\u{1d}\u{1e}\u{1f} !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~\u{7f}\u{c7}\u{fc}\u{e9}\u{e2}\u{e4}\u{e0}\u{e5}\u{e7}\u{ea}\u{eb}\u{e8}\u{ef}\u{ee}\u{ec}\u{c4}\u{c5}\u{c9}\u{e6}\u{c6}\u{f4}\u{f6}\u{f2}\u{fb}\u{f9}\u{ff}\u{d6}\u{dc}\u{a2}\u{a3}\u{a5}\u{20a7}\u{192}\u{e1}\u{ed}\u{f3}\u{fa}\u{f1}\u{d1}\u{aa}\u{ba}\u{bf}\u{2310}\u{ac}\u{bd}\u{bc}\u{a1}\u{ab}\u{bb}\u{2591}\u{2592}\u{2593}\u{2502}\u{2524}\u{2561}\u{2562}\u{2556}\u{2555}\u{2563}\u{2551}\u{2557}\u{255d}\u{255c}\u{255b}\u{2510}\u{2514}\u{2534}\u{252c}\u{251c}\u{2500}\u{253c}\u{255e}\u{255f}\u{255a}\u{2554}\u{2569}\u{2566}\u{2560}\u{2550}\u{256c}\u{2567}\u{2568}\u{2564}\u{2565}\u{2559}\u{2558}\u{2552}\u{2553}\u{256b}\u{256a}\u{2518}\u{250c}\u{2588}\u{2584}\u{258c}\u{2590}\u{2580}\u{3b1}\u{df}\u{393}\u{3c0}\u{3a3}\u{3c3}\u{b5}\u{3c4}\u{3a6}\u{398}\u{3a9}\u{3b4}\u{221e}\u{3c6}\u{3b5}\u{2229}\u{2261}\u{b1}\u{2265}\u{2264}\u{2320}\u{2321}\u{f7}\u{2248}\u{b0}\u{2219}\u{b7}\u{221a}\u{207f}\u{b2}\u{25a0}\u{a0}"),
];

/// `ftfy.badness.BADNESS_RE` in Rust regex syntax.
#[rustfmt::skip]
pub(crate) const BADNESS_RE: &str = r#"(?:[\x{80}-\x{9F}]|[\x{A6}\x{A4}\x{A8}\x{AC}\x{AF}\x{B8}\x{192}\x{2C6}\x{2C7}\x{2D8}\x{2DB}\x{2DC}\x{2020}\x{2021}\x{2030}\x{2310}\x{25CA}\x{FFFD}\x{AA}\x{BA}\x{DF}\x{E0}-\x{F1}\x{103}\x{105}\x{101}\x{107}\x{10D}\x{10F}\x{111}\x{119}\x{11B}\x{113}\x{117}\x{11F}\x{123}\x{12F}\x{12B}\x{137}\x{13A}\x{13E}\x{142}\x{13C}\x{153}\x{155}\x{15B}\x{15F}\x{161}\x{165}\x{FC}\x{17A}\x{17C}\x{17E}\x{491}\x{FB01}\x{FB02}\x{C0}-\x{D1}\x{D8}\x{DC}\x{DD}\x{102}\x{100}\x{104}\x{106}\x{10C}\x{10E}\x{110}\x{118}\x{11A}\x{112}\x{116}\x{11E}\x{122}\x{130}\x{12A}\x{136}\x{139}\x{13D}\x{141}\x{13B}\x{143}\x{147}\x{145}\x{152}\x{158}\x{15A}\x{15E}\x{160}\x{162}\x{164}\x{16E}\x{170}\x{178}\x{179}\x{17B}\x{17D}\x{490}\x{2502}\x{250C}\x{2510}\x{2518}\x{251C}\x{2524}\x{252C}\x{253C}\x{2550}-\x{256C}\x{2580}\x{2584}\x{2588}\x{258C}\x{2590}\x{2591}\x{2592}\x{2593}\x{A1}\x{AB}\x{BF}\x{A9}\x{384}\x{385}\x{2018}\x{201A}\x{201C}\x{201E}\x{2022}\x{2039}\x{F8FF}\x{AE}\x{BB}\x{2DD}\x{201D}\x{203A}\x{2122}\x{A2}\x{A3}\x{A5}\x{20A7}\x{20AC}\x{B2}\x{B3}\x{B9}\x{B1}\x{BC}\x{BD}\x{BE}\x{D7}\x{B5}\x{F7}\x{2044}\x{2202}\x{2206}\x{220F}\x{2211}\x{221A}\x{221E}\x{2229}\x{222B}\x{2248}\x{2260}\x{2261}\x{2264}\x{2265}\x{2116}\x{B6}\x{A7}][\x{A6}\x{A4}\x{A8}\x{AC}\x{AF}\x{B8}\x{192}\x{2C6}\x{2C7}\x{2D8}\x{2DB}\x{2DC}\x{2020}\x{2021}\x{2030}\x{2310}\x{25CA}\x{FFFD}\x{AA}\x{BA}]|[a-zA-Z][\x{3B1}-\x{3C9}\x{3AC}\x{3AD}\x{3AE}\x{3AF}\x{3B0}\x{430}-\x{45F}\x{DE}\x{391}-\x{3A9}\x{386}\x{388}\x{389}\x{38A}\x{38C}\x{38E}\x{38F}\x{3AA}\x{3AB}\x{401}-\x{42F}][\x{A6}\x{A4}\x{A8}\x{AC}\x{AF}\x{B8}\x{192}\x{2C6}\x{2C7}\x{2D8}\x{2DB}\x{2DC}\x{2020}\x{2021}\x{2030}\x{2310}\x{25CA}\x{FFFD}\x{AA}\x{BA}]|[\x{A6}\x{A4}\x{A8}\x{AC}\x{AF}\x{B8}\x{192}\x{2C6}\x{2C7}\x{2D8}\x{2DB}\x{2DC}\x{2020}\x{2021}\x{2030}\x{2310}\x{25CA}\x{FFFD}\x{AA}\x{BA}][\x{DF}\x{E0}-\x{F1}\x{103}\x{105}\x{101}\x{107}\x{10D}\x{10F}\x{111}\x{119}\x{11B}\x{113}\x{117}\x{11F}\x{123}\x{12F}\x{12B}\x{137}\x{13A}\x{13E}\x{142}\x{13C}\x{153}\x{155}\x{15B}\x{15F}\x{161}\x{165}\x{FC}\x{17A}\x{17C}\x{17E}\x{491}\x{FB01}\x{FB02}\x{C0}-\x{D1}\x{D8}\x{DC}\x{DD}\x{102}\x{100}\x{104}\x{106}\x{10C}\x{10E}\x{110}\x{118}\x{11A}\x{112}\x{116}\x{11E}\x{122}\x{130}\x{12A}\x{136}\x{139}\x{13D}\x{141}\x{13B}\x{143}\x{147}\x{145}\x{152}\x{158}\x{15A}\x{15E}\x{160}\x{162}\x{164}\x{16E}\x{170}\x{178}\x{179}\x{17B}\x{17D}\x{490}\x{2502}\x{250C}\x{2510}\x{2518}\x{251C}\x{2524}\x{252C}\x{253C}\x{2550}-\x{256C}\x{2580}\x{2584}\x{2588}\x{258C}\x{2590}\x{2591}\x{2592}\x{2593}\x{A1}\x{AB}\x{BF}\x{A9}\x{384}\x{385}\x{2018}\x{201A}\x{201C}\x{201E}\x{2022}\x{2039}\x{F8FF}\x{AE}\x{BB}\x{2DD}\x{201D}\x{203A}\x{2122}\x{A2}\x{A3}\x{A5}\x{20A7}\x{20AC}\x{B2}\x{B3}\x{B9}\x{B1}\x{BC}\x{BD}\x{BE}\x{D7}\x{B5}\x{F7}\x{2044}\x{2202}\x{2206}\x{220F}\x{2211}\x{221A}\x{221E}\x{2229}\x{222B}\x{2248}\x{2260}\x{2261}\x{2264}\x{2265}\x{2116}\x{B6}\x{A7}]|[\x{DF}\x{E0}-\x{F1}\x{103}\x{105}\x{101}\x{107}\x{10D}\x{10F}\x{111}\x{119}\x{11B}\x{113}\x{117}\x{11F}\x{123}\x{12F}\x{12B}\x{137}\x{13A}\x{13E}\x{142}\x{13C}\x{153}\x{155}\x{15B}\x{15F}\x{161}\x{165}\x{FC}\x{17A}\x{17C}\x{17E}\x{491}\x{FB01}\x{FB02}\x{3B1}-\x{3C9}\x{3AC}\x{3AD}\x{3AE}\x{3AF}\x{3B0}\x{430}-\x{45F}\x{2502}\x{250C}\x{2510}\x{2518}\x{251C}\x{2524}\x{252C}\x{253C}\x{2550}-\x{256C}\x{2580}\x{2584}\x{2588}\x{258C}\x{2590}\x{2591}\x{2592}\x{2593}\x{AE}\x{BB}\x{2DD}\x{201D}\x{203A}\x{2122}\x{A2}\x{A3}\x{A5}\x{20A7}\x{20AC}\x{B2}\x{B3}\x{B9}\x{B1}\x{BC}\x{BD}\x{BE}\x{D7}\x{B5}\x{F7}\x{2044}\x{2202}\x{2206}\x{220F}\x{2211}\x{221A}\x{221E}\x{2229}\x{222B}\x{2248}\x{2260}\x{2261}\x{2264}\x{2265}\x{2116}][\x{C0}-\x{D1}\x{D8}\x{DC}\x{DD}\x{102}\x{100}\x{104}\x{106}\x{10C}\x{10E}\x{110}\x{118}\x{11A}\x{112}\x{116}\x{11E}\x{122}\x{130}\x{12A}\x{136}\x{139}\x{13D}\x{141}\x{13B}\x{143}\x{147}\x{145}\x{152}\x{158}\x{15A}\x{15E}\x{160}\x{162}\x{164}\x{16E}\x{170}\x{178}\x{179}\x{17B}\x{17D}\x{490}]|[\x{2502}\x{250C}\x{2510}\x{2518}\x{251C}\x{2524}\x{252C}\x{253C}\x{2550}-\x{256C}\x{2580}\x{2584}\x{2588}\x{258C}\x{2590}\x{2591}\x{2592}\x{2593}\x{AE}\x{BB}\x{2DD}\x{201D}\x{203A}\x{2122}\x{A2}\x{A3}\x{A5}\x{20A7}\x{20AC}\x{B2}\x{B3}\x{B9}\x{B1}\x{BC}\x{BD}\x{BE}\x{D7}\x{B5}\x{F7}\x{2044}\x{2202}\x{2206}\x{220F}\x{2211}\x{221A}\x{221E}\x{2229}\x{222B}\x{2248}\x{2260}\x{2261}\x{2264}\x{2265}\x{2116}][\x{DF}\x{E0}-\x{F1}\x{103}\x{105}\x{101}\x{107}\x{10D}\x{10F}\x{111}\x{119}\x{11B}\x{113}\x{117}\x{11F}\x{123}\x{12F}\x{12B}\x{137}\x{13A}\x{13E}\x{142}\x{13C}\x{153}\x{155}\x{15B}\x{15F}\x{161}\x{165}\x{FC}\x{17A}\x{17C}\x{17E}\x{491}\x{FB01}\x{FB02}]|[\x{DF}\x{E0}-\x{F1}\x{103}\x{105}\x{101}\x{107}\x{10D}\x{10F}\x{111}\x{119}\x{11B}\x{113}\x{117}\x{11F}\x{123}\x{12F}\x{12B}\x{137}\x{13A}\x{13E}\x{142}\x{13C}\x{153}\x{155}\x{15B}\x{15F}\x{161}\x{165}\x{FC}\x{17A}\x{17C}\x{17E}\x{491}\x{FB01}\x{FB02}\x{2502}\x{250C}\x{2510}\x{2518}\x{251C}\x{2524}\x{252C}\x{253C}\x{2550}-\x{256C}\x{2580}\x{2584}\x{2588}\x{258C}\x{2590}\x{2591}\x{2592}\x{2593}\x{AE}\x{BB}\x{2DD}\x{201D}\x{203A}\x{2122}][\x{A2}\x{A3}\x{A5}\x{20A7}\x{20AC}]|[\s\x{1C}-\x{1F}][\x{C0}-\x{D1}\x{D8}\x{DC}\x{DD}\x{102}\x{100}\x{104}\x{106}\x{10C}\x{10E}\x{110}\x{118}\x{11A}\x{112}\x{116}\x{11E}\x{122}\x{130}\x{12A}\x{136}\x{139}\x{13D}\x{141}\x{13B}\x{143}\x{147}\x{145}\x{152}\x{158}\x{15A}\x{15E}\x{160}\x{162}\x{164}\x{16E}\x{170}\x{178}\x{179}\x{17B}\x{17D}\x{490}][\x{A2}\x{A3}\x{A5}\x{20A7}\x{20AC}]|[\x{C0}-\x{D1}\x{D8}\x{DC}\x{DD}\x{102}\x{100}\x{104}\x{106}\x{10C}\x{10E}\x{110}\x{118}\x{11A}\x{112}\x{116}\x{11E}\x{122}\x{130}\x{12A}\x{136}\x{139}\x{13D}\x{141}\x{13B}\x{143}\x{147}\x{145}\x{152}\x{158}\x{15A}\x{15E}\x{160}\x{162}\x{164}\x{16E}\x{170}\x{178}\x{179}\x{17B}\x{17D}\x{490}\x{2502}\x{250C}\x{2510}\x{2518}\x{251C}\x{2524}\x{252C}\x{253C}\x{2550}-\x{256C}\x{2580}\x{2584}\x{2588}\x{258C}\x{2590}\x{2591}\x{2592}\x{2593}][\x{B2}\x{B3}\x{B9}\x{B1}\x{BC}\x{BD}\x{BE}\x{D7}\x{B5}\x{F7}\x{2044}\x{2202}\x{2206}\x{220F}\x{2211}\x{221A}\x{221E}\x{2229}\x{222B}\x{2248}\x{2260}\x{2261}\x{2264}\x{2265}\x{2116}\x{B6}\x{A7}]|[\x{DF}\x{E0}-\x{F1}\x{103}\x{105}\x{101}\x{107}\x{10D}\x{10F}\x{111}\x{119}\x{11B}\x{113}\x{117}\x{11F}\x{123}\x{12F}\x{12B}\x{137}\x{13A}\x{13E}\x{142}\x{13C}\x{153}\x{155}\x{15B}\x{15F}\x{161}\x{165}\x{FC}\x{17A}\x{17C}\x{17E}\x{491}\x{FB01}\x{FB02}\x{C0}-\x{D1}\x{D8}\x{DC}\x{DD}\x{102}\x{100}\x{104}\x{106}\x{10C}\x{10E}\x{110}\x{118}\x{11A}\x{112}\x{116}\x{11E}\x{122}\x{130}\x{12A}\x{136}\x{139}\x{13D}\x{141}\x{13B}\x{143}\x{147}\x{145}\x{152}\x{158}\x{15A}\x{15E}\x{160}\x{162}\x{164}\x{16E}\x{170}\x{178}\x{179}\x{17B}\x{17D}\x{490}\x{2502}\x{250C}\x{2510}\x{2518}\x{251C}\x{2524}\x{252C}\x{253C}\x{2550}-\x{256C}\x{2580}\x{2584}\x{2588}\x{258C}\x{2590}\x{2591}\x{2592}\x{2593}\x{A2}\x{A3}\x{A5}\x{20A7}\x{20AC}\x{AE}\x{BB}\x{2DD}\x{201D}\x{203A}\x{2122}][\x{A1}\x{AB}\x{BF}\x{A9}\x{384}\x{385}\x{2018}\x{201A}\x{201C}\x{201E}\x{2022}\x{2039}\x{F8FF}][\x{B2}\x{B3}\x{B9}\x{B1}\x{BC}\x{BD}\x{BE}\x{D7}\x{B5}\x{F7}\x{2044}\x{2202}\x{2206}\x{220F}\x{2211}\x{221A}\x{221E}\x{2229}\x{222B}\x{2248}\x{2260}\x{2261}\x{2264}\x{2265}\x{2116}]|[\x{DF}\x{E0}-\x{F1}\x{103}\x{105}\x{101}\x{107}\x{10D}\x{10F}\x{111}\x{119}\x{11B}\x{113}\x{117}\x{11F}\x{123}\x{12F}\x{12B}\x{137}\x{13A}\x{13E}\x{142}\x{13C}\x{153}\x{155}\x{15B}\x{15F}\x{161}\x{165}\x{FC}\x{17A}\x{17C}\x{17E}\x{491}\x{FB01}\x{FB02}\x{C0}-\x{D1}\x{D8}\x{DC}\x{DD}\x{102}\x{100}\x{104}\x{106}\x{10C}\x{10E}\x{110}\x{118}\x{11A}\x{112}\x{116}\x{11E}\x{122}\x{130}\x{12A}\x{136}\x{139}\x{13D}\x{141}\x{13B}\x{143}\x{147}\x{145}\x{152}\x{158}\x{15A}\x{15E}\x{160}\x{162}\x{164}\x{16E}\x{170}\x{178}\x{179}\x{17B}\x{17D}\x{490}\x{A2}\x{A3}\x{A5}\x{20A7}\x{20AC}\x{B2}\x{B3}\x{B9}\x{B1}\x{BC}\x{BD}\x{BE}\x{D7}\x{B5}\x{F7}\x{2044}\x{2202}\x{2206}\x{220F}\x{2211}\x{221A}\x{221E}\x{2229}\x{222B}\x{2248}\x{2260}\x{2261}\x{2264}\x{2265}\x{2116}\x{2502}\x{250C}\x{2510}\x{2518}\x{251C}\x{2524}\x{252C}\x{253C}\x{2550}-\x{256C}\x{2580}\x{2584}\x{2588}\x{258C}\x{2590}\x{2591}\x{2592}\x{2593}\x{B6}\x{A7}][\x{AE}\x{BB}\x{2DD}\x{201D}\x{203A}\x{2122}][\x{A1}\x{AB}\x{BF}\x{A9}\x{384}\x{385}\x{2018}\x{201A}\x{201C}\x{201E}\x{2022}\x{2039}\x{F8FF}]|[\x{A2}\x{A3}\x{A5}\x{20A7}\x{20AC}\x{B2}\x{B3}\x{B9}\x{B1}\x{BC}\x{BD}\x{BE}\x{D7}\x{B5}\x{F7}\x{2044}\x{2202}\x{2206}\x{220F}\x{2211}\x{221A}\x{221E}\x{2229}\x{222B}\x{2248}\x{2260}\x{2261}\x{2264}\x{2265}\x{2116}\x{2502}\x{250C}\x{2510}\x{2518}\x{251C}\x{2524}\x{252C}\x{253C}\x{2550}-\x{256C}\x{2580}\x{2584}\x{2588}\x{258C}\x{2590}\x{2591}\x{2592}\x{2593}][\x{A1}\x{AB}\x{BF}\x{A9}\x{384}\x{385}\x{2018}\x{201A}\x{201C}\x{201E}\x{2022}\x{2039}\x{F8FF}]|[a-z][\x{C0}-\x{D1}\x{D8}\x{DC}\x{DD}\x{102}\x{100}\x{104}\x{106}\x{10C}\x{10E}\x{110}\x{118}\x{11A}\x{112}\x{116}\x{11E}\x{122}\x{130}\x{12A}\x{136}\x{139}\x{13D}\x{141}\x{13B}\x{143}\x{147}\x{145}\x{152}\x{158}\x{15A}\x{15E}\x{160}\x{162}\x{164}\x{16E}\x{170}\x{178}\x{179}\x{17B}\x{17D}\x{490}][\x{A1}\x{AB}\x{BF}\x{A9}\x{384}\x{385}\x{2018}\x{201A}\x{201C}\x{201E}\x{2022}\x{2039}\x{F8FF}\x{A2}\x{A3}\x{A5}\x{20A7}\x{20AC}]|[\x{2502}\x{250C}\x{2510}\x{2518}\x{251C}\x{2524}\x{252C}\x{253C}\x{2550}-\x{256C}\x{2580}\x{2584}\x{2588}\x{258C}\x{2590}\x{2591}\x{2592}\x{2593}][\x{D2}-\x{D6}\x{D9}-\x{DC}\x{F2}-\x{F6}\x{F8}-\x{FC}\x{150}\x{14C}\x{16A}\x{172}\x{B0}]|[\x{DF}\x{E0}-\x{F1}\x{103}\x{105}\x{101}\x{107}\x{10D}\x{10F}\x{111}\x{119}\x{11B}\x{113}\x{117}\x{11F}\x{123}\x{12F}\x{12B}\x{137}\x{13A}\x{13E}\x{142}\x{13C}\x{153}\x{155}\x{15B}\x{15F}\x{161}\x{165}\x{FC}\x{17A}\x{17C}\x{17E}\x{491}\x{FB01}\x{FB02}\x{C0}-\x{D1}\x{D8}\x{DC}\x{DD}\x{102}\x{100}\x{104}\x{106}\x{10C}\x{10E}\x{110}\x{118}\x{11A}\x{112}\x{116}\x{11E}\x{122}\x{130}\x{12A}\x{136}\x{139}\x{13D}\x{141}\x{13B}\x{143}\x{147}\x{145}\x{152}\x{158}\x{15A}\x{15E}\x{160}\x{162}\x{164}\x{16E}\x{170}\x{178}\x{179}\x{17B}\x{17D}\x{490}\x{A2}\x{A3}\x{A5}\x{20A7}\x{20AC}\x{B2}\x{B3}\x{B9}\x{B1}\x{BC}\x{BD}\x{BE}\x{D7}\x{B5}\x{F7}\x{2044}\x{2202}\x{2206}\x{220F}\x{2211}\x{221A}\x{221E}\x{2229}\x{222B}\x{2248}\x{2260}\x{2261}\x{2264}\x{2265}\x{2116}\x{A1}\x{AB}\x{BF}\x{A9}\x{384}\x{385}\x{2018}\x{201A}\x{201C}\x{201E}\x{2022}\x{2039}\x{F8FF}\x{AE}\x{BB}\x{2DD}\x{201D}\x{203A}\x{2122}\x{B6}\x{A7}][\x{2502}\x{250C}\x{2510}\x{2518}\x{251C}\x{2524}\x{252C}\x{253C}\x{2550}-\x{256C}\x{2580}\x{2584}\x{2588}\x{258C}\x{2590}\x{2591}\x{2592}\x{2593}]|[\x{2502}\x{250C}\x{2510}\x{2518}\x{251C}\x{2524}\x{252C}\x{253C}\x{2550}-\x{256C}\x{2580}\x{2584}\x{2588}\x{258C}\x{2590}\x{2591}\x{2592}\x{2593}][\x{AE}\x{BB}\x{2DD}\x{201D}\x{203A}\x{2122}]|[\x{DF}\x{E0}-\x{F1}\x{103}\x{105}\x{101}\x{107}\x{10D}\x{10F}\x{111}\x{119}\x{11B}\x{113}\x{117}\x{11F}\x{123}\x{12F}\x{12B}\x{137}\x{13A}\x{13E}\x{142}\x{13C}\x{153}\x{155}\x{15B}\x{15F}\x{161}\x{165}\x{FC}\x{17A}\x{17C}\x{17E}\x{491}\x{FB01}\x{FB02}\x{C0}-\x{D1}\x{D8}\x{DC}\x{DD}\x{102}\x{100}\x{104}\x{106}\x{10C}\x{10E}\x{110}\x{118}\x{11A}\x{112}\x{116}\x{11E}\x{122}\x{130}\x{12A}\x{136}\x{139}\x{13D}\x{141}\x{13B}\x{143}\x{147}\x{145}\x{152}\x{158}\x{15A}\x{15E}\x{160}\x{162}\x{164}\x{16E}\x{170}\x{178}\x{179}\x{17B}\x{17D}\x{490}][\x{A1}\x{AB}\x{BF}\x{A9}\x{384}\x{385}\x{2018}\x{201A}\x{201C}\x{201E}\x{2022}\x{2039}\x{F8FF}\x{AE}\x{BB}\x{2DD}\x{201D}\x{203A}\x{2122}][\p{L}\p{N}_]|[\x{152}\x{153}][^A-Za-z]|[\x{C0}-\x{D1}\x{D8}\x{DC}\x{DD}\x{102}\x{100}\x{104}\x{106}\x{10C}\x{10E}\x{110}\x{118}\x{11A}\x{112}\x{116}\x{11E}\x{122}\x{130}\x{12A}\x{136}\x{139}\x{13D}\x{141}\x{13B}\x{143}\x{147}\x{145}\x{152}\x{158}\x{15A}\x{15E}\x{160}\x{162}\x{164}\x{16E}\x{170}\x{178}\x{179}\x{17B}\x{17D}\x{490}]\x{B0}|[\x{C2}\x{C3}\x{CE}\x{D0}][\x{20AC}\x{153}\x{160}\x{161}\x{A2}\x{A3}\x{178}\x{17E}\x{A0}\x{AD}\x{AE}\x{A9}\x{B0}\x{B7}\x{BB}\x{A1}\x{AB}\x{BF}\x{384}\x{385}\x{2018}\x{201A}\x{201C}\x{201E}\x{2022}\x{2039}\x{F8FF}\x{2DD}\x{201D}\x{203A}\x{2122}\x{2013}\x{2014}\x{B4}]|\x{D7}[\x{B2}\x{B3}]|[\x{D8}\x{D9}][\x{A0}\x{AD}\x{B7}\x{B4}\x{2013}\x{2014}\x{2015}\x{2026}\x{2019}\x{A2}\x{A3}\x{A5}\x{20A7}\x{20AC}\x{A6}\x{A4}\x{A8}\x{AC}\x{AF}\x{B8}\x{192}\x{2C6}\x{2C7}\x{2D8}\x{2DB}\x{2DC}\x{2020}\x{2021}\x{2030}\x{2310}\x{25CA}\x{FFFD}\x{AA}\x{BA}\x{B2}\x{B3}\x{B9}\x{B1}\x{BC}\x{BD}\x{BE}\x{D7}\x{B5}\x{F7}\x{2044}\x{2202}\x{2206}\x{220F}\x{2211}\x{221A}\x{221E}\x{2229}\x{222B}\x{2248}\x{2260}\x{2261}\x{2264}\x{2265}\x{2116}\x{A1}\x{AB}\x{BF}\x{A9}\x{384}\x{385}\x{2018}\x{201A}\x{201C}\x{201E}\x{2022}\x{2039}\x{F8FF}\x{178}\x{160}\x{AE}\x{B0}\x{BB}][\x{D8}\x{D9}][\x{A0}\x{AD}\x{B7}\x{B4}\x{2013}\x{2014}\x{2015}\x{2026}\x{2019}\x{A2}\x{A3}\x{A5}\x{20A7}\x{20AC}\x{A6}\x{A4}\x{A8}\x{AC}\x{AF}\x{B8}\x{192}\x{2C6}\x{2C7}\x{2D8}\x{2DB}\x{2DC}\x{2020}\x{2021}\x{2030}\x{2310}\x{25CA}\x{FFFD}\x{AA}\x{BA}\x{B2}\x{B3}\x{B9}\x{B1}\x{BC}\x{BD}\x{BE}\x{D7}\x{B5}\x{F7}\x{2044}\x{2202}\x{2206}\x{220F}\x{2211}\x{221A}\x{221E}\x{2229}\x{222B}\x{2248}\x{2260}\x{2261}\x{2264}\x{2265}\x{2116}\x{A1}\x{AB}\x{BF}\x{A9}\x{384}\x{385}\x{2018}\x{201A}\x{201C}\x{201E}\x{2022}\x{2039}\x{F8FF}\x{178}\x{160}\x{AE}\x{B0}\x{BB}]|\x{E0}[\x{B2}\x{B5}\x{B9}\x{BC}\x{BD}\x{BE}]|\x{221A}[\x{B1}\x{2202}\x{2020}\x{2260}\x{AE}\x{2122}\x{B4}\x{2264}\x{2265}\x{A5}\x{B5}\x{F8}]|\x{2248}[\x{B0}\x{A2}]|\x{201A}\x{C4}[\x{EC}\x{EE}\x{EF}\x{F2}\x{F4}\x{FA}\x{F9}\x{FB}\x{2020}\x{B0}\x{A2}\x{3C0}]|\x{201A}[\x{E2}\x{F3}][\x{E0}\x{E4}\x{B0}\x{EA}]|\x{432}\x{402}|[\x{412}\x{413}\x{420}\x{421}][\x{80}-\x{9F}\x{A6}\x{A4}\x{A8}\x{AC}\x{AF}\x{B8}\x{192}\x{2C6}\x{2C7}\x{2D8}\x{2DB}\x{2DC}\x{2020}\x{2021}\x{2030}\x{2310}\x{25CA}\x{FFFD}\x{AA}\x{BA}\x{A1}\x{AB}\x{BF}\x{A9}\x{384}\x{385}\x{2018}\x{201A}\x{201C}\x{201E}\x{2022}\x{2039}\x{F8FF}\x{AE}\x{BB}\x{2DD}\x{201D}\x{203A}\x{2122}\x{A2}\x{A3}\x{A5}\x{20A7}\x{20AC}\x{B0}\x{B5}][\x{412}\x{413}\x{420}\x{421}]|\x{413}\x{45E}\x{412}\x{402}\x{412}.[A-Za-z\x{20}]|\x{C3}[\x{A0}\x{A1}]|[a-z](?:[\s\x{1C}-\x{1F}]){0,1}[\x{C3}\x{C2}]\x{20}|\A[\x{C3}\x{C2}]\x{20}|[a-z\x{2E}\x{2C}\x{3F}\x{21}\x{AE}\x{BB}\x{2DD}\x{201D}\x{203A}\x{2122}]\x{C2}[\x{20}\x{A1}\x{AB}\x{BF}\x{A9}\x{384}\x{385}\x{2018}\x{201A}\x{201C}\x{201E}\x{2022}\x{2039}\x{F8FF}\x{AE}\x{BB}\x{2DD}\x{201D}\x{203A}\x{2122}]|\x{3B2}\x{20AC}[\x{2122}\x{A0}\x{386}\x{AD}\x{AE}\x{B0}]|[\x{392}\x{393}\x{39E}\x{39F}][\x{80}-\x{9F}\x{A6}\x{A4}\x{A8}\x{AC}\x{AF}\x{B8}\x{192}\x{2C6}\x{2C7}\x{2D8}\x{2DB}\x{2DC}\x{2020}\x{2021}\x{2030}\x{2310}\x{25CA}\x{FFFD}\x{AA}\x{BA}\x{A1}\x{AB}\x{BF}\x{A9}\x{384}\x{385}\x{2018}\x{201A}\x{201C}\x{201E}\x{2022}\x{2039}\x{F8FF}\x{AE}\x{BB}\x{2DD}\x{201D}\x{203A}\x{2122}\x{A2}\x{A3}\x{A5}\x{20A7}\x{20AC}\x{B0}][\x{392}\x{393}\x{39E}\x{39F}]|\x{101}\x{20AC})"#;

/// `ftfy.chardata.UTF8_DETECTOR_RE` without its leading `(?<! [utf8_continuation_strict])`.
#[rustfmt::skip]
pub(crate) const UTF8_DETECTOR_RE: &str = r#"(?:(?:(?:[\x{102}\x{C2}\x{C4}\x{100}\x{C5}\x{C3}\x{C6}\x{106}\x{10C}\x{C7}\x{10E}\x{110}\x{C9}\x{11A}\x{CA}\x{CB}\x{116}\x{C8}\x{112}\x{118}\x{D0}\x{11E}\x{122}\x{CD}\x{CE}\x{CF}\x{130}\x{CC}\x{12A}\x{136}\x{139}\x{13B}\x{141}\x{143}\x{147}\x{145}\x{D1}\x{D3}\x{D4}\x{D6}\x{150}\x{D2}\x{14C}\x{D8}\x{D5}\x{158}\x{15A}\x{160}\x{15E}\x{162}\x{DE}\x{DA}\x{DB}\x{DC}\x{170}\x{D9}\x{16A}\x{172}\x{16E}\x{DD}\x{179}\x{17D}\x{17B}\x{DF}\x{D7}\x{392}\x{393}\x{394}\x{395}\x{396}\x{397}\x{398}\x{399}\x{39A}\x{39B}\x{39C}\x{39D}\x{39E}\x{39F}\x{3A0}\x{3A1}\x{3A3}\x{3A4}\x{3A5}\x{3A6}\x{3A7}\x{3A8}\x{3A9}\x{3AA}\x{3AB}\x{3AC}\x{3AD}\x{3AE}\x{3AF}\x{412}\x{413}\x{414}\x{415}\x{416}\x{417}\x{418}\x{419}\x{41A}\x{41B}\x{41C}\x{41D}\x{41E}\x{41F}\x{420}\x{421}\x{422}\x{423}\x{424}\x{425}\x{426}\x{427}\x{428}\x{429}\x{42A}\x{42B}\x{42C}\x{42D}\x{42E}\x{42F}][\x{80}-\x{BF}\x{20}\x{104}\x{C6}\x{13D}\x{141}\x{D8}\x{156}\x{15A}\x{160}\x{15E}\x{164}\x{178}\x{179}\x{17D}\x{17B}\x{152}\x{105}\x{E6}\x{192}\x{13E}\x{142}\x{F8}\x{157}\x{15B}\x{161}\x{15F}\x{165}\x{17A}\x{17E}\x{17C}\x{153}\x{2C6}\x{2C7}\x{2D8}\x{2DB}\x{2DC}\x{2DD}\x{384}\x{385}\x{386}\x{388}\x{389}\x{38A}\x{38C}\x{38E}\x{38F}\x{401}\x{402}\x{403}\x{404}\x{405}\x{406}\x{407}\x{408}\x{409}\x{40A}\x{40B}\x{40C}\x{40E}\x{40F}\x{451}\x{452}\x{453}\x{454}\x{455}\x{456}\x{457}\x{458}\x{459}\x{45A}\x{45B}\x{45C}\x{45E}\x{45F}\x{490}\x{491}\x{2013}\x{2014}\x{2015}\x{2018}\x{2019}\x{201A}\x{201C}\x{201D}\x{201E}\x{2020}\x{2021}\x{2022}\x{2026}\x{2030}\x{2039}\x{203A}\x{20AC}\x{2116}\x{2122}]|[\x{E1}\x{103}\x{E2}\x{E4}\x{E0}\x{101}\x{105}\x{E5}\x{E3}\x{E6}\x{107}\x{10D}\x{E7}\x{10F}\x{E9}\x{11B}\x{EA}\x{EB}\x{117}\x{E8}\x{113}\x{119}\x{123}\x{ED}\x{EE}\x{EF}\x{EC}\x{12B}\x{12F}\x{137}\x{13A}\x{13C}\x{155}\x{17A}\x{3B0}\x{3B1}\x{3B2}\x{3B3}\x{3B4}\x{3B5}\x{3B6}\x{3B7}\x{3B8}\x{3B9}\x{3BA}\x{3BB}\x{3BC}\x{3BD}\x{3BE}\x{3BF}\x{430}\x{431}\x{432}\x{433}\x{434}\x{435}\x{436}\x{437}\x{438}\x{439}\x{43A}\x{43B}\x{43C}\x{43D}\x{43E}\x{43F}](?:[\x{80}-\x{BF}\x{20}\x{104}\x{C6}\x{13D}\x{141}\x{D8}\x{156}\x{15A}\x{160}\x{15E}\x{164}\x{178}\x{179}\x{17D}\x{17B}\x{152}\x{105}\x{E6}\x{192}\x{13E}\x{142}\x{F8}\x{157}\x{15B}\x{161}\x{15F}\x{165}\x{17A}\x{17E}\x{17C}\x{153}\x{2C6}\x{2C7}\x{2D8}\x{2DB}\x{2DC}\x{2DD}\x{384}\x{385}\x{386}\x{388}\x{389}\x{38A}\x{38C}\x{38E}\x{38F}\x{401}\x{402}\x{403}\x{404}\x{405}\x{406}\x{407}\x{408}\x{409}\x{40A}\x{40B}\x{40C}\x{40E}\x{40F}\x{451}\x{452}\x{453}\x{454}\x{455}\x{456}\x{457}\x{458}\x{459}\x{45A}\x{45B}\x{45C}\x{45E}\x{45F}\x{490}\x{491}\x{2013}\x{2014}\x{2015}\x{2018}\x{2019}\x{201A}\x{201C}\x{201D}\x{201E}\x{2020}\x{2021}\x{2022}\x{2026}\x{2030}\x{2039}\x{203A}\x{20AC}\x{2116}\x{2122}]){2,2}|[\x{111}\x{F0}\x{11F}\x{F3}\x{161}\x{3C0}\x{3C3}\x{440}\x{443}](?:[\x{80}-\x{BF}\x{20}\x{104}\x{C6}\x{13D}\x{141}\x{D8}\x{156}\x{15A}\x{160}\x{15E}\x{164}\x{178}\x{179}\x{17D}\x{17B}\x{152}\x{105}\x{E6}\x{192}\x{13E}\x{142}\x{F8}\x{157}\x{15B}\x{161}\x{15F}\x{165}\x{17A}\x{17E}\x{17C}\x{153}\x{2C6}\x{2C7}\x{2D8}\x{2DB}\x{2DC}\x{2DD}\x{384}\x{385}\x{386}\x{388}\x{389}\x{38A}\x{38C}\x{38E}\x{38F}\x{401}\x{402}\x{403}\x{404}\x{405}\x{406}\x{407}\x{408}\x{409}\x{40A}\x{40B}\x{40C}\x{40E}\x{40F}\x{451}\x{452}\x{453}\x{454}\x{455}\x{456}\x{457}\x{458}\x{459}\x{45A}\x{45B}\x{45C}\x{45E}\x{45F}\x{490}\x{491}\x{2013}\x{2014}\x{2015}\x{2018}\x{2019}\x{201A}\x{201C}\x{201D}\x{201E}\x{2020}\x{2021}\x{2022}\x{2026}\x{2030}\x{2039}\x{203A}\x{20AC}\x{2116}\x{2122}]){3,3}))){1,}"#;

/// The look-behind class of `UTF8_DETECTOR_RE` (`utf8_continuation_strict`), as a regex class.
#[rustfmt::skip]
pub(crate) const UTF8_CONTINUATION_STRICT: &str = r#"[\x{80}-\x{BF}\x{104}\x{C6}\x{13D}\x{141}\x{D8}\x{156}\x{15A}\x{160}\x{15E}\x{164}\x{178}\x{179}\x{17D}\x{17B}\x{152}\x{105}\x{E6}\x{192}\x{13E}\x{142}\x{F8}\x{157}\x{15B}\x{161}\x{15F}\x{165}\x{17A}\x{17E}\x{17C}\x{153}\x{2C6}\x{2C7}\x{2D8}\x{2DB}\x{2DC}\x{2DD}\x{384}\x{385}\x{386}\x{388}\x{389}\x{38A}\x{38C}\x{38E}\x{38F}\x{401}\x{402}\x{403}\x{404}\x{405}\x{406}\x{407}\x{408}\x{409}\x{40A}\x{40B}\x{40C}\x{40E}\x{40F}\x{451}\x{452}\x{453}\x{454}\x{455}\x{456}\x{457}\x{458}\x{459}\x{45A}\x{45B}\x{45C}\x{45E}\x{45F}\x{490}\x{491}\x{2020}\x{2021}\x{2030}\x{2039}\x{203A}\x{20AC}\x{2116}\x{2122}]"#;
// END GENERATED FTFY TABLES
