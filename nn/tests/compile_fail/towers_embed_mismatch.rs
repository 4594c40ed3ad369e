// Tiny's vision tower (joint width 32) with a text tower projecting to 48: the SDM loss compares
// the two features by cosine, so the joint widths must agree.
use dfdx::nn::BuildModule;
use dfdx::prelude::*;
use gadms_nn::surgery::{assemble, replace_text_projection};
use gadms_nn::{TinyText, TinyVision};

fn main() {
    let dev = Cpu::default();
    let visual = <TinyVision<f32, Cpu> as BuildModule<Cpu, f32>>::build(&dev);
    let text = replace_text_projection::<48, _, _, _, _, _, _, _, _, f32, Cpu>(
        <TinyText<f32, Cpu> as BuildModule<Cpu, f32>>::build(&dev),
    );
    let _clip = assemble(visual, text);
}
