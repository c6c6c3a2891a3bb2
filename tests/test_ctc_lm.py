"""CTC beam search with a fused LM: exact against exhaustive search, batch-invariant, the LM's
cached prefix scores equal a full forward, and packages that carry the LM."""

from __future__ import annotations

import shutil

import pytest
import torch
import yaml

import suite
from suite.cli import main
from suite.config import ModelConfig
from suite.errors import UserError
from suite.heads.ctc import CtcHead, prefix_beam_search
from suite.heads.lm import BOUNDARY_ID, PrefixScorer, TransformerLM, lm_loss, save_lm_package
from suite.interfaces import EncoderOutput
from suite.model import build_model, load_package, save_package
from suite.tasks.asr.pipeline import attach_lm
from suite.text import ALPHABET
from suite.tokenizers import CharTokenizer
from tests.test_ctc import all_label_sequences, sequence_log_prob


def random_lm(vocab_size: int, seed: int = 0) -> TransformerLM:
    """A random LM with large embeddings (tied to the output), so its preferences are strong."""
    torch.manual_seed(seed)
    lm = TransformerLM(vocab_size, d_model=16, num_layers=2, num_heads=2)
    with torch.no_grad():
        lm.tokens.weight.normal_(std=1.0)
    return lm.eval()


def lm_log_prob(lm: TransformerLM, tokens: list[int]) -> float:
    """log p(tokens, then the end) under ``lm``."""
    with torch.no_grad():
        nll, _ = lm_loss(lm, [tokens])
    return -float(nll[0])


def test_prefix_scores_equal_a_full_forward_through_pool_growth_and_forgetting():
    lm = random_lm(7)
    scorer = PrefixScorer(lm)
    g = torch.Generator().manual_seed(0)
    prefixes: list[tuple[int, ...]] = [()]
    for step in range(80):  # grow prefixes a token at a time, past 64 rows and 32 positions, twice
        picks = torch.randint(len(prefixes), (12,), generator=g).tolist()
        parents = prefixes[-12:] + [prefixes[i] for i in picks]  # the longest, and any
        new = {p + (int(torch.randint(1, 7, (1,), generator=g)),) for p in parents}
        new = [p for p in new if p not in scorer]
        scorer.score(new)
        prefixes = sorted(set(prefixes) | set(new), key=len)
        if step % 20 == 19:  # forget all but the longest; their caches must stay right
            scorer.retain(set(prefixes[-40:]))
            prefixes = [()] + prefixes[-40:]
    assert max(len(p) for p in prefixes) > 64
    for prefix in prefixes[-20:] + [()]:
        inputs = torch.tensor([[BOUNDARY_ID, *prefix]])
        want = lm(lm.embed(inputs))[0][0, -1].log_softmax(-1)
        torch.testing.assert_close(torch.tensor(scorer[prefix]), want, atol=1e-5, rtol=0)


def test_prefixes_are_scored_by_the_lms_own_forward():
    """The scorer runs the module's forward with a KV cache (no second forward path), so a
    forward hook on the LM sees every scoring call: one per generation of prefixes."""
    lm = random_lm(7)
    calls = []
    lm.register_forward_hook(lambda _m, args, _out: calls.append(args[0].shape[:2]))
    scorer = PrefixScorer(lm)
    scorer.score([(3,), (4,), (5,)])
    scorer.score([(3, 1), (5, 2)])
    assert calls == [(1, 1), (3, 1), (2, 1)]  # the boundary, then one new token per prefix


