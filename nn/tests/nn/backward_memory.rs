//! The backward pass frees each intermediate gradient as soon as nothing can read it any more
//! (the patch of the vendored dfdx, vendor/README.md) when the gradient store marks its
//! leaves (`alloc_grads`), keeps every gradient with a leaky store, and lets one store take
//! backward passes one after another (gradient accumulation).

use dfdx::nn::builders::Linear;
use dfdx::prelude::*;
use std::cell::RefCell;
use std::rc::Rc;

type X = Tensor<Rank2<4, 8>, f32, Cpu>;

/// What the probe's backward saw: whether the store still held `late`'s gradient.
#[derive(Default)]
struct Seen {
    late: Option<X>,
    held: Option<bool>,
}

/// An identity op whose backward (the last to run: it is the graph's first op) records in
/// `seen` whether the store still holds the gradient of `seen.late`, made after it.
fn probe<T: Tape<f32, Cpu>>(
    x: Tensor<Rank2<4, 8>, f32, Cpu, T>,
    seen: Rc<RefCell<Seen>>,
) -> Tensor<Rank2<4, 8>, f32, Cpu, T> {
    let (x, mut tape) = x.split_tape();
    let out = x.device().tensor(x.array());
    tape.add_backward_op(move |grads| {
        let mut s = seen.borrow_mut();
        let late = s.late.as_ref().expect("the test stores the late tensor");
        s.held = Some(grads.get_ref_checked(late).is_some());
        Ok(())
    });
    out.put_tape(tape)
}

/// `relu(lin(probe(x))).sum()` backward: whether `lin(…)`'s gradient was held when the
/// probe's backward ran, and whether the weight's gradient is there at the end.
fn run(leaky: bool) -> (bool, bool) {
    let dev = Cpu::seed_from_u64(3);
    let lin = dev.build_module::<Linear<8, 8>, f32>();
    let x: X = dev.sample_normal();
    let seen = Rc::new(RefCell::new(Seen::default()));
    let x = if leaky {
        x.trace(Gradients::leaky())
    } else {
        x.trace(lin.alloc_grads())
    };
    let y = lin.forward(probe(x, seen.clone()));
    seen.borrow_mut().late = Some(y.retaped::<NoneTape>());
    let g = y.relu().sum().backward();
    let held = seen.borrow().held.expect("the probe's backward ran");
    (held, g.get_ref_checked(&lin.weight).is_some())
}

#[test]
fn the_backward_pass_frees_dead_intermediate_gradients() {
    let (held, weight) = run(false);
    assert!(
        !held,
        "with alloc_grads, the gradient of a tensor made after an op is freed by the time the op's backward runs"
    );
    assert!(weight, "the leaves' gradients are kept");
}

#[test]
fn a_leaky_store_keeps_every_gradient() {
    let (held, weight) = run(true);
    assert!(held, "Gradients::leaky keeps intermediate gradients");
    assert!(weight);
}

/// The weight gradient of `relu(lin(x)).sum()` for each `x` in turn, on one store.
fn weight_grad(lin: &dfdx::nn::modules::Linear<8, 8, f32, Cpu>, xs: &[X]) -> Vec<f32> {
    let mut grads = lin.alloc_grads();
    for x in xs {
        grads = lin.forward(x.trace(grads)).relu().sum().backward();
    }
    grads.get(&lin.weight).as_vec()
}

#[test]
fn a_store_takes_one_backward_pass_after_another() {
    let dev = Cpu::seed_from_u64(3);
    let lin = dev.build_module::<Linear<8, 8>, f32>();
    let (a, b): (X, X) = (dev.sample_normal(), dev.sample_normal());
    let both = weight_grad(&lin, &[a.clone(), b.clone()]);
    let (ga, gb) = (weight_grad(&lin, &[a]), weight_grad(&lin, &[b]));
    for (i, g) in both.iter().enumerate() {
        assert!(
            (g - (ga[i] + gb[i])).abs() <= 1e-6 * (1.0 + g.abs()),
            "accumulated gradient {i}: {g} against {}",
            ga[i] + gb[i]
        );
    }
}
