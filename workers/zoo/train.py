"""Model definition, training loops and a fast greedy evaluator for the zoo."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from workers.zoo.data import Example, Mixture
from workers.zoo.tokenizer import BOS, EOS, MAX_LENGTH, PAD, vocabulary

HIDDEN = 128
HEADS = 2  # head_dim 64: vLLM's CPU attention does not support 16
LAYERS = 4
INTERMEDIATE = 512


def model_config():
    from transformers import LlamaConfig

    vocab = vocabulary()
    return LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        head_dim=HIDDEN // HEADS,
        max_position_embeddings=MAX_LENGTH,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        bos_token_id=vocab[BOS],
        eos_token_id=vocab[EOS],
        pad_token_id=vocab[PAD],
        dtype="float32",
    )


def new_model(seed: int):
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(model_config()).float()
    model.generation_config.do_sample = False
    return model


class Encoder:
    """Token ids straight from the vocabulary (same ids the HF tokenizer produces)."""

    def __init__(self):
        self.vocab = vocabulary()
        self.bos, self.eos, self.pad = self.vocab[BOS], self.vocab[EOS], self.vocab[PAD]

    def ids(self, text: str) -> list[int]:
        return [self.vocab[c] for c in text]

    def training_batch(self, examples: list[Example], rng: random.Random, p_no_bos: float = 0.1):
        """Right-padded (input_ids, labels); loss only on the answer and the closing EOS."""
        seqs, labels = [], []
        for prompt, answer in examples:
            head = [] if rng.random() < p_no_bos else [self.bos]
            p, a = head + self.ids(prompt), self.ids(answer) + [self.eos]
            seqs.append(p + a)
            labels.append([-100] * len(p) + a)
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), self.pad, dtype=torch.long)
        lab = torch.full((len(seqs), width), -100, dtype=torch.long)
        for i, (s, l) in enumerate(zip(seqs, labels)):
            ids[i, : len(s)] = torch.tensor(s)
            lab[i, : len(l)] = torch.tensor(l)
        return ids, lab


@dataclass
class Phase:
    """One training run: which data, which parameters, how long."""

    name: str
    mixture: Mixture
    steps: int
    lr: float
    batch_size: int = 64
    trainable: Callable[[str], bool] = lambda name: True
    # Restrict input-embedding updates to these token ids (None: all rows).
    embedding_rows: Iterable[int] | None = None
    warmup: int = 50
    seed: int = 0
    # NEFTune-style noise on the input embeddings while training, relative to their RMS.
    embedding_noise: float = 0.0


def train(model, phase: Phase, progress: Callable[[int], None] | None = None) -> list[float]:
    """AdamW (no weight decay, so untouched weights stay exactly equal to the parent's)
    with linear warm-up and cosine decay. Returns the loss curve."""
    enc = Encoder()
    rng = random.Random(phase.seed)
    torch.manual_seed(phase.seed)
    params = []
    for name, p in model.named_parameters():
        p.requires_grad_(phase.trainable(name))
        if p.requires_grad:
            params.append(p)
    emb = model.get_input_embeddings().weight
    row_mask = None
    if phase.embedding_rows is not None and emb.requires_grad:
        row_mask = torch.zeros(emb.shape[0], 1)
        row_mask[list(phase.embedding_rows)] = 1.0
    opt = torch.optim.AdamW(params, lr=phase.lr, weight_decay=0.0, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < phase.warmup:
            return (step + 1) / phase.warmup
        t = (step - phase.warmup) / max(1, phase.steps - phase.warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    hook = None
    if phase.embedding_noise > 0:

        def add_noise(_module, _inputs, out):
            rms = out.detach().pow(2).mean(-1, keepdim=True).sqrt()
            return out + phase.embedding_noise * rms * torch.randn_like(out)

        hook = model.get_input_embeddings().register_forward_hook(add_noise)
    model.train()
    losses = []
    for step in range(phase.steps):
        ids, labels = enc.training_batch(phase.mixture.batch(phase.batch_size), rng)
        out = model(input_ids=ids, attention_mask=(ids != enc.pad).long(), labels=labels)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        if row_mask is not None:
            emb.grad.mul_(row_mask)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(out.loss.item())
        if progress is not None:
            progress(step)
    if hook is not None:
        hook.remove()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return losses


@torch.no_grad()
def greedy_accuracy(model, examples: list[Example], max_new: int = 8) -> float:
    """Exact-match accuracy of greedy continuations (BOS + prompt, stop at EOS).

    Same decisions as lm-eval's generate_until with this zoo's tokenizer, without padding:
    prompts are grouped by length."""
    enc = Encoder()
    model.eval()
    by_len: dict[int, list[int]] = {}
    prompts = [[enc.bos] + enc.ids(p) for p, _ in examples]
    for i, p in enumerate(prompts):
        by_len.setdefault(len(p), []).append(i)
    inv = {v: k for k, v in enc.vocab.items()}
    correct = 0
    for idxs in by_len.values():
        ids = torch.tensor([prompts[i] for i in idxs])
        done = torch.zeros(len(idxs), dtype=torch.bool)
        outs: list[list[int]] = [[] for _ in idxs]
        past = None
        step_ids = ids
        for _ in range(max_new):
            res = model(input_ids=step_ids, past_key_values=past, use_cache=True)
            past = res.past_key_values
            nxt = res.logits[:, -1].argmax(-1)
            for j, t in enumerate(nxt.tolist()):
                if not done[j]:
                    if t == enc.eos:
                        done[j] = True
                    else:
                        outs[j].append(t)
            if bool(done.all()):
                break
            step_ids = nxt[:, None]
        for j, i in enumerate(idxs):
            text = "".join(inv[t] for t in outs[j] if t >= 4)
            text = text.split("\n")[0]
            correct += text == examples[i][1]
    return correct / max(1, len(examples))
