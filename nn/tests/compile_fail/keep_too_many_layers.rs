// Keeping 3 blocks of Tiny's 2-block text tower.
use dfdx::nn::BuildModule;
use dfdx::prelude::*;
use gadms_nn::surgery::keep_text_layers;
use gadms_nn::{TextTower, TinyText};

fn main() {
    let dev = Cpu::default();
    let text = <TinyText<f32, Cpu> as BuildModule<Cpu, f32>>::build(&dev);
    let _deeper: TextTower<49408, 77, 64, 2, 32, 256, 3, 32, f32, Cpu> = keep_text_layers(text);
}
