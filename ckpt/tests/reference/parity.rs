//! Forward outputs, attention probabilities and gradients of every parameter against PyTorch
//! (open_clip and Hugging Face `CLIPModel`, random weights; `fixtures/clip/make.py`).

use crate::common::*;
use dfdx::prelude::*;
use gadms_ckpt::bridge::{grads_to_map, map_to_module, module_to_map};
use gadms_ckpt::layout::{native_to_hf, native_to_openai, to_native};
use gadms_ckpt::{Array, TensorMap};
use gadms_nn::{Clip, TextInput, TextTower, VisionTower, cls_token, eos_token};

const TOL: f64 = 1e-4;

/// The open_clip fixture model: Tiny's vision tower with a 512-token vocabulary.
type OcModel = Clip<
    VisionTower<64, 32, 16, 768, 9, 64, 2, 32, 256, 2, 32, f32, Cpu>,
    TextTower<512, 77, 64, 2, 32, 256, 2, 32, f32, Cpu>,
>;
/// The HF fixture model: square 32×32 images (HF CLIP is square-only).
type HfModel = Clip<
    VisionTower<32, 32, 16, 768, 5, 64, 2, 32, 256, 2, 32, f32, Cpu>,
    TextTower<512, 77, 64, 2, 32, 256, 2, 32, f32, Cpu>,
>;

fn load<M: TensorCollection<f32, Cpu, To<f32, Cpu> = M>>(dev: &Cpu, file: &str) -> M {
    let mut params = section(file, "param.");
    params.origin = fixture(file);
    let (_, native) = to_native(params).expect("layout");
    let mut m = M::build(dev);
    map_to_module(&native, &mut m).expect("load");
    m
}

fn arr<S: Shape>(t: &Tensor<S, f32, Cpu>) -> Array {
    Array::new(t.shape().concrete().into(), t.as_vec())
}

struct Outputs {
    image_tokens: Array,
    image_features: Array,
    text_tokens: Array,
    text_features: Array,
    text_attn_last: Option<Array>,
    image_attn_last: Option<Array>,
    loss: f32,
    grads: TensorMap,
    image_grad: Array,
}

macro_rules! run_model {
    ($model:expr, $dev:expr, $file:expr, $ih:literal, $iw:literal, $seq:literal, $probs:expr) => {{
        let (model, dev, file) = ($model, $dev, $file);
        let img = tensor(file, "input.images");
        let b = img.shape[0];
        let images: Tensor<(usize, Const<3>, Const<$ih>, Const<$iw>), f32, Cpu> =
            dev.tensor_from_vec(img.data.clone(), (b, Const, Const, Const));
        let text = TextInput::new(dev, &id_rows(file, "input.text"));
        let mut vprobs = Vec::new();
        let mut tprobs = Vec::new();
        // Without attention probabilities the towers take the fused attention core.
        let (vp, tp) = match $probs {
            true => (Some(&mut vprobs), Some(&mut tprobs)),
            false => (None, None),
        };
        let itok = model.visual.forward(images.leaky_trace(), vp);
        let ttok = model
            .text
            .forward(text.ids.clone(), OwnedTape::default(), tp);
        let image_features = cls_token(itok.retaped::<NoneTape>());
        let text_features = eos_token(ttok.retaped::<NoneTape>(), text.eos.clone());
        let r_img = tensor(file, "input.r_image");
        let r_txt = tensor(file, "input.r_text");
        let r_img: Tensor<(usize, Const<$seq>, Const<32>), f32, Cpu> =
            dev.tensor_from_vec(r_img.data, (b, Const, Const));
        let r_txt: Tensor<(usize, Const<77>, Const<32>), f32, Cpu> =
            dev.tensor_from_vec(r_txt.data, (b, Const, Const));
        let (it, tt) = (
            arr(&itok.retaped::<NoneTape>()),
            arr(&ttok.retaped::<NoneTape>()),
        );
        let loss = (itok * r_img).sum::<(), _>() + (ttok * r_txt).sum::<(), _>();
        let loss_v = loss.array();
        let grads = loss.backward();
        Outputs {
            image_tokens: it,
            image_features: arr(&image_features),
            text_tokens: tt,
            text_features: arr(&text_features),
            text_attn_last: tprobs.last().map(arr),
            image_attn_last: vprobs.last().map(arr),
            loss: loss_v,
            grads: grads_to_map(model, &grads),
            image_grad: arr(&grads.get(&images)),
        }
    }};
}

