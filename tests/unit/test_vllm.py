"""The vLLM backend's decisions, tested without vLLM (engine arguments, adapter checks, requests, outputs), and the
real engine in `gpu` tests that run only where vLLM and a GPU are."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from refine_af.config import GenerationConfig, load_config
from refine_af.errors import RefineError
from refine_af.generate import SamplingParams
from refine_af.generate.base import encode
from refine_af.generate.factory import choose
from refine_af.generate.vllm_backend import check_adapter, engine_args, requests, to_completion


def test_engine_arguments_follow_the_config():
    gen = GenerationConfig(tensor_parallel_size=2, max_model_len=4096, enforce_eager=True, dtype="bfloat16",
                           gpu_memory_utilization=0.9, max_num_seqs=128)
    args = engine_args("/models/llama", gen)
    assert args == dict(model="/models/llama", tokenizer="/models/llama", dtype="bfloat16",
                        gpu_memory_utilization=0.9, tensor_parallel_size=2, max_num_seqs=128, enforce_eager=True,
                        enable_prefix_caching=True, max_model_len=4096)
    assert "max_model_len" not in engine_args("m", GenerationConfig())
    served = engine_args("m", GenerationConfig(), lora_rank=12)  # rounded up to a rank vLLM's kernels take
    assert (served["enable_lora"], served["max_loras"], served["max_lora_rank"]) == (True, 1, 16)


def _adapter(tmp_path, **cfg):
    base = {"peft_type": "LORA", "r": 8, "target_modules": ["q_proj", "v_proj"], "bias": "none",
            "base_model_name_or_path": "builtin"} | cfg
    (tmp_path / "adapter_config.json").write_text(json.dumps(base))
    return tmp_path


@pytest.mark.parametrize("cfg, says", [
    ({"r": 128}, "r: rank 128 is above generation.max_lora_rank (64)"),
    ({"target_modules": ["c_attn", "q_proj"]}, "not ['c_attn']"),
    ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
    ({"use_dora": True}, "DoRA"),
    ({"bias": "all"}, "bias"),
])
def test_an_adapter_vllm_cannot_serve_is_refused_before_gpu_work(tmp_path, cfg, says):
    with pytest.raises(RefineError, match="cannot serve") as err:
        check_adapter(_adapter(tmp_path, **cfg), GenerationConfig(lora="serve"), "builtin")
    assert says in str(err.value) and "generation.lora=merge" in str(err.value)
    check_adapter(tmp_path, GenerationConfig(lora="merge"), "builtin")  # merging takes any LoRA


def test_adapter_checks_name_the_file_and_field(tmp_path):
    assert check_adapter(_adapter(tmp_path), GenerationConfig(lora="serve"), "builtin")["r"] == 8
    with pytest.raises(RefineError, match=r"adapter_config.json: base_model_name_or_path: .*'hf:other/model'"):
        check_adapter(_adapter(tmp_path), GenerationConfig(), "hf:other/model")
    with pytest.raises(RefineError, match="peft_type"):
        check_adapter(_adapter(tmp_path, peft_type="IA3"), GenerationConfig(), "builtin")
    with pytest.raises(RefineError, match="not a readable LoRA adapter config"):
        check_adapter(tmp_path / "missing", GenerationConfig(), "builtin")


def test_requests_carry_the_one_token_rule_and_a_seed_per_item(bos_tokenizer):
    tok = bos_tokenizer
    params = SamplingParams(temperature=0.7, top_p=0.9, max_new_tokens=12, stop=("\n\n",), seed=3)
    prompts = ["Say hi .", "<s> Say hi ."]
    tokens, sampling = requests(tok, prompts, params)
    assert [t["prompt_token_ids"] for t in tokens] == [encode(tok, p) for p in prompts]
    assert all(t["prompt_token_ids"].count(tok.bos_token_id) == 1 for t in tokens)
    assert sampling[0] | {"seed": None} == dict(temperature=0.7, top_p=0.9, max_tokens=12, stop=["\n\n"], seed=None,
                                                n=1, skip_special_tokens=True)
    assert len({s["seed"] for s in sampling}) == 2  # each prompt its own stream
    # the seed follows the item, not its position in the call: a shard asking for one item gets the same request
    _, alone = requests(tok, prompts[1:], params, seeds=[sampling[1]["seed"]])
    assert alone == sampling[1:]
    _, greedy = requests(tok, prompts, SamplingParams())
    assert {s["seed"] for s in greedy} == {None} and greedy[0]["stop"] is None


def test_outputs_become_completions():
    def output(text, reason):  # the fields of vllm.RequestOutput that to_completion reads
        return SimpleNamespace(prompt_token_ids=[1, 5], outputs=[SimpleNamespace(text=text, finish_reason=reason,
                                                                                  token_ids=(7, 8))])

    params = SamplingParams(stop=("\nTask:",))
    done = to_completion(output("Input: x\nOutput: y", "stop"), params)
    assert (done.text, done.finish_reason, done.prompt_ids, done.token_ids) == ("Input: x\nOutput: y", "stop",
                                                                                [1, 5], [7, 8])
    assert to_completion(output("a\nTask: b", "stop"), params).text == "a"
    assert to_completion(output("cut", "length"), params).finish_reason == "length"


@pytest.mark.parametrize("kind, device, installed, chosen, why", [
    ("auto", "cuda", True, "vllm", "vllm is installed and cuda is present"),
    ("auto", "cuda", False, "transformers", "vllm is not installed"),
    ("auto", "cpu", True, "transformers", "no GPU"),
    ("vllm", "cpu", False, "vllm", "generation.backend=vllm"),
    ("transformers", "cuda", True, "transformers", "generation.backend=transformers"),
])
def test_auto_takes_vllm_only_with_a_gpu_and_says_why(kind, device, installed, chosen, why):
    got, reason = choose(kind, device, installed)
    assert got == chosen and why in reason


def test_the_backend_choice_is_logged(caplog, tiny_model_dir):
    import logging

    from refine_af.generate import make_backend

    with caplog.at_level(logging.INFO, logger="refine_af.generate.factory"):
        make_backend(load_config(None, [f"model={tiny_model_dir}", "generation.device=cpu"]))
    assert "generation backend: transformers (no GPU (device cpu))" in caplog.text


def test_tensor_parallel_needs_as_many_gpus_in_the_generate_pods():
    with pytest.raises(RefineError, match="generation.tensor_parallel_size"):
        load_config(None, ["generation.tensor_parallel_size=2"])
    load_config(None, ["generation.tensor_parallel_size=2", "cluster.roles.generate.gpus=2"])


# -- the real engine: only where vLLM and a GPU are -------------------------------------------------------------------

gpu = pytest.mark.gpu


def _vllm_or_skip():
    pytest.importorskip("vllm", reason="vLLM is installed only on GPU machines (the gpu extra)")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no GPU")


@gpu
def test_vllm_outputs_do_not_depend_on_batch_mates(tiny_model_dir):
    _vllm_or_skip()
    from refine_af.generate.vllm_backend import VLLMBackend

    backend = VLLMBackend(str(tiny_model_dir), GenerationConfig(gpu_memory_utilization=0.3, enforce_eager=True))
    params = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=12, seed=5)
    prompts = ["Hello there", "A much longer prompt about the weather", "1. One\n2."]
    both = backend.generate(prompts, params, seeds=[1, 2, 3])
    alone = backend.generate(prompts[1:2], params, seeds=[2])
    assert both[1].token_ids == alone[0].token_ids
    assert both[1].prompt_ids == encode(backend.tokenizer, prompts[1])


@pytest.mark.slow
def test_a_merged_adapter_answers_as_the_adapter_does(tmp_path, tiny_model_dir):
    """generation.lora=merge: the weights vLLM is given are the base + LoRA, computed once per adapter."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from refine_af.models import load_causal_lm, merge_adapter, save_adapter

    model, tok = load_causal_lm(str(tiny_model_dir), device="cpu")
    torch.manual_seed(1)
    peft = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    save_adapter(peft, tmp_path / "adapter", str(tiny_model_dir))
    merged = merge_adapter(str(tiny_model_dir), tmp_path / "adapter", cache_dir=str(tmp_path / "cache"), device="cpu")
    ids = torch.tensor([tok("Name a colour.")["input_ids"]])
    with torch.no_grad():
        want = peft(input_ids=ids).logits
        got = AutoModelForCausalLM.from_pretrained(merged).eval()(input_ids=ids).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()(input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-5) and not torch.allclose(got, base, atol=1e-3)
    stamp = (merged / "config.json").stat().st_mtime_ns
    assert merge_adapter(str(tiny_model_dir), tmp_path / "adapter", cache_dir=str(tmp_path / "cache")) == merged
    assert (merged / "config.json").stat().st_mtime_ns == stamp  # cached, not merged again
