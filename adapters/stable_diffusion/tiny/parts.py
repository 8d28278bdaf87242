"""The pieces every tiny pipeline shares: tokenizers built offline, CLIP and T5 configs, a VAE.

No network: the CLIP BPE vocabulary and the T5 unigram vocabulary are learnt here from
:data:`CORPUS`, a small built-in word list. torch, diffusers and transformers are imported
by the functions that need them, never at import.
"""

from __future__ import annotations

import importlib
import itertools
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

MAX_POSITIONS = 77  # CLIP's context length; SD pipelines pad prompts to it
VOCAB_SIZE = 1000
CLIP_WIDTH = 32
T5_WIDTH = 64  # the T5 encoder's d_model: the joint attention width of SD3's and Flux's tiny DiTs

# Words typical of prompts; frequent ones are listed more than once so BPE merges them whole.
CORPUS = """
a a a a an the the the of of of in in on on with with and and and by at to
photo photo photo of a cat cat dog dog astronaut riding horse on mars portrait portrait
painting painting oil digital art art artstation trending detailed detailed highly
beautiful beautiful landscape landscape mountain mountains lake river sunset sunrise sky
city city street night night light lighting lights cinematic cinematic dramatic soft
render rendered unreal engine octane studio realistic realistic photorealistic 4k 8k hd
sharp focus focus illustration concept character fantasy science fiction futuristic
castle forest forest tree trees flower flowers garden water ocean sea beach snow winter
summer autumn spring red blue green yellow black white golden gold silver purple orange
woman man girl boy old young face eyes hair smiling standing sitting walking flying
style style by greg rutkowski artgerm wlop studio ghibli anime manga cartoon watercolor
sketch pencil drawing ink sculpture marble bronze glass metal wood stone house room
interior exterior building architecture temple tower bridge ship boat car train robot
dragon bird fish horse lion tiger wolf fox bear owl butterfly moon sun star stars cloud
clouds rain fog mist smoke fire ice blurry ugly deformed low quality bad anatomy extra
limbs worst quality jpeg artifacts watermark text signature cropped out of frame
"""


def clip_config(transformers: Any, tokenizer: Any) -> Any:
    """A two-layer CLIP text encoder's config, 32 wide, for ``tokenizer``'s vocabulary."""
    vocab = tokenizer.get_vocab()
    return transformers.CLIPTextConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=CLIP_WIDTH,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_POSITIONS,
        projection_dim=CLIP_WIDTH,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )


def tiny_vae(diffusers: Any, *, latent_channels: int = 4, scaling_factor: float,
             shift_factor: float | None = None, force_upcast: bool = False) -> Any:
    """Four blocks, three downsamplings: the same factor of 8 as the real VAEs. With a
    ``shift_factor`` (SD3, Flux) it has no quant convs, as theirs."""
    flow = shift_factor is not None
    return diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=latent_channels,
        block_out_channels=(8, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=64,
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
        use_quant_conv=not flow,
        use_post_quant_conv=not flow,
        force_upcast=force_upcast,
    )


def make_clip_tokenizer(work_dir: Path) -> Any:
    """A ``CLIPTokenizer`` loaded from ``vocab.json`` and ``merges.txt`` written into ``work_dir``.

    No network: the files come from :func:`_bpe_vocabulary`. ``model_max_length`` is CLIP's 77,
    so pipelines pad and truncate prompts exactly as with the real tokenizer.
    """
    transformers: Any = importlib.import_module("transformers")
    work_dir.mkdir(parents=True, exist_ok=True)
    vocab, merges = _bpe_vocabulary(VOCAB_SIZE)
    (work_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), "utf-8")
    (work_dir / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n", "utf-8"
    )
    return transformers.CLIPTokenizer.from_pretrained(str(work_dir), model_max_length=MAX_POSITIONS)


def _bpe_vocabulary(size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP-style byte-level BPE vocabulary of at most ``size`` tokens, learnt from CORPUS.

    Same layout as CLIP's: the 256 byte symbols, the same with ``</w>`` (end of word), one token
    per merge, then the two special tokens. Deterministic: ties go to the smallest pair.
    """
    symbols = list(_byte_symbols().values())
    vocab_list: list[str] = [*symbols, *(s + "</w>" for s in symbols)]
    budget = size - len(vocab_list) - 2
    words: Counter[tuple[str, ...]] = Counter(
        (*word[:-1], word[-1] + "</w>") for word in CORPUS.lower().split()
    )
    merges: list[tuple[str, str]] = []
    while len(merges) < budget:
        pairs: Counter[tuple[str, str]] = Counter()
        for word, count in words.items():
            for pair in itertools.pairwise(word):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        vocab_list.append(best[0] + best[1])
        words = Counter({_merge(word, best): count for word, count in words.items()})
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(vocab_list)}, merges


def _merge(word: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out: list[str] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def _byte_symbols() -> dict[int, str]:
    """GPT-2/CLIP's byte -> printable unicode symbol table."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return dict(sorted(table.items()))


def make_t5_tokenizer() -> Any:
    """A T5 tokenizer (unigram, metaspace, ``</s>`` appended) over the tiny corpus's words.

    Layout as T5's: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, then pieces; every printable ASCII
    character is a piece, so any prompt tokenizes without ``<unk>`` for ASCII text.
    """
    transformers: Any = importlib.import_module("transformers")
    counts = Counter(CORPUS.lower().split())
    total = sum(counts.values())
    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(f"▁{word}", math.log(n / total)) for word, n in sorted(counts.items())]
    seen = {piece for piece, _ in pieces}
    pieces += [(c, -20.0) for c in map(chr, range(33, 127)) if c not in seen]
    return transformers.T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)


def libraries() -> tuple[Any, Any]:
    # diffusers' and transformers' annotations are partial: use them as untyped libraries.
    return importlib.import_module("diffusers"), importlib.import_module("transformers")


def t5_encoder(transformers: Any, tokenizer: Any) -> Any:
    return transformers.T5EncoderModel(
        transformers.T5Config(
            vocab_size=len(tokenizer),
            d_model=T5_WIDTH,
            d_kv=16,
            d_ff=128,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            feed_forward_proj="gated-gelu",  # T5 v1.1, the encoder SD3 and Flux use
            pad_token_id=0,
            eos_token_id=1,
        )
    )
