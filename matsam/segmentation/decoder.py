"""SAM's mask decoder with the image's work done once per image instead of once per prompt.

SAM's `MaskDecoder.predict_masks` copies the 64 x 64 x 256 image embedding once per prompt and
runs every projection over all 4,096 image tokens of every copy. Yet the image tokens only ever
change by attention over a handful of prompt tokens (T = 7 for one point: 5 output tokens, the
point and a padding point) and by LayerNorms. So for every prompt the image tokens are exactly

    keys = a * S + F @ E + c        (one row per image token)

with S (N, C) and c (C,) the same for every prompt of the image, a (N,) a per-token scale (the
LayerNorms' 1 / std), and F @ E a low-rank update: the columns of F are the attention
probabilities of the image-to-token attentions (heads x T per attention) plus one column per
LayerNorm, and E = V @ W stacks the prompt tokens' values V (per prompt, small) times a matrix W
shared by all prompts (the attention's output projection, later maps folded in). A linear map of
the keys is a linear map of S, W and c: done once per image. A LayerNorm needs each token's
variance, a quadratic form of its coefficients. Attention scores and weighted sums contract the
small per-prompt factors first. Only the first ConvTranspose output (a per-token linear map to
2 x 2 x 64 values, followed by a GELU) is materialised per prompt, a few token rows at a time so
that it stays in cache while LayerNorm2d, GELU, the second ConvTranspose, GELU and the
hypernetwork product run on it.

Exact in real arithmetic; in float32 the logits match `MaskDecoder` to ~1e-4
(tests/test_decoder.py). Works for every SAM mask decoder of this architecture (MobileSAM and
SAM ViT-B/L/H: a two-way transformer of any depth) with point prompts and no mask input.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

UPSCALE_ROWS = 4  # token rows of the embedding upscaled at a time (4 x 64 tokens: ~1 MB a prompt)


@dataclass(frozen=True)
class Basis:
    """The prompt-independent part of the image tokens: S (N, C), one W (k_j, C) per low-rank
    block, c (C,). `heads[j]` is block j's head count (0: a LayerNorm column, k_j = 1)."""

    key: str
    S: Tensor
    W: tuple[Tensor, ...]
    c: Tensor
    heads: tuple[int, ...]


@dataclass(frozen=True)
class Coeffs:
    """The per-prompt part. a: (B, N) or None (all ones). FT: (B, R, N), the blocks' columns of F
    as rows: the first `rank` rows of a buffer sized for the whole decoder, so that adding a
    block writes only its own rows. V[j]: (B, H, T, dh) the values of attention block j, or None
    for a LayerNorm column."""

    a: Tensor | None
    buffer: Tensor
    rank: int
    V: tuple[Tensor | None, ...]

    @property
    def FT(self) -> Tensor:
        return self.buffer[:, : self.rank]


@dataclass(frozen=True)
class Projected:
    """A linear map of the image tokens in basis form: S (N, D), W, c (D,), plus the projected
    positional encoding P (N, D) when the map is applied to keys + pe (P is not scaled by a).
    `by_head` holds S, P + c and S + P + c as (H, N, dh), for contracting with per-head vectors."""

    S: Tensor
    P: Tensor | None
    W: tuple[Tensor, ...]
    c: Tensor
    by_head: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class ImageState:
    """One image's embedding and every prompt-independent quantity derived from it, cached on
    first use: the first batch of prompts pays for them, every later batch reuses them."""

    tokens: Tensor  # (N, C) image embedding + no-mask embedding
    pe: Tensor  # (N, C) dense positional encoding
    grid: tuple[int, int]  # (h, w) of the embedding
    cache: dict[str, Any] = field(default_factory=dict)

    def memo(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]


