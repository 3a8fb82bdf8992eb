"""FLOP and byte counts of the benchmarked work (the roofline model).

A multiply-add counts 2 FLOPs. Backward of a GEMM costs 2x its forward (grad
of the input and of the weight), so forward+backward = 3x forward for the
GEMM and attention terms; elementwise work is not counted.
"""
from __future__ import annotations

# the pathway modes of a fused op's plan (plan_pathways) and each pathway's query / key modality
from maven_fast.ops.cross_modal import ABSORBED, GENERAL, KEY, KEY_LEN_1, QUERY


def polar_head_bytes(n: int, d: int, elem: int, backward: bool) -> int:
    """Memory traffic floor: x read once (forward) or twice plus dx written (fwd+bwd)."""
    return (3 if backward else 1) * n * d * elem


def cross_modal_flops(batch: int, d: int, tv: int, ta: int, tt: int, backward: bool = False) -> int:
    """The six-pathway block on projected sequences, general path (no shortcuts).

    forward per item = 16 D^2 (Tv + Ta + Tt)            input (Q for 2 pathways, K and V
                                                         for 2: 12 D^2 per token) and
                                                         output projections (4 D^2 per token)
                     + 8 D (Tv Ta + Tv Tt + Ta Tt)       QK^T and PV of six pathways
    """
    total_t = tv + ta + tt
    fwd = 16 * d * d * total_t + 8 * d * (tv * ta + tv * tt + ta * tt)
    return batch * fwd * (3 if backward else 1)


def cross_modal_bytes(batch: int, d: int, tv: int, ta: int, tt: int, elem: int, backward: bool = False) -> int:
    """Memory traffic floor of the block: every tensor moved once.

    forward          = elem (2 B D (Tv + Ta + Tt) + 24 D^2)   x read, y written; the six
                                                               pathways' in_proj (3 D^2) and
                                                               out_proj (D^2) weights read
    forward+backward = elem (5 B D (Tv + Ta + Tt) + 72 D^2)   + dy and x read, dx written;
                                                               weights read again, their
                                                               gradients written
    """
    total_t = tv + ta + tt
    if backward:
        return elem * (5 * batch * d * total_t + 72 * d * d)
    return elem * (2 * batch * d * total_t + 24 * d * d)


def gemm_flops(m: int, n: int, k: int) -> int:
    return 2 * m * n * k


def beit_layer_flops(batch: int, t: int, hidden: int, intermediate: int) -> int:
    """Forward FLOPs of one pre-LN BEiT layer on ``[batch, t, hidden]``.

    = 2 B T (4 C^2 + 2 C I)      query/key/value/output (4 C^2) and the MLP (2 C I)
    + 4 B T^2 C                  QK^T and PV
    """
    c, i = hidden, intermediate
    return 2 * batch * t * (4 * c * c + 2 * c * i) + 4 * batch * t * t * c


def maven_projection_flops(config, batch: int, tv: int, ta: int, tt: int) -> int:
    """Forward FLOPs of the three modality projections (encoder dims -> D = embed_dim),
    2 B D (Tv Dv + Ta Da + Tt Dt). Their input gradients are also the backward
    GEMMs a training step never runs: the cached features need no gradient."""
    enc, d = config.encoders, config.cross_modal.embed_dim
    return 2 * batch * d * (tv * enc.video_dim + ta * enc.audio_dim + tt * enc.text_dim)


def maven_forward_flops(config, batch: int, tv: int, ta: int, tt: int) -> int:
    """Forward FLOPs of every Linear layer and attention product of :class:`maven_fast.model.MAVEN`.

    ``config`` is a :class:`~maven_fast.config.MavenConfig`; ``ta``/``tt`` are the
    audio/text steps (1 for the pooled reference presets). Padded shapes: this is
    the work eager does on a padded batch. With D = embed_dim, C = beit.hidden_size,
    I = beit.intermediate_size, (h1, h2) = regressor.hidden_sizes::

        projections    2 B D (Tv Dv + Ta Da + Tt Dt)
        cross-modal    cross_modal_flops(B, D, Tv, Ta, Tt)
        reference_mlp  -                                      head input F = 3D
        reference_beit 2 B Tv 3D C + k L beit_layer_flops      F = k C (k branches)
        paper          2 B Tv 3D C + L beit_layer_flops        F = C
        regressor      2 B Tv (F h1 + h1 h2 + 2 h2)

    LayerNorm, softmax, activations, resampling and the loss are not counted.
    """
    if config.pooled_inputs and (ta, tt) != (1, 1):
        raise ValueError(f"the {config.variant} preset takes pooled audio/text: ta = tt = 1, got {ta}, {tt}")
    d = config.cross_modal.embed_dim
    beit, reg = config.beit, config.regressor
    flops = maven_projection_flops(config, batch, tv, ta, tt) + cross_modal_flops(batch, d, tv, ta, tt)
    head_in = 3 * d
    if config.variant != "reference_mlp":
        branches = beit.num_branches if config.variant == "reference_beit" else 1
        layer = beit_layer_flops(batch, tv, beit.hidden_size, beit.intermediate_size)
        flops += 2 * batch * tv * 3 * d * beit.hidden_size + branches * beit.num_hidden_layers * layer
        head_in = branches * beit.hidden_size
    h1, h2 = reg.hidden_sizes
    return flops + 2 * batch * tv * (head_in * h1 + h1 * h2 + 2 * h2)


def maven_step_flops(config, batch: int, tv: int, ta: int, tt: int) -> int:
    """FLOPs of one training step (forward + backward; the Adam update is not counted).

    Backward of a GEMM or attention product costs 2x its forward (gradients of
    both operands), so a step is 3x :func:`maven_forward_flops`, less the input
    gradients of the modality projections, which are never computed
    (:func:`maven_projection_flops`)::

        step = 3 forward - 2 B D (Tv Dv + Ta Da + Tt Dt)
    """
    return 3 * maven_forward_flops(config, batch, tv, ta, tt) - maven_projection_flops(config, batch, tv, ta, tt)




def cross_modal_executed_flops(batch: int, d: int, heads: int, tv: int, ta: int, tt: int, modes,
                               backward: bool = False) -> int:
    """FLOPs the fused block performs with its structural shortcuts, per pathway x2y
    (Tx queries, Ty keys) by its mode in ``modes`` (v2a, v2t, a2v, a2t, t2v, t2a)::

        general      2 D^2 (2 Tx + 2 Ty) + 4 Tx Ty D       Q, K, V, out projections + QK^T, PV
        key length 1 4 D^2                                  V of the one key and out_proj, once per item
        absorbed     8 Tx D^2 + 4 H Tx Ty D                 Q, W_k fold, W_v, out_proj; scores and
                                                            weighted sums on the raw D-wide keys per head

    times the batch; x3 with backward. With every mode general it equals
    :func:`cross_modal_flops`.
    """
    t = (tv, ta, tt)
    fwd = 0
    for p, mode in enumerate(modes):
        tx, ty = t[QUERY[p]], t[KEY[p]]
        if mode == GENERAL:
            fwd += 2 * d * d * (2 * tx + 2 * ty) + 4 * tx * ty * d
        elif mode == KEY_LEN_1:
            fwd += 4 * d * d
        elif mode == ABSORBED:
            fwd += 8 * tx * d * d + 4 * heads * tx * ty * d
        else:
            raise ValueError(f"unknown pathway mode {mode!r}")
    return batch * fwd * (3 if backward else 1)
