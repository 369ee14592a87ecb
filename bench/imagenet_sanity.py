import torch, numpy as np, sys
from PIL import Image
import importlib.resources as r
from inference.ml.networks import Classifier
from inference.ml.weights import load_imagenet_lite0
torch.set_num_threads(2)
m = Classifier("efficientnet_lite0", 1000); rep = load_imagenet_lite0(m, include_classifier=True); m.eval()
print(rep["tensors"])
imgs = []
for n in ["china.jpg", "flower.jpg"]:
    im = Image.open(str(r.files("sklearn.datasets").joinpath("images", n))).convert("RGB")
    w, h = im.size; s = min(w, h); im = im.crop(((w-s)//2, (h-s)//2, (w-s)//2+s, (h-s)//2+s)).resize((224, 224), Image.BICUBIC)
    imgs.append(torch.from_numpy(np.asarray(im)).permute(2, 0, 1).float() / 255)
x = torch.stack(imgs)
for name, mean, std in [("imagenet", (0.485,0.456,0.406),(0.229,0.224,0.225)), ("half", (0.5,)*3, (0.5,)*3)]:
  for eps in [1e-5, 1e-3]:
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d): mod.eps = eps
    xx = (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    with torch.no_grad(): p = m(xx).softmax(1)
    top = p.topk(3)
    print(name, eps, top.values.numpy().round(3).tolist(), top.indices.tolist(), "entropy", (-(p*p.clamp_min(1e-12).log()).sum(1)).numpy().round(2))
