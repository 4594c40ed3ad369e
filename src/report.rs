//! Helpers for the self-contained HTML reports of `search` and `explain`: escaping, base64
//! data URIs, score colours, stopwords.

/// Escapes `&`, `<`, `>`, `"` and `'` for HTML text and attribute values.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

/// Standard base64 (RFC 4648, with padding).
pub fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut o = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        o.push(T[(n >> 18) as usize & 63] as char);
        o.push(T[(n >> 12) as usize & 63] as char);
        o.push(if c.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        o.push(if c.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    o
}

/// MIME type of encoded image bytes from their magic number (PNG, JPEG, GIF, WebP, BMP);
/// `application/octet-stream` otherwise.
pub fn image_mime(bytes: &[u8]) -> &'static str {
    if bytes.starts_with(b"\x89PNG") {
        "image/png"
    } else if bytes.starts_with(&[0xFF, 0xD8]) {
        "image/jpeg"
    } else if bytes.starts_with(b"GIF8") {
        "image/gif"
    } else if bytes.len() > 12 && &bytes[8..12] == b"WEBP" {
        "image/webp"
    } else if bytes.starts_with(b"BM") {
        "image/bmp"
    } else {
        "application/octet-stream"
    }
}

/// `data:` URI of encoded image bytes, for an `<img src>` that needs no other file.
pub fn data_uri(bytes: &[u8]) -> String {
    format!("data:{};base64,{}", image_mime(bytes), base64(bytes))
}

/// Background colour of a score in [0, 1]: red (0, noise) through yellow to green (1,
/// informative), as `hsl(…)`.
pub fn score_colour(s: f32) -> String {
    let s = if s.is_finite() {
        s.clamp(0.0, 1.0)
    } else {
        0.0
    };
    format!("hsl({:.0}, 75%, {:.0}%)", 120.0 * s, 88.0 - 18.0 * s)
}

/// Common English function words (articles, prepositions, pronouns, auxiliaries, conjunctions)
/// that carry no appearance information in a person description.
pub const STOPWORDS: &[&str] = &[
    "a", "an", "the", "and", "or", "but", "of", "in", "on", "at", "to", "for", "with", "by",
    "from", "is", "are", "was", "were", "be", "been", "being", "has", "have", "had", "he", "she",
    "it", "they", "them", "his", "her", "its", "their", "this", "that", "these", "those", "who",
    "which", "as", "also", "there", "here", "some", "into", "onto", "over", "under", "while",
    "very", "so", "too", "then", "than", "i", "you", "we", "me", "my", "your", "our", "not", "no",
    "do", "does", "did", "can", "will", "would", "could", "should", "wearing", "wears", "person",
];

/// The words of `text` (lower-cased runs of letters and digits) that are not stopwords.
pub fn content_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .collect()
}

/// Checks a query sentence: an error when it has no word at all, a warning text when every
/// word is a stopword (the ranking then carries little information), `Ok(None)` otherwise.
pub fn check_query(text: &str) -> Result<Option<String>, String> {
    if !text.chars().any(char::is_alphanumeric) {
        return Err(format!(
            "the query {text:?} has no words; describe the person (e.g. \"a woman in a red coat\")"
        ));
    }
    if content_words(text).is_empty() {
        return Ok(Some(format!(
            "the query {text:?} holds only stopwords (no appearance words such as colours or \
             garments); its ranking carries little information"
        )));
    }
    Ok(None)
}

/// The page shell shared by the reports: a title, inline CSS, the body.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n\
<style>\nbody{{font-family:system-ui,sans-serif;margin:24px;background:#fafafa;color:#222}}\n\
h1{{font-size:20px}} .q{{font-size:18px;margin:8px 0 16px}}\n\
.grid{{display:flex;flex-wrap:wrap;gap:12px}}\n\
.card{{background:#fff;border:4px solid #ccc;border-radius:6px;padding:6px;text-align:center;font-size:12px;width:140px}}\n\
.card img{{height:192px;width:auto;max-width:128px;image-rendering:auto}}\n\
.hit{{border-color:#2a2}} .miss{{border-color:#d22}}\n\
.tok{{padding:2px 3px;margin:0;border-radius:3px;font-size:20px;line-height:2}}\n\
table{{border-collapse:collapse;font-size:13px}} td,th{{border:1px solid #ddd;padding:2px 8px;text-align:right}}\n\
.legend span{{display:inline-block;width:28px;height:14px}}\n\
</style>\n</head>\n<body>\n{}\n</body>\n</html>\n",
        escape(title),
        body
    )
}
