// A 64-wide text tower with 3 heads of 21 (3 · 21 = 63): the heads must tile the width.
use dfdx::nn::BuildModule;
use dfdx::prelude::*;
use gadms_nn::TextTower;

type ThreeHeads = TextTower<49408, 77, 64, 3, 21, 256, 2, 32, f32, Cpu>;

fn main() {
    let dev = Cpu::default();
    let _text = <ThreeHeads as BuildModule<Cpu, f32>>::build(&dev);
}
