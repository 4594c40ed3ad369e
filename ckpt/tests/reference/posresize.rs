//! The ViT position-grid resize against PyTorch `F.interpolate(bilinear, align_corners=False)`.

use crate::common::*;
use gadms_ckpt::resize::resize_pos_embed;

#[test]
fn vit224_to_24x8_matches_irra() {
    let src = tensor("clip/ref_posresize.safetensors", "in.vit224");
    let got = resize_pos_embed(&src, (14, 14), (24, 8));
    assert_close(
        "24x8",
        &got,
        &tensor("clip/ref_posresize.safetensors", "out.vit224_to_24x8"),
        1e-6,
    );
    let same = resize_pos_embed(&src, (14, 14), (14, 14));
    assert_eq!(
        same,
        tensor("clip/ref_posresize.safetensors", "out.vit224_to_14x14")
    );
}

#[test]
fn non_square_grids_match_pytorch() {
    let src = tensor("clip/ref_posresize.safetensors", "in.grid4x2");
    let up = resize_pos_embed(&src, (4, 2), (4, 4));
    assert_close(
        "4x4",
        &up,
        &tensor("clip/ref_posresize.safetensors", "out.grid4x2_to_4x4"),
        1e-6,
    );
    let down = resize_pos_embed(&src, (4, 2), (2, 1));
    assert_close(
        "2x1",
        &down,
        &tensor("clip/ref_posresize.safetensors", "out.grid4x2_to_2x1"),
        1e-6,
    );
}
