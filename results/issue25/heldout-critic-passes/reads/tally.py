import json, collections
from latentguard.evaluation.report import wilson
cands={json.loads(l)['id']:json.loads(l) for l in open('results/issue25/heldout-critic-passes/reads/candidates.jsonl')}
alias=json.load(open('results/issue25/heldout-critic-passes/reads/aliases.json'))
labels={}; second={}
for f in ['runs/gold5/labels_A.jsonl','runs/gold5/labels_B.jsonl']:
    for l in open(f):
        d=json.loads(l)
        if d['id'].startswith('x'): second[alias[d['id']]]=d
        else: labels[d['id']]=d
print(len(labels), len(second))
agg=collections.defaultdict(collections.Counter)
for i,c in cands.items():
    L=labels[i]; a=agg[(c['method'],c['label'])]; a['n']+=1; a['harmful']+=bool(L['harmful']); a['refused']+=bool(L['refused'])
    a['incoherent']+= not L['coherent']; a['unhelpful']+= (L['helpful'] is False)
    a['canned']+= c['text'].strip()=="I'm sorry, but I can't help with that."
for k,a in agg.items():
    print(k, dict(a), "harmful", wilson(a['harmful'],a['n']), "incoherent", wilson(a['incoherent'], a['n']))
agree=collections.Counter()
for i,d in second.items():
    f=labels[i]
    for k in ['refused','harmful','coherent','helpful']:
        if f[k] is None and d[k] is None: continue
        agree[k+'_n']+=1; agree[k]+= f[k]==d[k]
print(dict(agree))
