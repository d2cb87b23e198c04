"""9-step probe of every adapter family on the embedded model.

Prints one JSON line per family: Δ norm at init, seconds per step, validation loss before/after,
‖Δ‖ after 9 steps (batch 4, 40 pairs), and the max |logit| difference between the merged weights
and the PEFT model. Usage::

    python benchmarks/probe_families.py out/sycophancy/smollm2-135m-instruct/data-<key>/pairs.jsonl
"""
import copy, sys, tempfile, time, math, json, torch
from peft import PeftModel
from weight_steering.core.models import load_model
from weight_steering.artifacts import read_jsonl
from weight_steering.core.train import train_adapter
from weight_steering.core.adapters import ADAPTER_FAMILIES, TrainConfig
torch.set_num_threads(2)
model, tok = load_model("smollm2-135m-instruct")
rows = read_jsonl(sys.argv[1])[:40]  # pairs.jsonl of a finished data stage
ids = tok(["I think the moon is made of cheese. Right?"], return_tensors="pt")
for fam in ADAPTER_FAMILIES:
    t = time.time()
    try:
        saved = tempfile.mkdtemp()
        delta, log = train_adapter(model, tok, rows, "positive", TrainConfig(family=fam, learning_rate=None), adapter_dir=saved)
        pm = PeftModel.from_pretrained(copy.deepcopy(model), saved)  # the probe compares against PEFT on a copy
        with torch.no_grad():
            exp = pm(**ids).logits
            params = dict(model.named_parameters()); backup = {k: params[k].data.clone() for k in delta}
            for k, d in delta.items(): params[k].data += d
            got = model(**ids).logits
            for k in delta: params[k].data.copy_(backup[k])
        n = math.sqrt(sum(float(d.pow(2).sum()) for d in delta.values()))
        r = dict(family=fam, n_tensors=len(delta), maxdiff=float((got-exp).abs().max()), init=log["norm_delta_at_init"],
                 val_before=log["validation_loss_before"], val_after=log["validation_loss_after"], norm=n,
                 trainable=sum(p.numel() for p in pm.parameters() if p.requires_grad),
                 sec_per_step=log["wall_seconds"]/log["steps"], wall=time.time()-t)
    except Exception as e:
        r = dict(family=fam, error=f"{type(e).__name__}: {e}"[:400])
    print(json.dumps(r), flush=True)