def _heads(x: Tensor, n_heads: int) -> Tensor:
    """(..., N, D) -> (..., H, N, dh)."""
    *lead, tokens, dim = x.shape
    return x.reshape(*lead, tokens, n_heads, dim // n_heads).transpose(-2, -3)


def _linear_map(weight: Tensor, bias: Tensor | None, basis: Basis, pe: Tensor | None) -> Projected:
    wt = weight.t()
    return Projected(
        S=basis.S @ wt,
        P=pe @ wt if pe is not None else None,
        W=tuple(w @ wt for w in basis.W),
        c=basis.c @ wt + (bias if bias is not None else 0),
    )


def _centre(basis: Basis) -> Basis:
    """The basis with every token's mean over channels removed (LayerNorm's centring)."""
    return Basis(basis.key + "|c", basis.S - basis.S.mean(-1, keepdim=True),
                 tuple(w - w.mean(-1, keepdim=True) for w in basis.W), basis.c - basis.c.mean(),
                 basis.heads)


def _expand(coeffs: Coeffs, basis: Basis, W: tuple[Tensor, ...]) -> Tensor:
    """E = V_j @ W_j of every block, stacked: (B, R, D). Head h's values meet only head h's rows
    of W_j, so this is small work per prompt."""
    b = coeffs.FT.shape[0]
    parts = []
    for V, w, heads in zip(coeffs.V, W, basis.heads):
        if V is None:
            parts.append(w.unsqueeze(0).expand(b, -1, -1))
        else:
            dh = V.shape[-1]
            parts.append((V @ w.reshape(heads, dh, -1)).reshape(b, -1, w.shape[-1]))
    return torch.cat(parts, dim=1)


class FastMaskDecoder:
    """`sam.mask_decoder(...)` for point prompts with `multimask_output=True`, prompts batched.

    `prepare(embedding)` once per image (or crop), then `decode(state, sparse)` for any number of
    prompt batches. Returns the three multimask logits and their predicted IoUs as
    `MaskDecoder.forward` does, optionally only for the top-left `valid` (rows, cols) part of the
    low-resolution grid (the rest of a non-square crop's grid is padding).
    """

    def __init__(self, sam: nn.Module):
        self.decoder = sam.mask_decoder
        self.prompt_encoder = sam.prompt_encoder
        self.transformer = self.decoder.transformer
        self.heads = {id(lin): attn.num_heads for attn in self.transformer.modules()
                      if hasattr(attn, "num_heads") and hasattr(attn, "q_proj")
                      for lin in (attn.q_proj, attn.k_proj, attn.v_proj)}
        up = self.decoder.output_upscaling
        self.up1, self.up_norm, self.up_act1, self.up2, self.up_act2 = up[0], up[1], up[2], up[3], up[4]

    @torch.inference_mode()
    def prepare(self, image_embedding: Tensor) -> ImageState:
        """image_embedding: (1, C, h, w) from the image encoder."""
        _, c, h, w = image_embedding.shape
        dense = self.prompt_encoder.no_mask_embed.weight.reshape(1, c)
        tokens = image_embedding[0].reshape(c, h * w).t() + dense
        pe = self.prompt_encoder.get_dense_pe()[0].reshape(c, h * w).t()
        return ImageState(tokens.contiguous(), pe.to(tokens.dtype).contiguous(), (h, w))

    @torch.inference_mode()
    def decode(self, state: ImageState, sparse: Tensor,
               valid: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
        """sparse: (B, P, C) sparse prompt embeddings from the prompt encoder.

        Returns logits (B, 3, rows, cols) on the 4h x 4w low-resolution grid (or its `valid`
        top-left part) and IoU predictions (B, 3).
        """
        dec = self.decoder
        b = sparse.shape[0]
        output_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
        queries = torch.cat([output_tokens.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)
        query_pe = queries
        n = state.tokens.shape[0]
        basis = Basis("img", state.tokens, (), torch.zeros_like(state.tokens[0]), ())
        t = queries.shape[1]
        rank = sum(layer.cross_attn_image_to_token.num_heads * t + 1 for layer in self.transformer.layers)
        coeffs = Coeffs(None, sparse.new_empty(b, rank, n), 0, ())

        for index, layer in enumerate(self.transformer.layers):
            if layer.skip_first_layer_pe:
                queries = layer.self_attn(q=queries, k=queries, v=queries)
            else:
                q = queries + query_pe
                queries = queries + layer.self_attn(q=q, k=q, v=queries)
            queries = layer.norm1(queries)
            attended = self._token_to_image(state, basis, coeffs, layer.cross_attn_token_to_image,
                                            queries + query_pe)
            queries = layer.norm2(queries + attended)
            queries = layer.norm3(queries + layer.mlp(queries))
            basis, coeffs = self._image_to_token(state, basis, coeffs, layer.cross_attn_image_to_token,
                                                 queries + query_pe, queries, f"l{index}")
            basis, coeffs = self._layer_norm(state, basis, coeffs, layer.norm4)

        final = self.transformer
        attended = self._token_to_image(state, basis, coeffs, final.final_attn_token_to_image,
                                        queries + query_pe)
        queries = final.norm_final_attn(queries + attended)

        iou = dec.iou_prediction_head(queries[:, 0, :])[:, 1:]
        hyper = torch.stack([dec.output_hypernetworks_mlps[i](queries[:, i + 1, :])
                             for i in range(1, dec.num_mask_tokens)], dim=1)  # (B, 3, C/8)
        return self._masks(state, basis, coeffs, hyper, valid), iou

    # --- attention in basis form -------------------------------------------------------------

    def _project(self, state: ImageState, basis: Basis, linear: nn.Linear, with_pe: bool) -> Projected:
        def compute() -> Projected:
            proj = _linear_map(linear.weight, linear.bias, basis, state.pe if with_pe else None)
            heads = self.heads[id(linear)]
            proj.by_head["S"] = _heads(proj.S, heads).contiguous()
            if proj.P is not None:
                proj.by_head["Pc"] = _heads(proj.P + proj.c, heads).contiguous()
                proj.by_head["SPc"] = _heads(proj.S + proj.P + proj.c, heads).contiguous()
            return proj

        return state.memo(f"{basis.key}|{id(linear)}|{with_pe}", compute)

    def _image_terms(self, proj: Projected, basis: Basis, coeffs: Coeffs, x: Tensor) -> Tensor:
        """Per head, the dot product of every projected image token (keys + pe) with x
        (B, H, T, dh): (B, H, T, N). The shared parts meet all prompts' x at once, head by head;
        the low-rank part meets x through the prompt's own small rows E first."""
        b, heads, t, dh = x.shape
        xs = x.transpose(0, 1).reshape(heads, b * t, dh)  # (H, B*T, dh)

        def shared(name: str) -> Tensor:  # (B, H, T, N), a view of a (H, B*T, N) product
            m = proj.by_head[name]
            return torch.bmm(xs, m.transpose(1, 2)).reshape(heads, b, t, -1).transpose(0, 1)

        if coeffs.a is None:  # nothing scales the shared part yet: S + P + c is one matrix
            out = shared("SPc")
            if coeffs.rank:
                out = out + self._low_rank(proj, basis, coeffs, x)
            return out
        out = self._low_rank(proj, basis, coeffs, x)
        out.addcmul_(shared("S"), coeffs.a[:, None, None, :])
        return out.add_(shared("Pc"))

    @staticmethod
    def _low_rank(proj: Projected, basis: Basis, coeffs: Coeffs, x: Tensor) -> Tensor:
        """x . (F_n E W) for every token n: (B, H, T, N), E's rows contracted with x first."""
        b, heads, t, dh = x.shape
        rows = _expand(coeffs, basis, proj.W).reshape(b, -1, heads, dh)  # (B, R, H, dh)
        xe = torch.einsum("bhtd,brhd->bhtr", x, rows).reshape(b, heads * t, -1)
        return torch.bmm(xe, coeffs.FT).reshape(b, heads, t, -1)

    def _token_to_image(self, state: ImageState, basis: Basis, coeffs: Coeffs, attn: nn.Module,
                        q: Tensor) -> Tensor:
        """`attn(q=q, k=keys + pe, v=keys)` for the image tokens `keys` in basis form."""
        heads = attn.num_heads
        qh = _heads(attn.q_proj(q), heads)  # (B, H, T, dh)
        b, _, t, dh = qh.shape
        k = self._project(state, basis, attn.k_proj, with_pe=True)
        p = torch.softmax(self._image_terms(k, basis, coeffs, qh / math.sqrt(dh)), dim=-1)
        n = p.shape[-1]
        v = self._project(state, basis, attn.v_proj, with_pe=False)
        pa = p.new_empty(heads, b, t, n)  # head-major, for the per-head product with S
        if coeffs.a is not None:
            torch.mul(p.transpose(0, 1), coeffs.a[None, :, None, :], out=pa)
        else:
            pa.copy_(p.transpose(0, 1))
        out = torch.bmm(pa.reshape(heads, b * t, n), v.by_head["S"])  # (H, B*T, dh)
        out = out.reshape(heads, b, t, dh).transpose(0, 1)  # (B, H, T, dh)
        out = out + p.sum(dim=-1, keepdim=True) * v.c.reshape(heads, 1, dh)
        if coeffs.rank:
            rows = _expand(coeffs, basis, v.W).reshape(b, -1, heads, dh)  # (B, R, H, dh)
            pf = torch.bmm(p.reshape(b, heads * t, n), coeffs.FT.transpose(1, 2))  # (B, H*T, R)
            out = out + torch.einsum("bhtr,brhd->bhtd", pf.reshape(b, heads, t, -1), rows)
        return attn.out_proj(out.transpose(1, 2).reshape(b, t, heads * dh))

    def _image_to_token(self, state: ImageState, basis: Basis, coeffs: Coeffs, attn: nn.Module,
                        k: Tensor, v: Tensor, key: str) -> tuple[Basis, Coeffs]:
        """keys + attn(q=keys + pe, k=k, v=v): a new low-rank block, whose columns are the
        attention probabilities and whose rows are the tokens' values times out_proj."""
        heads = attn.num_heads
        kh = _heads(attn.k_proj(k), heads)  # (B, H, T, dh)
        vh = _heads(attn.v_proj(v), heads)
        q = self._project(state, basis, attn.q_proj, with_pe=True)
        logits = self._image_terms(q, basis, coeffs, kh / math.sqrt(kh.shape[-1]))  # (B, H, T, N)
        p = torch.softmax(logits, dim=2)  # over the prompt tokens
        b, _, t, n = p.shape
        out_w, out_b = attn.out_proj.weight.t(), attn.out_proj.bias  # (D, C), (C,)
        new_key = f"{basis.key}+{key}"
        new_basis = state.memo(new_key, lambda: Basis(
            new_key, basis.S, (*basis.W, out_w), basis.c + out_b, (*basis.heads, heads)))
        rank = coeffs.rank + heads * t
        coeffs.buffer[:, coeffs.rank : rank].copy_(p.reshape(b, heads * t, n))
        return new_basis, Coeffs(coeffs.a, coeffs.buffer, rank, (*coeffs.V, vh))

    # --- LayerNorm in basis form -------------------------------------------------------------

    def _layer_norm(self, state: ImageState, basis: Basis, coeffs: Coeffs,
                    norm: nn.LayerNorm) -> tuple[Basis, Coeffs]:
        """LayerNorm of every image token: centre, divide by the token's standard deviation,
        scale and shift. Centring and scaling are linear (done to the basis); the standard
        deviation is per token and prompt: a quadratic form of the token's coefficients,
            |x|^2 = a^2 |S|^2 + 2a S.c + |c|^2 + 2a S.(F E) + 2 c.(F E) + F (E E^T) F^T."""
        centred = state.memo(f"{basis.key}|centred", lambda: _centre(basis))
        s, c = centred.S, centred.c
        s_sq, s_c, c_sq = state.memo(f"{basis.key}|norms", lambda: ((s * s).sum(-1), s @ c, c @ c))
        a = coeffs.a
        total = (s_sq + 2 * s_c if a is None else a * a * s_sq + 2 * a * s_c) + c_sq
        if coeffs.rank:
            cross_s, cross_c = self._cross_terms(state, centred, coeffs)
            total = total + 2 * (cross_s if a is None else a * cross_s) + 2 * cross_c
            e = _expand(coeffs, centred, centred.W)  # (B, R, C)
            gram = e @ e.transpose(1, 2)  # (B, R, R)
            total = total + (torch.bmm(gram, coeffs.FT) * coeffs.FT).sum(1)
        r = torch.rsqrt(total.clamp_min(0) / s.shape[-1] + norm.eps)  # (B, N)
        g, beta = norm.weight, norm.bias
        new_key = f"{basis.key}+ln{id(norm)}"
        new_basis = state.memo(new_key, lambda: Basis(
            new_key, s * g, (*(w * g for w in centred.W), (c * g)[None, :]), beta, (*basis.heads, 0)))
        coeffs.FT.mul_(r[:, None, :])
        coeffs.buffer[:, coeffs.rank].copy_(r)
        return new_basis, Coeffs(r if a is None else a * r, coeffs.buffer, coeffs.rank + 1, (*coeffs.V, None))

    def _cross_terms(self, state: ImageState, centred: Basis, coeffs: Coeffs) -> tuple[Tensor, Tensor]:
        """Per token, S_n . (F_n E) and c . (F_n E), block by block: E_j = V_j W_j, and W_j's
        products with S and c are shared, so only (H, T, N)-sized work is per prompt."""
        def shared() -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
            s_w = [centred.S @ w.t() for w in centred.W]  # (N, k_j): S . W_j, by head for attention
            s_w = [x[:, 0] if h == 0 else _heads(x, h).contiguous() for x, h in zip(s_w, centred.heads)]
            return tuple(s_w), tuple(w @ centred.c for w in centred.W)

        s_w, w_c = state.memo(f"{centred.key}|cross", shared)
        ft = coeffs.FT
        b, _, n = ft.shape
        cross_s = ft.new_zeros(b, n)
        cross_c = ft.new_zeros(b, n)
        start = 0
        for V, sw, wc in zip(coeffs.V, s_w, w_c):
            if V is None:
                f = ft[:, start]
                cross_s = cross_s + f * sw
                cross_c = cross_c + f * wc[0]
                start += 1
                continue
            _, heads, t, dh = V.shape
            f = ft[:, start : start + heads * t]  # (B, H*T, N)
            start += heads * t
            vs = torch.bmm(V.transpose(0, 1).reshape(heads, b * t, dh), sw.transpose(1, 2))  # (H, B*T, N)
            vs = vs.reshape(heads, b, t, n).transpose(0, 1).reshape(b, heads * t, n)
            cross_s = cross_s + (f * vs).sum(1)
            vc = (V @ wc.reshape(heads, dh, 1)).reshape(b, 1, heads * t)
            cross_c = cross_c + torch.bmm(vc, f)[:, 0]
        return cross_s, cross_c

    # --- upscaling -----------------------------------------------------------------------------

    def _masks(self, state: ImageState, basis: Basis, coeffs: Coeffs, hyper: Tensor,
               valid: tuple[int, int] | None) -> Tensor:
        """ConvTranspose(2, 2) is a per-token linear map to 2 x 2 x C/4 values: applied to the
        basis once per image and to the coefficients per prompt, a few token rows at a time."""
        h, w = state.grid
        rows, cols = (4 * h, 4 * w) if valid is None else valid
        th, tw = -(-rows // 4), -(-cols // 4)  # tokens whose 4 x 4 pixels reach the valid part
        up1, up2 = self.up1, self.up2
        c_in, c_mid = up1.weight.shape[:2]
        c_out = up2.weight.shape[1]

        def first_map() -> tuple[Projected, Tensor, Tensor]:
            # weight (C, C/4, 2, 2) -> (2*2*C/4, C), outputs ordered (sub-pixel, channel)
            weight = up1.weight.permute(2, 3, 1, 0).reshape(4 * c_mid, c_in)
            w2 = up2.weight.permute(2, 3, 1, 0).reshape(4 * c_out, c_mid).contiguous()
            return _linear_map(weight, up1.bias.repeat(4), basis, None), w2, up2.bias.repeat(4)

        proj, w2, b2 = state.memo(f"{basis.key}|up", first_map)
        s_grid = state.memo(f"{basis.key}|up|{th}x{tw}",
                            lambda: proj.S.reshape(h, w, -1)[:th, :tw].contiguous())  # (th, tw, 4 C/4)
        b = coeffs.FT.shape[0]
        rows_e = _expand(coeffs, basis, proj.W)  # (B, R, 4 C/4)
        a_grid = coeffs.a.reshape(b, h, w)[:, :th, :tw]
        ft_grid = coeffs.FT.reshape(b, -1, h, w)[:, :, :th, :tw]
        hyper_t = hyper.transpose(1, 2)  # (B, C/8, 3)
        out = hyper.new_empty(b, hyper.shape[1], 4 * th, 4 * tw)
        for r0 in range(0, th, UPSCALE_ROWS):
            r1 = min(r0 + UPSCALE_ROWS, th)
            n = (r1 - r0) * tw
            y = torch.addcmul(proj.c, a_grid[:, r0:r1].reshape(b, n, 1), s_grid[r0:r1].reshape(1, n, -1))
            y = torch.baddbmm(y, ft_grid[:, :, r0:r1].reshape(b, -1, n).transpose(1, 2), rows_e)
            y = self.up_act1(F.layer_norm(y.reshape(b, n, 4, c_mid), (c_mid,), self.up_norm.weight,
                                          self.up_norm.bias, self.up_norm.eps))
            z = self.up_act2(F.linear(y, w2, b2))  # (B, n, 4, 4 * C/8): (sub-pixel, sub-pixel, ch)
            m = torch.bmm(z.reshape(b, n * 16, c_out), hyper_t)  # (B, n * 16, 3)
            # token (i, j), sub-pixels (a1, b1) then (a2, b2) -> pixel (4i+2a1+a2, 4j+2b1+b2)
            m = m.reshape(b, r1 - r0, tw, 2, 2, 2, 2, -1).permute(0, 7, 1, 3, 5, 2, 4, 6)
            out[:, :, 4 * r0 : 4 * r1] = m.reshape(b, -1, 4 * (r1 - r0), 4 * tw)
        return out[:, :, :rows, :cols]
