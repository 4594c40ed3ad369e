//! The synthetic person dataset behind `fixtures/synth-pedes` (`gadms pretrain`'s default
//! data): procedurally drawn 64×32 (H×W) pedestrians with template captions, written in
//! CUHK-PEDES form (`reid_raw.json` + `imgs/`) by [`write_cuhk_pedes`]
//! (`cargo run --release --example make_synth_pedes -- fixtures/synth-pedes`).
//!
//! An **identity** is a combination of attributes ([`Person`]): gender (hair length and
//! skirt), hair colour, upper garment colour and type (t-shirt / jacket / long coat), lower
//! garment colour and type (trousers / shorts / skirt), shoe colour and an optional bag
//! (backpack or handbag, with a colour). Every image of an identity shares its attributes and
//! differs in background colour and gradient, position and scale jitter, lighting, skin-tone
//! jitter and mirroring. Each image gets captions from different templates with synonyms
//! ("a woman in a red coat and black trousers carrying a backpack", "the person wears ...");
//! hair and shoes are mentioned only sometimes, as in real captions.
//!
//! The train and test splits hold disjoint identities (distinct attribute combinations), so
//! the test measures whether the towers learned the attribute words and their appearance, not
//! memorised identities.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::path::Path;

/// Height in pixels of the synthetic images (the Tiny preset's input; the training loops take
/// the image size from the preset, and this set serves as default data for `tiny` only).
pub const IMG_H: usize = 64;
/// Image width in pixels.
pub const IMG_W: usize = 32;
/// Floats per CLIP-normalised image, [3, IMG_H, IMG_W].
pub const IMG_LEN: usize = 3 * IMG_H * IMG_W;

/// A named colour: caption words (first is canonical, the others synonyms) and its RGB.
#[derive(Clone, Copy, Debug)]
pub struct Colour {
    /// Words used in captions.
    pub words: &'static [&'static str],
    /// sRGB in [0, 1].
    pub rgb: [f32; 3],
}

const fn c(words: &'static [&'static str], r: u8, g: u8, b: u8) -> Colour {
    Colour {
        words,
        rgb: [r as f32 / 255.0, g as f32 / 255.0, b as f32 / 255.0],
    }
}

/// Garment colours (upper garments use all of them).
pub const GARMENT_COLOURS: [Colour; 11] = [
    c(&["red"], 205, 35, 35),
    c(&["blue"], 35, 70, 205),
    c(&["green"], 35, 150, 55),
    c(&["yellow"], 235, 215, 45),
    c(&["black", "dark"], 22, 22, 24),
    c(&["white"], 238, 238, 235),
    c(&["gray", "grey"], 128, 128, 128),
    c(&["pink"], 245, 140, 185),
    c(&["purple"], 120, 50, 165),
    c(&["orange"], 245, 135, 25),
    c(&["brown"], 120, 72, 32),
];
/// Indices into [`GARMENT_COLOURS`] used for lower garments.
pub const LOWER_COLOURS: [usize; 8] = [4, 1, 6, 5, 10, 0, 2, 7];
/// Shoe colours.
pub const SHOE_COLOURS: [Colour; 4] = [
    c(&["black"], 18, 18, 18),
    c(&["white"], 240, 240, 240),
    c(&["brown"], 110, 65, 30),
    c(&["red"], 200, 30, 30),
];
/// Hair colours.
pub const HAIR_COLOURS: [Colour; 3] = [
    c(&["black", "dark"], 20, 16, 14),
    c(&["brown"], 105, 62, 30),
    c(&["blonde", "blond", "fair"], 225, 195, 110),
];
/// Bag colours.
pub const BAG_COLOURS: [Colour; 4] = [
    c(&["black"], 25, 25, 25),
    c(&["brown"], 115, 70, 35),
    c(&["red"], 190, 30, 40),
    c(&["blue"], 40, 70, 190),
];

/// Upper-garment types: caption words (synonyms).
pub const UPPER_TYPES: [&[&str]; 3] = [
    &["t-shirt", "short-sleeved shirt", "tee"],
    &["jacket", "long-sleeved jacket", "sweater"],
    &["long coat", "coat", "overcoat"],
];
/// Lower-garment types: caption words (synonyms).
pub const LOWER_TYPES: [&[&str]; 3] = [&["trousers", "pants"], &["shorts"], &["skirt"]];

