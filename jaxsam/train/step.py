"""One model's training steps, written for a single model and mapped over the model axis."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxsam.data.augment import normalize, train_augment
from jaxsam.optim import dp as dp_lib
from jaxsam.optim.fused import fused_update
from jaxsam.train.batches import batch_indices, epoch_order
from jaxsam.train.setup import TrainSetup


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """Per-example softmax cross-entropy: logits [B, C], int labels [B] -> [B] (nats).

    With ``label_smoothing = s > 0`` the target is ``(1 - s) * one_hot(label) + s / C``
    (``optax.smooth_labels``), i.e. ``(1 - s) * CE + s * mean_c(-log p_c)``.
    """
    logits = logits.astype(jnp.float32)
    if not label_smoothing:
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def make_loss_fn(setup: TrainSetup):
    """The trainer's loss of ONE model on one batch, as its step differentiates it.

    Returns ``loss_fn(params, batch_stats, x, y) -> (loss, (new_batch_stats, logits))``: x the
    normalised batch [B, ...], y int labels [B], loss the mean cross-entropy (nats), logits
    [B, C]. The cross-entropy uses ``setup.label_smoothing`` (``train.label_smoothing``). With
    BatchNorm the model runs in training mode and returns updated running
    statistics; without, ``batch_stats`` passes through.
    """
    model, has_bn = setup.model, setup.has_batch_norm

    def loss_fn(params, batch_stats, x, y):
        variables = {"params": params}
        if has_bn:
            variables["batch_stats"] = batch_stats
            logits, updated = model.apply(variables, x, train=True, mutable=["batch_stats"])
            new_stats = updated["batch_stats"]
        else:
            logits = model.apply(variables, x, train=True)
            new_stats = batch_stats
        loss = cross_entropy(logits, y, setup.label_smoothing).mean()
        return loss, (new_stats, logits)

    return loss_fn


def make_train_steps(
    setup: TrainSetup, mean: jax.Array, std: jax.Array, kind: str, batch_size: int
):
    """Returns ``train_steps(model_state, model_data, shared, step0, num_steps)`` for ONE model.

    ``model_state`` = (params, batch_stats, opt_state); ``model_data`` = (keep_row [N] bool,
    order_key, augment_key); ``shared`` = (x_pool [N, ...], y_pool [N]) is the same for every
    model. The function runs ``num_steps`` steps starting at global step ``step0`` (all inside
    one epoch) under ``lax.scan`` and returns the new model state and per-step (loss, accuracy)
    arrays [num_steps] float32.

    The loss is the mean cross-entropy with ``setup.label_smoothing`` (``train.label_smoothing``);
    the per-step loss returned is that smoothed training loss.

    With ``setup.dp`` (``optim.dp``) the step is DP-SGD (:mod:`jaxsam.optim.dp`): a Poisson or
    shuffled batch, per-example gradients clipped and summed (in microbatches), Gaussian noise
    from the model's own key, divided by the expected batch size; a SAM-family variant takes
    its ascent on that noisy gradient and its descent gradient is a second noisy release. The
    returned loss and accuracy average the batch's real (not padding) examples.

    BatchNorm rule: the running statistics come from the clean forward pass; the SAM family's
    second (perturbed) pass only contributes its gradient. With ``setup.fused_passes`` both
    passes run through one ``lax.scan`` body (:func:`jaxsam.optim.fused_update`), same rule.
    """
    spe = setup.steps_per_epoch
    make_step = _plain_step if setup.dp is None else _dp_step
    one_step = make_step(setup, mean, std, kind, batch_size)

    def train_steps(
        model_state: Any, model_data: Any, shared: Any, step0: jax.Array, num_steps: int
    ):
        keep_row, order_key, aug_key = model_data
        x_pool, y_pool = shared
        order = epoch_order(order_key, keep_row, step0 // spe)
        num_in = jnp.sum(keep_row.astype(jnp.int32))
        body = functools.partial(
            one_step,
            keep_row=keep_row,
            order=order,
            num_in=num_in,
            aug_key=aug_key,
            x_pool=x_pool,
            y_pool=y_pool,
        )
        steps = step0 + jnp.arange(num_steps)
        return jax.lax.scan(lambda c, s: body(c, s), model_state, steps)

    return train_steps


def _batch(setup: TrainSetup, idx, step, aug_key, x_pool, y_pool, mean, std, kind: str):
    """The augmented, normalised inputs and the labels of pool rows ``idx`` at ``step``."""
    x = train_augment(jax.random.fold_in(aug_key, step), x_pool[idx], setup.augment)
    return normalize(x, mean, std, kind), y_pool[idx]


def _plain_step(setup: TrainSetup, mean, std, kind: str, batch_size: int):
    """One model's step without DP: the (SAM-family) update on one batch of its subset."""
    tx, spe = setup.tx, setup.steps_per_epoch
    loss_fn = make_loss_fn(setup)

    def one_step(carry, step, keep_row, order, num_in, aug_key, x_pool, y_pool):
        params, batch_stats, opt_state = carry
        idx = batch_indices(order, num_in, step % spe, batch_size)
        x, y = _batch(setup, idx, step, aug_key, x_pool, y_pool, mean, std, kind)
        grad_loss = jax.value_and_grad(loss_fn, has_aux=True)
        if setup.fused_passes:
            updates, opt_state, (loss, (new_stats, logits)) = fused_update(
                tx, lambda p: grad_loss(p, batch_stats, x, y), opt_state, params
            )
        else:
            (loss, (new_stats, logits)), grads = grad_loss(params, batch_stats, x, y)

            def grad_fn(p):
                return jax.grad(loss_fn, has_aux=True)(p, batch_stats, x, y)

            updates, opt_state = tx.update(grads, opt_state, params, grad_fn=grad_fn)
        params = optax.apply_updates(params, updates)
        acc = jnp.mean((jnp.argmax(logits, -1) == y).astype(jnp.float32))
        return (params, new_stats, opt_state), (loss.astype(jnp.float32), acc)

    return one_step


