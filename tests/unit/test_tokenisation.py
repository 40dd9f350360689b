"""One tokenisation rule (`generate.base.encode`) for generation, the RL policy, SFT and vLLM, checked with a
tokenizer that adds a BOS token as LLaMA-2's and Mistral's do, and with the builtin one, which adds none."""

from __future__ import annotations

import copy

import pytest
import torch

from refine_af.generate import SamplingParams
from refine_af.generate.base import adds_bos, encode, render
from refine_af.generate.hf import TransformersBackend

LLAMA2_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} "
                   "[/INST]{% else %} {{ m['content'] }} {{ eos_token }}{% endif %}{% endfor %}")


@pytest.fixture(scope="module")
def chat_tokenizer(bos_tokenizer):
    tok = copy.deepcopy(bos_tokenizer)
    tok.chat_template = LLAMA2_TEMPLATE  # writes <s> itself, as LLaMA-2's does
    return tok


def _model(tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    return LlamaForCausalLM(config).eval()


def test_encode_adds_the_tokenizers_bos_once(bos_tokenizer, chat_tokenizer, builtin_tokenizer):
    tok = bos_tokenizer
    bos = tok.bos_token_id
    assert adds_bos(tok) and not adds_bos(builtin_tokenizer)
    assert encode(tok, "Say hi .") == [bos, *tok("Say hi .", add_special_tokens=False)["input_ids"]]
    assert encode(tok, "<s> Say hi .") == encode(tok, "Say hi .")  # a template's own BOS is not doubled
    chat = render(chat_tokenizer, [{"role": "user", "content": "Say hi ."}])
    assert chat.startswith("<s>") and encode(chat_tokenizer, chat).count(bos) == 1
    assert encode(builtin_tokenizer, "Say hi.") == builtin_tokenizer("Say hi.", add_special_tokens=False)["input_ids"]


def test_the_backend_generates_from_encode(bos_tokenizer, chat_tokenizer):
    for tok, prompt in [(bos_tokenizer, "Say hi ."), (chat_tokenizer, [{"role": "user", "content": "Say hi ."}])]:
        backend = TransformersBackend(_model(tok), tok, batch_size=2)
        seen: list = []
        backend.model.register_forward_pre_hook(lambda m, a, kw, seen=seen: seen.append(kw["input_ids"]),
                                                with_kwargs=True)
        out = backend.generate([prompt, prompt], SamplingParams(max_new_tokens=2))
        ids = encode(tok, render(tok, prompt))
        assert out[0].prompt_ids == ids and ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
        first = seen[0] if seen[0].shape[1] > 1 else None  # the model saw the prefix with its one BOS first
        assert first is not None and first[0].tolist().count(tok.bos_token_id) == 1


@pytest.mark.parametrize("chat", [False, True])
def test_sft_trains_on_the_sequence_generation_sees(tmp_path, bos_tokenizer, chat_tokenizer, chat):
    """TRL's SFT tokenises a prompt itself: its ids must be the ones the backend generates from (else the model
    is fine-tuned on one sequence and evaluated on another)."""
    from refine_af.config import SFTConfig
    from refine_af.generate import as_user_turn
    from refine_af.instruction_format import instruction_prompt
    from refine_af.stages.sft import build_trainer

    tok = copy.deepcopy(chat_tokenizer if chat else bos_tokenizer)
    rows = [{"instruction": "Say hi .", "input": "", "output": "Hi there !"},
            {"instruction": "Say Yes .", "input": "a b", "output": "Yes"}]
    cfg = SFTConfig(batch_size=2, gradient_accumulation=1, epochs=1, max_length=64)
    trainer = build_trainer(_model(tok), tok, rows, cfg, seed=0, device="cpu", output_dir=str(tmp_path))
    for i, row in enumerate(rows):
        prompt = as_user_turn(tok, instruction_prompt(row["instruction"], row["input"]))
        ids = encode(tok, render(tok, prompt))
        trained = trainer.train_dataset[i]["input_ids"]
        assert trained[: len(ids)] == ids, (trained, ids)
        assert trained.count(tok.bos_token_id) == 1
