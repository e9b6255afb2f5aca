"""C2CForCausalLM: fusion semantics, equivalences, generation, training behaviour, errors."""

from __future__ import annotations

import pytest
import torch
from conftest import FUSER_KWARGS, SHARERS, set_gates
from tiny_models import VOCAB, build, receiver_config
from transformers import DynamicCache, Gemma3TextConfig

from c2c_hf import C2CCache, C2CForCausalLM
from c2c_hf.data import left_pad
from c2c_hf.fuser import C2CFuser, C2CFuserBranch

TOL = 1e-5


def prompts(lengths=(5, 9, 12), seed=0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(3, VOCAB, (n,), generator=generator) for n in lengths]


@pytest.mark.parametrize("sharer_name", SHARERS)
def test_closed_gates_equal_receiver_open_gates_differ(make_c2c, receiver, sharer_name):
    model = make_c2c(sharer_name)
    ids = torch.stack(prompts((10, 10)))
    with torch.no_grad():
        alone = receiver(ids).logits
        fused = model(ids).logits
        assert (fused[:, -1] - alone[:, -1]).abs().max() > 1e-2  # gates open: the sharer changes the answer
        set_gates(model, -1.0)
        closed = model(ids).logits
    torch.testing.assert_close(closed, alone, atol=TOL, rtol=0)
    greedy_alone = receiver.generate(ids, max_new_tokens=6, do_sample=False)
    greedy_closed = model.generate(ids, max_new_tokens=6, do_sample=False)
    assert torch.equal(greedy_alone, greedy_closed)


def test_inference_fusion_reads_the_gates_in_one_transfer(make_c2c, monkeypatch):
    """The fuser reads all hard gates at once (`open_gates().tolist()`): no per-layer `bool(tensor)` or `.item()`
    host sync, and the same fused cache as reading each gate in its branch."""
    model = make_c2c("qwen2")
    with torch.no_grad():
        model.fuser.layers[0].key.gate_logit.fill_(-1.0)  # one closed gate among open ones
    ids = torch.stack(prompts((10, 10)))
    with torch.no_grad():  # reference: each layer fused alone, each branch reading its own gate
        own = model.receiver(ids[:, :-1], use_cache=True).cache
        shared = model.sharer_prefill(ids[:, :-1], None)
        expected = []
        for t, layer in enumerate(own.layers):
            sharer_layer = shared.layers[model.fuser.layer_map[t]]
            expected.append(
                model.fuser.layers[t](sharer_layer.keys, sharer_layer.values, layer.keys, layer.values, 1.0)
            )
    reads = []
    original_forward = C2CFuser.forward

    def counting_forward(fuser: C2CFuser, receiver_kv, sharer_kv):
        with monkeypatch.context() as patch:
            for name in ("__bool__", "item"):
                original = getattr(torch.Tensor, name)
                patch.setattr(torch.Tensor, name, lambda t, _o=original, _n=name: reads.append(_n) or _o(t))
            return original_forward(fuser, receiver_kv, sharer_kv)

    monkeypatch.setattr(C2CFuser, "forward", counting_forward)
    with torch.no_grad():
        fused = model(ids, use_cache=True).cache
    assert reads == []
    torch.testing.assert_close(fused.layers[0].keys[..., :-1, :], own.layers[0].keys, atol=0, rtol=0)  # closed
    for layer, (keys, values) in zip(fused.layers, expected):
        torch.testing.assert_close(layer.keys[..., :-1, :], keys, atol=0, rtol=0)  # the last prompt token is not fused
        torch.testing.assert_close(layer.values[..., :-1, :], values, atol=0, rtol=0)


def test_prompt_tokens_never_attend_to_fused_kv(make_c2c, receiver):
    """Prefix logits are the receiver's own; only positions after the fused prefix see the sharer."""
    model = make_c2c("llama")
    ids = torch.stack(prompts((12, 12)))
    with torch.no_grad():
        alone = receiver(ids).logits
        fused = model(ids, fuse_length=7).logits
    torch.testing.assert_close(fused[:, :7], alone[:, :7], atol=TOL, rtol=0)
    assert (fused[:, 7:] - alone[:, 7:]).abs().amax(dim=-1).min() > 1e-3


