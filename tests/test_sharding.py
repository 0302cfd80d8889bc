"""The model axis sharded over 4 forced host devices (run in a subprocess: pytest has 1 device)."""

import json
import textwrap

import pytest

from .conftest import run_on_host_devices

SCRIPT = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np
    from tests.test_strategies import tiny, run_plan
    from jaxsam.train.strategies import Execution, make_ensemble_fn
    from jaxsam.train.logits import make_logits_fn
    from jaxsam.train.state import init_ensemble, model_keys
    from jaxsam.train.step import make_train_steps
    from jaxsam.models import with_conv_impl
    import dataclasses

    out = {"devices": jax.local_device_count()}
    for m, net in ((4, "resnet9"), (6, "cnn")):  # 6: not divisible by 4, padded
        cfg, pool, keep, setup = tiny(net, m=m)
        setup1, ref, _ = run_plan(cfg, pool, keep, setup, Execution("vmap", "matmul"), steps=2)
        setup4, got, _ = run_plan(cfg, pool, keep, setup, Execution("sharded", "matmul"), steps=2)
        diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                   zip(jax.tree.leaves(ref), jax.tree.leaves(got)))
        mean, std = jnp.asarray(pool.mean), jnp.asarray(pool.std)
        x = jnp.asarray(pool.x[:5])
        l1 = make_logits_fn(setup1, mean, std, "image", 2)(ref[0], ref[1], x)
        l4 = make_logits_fn(setup4, mean, std, "image", 2)(got[0], got[1], x)
        out[f"param_diff_{m}"] = diff
        out[f"logit_diff_{m}"] = float(jnp.max(jnp.abs(l1 - l4)))
        out[f"logit_shape_{m}"] = list(l4.shape)
        out[f"param_devices_{m}"] = len(jax.tree.leaves(got)[0].sharding.device_set)

    # compiled HLO of the sharded train call (M = 4): no all-gather, no collectives at all
    cfg, pool, keep, setup = tiny("resnet9", m=4)
    setup = dataclasses.replace(setup, model=with_conv_impl(setup.model, "matmul"))
    st = init_ensemble(setup.model, setup.tx, 4, pool.input_shape, 0)
    fn = make_train_steps(setup, jnp.asarray(pool.mean), jnp.asarray(pool.std), "image", 4)
    from jaxsam.train.strategies import _sharded_body, model_mesh
    def one(s, d, sh, n):
        return fn(s, d, sh[0], sh[1], n)
    body = jax.jit(_sharded_body(one, None, 1, model_mesh()), static_argnums=(3,))
    data = (jnp.asarray(keep), model_keys(0, 4, 1), model_keys(0, 4, 2))
    shared = ((jnp.asarray(pool.x), jnp.asarray(pool.y)), jnp.int32(0))
    hlo = body.lower((st.params, st.batch_stats, st.opt_state), data, shared, 2).compile().as_text()
    out["all_gather"] = hlo.count("all-gather")
    out["all_reduce"] = hlo.count("all-reduce")
    out["convolution_or_dot"] = hlo.count("dot(") + hlo.count("convolution(")
    print("RESULT " + json.dumps(out))
    """
)


@pytest.mark.multidevice
@pytest.mark.slow  # long: CI runs it in its `-m slow` phase
def test_sharded_over_four_devices_equals_one_device_and_has_no_all_gather():
    stdout = run_on_host_devices(SCRIPT, 4, timeout=900)
    line = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")][-1]
    r = json.loads(line[len("RESULT ") :])
    assert r["devices"] == 4
    for m in (4, 6):
        assert r[f"param_diff_{m}"] < 1e-4, r
        assert r[f"logit_diff_{m}"] < 1e-4, r
        assert r[f"logit_shape_{m}"] == [m, 5, 2, 4]
    assert r["param_devices_4"] == 4  # the state really lives on all four devices
    assert r["convolution_or_dot"] > 0  # the HLO text is the real program
    assert r["all_gather"] == 0, "activations (or anything) all-gathered across devices"
    assert r["all_reduce"] == 0
