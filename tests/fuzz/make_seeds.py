#!/usr/bin/env python3
"""Writes the fuzzers' seed corpora into OUT_DIR/<fuzzer>/ from tests/data and small valid
examples of each format (the first byte of a seed selects the fuzzer's mode, see each fuzzer).
Usage: make_seeds.py OUT_DIR"""
import json, os, struct, sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
out = sys.argv[1]
data = os.path.join(root, "tests", "data")


def seed(fuzzer, name, payload):
    d = os.path.join(out, fuzzer)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(payload if isinstance(payload, bytes) else payload.encode())


def read(*parts):
    with open(os.path.join(data, *parts), "rb") as f:
        return f.read()


def safetensors(tensors, metadata=None):
    header, blob = {}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(raw)]}
        blob += raw
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + blob


seed("safetensors_fuzzer", "two_tensors", safetensors(
    {"a.weight": ("F32", [2, 3], struct.pack("<6f", *range(6))),
     "b.bias": ("F16", [4], b"\x00\x3c" * 4)}, {"format": "pt"}))
seed("safetensors_fuzzer", "bf16_i64", safetensors(
    {"x": ("BF16", [1, 2], b"\x80\x3f\x00\x40"), "ids": ("I64", [2], struct.pack("<2q", 1, 2))}))
seed("safetensors_fuzzer", "empty", safetensors({}))

bert = {"architectures": ["BertForSequenceClassification"], "model_type": "bert", "hidden_size": 32,
        "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "vocab_size": 100, "max_position_embeddings": 64, "type_vocab_size": 2,
        "hidden_act": "gelu", "layer_norm_eps": 1e-12, "id2label": {"0": "ham", "1": "spam"}}
seed("config_fuzzer", "bert_config", b"\x00" + json.dumps(bert).encode())
seed("config_fuzzer", "roberta_config", b"\x00" + json.dumps(dict(bert, model_type="roberta",
     architectures=["RobertaForSequenceClassification"], pad_token_id=1)).encode())
seed("config_fuzzer", "distilbert_config", b"\x00" + json.dumps(
    {"model_type": "distilbert", "dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64,
     "vocab_size": 100, "max_position_embeddings": 64, "activation": "gelu"}).encode())
seed("config_fuzzer", "llama_config", b"\x00" + json.dumps(
    {"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
     "num_key_value_heads": 2, "head_dim": 8, "intermediate_size": 64, "vocab_size": 100,
     "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
     "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
     "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": True}).encode())
