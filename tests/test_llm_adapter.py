"""The causal LM (``suite.heads.lm``), its pre-training (an ``lm`` recipe), the LLM adapter.

The head's registry contracts (loss falls, every parameter learns, one hypothesis per item,
padding invariance over every encoder) are in ``test_contracts.py``; here: what is particular to
it. Everything runs on random features and a tiny LM, in seconds on one CPU thread.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment
from lhotse.audio import AudioSource

import suite
from suite.config import ModelConfig, load_recipe
from suite.errors import UserError
from suite.heads.llm_adapter import LlmAdapterHead, LmScorer, stack_frames
from suite.heads.lm import (
    CausalLM,
    TransformerLM,
    lm_loss,
    load_lm_package,
    save_lm_package,
    sequence_nll,
)
from suite.heads.search import beam_search, greedy_search
from suite.interfaces import Batch, EncoderOutput
from suite.model import build_model, load_package, save_package
from suite.tasks.asr import Transcriber
from suite.tasks.lm import generated_text
from suite.text import ALPHABET
from suite.tokenizers import CharTokenizer
from suite.train import Trainer

LM = {"d_model": 32, "num_layers": 2, "num_heads": 2}
TEXTS = ["the cat sat", "a dog", "hello there world"]


def tiny_lm(vocab_size: int = 30, seed: int = 0) -> TransformerLM:
    torch.manual_seed(seed)
    return TransformerLM(vocab_size, **LM)


def spread(lm: TransformerLM) -> TransformerLM:
    """Larger embeddings (tied to the output), so a random LM's argmax varies with its input."""
    with torch.no_grad():
        lm.tokens.weight.normal_(std=1.0)
    return lm.eval()


def pretrain(lm: TransformerLM, sequences: list[list[int]], steps: int = 60) -> None:
    opt = torch.optim.Adam(lm.parameters(), lr=1e-2)
    for _ in range(steps):
        nll, tokens = lm_loss(lm, sequences)
        opt.zero_grad()
        (nll.sum() / tokens.sum()).backward()
        opt.step()


def utterances(texts: list[str], tokenizer, dim: int = 16, frames: int = 12) -> Batch:
    """Random features, a different length per utterance, with ``texts`` as targets."""
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([frames - 3 * b for b in range(len(texts))])
    x = torch.randn(len(texts), frames, dim, generator=g)
    x = x * (torch.arange(frames)[None, :, None] < lengths[:, None, None])
    ids = [tokenizer.encode(t) for t in texts]
    targets = torch.zeros(len(ids), max(map(len, ids)), dtype=torch.long)
    for b, row in enumerate(ids):
        targets[b, : len(row)] = torch.tensor(row)
    return Batch(x, lengths, targets, torch.tensor([len(r) for r in ids]), list(texts))


class FrameEncoder(torch.nn.Module):
    """A per-frame MLP standing in for an encoder (no context: the head must do the work)."""

    def __init__(self, dim: int = 16, out: int = 24, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)  # its weights must not depend on the tests that ran before
        self.net = torch.nn.Sequential(torch.nn.Linear(dim, out), torch.nn.Tanh())

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        return EncoderOutput(self.net(x), lengths)


# --- The causal LM ------------------------------------------------------------------------------


