"""The Evoformer and extra-MSA blocks (AlphaFold2 supplement Algorithm 6) in plain
PyTorch, for comparison with `scalefold bench evoformer` on the same GPU in the
same device call: forward + backward under bf16 autocast, eager and torch.compile.

Same structure as trainer/src/block.rs: gated attention with pair bias, column
attention (or global column attention), transitions, outer product mean,
triangle multiplication outgoing/incoming, triangle attention start/end,
dropout shared along rows/columns. Attention is written out (logits
materialized), as OpenFold does without its fused kernels.

Usage: python3 evoformer_torch.py [--iters 20] [--json]
"""
import argparse
import json
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class GatedAttention(nn.Module):
    def __init__(self, c_in, heads, dim, pair_c=None, own_bias=False):
        super().__init__()
        self.h, self.d = heads, dim
        self.ln = nn.LayerNorm(c_in)
        self.qkv = nn.Linear(c_in, 3 * heads * dim, bias=False)
        self.g = nn.Linear(c_in, heads * dim)
        self.o = nn.Linear(heads * dim, c_in)
        self.own_bias = own_bias
        if pair_c is not None:
            self.ln_z = nn.LayerNorm(pair_c)
            self.b = nn.Linear(pair_c, heads, bias=False)
        elif own_bias:
            self.b = nn.Linear(c_in, heads, bias=False)

    def forward(self, x, z=None):  # x [B, L, c]
        x = self.ln(x)
        B, L, _ = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.h, self.d).permute(2, 0, 3, 1, 4)
        logits = torch.einsum("bhid,bhjd->bhij", q, k) / math.sqrt(self.d)
        if z is not None:
            logits = logits + self.b(self.ln_z(z)).permute(2, 0, 1).unsqueeze(0)
        elif self.own_bias:
            logits = logits + self.b(x).permute(2, 0, 1).unsqueeze(0)
        a = torch.softmax(logits, dim=-1)
        o = torch.einsum("bhij,bhjd->bhid", a, v).permute(0, 2, 1, 3).reshape(B, L, -1)
        return self.o(o * torch.sigmoid(self.g(x)))


class GlobalColumnAttention(nn.Module):
    def __init__(self, c_in, heads, dim):
        super().__init__()
        self.h, self.d = heads, dim
        self.ln = nn.LayerNorm(c_in)
        self.q = nn.Linear(c_in, heads * dim, bias=False)
        self.kv = nn.Linear(c_in, 2 * dim, bias=False)
        self.g = nn.Linear(c_in, heads * dim)
        self.o = nn.Linear(heads * dim, c_in)

    def forward(self, x):  # x [R, S, c]
        x = self.ln(x)
        R, S, _ = x.shape
        q = self.q(x.mean(1)).view(R, self.h, self.d) / math.sqrt(self.d)
        k, v = self.kv(x).chunk(2, dim=-1)
        a = torch.softmax(torch.einsum("rhd,rsd->rhs", q, k), dim=-1)
        o = torch.einsum("rhs,rsd->rhd", a, v)
        g = torch.sigmoid(self.g(x)).view(R, S, self.h, self.d)
        return self.o((g * o.unsqueeze(1)).reshape(R, S, -1))


class Transition(nn.Module):
    def __init__(self, c, n=4):
        super().__init__()
        self.ln, self.l1, self.l2 = nn.LayerNorm(c), nn.Linear(c, n * c), nn.Linear(n * c, c)

    def forward(self, x):
        return self.l2(F.relu(self.l1(self.ln(x))))


class OuterProductMean(nn.Module):
    def __init__(self, c_m, c_z, c=32):
        super().__init__()
        self.ln, self.a, self.b, self.o = nn.LayerNorm(c_m), nn.Linear(c_m, c), nn.Linear(c_m, c), nn.Linear(c * c, c_z)

    def forward(self, m):  # [S, R, c_m]
        m = self.ln(m)
        a, b = self.a(m), self.b(m)
        outer = torch.einsum("sic,sjd->ijcd", a, b) / (m.shape[0] + 1e-3)
        return self.o(outer.reshape(outer.shape[0], outer.shape[1], -1))


