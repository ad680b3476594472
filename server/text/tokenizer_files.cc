#include "server/text/tokenizer_files.h"

#include <algorithm>
#include <stdexcept>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "server/text/bpe_tokenizer.h"
#include "server/text/wordpiece_tokenizer.h"
#include "server/util/file_util.h"

namespace loracle::text {

namespace {

using json = nlohmann::json;

absl::Status Bad(const std::string& source, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", what));
}

// A field of the wrong type deep in a file; LoadTokenizer reports it as INVALID_ARGUMENT.
struct BadField : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// An integer field. A float (1e40) or a string is the file's fault, never a narrowing cast.
int64_t IntValue(const json& v, absl::string_view what) {
  if (!v.is_number_integer()) {
    throw BadField(absl::StrCat(what, " must be an integer, not ", v.dump().substr(0, 40)));
  }
  return v.get<int64_t>();
}

int64_t IntOr(const json& object, const char* key, int64_t fallback) {
  if (!object.is_object()) return fallback;
  auto it = object.find(key);
  return it == object.end() ? fallback : IntValue(*it, key);
}

// A template piece's token type: a small non-negative integer (BERT's are 0 and 1).
int TypeId(const json& piece) {
  const int64_t t = IntOr(piece, "type_id", 0);
  if (t < 0 || t > 255) throw BadField(absl::StrCat("type_id must be in 0..255, not ", t));
  return static_cast<int>(t);
}

absl::StatusOr<json> ReadJson(const std::string& path) {
  absl::StatusOr<std::string> text = util::ReadFileToString(path);
  if (!text.ok()) return text.status();
  json j = json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Bad(path, "not a JSON object");
  return j;
}

// A special token in tokenizer_config.json / special_tokens_map.json: a string, or an
// AddedToken object {"content": ..., "lstrip": ...}.
bool TokenField(const json& j, const char* key, AddedToken* out) {
  auto it = j.find(key);
  if (it == j.end()) return false;
  if (it->is_string()) {
    out->content = it->get<std::string>();
    return true;
  }
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    out->content = (*it)["content"].get<std::string>();
    out->lstrip = it->value("lstrip", false);
    out->rstrip = it->value("rstrip", false);
    return true;
  }
  return false;
}

// The settings tokenizer_config.json and special_tokens_map.json give.
struct FileConfig {
  std::optional<bool> lowercase, strip_accents, chinese_chars, add_prefix_space;
  absl::flat_hash_map<std::string, AddedToken> tokens;  // "cls_token" -> token
};

absl::Status ReadFileConfig(const std::string& dir, FileConfig* c, int* model_max_length) {
  for (const char* file : {"special_tokens_map.json", "tokenizer_config.json"}) {
    const std::string path = dir + "/" + file;
    if (!util::FileExists(path)) continue;
    absl::StatusOr<json> j = ReadJson(path);
    if (!j.ok()) return j.status();
    for (const char* key : {"unk_token", "cls_token", "sep_token", "pad_token", "mask_token",
                            "bos_token", "eos_token"}) {
      AddedToken t;
      if (TokenField(*j, key, &t)) c->tokens[key] = t;
    }
    auto flag = [&](const char* key, std::optional<bool>* out) {
      if (auto it = j->find(key); it != j->end() && it->is_boolean()) *out = it->get<bool>();
    };
    flag("do_lower_case", &c->lowercase);
    flag("strip_accents", &c->strip_accents);
    flag("tokenize_chinese_chars", &c->chinese_chars);
    flag("add_prefix_space", &c->add_prefix_space);
    if (auto it = j->find("model_max_length"); it != j->end() && it->is_number_integer()) {
      const int64_t v = it->get<int64_t>();
      if (v > 0 && v < *model_max_length) *model_max_length = static_cast<int>(v);
    }
  }
  return absl::OkStatus();
}

std::string TokenOr(const FileConfig& c, const char* key, const char* fallback) {
  auto it = c.tokens.find(key);
  return it == c.tokens.end() ? fallback : it->second.content;
}

// The post-processor of tokenizer.json as a template.
absl::StatusOr<SpecialTokensTemplate> ParsePostProcessor(const json& pp,
                                                         const std::string& source) {
  SpecialTokensTemplate t;
  // No post-processor, or ByteLevel's (Llama 3, Qwen): no special tokens; a pair's B has type 1.
  SpecialTokensTemplate plain;
  plain.single = {{0, -1, 0}};
  plain.pair = {{0, -1, 0}, {1, -1, 1}};
  if (pp.is_null()) return plain;
  const std::string type = pp.value("type", "");
  auto id_of = [&](const char* key, int64_t* id) -> absl::Status {
    auto it = pp.find(key);
    if (it == pp.end() || !it->is_array() || it->size() != 2 || !(*it)[1].is_number_integer()) {
      return Bad(source, absl::StrCat("post_processor.", key, " must be [token, id]"));
    }
    *id = (*it)[1].get<int64_t>();
    return absl::OkStatus();
  };
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    int64_t cls = 0, sep = 0;
    if (auto s = id_of("cls", &cls); !s.ok()) return s;
    if (auto s = id_of("sep", &sep); !s.ok()) return s;
    return type == "BertProcessing" ? SpecialTokensTemplate::Bert(cls, sep)
                                    : SpecialTokensTemplate::Roberta(cls, sep);
  }
  if (type == "TemplateProcessing") {
    const json specials = pp.value("special_tokens", json::object());
    for (const char* which : {"single", "pair"}) {
      auto& out = std::string(which) == "single" ? t.single : t.pair;
      const json pieces = pp.value(which, json::array());
      for (const json& piece : pieces) {
        SpecialTokensTemplate::Piece p;
        if (piece.contains("Sequence")) {
          const std::string id = piece["Sequence"].value("id", "A");
          p.sequence = id == "B" ? 1 : 0;
          p.type_id = TypeId(piece["Sequence"]);
        } else if (piece.contains("SpecialToken")) {
          const std::string name = piece["SpecialToken"].value("id", "");
          auto it = specials.find(name);
          if (it == specials.end() || !it->contains("ids") || (*it)["ids"].size() != 1) {
            return Bad(source, absl::StrCat("post_processor special token \"", name,
                                            "\" must have exactly one id"));
          }
          p.id = IntValue((*it)["ids"][0], "post_processor special token id");
          p.type_id = TypeId(piece["SpecialToken"]);
        } else {
          return Bad(source, "post_processor template piece is neither Sequence nor SpecialToken");
        }
        out.push_back(p);
      }
    }
    return t;
  }
  if (type == "ByteLevel") return plain;
  return Bad(source, absl::StrCat("post_processor type \"", type,
                                  "\" is not supported (supported: BertProcessing, "
                                  "RobertaProcessing, TemplateProcessing, ByteLevel)"));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> FromTokenizerJson(const std::string& path,
                                                             const FileConfig& fc) {
  absl::StatusOr<json> jj = ReadJson(path);
  if (!jj.ok()) return jj.status();
  const json& j = *jj;
  const json model = j.value("model", json::object());
  const std::string model_kind = model.value("type", "");
  std::vector<AddedToken> added;
  const json added_json = j.value("added_tokens", json::array());
  for (const json& a : added_json) {
    if (!a.contains("content") || !a.contains("id")) continue;
    added.push_back({a["content"].get<std::string>(), IntValue(a["id"], "added_tokens id"),
                     a.value("lstrip", false), a.value("rstrip", false)});
  }
  absl::StatusOr<SpecialTokensTemplate> special =
      ParsePostProcessor(j.contains("post_processor") ? j["post_processor"] : json(), path);
  if (!special.ok()) return special.status();
  const json normalizer = j.contains("normalizer") ? j["normalizer"] : json();
  const json pre = j.contains("pre_tokenizer") ? j["pre_tokenizer"] : json();

  if (model_kind == "WordPiece") {
    WordPieceTokenizer::Options o;
    if (!normalizer.is_null()) {
      if (normalizer.value("type", "") != "BertNormalizer") {
        return Bad(path, absl::StrCat("normalizer ", normalizer.value("type", "?"),
                                      " is not supported with WordPiece (supported: "
                                      "BertNormalizer)"));
      }
      o.clean_text = normalizer.value("clean_text", true);
      o.tokenize_chinese_chars = normalizer.value("handle_chinese_chars", true);
      o.lowercase = normalizer.value("lowercase", true);
      o.strip_accents =
          normalizer.contains("strip_accents") && normalizer["strip_accents"].is_boolean()
              ? normalizer["strip_accents"].get<bool>()
              : o.lowercase;
    } else {
      o.clean_text = o.tokenize_chinese_chars = o.lowercase = o.strip_accents = false;
    }
    if (!pre.is_null() && pre.value("type", "") != "BertPreTokenizer") {
      return Bad(path, absl::StrCat("pre_tokenizer ", pre.value("type", "?"),
                                    " is not supported with WordPiece (supported: "
                                    "BertPreTokenizer)"));
    }
    o.unk_token = model.value("unk_token", "[UNK]");
    o.continuing_subword_prefix = model.value("continuing_subword_prefix", "##");
    const int64_t max_chars = IntOr(model, "max_input_chars_per_word", 100);
    if (max_chars <= 0 || max_chars > 1000000) {
      return Bad(path, absl::StrCat("model.max_input_chars_per_word must be in 1..1000000, not ",
                                    max_chars));
    }
    o.max_input_chars_per_word = static_cast<int>(max_chars);
    o.cls_token = TokenOr(fc, "cls_token", "[CLS]");
    o.sep_token = TokenOr(fc, "sep_token", "[SEP]");
    o.pad_token = TokenOr(fc, "pad_token", "[PAD]");
    const json vocab = model.value("vocab", json::object());
    std::vector<std::string> by_id(vocab.size());
    for (auto& [token, id] : vocab.items()) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
          id.get<int64_t>() >= static_cast<int64_t>(by_id.size())) {
        return Bad(path, absl::StrCat("model.vocab ids must be 0..", by_id.size() - 1, "; token \"",
                                      token, "\" has ", id.dump()));
      }
      by_id[id.get<size_t>()] = token;
    }
    auto t = WordPieceTokenizer::Create(o, std::move(by_id),
                                        j.contains("post_processor") ? &*special : nullptr, added);
    if (!t.ok()) return Bad(path, t.status().message());
    return std::unique_ptr<Tokenizer>(std::move(*t));
  }
  if (model_kind == "BPE") {
    ByteLevelBpeTokenizer::Options o;
    o.add_prefix_space = fc.add_prefix_space.value_or(false);
    bool byte_level = false;
    auto check_pre = [&](const json& p) -> absl::Status {
      if (p.value("type", "") != "ByteLevel") {
        return Bad(path, absl::StrCat("pre_tokenizer ", p.value("type", "?"),
                                      " is not supported with BPE (supported: ByteLevel)"));
      }
      if (!p.value("use_regex", true))
        return Bad(path, "ByteLevel use_regex=false is not supported");
      o.add_prefix_space = p.value("add_prefix_space", o.add_prefix_space);
      byte_level = true;
      return absl::OkStatus();
    };
    // Llama 3 and Qwen: Sequence[Split(their regex, Isolated), ByteLevel(use_regex=false)].
    // Llama 2: no pre-tokenizer; the normalizer prepends "▁" and replaces spaces with it; bytes
    // of characters outside the vocabulary fall back to "<0xXX>" tokens.
    // Newer Llama 2 and Mistral files: no normalizer, a Metaspace pre-tokenizer does both.
    const bool metaspace = pre.is_object() && pre.value("type", "") == "Metaspace";
    const bool sentencepiece = metaspace || (pre.is_null() && normalizer.is_object() &&
                                             (normalizer.value("type", "") == "Sequence" ||
                                              normalizer.value("type", "") == "Prepend" ||
                                              normalizer.value("type", "") == "Replace"));
    if (metaspace) {
      using Metaspace = ByteLevelBpeTokenizer::Options::Metaspace;
      if (pre.value("replacement", "\u2581") != "\u2581") {
        return Bad(path, "Metaspace with a replacement other than \"\u2581\" is not supported");
      }
      if (!normalizer.is_null()) {
        return Bad(path, absl::StrCat("normalizer ", normalizer.value("type", "?"),
                                      " is not supported with a Metaspace pre_tokenizer"));
      }
      // prepend_scheme, else the older add_prefix_space (true: always), as tokenizers reads it.
      const std::string scheme = pre.contains("prepend_scheme") && pre["prepend_scheme"].is_string()
                                     ? pre["prepend_scheme"].get<std::string>()
                                     : (pre.value("add_prefix_space", true) ? "always" : "never");
      if (scheme == "always") {
        o.metaspace = Metaspace::kAlways;
      } else if (scheme == "first") {
        o.metaspace = Metaspace::kFirst;
      } else if (scheme == "never") {
        o.metaspace = Metaspace::kNever;
      } else {
        return Bad(path, absl::StrCat("Metaspace prepend_scheme \"", scheme,
                                      "\" is not one of always, first, never"));
      }
      o.metaspace_split = pre.value("split", true);
    }
    if (sentencepiece && !metaspace) {
      const json steps = normalizer.value("type", "") == "Sequence"
                             ? normalizer.value("normalizers", json::array())
                             : json::array({normalizer});
      for (const json& n : steps) {
        const std::string type = n.is_object() ? n.value("type", "") : "";
        if (type == "Prepend" && n.contains("prepend") && n["prepend"].is_string()) {
          o.prepend = n["prepend"].get<std::string>();
        } else if (type == "Replace" && n.contains("pattern") && n["pattern"].is_object() &&
                   n["pattern"].value("String", "") == " " && n.value("content", "") == "\u2581") {
          o.replace_space = true;
        } else {
          return Bad(path,
                     absl::StrCat("normalizer ", n.is_object() ? n.dump().substr(0, 80) : "?",
                                  " is not supported with sentencepiece-style BPE (supported: "
                                  "Prepend, Replace(\" \", \"\u2581\"))"));
        }
      }
    }
    if (sentencepiece) {
      o.byte_level = false;
      o.byte_fallback = model.value("byte_fallback", false);
      o.fuse_unk = model.value("fuse_unk", false);
      byte_level = true;  // the model's own kind; no ByteLevel pre-tokenizer is needed
    } else if (pre.is_object() && pre.value("type", "") == "Sequence") {
      const json steps = pre.value("pretokenizers", json::array());
      const json split = steps.size() == 2 ? steps[0] : json();
      const json bytes = steps.size() == 2 ? steps[1] : json();
      const std::string regex =
          split.is_object() && split.contains("pattern") && split["pattern"].is_object()
              ? split["pattern"].value("Regex", "")
              : "";
      static const std::string kLlama3 =
          "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
          "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
      static const std::string kQwen2 =
          "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
          "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
      if (!split.is_object() || split.value("type", "") != "Split" ||
          (regex != kLlama3 && regex != kQwen2) || split.value("behavior", "") != "Isolated" ||
          split.value("invert", false) || !bytes.is_object() ||
          bytes.value("type", "") != "ByteLevel" || bytes.value("use_regex", true)) {
        return Bad(path,
                   "pre_tokenizer Sequence is supported only as Llama 3's or Qwen's: Split(their "
                   "regex, Isolated) then ByteLevel(use_regex=false)");
      }
      o.pattern = regex == kLlama3 ? ByteLevelBpeTokenizer::Pattern::kLlama3
                                   : ByteLevelBpeTokenizer::Pattern::kQwen2;
      o.add_prefix_space = bytes.value("add_prefix_space", false);
      byte_level = true;
    } else if (pre.is_object()) {
      if (auto s = check_pre(pre); !s.ok()) return s;
    }
    if (!byte_level) {
      return Bad(path,
                 "BPE is supported with a ByteLevel pre_tokenizer (GPT-2, RoBERTa), Llama 3's or "
                 "Qwen's Split + ByteLevel, or sentencepiece-style (a Prepend / Replace normalizer "
                 "as Llama 2, or a Metaspace pre_tokenizer)");
    }
    if (!normalizer.is_null() && !sentencepiece) {
      if (normalizer.value("type", "") != "NFC") {
        return Bad(path, absl::StrCat("normalizer ", normalizer.value("type", "?"),
                                      " is not supported with byte-level BPE (supported: NFC)"));
      }
      o.nfc = true;
    }
    o.ignore_merges = model.value("ignore_merges", false);
    if (!sentencepiece && model.value("byte_fallback", false)) {
      return Bad(path, "BPE byte_fallback is not supported with a ByteLevel pre_tokenizer");
    }
    if (model.contains("dropout") && model["dropout"].is_number() &&
        model["dropout"].get<double>() > 0) {
      return Bad(path, "BPE dropout is not supported at inference");
    }
    if (model.contains("unk_token") && model["unk_token"].is_string()) {
      o.unk_token = model["unk_token"].get<std::string>();
    }
    std::vector<std::pair<std::string, int64_t>> vocab;
    const json bpe_vocab = model.value("vocab", json::object());
    for (auto& [token, id] : bpe_vocab.items()) {
      if (!id.is_number_integer()) return Bad(path, absl::StrCat("bad id for \"", token, "\""));
      vocab.emplace_back(token, id.get<int64_t>());
    }
    for (const AddedToken& a : added) vocab.emplace_back(a.content, a.id);
    std::sort(vocab.begin(), vocab.end(),
              [](const auto& x, const auto& y) { return x.second < y.second; });
    vocab.erase(std::unique(vocab.begin(), vocab.end()), vocab.end());
    // Padding: the configured pad token, else "<pad>", else (decoders that ship none, as Llama 3)
    // the eos token, else the first added token. Padding is never attended.
    o.pad_token = TokenOr(fc, "pad_token", "<pad>");
    auto in_vocab = [&](const std::string& t) {
      return std::any_of(vocab.begin(), vocab.end(), [&](const auto& v) { return v.first == t; });
    };
    if (!fc.tokens.contains("pad_token") && !in_vocab(o.pad_token)) {
      const std::string eos = TokenOr(fc, "eos_token", "");
      if (!eos.empty() && in_vocab(eos)) {
        o.pad_token = eos;
      } else if (!added.empty()) {
        o.pad_token = added.front().content;
      }
    }
    std::vector<std::pair<std::string, std::string>> merges;
    const json bpe_merges = model.value("merges", json::array());
    for (const json& m : bpe_merges) {
      if (m.is_string()) {  // "a b"
        const std::string s = m.get<std::string>();
        const size_t space = s.find(' ', 1);
        if (space == std::string::npos) return Bad(path, absl::StrCat("bad merge \"", s, "\""));
        merges.emplace_back(s.substr(0, space), s.substr(space + 1));
      } else if (m.is_array() && m.size() == 2) {  // ["a", "b"] (tokenizers >= 0.20)
        merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
      } else {
        return Bad(path, "model.merges entries must be \"a b\" or [\"a\", \"b\"]");
      }
    }
    auto t = ByteLevelBpeTokenizer::Create(o, vocab, merges, *special, added);
    if (!t.ok()) return Bad(path, t.status().message());
    return std::unique_ptr<Tokenizer>(std::move(*t));
  }
  return Bad(path, absl::StrCat("tokenizer model type \"", model_kind,
                                "\" is not supported (supported: WordPiece, BPE)"));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> FromBpeFiles(const std::string& dir,
                                                        const FileConfig& fc) {
  const std::string vocab_path = dir + "/vocab.json", merges_path = dir + "/merges.txt";
  absl::StatusOr<json> vj = ReadJson(vocab_path);
  if (!vj.ok()) return vj.status();
  std::vector<std::pair<std::string, int64_t>> vocab;
  absl::flat_hash_map<std::string, int64_t> ids;
  for (auto& [token, id] : vj->items()) {
    if (!id.is_number_integer()) return Bad(vocab_path, absl::StrCat("bad id for \"", token, "\""));
    vocab.emplace_back(token, id.get<int64_t>());
    ids[token] = id.get<int64_t>();
  }
  absl::StatusOr<std::string> mtext = util::ReadFileToString(merges_path);
  if (!mtext.ok()) return mtext.status();
  std::vector<std::pair<std::string, std::string>> merges;
  for (absl::string_view line : absl::StrSplit(*mtext, '\n')) {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || absl::StartsWith(line, "#version")) continue;
    const size_t space = line.find(' ', 1);
    if (space == absl::string_view::npos) {
      return Bad(merges_path, absl::StrCat("bad merge line \"", line, "\""));
    }
    merges.emplace_back(std::string(line.substr(0, space)), std::string(line.substr(space + 1)));
  }
  ByteLevelBpeTokenizer::Options o;
  o.add_prefix_space = fc.add_prefix_space.value_or(false);
  o.pad_token = TokenOr(fc, "pad_token", "<pad>");
  o.unk_token = TokenOr(fc, "unk_token", "<unk>");
  if (!ids.contains(o.unk_token)) o.unk_token.clear();
  const std::string cls = TokenOr(fc, "cls_token", "<s>"), sep = TokenOr(fc, "sep_token", "</s>");
  if (!ids.contains(cls) || !ids.contains(sep)) {
    return Bad(vocab_path, absl::StrCat("vocabulary lacks \"", cls, "\" or \"", sep, "\""));
  }
  std::vector<AddedToken> added;
  for (const char* key : {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token",
                          "cls_token", "mask_token"}) {
    AddedToken t;
    auto it = fc.tokens.find(key);
    if (it != fc.tokens.end()) {
      t = it->second;
    } else {
      static const absl::flat_hash_map<std::string, std::string> kDefaults = {
          {"bos_token", "<s>"},    {"eos_token", "</s>"},  {"unk_token", "<unk>"},
          {"sep_token", "</s>"},   {"pad_token", "<pad>"}, {"cls_token", "<s>"},
          {"mask_token", "<mask>"}};
      t.content = kDefaults.at(key);
      t.lstrip = t.content == "<mask>";  // RobertaTokenizer's mask token swallows a left space
    }
    if (auto id = ids.find(t.content); id != ids.end()) {
      t.id = id->second;
      added.push_back(t);
    }
  }
  auto t = ByteLevelBpeTokenizer::Create(o, vocab, merges,
                                         SpecialTokensTemplate::Roberta(ids[cls], ids[sep]), added);
  if (!t.ok()) return Bad(vocab_path, t.status().message());
  return std::unique_ptr<Tokenizer>(std::move(*t));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadClassicTokenizer(const std::string& dir,
                                                                const FileConfig& fc) {
  if (util::FileExists(dir + "/vocab.txt")) {
    WordPieceTokenizer::Options o;
    o.lowercase = fc.lowercase.value_or(true);
    o.strip_accents = fc.strip_accents.value_or(o.lowercase);
    o.tokenize_chinese_chars = fc.chinese_chars.value_or(true);
    o.unk_token = TokenOr(fc, "unk_token", "[UNK]");
    o.cls_token = TokenOr(fc, "cls_token", "[CLS]");
    o.sep_token = TokenOr(fc, "sep_token", "[SEP]");
    o.pad_token = TokenOr(fc, "pad_token", "[PAD]");
    o.mask_token = TokenOr(fc, "mask_token", "[MASK]");
    auto t = WordPieceTokenizer::FromFile(o, dir + "/vocab.txt");
    if (!t.ok()) return t.status();
    return std::unique_ptr<Tokenizer>(std::move(*t));
  }
  if (util::FileExists(dir + "/vocab.json") && util::FileExists(dir + "/merges.txt")) {
    return FromBpeFiles(dir, fc);
  }
  return absl::NotFoundError(absl::StrCat(
      dir, ": no tokenizer files (tokenizer.json, vocab.txt, or vocab.json + merges.txt)"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& dir,
                                                         int* model_max_length) {
  // The readers above check the fields they need; a value of the wrong JSON type deeper in a
  // file (e.g. "model": 6) surfaces as nlohmann's type_error, reported here as the file's fault.
  const char* reading = "tokenizer_config.json or special_tokens_map.json";
  try {
    FileConfig fc;
    if (absl::Status s = ReadFileConfig(dir, &fc, model_max_length); !s.ok()) return s;
    if (util::FileExists(dir + "/tokenizer.json")) {
      reading = "tokenizer.json";
      return FromTokenizerJson(dir + "/tokenizer.json", fc);
    }
    reading = "vocab.json";
    return LoadClassicTokenizer(dir, fc);
  } catch (const json::exception& e) {
    return Bad(absl::StrCat(dir, "/", reading), absl::StrCat("malformed: ", e.what()));
  } catch (const BadField& e) {
    return Bad(absl::StrCat(dir, "/", reading), e.what());
  }
}

}  // namespace loracle::text