def test_lm_implements_the_interface_and_its_loss_falls():
    lm = tiny_lm()
    assert isinstance(lm, CausalLM)
    seqs = [[3, 4, 5, 6], [7, 8], [9, 10, 11, 12, 13]]
    opt = torch.optim.Adam(lm.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        nll, tokens = lm_loss(lm, seqs)
        loss = nll.sum() / tokens.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert tokens.tolist() == [5, 3, 6]  # each sentence's tokens plus its closing boundary
    assert losses[-1] < 0.2 * losses[0], losses


def reference_generate(lm, prefix: torch.Tensor, steps: int) -> list[int]:
    """Greedy generation of one sequence with no cache: the whole sequence every step."""
    out: list[int] = []
    x = prefix[None]
    for _ in range(steps):
        logits, _ = lm(x)
        token = int(logits[0, -1].argmax())
        if token == 0:
            break
        out.append(token)
        x = torch.cat([x, lm.embed(torch.tensor([[token]]))], dim=1)
    return out


def test_generation_with_a_kv_cache_equals_generation_without():
    lm = spread(tiny_lm())
    g = torch.Generator().manual_seed(2)
    lengths = torch.tensor([5, 2, 7])  # right-padded prefixes of different lengths
    embeds = torch.randn(3, 7, LM["d_model"], generator=g)
    hyps = greedy_search(LmScorer(lm, embeds, lengths), torch.full((3,), 12), eos_id=0)
    tokens = [h.tokens for h in hyps]
    for b, n in enumerate(lengths.tolist()):
        assert tokens[b] == reference_generate(lm, embeds[b, :n], 12), b
    assert len({tuple(t) for t in tokens}) == 3 and max(map(len, tokens)) > 3  # varied: power
    assert all(h.score < 0 for h in hyps)
    # Beam search over the same scorer: one beam is greedy; with four, rows trade places in
    # the cache every step, and each result's score must still be its tokens' log-probability
    # (and the closing boundary's) under the LM without a cache.
    one = beam_search(LmScorer(lm, embeds, lengths), torch.full((3,), 12), 0, beam_size=1)
    assert [h.tokens for h in one] == tokens
    four = beam_search(LmScorer(lm, embeds, lengths), torch.full((3,), 12), 0, beam_size=4)
    assert [h.tokens for h in four] != tokens  # the wider search found other hypotheses
    for b, n in enumerate(lengths.tolist()):
        answer = torch.tensor([*four[b].tokens, 0])
        with torch.no_grad():
            x = torch.cat([embeds[b, :n], lm.embed(answer[None, :-1])[0]])[None]
            log_probs = lm(x)[0][0, n - 1 :].log_softmax(-1)  # predicting each answer token
        want = log_probs.gather(1, answer[:, None]).sum()
        assert abs(four[b].score - float(want)) < 1e-4, b
    # The cached logits themselves match a full forward pass.
    with torch.no_grad():
        full, _ = lm(embeds[:1])
        first, cache = lm(embeds[:1, :4])
        rest, _ = lm(embeds[:1, 4:], cache)
    torch.testing.assert_close(torch.cat([first, rest], dim=1), full, atol=1e-5, rtol=0)


def test_lm_package_round_trip(tmp_path):
    lm, tokenizer = spread(tiny_lm()), CharTokenizer()
    save_lm_package(lm, tokenizer, tmp_path / "lm", card="# lm\n")
    package = load_lm_package(tmp_path / "lm")
    assert sorted(p.name for p in (tmp_path / "lm").iterdir()) == [
        "README.md",
        "config.yaml",
        "model.safetensors",
        "tokenizer",
    ]
    ids = torch.tensor([[0, 3, 4, 5]])
    torch.testing.assert_close(package.lm(package.lm.embed(ids))[0], lm(lm.embed(ids))[0])
    assert package.tokenizer.encode("ab") == tokenizer.encode("ab")
    with pytest.raises(UserError, match="suite train recipes/lm"):
        load_lm_package(tmp_path / "nowhere")


# --- LM pre-training ----------------------------------------------------------------------------


def text_manifest(path, texts: list[str]) -> None:
    """A cut manifest that only carries transcripts (its audio is never read)."""
    cuts = []
    for i, text in enumerate(texts):
        source = AudioSource(type="file", channels=[0], source="/nonexistent.flac")
        rec = Recording(f"r{i}", [source], sampling_rate=16000, num_samples=16000, duration=1.0)
        sup = SupervisionSegment(f"s{i}", f"r{i}", start=0.0, duration=1.0, text=text)
        cuts.append(MonoCut(f"c{i}", 0.0, 1.0, 0, recording=rec, supervisions=[sup]))
    CutSet.from_cuts(cuts).to_file(path)


def test_train_lm_writes_a_package_and_reports_dev_perplexity(tmp_path):
    train = generated_text(60, seed=7, excluded=set())
    text_manifest(tmp_path / "train.jsonl.gz", train)
    text_manifest(tmp_path / "dev.jsonl.gz", train[:10])
    recipe = load_recipe(
        "recipes/lm/espeak_text_lm.yaml",
        [
            f"data.corpus_dir={tmp_path}",
            "data.train=train.jsonl.gz",
            "data.dev=dev.jsonl.gz",
            "data.test=missing.jsonl.gz",
            "data.generated_sentences=20",
            "model.tokenizer={name: char}",
            f"model.lm={json.dumps(LM)}",
            f"train.out_dir={tmp_path / 'run'}",
            "train.max_steps=40",
            "data.batch_size=16",
            "train.warmup_steps=5",
            "train.val_every=20",
            "train.log_every=10",
        ],
    )
    package = Trainer(recipe, progress=False).train()
    rows = [
        json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().split("\n")[:-1]
    ]
    ppl = [r["dev_perplexity"] for r in rows if "dev_perplexity" in r]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(ppl) == 2 and ppl[-1] < ppl[0] < 30  # char vocabulary: 30 tokens
    assert losses[-1] < 0.95 * losses[0]
    assert "dev perplexity" in (package / "README.md").read_text()
    assert load_lm_package(package).lm.config["d_model"] == LM["d_model"]
    with pytest.raises(UserError, match="already holds a training run"):
        Trainer(recipe, progress=False).train()


def test_lm_trains_on_text_files_and_refuses_bad_ones(tmp_path):
    """Splits given as one-sentence-a-line text files (what `suite data text` writes): the
    lines are normalized, empty ones skipped, and dev perplexity falls."""
    train = generated_text(60, seed=11, excluded=set())
    (tmp_path / "train.txt").write_text("\n".join(t.upper() + "." for t in train) + "\n\n")
    (tmp_path / "dev.txt").write_text("\n".join(train[:10]) + "\n")
    recipe = load_recipe(
        "recipes/lm/open_text_lm.yaml",
        [
            f"data.corpus_dir={tmp_path}",
            "model.tokenizer={name: char}",
            f"model.lm={json.dumps(LM)}",
            f"train.out_dir={tmp_path / 'run'}",
            "train.max_steps=40",
            "data.batch_size=16",
            "train.warmup_steps=5",
            "train.val_every=20",
            "train.log_every=10",
        ],
    )
    Trainer(recipe, progress=False).train()
    rows = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    ppl = [r["dev_perplexity"] for r in rows if "dev_perplexity" in r]
    assert len(ppl) == 2 and ppl[-1] < ppl[0] < 30
    task = suite.registry.create("task", "lm")
    assert task.load_split(recipe, "train").texts == train  # normalized, the blank line skipped
    (tmp_path / "empty.txt").write_text("\n  \n")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    for name, message in [
        ("missing.txt", "does not exist"),
        ("empty.txt", "holds no sentences"),
        ("latin1.txt", "is not UTF-8 text"),
    ]:
        bad = load_recipe("recipes/lm/open_text_lm.yaml", [f"data.corpus_dir={tmp_path}"])
        bad.data.train = name
        with pytest.raises(UserError, match=message):
            task.load_split(bad, "train")


def test_generated_text_leaves_out_held_out_sentences():
    first = generated_text(50, seed=3, excluded=set())
    again = generated_text(50, seed=3, excluded=set(first[:10]))
    assert not set(first[:10]) & set(again) and again[:40] == first[10:]


# --- The adapter head ---------------------------------------------------------------------------


def adapter(freeze: bool = False, prompt: str = "say", seed: int = 0, lm=None) -> LlmAdapterHead:
    torch.manual_seed(seed)
    lm = dict(LM) if lm is None else lm
    return LlmAdapterHead(24, 30, lm=lm, tokenizer=CharTokenizer(), freeze_lm=freeze, prompt=prompt)


def test_frame_stacking_ignores_padding_frames():
    x = torch.arange(2 * 5 * 1, dtype=torch.float).view(2, 5, 1) + 1
    stacked, lengths = stack_frames(x, torch.tensor([5, 3]), 2)
    assert lengths.tolist() == [3, 2]
    assert stacked[1].tolist() == [[6.0, 7.0], [8.0, 0.0], [0.0, 0.0]]  # frame 9 is padding


def test_loss_counts_the_answer_tokens_only():
    head, tok = adapter(), CharTokenizer()
    batch = utterances(TEXTS, tok)
    enc = FrameEncoder()(batch.inputs, batch.lengths)
    embeds, targets, mask, lengths = head.sequences(enc, batch.targets, batch.target_lengths)
    n = torch.div(batch.lengths + 1, 2, rounding_mode="floor")  # audio positions (stack 2)
    P = len(tok.encode("say"))
    for b in range(3):
        u = int(batch.target_lengths[b])
        where = mask[b].nonzero()[:, 0].tolist()
        assert where == list(range(int(n[b]) + P, int(n[b]) + P + u + 1))  # y_1 .. y_U, end
        assert targets[b, where].tolist() == batch.targets[b, :u].tolist() + [0]
        assert int(lengths[b]) == int(n[b]) + P + u + 2
    # What audio and prompt positions predict never counts: change their logits and targets.
    logits, _ = head.lm(embeds)
    base = sequence_nll(logits, targets, mask)
    noise = torch.randn_like(logits) * 10
    other = torch.where(mask, targets, torch.randint(1, 30, targets.shape))
    torch.testing.assert_close(sequence_nll(logits + noise * ~mask[..., None], other, mask), base)
    assert not torch.allclose(sequence_nll(logits + noise * mask[..., None], targets, mask), base)
    per_token = (base / (batch.target_lengths + 1)).mean()
    torch.testing.assert_close(head.loss(enc, batch)["loss"], per_token)


def test_frozen_lm_gets_no_gradient_and_keeps_its_weights():
    head, encoder = adapter(freeze=True), FrameEncoder()
    batch = utterances(TEXTS, CharTokenizer())
    lm_before = {k: v.clone() for k, v in head.lm.state_dict().items()}
    proj_before = {k: v.clone() for k, v in head.projector.state_dict().items()}
    opt = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=1e-2)
    head.train()
    assert not head.lm.training  # a frozen LM stays in eval mode
    for _ in range(3):
        loss = head.loss(encoder(batch.inputs, batch.lengths), batch)["loss"]
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is None for p in head.lm.parameters())
        assert all(p.grad is not None for p in head.projector.parameters())
        opt.step()
    for k, v in head.lm.state_dict().items():
        assert torch.equal(v, lm_before[k]), k
    assert any(not torch.equal(v, proj_before[k]) for k, v in head.projector.state_dict().items())