@pytest.mark.parametrize("fusion", ["gated", "weighted", "projection"])
def test_fusion_matches_an_independent_reference(make_c2c, receiver, sharers, fusion):
    """Last-token logits equal a by-hand run of the method: both prefills, per-layer fusion, last token."""
    model = make_c2c("gemma3", fusion=fusion)
    ids = torch.stack(prompts((11, 11)))
    with torch.no_grad():
        sharer_cache = DynamicCache()
        sharers["gemma3"].model(ids[:, :-1], cache=sharer_cache, use_cache=True)
        receiver_cache = DynamicCache()
        receiver.model(ids[:, :-1], cache=receiver_cache, use_cache=True)
        layer_map = [1, 2, 3, 4]  # terminal: receiver 4 layers <- sharer 5 layers
        fused_layers = []
        for t, layer in enumerate(receiver_cache.layers):
            k_s, v_s = sharer_cache.layers[layer_map[t]].keys, sharer_cache.layers[layer_map[t]].values
            branch_k, branch_v = model.fuser.layers[t].key, model.fuser.layers[t].value
            fused_layers.append(
                (reference_branch(branch_k, fusion, k_s, layer.keys), reference_branch(branch_v, fusion, v_s, layer.values))
            )
        reference = receiver(ids[:, -1:], cache=DynamicCache(ddp_cache_data=fused_layers)).logits[:, -1]
        logits = model(ids).logits[:, -1]
    torch.testing.assert_close(logits, reference, atol=TOL, rtol=0)


def reference_branch(branch: C2CFuserBranch, fusion: str, sharer_x: torch.Tensor, receiver_x: torch.Tensor) -> torch.Tensor:
    """The method doc's formula, written out: K_r + g * sigmoid(weight head) * projection([K_s, K_r]); without the
    gate for fusion "weighted"; projection(K_s) alone for fusion "projection"."""
    b, h_r, n, d_r = receiver_x.shape
    x = sharer_x.permute(0, 2, 1, 3).reshape(b, n, -1)
    if fusion != "projection":
        x = torch.cat([x, receiver_x.permute(0, 2, 1, 3).reshape(b, n, -1)], -1)

    def block(module, h):
        return h + module.down(torch.nn.functional.gelu(module.up(module.norm(h))))

    hidden = block(branch.shared_block, branch.in_proj(x))
    projection = hidden
    for module in branch.projection_blocks:
        projection = block(module, projection)
    projection = branch.out_proj(projection).reshape(b, n, h_r, d_r).permute(0, 2, 1, 3)
    if fusion == "projection":
        return projection
    weight = torch.sigmoid(branch.weight_head(block(branch.weight_block, hidden))).permute(0, 2, 1)[..., None]
    gate = float(branch.gate_logit > 0) if fusion == "gated" else 1.0
    return receiver_x + gate * weight * projection


def test_fusion_ablations_drop_their_parts(make_c2c):
    """"weighted" has no gate (always open, logit +inf), "projection" also no receiver input and no weight."""
    gated, weighted, projection = (make_c2c("qwen2", fusion=f) for f in ("gated", "weighted", "projection"))
    names = {f: {n.split("layers.0.key.")[1] for n, _ in m.fuser.named_parameters() if n.startswith("layers.0.key.")}
             for f, m in (("gated", gated), ("weighted", weighted), ("projection", projection))}  # fmt: skip
    assert names["gated"] - names["weighted"] == {"gate_logit"}
    assert {n.split(".")[0] for n in names["weighted"] - names["projection"]} == {"weight_block", "weight_head"}
    receiver_width = gated.config.receiver_kv_shape[1] * gated.config.receiver_kv_shape[2]
    branch = projection.fuser.layers[0].key
    assert branch.in_proj.in_features == gated.fuser.layers[0].key.in_proj.in_features - receiver_width
    for model in (weighted, projection):
        assert torch.equal(model.fuser.gate_logits(), torch.full((len(model.fuser.layers), 2), float("inf")))
        assert bool(model.fuser.open_gates().all())
    # projection replaces the receiver's KV: the fused branch output ignores what the receiver had
    _, sharer_heads, sharer_dim = gated.config.sharer_kv_shape
    _, receiver_heads, receiver_dim = gated.config.receiver_kv_shape
    sharer_x, receiver_x = torch.randn(1, sharer_heads, 5, sharer_dim), torch.randn(1, receiver_heads, 5, receiver_dim)
    with torch.no_grad():
        torch.testing.assert_close(branch(sharer_x, receiver_x, 1.0), branch(sharer_x, receiver_x + 1.0, 1.0))
        assert not torch.allclose(weighted.fuser.layers[0].key(sharer_x, receiver_x, 1.0),
                                  weighted.fuser.layers[0].key(sharer_x, receiver_x + 1.0, 1.0))  # fmt: skip