/// Gender and its words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Gender {
    /// Short hair, never a skirt.
    Man,
    /// Long hair.
    Woman,
}

impl Gender {
    fn nouns(self) -> &'static [&'static str] {
        match self {
            Gender::Man => &["man", "guy", "male", "gentleman"],
            Gender::Woman => &["woman", "lady", "female", "girl"],
        }
    }
    fn pronoun(self) -> &'static str {
        match self {
            Gender::Man => "he",
            Gender::Woman => "she",
        }
    }
}

/// A bag carried by the person.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bag {
    /// No bag.
    None,
    /// Backpack (colour index into [`BAG_COLOURS`]).
    Backpack(usize),
    /// Handbag (colour index into [`BAG_COLOURS`]).
    Handbag(usize),
}

/// The attributes that define an identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Person {
    /// Gender.
    pub gender: Gender,
    /// Index into [`HAIR_COLOURS`].
    pub hair: usize,
    /// Index into [`GARMENT_COLOURS`].
    pub upper_colour: usize,
    /// Index into [`UPPER_TYPES`].
    pub upper: usize,
    /// Index into [`GARMENT_COLOURS`] (one of [`LOWER_COLOURS`]).
    pub lower_colour: usize,
    /// Index into [`LOWER_TYPES`] (never 2 = skirt for a man).
    pub lower: usize,
    /// Index into [`SHOE_COLOURS`].
    pub shoes: usize,
    /// Bag.
    pub bag: Bag,
}

/// Number of distinct identities the generator can draw.
pub fn identity_count() -> usize {
    let bags = 1 + 2 * BAG_COLOURS.len();
    let common = HAIR_COLOURS.len()
        * GARMENT_COLOURS.len()
        * UPPER_TYPES.len()
        * LOWER_COLOURS.len()
        * SHOE_COLOURS.len()
        * bags;
    common * 2 + common * 3 // man: trousers/shorts, woman: all three
}

impl Person {
    /// Draws a random identity.
    pub fn random(rng: &mut impl Rng) -> Person {
        let gender = if rng.gen_bool(0.5) {
            Gender::Man
        } else {
            Gender::Woman
        };
        let lower = match gender {
            Gender::Man => rng.gen_range(0..2),
            Gender::Woman => rng.gen_range(0..3),
        };
        let bag = match rng.gen_range(0..3) {
            0 => Bag::None,
            1 => Bag::Backpack(rng.gen_range(0..BAG_COLOURS.len())),
            _ => Bag::Handbag(rng.gen_range(0..BAG_COLOURS.len())),
        };
        Person {
            gender,
            hair: rng.gen_range(0..HAIR_COLOURS.len()),
            upper_colour: rng.gen_range(0..GARMENT_COLOURS.len()),
            upper: rng.gen_range(0..UPPER_TYPES.len()),
            lower_colour: LOWER_COLOURS[rng.gen_range(0..LOWER_COLOURS.len())],
            lower,
            shoes: rng.gen_range(0..SHOE_COLOURS.len()),
            bag,
        }
    }

