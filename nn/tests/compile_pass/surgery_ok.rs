// The correct versions of the compile-fail cases build and run. (Having a `pass` case also
// makes trybuild run `cargo build` instead of `cargo check`: the surgery checks are
// compile-time assertions evaluated when generic code is instantiated, which `cargo check`
// does not do.)
use dfdx::nn::BuildModule;
use dfdx::prelude::*;
use gadms_nn::surgery::{assemble, check_decoder, keep_text_layers, replace_text_projection, with_text_projection};
use gadms_nn::{HasClipSpec, MtpTiny, TextTower, Tiny, TinyText, TinyVision};

fn main() {
    let dev = Cpu::default();
    let proj: Tensor<Rank2<64, 32>, f32, Cpu> = dev.zeros();
    let text = with_text_projection(<TinyText<f32, Cpu> as BuildModule<Cpu, f32>>::build(&dev), proj);
    let shallow: TextTower<49408, 77, 64, 2, 32, 256, 1, 32, f32, Cpu> = keep_text_layers(text);
    assert_eq!(shallow.transformer.resblocks.modules.len(), 1);
    let visual = <TinyVision<f32, Cpu> as BuildModule<Cpu, f32>>::build(&dev);
    let text48 = replace_text_projection::<48, _, _, _, _, _, _, _, _, f32, Cpu>(
        <TinyText<f32, Cpu> as BuildModule<Cpu, f32>>::build(&dev),
    );
    let _ = text48;
    let clip = assemble(visual, <TinyText<f32, Cpu> as BuildModule<Cpu, f32>>::build(&dev));
    assert_eq!(<Tiny<f32, Cpu> as HasClipSpec>::SPEC.name, "tiny");
    check_decoder(&clip, &<MtpTiny<f32, Cpu> as BuildModule<Cpu, f32>>::build(&dev));
}
