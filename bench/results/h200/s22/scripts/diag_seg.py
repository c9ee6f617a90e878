import sys, torch
from nf4lora import _cuda_ext
N = _cuda_ext._NODE
x, A, B = torch.zeros(2, 256), torch.zeros(4, 256), torch.zeros(64, 4)
cfg = [1, 0, 0, 0, 0, 0, 1, 0, 0, 16, 16, 16, 0, 0, 32, 64, 256, 4]
mode = sys.argv[1]
def call(c, **kw):
    try:
        N.qlora_apply(x, A, B, None, 1.0, c, 0.0, [], 0, 0, 0)
        print("returned", flush=True)
    except RuntimeError as e:
        print("raised:", str(e).splitlines()[0][:120], flush=True)
if mode in ("first", "both"):
    call(cfg)
if mode in ("second", "both"):
    call(cfg[:-1])
if mode == "cuda":
    x, A, B = x.cuda(), A.cuda(), B.cuda()
    call(cfg); call(cfg[:-1])
print("ok", mode, flush=True)