@pytest.mark.parametrize("freeze", [False, True])
def test_loss_falls_and_greedy_decoding_reproduces_a_few_utterances(freeze):
    tok = CharTokenizer()
    lm = tiny_lm(seed=1)
    if freeze:  # a frozen LM must know the text already: pre-train it on the transcripts
        pretrain(lm, [tok.encode(t) for t in TEXTS])
    head, encoder = adapter(freeze=freeze, seed=1, lm=lm), FrameEncoder()
    batch = utterances(TEXTS, tok)
    opt = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=1e-2)
    losses = []
    head.train()
    for _ in range(200 if freeze else 100):  # a frozen LM is steered by the audio alone
        loss = head.loss(encoder(batch.inputs, batch.lengths), batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], losses[::10]
    head.eval()
    hyps = head.decode(encoder(batch.inputs, batch.lengths), tokenizer=tok)
    assert [h.text for h in hyps] == TEXTS


def test_padding_invariance_with_a_prompt():
    head, encoder = adapter(prompt="transcribe this").eval(), FrameEncoder()
    spread(head.lm)
    batch = utterances(TEXTS, CharTokenizer())
    with torch.no_grad():
        enc = encoder(batch.inputs, batch.lengths)
        hyps, loss = head.decode(enc), head.loss(enc, batch)["loss"]
        alone = []
        for b in range(3):
            n, u = int(batch.lengths[b]), int(batch.target_lengths[b])
            item = EncoderOutput(enc.features[b : b + 1, :n], enc.lengths[b : b + 1])
            hyp = head.decode(item)[0]
            assert hyp.tokens == hyps[b].tokens and abs(hyp.score - hyps[b].score) < 1e-4
            targets = batch.targets[b : b + 1, :u]
            one = Batch(batch.inputs, enc.lengths[b : b + 1], targets, torch.tensor([u]))
            alone.append(head.loss(item, one)["loss"])
    assert any(len(h.tokens) > 2 for h in hyps)  # power: it does generate
    torch.testing.assert_close(loss, torch.stack(alone).mean())


