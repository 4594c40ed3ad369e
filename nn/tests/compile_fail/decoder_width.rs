// A 48-wide MTP decoder on Tiny, whose towers project to 32: the decoder reads the projected
// tokens, so its width must be the joint width.
use dfdx::nn::BuildModule;
use dfdx::prelude::*;
use gadms_nn::surgery::check_decoder;
use gadms_nn::{MtpDecoder, Tiny};

fn main() {
    let dev = Cpu::default();
    let clip = <Tiny<f32, Cpu> as BuildModule<Cpu, f32>>::build(&dev);
    let mtp = <MtpDecoder<48, 2, 24, 192, 4, 49408, f32, Cpu> as BuildModule<Cpu, f32>>::build(&dev);
    check_decoder(&clip, &mtp);
}
