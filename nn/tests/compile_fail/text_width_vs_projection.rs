// A 48-row projection on Tiny's 64-wide text tower: the projection's input width must be the
// tower's width.
use dfdx::nn::BuildModule;
use dfdx::prelude::*;
use gadms_nn::surgery::with_text_projection;
use gadms_nn::TinyText;

fn main() {
    let dev = Cpu::default();
    let text = <TinyText<f32, Cpu> as BuildModule<Cpu, f32>>::build(&dev);
    let proj: Tensor<Rank2<48, 32>, f32, Cpu> = dev.zeros();
    let _text = with_text_projection(text, proj);
}
