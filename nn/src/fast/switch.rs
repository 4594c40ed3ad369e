//! The switch between the fused kernels and the plain dfdx composition, per thread.

use std::cell::Cell;
use std::sync::OnceLock;

thread_local! {
    static FUSED: Cell<Option<bool>> = const { Cell::new(None) };
}

fn env_default() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("GADMS_FUSED").map_or(true, |v| v != "0"))
}

/// Whether this thread builds graphs with the fused kernels (default: on, unless the
/// environment has `GADMS_FUSED=0`).
pub fn fused_enabled() -> bool {
    FUSED.with(|f| f.get()).unwrap_or_else(env_default)
}

/// Turns the fused kernels on or off for graphs built on this thread from now on.
pub fn set_fused(on: bool) {
    FUSED.with(|f| f.set(Some(on)));
}

/// Runs `f` with the fused kernels on or off on this thread, then restores the setting.
pub fn with_fused<R>(on: bool, f: impl FnOnce() -> R) -> R {
    let old = FUSED.with(|c| c.replace(Some(on)));
    let out = f();
    FUSED.with(|c| c.set(old));
    out
}