class TriangleMultiplication(nn.Module):
    def __init__(self, c_z, c=128, outgoing=True):
        super().__init__()
        self.outgoing = outgoing
        self.ln_in, self.p, self.ln_out, self.o = nn.LayerNorm(c_z), nn.Linear(c_z, 4 * c + c_z), nn.LayerNorm(c), nn.Linear(c, c_z)
        self.c = c

    def forward(self, z):
        z = self.ln_in(z)
        ap, ag, bp, bg, g = self.p(z).split([self.c] * 4 + [z.shape[-1]], dim=-1)
        a, b = ap * torch.sigmoid(ag), bp * torch.sigmoid(bg)
        if self.outgoing:
            x = torch.einsum("ikc,jkc->ijc", a, b)
        else:
            x = torch.einsum("kic,kjc->ijc", a, b)
        return torch.sigmoid(g) * self.o(self.ln_out(x))


def dropout(x, p, shared_dim, training=True):
    if not training or p == 0:
        return x
    shape = list(x.shape)
    shape[shared_dim] = 1
    mask = torch.bernoulli(torch.full(shape, 1 - p, device=x.device, dtype=x.dtype)) / (1 - p)
    return x * mask


class EvoformerBlock(nn.Module):
    def __init__(self, c_m=256, c_z=128, msa_heads=8, msa_dim=32, global_column=False):
        super().__init__()
        self.row = GatedAttention(c_m, msa_heads, msa_dim, pair_c=c_z)
        self.col = GlobalColumnAttention(c_m, msa_heads, msa_dim) if global_column else GatedAttention(c_m, msa_heads, msa_dim)
        self.msa_t = Transition(c_m)
        self.opm = OuterProductMean(c_m, c_z)
        self.tri_out = TriangleMultiplication(c_z, outgoing=True)
        self.tri_in = TriangleMultiplication(c_z, outgoing=False)
        self.tri_start = GatedAttention(c_z, 4, 32, own_bias=True)
        self.tri_end = GatedAttention(c_z, 4, 32, own_bias=True)
        self.pair_t = Transition(c_z)

    def forward(self, m, z):
        m = m + dropout(self.row(m, z), 0.15, 0)
        mt = m.transpose(0, 1)
        m = m + self.col(mt).transpose(0, 1)
        m = m + self.msa_t(m)
        z = z + self.opm(m)
        z = z + dropout(self.tri_out(z), 0.25, 0)
        z = z + dropout(self.tri_in(z), 0.25, 0)
        z = z + dropout(self.tri_start(z), 0.25, 0)
        z = z + dropout(self.tri_end(z.transpose(0, 1)).transpose(0, 1), 0.25, 1)
        z = z + self.pair_t(z)
        return m, z


def bench(name, block, n_seq, n_res, c_m, c_z, iters, compiled):
    dev = "cuda"
    m = torch.randn(n_seq, n_res, c_m, device=dev, requires_grad=True)
    z = torch.randn(n_res, n_res, c_z, device=dev, requires_grad=True)
    gm, gz = torch.randn_like(m), torch.randn_like(z)
    fn = torch.compile(block) if compiled else block

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            mo, zo = fn(m, z)
        torch.autograd.backward([mo, zo], [gm.to(mo.dtype), gz.to(zo.dtype)])

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        step()
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e))
    times.sort()
    return {"block": name, "mode": "torch.compile" if compiled else "eager", "fwd_bwd_ms": times[len(times) // 2],
            "peak_bytes": torch.cuda.max_memory_allocated()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    results = []
    for name, kw, n_seq, c_m in [("evoformer", {}, 128, 256), ("extra_msa", {"c_m": 64, "msa_dim": 8, "global_column": True}, 1024, 64)]:
        block = EvoformerBlock(**kw).cuda().train()
        for compiled in ([False] if args.no_compile else [False, True]):
            r = bench(name, block, n_seq, 256, c_m, 128, args.iters, compiled)
            results.append(r)
            if not args.json:
                print(f"torch {r['block']:<10} {r['mode']:<14} fwd+bwd {r['fwd_bwd_ms']:8.3f} ms  peak {r['peak_bytes'] / 2**30:.2f} GiB", flush=True)
    if args.json:
        print(json.dumps({"bench": "evoformer_torch", "device": torch.cuda.get_device_name(), "torch": torch.__version__, "results": results}))


if __name__ == "__main__":
    main()
