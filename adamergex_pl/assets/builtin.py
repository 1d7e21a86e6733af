"""Models that ship with the package (no hub needed), addressed as ``builtin:<name>`` as a base model.

* ``builtin:tiny-llama``: a random two-layer Llama with a byte-level tokenizer, built deterministically on
  first use into ``$ADAMERGEX_CACHE`` (default ``~/.cache/adamergex``); the tests fine-tune and merge it.
* any directory under ``adamergex_pl/assets/`` that holds a ``config.json`` (the embedded demo model).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from adamergex_pl.atomic_files import staging_dir

BUILTIN_PREFIX = "builtin:"
ASSETS_DIR = Path(__file__).parent
TINY_LLAMA = "tiny-llama"
_TINY_LLAMA_VERSION = "v1"

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")
BYTE_VOCAB_SIZE = len(SPECIAL_TOKENS) + 256
_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def cache_dir() -> Path:
    """Where built-in models are built on first use (``$ADAMERGEX_CACHE``)."""
    return Path(os.environ.get("ADAMERGEX_CACHE", Path.home() / ".cache" / "adamergex"))


def builtin_names() -> list[str]:
    """Names accepted after ``builtin:``."""
    shipped = sorted(p.name for p in ASSETS_DIR.glob("*") if (p / "config.json").is_file())
    return [TINY_LLAMA, *shipped]


def resolve_base_model(name: str) -> str:
    """Map ``builtin:<name>`` to a local directory (ValueError if unknown); return any other name unchanged."""
    if not name.startswith(BUILTIN_PREFIX):
        return name
    key = name[len(BUILTIN_PREFIX) :]
    if key == TINY_LLAMA:
        return str(ensure_tiny_llama())
    if (ASSETS_DIR / key / "config.json").is_file():
        return str(ASSETS_DIR / key)
    raise ValueError(
        f"base_model={name!r} names no built-in model; expected one of "
        f"{', '.join(BUILTIN_PREFIX + n for n in builtin_names())}, a hub name or a local path"
    )


def build_byte_tokenizer():
    """A byte-level fast tokenizer with a chat template: ids 0 ``<pad>``, 1 ``<s>`` (prepended), 2 ``</s>``,
    3 ``<unk>``, then one per byte, so any script round-trips exactly."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    byte_symbols = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    byte_order = sorted(byte_symbols, key=_byte_value)
    vocab.update({sym: len(SPECIAL_TOKENS) + i for i, sym in enumerate(byte_order)})
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    fast.chat_template = _CHAT_TEMPLATE
    return fast


def _byte_value(symbol: str) -> int:
    """The byte that a GPT-2 byte-level symbol stands for (printable bytes map to themselves)."""
    code = ord(symbol)
    if 33 <= code <= 126 or 161 <= code <= 172 or 174 <= code <= 255:
        return code
    non_printable = [b for b in range(256) if not (33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255)]
    return non_printable[code - 256]


def tiny_llama_config(vocab_size: int = BYTE_VOCAB_SIZE, **overrides):
    """The shape of ``builtin:tiny-llama``: 2 layers, hidden 64, 4 query and 2 key/value heads."""
    from transformers import LlamaConfig

    shape = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    shape.update(overrides)
    return LlamaConfig(**shape)


def ensure_tiny_llama(seed: int = 0) -> Path:
    """Build ``builtin:tiny-llama`` into the cache once (atomically) and return its directory."""
    target = cache_dir() / f"{TINY_LLAMA}-{_TINY_LLAMA_VERSION}"
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import LlamaForCausalLM

    tmp = staging_dir(target)
    try:
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        model = LlamaForCausalLM(tiny_llama_config())
        torch.random.set_rng_state(generator_state)
        model.save_pretrained(tmp)
        build_byte_tokenizer().save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first: theirs is identical
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
