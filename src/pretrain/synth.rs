//! An embedded synthetic person dataset: procedurally drawn 64×32 (H×W) pedestrians with
//! template captions, generated in memory from a seed (no files, no downloads).
//!
//! An **identity** is a combination of attributes ([`Person`]): gender (hair length and
//! skirt), hair colour, upper garment colour and type (t-shirt / jacket / long coat), lower
//! garment colour and type (trousers / shorts / skirt), shoe colour and an optional bag
//! (backpack or handbag, with a colour). Every image of an identity shares its attributes and
//! differs in background colour and gradient, position and scale jitter, lighting, skin-tone
//! jitter, mirroring and pixel noise. Each image gets captions from different templates with
//! synonyms ("a woman in a red coat and black trousers carrying a backpack", "the person wears
//! ..."); hair and shoes are mentioned only sometimes, as in real captions.
//!
//! The train and test splits hold disjoint identities (distinct attribute combinations), so
//! the test measures whether the towers learned the attribute words and their appearance, not
//! memorised identities.

use gadms_data::{ClipTokenizer, TokenIds};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;

/// Image height in pixels (the Tiny preset's input).
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

/// One split: images, captions and their identities.
#[derive(Clone, Debug, Default)]
pub struct Split {
    /// Identities of this split (index = split-local pid).
    pub persons: Vec<Person>,
    /// CLIP-normalised images, `n_images × [3, IMG_H, IMG_W]` flattened.
    pub pixels: Vec<f32>,
    /// Pid of every image.
    pub image_pid: Vec<usize>,
    /// Caption text.
    pub captions: Vec<String>,
    /// Caption token ids.
    pub tokens: Vec<TokenIds>,
    /// Image index of every caption.
    pub caption_image: Vec<usize>,
    /// Pid of every caption.
    pub caption_pid: Vec<usize>,
}

impl Split {
    /// Number of images.
    pub fn n_images(&self) -> usize {
        self.image_pid.len()
    }
    /// Number of captions (= image–caption pairs).
    pub fn n_captions(&self) -> usize {
        self.caption_pid.len()
    }
    /// The pixels of image `i`.
    pub fn image(&self, i: usize) -> &[f32] {
        &self.pixels[i * IMG_LEN..(i + 1) * IMG_LEN]
    }
    /// The first `n_ids` identities of this split (images and captions whose pid < n_ids).
    pub fn head(&self, n_ids: usize) -> Split {
        let mut out = Split {
            persons: self.persons[..n_ids.min(self.persons.len())].to_vec(),
            ..Split::default()
        };
        let mut new_index = vec![usize::MAX; self.n_images()];
        for (i, slot) in new_index.iter_mut().enumerate() {
            if self.image_pid[i] < n_ids {
                *slot = out.image_pid.len();
                out.image_pid.push(self.image_pid[i]);
                out.pixels.extend_from_slice(self.image(i));
            }
        }
        for k in 0..self.n_captions() {
            if self.caption_pid[k] < n_ids {
                out.captions.push(self.captions[k].clone());
                out.tokens.push(self.tokens[k]);
                out.caption_image.push(new_index[self.caption_image[k]]);
                out.caption_pid.push(self.caption_pid[k]);
            }
        }
        out
    }
}

/// Sizes and seed of a generated dataset.
#[derive(Clone, Copy, Debug)]
pub struct SynthConfig {
    /// Seed of everything (identities, drawings, captions).
    pub seed: u64,
    /// Training identities.
    pub train_ids: usize,
    /// Test identities (disjoint from the training ones).
    pub test_ids: usize,
    /// Images per identity.
    pub images_per_id: usize,
    /// Captions per image (each from a different template).
    pub captions_per_image: usize,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            seed: 0,
            train_ids: 300,
            test_ids: 100,
            images_per_id: 2,
            captions_per_image: 2,
        }
    }
}

/// The generated dataset.
#[derive(Clone, Debug)]
pub struct SynthData {
    /// Training split.
    pub train: Split,
    /// Test split (identities disjoint from `train`).
    pub test: Split,
}

impl SynthData {
    /// Generates the dataset. Errors only if more identities are asked for than exist or a
    /// caption fails to tokenize (it cannot with the built-in templates).
    pub fn generate(cfg: &SynthConfig, tok: &ClipTokenizer) -> anyhow::Result<SynthData> {
        let total = cfg.train_ids + cfg.test_ids;
        if total > identity_count() / 4 {
            anyhow::bail!(
                "asked for {total} identities; the synthetic generator supports at most {}",
                identity_count() / 4
            );
        }
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let mut seen = HashSet::new();
        let mut persons = Vec::with_capacity(total);
        while persons.len() < total {
            let p = Person::random(&mut rng);
            if seen.insert(p) {
                persons.push(p);
            }
        }
        let test_persons = persons.split_off(cfg.train_ids);
        let train = make_split(persons, cfg, &mut rng, tok)?;
        let test = make_split(test_persons, cfg, &mut rng, tok)?;
        Ok(SynthData { train, test })
    }
}

fn make_split(
    persons: Vec<Person>,
    cfg: &SynthConfig,
    rng: &mut StdRng,
    tok: &ClipTokenizer,
) -> anyhow::Result<Split> {
    let mut s = Split {
        persons,
        ..Split::default()
    };
    for pid in 0..s.persons.len() {
        let p = s.persons[pid];
        for _ in 0..cfg.images_per_id {
            let img = s.image_pid.len();
            s.pixels.extend(draw(&p, rng));
            s.image_pid.push(pid);
            let mut templates: Vec<usize> = (0..4).collect();
            templates.shuffle(rng);
            for k in 0..cfg.captions_per_image {
                let text = p.caption(templates[k % 4], rng);
                let ids = tok
                    .encode(&text)
                    .map_err(|e| anyhow::anyhow!("tokenizing {text:?}: {e}"))?;
                s.captions.push(text);
                s.tokens.push(ids);
                s.caption_image.push(img);
                s.caption_pid.push(pid);
            }
        }
    }
    Ok(s)
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

/// Draws one image of `p` with fresh jitter; returns it CLIP-normalised as [3, IMG_H, IMG_W].
pub fn draw(p: &Person, rng: &mut impl Rng) -> Vec<f32> {
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
    // Mirror half of the images (bags swap sides), then noise and CLIP normalisation.
    let flip = rng.gen_bool(0.5);
    let noise = 0.04f32;
    let mut out = vec![0.0f32; IMG_LEN];
    for yy in 0..IMG_H {
        for xx in 0..IMG_W {
            let sx = if flip { IMG_W - 1 - xx } else { xx };
            let px = cv.px[yy * IMG_W + sx];
            for ch in 0..3 {
                let v = (px[ch] + rng.gen_range(-noise..noise)).clamp(0.0, 1.0);
                out[ch * IMG_H * IMG_W + yy * IMG_W + xx] =
                    (v - gadms_ckpt::clip_io::CLIP_MEAN[ch]) / gadms_ckpt::clip_io::CLIP_STD[ch];
            }
        }
    }
    out
}

/// Converts a CLIP-normalised [3, H, W] image back to RGB8 (for looking at samples).
pub fn to_rgb8(img: &[f32]) -> Vec<u8> {
    let n = IMG_H * IMG_W;
    let mut out = vec![0u8; n * 3];
    for i in 0..n {
        for ch in 0..3 {
            let v = img[ch * n + i] * gadms_ckpt::clip_io::CLIP_STD[ch]
                + gadms_ckpt::clip_io::CLIP_MEAN[ch];
            out[i * 3 + ch] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
        }
    }
    out
}