    /// A caption from one of the templates (`template` is taken modulo the template count).
    pub fn caption(&self, template: usize, rng: &mut impl Rng) -> String {
        let pick = |rng: &mut dyn rand::RngCore, w: &[&'static str]| -> &'static str {
            w[rng.gen_range(0..w.len())]
        };
        let noun = pick(rng, self.gender.nouns());
        let pron = self.gender.pronoun();
        let uc = pick(rng, GARMENT_COLOURS[self.upper_colour].words);
        let ut = pick(rng, UPPER_TYPES[self.upper]);
        let lc = pick(rng, GARMENT_COLOURS[self.lower_colour].words);
        let lt = pick(rng, LOWER_TYPES[self.lower]);
        let hair = format!("{} hair", pick(rng, HAIR_COLOURS[self.hair].words));
        let hair = match self.gender {
            Gender::Woman => format!("long {hair}"),
            Gender::Man => format!("short {hair}"),
        };
        let shoes = format!("{} shoes", pick(rng, SHOE_COLOURS[self.shoes].words));
        let bag = match self.bag {
            Bag::None => None,
            Bag::Backpack(c) => Some(format!(
                "{} {}",
                pick(rng, BAG_COLOURS[c].words),
                pick(rng, &["backpack", "rucksack"])
            )),
            Bag::Handbag(c) => Some(format!(
                "{} {}",
                pick(rng, BAG_COLOURS[c].words),
                pick(rng, &["handbag", "purse", "hand bag"])
            )),
        };
        let a = |w: &str| {
            if w.starts_with(['a', 'e', 'i', 'o', 'u']) {
                "an"
            } else {
                "a"
            }
        };
        // "a red t-shirt" but "red shorts" / "black trousers" (plural garments take no article).
        let lower_np = if self.lower == 2 {
            format!("{} {lc} {lt}", a(lc))
        } else {
            format!("{lc} {lt}")
        };
        let upper_np = format!("{} {uc} {ut}", a(uc));
        let with_hair = rng.gen_bool(0.6);
        let with_shoes = rng.gen_bool(0.5);
        let verb = pick(rng, &["wearing", "in", "dressed in"]);
        let carry = pick(rng, &["carrying", "with", "holding"]);
        match template % 4 {
            0 => {
                let mut s = format!("a {noun} {verb} {upper_np} and {lower_np}");
                if with_shoes {
                    s += &format!(" with {shoes}");
                }
                if let Some(b) = &bag {
                    s += &format!(", {carry} {} {b}", a(b));
                }
                if with_hair {
                    s += &format!(". {pron} has {hair}");
                }
                s + "."
            }
            1 => {
                let mut s = if with_shoes {
                    format!("the person wears {upper_np}, {lower_np} and {shoes}")
                } else {
                    format!("the person wears {upper_np} and {lower_np}")
                };
                s += &format!(". the {noun}");
                if with_hair {
                    s += &format!(" has {hair} and");
                }
                match &bag {
                    Some(b) => s += &format!(" is carrying {} {b}.", a(b)),
                    None => s += " carries no bag.",
                }
                s
            }
            2 => {
                let mut s = format!("this {noun}");
                if with_hair {
                    s += &format!(" with {hair}");
                }
                s += &format!(" is wearing {lower_np} and {upper_np}");
                if let Some(b) = &bag {
                    s += &format!(" and has {} {b}", a(b));
                }
                if with_shoes {
                    s += &format!(". {pron} wears {shoes}");
                }
                s + "."
            }
            _ => {
                let mut s = format!("{} {ut} in {uc} and {lc} {lt} on a {noun}", a(ut));
                if let Some(b) = &bag {
                    s += &format!(" who carries {} {b}", a(b));
                }
                if with_hair {
                    s += &format!(", {hair}");
                }
                if with_shoes {
                    s += &format!(", {shoes}");
                }
                s + "."
            }
        }
    }
}

/// Sizes and seed of the generated dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynthConfig {
    /// Seed of everything (identities, drawings, captions).
    pub seed: u64,
    /// Training identities (ids `1..=train_ids`).
    pub train_ids: usize,
    /// Test identities (disjoint attribute combinations; ids `train_ids + 1 ..`).
    pub test_ids: usize,
    /// Images per identity.
    pub images_per_id: usize,
    /// Captions per image (each from a different template).
    pub captions_per_image: usize,
}

/// The committed fixture `fixtures/synth-pedes` (`gadms pretrain`'s default data).
pub const FIXTURE: SynthConfig = SynthConfig {
    seed: 0,
    train_ids: 350,
    test_ids: 100,
    images_per_id: 2,
    captions_per_image: 2,
};

impl Default for SynthConfig {
    /// [`FIXTURE`].
    fn default() -> Self {
        FIXTURE
    }
}

/// One image with its captions: a row of `reid_raw.json` plus the pixels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// `train` or `test`.
    pub split: &'static str,
    /// CUHK-PEDES `id` (1-based; train pid = id − 1, test pid = id).
    pub id: u64,
    /// Path below `imgs/`, e.g. `train/0001_0.png`.
    pub file_path: String,
    /// The captions.
    pub captions: Vec<String>,
    /// The identity drawn.
    pub person: Person,
    /// Interleaved RGB8 pixels, `IMG_H × IMG_W × 3`.
    pub rgb: Vec<u8>,
}