@pytest.mark.parametrize("sharer_name", SHARERS)
def test_left_padded_batch_equals_each_prompt_alone(make_c2c, sharer_name):
    model = make_c2c(sharer_name)
    rows = prompts((5, 9, 12), seed=1)
    ids, mask = left_pad(rows, 0)
    with torch.no_grad():
        batched = model(ids, attention_mask=mask).logits
        batched_gen = model.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=False)
        for row, prompt in enumerate(rows):
            alone = model(prompt[None]).logits
            n = len(prompt)
            torch.testing.assert_close(batched[row, -n:], alone[0], atol=TOL, rtol=0)
            alone_gen = model.generate(prompt[None], max_new_tokens=5, do_sample=False)
            assert torch.equal(batched_gen[row, -5:], alone_gen[0, -5:])


def test_generate_greedy_equals_hand_written_decode_loop(make_c2c):
    model = make_c2c("llama")
    ids = torch.stack(prompts((8, 8), seed=2))
    generated = model.generate(ids, max_new_tokens=7, do_sample=False)
    with torch.no_grad():
        out = model(ids)
        cache, tokens = out.cache, [out.logits[:, -1].argmax(-1)]
        assert isinstance(cache, C2CCache) and cache.is_fused
        for _ in range(6):
            out = model(tokens[-1][:, None], cache=cache)
            tokens.append(out.logits[:, -1].argmax(-1))
    assert torch.equal(generated[:, 8:], torch.stack(tokens, dim=1))


@pytest.fixture
def sharer_calls(make_c2c):
    """A C2C model whose sharer backbone counts its forward calls and the batch it saw."""
    model = make_c2c("qwen2")
    calls = []
    handle = model.sharer.base_model.register_forward_hook(lambda module, args, kwargs, out: calls.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    yield model, calls
    handle.remove()


@pytest.mark.parametrize(
    "settings, rows_out",
    [
        (dict(do_sample=False), 2),
        (dict(do_sample=True, top_k=10), 2),
        (dict(do_sample=True, num_return_sequences=3), 6),
        (dict(num_beams=3), 2),
        (dict(num_beams=3, num_return_sequences=2), 4),
    ],
)
def test_generation_modes_run_sharer_once_on_unexpanded_batch(sharer_calls, settings, rows_out):
    model, calls = sharer_calls
    ids, mask = left_pad(prompts((6, 9), seed=3), 0)
    torch.manual_seed(0)
    out = model.generate(ids, attention_mask=mask, max_new_tokens=4, min_new_tokens=4, **settings)
    assert out.shape == (rows_out, 9 + 4)
    assert calls == [2]


def test_seeded_sampling_is_reproducible(make_c2c):
    model = make_c2c("qwen2")
    ids = torch.stack(prompts((7,), seed=4))
    torch.manual_seed(5)
    first = model.generate(ids, max_new_tokens=8, do_sample=True)
    torch.manual_seed(5)
    second = model.generate(ids, max_new_tokens=8, do_sample=True)
    assert torch.equal(first, second)


def test_streamer_receives_prompt_and_tokens(make_c2c):
    from transformers.generation.streamers import BaseStreamer

    class Collect(BaseStreamer):
        def __init__(self):
            self.chunks, self.ended = [], False

        def put(self, value):
            self.chunks.append(value.flatten().tolist())

        def end(self):
            self.ended = True

    model, streamer = make_c2c("qwen2"), Collect()
    ids = torch.stack(prompts((6,), seed=6))
    out = model.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False, streamer=streamer)
    assert streamer.ended and streamer.chunks[0] == ids[0].tolist()
    assert [token for chunk in streamer.chunks[1:] for token in chunk] == out[0, 6:].tolist()


