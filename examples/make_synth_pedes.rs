//! Writes the synthetic person dataset in CUHK-PEDES form (`reid_raw.json` + `imgs/`):
//!
//! ```sh
//! cargo run --release --example make_synth_pedes -- fixtures/synth-pedes
//! ```
//!
//! With no options it writes exactly the committed fixture (`gadms pretrain`'s default data;
//! see fixtures/synth-pedes/README.md). The generator is `gadms_data::synth`.

use argh::FromArgs;
use gadms_data::synth::{FIXTURE, SynthConfig, write_cuhk_pedes};
use std::path::PathBuf;

/// Write the synthetic person dataset (CUHK-PEDES layout) into OUT_DIR.
#[derive(FromArgs)]
struct Args {
    /// output directory (e.g. fixtures/synth-pedes)
    #[argh(positional)]
    out: PathBuf,
    /// training identities (default: the fixture's 350)
    #[argh(option, default = "FIXTURE.train_ids")]
    train_ids: usize,
    /// test identities (default: the fixture's 100)
    #[argh(option, default = "FIXTURE.test_ids")]
    test_ids: usize,
    /// seed (default: the fixture's 0)
    #[argh(option, default = "FIXTURE.seed")]
    seed: u64,
}

fn main() -> anyhow::Result<()> {
    let a: Args = argh::from_env();
    let cfg = SynthConfig {
        seed: a.seed,
        train_ids: a.train_ids,
        test_ids: a.test_ids,
        ..FIXTURE
    };
    let s = write_cuhk_pedes(&a.out, &cfg)?;
    println!(
        "wrote {}: train {} ids / {} images, test {} ids / {} images, {} captions per image, \
         {:.2} MB{}",
        a.out.display(),
        s.ids.0,
        s.images.0,
        s.ids.1,
        s.images.1,
        cfg.captions_per_image,
        s.bytes as f64 / 1e6,
        if s.removed > 0 {
            format!(" ({} stale images removed)", s.removed)
        } else {
            String::new()
        }
    );
    Ok(())
}