seed("config_fuzzer", "qwen3_config", b"\x00" + json.dumps(
    {"model_type": "qwen3", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
     "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 64, "vocab_size": 100,
     "use_sliding_window": False, "sliding_window": None, "layer_types": ["full_attention"] * 2,
     "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}}).encode())
seed("config_fuzzer", "mistral_config", b"\x00" + json.dumps(
    {"model_type": "mistral", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
     "num_key_value_heads": 1, "intermediate_size": 64, "vocab_size": 100,
     "sliding_window": 16}).encode())
seed("config_fuzzer", "peft", b"\x01" + json.dumps(
    {"peft_type": "LORA", "task_type": "SEQ_CLS", "r": 8, "lora_alpha": 16, "lora_dropout": 0.1,
     "target_modules": ["query", "value"], "modules_to_save": ["classifier"], "use_rslora": False,
     "rank_pattern": {"layer.0.attention.self.query": 4}, "alpha_pattern": {}}).encode())
seed("config_fuzzer", "serving", b"\x02" + json.dumps(
    {"labels": ["ham", "spam"], "members": 2, "mc_samples": 4, "temperature": 1.3,
     "abstain_threshold": 0.2, "dropout": {"method": "LORA_DROPOUT", "rate": 0.1},
     "reference": {"examples": 3, "confidence": [0.5, 0.5], "mutual_information": [1.0]},
     "validation": {"examples": 3, "accuracy": 0.9, "ece": 0.1, "mce": 0.2, "nll": 0.3,
                    "brier": 0.1}}).encode())

vocab = read("tokenizers", "bert-uncased", "vocab.txt").split(b"\n")[:300]
seed("tokenizer_files_fuzzer", "vocab_txt", b"\x01" + b"\n".join(vocab))
wordpiece = {"model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                       "max_input_chars_per_word": 100,
                       "vocab": {t.decode(errors="replace"): i for i, t in enumerate(vocab) if t}},
             "normalizer": {"type": "BertNormalizer", "lowercase": True, "clean_text": True,
                            "handle_chinese_chars": True, "strip_accents": None},
             "added_tokens": [{"id": 100, "content": "[UNK]", "special": True}]}
seed("tokenizer_files_fuzzer", "tokenizer_json_wordpiece", b"\x00" + json.dumps(wordpiece).encode())
rvocab = json.loads(read("tokenizers", "roberta", "vocab.json"))
small = {k: v for k, v in rvocab.items() if v < 400}
merges = read("tokenizers", "roberta", "merges.txt").split(b"\n")[:200]
seed("tokenizer_files_fuzzer", "vocab_json_merges", b"\x02" + json.dumps(small).encode() + b"\x00" +
     b"\n".join(merges))
bpe = {"model": {"type": "BPE", "vocab": small,
                 "merges": [m.decode() for m in merges[1:] if m]},
       "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False},
       "added_tokens": [{"id": 0, "content": "<s>", "special": True}]}
seed("tokenizer_files_fuzzer", "tokenizer_json_bpe", b"\x00" + json.dumps(bpe).encode())
# Llama 3's layout (Split regex, then ByteLevel without its own regex; ignore_merges) and Qwen's
# (one digit per piece, NFC), on the same small vocabulary.
split = {"type": "Split", "behavior": "Isolated", "invert": False, "pattern": {"Regex": (
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")}}
llama3 = dict(bpe, pre_tokenizer={"type": "Sequence", "pretokenizers": [
    split, {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]},
    post_processor={"type": "ByteLevel"})
llama3["model"] = dict(bpe["model"], ignore_merges=True)
seed("tokenizer_files_fuzzer", "tokenizer_json_llama3", b"\x00" + json.dumps(llama3).encode())
qwen = json.loads(json.dumps(llama3).replace("\\\\p{N}{1,3}", "\\\\p{N}"))
qwen["normalizer"] = {"type": "NFC"}
seed("tokenizer_files_fuzzer", "tokenizer_json_qwen", b"\x00" + json.dumps(qwen).encode())
# Llama 2's sentencepiece-style BPE: no pre-tokenizer, Prepend/Replace, byte fallback.
sp_vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{"<0x%02X>" % b: 3 + b for b in range(256)},
            "\u2581": 259, "a": 260, "b": 261, "\u2581a": 262, "ab": 263}
sentencepiece = {"model": {"type": "BPE", "vocab": sp_vocab, "merges": ["\u2581 a", "a b"],
                           "unk_token": "<unk>", "byte_fallback": True, "fuse_unk": True},
                 "normalizer": {"type": "Sequence", "normalizers": [
                     {"type": "Prepend", "prepend": "\u2581"},
                     {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
                 "pre_tokenizer": None,
                 "added_tokens": [{"id": 1, "content": "<s>", "special": True}]}
seed("tokenizer_files_fuzzer", "tokenizer_json_sentencepiece",
     b"\x00" + json.dumps(sentencepiece).encode())
# The same vocabulary behind a Metaspace pre-tokenizer (newer Llama 2 and Mistral files), and the
# older layout with add_prefix_space and split left at its default.
for name, pre in (("metaspace_first", {"type": "Metaspace", "replacement": "\u2581",
                                       "prepend_scheme": "first", "split": False}),
                  ("metaspace_legacy", {"type": "Metaspace", "replacement": "\u2581",
                                        "add_prefix_space": True})):
    seed("tokenizer_files_fuzzer", f"tokenizer_json_{name}",
         b"\x00" + json.dumps(dict(sentencepiece, normalizer=None, pre_tokenizer=pre)).encode())

reference = json.loads(read("tokenizers", "reference.json"))
for t, name in enumerate(["bert-uncased", "bert-cased", "roberta"]):  # the fuzzer's order
    for i, case in enumerate(reference.get(name, [])[:30]):
        payload = case["text"].encode() + (b"\x00" + case["pair"].encode() if case.get("pair") else b"")
        seed("tokenizer_text_fuzzer", f"{name}_{i}", bytes([t + 3 * 40]) + payload)
seed("tokenizer_text_fuzzer", "mail", b"\x7f" + read("spam-assassin", "test.jsonl")[:1500])

train = read("spam-assassin", "train.jsonl").split(b"\n")
seed("training_data_fuzzer", "jsonl", b"\x00" + b"\n".join(l[:300] for l in train[:6]))
seed("training_data_fuzzer", "jsonl_pairs", b"\x00" + b'{"text": "a", "text_pair": "b", "label": "x"}\n'
     b'{"text": "c", "label": "y"}\n')
seed("training_data_fuzzer", "csv", b"\x01" + b'text,text_pair,label\n"hello, ""world""",x,ham\n'
     b'"multi\nline",,spam\n')

# Requests: protobuf wire format by hand (fields: Predict adapter=1, inputs=2; Submit adapter=1).
def field(num, value):
    return bytes([num << 3 | 2, len(value)]) + value
seed("request_fuzzer", "predict", b"\x00" + field(1, b"spam") + field(2, b"free money") + field(2, b"hi"))
seed("request_fuzzer", "submit", b"\x01" + field(1, b"spam"))

seed("auth_tokens_fuzzer", "tokens", b"# roles\nsha256:" + b"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
     + b" predict,feedback\nops-token-0123456789\tadmin,train\n\0Bearer ops-token-0123456789")
seed("auth_tokens_fuzzer", "digest", b"sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 predict\0bearer test")
