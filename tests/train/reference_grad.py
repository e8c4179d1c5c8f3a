#!/usr/bin/env python3
"""Reference loss and gradients for `rwkv grad`, by PyTorch autograd in float64.

usage: reference_grad.py MODEL.safetensors TOKENS.txt OUT.safetensors

The forward is written from the official formulas (BlinkDL/RWKV-LM: RWKV-v7/rwkv_v7_demo.py
and RWKV-v5's x060 model for RWKV-6), one token at a time from a zero state, so it shares no
code with the C++ trainer. Loss: next-token cross-entropy, mean over positions. Output: the
loss (tensor "loss", shape (1,)) and every parameter's gradient under its own name, float32.
"""
import json
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

DTYPES = {"F32": np.float32, "F16": np.float16}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        if info["dtype"] == "BF16":
            raw = np.frombuffer(data[8 + n + b:8 + n + e], dtype=np.uint16).astype(np.uint32) << 16
            arr = raw.view(np.float32)
        else:
            arr = np.frombuffer(data[8 + n + b:8 + n + e], dtype=DTYPES[info["dtype"]])
        out[name] = torch.tensor(arr.astype(np.float64).reshape(info["shape"]), requires_grad=True)
    return out


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        b = np.ascontiguousarray(t, dtype=np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def ln(x, w, b):
    return F.layer_norm(x, (x.shape[-1],), w.reshape(-1), b.reshape(-1), eps=1e-5)


def group_norm(x, w, b, H):
    return F.group_norm(x.reshape(1, -1), H, w.reshape(-1), b.reshape(-1), eps=64e-5).reshape(-1)


def v7_layer(p, i, x, st, v_first):
    pre = f"blocks.{i}."
    P = lambda n: p[pre + n].reshape(-1) if p[pre + n].dim() != 2 else p[pre + n]
    H, N = p[pre + "att.r_k"].shape
    xx = ln(x, p[pre + "ln1.weight"], p[pre + "ln1.bias"])
    sx = st["att_x"] - xx
    st["att_x"] = xx
    xr, xw, xk, xv, xa, xg = (xx + sx * P("att." + n) for n in ["x_r", "x_w", "x_k", "x_v", "x_a", "x_g"])
    r = p[pre + "att.receptance.weight"] @ xr
    w = -F.softplus(-(P("att.w0") + torch.tanh(xw @ P("att.w1")) @ P("att.w2"))) - 0.5
    k = p[pre + "att.key.weight"] @ xk
    v = p[pre + "att.value.weight"] @ xv
    a = torch.sigmoid(P("att.a0") + (xa @ P("att.a1")) @ P("att.a2"))
    g = torch.sigmoid(xg @ P("att.g1")) @ P("att.g2")
    kk = F.normalize((k * P("att.k_k")).view(H, N), dim=-1, p=2.0).view(-1)
    k = k * (1 + (a - 1) * P("att.k_a"))
    if i == 0:
        v_first = v
    else:
        v = v + (v_first - v) * torch.sigmoid(P("att.v0") + (xv @ P("att.v1")) @ P("att.v2"))
    w = torch.exp(-torch.exp(w))
    S = st["S"]
    vk = v.view(H, N, 1) @ k.view(H, 1, N)
    ab = (-kk).view(H, N, 1) @ (kk * a).view(H, 1, N)
    S = S * w.view(H, 1, N) + S @ ab + vk
    st["S"] = S
    y = (S @ r.view(H, N, 1)).view(-1)
    y = group_norm(y, p[pre + "att.ln_x.weight"], p[pre + "att.ln_x.bias"], H)
    y = y + ((r * k * p[pre + "att.r_k"].reshape(-1)).view(H, N).sum(dim=-1, keepdim=True) * v.view(H, N)).view(-1)
    x = x + p[pre + "att.output.weight"] @ (y * g)
    xx = ln(x, p[pre + "ln2.weight"], p[pre + "ln2.bias"])
    kx = xx + (st["ffn_x"] - xx) * P("ffn.x_k")
    st["ffn_x"] = xx
    x = x + p[pre + "ffn.value.weight"] @ (torch.relu(p[pre + "ffn.key.weight"] @ kx) ** 2)
    return x, v_first


def v6_layer(p, i, x, st, _):
    pre = f"blocks.{i}."
    P = lambda n: p[pre + n].reshape(-1) if p[pre + n].dim() == 3 and p[pre + n].shape[0] == 1 else p[pre + n]
    H, N = p[pre + "att.time_faaaa"].shape
    xx = ln(x, p[pre + "ln1.weight"], p[pre + "ln1.bias"])
    sx = st["att_x"] - xx
    st["att_x"] = xx
    xxx = xx + sx * P("att.time_maa_x")
    m = torch.tanh(xxx @ p[pre + "att.time_maa_w1"]).view(5, 1, -1)
    m = torch.bmm(m, p[pre + "att.time_maa_w2"]).view(5, -1)
    mw, mk, mv, mr, mg = m.unbind(dim=0)
    xw = xx + sx * (P("att.time_maa_w") + mw)
    xk = xx + sx * (P("att.time_maa_k") + mk)
    xv = xx + sx * (P("att.time_maa_v") + mv)
    xr = xx + sx * (P("att.time_maa_r") + mr)
    xg = xx + sx * (P("att.time_maa_g") + mg)
    r = p[pre + "att.receptance.weight"] @ xr
    k = p[pre + "att.key.weight"] @ xk
    v = p[pre + "att.value.weight"] @ xv
    g = F.silu(p[pre + "att.gate.weight"] @ xg)
    w = P("att.time_decay") + torch.tanh(xw @ p[pre + "att.time_decay_w1"]) @ p[pre + "att.time_decay_w2"]
    w = torch.exp(-torch.exp(w)).view(H, N, 1)
    u = p[pre + "att.time_faaaa"].view(H, N, 1)
    kv = k.view(H, N, 1) @ v.view(H, 1, N)
    S = st["S"]
    y = (r.view(H, 1, N) @ (u * kv + S)).view(-1)
    st["S"] = kv + w * S
    y = group_norm(y, p[pre + "att.ln_x.weight"], p[pre + "att.ln_x.bias"], H)
    x = x + p[pre + "att.output.weight"] @ (y * g)
    xx = ln(x, p[pre + "ln2.weight"], p[pre + "ln2.bias"])
    sx = st["ffn_x"] - xx
    st["ffn_x"] = xx
    xk = xx + sx * P("ffn.time_maa_k")
    xr = xx + sx * P("ffn.time_maa_r")
    kf = torch.relu(p[pre + "ffn.key.weight"] @ xk) ** 2
    x = x + torch.sigmoid(p[pre + "ffn.receptance.weight"] @ xr) * (p[pre + "ffn.value.weight"] @ kf)
    return x, None


def main():
    model, tokens_path, out = sys.argv[1:4]
    p = read_safetensors(model)
    tokens = [int(t) for t in open(tokens_path).read().split()]
    v7 = "blocks.0.att.r_k" in p
    layer = v7_layer if v7 else v6_layer
    L = 1 + max(int(n.split(".")[1]) for n in p if n.startswith("blocks."))
    C = p["emb.weight"].shape[1]
    H, N = p["blocks.0.att.r_k" if v7 else "blocks.0.att.time_faaaa"].shape
    st = [{"att_x": torch.zeros(C, dtype=torch.float64), "ffn_x": torch.zeros(C, dtype=torch.float64),
           "S": torch.zeros(H, N, N, dtype=torch.float64)} for _ in range(L)]
    loss = 0
    for t in range(len(tokens) - 1):
        x = ln(p["emb.weight"][tokens[t]], p["blocks.0.ln0.weight"], p["blocks.0.ln0.bias"])
        v_first = None
        for i in range(L):
            x, v_first = layer(p, i, x, st[i], v_first)
        logits = p["head.weight"] @ ln(x, p["ln_out.weight"], p["ln_out.bias"])
        loss = loss + F.cross_entropy(logits.view(1, -1), torch.tensor([tokens[t + 1]]))
    loss = loss / (len(tokens) - 1)
    loss.backward()
    grads = {"loss": np.array([loss.item()])}
    for name, t in p.items():
        grads[name] = (t.grad if t.grad is not None else torch.zeros_like(t)).detach().numpy()
    write_safetensors(out, grads)


if __name__ == "__main__":
    main()
