"""OpenAssistant's reward-model layout (gpt_neox_reward_model): a tiny random checkpoint written the way the hub's
is, loaded and scored through `SequenceClassifier`."""

from __future__ import annotations

import json
import math

import pytest
import torch

from refine_af.rewards import SequenceClassifier

SPECIAL = ["<|endoftext|>", "<|padding|>", "<|prompter|>", "<|assistant|>"]
WORDS = ["Say", "hi", "Hi", "there", "!", ".", "Count", "to", "three", "1", "2", "3", "quickly", "Name", "a", "colour",
         "Blue", "is", "nice"]


def _tokenizer():
    """A word-level stand-in for the Pythia tokenizer: no BOS, EOS <|endoftext|>, pad <|padding|>, OA's turn marks."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", *SPECIAL, *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", pad_token="<|padding|>",
                                   unk_token="<unk>", additional_special_tokens=SPECIAL[2:])


def write_checkpoint(path, pooling: str = "last", weights: str = "model.safetensors"):
    """A checkpoint in the hub's layout, built from stock parts (not from refine_af.rewards.oasst_rm): config model_type
    gpt_neox_reward_model with `pooling`, trunk weights under `gpt_neox.`, the head as `out_proj.{weight,bias}`."""
    from transformers import GPTNeoXConfig, GPTNeoXModel

    tok = _tokenizer()
    config = GPTNeoXConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=32, max_position_embeddings=64, rotary_pct=0.5,
                           bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
                           pad_token_id=tok.pad_token_id, initializer_range=0.5)
    torch.manual_seed(0)
    trunk = GPTNeoXModel(config)
    state = {f"gpt_neox.{k}": v.contiguous() for k, v in trunk.state_dict().items()}
    state["out_proj.weight"], state["out_proj.bias"] = torch.randn(1, 16), torch.randn(1)
    path.mkdir(parents=True, exist_ok=True)
    if weights.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(state, path / weights, metadata={"format": "pt"})
    else:
        torch.save(state, path / weights)
    data = {**config.to_dict(), "model_type": "gpt_neox_reward_model", "architectures": ["GPTNeoXRewardModel"],
            "pooling": pooling}
    (path / "config.json").write_text(json.dumps(data))
    tok.save_pretrained(path)
    return state


INSTR, INPUTS, OUTPUTS = ["Say hi .", "Count to three .", "Name a colour ."], ["", "quickly", ""], [
    "Hi there !", "1 2 3", "Blue is nice ."]


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_loads_the_hub_layout_through_sequence_classifier(tmp_path, weights):
    state = write_checkpoint(tmp_path / "rm", weights=weights)
    scorer = SequenceClassifier(str(tmp_path / "rm"), device="cpu", center=0.0, scale=1.0).load()
    model = scorer.model
    assert type(model).__name__ == "GPTNeoXRewardModel" and model.config.pooling == "last"
    loaded = model.state_dict()
    for name in ("out_proj.weight", "out_proj.bias", "gpt_neox.embed_in.weight",
                 "gpt_neox.layers.1.attention.query_key_value.weight"):
        assert torch.equal(loaded[name], state[name]), name
    texts = scorer.texts(INSTR[:1], INPUTS[:1], OUTPUTS[:1])
    assert texts == ["<|prompter|>Say hi .<|endoftext|><|assistant|>Hi there !<|endoftext|>"]

    # the score by hand: the trunk's hidden state at the last token (the closing EOS) through out_proj
    ids = torch.tensor([scorer.tokenizer(texts[0], add_special_tokens=False)["input_ids"]])
    assert ids[0, -1].item() == scorer.tokenizer.eos_token_id
    with torch.no_grad():
        hidden = model.gpt_neox(input_ids=ids).last_hidden_state[0, -1]
        logit = (hidden @ state["out_proj.weight"][0] + state["out_proj.bias"][0]).item()
    assert scorer.raw(INSTR[:1], INPUTS[:1], OUTPUTS[:1])[0] == pytest.approx(logit, abs=1e-5)
    assert scorer(INSTR[:1], INPUTS[:1], OUTPUTS[:1])[0] == pytest.approx(1 / (1 + math.exp(-logit)), abs=1e-6)


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_score_ignores_padding_side_and_batch_mates(tmp_path, pooling):
    write_checkpoint(tmp_path / "rm", pooling=pooling)
    scorer = SequenceClassifier(str(tmp_path / "rm"), device="cpu", batch_size=8).load()
    alone = [scorer.raw([i], [x], [y])[0] for i, x, y in zip(INSTR, INPUTS, OUTPUTS, strict=True)]
    together = scorer.raw(INSTR, INPUTS, OUTPUTS)  # right-padded to the longest text
    assert together == pytest.approx(alone, abs=1e-5)
    assert len(set(alone)) == 3  # the texts do score differently

    # the model itself, whichever side the padding is on (the position of the pad token id plays no part)
    model, tok = scorer.model, scorer.tokenizer
    seqs = [tok(t, add_special_tokens=False)["input_ids"] for t in scorer.texts(INSTR, INPUTS, OUTPUTS)]
    width, pad = max(map(len, seqs)), tok.pad_token_id
    for side in ("left", "right"):
        ids = [([pad] * (width - len(s)) + s) if side == "left" else (s + [pad] * (width - len(s))) for s in seqs]
        mask = [[int(i >= width - len(s)) if side == "left" else int(i < len(s)) for i in range(width)]
                for s in seqs]
        with torch.no_grad():
            got = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits[:, 0].tolist()
        assert got == pytest.approx(alone, abs=1e-5), side


def test_pooling_follows_the_attention_mask_not_the_pad_id(tmp_path):
    """A text may end in the tokenizer's EOS even where the config's pad id equals it: the mask decides."""
    from transformers import AutoModelForSequenceClassification

    import refine_af.rewards.oasst_rm  # noqa: F401

    write_checkpoint(tmp_path / "rm")
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm").eval()
    model.config.pad_token_id = 1  # = <|endoftext|>, the EOS every OpenAssistant text ends with
    ids = torch.tensor([[5, 6, 1], [5, 6, 7]])
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, 0]
        cut = model(input_ids=ids[:, :2], attention_mask=torch.ones(2, 2, dtype=torch.long)).logits[:, 0]
    assert full[0] != pytest.approx(cut[0].item())  # the EOS position was pooled, not the token before it


def test_plain_gpt_neox_config_reads_as_last_pooling():
    from transformers import GPTNeoXConfig

    from refine_af.rewards.oasst_rm import GPTNeoXRewardModel

    model = GPTNeoXRewardModel(GPTNeoXConfig(vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                             intermediate_size=16))
    assert model.config.model_type == "gpt_neox_reward_model" and model.config.pooling == "last"
    assert model.out_proj.out_features == 1
