//! The CLIP normalisation constants live in `gadms-data` (used on pixels) and `gadms-ckpt`
//! (written into exported preprocess configs; ckpt does not depend on data). They must agree.

#[test]
fn clip_mean_and_std_agree_across_crates() {
    assert_eq!(
        gadms_data::image_prep::CLIP_MEAN,
        gadms_ckpt::clip_io::CLIP_MEAN
    );
    assert_eq!(
        gadms_data::image_prep::CLIP_STD,
        gadms_ckpt::clip_io::CLIP_STD
    );
}
