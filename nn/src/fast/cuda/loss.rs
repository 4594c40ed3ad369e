//! The masked-token cross entropy and the SDM loss on CUDA.

use super::*;

/// Weighted softmax cross entropy over the rows of `logits` [N, C] on CUDA (see
/// [`super::cross_entropy`]; labels and weights checked there): one block per row forward,
/// the row losses summed in row order on the device, one block per row backward. The labels
/// and weights are copied to the device (N values each); nothing comes back.
pub(crate) fn cross_entropy<C: Dim, E: Dtype, D: Device<E>, T: Tape<E, D>>(
    logits: Tensor<(usize, C), E, D, T>,
    labels: &[usize],
    weights: &[f64],
) -> Tensor<Rank0, E, D, T> {
    let (n, c) = (logits.shape().0, logits.shape().1.size());
    let (z, mut tape) = logits.split_tape();
    let dev = cuda(z.dev()).clone();
    let labels: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    let labels = to_device(&dev, labels, "the cross entropy's labels");
    let weights = to_device(&dev, weights.to_vec(), "the cross entropy's weights");
    let (stats, sp) = scratch_f64(&dev, 2 * n);
    let (rows, rp) = scratch_f64(&dev, n);
    let (out, op) = empty::<_, E, D>(&dev, ());
    let row_cfg = LaunchConfig {
        grid_dim: (n.max(1) as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let (lp, wp, zp) = (*labels.device_ptr(), *weights.device_ptr(), ptr(&z));
    let (ni, ci) = (n as i32, c as i32);
    launch(&dev, "ce_fwd", row_cfg, (ni, ci, zp, lp, wp, sp, rp));
    launch(&dev, "ce_sum", linear_cfg(1), (ni, rp, op));
    drop(rows);
    if T::OWNS_TAPE {
        let ghost = out.ghost();
        tape.add_backward_op(move |grads| {
            let _keep = (&labels, &weights, &stats);
            let gu = grad_ptr(grads, &ghost)?;
            let gz = grad_ptr(grads, &z)?;
            launch(
                &dev,
                "ce_bwd",
                row_cfg,
                (ni, ci, ptr(&z), lp, wp, sp, gu, gz),
            );
            Ok(())
        });
    }
    out.put_tape(tape)
}

/// The SDM loss of image and text features [B, K] on CUDA (see [`super::sdm`]; sizes checked
/// there), in f64 like the CPU kernel: row norms, the Gram matrix, the KL rows of both
/// directions and `dL/dG` in the forward, the two input gradients in the backward. `log_q` is
/// copied to the device (B² values); nothing comes back.
pub(crate) fn sdm<K: Dim, E: Dtype, D: Device<E>, T: Tape<E, D>>(
    image: Tensor<(usize, K), E, D, T>,
    text: Tensor<(usize, K), E, D, T>,
    log_q: &[f64],
    scale: f64,
) -> Tensor<Rank0, E, D, T> {
    let (b, k) = (image.shape().0, image.shape().1.size());
    let (image, ti) = image.split_tape();
    let (text, tt) = text.split_tape();
    let mut tape = ti.merge(tt);
    let dev = cuda(image.dev()).clone();
    let lq = to_device(&dev, log_q.to_vec(), "SDM's targets");
    let (uv, uvp) = scratch_f64(&dev, b * k);
    let (ut, utp) = scratch_f64(&dev, b * k);
    let (nv, nvp) = scratch_f64(&dev, b);
    let (nt, ntp) = scratch_f64(&dev, b);
    let (g, gp) = scratch_f64(&dev, b * b);
    let (d1, d1p) = scratch_f64(&dev, b * b);
    let (d2, d2p) = scratch_f64(&dev, b * b);
    let (kl1, kl1p) = scratch_f64(&dev, b);
    let (kl2, kl2p) = scratch_f64(&dev, b);
    let (dg, dgp) = scratch_f64(&dev, b * b);
    let (out, op) = empty::<_, E, D>(&dev, ());
    let (bi, ki) = (b as i32, k as i32);
    let rows = LaunchConfig {
        grid_dim: (b.max(1) as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    launch(&dev, "sdm_unit", rows, (bi, ki, ptr(&image), uvp, nvp));
    launch(&dev, "sdm_unit", rows, (bi, ki, ptr(&text), utp, ntp));
    launch(&dev, "sdm_gram", linear_cfg(b * b), (bi, ki, uvp, utp, gp));
    let lqp = *lq.device_ptr();
    launch(
        &dev,
        "sdm_kl",
        linear_cfg(b),
        (bi, scale, gp, lqp, 0i32, d1p, kl1p),
    );
    launch(
        &dev,
        "sdm_kl",
        linear_cfg(b),
        (bi, scale, gp, lqp, 1i32, d2p, kl2p),
    );
    let c = scale / b as f64;
    let params = (bi, c, kl1p, kl2p, d1p, d2p, op, dgp);
    launch(&dev, "sdm_loss_dg", linear_cfg(b * b), params);
    drop((lq, g, d1, d2, kl1, kl2));
    if T::OWNS_TAPE {
        let (gi, gt, ghost) = (image.ghost(), text.ghost(), out.ghost());
        tape.add_backward_op(move |grads| {
            let _keep = (&uv, &ut, &nv, &nt, &dg);
            let up = grad_ptr(grads, &ghost)?;
            let (gx, gy) = (grad_ptr(grads, &gi)?, grad_ptr(grads, &gt)?);
            let cfg = LaunchConfig {
                shared_mem_bytes: (k * 8) as u32,
                ..rows
            };
            launch(
                &dev,
                "sdm_back",
                cfg,
                (bi, ki, dgp, utp, uvp, nvp, 0i32, up, gx),
            );
            launch(
                &dev,
                "sdm_back",
                cfg,
                (bi, ki, dgp, uvp, utp, ntp, 1i32, up, gy),
            );
            Ok(())
        });
    }
    out.put_tape(tape)
}
