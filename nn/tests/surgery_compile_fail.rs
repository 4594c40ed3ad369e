//! Compile-fail tests of the model-surgery types (`gadms_nn::surgery`): each file under
//! `tests/compile_fail/` is a mistake the compiler must reject, and its `.stderr` holds the
//! expected message (the compile-time assertion naming the mistake in words). Regenerate the
//! `.stderr` files with `TRYBUILD=overwrite cargo test -p gadms-nn --test surgery_compile_fail` and review
//! the diff.
//!
//! trybuild builds every case against `gadms-nn` (only its dependencies: dfdx, num-traits,
//! rand_distr) in `target/tests/trybuild` (the first
//! run builds the dependencies there, see README "Model surgery" for the time).

#[test]
fn surgery_mistakes_fail_to_compile() {
    let t = trybuild::TestCases::new();
    // The pass case makes trybuild `cargo build` (not `cargo check`) every case: the checks
    // are post-monomorphization constant evaluations, which `cargo check` skips.
    t.pass("tests/compile_pass/surgery_ok.rs");
    t.compile_fail("tests/compile_fail/*.rs");
}