def test_bad_options_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="needs `lm`"):
        LlmAdapterHead(8, 30)
    with pytest.raises(UserError, match="needs a tokenizer"):
        LlmAdapterHead(8, 30, lm=dict(LM), prompt="transcribe")
    with pytest.raises(UserError, match="30 tokens but the tokenizer 40"):
        LlmAdapterHead(8, 40, lm=tiny_lm())
    head = adapter()
    with pytest.raises(ValueError, match="use 'greedy' or 'beam'"):
        head.decode(EncoderOutput(torch.zeros(1, 4, 24), torch.tensor([4])), method="sample")
    bad = Batch(torch.zeros(1, 4, 16), torch.tensor([4]), torch.tensor([[3, 0]]), torch.tensor([2]))
    with pytest.raises(ValueError, match="not a text token"):
        head.loss(EncoderOutput(torch.zeros(1, 4, 24), torch.tensor([4])), bad)


# --- Model packages -----------------------------------------------------------------------------


def llm_config(lm_path, **head) -> ModelConfig:
    return ModelConfig(
        encoder={"name": "conformer", "preset": "tiny"},
        heads={"llm": {"name": "llm_adapter", "lm": str(lm_path), "prompt": "transcribe", **head}},
        tokenizer={"name": "char"},
    )


def test_package_is_self_contained_and_decodes_identically(tmp_path):
    save_lm_package(spread(tiny_lm()), CharTokenizer(), tmp_path / "lm")
    model = build_model(llm_config(tmp_path / "lm", freeze_lm=True), CharTokenizer()).eval()
    lm_weights = {k: v.clone() for k, v in model.heads["llm"].lm.state_dict().items()}
    for k, v in load_lm_package(tmp_path / "lm").lm.state_dict().items():
        assert torch.equal(lm_weights[k], v)  # the head starts from the LM package's weights
    save_package(model, tmp_path / "asr")
    shutil.rmtree(tmp_path / "lm")  # loading must not need the LM package
    saved = yaml.safe_load((tmp_path / "asr/config.yaml").read_text())["model"]["heads"]["llm"]
    defaults = {"ff_mult": 4, "dropout": 0.0, "rope_base": 10000.0}
    assert saved["lm"] == {**LM, "vocab_size": 30, **defaults}
    assert saved["prompt"] == "transcribe" and saved["freeze_lm"] is True
    loaded = load_package(tmp_path / "asr")
    g = torch.Generator().manual_seed(5)
    audio = [torch.randn(n, generator=g).numpy() * 0.1 for n in (8000, 5000)]
    asr = Transcriber(model)
    texts = asr.transcribe(audio, sample_rate=16000, max_new_tokens=8)
    assert (
        suite.load(tmp_path / "asr").transcribe(audio, sample_rate=16000, max_new_tokens=8) == texts
    )
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k


