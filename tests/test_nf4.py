"""The NF4 format: golden vectors from the spec, properties, bitsandbytes state dicts."""

import io
import json
import pickle

import pytest
import torch

from nf4lora import NF4Weight, dequantize_nf4, quantize_nf4
from nf4lora.nf4 import NF4_CODE, absmax_float, bits_per_parameter, dynamic_map, nf4_code

CODE = torch.tensor(NF4_CODE, dtype=torch.float32)


def _from_codes(idx, absmax):
    return CODE[torch.tensor(idx)] * absmax


# --- golden vectors, written by hand from the spec (DESIGN.md §2) -------------------------

def test_golden_packing_two_blocks():
    row0 = [15, 0, 7, 8, 1, 14, 2, 13, 3, 12, 4, 11, 5, 10, 6, 9] * 2
    row1 = list(range(16)) + list(range(15, -1, -1))
    w = torch.stack([_from_codes(row0, 2.0), _from_codes(row1, 0.5)])
    q = quantize_nf4(w, blocksize=32, double_quant=False)
    expect = [0xF0, 0x78, 0x1E, 0x2D, 0x3C, 0x4B, 0x5A, 0x69] * 2 + [
        0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF, 0xFE, 0xDC, 0xBA, 0x98, 0x76, 0x54, 0x32, 0x10]
    assert q.packed.tolist() == expect
    assert q.absmax.tolist() == [2.0, 0.5]
    assert torch.equal(dequantize_nf4(q), w)


def test_golden_ties_go_to_the_lower_code():
    mid_78 = torch.tensor(0.03979014977812767, dtype=torch.float32)   # between codes 7 and 8
    mid_67 = torch.tensor(-0.045525018125772476, dtype=torch.float32)  # between codes 6 and 7
    up = torch.nextafter(mid_78, torch.tensor(1.0))
    down = torch.nextafter(mid_67, torch.tensor(-1.0))
    w = torch.stack([torch.tensor(1.0), mid_78, up, mid_67, down, torch.tensor(0.0)] + [torch.tensor(0.0)] * 26)
    q = quantize_nf4(w.view(1, 32), blocksize=32, double_quant=False)
    assert q.packed[:3].tolist() == [0xF7, 0x86, 0x67]


def test_golden_odd_count_pads_low_nibble_with_zero_code():
    w = _from_codes([15, 0, 3, 12, 9] * 3, 1.0).view(3, 5)
    q = quantize_nf4(w, blocksize=32, double_quant=False)
    assert q.packed.tolist() == [0xF0, 0x3C, 0x9F, 0x03, 0xC9, 0xF0, 0x3C, 0x97]
    assert q.absmax.tolist() == [1.0]


def test_golden_partial_last_block_and_all_zero_block():
    w = torch.zeros(1, 96)
    w[0, 64] = -4.0  # block 2 (a full one); the middle block is all zero
    w[0, 65] = 2.0
    q = quantize_nf4(w, blocksize=32, double_quant=False)
    assert q.absmax.tolist() == [0.0, 0.0, 4.0]
    assert torch.equal(dequantize_nf4(q), torch.where(w == 2.0, CODE[12] * 4.0, w))
    q = quantize_nf4(torch.arange(1.0, 41.0).view(2, 20), blocksize=32, double_quant=False)
    assert q.absmax.tolist() == [32.0, 40.0]  # second block holds 8 elements


def test_dynamic_map_golden_values():
    m = dynamic_map()
    assert m.shape == (256,) and bool((m[1:] >= m[:-1]).all())
    assert m[0].item() == -0.992968738079071 and m[1].item() == -0.9789062738418579
    assert m[64].item() == -0.09859374910593033 and m[127].item() == 0.0
    assert m[128].item() == 5.500000384017767e-07 and m[129].item() == 3.250000190746505e-06
    assert m[200].item() == 0.23359374701976776 and m[254].item() == 0.992968738079071 and m[255].item() == 1.0


def test_nested_equal_absmax_reconstructs_exactly():
    w = torch.randn(4, 64)
    w[:, 0] = 3.0
    q = quantize_nf4(w.abs().clamp(max=3.0) * w.sign(), blocksize=64, double_quant=True)
    assert q.absmax.tolist() == [127] * 4 and q.nested_absmax.tolist() == [0.0]
    assert absmax_float(q).tolist() == [3.0] * 4


# --- properties on random data ----------------------------------------------------------

