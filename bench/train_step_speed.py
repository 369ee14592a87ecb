"""Training-step speed on this CPU: augmentation placement and malloc settings.

    python bench/train_step_speed.py MODE SIZE [FROZEN_BLOCKS]
MODE letters: p = augment the next batch in a helper thread (as fit.fit does), s = augment in
the step; m = keep_freed_memory() (glibc keeps freed blocks); t = the helper thread uses one
intra-op thread (as fit.fit does); b = bfloat16 autocast. Prints training images/s of EfficientNet-Lite0, batch 32;
FROZEN_BLOCKS (default: the fine model's, TrainConfig.freeze_blocks) is freeze_first_blocks's n (-1: nothing frozen).
Measured at 192 px on a 2-core CPU: p 21.3, pm 29.3, pmt 33.9, sm 35.0 img/s.
bfloat16 autocast does not pay off for training: at 160 px pmt 48.4 vs pmtb 29.6 img/s (AMD EPYC with
AVX512-BF16) and pmt 56.9 vs pmtb 29.3 img/s (Intel Xeon with AMX), so training stays float32.
"""

import sys
import time
from concurrent.futures import ThreadPoolExecutor

import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
mode = sys.argv[1]
from inference.ml.data import AugmentConfig, Augmenter
from inference.ml.networks import Classifier, freeze_first_blocks
from inference.ml.train import TrainConfig, keep_freed_memory

if "m" in mode:
    keep_freed_memory()
size = int(sys.argv[2])
bs = 32
torch.set_num_threads(2)
init = (lambda: torch.set_num_threads(1)) if "t" in mode else None
pool = ThreadPoolExecutor(1, initializer=init)
m = Classifier("efficientnet_lite0", 7).to(memory_format=torch.channels_last)
freeze_first_blocks(m, int(sys.argv[3]) if len(sys.argv) > 3 else TrainConfig.freeze_blocks)
opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3)
a = Augmenter(AugmentConfig(), [0.5] * 3, [0.25] * 3)
X = torch.randint(0, 255, (32, 3, size, size), dtype=torch.uint8)
y = torch.randint(0, 7, (bs,))


def mk():
    return a(X).contiguous(memory_format=torch.channels_last)


m.train()
fut = pool.submit(mk) if "s" not in mode else None
for i in range(13):
    if i == 3:
        t = time.time()
    if "s" in mode:
        x = mk()
    else:
        x = fut.result()
        fut = pool.submit(mk)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled="b" in mode):
        out = m(x)
    loss = torch.nn.functional.cross_entropy(out.float(), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
print(mode, size, "img/s", 10 * bs / (time.time() - t), "main threads", torch.get_num_threads())