/// Generates the dataset: the training images (ids `1..=train_ids`, in id order) then the test
/// images. Deterministic in `cfg`. The test identities are drawn first, from their own streams,
/// so the test split does not depend on `train_ids`; the first `n` training identities do not
/// depend on it either. Errors if more identities are asked for than the generator allows.
pub fn generate(cfg: &SynthConfig) -> anyhow::Result<Vec<Record>> {
    let total = cfg.train_ids + cfg.test_ids;
    if total > identity_count() / 4 {
        anyhow::bail!(
            "asked for {total} identities; the synthetic generator supports at most {}",
            identity_count() / 4
        );
    }
    if cfg.images_per_id == 0 || cfg.captions_per_image == 0 {
        anyhow::bail!("images_per_id and captions_per_image must be at least 1");
    }
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut seen = HashSet::new();
    let mut draw_persons = |n: usize| {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let p = Person::random(&mut rng);
            if seen.insert(p) {
                out.push(p);
            }
        }
        out
    };
    let test = draw_persons(cfg.test_ids);
    let train = draw_persons(cfg.train_ids);
    let mut out = Vec::with_capacity(total * cfg.images_per_id);
    let stream = |k: u64| StdRng::seed_from_u64(cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ k);
    for (split, persons, first_id, mut rng) in [
        ("train", train, 1u64, stream(1)),
        ("test", test, cfg.train_ids as u64 + 1, stream(2)),
    ] {
        for (k, p) in persons.into_iter().enumerate() {
            let id = first_id + k as u64;
            for i in 0..cfg.images_per_id {
                let rgb = draw(&p, &mut rng);
                let mut templates: Vec<usize> = (0..4).collect();
                templates.shuffle(&mut rng);
                let captions = (0..cfg.captions_per_image)
                    .map(|c| p.caption(templates[c % 4], &mut rng))
                    .collect();
                out.push(Record {
                    split,
                    id,
                    file_path: format!("{split}/{id:04}_{i}.png"),
                    captions,
                    person: p,
                    rgb,
                });
            }
        }
    }
    Ok(out)
}

/// One row of `reid_raw.json`, in the CUHK-PEDES key order.
#[derive(serde::Serialize)]
struct JsonRow<'a> {
    split: &'a str,
    captions: &'a [String],
    file_path: &'a str,
    processed_tokens: Vec<[u8; 0]>,
    id: u64,
}

/// `reid_raw.json` of `records`: a JSON list, one row per line, in CUHK-PEDES form
/// (`processed_tokens` holds one empty list per caption; IRRA and `gadms pack` ignore it).
pub fn reid_raw_json(records: &[Record]) -> String {
    let rows: Vec<String> = records
        .iter()
        .map(|r| {
            serde_json::to_string(&JsonRow {
                split: r.split,
                captions: &r.captions,
                file_path: &r.file_path,
                processed_tokens: vec![[]; r.captions.len()],
                id: r.id,
            })
            .expect("a row serialises")
        })
        .collect();
    format!("[\n{}\n]\n", rows.join(",\n"))
}

/// Encodes interleaved RGB8 `IMG_H × IMG_W` pixels as PNG (best compression, adaptive filter).
pub fn encode_png(rgb: &[u8]) -> Vec<u8> {
    use image::ImageEncoder;
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    let mut out = Vec::new();
    PngEncoder::new_with_quality(&mut out, CompressionType::Best, FilterType::Adaptive)
        .write_image(
            rgb,
            IMG_W as u32,
            IMG_H as u32,
            image::ExtendedColorType::Rgb8,
        )
        .expect("encoding a PNG into memory cannot fail");
    out
}

/// What [`write_cuhk_pedes`] wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteSummary {
    /// Images per split, `(train, test)`.
    pub images: (usize, usize),
    /// Identities per split, `(train, test)`.
    pub ids: (usize, usize),
    /// Bytes written (JSON + PNGs).
    pub bytes: u64,
    /// Stale PNGs of an earlier, larger run that were removed.
    pub removed: usize,
}