@pytest.mark.parametrize("blocksize", [32, 64, 128, 256, 1024, 4096])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_roundtrip_error_bounded_by_half_the_code_gap(blocksize, dtype):
    w = torch.randn(37, 300).to(dtype)  # n = 11100: partial last block for every blocksize
    q = quantize_nf4(w, blocksize=blocksize, double_quant=False)
    d = dequantize_nf4(q, torch.float32)
    n_blocks = -(-w.numel() // blocksize)
    flat = torch.nn.functional.pad(w.float().reshape(-1), (0, n_blocks * blocksize - w.numel()))
    absmax = flat.view(n_blocks, blocksize).abs().amax(1)
    assert torch.equal(q.absmax, absmax)
    max_gap = (CODE[1:] - CODE[:-1]).max()
    per_elem = absmax.repeat_interleave(blocksize)[: w.numel()].view(w.shape)
    assert bool(((d - w.float()).abs() <= per_elem * max_gap / 2 * (1 + 1e-6)).all())
    # NF4 on Gaussian data: relative RMS error is about 0.1; 0.2 would mean a broken code.
    rel = ((d - w.float()).norm() / w.float().norm()).item()
    assert 0.03 < rel < 0.15
    assert d.dtype == torch.float32 and dequantize_nf4(q).dtype == dtype


def test_nested_absmax_error_and_bits_per_parameter():
    w = torch.randn(512, 1024)
    q1 = quantize_nf4(w, 64, double_quant=False)
    q2 = quantize_nf4(w, 64, double_quant=True)
    assert torch.equal(q1.packed, q2.packed)
    rec = absmax_float(q2)
    centered_max = (q1.absmax - q1.absmax.mean()).view(-1, 256).abs().amax(1).repeat_interleave(256)
    gap = (dynamic_map()[1:] - dynamic_map()[:-1]).max()
    assert bool(((rec - q1.absmax).abs() <= centered_max * gap / 2 * (1 + 1e-5)).all())
    assert bits_per_parameter(q1) == pytest.approx(4.5)
    assert bits_per_parameter(q2) == pytest.approx(4 + 8 / 64 + 32 / (64 * 256))
    assert round(bits_per_parameter(q2), 3) == 4.127


def test_dequantize_matches_formula_elementwise():
    w = torch.randn(9, 77)
    q = quantize_nf4(w, 32, double_quant=True)
    codes = torch.stack([q.packed >> 4, q.packed & 15], 1).reshape(-1)[: w.numel()].long()
    am = absmax_float(q)
    expect = torch.stack([CODE[codes[i]] * am[i // 32] for i in range(w.numel())]).view(w.shape)
    assert torch.equal(dequantize_nf4(q), expect)


# --- state dicts, pickling, devices ------------------------------------------------------

@pytest.mark.parametrize("nested", [False, True])
def test_bnb_state_dict_roundtrip_and_keys(nested):
    w = torch.randn(24, 40, dtype=torch.bfloat16)
    q = quantize_nf4(w, 64, double_quant=nested)
    sd = q.to_bnb_state_dict("layer.weight")
    keys = {"layer.weight", "layer.weight.absmax", "layer.weight.quant_map", "layer.weight.quant_state.bitsandbytes__nf4"}
    if nested:
        keys |= {"layer.weight.nested_absmax", "layer.weight.nested_quant_map"}
    assert set(sd) == keys
    assert sd["layer.weight"].shape == (480, 1) and sd["layer.weight"].dtype == torch.uint8
    meta = bytes(sd["layer.weight.quant_state.bitsandbytes__nf4"].tolist()).decode()
    expect = '{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [24, 40]'
    if nested:
        expect += f', "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": {q.nested_offset!r}'
    assert meta == expect + "}"
    back = NF4Weight.from_bnb_state_dict(sd, "layer.weight")
    assert back.dtype == torch.bfloat16 and back.shape == (24, 40) and back.nested == nested
    assert torch.equal(dequantize_nf4(back), dequantize_nf4(q))


def test_bnb_state_dict_errors_name_the_key():
    sd = quantize_nf4(torch.randn(8, 64), 64).to_bnb_state_dict()
    bad = dict(sd, **{"weight.absmax": sd["weight.absmax"][:-1]})
    with pytest.raises(ValueError, match="absmax must have 8 elements"):
        NF4Weight.from_bnb_state_dict(bad)
    bad = dict(sd)
    del bad["weight.nested_absmax"]
    with pytest.raises(KeyError, match="weight.nested_absmax"):
        NF4Weight.from_bnb_state_dict(bad)
    meta = json.loads(bytes(sd["weight.quant_state.bitsandbytes__nf4"].tolist()))
    meta["shape"] = [8, 128]
    bad = dict(sd, **{"weight.quant_state.bitsandbytes__nf4": torch.tensor(list(json.dumps(meta).encode()), dtype=torch.uint8)})
    with pytest.raises(ValueError, match=r"packed must have 512 elements for shape \(8, 128\)"):
        NF4Weight.from_bnb_state_dict(bad)
    fp4 = {k.replace("nf4", "fp4"): v for k, v in sd.items()}
    with pytest.raises(ValueError, match="only NF4"):
        NF4Weight.from_bnb_state_dict(fp4)
    with pytest.raises(KeyError, match="not a bitsandbytes NF4 weight"):
        NF4Weight.from_bnb_state_dict({}, "weight")


def test_quant_storage_of_another_dtype_is_viewed_as_bytes():
    q = quantize_nf4(torch.randn(16, 64), 64)
    sd = q.to_bnb_state_dict()
    sd["weight"] = sd["weight"].view(-1).view(torch.bfloat16).view(-1, 1)  # bnb quant_storage=bf16
    assert torch.equal(NF4Weight.from_bnb_state_dict(sd).packed, q.packed)


def test_pickle_and_safetensors_roundtrip(tmp_path):
    from safetensors.torch import load_file, save_file

    q = quantize_nf4(torch.randn(10, 64), 32)
    back = pickle.loads(pickle.dumps(q))
    assert torch.equal(dequantize_nf4(back), dequantize_nf4(q))
    buf = io.BytesIO()
    torch.save(q, buf)
    buf.seek(0)
    assert torch.equal(dequantize_nf4(torch.load(buf, weights_only=False)), dequantize_nf4(q))
    save_file(q.to_bnb_state_dict(), str(tmp_path / "w.safetensors"))
    loaded = NF4Weight.from_bnb_state_dict(load_file(str(tmp_path / "w.safetensors")))
    assert torch.equal(dequantize_nf4(loaded), dequantize_nf4(q))
    assert q.nbytes == 320 + 20 + 64 + 4 + 1024 and q.to("cpu").shape == (10, 64)


def test_quantize_rejects_bad_input():
    with pytest.raises(ValueError, match="blocksize must be one of"):
        quantize_nf4(torch.randn(4, 64), blocksize=48)
    with pytest.raises(ValueError, match="w must be 2-D"):
        quantize_nf4(torch.randn(64))
    with pytest.raises(TypeError, match="w must be one of"):
        quantize_nf4(torch.ones(4, 64, dtype=torch.int32))
    with pytest.raises(ValueError, match="NaN or Inf"):
        quantize_nf4(torch.full((2, 32), float("nan")))
    q = quantize_nf4(torch.randn(4, 64))
    with pytest.raises(ValueError, match="packed must have 128 elements"):
        NF4Weight(q.packed[:-1], q.absmax, (4, 64), 64, torch.float32, None, q.nested_absmax,
                  q.nested_quant_map, q.nested_offset)
    with pytest.raises(TypeError, match="absmax must be torch.float32"):
        NF4Weight(q.packed, q.absmax.double(), (4, 64), 64)


def test_parity_with_bitsandbytes_cpu_when_importable():
    bnbf = pytest.importorskip("bitsandbytes.functional")
    # bitsandbytes' CPU dequantize is wrong when a block straddles two rows (DESIGN.md §4):
    # compare its quantizer (bytes, absmax) and use K a multiple of the blocksize for dequantize.
    for blocksize in (32, 64, 256):
        w = torch.randn(48, 512)
        packed, st = bnbf.quantize_4bit(w, blocksize=blocksize, quant_type="nf4", compress_statistics=False)
        q = quantize_nf4(w, blocksize, double_quant=False)
        assert torch.equal(packed.view(-1), q.packed) and torch.equal(st.absmax, q.absmax)
        assert torch.equal(bnbf.dequantize_4bit(packed, st), dequantize_nf4(q))
    assert torch.equal(bnbf.create_dynamic_map(signed=True), dynamic_map())
    assert torch.equal(bnbf.get_4bit_type("nf4", device="cpu"), nf4_code())