def test_the_task_tokenizer_must_be_the_lm_packages(tmp_path):
    save_lm_package(tiny_lm(), CharTokenizer(), tmp_path / "lm")
    other = CharTokenizer(ALPHABET[::-1])  # same size, other ids
    with pytest.raises(UserError, match="model_file"):
        build_model(llm_config(tmp_path / "lm"), other)


# --- Recipes, end to end ------------------------------------------------------------------------


def test_recipes_train_and_the_package_transcribes_without_the_lm(tiny_corpus, tmp_path):
    lm_recipe = load_recipe(
        "recipes/lm/espeak_text_lm.yaml",
        [
            f"data.corpus_dir={tiny_corpus}",
            "data.generated_sentences=0",
            "model.tokenizer={name: char}",
            f"model.lm={json.dumps(LM)}",
            f"train.out_dir={tmp_path / 'lm'}",
            "train.max_steps=4",
            "data.batch_size=8",
            "train.val_every=4",
        ],
    )
    lm_package = Trainer(lm_recipe, progress=False).train()
    overrides = {
        "data.corpus_dir": str(tiny_corpus),
        "data.max_duration": 40,
        "model.encoder": {"name": "conformer", "preset": "tiny", "subsampling_factor": 4},
        "model.heads.llm.lm": str(lm_package),
        "model.heads.llm.projector_dim": 32,
        "model.tokenizer": {"name": "char"},
        "train.out_dir": str(tmp_path / "asr"),
        "train.max_steps": 2,
        "train.val_every": 1,
        "train.ema_decay": None,
    }
    recipe = load_recipe(
        "recipes/asr/espeak_conformer_llm_cpu.yaml",
        [f"{k}={json.dumps(v)}" for k, v in overrides.items()],
    )
    assert list(recipe.model.heads) == ["llm", "ctc"]  # the LLM head decodes
    package = Trainer(recipe, progress=False).train()
    rows = [json.loads(line) for line in (tmp_path / "asr/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "dev_wer" in r] == [1, 2]
    shutil.rmtree(tmp_path / "lm")
    cuts = CutSet.from_file(tiny_corpus / "espeak_cuts_dev.jsonl.gz").to_eager()
    paths = [c.recording.sources[0].source for c in cuts][:2]
    texts = suite.load(package).transcribe(paths, max_new_tokens=10)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