/// Writes the dataset in CUHK-PEDES form: `dir/reid_raw.json` and `dir/imgs/<file_path>`
/// (`imgs/train/0001_0.png`, …, `imgs/test/…`). Deterministic: a rerun writes the same bytes.
/// PNGs in `dir/imgs/{train,test}` that the run did not write (left by a run with more
/// identities) are removed; nothing else in `dir` is touched.
pub fn write_cuhk_pedes(dir: &Path, cfg: &SynthConfig) -> anyhow::Result<WriteSummary> {
    use anyhow::Context;
    let records = generate(cfg)?;
    let mut sum = WriteSummary::default();
    let mut written = HashSet::new();
    for split in ["train", "test"] {
        let d = dir.join("imgs").join(split);
        std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    for r in &records {
        let png = encode_png(&r.rgb);
        let path = dir.join("imgs").join(&r.file_path);
        std::fs::write(&path, &png).with_context(|| format!("cannot write {}", path.display()))?;
        sum.bytes += png.len() as u64;
        written.insert(path);
        match r.split {
            "train" => sum.images.0 += 1,
            _ => sum.images.1 += 1,
        }
    }
    sum.ids = (cfg.train_ids, cfg.test_ids);
    let json = reid_raw_json(&records);
    let path = dir.join("reid_raw.json");
    std::fs::write(&path, &json).with_context(|| format!("cannot write {}", path.display()))?;
    sum.bytes += json.len() as u64;
    for split in ["train", "test"] {
        let d = dir.join("imgs").join(split);
        let mut stale: Vec<_> = std::fs::read_dir(&d)
            .with_context(|| format!("cannot list {}", d.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "png") && !written.contains(p))
            .collect();
        stale.sort();
        for p in stale {
            std::fs::remove_file(&p).with_context(|| format!("cannot remove {}", p.display()))?;
            sum.removed += 1;
        }
    }
    Ok(sum)
}

/// A simple RGB canvas in [0, 1], row-major [IMG_H, IMG_W, 3].
struct Canvas {
    px: Vec<[f32; 3]>,
}

impl Canvas {
    fn fill(&mut self, rgb: [f32; 3], inside: impl Fn(f32, f32) -> bool) {
        for y in 0..IMG_H {
            for x in 0..IMG_W {
                if inside(x as f32 + 0.5, y as f32 + 0.5) {
                    self.px[y * IMG_W + x] = rgb;
                }
            }
        }
    }
    fn rect(&mut self, rgb: [f32; 3], x0: f32, x1: f32, y0: f32, y1: f32) {
        self.fill(rgb, |x, y| x >= x0 && x < x1 && y >= y0 && y < y1);
    }
}

fn shade(rgb: [f32; 3], k: f32) -> [f32; 3] {
    rgb.map(|v| (v * k).clamp(0.0, 1.0))
}

/// Draws one image of `p` with fresh jitter; returns interleaved RGB8, `IMG_H × IMG_W × 3`.
///
/// No pixel noise: flat colours keep the PNGs small (about 0.5 KB), and the loader's
/// augmentation varies the images during training.
pub fn draw(p: &Person, rng: &mut impl Rng) -> Vec<u8> {
    // Background: a random dull colour with a vertical gradient (floor darker).
    let bg: [f32; 3] = [
        rng.gen_range(0.2..0.8),
        rng.gen_range(0.2..0.8),
        rng.gen_range(0.2..0.8),
    ];
    let grad = rng.gen_range(-0.25f32..0.25);
    let mut cv = Canvas {
        px: (0..IMG_H * IMG_W)
            .map(|i| {
                let t = (i / IMG_W) as f32 / IMG_H as f32;
                shade(bg, 1.0 + grad * (t - 0.5))
            })
            .collect(),
    };
    // Geometry jitter: scale, centre, top.
    let s: f32 = rng.gen_range(0.88..1.04);
    let cx: f32 = 16.0 + rng.gen_range(-2.0..2.0);
    let top: f32 = 1.0 + rng.gen_range(0.0..3.0);
    let light: f32 = rng.gen_range(0.85..1.15);
    let skin = shade([0.87, 0.68, 0.55], rng.gen_range(0.75..1.1));
    let l = |c: [f32; 3]| shade(c, light);
    let y = |u: f32| top + u * s; // body units (0..58) → pixels
    let w = |u: f32| u * s;
    let upper = l(GARMENT_COLOURS[p.upper_colour].rgb);
    let lower = l(GARMENT_COLOURS[p.lower_colour].rgb);
    let shoes = l(SHOE_COLOURS[p.shoes].rgb);
    let hair = l(HAIR_COLOURS[p.hair].rgb);
    let skin = l(skin);

    // Long hair behind the head and shoulders (women).
    if p.gender == Gender::Woman {
        cv.rect(hair, cx - w(4.5), cx + w(4.5), y(2.0), y(15.0));
    }
    // Legs (skin), then lower garment on top.
    cv.rect(skin, cx - w(4.5), cx - w(0.7), y(30.0), y(55.0));
    cv.rect(skin, cx + w(0.7), cx + w(4.5), y(30.0), y(55.0));
    match p.lower {
        0 => {
            cv.rect(lower, cx - w(5.0), cx + w(5.0), y(30.0), y(34.0));
            cv.rect(lower, cx - w(5.0), cx - w(0.5), y(30.0), y(55.0));
            cv.rect(lower, cx + w(0.5), cx + w(5.0), y(30.0), y(55.0));
        }
        1 => {
            cv.rect(lower, cx - w(5.2), cx + w(5.2), y(30.0), y(34.0));
            cv.rect(lower, cx - w(5.2), cx - w(0.4), y(30.0), y(42.0));
            cv.rect(lower, cx + w(0.4), cx + w(5.2), y(30.0), y(42.0));
        }
        _ => {
            // Skirt: trapezoid widening downwards.
            let (y0, y1) = (y(30.0), y(44.0));
            cv.fill(lower, |x, yy| {
                if yy < y0 || yy >= y1 {
                    return false;
                }
                let t = (yy - y0) / (y1 - y0);
                (x - cx).abs() < w(5.0 + 3.0 * t)
            });
        }
    }
    // Shoes.
    cv.rect(shoes, cx - w(5.2), cx - w(0.5), y(55.0), y(58.5));
    cv.rect(shoes, cx + w(0.5), cx + w(5.2), y(55.0), y(58.5));
    // Arms: skin, then sleeves; hands stay skin.
    let sleeve_end = if p.upper == 0 { 16.0 } else { 30.0 };
    for side in [-1.0f32, 1.0] {
        let (a0, a1) = if side < 0.0 {
            (cx - w(9.0), cx - w(6.2))
        } else {
            (cx + w(6.2), cx + w(9.0))
        };
        cv.rect(skin, a0, a1, y(11.0), y(33.0));
        cv.rect(upper, a0, a1, y(11.0), y(sleeve_end));
    }
    // Torso (a coat reaches below the hips but leaves shorts and skirts visible).
    let torso_end = if p.upper == 2 { 37.0 } else { 31.0 };
    cv.rect(upper, cx - w(6.2), cx + w(6.2), y(10.5), y(torso_end));
    // Neck and head.
    cv.rect(skin, cx - w(1.5), cx + w(1.5), y(8.0), y(11.0));
    let (hx, hy, rx, ry) = (cx, y(5.0), w(3.6), w(4.6));
    cv.fill(skin, |x, yy| {
        ((x - hx) / rx).powi(2) + ((yy - hy) / ry).powi(2) <= 1.0
    });
    // Hair cap on top of the head.
    cv.fill(hair, |x, yy| {
        ((x - hx) / (rx + 0.4)).powi(2) + ((yy - hy) / (ry + 0.4)).powi(2) <= 1.0
            && yy < hy - w(1.2)
    });
    // Bag.
    match p.bag {
        Bag::None => {}
        Bag::Backpack(c) => {
            let col = l(BAG_COLOURS[c].rgb);
            // Body of the pack sticking out on one side, and two straps over the chest.
            cv.rect(col, cx + w(6.2), cx + w(10.5), y(12.0), y(28.0));
            cv.rect(col, cx - w(4.0), cx - w(2.8), y(10.5), y(24.0));
            cv.rect(col, cx + w(2.8), cx + w(4.0), y(10.5), y(24.0));
        }
        Bag::Handbag(c) => {
            let col = l(BAG_COLOURS[c].rgb);
            cv.rect(col, cx - w(12.0), cx - w(7.0), y(28.0), y(36.0));
            cv.rect(col, cx - w(9.8), cx - w(9.0), y(24.0), y(28.0));
        }
    }
    // Mirror half of the images (bags swap sides).
    let flip = rng.gen_bool(0.5);
    let mut out = vec![0u8; IMG_H * IMG_W * 3];
    for yy in 0..IMG_H {
        for xx in 0..IMG_W {
            let sx = if flip { IMG_W - 1 - xx } else { xx };
            let px = cv.px[yy * IMG_W + sx];
            for ch in 0..3 {
                out[(yy * IMG_W + xx) * 3 + ch] = (px[ch].clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
    }
    out
}
