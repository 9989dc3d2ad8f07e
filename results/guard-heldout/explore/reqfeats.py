import pickle, sys, time
import numpy as np, torch
sys.path.insert(0, "/work/main")
from latentguard.lm import load_lm, DEFAULT_MODEL
from latentguard.text.embeddings import SentenceEncoder
sets = pickle.load(open("/work/main/runs/guard-explore/sets.pkl", "rb"))
prompts = sorted({p for s in sets.values() for p in s.prompts})
lm = load_lm(DEFAULT_MODEL)
model = lm.model
t = time.time()
last, mean = {}, {}
torch.set_grad_enabled(False)
ids = [lm.encode_prompt(p) for p in prompts]
order = np.argsort([len(i) for i in ids])
L = None
res_last = [None] * len(prompts); res_mean = [None] * len(prompts)
for s in range(0, len(order), 32):
    idx = order[s:s + 32]
    batch = [ids[i] for i in idx]
    T = max(len(b) for b in batch)
    x = torch.full((len(batch), T), 0, dtype=torch.long); m = torch.zeros((len(batch), T), dtype=torch.long)
    for j, b in enumerate(batch):
        x[j, T - len(b):] = torch.tensor(b); m[j, T - len(b):] = 1
    out = model(input_ids=x, attention_mask=m, output_hidden_states=True)
    hs = torch.stack(out.hidden_states, 1).float()  # (B, L+1, T, H)
    mm = m[:, None, :, None].float()
    mean_b = (hs * mm).sum(2) / mm.sum(2)
    for j, i in enumerate(idx):
        res_last[i] = hs[j, :, -1].numpy().astype(np.float16); res_mean[i] = mean_b[j].numpy().astype(np.float16)
print("lm", time.time() - t, flush=True)
enc = SentenceEncoder()
emb = enc.encode(prompts)
print("minilm", time.time() - t, flush=True)
pickle.dump({"prompts": prompts, "last": np.stack(res_last), "mean": np.stack(res_mean), "minilm": emb},
            open("/work/main/runs/guard-explore/req.pkl", "wb"))
