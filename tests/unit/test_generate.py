import pytest

from refine_af.generate import SamplingParams, truncate_at_stop
from refine_af.generate.base import render
from refine_af.generate.hf import TransformersBackend
from refine_af.models import load_causal_lm


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    model, tok = load_causal_lm(str(tiny_model_dir), device="cpu")
    return TransformersBackend(model, tok, batch_size=3)


PROMPTS = ["Hello there", "A much longer prompt that needs left padding in a batch", "1. One\n2."]


def test_sampling_is_deterministic_under_a_seed(tiny):
    params = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=12, seed=7)
    a, b = tiny.generate(PROMPTS, params), tiny.generate(PROMPTS, params)
    assert [c.text for c in a] == [c.text for c in b]
    c = tiny.generate(PROMPTS, SamplingParams(temperature=1.0, max_new_tokens=12, seed=8))
    assert [x.token_ids for x in c] != [x.token_ids for x in a]


def test_batched_greedy_equals_one_by_one(tiny):
    params = SamplingParams(max_new_tokens=10)
    batched = tiny.generate(PROMPTS, params)
    single = [tiny.generate([p], params)[0] for p in PROMPTS]
    assert [c.token_ids for c in batched] == [c.token_ids for c in single]
    assert all(c.finish_reason in ("stop", "length") for c in batched)
    assert batched[0].prompt_ids == tiny.tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"]


def test_max_new_tokens_and_finish_reason(tiny):
    out = tiny.generate(PROMPTS, SamplingParams(max_new_tokens=5))
    assert all(len(c.token_ids) <= 5 for c in out)
    assert any(c.finish_reason == "length" for c in out)


def test_stop_strings_cut_the_text():
    assert truncate_at_stop("a\nb\n\nc", ["\n\n"]) == ("a\nb", True)
    assert truncate_at_stop("abc", ["x", "c"]) == ("ab", True)
    assert truncate_at_stop("abc", []) == ("abc", False)


def test_stop_strings_in_generation(tiny):
    free = tiny.generate(PROMPTS, SamplingParams(max_new_tokens=16))
    stop = free[1].text[3:5]  # a string that greedy decoding is known to produce
    cut = tiny.generate(PROMPTS, SamplingParams(max_new_tokens=16, stop=(stop,)))
    assert stop not in cut[1].text and free[1].text.startswith(cut[1].text)


def test_chat_prompts_use_the_template(builtin_tokenizer):
    tok = builtin_tokenizer
    text = render(tok, [{"role": "user", "content": "Hi"}])
    assert text.endswith("<|im_start|>assistant\n") and "Hi" in text
    prefilled = render(tok, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Input:"}])
    assert prefilled.endswith("Input:")
    assert render(tok, "raw text") == "raw text"


def test_row_sampling_draws_from_the_nucleus_distribution():
    import torch

    from refine_af.generate.hf import sample_rows

    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]])
    probs = logits.softmax(-1)[0]
    # top_p 0.8: the three most likely tokens (0.61, 0.22, 0.14) are the smallest set reaching it
    nucleus = probs[:3] / probs[:3].sum()
    n = 6000
    gens = [torch.Generator().manual_seed(s) for s in range(n)]
    drawn = sample_rows(logits.expand(n, -1), gens, temperature=1.0, top_p=0.8)
    freq = torch.bincount(drawn, minlength=6).float() / n
    assert freq[3:].sum() == 0
    assert torch.allclose(freq[:3], nucleus, atol=0.02), (freq, nucleus)
    hot = torch.bincount(sample_rows(logits.expand(n, -1), gens, temperature=2.0, top_p=1.0), minlength=6) / n
    assert torch.allclose(hot, (logits / 2).softmax(-1)[0], atol=0.02)  # temperature flattens, all tokens in play


def test_rows_joined_mid_decoding_give_the_logits_they_give_alone(tiny):
    """Continuous batching: rows of different widths share one cache (left-padded), and leave it, without their
    next-token logits changing."""
    import torch

    from refine_af.generate.base import encode

    encoded = [encode(tiny.tokenizer, p) for p in PROMPTS]
    with torch.inference_mode():
        def alone(i, steps):
            rows = tiny._prefill([i], encoded)
            for t in steps:
                tiny._step(rows, torch.tensor([t]))
            return rows.logits[0]

        short = tiny._prefill([0], encoded)
        tiny._step(short, torch.tensor([5]))  # one row already decoding ...
        both = short.join(tiny._prefill([1], encoded))  # ... joined by a longer prompt: the first row is padded
        assert torch.allclose(both.logits[0], alone(0, [5]), atol=1e-5)
        assert torch.allclose(both.logits[1], alone(1, []), atol=1e-5)
        tiny._step(both, torch.tensor([7, 9]))
        assert torch.allclose(both.logits[0], alone(0, [5, 7]), atol=1e-5)
        assert torch.allclose(both.logits[1], alone(1, [9]), atol=1e-5)
        left = both.keep([0])  # the long row ends: its padding-only columns are cut from the cache
        assert left.mask.shape[1] == len(encoded[0]) + 2 and left.cache.get_seq_length() == left.mask.shape[1]
        tiny._step(left, torch.tensor([3]))
        assert torch.allclose(left.logits[0], alone(0, [5, 7, 3]), atol=1e-5)


def test_nucleus_from_candidates_equals_the_full_sort(monkeypatch):
    import torch

    from refine_af.generate import hf

    torch.manual_seed(0)
    logits = torch.cat([torch.randn(3, 2000) * 4, torch.randn(1, 2000) * 0.01])  # peaked rows and one flat row
    draw = lambda: hf.sample_rows(logits, [torch.Generator().manual_seed(s) for s in range(4)], 1.0, 0.9)  # noqa: E731
    fast = draw()
    monkeypatch.setattr(hf, "NUCLEUS_CANDIDATES", 2000)  # every token a candidate: the full sort's answer
    assert torch.equal(fast, draw())
    monkeypatch.setattr(hf, "NUCLEUS_CANDIDATES", 8)  # the flat row's nucleus reaches past 8: full sort again
    assert torch.equal(fast, draw())
