#ifndef LORACLE_SERVER_TEXT_UTF8_UTIL_H_
#define LORACLE_SERVER_TEXT_UTF8_UTIL_H_

// UTF-8 helpers over utf8proc shared by the tokenizers. Inputs are valid UTF-8 (callers run
// ValidateUtf8 first).

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace loracle::text {

std::vector<int32_t> DecodeUtf8(absl::string_view s);
void AppendUtf8(int32_t c, std::string* out);
// NFD (canonical decomposition) of `s`.
std::string Nfd(const std::string& s);

// Unicode classes as Hugging Face tokenizers (Rust) define them.
bool IsUnicodeWhitespace(int32_t c);  // the White_Space property (\s)
bool IsOtherCategory(int32_t c);      // C*: Cc, Cf, Cn, Co, Cs
bool IsLetter(int32_t c);             // \p{L}
bool IsNumber(int32_t c);             // \p{N}
bool IsNonSpacingMark(int32_t c);     // Mn
bool IsBertPunctuation(int32_t c);    // ASCII non-alphanumerics and P*
bool IsCjkIdeograph(int32_t c);       // the CJK blocks BERT isolates

}  // namespace loracle::text

#endif  // LORACLE_SERVER_TEXT_UTF8_UTIL_H_