def test_bases_frozen_and_only_fuser_trains(make_c2c):
    model = make_c2c("llama", fuser_dropout=0.1)
    model.train()
    assert model.fuser.training and not model.receiver.training and not model.sharer.training
    ids = torch.stack(prompts((12, 12), seed=7))
    labels = ids.clone()
    labels[:, :7] = -100
    bases_before = {n: p.clone() for n, p in model.named_parameters() if not n.startswith("fuser.")}
    fuser_before = {n: p.clone() for n, p in model.fuser.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss = model(ids, labels=labels, fuse_length=6).loss
    loss.backward()
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("fuser."))
    grads = [p.grad for p in model.fuser.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    optimizer.step()
    assert all(torch.equal(p, bases_before[n]) for n, p in model.named_parameters() if not n.startswith("fuser."))
    assert sum(not torch.equal(p, fuser_before[n]) for n, p in model.fuser.named_parameters()) == len(fuser_before)


@pytest.mark.parametrize("fusion", ["gated", "weighted", "projection"])
def test_fresh_fuser_has_the_documented_init_for_every_fusion(receiver, sharers, fusion):
    """Every fuser Linear N(0, 0.02) with zero bias, every norm 1, the gate at `gate_init_logit`, whatever the fusion
    (transformers skips `_init_weights` on custom-code modules that own no parameter directly)."""
    torch.manual_seed(0)
    model = C2CForCausalLM.from_base_models(receiver, sharers["qwen2"], **FUSER_KWARGS, fusion=fusion, gate_init_logit=2.5)
    linears = [m for m in model.fuser.modules() if isinstance(m, torch.nn.Linear)]
    weights = torch.cat([m.weight.flatten() for m in linears])
    assert abs(weights.std().item() - 0.02) < 0.001 and abs(weights.mean().item()) < 0.001
    assert all(m.bias is None or not m.bias.any() for m in linears)
    norms = [m.weight for m in model.fuser.modules() if isinstance(m, torch.nn.RMSNorm)]
    assert norms and all(bool((w == 1).all()) for w in norms)
    if fusion == "gated":
        assert bool((model.fuser.gate_logits() == 2.5).all())


@pytest.mark.parametrize("fusion", ["gated", "weighted"])
def test_zero_init_fuser_starts_as_the_receiver_and_trains_away(receiver, sharers, fusion):
    """`fuser_zero_init`: in training (relaxed gates) and at inference a fresh fuser is exactly the receiver; one
    optimizer step moves it."""
    torch.manual_seed(0)
    model = C2CForCausalLM.from_base_models(receiver, sharers["qwen2"], **FUSER_KWARGS, fusion=fusion, fuser_zero_init=True)
    ids = torch.stack(prompts((12, 12), seed=9))
    labels = ids.clone()
    labels[:, :7] = -100
    with torch.no_grad():
        alone = receiver(ids).logits
        torch.testing.assert_close(model.eval()(ids).logits, alone, atol=TOL, rtol=0)
    model.train()
    loss = model(ids, labels=labels, fuse_length=6).loss
    torch.testing.assert_close(loss, receiver(ids, labels=labels).loss, atol=TOL, rtol=0)
    loss.backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0).step()
    with torch.no_grad():
        assert (model.eval()(ids).logits - alone).abs().max() > 1e-3


def test_loss_equals_cross_entropy_on_response_positions(make_c2c):
    model = make_c2c("qwen2")
    ids = torch.stack(prompts((10, 10), seed=8))
    labels = ids.clone()
    labels[:, :6] = -100
    with torch.no_grad():
        out = model(ids, labels=labels, fuse_length=5, logits_to_keep=5)
    assert out.logits.shape == (2, 5, VOCAB)
    expected = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, VOCAB), ids[:, 6:].reshape(-1))
    torch.testing.assert_close(out.loss, expected)
    with pytest.raises(ValueError, match="labels supervise positions whose logits are not computed"):
        model(ids, labels=ids, fuse_length=5, logits_to_keep=5)


@pytest.mark.parametrize("logit, open_share", [(-2.0, 0.119), (-0.2, 0.450), (0.2, 0.550), (2.0, 0.881)])
def test_gate_training_and_inference_agree(make_c2c, logit, open_share):
    """The relaxed gate is open (> 1/2) with probability sigmoid(logit); the hard gate is open iff logit > 0."""
    branch = make_c2c("qwen2").fuser.layers[0].key
    with torch.no_grad():
        branch.gate_logit.fill_(logit)
    branch.train()
    torch.manual_seed(0)
    samples = branch.gate(batch=64, length=256, temperature=0.5)
    share = (samples > 0.5).float().mean().item()
    assert abs(share - open_share) < 0.01
    branch.eval()
    assert (share > 0.5) == bool(branch.gate(1, 1, 0.5)) == (logit > 0)


def test_fuser_stays_fp32_with_bf16_bases(receiver, sharers):
    receiver_bf16 = build(receiver_config(), seed=0).to(torch.bfloat16)
    sharer_bf16 = sharers["qwen2"].__class__(sharers["qwen2"].config).to(torch.bfloat16).eval()
    model = C2CForCausalLM.from_base_models(receiver_bf16, sharer_bf16, fuser_hidden_size=32).eval()
    assert {p.dtype for p in model.fuser.parameters()} == {torch.float32}
    ids = torch.stack(prompts((9,), seed=9))
    with torch.no_grad():
        out = model(ids)
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.logits.float()).all()
    assert out.cache.layers[0].keys.dtype == torch.bfloat16