def _dp_step(setup: TrainSetup, mean, std, kind: str, batch_size: int):
    """One model's DP-SGD step: a Poisson (or shuffled) batch, clipped per example, noised
    per release (:mod:`jaxsam.optim.dp`)."""
    model, tx, spe, dp = setup.model, setup.tx, setup.steps_per_epoch, setup.dp

    def example_loss(params, x, y):
        """One example (batch axis of 1): its smoothed loss and logits (no BatchNorm here)."""
        logits = model.apply({"params": params}, x, train=True)
        return cross_entropy(logits, y, setup.label_smoothing).mean(), logits

    private = None if dp is None else dp_lib.private_grad_fn(example_loss, dp)

    def dp_step(carry, step, keep_row, order, num_in, aug_key, x_pool, y_pool):
        """DP-SGD: a Poisson (or shuffled) batch, clipped per example, noised per release."""
        params, batch_stats, opt_state = carry
        if dp.sampling == "poisson":
            key = jax.random.fold_in(jax.random.fold_in(aug_key, dp_lib.SAMPLE_STREAM), step)
            rate = dp.batch_size / jnp.maximum(num_in, 1).astype(jnp.float32)
            idx, valid = dp_lib.poisson_batch(key, keep_row, rate, dp.capacity)
        else:
            idx = batch_indices(order, num_in, step % spe, batch_size)
            valid = jnp.ones(batch_size, bool)
        x, y = _batch(setup, idx, step, aug_key, x_pool, y_pool, mean, std, kind)
        noise_key = jax.random.fold_in(jax.random.fold_in(aug_key, dp_lib.NOISE_STREAM), step)
        grads, (values, logits) = private(params, x, y, valid, jax.random.fold_in(noise_key, 0))

        def grad_fn(p):  # the SAM family's second release: its own noise draw
            return private(p, x, y, valid, jax.random.fold_in(noise_key, 1))[0]

        updates, opt_state = tx.update(grads, opt_state, params, grad_fn=grad_fn)
        params = optax.apply_updates(params, updates)
        w = valid.astype(jnp.float32)
        count = jnp.maximum(jnp.sum(w), 1.0)
        logits = logits.reshape(logits.shape[0], -1)
        loss = jnp.sum(values.astype(jnp.float32) * w) / count
        acc = jnp.sum((jnp.argmax(logits, -1) == y).astype(jnp.float32) * w) / count
        return (params, batch_stats, opt_state), (loss, acc)

    return dp_step