fn check_outputs(file: &str, o: &Outputs) {
    assert_close(
        "image_tokens",
        &o.image_tokens,
        &tensor(file, "out.image_tokens"),
        TOL,
    );
    assert_close(
        "image_features",
        &o.image_features,
        &tensor(file, "out.image_features"),
        TOL,
    );
    assert_close(
        "text_tokens",
        &o.text_tokens,
        &tensor(file, "out.text_tokens"),
        TOL,
    );
    assert_close(
        "text_features",
        &o.text_features,
        &tensor(file, "out.text_features"),
        TOL,
    );
    let want = tensor(file, "out.loss").data[0];
    assert!(
        ((o.loss - want) / want).abs() < 1e-4,
        "loss {} vs {want}",
        o.loss
    );
    assert_close(
        "grad.input.images",
        &o.image_grad,
        &tensor(file, "grad.input.images"),
        TOL,
    );
}

#[test]
fn open_clip_forward_attention_and_gradients_match_pytorch() {
    let dev = Cpu::default();
    let file = "clip/ref_openclip.safetensors";
    let model: OcModel = load(&dev, file);
    let o = run_model!(&model, &dev, file, 64, 32, 9, true);
    check_outputs(file, &o);
    let ta = o.text_attn_last.as_ref().unwrap();
    assert_close(
        "text_attn_last",
        ta,
        &tensor(file, "out.text_attn_last"),
        TOL,
    );
    let ia = o.image_attn_last.as_ref().unwrap();
    assert_close(
        "image_attn_last",
        ia,
        &tensor(file, "out.image_attn_last"),
        TOL,
    );
    check_open_clip_grads(file, &o);
}

/// Every parameter gradient (exported in the fixture's layout) against PyTorch's.
fn check_param_grads(what: &str, file: &str, grads: &TensorMap) {
    let want = section(file, "grad.");
    let want = TensorMap {
        tensors: want
            .tensors
            .into_iter()
            .filter(|(k, _)| k != "input.images")
            .collect(),
        ..Default::default()
    };
    assert_maps_close(what, grads, &want, &["logit_scale"], TOL);
}

fn check_open_clip_grads(file: &str, o: &Outputs) {
    let grads = native_to_openai(&o.grads, 16, 0.0);
    check_param_grads("open_clip grads", file, &grads);
}

/// The same model without attention probabilities, so the fused attention core runs.
#[test]
fn open_clip_fused_forward_and_gradients_match_pytorch() {
    let dev = Cpu::default();
    let file = "clip/ref_openclip.safetensors";
    let model: OcModel = load(&dev, file);
    let o = run_model!(&model, &dev, file, 64, 32, 9, false);
    check_outputs(file, &o);
    check_open_clip_grads(file, &o);
}

/// Without attention probabilities: the fused CPU attention core (`gadms_nn::fast`).
#[test]
fn hf_fused_forward_and_gradients_match_pytorch() {
    let dev = Cpu::default();
    let file = "clip/ref_hf.safetensors";
    let model: HfModel = load(&dev, file);
    let o = run_model!(&model, &dev, file, 32, 32, 5, false);
    check_outputs(file, &o);
    let grads = native_to_hf(&o.grads, 16, 0.0);
    check_param_grads("hf grads", file, &grads);
}

#[test]
fn openai_layout_round_trips_exactly() {
    let dev = Cpu::default();
    let file = "clip/ref_openclip.safetensors";
    let model: OcModel = load(&dev, file);
    let back = native_to_openai(&module_to_map(&model), 16, 0.0);
    let orig = section(file, "param.");
    assert_maps_close("openai round trip", &back, &orig, &["logit_scale"], 0.0);
}

#[test]
fn hf_layout_round_trips_exactly() {
    let dev = Cpu::default();
    let file = "clip/ref_hf.safetensors";
    let model: HfModel = load(&dev, file);
    let back = native_to_hf(&module_to_map(&model), 16, 0.0);
    let orig = section(file, "param.");
    assert_maps_close("hf round trip", &back, &orig, &["logit_scale"], 0.0);
}