def gemma3_receiver():
    config = Gemma3TextConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=2,
        num_key_value_heads=1, head_dim=32, sliding_window=4, max_position_embeddings=256,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"], bos_token_id=1, eos_token_id=2,
        pad_token_id=0,
    )
    return build(config, seed=11)


def test_sliding_window_receiver(sharers):
    """A Gemma3 receiver whose window (4) is shorter than the prompt: fusion, padding and generation work."""
    receiver = gemma3_receiver()
    torch.manual_seed(0)
    model = C2CForCausalLM.from_base_models(receiver, sharers["llama"], fuser_hidden_size=32).eval()
    rows = prompts((7, 12), seed=10)
    ids, mask = left_pad(rows, 0)
    with torch.no_grad():
        batched = model(ids, attention_mask=mask).logits
        for row, prompt in enumerate(rows):
            torch.testing.assert_close(batched[row, -len(prompt) :], model(prompt[None]).logits[0], atol=TOL, rtol=0)
        out = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
        assert out.shape == (2, 18)
        alone = receiver(ids[1:]).logits
        assert (model(ids[1:]).logits[:, -1] - alone[:, -1]).abs().max() > 0
        set_gates(model, -1.0)
        torch.testing.assert_close(model(ids[1:]).logits, alone, atol=TOL, rtol=0)
        assert torch.equal(
            model.generate(ids[1:], max_new_tokens=6, do_sample=False),
            receiver.generate(ids[1:], max_new_tokens=6, do_sample=False),
        )


def test_from_config_builds_random_bases():
    from tiny_models import sharer_configs

    from c2c_hf import C2CConfig

    config = C2CConfig(text_config=receiver_config(), sharer_config=sharer_configs()["qwen2"], fuser_hidden_size=16)
    model = C2CForCausalLM(config).eval()
    assert model.receiver.config.model_type == "qwen3" and model.sharer.config.model_type == "qwen2"
    assert not any(p.requires_grad for n, p in model.named_parameters() if not n.startswith("fuser."))
    with torch.no_grad():
        assert model(torch.stack(prompts((6,)))).logits.shape == (1, 6, VOCAB)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(cache_implementation="static"), "cache_implementation='static' is not supported by C2CForCausalLM"),
        (dict(prefill_chunk_size=4), "prefill_chunk_size is not supported by C2CForCausalLM"),
        (dict(use_cache=False), "C2CForCausalLM.generate needs use_cache=True"),
    ],
)
def test_unsupported_generation_modes_are_refused(sharer_calls, settings, message):
    model, calls = sharer_calls
    with pytest.raises(ValueError) as error:
        model.generate(torch.stack(prompts((6,))), max_new_tokens=3, **settings)
    assert message in str(error.value)
    assert calls == []  # refused before any work


def test_forward_input_errors(make_c2c):
    model = make_c2c("qwen2")
    ids = torch.stack(prompts((8, 8)))
    cases = [
        (dict(fuse_length=8), "fuse_length=8 is out of range for a sequence of 8 tokens"),
        (dict(fuse_length=torch.tensor([3, 4])), "fuse_length differs between rows ([3, 4])"),
        (dict(sharer_input_ids=ids[:, :5]), "sharer_input_ids has shape (2, 5) but input_ids has (2, 8)"),
        (dict(output_attentions=True), "output_attentions is not supported by C2CForCausalLM"),
        (dict(logits_to_keep=torch.tensor([1])), "logits_to_keep must be an int for C2CForCausalLM"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError) as error:
            model(ids, **kwargs)
        assert message in str(error.value)
    with pytest.raises(ValueError, match="`inputs_embeds` is not supported"):
        model(inputs_embeds=torch.zeros(2, 8, 64))
    plain = DynamicCache()
    model.receiver(ids, cache=plain)
    with pytest.raises(ValueError, match="non-empty DynamicCache that holds no fused prompt"):
        model(ids[:, :1], cache=plain)
    with pytest.raises(ValueError, match=r"pass no cache .* or a C2CCache"):
        model.generate(ids, cache=DynamicCache(), max_new_tokens=2)


def test_different_vocabularies_need_sharer_ids(receiver):
    from tiny_models import sharer_configs

    config = sharer_configs()["llama"]
    config.vocab_size = VOCAB + 10
    model = C2CForCausalLM.from_base_models(receiver, build(config, seed=3), fuser_hidden_size=16).eval()
    ids = torch.stack(prompts((6,)))
    with pytest.raises(ValueError, match=r"receiver \(vocab 96\) and sharer \(vocab 106\) do not share a tokenizer"):
        model(ids)
    with torch.no_grad():
        assert model(ids, sharer_input_ids=ids + 5).logits.shape == (1, 6, VOCAB)
