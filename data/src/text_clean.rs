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

mod html;
mod tables;

pub use html::html_unescape;
use tables::{BADNESS_RE, CHARMAP_ENCODINGS, UTF8_CONTINUATION_STRICT, UTF8_DETECTOR_RE};

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
        BytesRegex::new(concat!(
            r"(?-u:[\xc2\xc3\xc5\xce\xd0\xd9][ ]|[\xe2\xe3][ ][\x80-\x84\x86-\x9f\xa1-\xbf]|",
            r"[\xe0-\xe3][\x80-\x84\x86-\x9f\xa1-\xbf][ ]|[\xf0][ ][\x80-\xbf][\x80-\xbf]|",
            r"[\xf0][\x80-\xbf][ ][\x80-\xbf]|[\xf0][\x80-\xbf][\x80-\xbf][ ])",
        ))
        .expect("valid regex")
    })
}

fn lossy_utf8_re() -> &'static BytesRegex {
    static RE: OnceLock<BytesRegex> = OnceLock::new();
    RE.get_or_init(|| {
        BytesRegex::new(concat!(
            r"(?-u:[\xc2-\xdf][\x1a]|[\xc2-\xc3][?]|",
            r"\xed[\xa0-\xaf][\x1a?]\xed[\xb0-\xbf][\x1a?\x80-\xbf]|",
            r"\xed[\xa0-\xaf][\x1a?\x80-\xbf]\xed[\xb0-\xbf][\x1a?]|",
            r"[\xe0-\xef][\x1a?][\x1a\x80-\xbf]|[\xe0-\xef][\x1a\x80-\xbf][\x1a?]|",
            r"[\xf0-\xf4][\x1a?][\x1a\x80-\xbf][\x1a\x80-\xbf]|",
            r"[\xf0-\xf4][\x1a\x80-\xbf][\x1a?][\x1a\x80-\xbf]|",
            r"[\xf0-\xf4][\x1a\x80-\xbf][\x1a\x80-\xbf][\x1a?]|\x1a)",
        ))
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