def test_prefixes_are_scored_with_their_unscored_ancestors():
    lm = random_lm(7)
    scorer = PrefixScorer(lm)
    scorer.score([(3, 1, 4), (3, 1)])  # nothing but () was scored: (3,) comes first
    assert (3,) in scorer
    scorer.retain({(3, 1, 4), (2,)})  # (3,) and (3, 1) forgotten; (2,) was never scored
    assert (3,) not in scorer and (3, 1) not in scorer
    scorer.score([(3, 1, 4, 1, 5), (2, 6)])
    for prefix in [(3, 1, 4), (3, 1, 4, 1), (3, 1, 4, 1, 5), (2,), (2, 6)]:
        inputs = torch.tensor([[BOUNDARY_ID, *prefix]])
        want = lm(lm.embed(inputs))[0][0, -1].log_softmax(-1)
        torch.testing.assert_close(torch.tensor(scorer[prefix]), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("seed", range(3))
def test_fused_beam_search_equals_exhaustive_search(seed):
    torch.manual_seed(seed)
    T, V, weight, bonus = 5, 4, 0.7, 0.4
    lm = random_lm(V, seed)
    log_probs = (torch.randn(T, V, dtype=torch.float64) * 1.5).log_softmax(-1)
    scored = {}
    for seq in all_label_sequences(T, [1, 2, 3]):
        acoustic = sequence_log_prob(log_probs, list(seq))
        if acoustic > float("-inf"):
            fused = weight * lm_log_prob(lm, list(seq)) + bonus * len(seq)
            scored[seq] = acoustic + fused
    best = max(scored, key=scored.get)
    (hyp,) = prefix_beam_search(log_probs[None], torch.tensor([T]), 0, 512, lm, weight, bonus)
    assert tuple(hyp.tokens) == best
    assert hyp.score == pytest.approx(scored[best], abs=1e-4)
    (plain,) = prefix_beam_search(log_probs[None], torch.tensor([T]), 0, 512)
    acoustic_best = max(scored, key=lambda s: sequence_log_prob(log_probs, list(s)))
    assert tuple(plain.tokens) == acoustic_best


def test_the_lm_decides_between_sounds_alike():
    # Frames say "1 or 2, equally"; the LM was made to prefer 2 after the boundary.
    lm = random_lm(4)
    with torch.no_grad():
        lm.tokens.weight[2] = lm.tokens.weight[0] * 3.0  # tied output: high logit for 2 after 0
    assert torch.tensor(PrefixScorer(lm)[()]).argmax() == 2
    log_probs = torch.tensor([[0.1, 0.45, 0.45, 0.0], [0.9, 0.05, 0.05, 0.0]]).clamp(1e-6).log()
    lengths = torch.tensor([2])
    with_lm = prefix_beam_search(log_probs[None], lengths, 0, 4, lm, 1.0, 0.0)[0]
    assert with_lm.tokens == [2]


def test_batch_gives_each_item_its_own_result():
    torch.manual_seed(1)
    V = 6
    lm = random_lm(V)
    log_probs = (torch.randn(3, 20, V) * 2).log_softmax(-1)
    lengths = torch.tensor([20, 13, 0])
    batch = prefix_beam_search(log_probs, lengths, 0, 6, lm, 0.8, 0.5)
    for b in range(3):
        alone = prefix_beam_search(
            log_probs[b : b + 1, : lengths[b]], lengths[b : b + 1], 0, 6, lm, 0.8, 0.5
        )
        assert batch[b].tokens == alone[0].tokens
        assert batch[b].score == pytest.approx(alone[0].score, abs=1e-4)
    assert batch[2].tokens == []


# --- The head and packages ----------------------------------------------------------------------


def ctc_config(**head) -> ModelConfig:
    return ModelConfig(
        encoder={"name": "conformer", "preset": "tiny"},
        heads={"ctc": {"name": "ctc", **head}},
        tokenizer={"name": "char"},
    )


def test_head_with_an_lm_defaults_to_beam_and_keeps_the_lm_frozen(tmp_path):
    tokenizer = CharTokenizer()
    save_lm_package(random_lm(tokenizer.vocab_size), tokenizer, tmp_path / "lm")
    head = build_model(ctc_config(lm=str(tmp_path / "lm"), lm_weight=2.0), tokenizer).heads["ctc"]
    assert all(not p.requires_grad for p in head.lm.parameters())
    head.train()
    assert not head.lm.training and head.proj.training
    torch.manual_seed(0)
    enc = EncoderOutput(torch.randn(2, 9, head.proj.in_features), torch.tensor([9, 6]))
    default = head.decode(enc)
    beam = head.decode(enc, method="beam")
    assert [h.tokens for h in default] == [h.tokens for h in beam]
    no_lm = head.decode(enc, method="beam", lm_weight=0.0)
    plain = CtcHead(head.proj.in_features, tokenizer.vocab_size)
    plain.proj.load_state_dict(head.proj.state_dict())
    assert [h.tokens for h in no_lm] == [h.tokens for h in plain.decode(enc, method="beam")]
    assert [h.tokens for h in default] != [h.tokens for h in no_lm]  # a weight of 2 changes it
    with pytest.raises(ValueError, match="beam_size"):
        head.decode(enc, beam_size=0)


def test_attach_lm_writes_a_package_that_loads_alone_and_decodes_with_it(tmp_path):
    tokenizer = CharTokenizer()
    torch.manual_seed(0)
    save_package(build_model(ctc_config(), tokenizer), tmp_path / "asr", card="# asr\n")
    save_lm_package(random_lm(tokenizer.vocab_size), tokenizer, tmp_path / "lm")
    attach_lm(tmp_path / "asr", tmp_path / "lm", tmp_path / "fused", lm_weight=2.0, beam_size=4)
    shutil.rmtree(tmp_path / "lm")  # the package holds the LM
    spec = yaml.safe_load((tmp_path / "fused/config.yaml").read_text())["model"]["heads"]["ctc"]
    assert spec["lm"]["d_model"] == 16 and spec["lm_weight"] == 2.0 and spec["beam_size"] == 4
    assert "## Language model" in (tmp_path / "fused/README.md").read_text()
    original, fused = load_package(tmp_path / "asr"), load_package(tmp_path / "fused")
    for k, v in original.state_dict().items():
        assert torch.equal(fused.state_dict()[k], v), k  # nothing else changed
    g = torch.Generator().manual_seed(3)
    audio = [torch.randn(n, generator=g).numpy() * 0.1 for n in (12000, 7000)]
    asr, plain = suite.load(tmp_path / "fused"), suite.load(tmp_path / "asr")
    assert asr.transcribe(audio, sample_rate=16000, lm_weight=0.0, beam_size=4) == plain.transcribe(
        audio, sample_rate=16000, method="beam", beam_size=4
    )
    assert asr.transcribe(audio, sample_rate=16000) != plain.transcribe(audio, sample_rate=16000)

    # Attaching another LM in place replaces the first one's weights and card section.
    other = random_lm(tokenizer.vocab_size, seed=1)
    save_lm_package(other, tokenizer, tmp_path / "lm2")
    attach_lm(tmp_path / "fused", tmp_path / "lm2", tmp_path / "fused")
    replaced = load_package(tmp_path / "fused").heads["ctc"].lm
    for k, v in other.state_dict().items():
        assert torch.equal(replaced.state_dict()[k], v), k
    card = (tmp_path / "fused/README.md").read_text()
    assert card.count("## Language model") == 1 and "lm2" in card and card.startswith("# asr")


def test_attach_lm_stores_float16_parameters_that_load_as_float32_and_decode_alike(tmp_path):
    from safetensors import safe_open

    from suite.cli import main

    tokenizer = CharTokenizer()
    torch.manual_seed(0)
    save_package(build_model(ctc_config(), tokenizer), tmp_path / "asr", card="# asr\n")
    save_lm_package(random_lm(tokenizer.vocab_size), tokenizer, tmp_path / "lm")
    attach_lm(tmp_path / "asr", tmp_path / "lm", tmp_path / "fp32", lm_weight=1.0, beam_size=4)
    argv = ["models", "attach-lm", str(tmp_path / "asr"), str(tmp_path / "lm")]
    main([*argv, "--out", str(tmp_path / "half"), "--lm-weight", "1.0", "--beam-size", "4",
          "--weights-dtype", "float16"])  # fmt: skip
    full, half = load_package(tmp_path / "fp32"), load_package(tmp_path / "half")
    params = dict(half.named_parameters())
    with safe_open(str(tmp_path / "half/model.safetensors"), "pt") as f:
        stored = {k: f.get_slice(k).get_dtype() for k in f.keys()}
    assert {stored[k] for k in params} == {"F16"}  # every parameter, the LM's too
    assert {stored[k] for k in stored if k not in params} <= {"F32", "I64", "BOOL"}  # buffers
    size = (tmp_path / "half/model.safetensors").stat().st_size
    assert size < 0.6 * (tmp_path / "fp32/model.safetensors").stat().st_size
    for k, v in full.state_dict().items():  # float32 again, within float16's rounding
        assert half.state_dict()[k].dtype == v.dtype, k
        torch.testing.assert_close(half.state_dict()[k], v, atol=1e-3, rtol=1e-3)
    g = torch.Generator().manual_seed(3)
    audio = [torch.randn(n, generator=g).numpy() * 0.1 for n in (12000, 7000)]
    assert suite.load(tmp_path / "half").transcribe(audio, sample_rate=16000) == suite.load(
        tmp_path / "fp32"
    ).transcribe(audio, sample_rate=16000)


def test_attach_lm_refuses_another_tokenizer_and_non_ctc_heads(tmp_path):
    tokenizer = CharTokenizer()
    save_package(build_model(ctc_config(), tokenizer), tmp_path / "asr", card="# asr\n")
    save_lm_package(random_lm(tokenizer.vocab_size), CharTokenizer(ALPHABET[::-1]), tmp_path / "lm")
    with pytest.raises(UserError, match="tokenizer"):
        attach_lm(tmp_path / "asr", tmp_path / "lm", tmp_path / "out")
    rnnt = ModelConfig(
        encoder={"name": "conformer", "preset": "tiny"},
        heads={"rnnt": {"name": "rnnt"}},
        tokenizer={"name": "char"},
    )
    save_package(build_model(rnnt, tokenizer), tmp_path / "rnnt", card="# rnnt\n")
    with pytest.raises(UserError, match="only CTC heads"):
        attach_lm(tmp_path / "rnnt", tmp_path / "lm", tmp_path / "out")


def test_cli_attaches_an_lm_and_decodes_with_and_without_it(tmp_path, capsys):
    import soundfile as sf

    tokenizer = CharTokenizer()
    torch.manual_seed(0)
    save_package(build_model(ctc_config(), tokenizer), tmp_path / "asr", card="# asr\n")
    save_lm_package(random_lm(tokenizer.vocab_size), tokenizer, tmp_path / "lm")
    args = ["models", "attach-lm", str(tmp_path / "asr"), str(tmp_path / "lm")]
    assert main([*args, "--out", str(tmp_path / "fused"), "--lm-weight", "2.0"]) == 0
    wav = tmp_path / "a.wav"
    sf.write(
        wav, torch.randn(16000, generator=torch.Generator().manual_seed(1)).numpy() * 0.1, 16000
    )
    capsys.readouterr()
    outputs = {}
    for extra in ([], ["--lm-weight", "0", "--beam-size", "8"], ["--decoding", "greedy"]):
        assert main(["transcribe", str(tmp_path / "fused"), str(wav), *extra]) == 0
        outputs[tuple(extra)] = capsys.readouterr().out
    assert all(str(wav) in out for out in outputs.values())
    asr = suite.load(tmp_path / "fused")
    assert outputs[()].split("\t")[1].strip() == asr.transcribe(str(wav))[0]


def test_streams_end_with_the_lm_beam_search_of_their_frames():
    from suite.streaming import StreamBatcher, StreamingSession
    from suite.tasks.asr import Transcriber
    from tests.test_streaming import SR, random_chunks, tiny_model, tones

    model = tiny_model("conformer", context=(4, 1))
    greedy_head = model.heads["ctc"]
    head = CtcHead(
        greedy_head.proj.in_features,
        greedy_head.vocab_size,
        lm=random_lm(greedy_head.vocab_size),
        lm_weight=2.0,
    )
    head.proj.load_state_dict(greedy_head.proj.state_dict())
    model.heads["ctc"] = head.eval()
    audio = tones(3.0, seed=0)
    offline = Transcriber(model).transcribe(audio, sample_rate=SR)[0]
    greedy = Transcriber(model).transcribe(audio, sample_rate=SR, method="greedy")[0]
    assert offline != greedy  # the LM changes the text: the check below has power
    with StreamingSession(model) as session:
        partials = [session.accept(chunk, sample_rate=SR) for chunk in random_chunks(audio, 1)]
        final = session.finish()
    assert final == offline
    assert partials[-1] == greedy[: len(partials[-1])]  # partials are greedy, and only grow
    for before, after in zip(partials, partials[1:], strict=False):
        assert after.startswith(before)
    batcher = StreamBatcher(model)  # a stream that ends beside one that goes on
    a, b = batcher.open(), batcher.open()
    batcher.accept(a, audio)
    batcher.accept(b, audio[: SR // 2])
    batcher.finish(a)
    updates = batcher.step()
    assert updates[a].final and updates[a].text == offline
    assert not updates[b].final and greedy.startswith(updates[b].text)
