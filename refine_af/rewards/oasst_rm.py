"""OpenAssistant's reward-model architecture (`model_type: gpt_neox_reward_model`), registered with transformers.

`OpenAssistant/oasst-rm-2.1-pythia-1.4b-epoch-2.5` is a GPT-NeoX trunk (weights under `gpt_neox.`) whose hidden
state at one pooled position goes through a single linear head `out_proj` (hidden -> 1): the reward's raw logit.
That layout is not a stock transformers class, so `AutoModelForSequenceClassification` cannot load it until this
module is imported (`refine_af.rewards.paper.SequenceClassifier` does).

Pooling (config `pooling`): "last" (the checkpoint's) takes the last token the attention mask marks as real;
"mean" averages the real tokens. OpenAssistant's own code finds the pooled position from the attention mask, not from
the config's pad token id (its pad id is not written into the texts' special tokens, and a text ends with the
tokenizer's EOS, which a pad-id rule would take for padding when pad and EOS coincide). Position ids also come from
the mask, so a left-padded text is scored exactly as the same text unpadded or right-padded.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, GPTNeoXConfig
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.models.gpt_neox.modeling_gpt_neox import GPTNeoXModel, GPTNeoXPreTrainedModel

MODEL_TYPE = "gpt_neox_reward_model"


@strict
class GPTNeoXRewardModelConfig(GPTNeoXConfig):
    model_type = MODEL_TYPE
    pooling: Literal["last", "mean"] | None = "last"  # None reads as "last", as OpenAssistant's config class does


class GPTNeoXRewardModel(GPTNeoXPreTrainedModel):
    """GPT-NeoX trunk + pooled linear head; `logits` is (batch, 1), the reward model's raw score."""

    config_class = GPTNeoXRewardModelConfig

    def __init__(self, config: GPTNeoXConfig):
        if not isinstance(config, GPTNeoXRewardModelConfig):  # a plain GPT-NeoX config: the checkpoint's default
            config = GPTNeoXRewardModelConfig.from_dict({**config.to_dict(), "model_type": MODEL_TYPE})
        super().__init__(config)
        self.gpt_neox = GPTNeoXModel(config)
        self.out_proj = nn.Linear(config.hidden_size, 1)
        self.post_init()

    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.LongTensor | None = None, inputs_embeds: torch.Tensor | None = None,
                **kwargs: Any) -> SequenceClassifierOutput:
        if attention_mask is not None and position_ids is None:  # left padding must not shift the positions
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        hidden = self.gpt_neox(input_ids, attention_mask=attention_mask, position_ids=position_ids,
                               inputs_embeds=inputs_embeds, use_cache=False, **kwargs).last_hidden_state
        if attention_mask is None:
            pooled = hidden.mean(1) if self.config.pooling == "mean" else hidden[:, -1]
        elif self.config.pooling == "mean":
            mask = attention_mask[..., None].to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        else:  # the last real token, wherever the padding sits
            last = torch.arange(hidden.shape[1], device=hidden.device) * attention_mask.ne(0)
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last.argmax(-1)]
        return SequenceClassifierOutput(logits=self.out_proj(pooled))


AutoConfig.register(MODEL_TYPE, GPTNeoXRewardModelConfig, exist_ok=True)
AutoModelForSequenceClassification.register(GPTNeoXRewardModelConfig, GPTNeoXRewardModel, exist_ok=True)
